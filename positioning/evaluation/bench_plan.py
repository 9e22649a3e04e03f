"""Benchmark: planning accuracy and check precision/recall on held-out simulated patients.

Every case runs the full pipeline: simulated frames (cached, see
:func:`positioning.evaluation.isocenter_fit.load_frames`) ->
:class:`~positioning.perception.pipeline.Perceiver` (tracking over the case's frames) ->
:func:`~positioning.planning.plan.make_plan`. Truth is read only here, to score the plan:

* **isocenter**: vertical (z) and lateral (x) error of the plan's isocenter against
  :func:`~positioning.evaluation.truth.true_isocenter` over the plan's own scan range, and over the true
  scan range (the protocol applied to the simulator's truth landmarks); the naive baseline (table top
  plus half the anterior surface height over the plan's range) for comparison;
* **scan range**: start and end error against the true scan range;
* **checks**: precision and recall per code against labels from the truth (positions, arm states,
  geometry at the planned table height) on cases built to trigger them.

Seeds :data:`EVAL_SEEDS` (2000 and up) are disjoint from the fits' training seeds (1000-1019).

Run ``python -m positioning.evaluation.bench_plan`` (``--quick`` for a smoke run, ``--json PATH`` to
keep the numbers).

Convention: scanner frame (IEC 61217), mm; errors are plan minus truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning.evaluation.isocenter_fit import SimSample, load_frames
from positioning.evaluation.scoring import outline_radius_mm
from positioning.evaluation.truth import true_isocenter, truth_level_y_mm
from positioning.perception.landmarks.base import LANDMARK_MODES
from positioning.planning.anatomy import PLANNING_LANDMARKS
from positioning.planning.checks import CheckSettings, Severity
from positioning.planning.plan import Plan, PlanSettings, TableLimits, make_plan, range_from_levels
from positioning.planning.protocol import Protocol, load_protocol

__all__ = [
    "EVAL_SEEDS",
    "Case",
    "CaseResult",
    "accuracy_cases",
    "check_cases",
    "truth_levels",
    "truth_range",
    "run_case",
    "benchmark_plan",
    "format_report",
    "main",
]

EVAL_SEEDS: tuple[int, ...] = tuple(range(2000, 2100))
FRAMES: tuple[int, ...] = (0, 1, 2)
#: Collision cases: a table that cannot go lower than z = -20 mm and a 56 cm bore (to create positives).
HIGH_TABLE_SMALL_BORE = PlanSettings(
    table=TableLimits(top_z_range_mm=(-20.0, 100.0)),
    checks=CheckSettings(bore_diameter_mm=560.0, fov_diameter_mm=500.0),
)
MOVED_FRAMES: tuple[int, ...] = (12, 13, 14)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One benchmark case.

    Attributes:
        name: what the case tests.
        scenario, seed: the simulated session.
        protocol: protocol name.
        frames: frame indices fed to the perceiver (the plan uses the last).
        expected_position: the console's position (None: the protocol's).
        settings: planning settings (table limits, bore).
        range_change_mm: for range-coverage cases, ``(low_end, high_end)`` added to the *true* range to
            build an operator-set range (None: plan the anatomical range).
        moved_frames: frames perceived after confirming the first plan (patient-motion cases).
        accuracy: counts toward the isocenter / range accuracy figures.
    """

    name: str
    scenario: str
    seed: int
    protocol: str
    frames: tuple[int, ...] = FRAMES
    expected_position: str | None = None
    settings: PlanSettings = dataclasses.field(default_factory=PlanSettings)
    range_change_mm: tuple[float, float] | None = None
    moved_frames: tuple[int, ...] = ()
    accuracy: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseResult:
    """Scores of one case (NaN where not applicable)."""

    case: Case
    camera: str
    position: str | None
    plan: dict[str, Any]
    codes: dict[str, str]
    labels: dict[str, bool]
    iso_z_err_mm: float = math.nan
    iso_x_err_mm: float = math.nan
    iso_z_err_true_range_mm: float = math.nan
    iso_x_err_true_range_mm: float = math.nan
    naive_z_err_mm: float = math.nan
    start_err_mm: float = math.nan
    end_err_mm: float = math.nan
    level_err_mm: dict[str, float] = dataclasses.field(default_factory=dict)
    plan_ms: float = math.nan
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------- cases


def accuracy_cases(seeds_per_scenario: int = 4) -> list[Case]:
    """Held-out patients for the accuracy figures: supine and prone, head and feet first, thin to obese,
    children, D435 and D455, several trunk protocols (plus head, neck and legs with the arms down)."""
    plan: list[tuple[str, int, tuple[str, ...]]] = [
        ("hfs-arms-up", 6, ("chest", "abdomen", "pelvis", "chest-abdomen-pelvis")),
        ("ffs-arms-up", 4, ("chest", "abdomen", "pelvis")),
        ("hfp-arms-up", 4, ("chest-prone", "pelvis")),
        ("ffp-arms-down", 3, ("chest-prone",)),
        ("obese", 4, ("chest", "abdomen", "pelvis")),
        ("child", 4, ("chest", "abdomen")),
        ("tilted-d455", 4, ("chest", "abdomen", "pelvis")),
        ("mixed", 6, ("chest", "abdomen")),
        ("hfs-arms-down", 4, ("head", "neck", "lower-extremity")),
        ("off-centre", 3, ("chest", "abdomen")),
    ]
    out = []
    for scenario, n, protocols in plan:
        n = max(1, round(n * seeds_per_scenario / 4))
        for seed in EVAL_SEEDS[:n]:
            for p in protocols:
                out.append(Case(name="accuracy", scenario=scenario, seed=seed, protocol=p, accuracy=True))
    return out


def check_cases(seeds_per_scenario: int = 4) -> list[Case]:
    """Cases built to trigger (or not) each check; labels come from the truth, not from the case."""
    n = max(1, seeds_per_scenario)
    seeds = EVAL_SEEDS[20 : 20 + n]
    out: list[Case] = []
    for seed in seeds:
        out += [
            Case(name="orientation: FFS patient, console HFS", scenario="ffs-arms-up", seed=seed,
                 protocol="chest", expected_position="HFS"),
            Case(name="orientation: HFS patient, console HFS", scenario="hfs-arms-up", seed=seed,
                 protocol="chest", expected_position="HFS"),
            Case(name="orientation: prone patient, supine chest", scenario="hfp-arms-up", seed=seed,
                 protocol="chest"),
            Case(name="arms: down for a chest", scenario="hfs-arms-down", seed=seed, protocol="chest"),
            Case(name="arms: hands on chest for an abdomen", scenario="hfs-hands-chest", seed=seed,
                 protocol="abdomen"),
            Case(name="arms: down for a head", scenario="hfs-arms-down", seed=seed, protocol="head"),
            Case(name="truncation: obese", scenario="obese", seed=seed, protocol="abdomen"),
            Case(name="truncation: off-centre", scenario="off-centre", seed=seed, protocol="abdomen"),
            Case(name="collision: high table (no lower than -20 mm), 56 cm bore", scenario="obese",
                 seed=seed, protocol="abdomen", settings=HIGH_TABLE_SMALL_BORE),
            Case(name="collision: high table (no lower than -20 mm), 56 cm bore", scenario="off-centre",
                 seed=seed, protocol="chest", settings=HIGH_TABLE_SMALL_BORE),
            Case(name="table limit: table no higher than -170 mm", scenario="hfs-arms-up", seed=seed,
                 protocol="chest", settings=PlanSettings(table=TableLimits(top_z_range_mm=(-450.0, -170.0)))),
            Case(name="moved: shift 25 mm lateral, 15 mm along", scenario="patient-moved", seed=seed,
                 protocol="chest", moved_frames=MOVED_FRAMES),
            Case(name="moved: breathing only", scenario="hfs-arms-up", seed=seed, protocol="chest",
                 moved_frames=MOVED_FRAMES),
            Case(name="range: operator range 40 mm short at the foot end", scenario="hfs-arms-up", seed=seed,
                 protocol="chest", range_change_mm=(40.0, 0.0)),
            Case(name="range: operator range 60 mm long at the head end", scenario="hfs-arms-up", seed=seed,
                 protocol="chest", range_change_mm=(0.0, 60.0)),
            Case(name="range: operator range = true range", scenario="hfs-arms-up", seed=seed,
                 protocol="chest", range_change_mm=(0.0, 0.0)),
            Case(name="second person", scenario="second-person", seed=seed, protocol="chest"),
            Case(name="empty table", scenario="empty-table", seed=seed, protocol="chest"),
        ]  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------- truth


def truth_levels(sample: SimSample) -> dict[str, float]:
    """Truth levels (scanner y) of the planning landmarks (:func:`truth_level_y_mm` of the sample)."""
    return truth_level_y_mm(sample.landmarks_mm, sample.keypoints_mm)


def truth_range(sample: SimSample, protocol: Protocol) -> tuple[float, float] | None:
    """The protocol's range on the truth landmarks (None for an empty table)."""
    if sample.position is None:
        return None
    sign = 1 if sample.position.startswith("HF") else -1
    return range_from_levels(truth_levels(sample), protocol.superior, protocol.inferior, sign)


def _labels(case: Case, sample: SimSample, protocol: Protocol, plan: Plan, moved: float) -> dict[str, bool]:
    """Truth labels for the checks this case can judge."""
    labels: dict[str, bool] = {}
    if sample.position is None:
        labels["EMPTY_TABLE"] = True
        return labels
    labels["EMPTY_TABLE"] = False
    labels["SECOND_PERSON"] = case.scenario == "second-person"
    expected = (
        (case.expected_position,) if case.expected_position else tuple(map(str, protocol.expected_positions))
    )
    labels["ORIENTATION_MISMATCH"] = sample.position not in expected
    if protocol.arms:
        labels["ARMS_IN_FIELD"] = sample.arms not in tuple(map(str, protocol.arms))
    rng, off = plan.scan_range, plan.table_offset
    if rng is None or off is None or plan.table_top_z_mm is None:
        return labels
    cs = sample.cross_sections()
    try:
        tx, tz = true_isocenter(cs, rng.start_mm, rng.end_mm)
    except ValueError:
        return labels
    s = case.settings
    labels["LATERAL_OFF_CENTRE"] = abs(tx) > s.checks.lateral_tolerance_mm
    lo_t, hi_t = s.table.top_z_range_mm
    labels["TABLE_LIMIT"] = not (lo_t <= plan.table_top_z_mm - tz <= hi_t)
    labels["FOV_TRUNCATION"] = outline_radius_mm(cs, rng.start_mm, rng.end_mm, off.vertical_mm) > (
        s.checks.fov_diameter_mm / 2
    )
    labels["BORE_COLLISION"] = outline_radius_mm(
        cs, rng.start_mm - s.checks.gantry_half_depth_mm, math.inf, off.vertical_mm
    ) > (s.checks.bore_diameter_mm / 2)
    if case.moved_frames:
        labels["PATIENT_MOVED"] = moved > s.checks.moved_threshold_mm
    if case.range_change_mm is not None:
        lo_c, hi_c = case.range_change_mm
        # the change is applied at the low / high y end of the true range; > 0 shortens the low end
        labels["RANGE_UNDERCOVERAGE"] = (
            lo_c > protocol.coverage_tolerance_mm or -hi_c > protocol.coverage_tolerance_mm
        )
        labels["RANGE_OVERSCAN"] = (
            -lo_c > protocol.overscan_tolerance_mm or hi_c > protocol.overscan_tolerance_mm
        )
    return labels


# --------------------------------------------------------------------------------------------------- run


def _perceive(perceiver: Any, samples: Sequence[SimSample]) -> Any:
    state = None
    for s in samples:
        state = perceiver.perceive(s.frame, s.calibration)
    return state


def run_case(case: Case, perceiver: Any, *, use_level_net: bool = True) -> CaseResult:
    """Run one case through perception (tracking over its frames) and planning, and score it
    (``use_level_net`` False: levels from the keypoint rules alone)."""
    t0 = time.perf_counter()
    case = dataclasses.replace(case, settings=dataclasses.replace(case.settings, use_level_net=use_level_net))
    protocol = load_protocol(case.protocol)
    perceiver.reset()
    samples = load_frames(case.scenario, case.seed, case.frames)
    state = _perceive(perceiver, samples)
    sample = samples[-1]
    given = None
    if case.range_change_mm is not None:
        tr = truth_range(sample, protocol)
        if tr is not None:
            given = (tr[0] + case.range_change_mm[0], tr[1] + case.range_change_mm[1])
    tp = time.perf_counter()
    plan = make_plan(state, protocol, settings=case.settings, expected_position=case.expected_position,
                     scan_range_mm=given)  # fmt: skip
    plan_ms = (time.perf_counter() - tp) * 1000.0
    moved = 0.0
    if case.moved_frames:
        later = load_frames(case.scenario, case.seed, case.moved_frames)
        state2 = _perceive(perceiver, later)
        plan = make_plan(state2, protocol, settings=case.settings, expected_position=case.expected_position,
                         confirmed=plan)  # fmt: skip
        a, b = samples[-1].keypoints_mm, later[-1].keypoints_mm
        moved = max(float(np.linalg.norm(b[k] - a[k])) for k in ("left_hip", "right_hip", "left_shoulder"))
        sample = later[-1]
    codes = {}
    for c in plan.checks:
        if c.code not in codes or c.severity is Severity.ERROR:
            codes[str(c.code)] = str(c.severity)
    labels = _labels(case, sample, protocol, plan, moved)
    plan_json = plan.to_json()
    r: dict[str, Any] = {}
    rng, iso = plan.scan_range, plan.isocenter
    tr = truth_range(sample, protocol)
    if rng is not None and iso is not None and case.range_change_mm is None:
        cs = sample.cross_sections()
        try:
            tx, tz = true_isocenter(cs, rng.start_mm, rng.end_mm)
            r.update(
                iso_z_err_mm=iso.z_mm - tz, iso_x_err_mm=iso.x_mm - tx, naive_z_err_mm=iso.naive_z_mm - tz
            )
        except ValueError:
            pass
        if tr is not None:
            try:
                tx2, tz2 = true_isocenter(cs, *tr)
                r.update(iso_z_err_true_range_mm=iso.z_mm - tz2, iso_x_err_true_range_mm=iso.x_mm - tx2)
            except ValueError:
                pass
            r.update(start_err_mm=rng.start_mm - tr[0], end_err_mm=rng.end_mm - tr[1])
    if sample.position is not None:
        truth = truth_levels(sample)
        planned_landmarks = plan_json.get("landmarks") or {}
        r["level_err_mm"] = {
            k: float(planned_landmarks[k][1]) - v for k, v in truth.items() if k in planned_landmarks
        }
    return CaseResult(
        case=case,
        camera=sample.camera,
        position=sample.position,
        plan=plan_json,
        codes=codes,
        labels=labels,
        seconds=time.perf_counter() - t0,
        plan_ms=plan_ms,
        **r,
    )


def _err_stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    if len(a) == 0:
        return {"n": 0}
    return {
        "n": len(a),
        "median_abs_mm": round(float(np.median(np.abs(a))), 2),
        "p95_abs_mm": round(float(np.percentile(np.abs(a), 95)), 2),
        "bias_mm": round(float(np.median(a)), 2),
        "max_abs_mm": round(float(np.max(np.abs(a))), 2),
    }


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Accuracy statistics (over accuracy cases) and check precision/recall (over all cases)."""
    acc = [r for r in results if r.case.accuracy]
    fields = ("iso_z_err_mm", "iso_x_err_mm", "iso_z_err_true_range_mm", "iso_x_err_true_range_mm",
              "naive_z_err_mm", "start_err_mm", "end_err_mm")  # fmt: skip
    out: dict[str, Any] = {
        "cases": len(results),
        "accuracy_cases": len(acc),
        "accuracy_sessions": len({(r.case.scenario, r.case.seed) for r in acc}),
        "planned": sum(1 for r in acc if math.isfinite(r.iso_z_err_mm)),
        "overall": {f: _err_stats([getattr(r, f) for r in acc]) for f in fields},
        "by_protocol": {},
        "by_group": {},
    }
    for p in sorted({r.case.protocol for r in acc}):
        sub = [r for r in acc if r.case.protocol == p]
        out["by_protocol"][p] = {f: _err_stats([getattr(r, f) for r in sub]) for f in fields}
    groups = {
        "supine": lambda r: (r.position or "").endswith("S"),
        "prone": lambda r: (r.position or "").endswith("P"),
        "decubitus": lambda r: (r.position or "")[2:3] == "D",
        "D435": lambda r: r.camera == "D435",
        "D455": lambda r: r.camera == "D455",
    }
    for g, pred in groups.items():
        sub = [r for r in acc if pred(r)]
        out["by_group"][g] = {f: _err_stats([getattr(r, f) for r in sub]) for f in fields}
    checks: dict[str, dict[str, int]] = {}
    for r in results:
        for code, label in r.labels.items():
            c = checks.setdefault(code, {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
            raised = code in r.codes
            if code == "BORE_COLLISION":
                raised = r.codes.get(code) == "error"
            key = ("tp" if label else "fp") if raised else ("fn" if label else "tn")
            c[key] += 1
    for c in checks.values():
        c["precision"] = round(c["tp"] / (c["tp"] + c["fp"]), 3) if c["tp"] + c["fp"] else None  # type: ignore[assignment]
        c["recall"] = round(c["tp"] / (c["tp"] + c["fn"]), 3) if c["tp"] + c["fn"] else None  # type: ignore[assignment]
    out["checks"] = dict(sorted(checks.items()))
    # landmark levels: one entry per accuracy session (every protocol plans the same levels)
    first: dict[tuple[str, int], CaseResult] = {}
    for r in acc:
        first.setdefault((r.case.scenario, r.case.seed), r)
    names = [n for n in PLANNING_LANDMARKS if any(n in r.level_err_mm for r in first.values())]
    out["levels"] = {n: _err_stats([r.level_err_mm.get(n, math.nan) for r in first.values()]) for n in names}
    return out


def benchmark_plan(
    *,
    seeds_per_scenario: int = 4,
    include_checks: bool = True,
    progress: bool = True,
    use_level_net: bool = True,
    landmarks: str = "fused",
) -> tuple[dict[str, Any], list[CaseResult]]:
    """Run the benchmark.

    Args:
        seeds_per_scenario: scales the number of sessions (4: about 42 accuracy sessions, 72 check cases).
        include_checks: also run the check cases.
        use_level_net: fuse the level network into the landmark levels (False: keypoint rules only).
        landmarks: landmark sources of the perceiver (``mediapipe``, ``depth`` or ``fused``).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(summary, results)``.
    """
    from tqdm import tqdm

    from positioning.perception.pipeline import Perceiver, PerceiverSettings

    cases = accuracy_cases(seeds_per_scenario)
    if include_checks:
        cases += check_cases(seeds_per_scenario)
    results = []
    with Perceiver(settings=PerceiverSettings(track=True, landmarks=landmarks)) as perceiver:
        for case in tqdm(cases, desc="plan benchmark", unit="case", file=sys.stderr, disable=not progress):
            results.append(run_case(case, perceiver, use_level_net=use_level_net))
    summary = summarize(results)
    summary["seconds_per_case"] = round(float(np.median([r.seconds for r in results])), 2)
    plan_ms = [r.plan_ms for r in results if math.isfinite(r.plan_ms)]
    summary["make_plan_ms"] = {
        "median": round(float(np.median(plan_ms)), 1),
        "p95": round(float(np.percentile(plan_ms, 95)), 1),
    }
    return summary, results


def format_report(summary: dict[str, Any]) -> str:
    """Human-readable tables of :func:`summarize`'s output."""

    def row(name: str, st: dict[str, Any]) -> str:
        if not st.get("n"):
            return f"  {name:34s}      -"
        return (
            f"  {name:34s} n {st['n']:3d}  median {st['median_abs_mm']:6.1f}  p95 {st['p95_abs_mm']:6.1f}  "
            f"bias {st['bias_mm']:+6.1f}  max {st['max_abs_mm']:6.1f}"
        )

    names = {
        "iso_z_err_mm": "isocenter z (plan range)",
        "iso_x_err_mm": "isocenter x (plan range)",
        "iso_z_err_true_range_mm": "isocenter z (true range)",
        "iso_x_err_true_range_mm": "isocenter x (true range)",
        "naive_z_err_mm": "naive z: table + h/2 (plan range)",
        "start_err_mm": "scan start (low y end)",
        "end_err_mm": "scan end (high y end)",
    }
    lines = [
        f"accuracy: {summary['accuracy_cases']} plans on {summary['accuracy_sessions']} held-out sessions "
        f"({summary['planned']} planned); errors = plan - truth, mm",
    ]
    lines += [row(names[f], st) for f, st in summary["overall"].items()]
    for title, block in (("by protocol", summary["by_protocol"]), ("by group", summary["by_group"])):
        lines.append(f"{title}:")
        for k, sts in block.items():
            lines.append(f" {k}")
            lines += [
                row(names[f], sts[f]) for f in ("iso_z_err_mm", "iso_x_err_mm", "start_err_mm", "end_err_mm")
            ]
    if summary.get("levels"):
        lines.append("landmark levels along the table (one per accuracy session):")
        lines += [row(name, st) for name, st in summary["levels"].items()]
    lines.append("checks (labels from the truth): code, tp fp fn tn, precision, recall")
    for code, c in summary.get("checks", {}).items():
        lines.append(
            f"  {code:22s} {c['tp']:3d} {c['fp']:3d} {c['fn']:3d} {c['tn']:3d}   "
            f"P {'-' if c['precision'] is None else c['precision']}   "
            f"R {'-' if c['recall'] is None else c['recall']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.bench_plan", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="one seed per scenario (a smoke run)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds-per-scenario scale (default 4)")
    parser.add_argument("--no-checks", action="store_true", help="accuracy cases only")
    parser.add_argument("--json", type=Path, help="write the summary and per-case results here")
    parser.add_argument(
        "--no-level-net", action="store_true", help="landmark levels from the keypoint rules alone"
    )
    parser.add_argument(
        "--landmarks",
        choices=LANDMARK_MODES,
        default="fused",
        help="landmark sources (default fused)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    summary, results = benchmark_plan(
        seeds_per_scenario=1 if args.quick else args.seeds,
        include_checks=not args.no_checks,
        use_level_net=not args.no_level_net,
        landmarks=args.landmarks,
    )
    print(format_report(summary))
    print(
        f"make_plan: median {summary['make_plan_ms']['median']} ms, p95 {summary['make_plan_ms']['p95']} ms"
    )
    print(
        f"({time.perf_counter() - t0:.0f} s, {summary['seconds_per_case']} s per case incl. simulation on a "
        "cache miss)"
    )
    if args.json:
        doc = {
            "summary": summary,
            "results": [
                {
                    "case": dataclasses.asdict(r.case) | {"settings": None},
                    "camera": r.camera,
                    "position": r.position,
                    "codes": r.codes,
                    "labels": r.labels,
                    **{
                        k: (None if not math.isfinite(v) else round(v, 2))
                        for k, v in dataclasses.asdict(r).items()
                        if isinstance(v, float) and k != "seconds"
                    },
                    "level_err_mm": {k: round(v, 2) for k, v in r.level_err_mm.items()},
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
