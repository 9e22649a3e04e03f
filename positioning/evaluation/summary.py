"""The evaluation's figures, computed from a list of :class:`~positioning.evaluation.records.CaseRecord`.

Pure functions, no I/O: :func:`headline` gives the few numbers that CI floors refer to, :func:`summarize`
the whole JSON-able summary the report is drawn from (:mod:`positioning.evaluation.report`), and
:func:`published_figures` the published centering accuracy to compare with (``REFERENCES.md``).

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth. Accuracy figures are
*absolute* errors unless the name says ``signed`` or ``bias``; "median/p95" is the median and the 95th
percentile (linear interpolation), "median (IQR)" the median and the 25th–75th percentiles. NaN (None in
:func:`summarize`'s JSON) where nothing could be measured.

Which cases count where:

* a *truth case with a patient*: ``truth`` is set and ``truth.position`` is not None (not an empty table);
  position and arm accuracy are shares of these, a case without a plan counting as wrong;
* a *failure*: a truth case with a patient and no plan (no scan range or isocenter): counted, never dropped;
* a *planned truth case*: a truth case with a patient, a plan and errors; the isocenter shares
  (``iso_z_within_*``, ``table_top_within_10mm``) are shares of these, an error that could not be
  measured counting as outside;
* error medians and percentiles use the finite errors of planned truth cases.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from positioning.evaluation.records import CaseRecord

__all__ = [
    "HEADLINE_KEYS",
    "PublishedFigure",
    "bland_altman",
    "headline",
    "published_figures",
    "summarize",
]

#: The keys of :func:`headline`, in order (CI floors refer to them).
HEADLINE_KEYS: tuple[str, ...] = (
    "cases",
    "with_truth",
    "failures",
    "position_accuracy",
    "arms_accuracy",
    "iso_z_median_mm",
    "iso_z_p95_mm",
    "iso_x_median_mm",
    "iso_x_p95_mm",
    "table_vertical_median_mm",
    "table_longitudinal_median_mm",
    "range_end_median_mm",
    "range_end_p95_mm",
    "shoulders_hips_median_mm",
    "iso_z_within_5mm",
    "iso_z_within_10mm",
    "iso_z_within_15mm",
    "table_top_within_10mm",
    "silent_failures",
    "large_errors",
)

#: The keypoints pooled into ``shoulders_hips_median_mm``.
SHOULDERS_HIPS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

#: Severities that make a check "fire" for precision and recall.
FIRING: frozenset[str] = frozenset({"warning", "error"})

#: The thresholds of the vertical isocenter shares (mm).
WITHIN_MM: tuple[int, ...] = (5, 10, 15)

#: A factor level needs this many measured vertical isocenter errors to be ranked "worst".
WORST_MIN_N = 3


# ---------------------------------------------------------------------------------------------- helpers
def _finite(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[np.isfinite(a)]


def _pct(values: Iterable[float], q: float) -> float:
    a = _finite(values)
    return float(np.percentile(a, q)) if a.size else math.nan


def _share(flags: Sequence[bool]) -> float:
    return sum(bool(f) for f in flags) / len(flags) if flags else math.nan


def _has_patient(r: CaseRecord) -> bool:
    return r.truth is not None and r.truth.position is not None


def _is_failure(r: CaseRecord) -> bool:
    return _has_patient(r) and not r.planned


def _planned_truth(r: CaseRecord) -> bool:
    return _has_patient(r) and r.planned and r.errors is not None


def _position_right(r: CaseRecord) -> bool:
    if r.errors is not None:
        return bool(r.errors.position_right)
    return r.plan is not None and r.truth is not None and r.plan.get("patient_position") == r.truth.position


def _arms_right(r: CaseRecord) -> bool:
    if r.errors is not None:
        return bool(r.errors.arms_right)
    return r.plan is not None and r.truth is not None and r.plan.get("arms") == r.truth.arms


def _errs(records: Iterable[CaseRecord], get: Callable[[Any], float]) -> list[float]:
    """``get(errors)`` of the planned truth cases (NaN kept)."""
    return [float(get(r.errors)) for r in records if _planned_truth(r)]


def _abs(values: Iterable[float]) -> list[float]:
    return [abs(v) for v in values]


def _range_ends(records: Iterable[CaseRecord]) -> list[float]:
    out: list[float] = []
    for r in records:
        if _planned_truth(r):
            out += [abs(r.errors.start_mm), abs(r.errors.end_mm)]
    return out


def _within(records: Sequence[CaseRecord], get: Callable[[Any], float], limit_mm: float) -> float:
    errs = _errs(records, get)
    return _share([math.isfinite(e) and abs(e) <= limit_mm for e in errs])


def _json(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, floats rounded to 0.001, recursively."""
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        return round(f, 3) if math.isfinite(f) else None
    if isinstance(v, dict):
        return {str(k): _json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------- headline
def headline(records: Sequence[CaseRecord]) -> dict[str, float | int]:
    """The headline figures (keys :data:`HEADLINE_KEYS`; mm, shares in 0..1, NaN when not measurable).

    Args:
        records: the evaluated cases, with and without truth.

    Returns:
        ``cases`` (all), ``with_truth``, ``failures`` (truth cases with a patient and no plan),
        ``position_accuracy`` / ``arms_accuracy`` (shares of truth cases with a patient),
        ``iso_z_*`` / ``iso_x_*`` (absolute vertical / lateral isocenter error, median and p95),
        ``table_vertical_median_mm`` / ``table_longitudinal_median_mm`` (absolute table-move errors),
        ``range_end_*`` (both scan-range ends pooled, absolute), ``shoulders_hips_median_mm`` (3-D error
        of the four shoulder and hip keypoints pooled), ``iso_z_within_{5,10,15}mm`` and
        ``table_top_within_10mm`` (shares of planned truth cases), ``silent_failures`` and
        ``large_errors`` (counts).

    Example:
        >>> headline([])["cases"]
        0
    """
    recs = list(records)
    patients = [r for r in recs if _has_patient(r)]
    iso_z = _abs(_errs(recs, lambda e: e.iso_z_mm))
    iso_x = _abs(_errs(recs, lambda e: e.iso_x_mm))
    ends = _range_ends(recs)
    sh = [
        float(r.errors.keypoints_mm.get(k, math.nan))
        for r in recs
        if _planned_truth(r)
        for k in SHOULDERS_HIPS
    ]
    with_errors = [r for r in recs if r.errors is not None]
    out: dict[str, float | int] = {
        "cases": len(recs),
        "with_truth": sum(r.truth is not None for r in recs),
        "failures": sum(_is_failure(r) for r in recs),
        "position_accuracy": _share([_position_right(r) for r in patients]),
        "arms_accuracy": _share([_arms_right(r) for r in patients]),
        "iso_z_median_mm": _pct(iso_z, 50),
        "iso_z_p95_mm": _pct(iso_z, 95),
        "iso_x_median_mm": _pct(iso_x, 50),
        "iso_x_p95_mm": _pct(iso_x, 95),
        "table_vertical_median_mm": _pct(_abs(_errs(recs, lambda e: e.table_vertical_mm)), 50),
        "table_longitudinal_median_mm": _pct(_abs(_errs(recs, lambda e: e.table_longitudinal_mm)), 50),
        "range_end_median_mm": _pct(ends, 50),
        "range_end_p95_mm": _pct(ends, 95),
        "shoulders_hips_median_mm": _pct(sh, 50),
    }
    for mm in WITHIN_MM:
        out[f"iso_z_within_{mm}mm"] = _within(recs, lambda e: e.iso_z_mm, mm)
    out["table_top_within_10mm"] = _within(recs, lambda e: e.table_top_mm, 10.0)
    out["silent_failures"] = sum(r.errors.silent_failure for r in with_errors)
    out["large_errors"] = sum(bool(r.errors.large_error) for r in with_errors)
    return {k: out[k] for k in HEADLINE_KEYS}


# ---------------------------------------------------------------------------------------------- parts
def bland_altman(records: Sequence[CaseRecord]) -> dict[str, Any]:
    """Bland–Altman agreement of the planned isocenter height with the true one (mm).

    The planned height is ``truth.iso_z_plan_range_mm + errors.iso_z_mm`` and the reference
    ``truth.iso_z_plan_range_mm`` (both over the plan's own range), so the difference is the vertical
    isocenter error. Planned truth cases with both values finite count.

    Returns:
        ``n``, ``bias_mm`` (mean difference), ``sd_mm`` (sample SD, ddof 1), ``loa_low_mm`` /
        ``loa_high_mm`` (bias ∓ 1.96 SD), and the points ``mean_mm`` / ``diff_mm`` (lists, for the plot).
    """
    mean: list[float] = []
    diff: list[float] = []
    for r in records:
        if not _planned_truth(r):
            continue
        ref, err = r.truth.iso_z_plan_range_mm, r.errors.iso_z_mm
        if math.isfinite(ref) and math.isfinite(err):
            mean.append(ref + err / 2.0)
            diff.append(err)
    n = len(diff)
    bias = float(np.mean(diff)) if n else math.nan
    sd = float(np.std(diff, ddof=1)) if n > 1 else math.nan
    return {
        "n": n,
        "bias_mm": bias,
        "sd_mm": sd,
        "loa_low_mm": bias - 1.96 * sd,
        "loa_high_mm": bias + 1.96 * sd,
        "mean_mm": mean,
        "diff_mm": diff,
    }


def _iqr_block(abs_errs: Sequence[float]) -> dict[str, float]:
    return {
        "median_mm": _pct(abs_errs, 50),
        "q1_mm": _pct(abs_errs, 25),
        "q3_mm": _pct(abs_errs, 75),
        "p95_mm": _pct(abs_errs, 95),
    }


def _region(records: Sequence[CaseRecord]) -> dict[str, Any]:
    iso_z = _abs(_errs(records, lambda e: e.iso_z_mm))
    ba = bland_altman(records)
    ends = _range_ends(records)
    out: dict[str, Any] = {
        "n": sum(_has_patient(r) for r in records),
        "planned": sum(_planned_truth(r) for r in records),
        "failures": sum(_is_failure(r) for r in records),
        "iso_z_abs_mm": _iqr_block(iso_z),
    }
    for mm in WITHIN_MM:
        out[f"within_{mm}mm"] = _within(records, lambda e: e.iso_z_mm, mm)
    out["bland_altman"] = {k: v for k, v in ba.items() if k not in ("mean_mm", "diff_mm")}
    out["range_end_abs_mm"] = {"median_mm": _pct(ends, 50), "p95_mm": _pct(ends, 95)}
    return out


def _group(records: Sequence[CaseRecord]) -> dict[str, Any]:
    patients = [r for r in records if _has_patient(r)]
    iso_z = _abs(_errs(records, lambda e: e.iso_z_mm))
    ends = _range_ends(records)
    return {
        "n": len(records),
        "n_iso_z": int(_finite(iso_z).size),
        "position_accuracy": _share([_position_right(r) for r in patients]),
        "arms_accuracy": _share([_arms_right(r) for r in patients]),
        "iso_z_median_mm": _pct(iso_z, 50),
        "iso_z_p95_mm": _pct(iso_z, 95),
        "range_end_median_mm": _pct(ends, 50),
        "range_end_p95_mm": _pct(ends, 95),
        "failures": sum(_is_failure(r) for r in records),
        "silent_failures": sum(r.errors is not None and r.errors.silent_failure for r in records),
    }


def _landmarks(records: Sequence[CaseRecord]) -> dict[str, Any]:
    kp: dict[str, list[float]] = {}
    lv: dict[str, list[float]] = {}
    for r in records:
        if not _planned_truth(r):
            continue
        for k, v in r.errors.keypoints_mm.items():
            kp.setdefault(k, []).append(float(v))
        for k, v in r.errors.levels_mm.items():
            lv.setdefault(k, []).append(float(v))
    keypoints = {
        k: {"n": int(_finite(v).size), "median_mm": _pct(v, 50), "p95_mm": _pct(v, 95)} for k, v in kp.items()
    }
    levels = {
        k: {
            "n": int(_finite(v).size),
            "bias_mm": _pct(v, 50),
            "median_mm": _pct(_abs(v), 50),
            "p95_mm": _pct(_abs(v), 95),
        }
        for k, v in lv.items()
    }
    return {"keypoints": dict(sorted(keypoints.items())), "levels": dict(sorted(levels.items()))}


def _checks(records: Sequence[CaseRecord]) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """Precision/recall per labelled code, and how often each code fired (all cases) by severity."""
    codes = sorted({c for r in records for c in r.check_labels})
    pr: dict[str, Any] = {}
    for code in codes:
        tp = fp = fn = tn = 0
        for r in records:
            if code not in r.check_labels:
                continue
            fires = r.fired.get(code) in FIRING
            positive = bool(r.check_labels[code])
            tp += fires and positive
            fp += fires and not positive
            fn += (not fires) and positive
            tn += (not fires) and not positive
        pr[code] = {
            "n": tp + fp + fn + tn,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
            "precision": tp / (tp + fp) if tp + fp else math.nan,
            "recall": tp / (tp + fn) if tp + fn else math.nan,
        }
    fired: dict[str, dict[str, int]] = {}
    for r in records:
        for code, sev in r.fired.items():
            d = fired.setdefault(code, {"info": 0, "warning": 0, "error": 0})
            d[sev] = d.get(sev, 0) + 1
    return pr, dict(sorted(fired.items()))


def _factors(records: Sequence[CaseRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    truth = [r for r in records if r.truth is not None]
    names: list[str] = []
    for r in truth:
        names += [k for k in r.truth.factors if k not in names]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for f in names:
        levels = sorted({str(r.truth.factors[f]) for r in truth if f in r.truth.factors})
        out[f] = {
            lv: _group([r for r in truth if str(r.truth.factors.get(f)) == lv and f in r.truth.factors])
            for lv in levels
        }
    return out


def _worst(factors: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """The factor level with the largest vertical isocenter p95 (factors with ≥ 2 levels, n ≥ 3)."""
    best: dict[str, Any] | None = None
    for f, levels in factors.items():
        if len(levels) < 2:
            continue
        for lv, g in levels.items():
            p95 = g["iso_z_p95_mm"]
            if g["n_iso_z"] < WORST_MIN_N or not math.isfinite(p95):
                continue
            if best is None or p95 > best["iso_z_p95_mm"]:
                best = {
                    "factor": f,
                    "level": lv,
                    "n": g["n_iso_z"],
                    "iso_z_median_mm": g["iso_z_median_mm"],
                    "iso_z_p95_mm": p95,
                }
    return best


def _failure_text(r: CaseRecord) -> str:
    if r.failure:
        return r.failure
    if r.plan is None:
        return "no plan"
    return f"no scan range or isocenter (status {r.plan.get('status')})"


# ---------------------------------------------------------------------------------------------- summary
def summarize(records: Sequence[CaseRecord]) -> dict[str, Any]:
    """Everything the report shows, as JSON-able data (NaN -> None, floats rounded to 0.001).

    Args:
        records: the evaluated cases, with and without truth.

    Returns:
        A dict with the keys ``headline`` (:func:`headline`, NaN -> None), ``regions`` (body region ->
        the published form, plus ``"all"``), ``bland_altman`` (all regions), ``landmarks``
        (``keypoints`` / ``levels``), ``checks`` (code -> precision and recall), ``checks_fired``
        (code -> count by severity, all cases), ``factors`` (factor -> level -> figures),
        ``worst_factor_level``, ``failures``, ``silent_failures``, ``without_truth`` and ``published``
        (:func:`published_figures`). See the module docstring for which cases count where.
    """
    recs = list(records)
    truth = [r for r in recs if r.truth is not None]
    regions = sorted({r.body_region for r in truth})
    by_region = {reg: _region([r for r in truth if r.body_region == reg]) for reg in regions}
    by_region["all"] = _region(truth)
    checks, fired = _checks(recs)
    factors = _factors(recs)
    ba = bland_altman(recs)
    failures = [
        {
            "name": r.name,
            "protocol": r.protocol,
            "has_truth": r.truth is not None,
            "failure": _failure_text(r),
        }
        for r in recs
        if not r.planned and (r.truth is None or _has_patient(r))
    ]
    silent = [
        {
            "name": r.name,
            "protocol": r.protocol,
            "iso_z_mm": r.errors.iso_z_mm,
            "start_mm": r.errors.start_mm,
            "end_mm": r.errors.end_mm,
        }
        for r in recs
        if r.errors is not None and r.errors.silent_failure
    ]
    without = [
        {
            "name": r.name,
            "protocol": r.protocol,
            "planned": r.planned,
            "status": None if r.plan is None else r.plan.get("status"),
        }
        for r in recs
        if r.truth is None
    ]
    out = {
        "headline": headline(recs),
        "regions": by_region,
        "bland_altman": {k: v for k, v in ba.items() if k not in ("mean_mm", "diff_mm")},
        "landmarks": _landmarks(recs),
        "checks": checks,
        "checks_fired": fired,
        "factors": factors,
        "worst_factor_level": _worst(factors),
        "failures": failures,
        "silent_failures": silent,
        "without_truth": without,
        "published": [dataclasses.asdict(p) for p in published_figures()],
    }
    return _json(out)


# ---------------------------------------------------------------------------------------------- published
@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishedFigure:
    """One published vertical off-centering figure (``REFERENCES.md``, "Centering accuracy").

    Attributes:
        method: ``manual`` (a technologist with lasers) or ``camera`` (a commercial camera system).
        system: who or what positioned (``manual positioning``, ``Siemens 3D camera``, ...).
        region: the body region as published (``thorax``, ``abdomen``, ``all``, ...).
        regions: our protocol body regions it compares with (empty: all regions together).
        statistic: ``median``, ``mean ± SD`` or ``pooled`` (a meta-analysis' estimate).
        value_text: the figure as published, with its unit.
        value_mm: the central value (mm; NaN for a published range); sd_mm: the SD (NaN: none given).
        citation: where it is from.
    """

    method: str
    system: str
    region: str
    regions: tuple[str, ...]
    statistic: str
    value_text: str
    value_mm: float
    sd_mm: float
    citation: str


_BOOIJ = "Booij et al., Eur Radiol 2019"
_SALTY = "Saltybaeva et al., Invest Radiol 2018"
_GANG = "Gang et al., Eur Radiol 2021"
_NYU = "Eur J Radiol 2021;136:109537 (NYU)"
_HADI = "Hadi et al., Eur Radiol 2024 (meta-analysis of 9 studies)"
_NAN = math.nan
_CHEST = ("chest",)
_ABD = ("abdomen", "abdomen-pelvis")


def published_figures() -> tuple[PublishedFigure, ...]:
    """The published vertical off-centering figures to compare with, manual and camera (mm).

    Example:
        >>> [p.value_mm for p in published_figures() if p.region == "head"]
        [9.5]
    """
    P = PublishedFigure
    return (
        P(method="manual", system="manual positioning", region="abdomen, thorax", regions=_CHEST + _ABD,
          statistic="median", value_text="median 12.0–14.7 mm (IQR up to 21.6 mm)", value_mm=_NAN,
          sd_mm=_NAN, citation=_BOOIJ),
        P(method="manual", system="manual positioning", region="chest, abdomen", regions=_CHEST + _ABD,
          statistic="mean ± SD", value_text="19 ± 10 mm (worst 39–43 mm)", value_mm=19.0, sd_mm=10.0,
          citation=_SALTY),
        P(method="manual", system="manual positioning", region="all", regions=(), statistic="mean ± SD",
          value_text="40.5 ± 24.0 mm", value_mm=40.5, sd_mm=24.0, citation=_GANG),
        P(method="manual", system="manual positioning", region="all", regions=(), statistic="mean ± SD",
          value_text="16.3 ± 14.0 mm", value_mm=16.3, sd_mm=14.0, citation=_NYU),
        P(method="manual", system="manual positioning", region="thorax", regions=_CHEST, statistic="pooled",
          value_text="19 mm", value_mm=19.0, sd_mm=_NAN, citation=_HADI),
        P(method="manual", system="manual positioning", region="abdomen", regions=_ABD, statistic="pooled",
          value_text="18 mm", value_mm=18.0, sd_mm=_NAN, citation=_HADI),
        P(method="camera", system="Siemens 3D camera", region="thorax", regions=_CHEST, statistic="median",
          value_text="median 5.4 mm", value_mm=5.4, sd_mm=_NAN, citation=_BOOIJ),
        P(method="camera", system="Siemens 3D camera", region="thorax-abdomen",
          regions=("chest-abdomen", "chest-abdomen-pelvis"), statistic="median", value_text="median 6.0 mm",
          value_mm=6.0, sd_mm=_NAN, citation=_BOOIJ),
        P(method="camera", system="Siemens 3D camera", region="abdomen", regions=_ABD, statistic="median",
          value_text="median 6.3 mm", value_mm=6.3, sd_mm=_NAN, citation=_BOOIJ),
        P(method="camera", system="Siemens 3D camera", region="head", regions=("head",), statistic="median",
          value_text="median 9.5 mm", value_mm=9.5, sd_mm=_NAN, citation=_BOOIJ),
        P(method="camera", system="Siemens 3D camera", region="chest, abdomen", regions=_CHEST + _ABD,
          statistic="mean ± SD", value_text="5 ± 3 mm (chest 7, abdomen 4)", value_mm=5.0, sd_mm=3.0,
          citation=_SALTY),
        P(method="camera", system="GE deep-learning camera", region="all", regions=(), statistic="mean ± SD",
          value_text="15.6 ± 8.3 mm", value_mm=15.6, sd_mm=8.3, citation=_GANG),
        P(method="camera", system="Siemens 3D camera", region="all", regions=(), statistic="mean ± SD",
          value_text="6.8 ± 6.1 mm", value_mm=6.8, sd_mm=6.1, citation=_NYU),
        P(method="camera", system="camera systems (pooled)", region="thorax", regions=_CHEST,
          statistic="pooled", value_text="7 mm", value_mm=7.0, sd_mm=_NAN, citation=_HADI),
        P(method="camera", system="camera systems (pooled)", region="abdomen", regions=_ABD,
          statistic="pooled", value_text="4 mm", value_mm=4.0, sd_mm=_NAN, citation=_HADI),
    )  # fmt: skip
