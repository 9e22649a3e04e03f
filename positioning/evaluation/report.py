"""The evaluation report: a console summary, and a Markdown plus a self-contained HTML report with plots.

The report is drawn from :func:`positioning.evaluation.summary.summarize`'s summary and the
:class:`~positioning.evaluation.records.CaseRecord` list it came from. ``report.html`` is one file with
inline CSS and every picture embedded as a base64 ``data:`` URI (no external resources, no JavaScript);
``report.md`` links the same pictures: the plots written to ``OUT/plots/`` and the overlays the caller
writes to ``OUT/overlays/NAME.jpg``.

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth; "median (IQR)" is the median
and the 25th–75th percentiles, "median/p95" the median and the 95th percentile of absolute errors.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import math
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning.evaluation.records import CaseRecord
from positioning.evaluation.summary import bland_altman, published_figures

__all__ = ["format_text", "write_report"]

NOTATION = (
    "All distances are in mm in the scanner frame (IEC 61217: z up, x lateral, y along the table); "
    "errors are estimate minus truth. 'median (IQR)' is the median with the 25th–75th percentiles, "
    "'median/p95' the median and the 95th percentile, both of absolute errors unless marked signed; "
    "'LoA' are Bland–Altman 95 % limits of agreement (bias ± 1.96 SD); shares are of cases that made a "
    "plan, in %. '–' means not measurable."
)


# ---------------------------------------------------------------------------------------------- formatting
def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _mm(v: Any, nd: int = 1) -> str:
    f = _num(v)
    return f"{f:.{nd}f}" if math.isfinite(f) else "–"


def _pct(v: Any) -> str:
    f = _num(v)
    return f"{100.0 * f:.0f}" if math.isfinite(f) else "–"


def _mp(d: dict[str, Any], med: str = "median_mm", p95: str = "p95_mm") -> str:
    return f"{_mm(d.get(med))}/{_mm(d.get(p95))}"


def _iqr(d: dict[str, Any]) -> str:
    if d.get("median_mm") is None:
        return "–"
    return f"{_mm(d['median_mm'])} ({_mm(d['q1_mm'])}–{_mm(d['q3_mm'])})"


def _loa(ba: dict[str, Any]) -> str:
    if ba.get("bias_mm") is None:
        return "–"
    return f"{_mm(ba['bias_mm'], 1)} ({_mm(ba.get('loa_low_mm'))} to {_mm(ba.get('loa_high_mm'))})"


# ---------------------------------------------------------------------------------------------- console
def format_text(summary: dict[str, Any]) -> str:
    """A compact console summary of :func:`~positioning.evaluation.summary.summarize`'s output."""
    h = summary["headline"]
    lines = [
        f"cases {h['cases']} (with truth {h['with_truth']}), failures {h['failures']}, "
        f"large errors {h['large_errors']}, silent failures {h['silent_failures']}",
        f"position right {_pct(h['position_accuracy'])} %, arms right {_pct(h['arms_accuracy'])} %",
        f"isocenter |error| median/p95: vertical {_mm(h['iso_z_median_mm'])}/{_mm(h['iso_z_p95_mm'])} mm, "
        f"lateral {_mm(h['iso_x_median_mm'])}/{_mm(h['iso_x_p95_mm'])} mm; vertical within 5/10/15 mm: "
        f"{_pct(h['iso_z_within_5mm'])}/{_pct(h['iso_z_within_10mm'])}/{_pct(h['iso_z_within_15mm'])} %",
        f"scan-range ends |error| median/p95 {_mm(h['range_end_median_mm'])}/{_mm(h['range_end_p95_mm'])} "
        f"mm; table moves |error| median: vertical {_mm(h['table_vertical_median_mm'])} mm, longitudinal "
        f"{_mm(h['table_longitudinal_median_mm'])} mm; table top within 10 mm "
        f"{_pct(h['table_top_within_10mm'])} %; shoulders/hips 3-D median "
        f"{_mm(h['shoulders_hips_median_mm'])} mm",
    ]
    regions = summary.get("regions", {})
    if any(reg["n"] for reg in regions.values()):
        lines.append(
            "by region: |vertical isocenter error| median (IQR) mm, n, within 5/10/15 mm, BA bias (LoA):"
        )
        for name, reg in regions.items():
            if reg["n"]:
                lines.append(
                    f"  {name:<22} {_iqr(reg['iso_z_abs_mm']):<20} n {reg['n']:<4} "
                    f"{_pct(reg['within_5mm'])}/{_pct(reg['within_10mm'])}/{_pct(reg['within_15mm'])} %  "
                    f"{_loa(reg['bland_altman'])} mm"
                )
    w = summary.get("worst_factor_level")
    if w:
        lines.append(
            f"worst factor level: {w['factor']} = {w['level']}: vertical isocenter |error| median/p95 "
            f"{_mm(w['iso_z_median_mm'])}/{_mm(w['iso_z_p95_mm'])} mm (n {w['n']})"
        )
    for f in summary.get("failures", []):
        lines.append(f"failure: {f['name']}: {f['failure']}")
    for s in summary.get("silent_failures", []):
        lines.append(
            f"silent failure: {s['name']} (isocenter z {_mm(s['iso_z_mm'])} mm, range start "
            f"{_mm(s['start_mm'])} mm, end {_mm(s['end_mm'])} mm)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- document
@dataclasses.dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class _Para:
    text: str


@dataclasses.dataclass(frozen=True)
class _List:
    items: list[str]


@dataclasses.dataclass(frozen=True)
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclasses.dataclass(frozen=True)
class _Image:
    caption: str
    rel_path: str  # relative to the report (Markdown link)
    data: bytes  # embedded in the HTML
    mime: str


_Block = _Heading | _Para | _List | _Table | _Image

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 78em;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #335; } h2 { border-bottom: 1px solid #ccd; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef; } tr:nth-child(even) td { background: #f8f8fc; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #ddd; } .note { color: #555; font-size: 0.9em; }
code { background: #f3f3f6; padding: 0 0.2em; }
"""


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _render_md(title: str, blocks: Sequence[_Block]) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, _Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, _Para):
            out += [b.text, ""]
        elif isinstance(b, _List):
            out += [f"- {_md_cell(i)}" for i in b.items] + [""]
        elif isinstance(b, _Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, _Image):
            out += [f"![{_md_cell(b.caption)}]({urllib.parse.quote(b.rel_path)})", ""]
    return "\n".join(out)


def _render_html(title: str, blocks: Sequence[_Block]) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for b in blocks:
        if isinstance(b, _Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, _List):
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, _Table):
            head = "".join(f"<th>{e(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, _Image):
            data = base64.b64encode(b.data).decode("ascii")
            out.append(
                f'<figure><img src="data:{b.mime};base64,{data}" alt="{e(b.caption)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- plots
def _planned_truth(r: CaseRecord) -> bool:
    return r.truth is not None and r.truth.position is not None and r.planned and r.errors is not None


def _plots(records: Sequence[CaseRecord], plots_dir: Path) -> dict[str, tuple[Path, str]]:
    """The report's PNG plots (only those with data): name -> (path, caption)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas renders PNG

    pt = [r for r in records if _planned_truth(r)]
    iso_z = np.array([r.errors.iso_z_mm for r in pt], dtype=float)
    iso_x = np.array([r.errors.iso_x_mm for r in pt], dtype=float)
    start = np.array([r.errors.start_mm for r in pt], dtype=float)
    end = np.array([r.errors.end_mm for r in pt], dtype=float)
    out: dict[str, tuple[Path, str]] = {}

    def save(fig: Any, name: str, caption: str) -> None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        path = plots_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=90)
        out[name] = (path, caption)

    def hist(ax: Any, values: np.ndarray, label: str | None = None, **kw: Any) -> None:
        v = values[np.isfinite(values)]
        if v.size:
            ax.hist(v, bins=min(30, max(5, v.size // 2)), label=label, **kw)
        ax.axvline(0.0, color="k", lw=0.8)

    if np.isfinite(iso_z).any() or np.isfinite(iso_x).any():
        fig = Figure(figsize=(9, 3.4))
        ax1, ax2 = fig.subplots(1, 2)
        hist(ax1, iso_z, color="#4a6fa5")
        ax1.set(title="Vertical isocenter error", xlabel="estimate − truth, z (mm)", ylabel="cases")
        hist(ax2, iso_x, color="#6fa54a")
        ax2.set(title="Lateral isocenter error", xlabel="estimate − truth, x (mm)", ylabel="cases")
        save(fig, "isocenter_error_hist", "Isocenter error, vertical and lateral (mm, signed)")
    if np.isfinite(start).any() or np.isfinite(end).any():
        fig = Figure(figsize=(6, 3.4))
        ax = fig.subplots()
        hist(ax, start, label="start", alpha=0.6, color="#4a6fa5")
        hist(ax, end, label="end", alpha=0.6, color="#c0504d")
        ax.set(title="Scan-range end error", xlabel="estimate − truth, y (mm)", ylabel="cases")
        ax.legend()
        save(fig, "range_end_error_hist", "Scan-range end error, start and end (mm, signed)")
    bmi = np.array([r.truth.bmi for r in pt], dtype=float)
    ok = np.isfinite(bmi) & np.isfinite(iso_z)
    if ok.any():
        fig = Figure(figsize=(6, 3.8))
        ax = fig.subplots()
        regions = [r.body_region for r in pt]
        for reg in sorted(set(regions)):
            m = ok & np.array([g == reg for g in regions])
            if m.any():
                ax.scatter(bmi[m], np.abs(iso_z[m]), label=reg, s=18, alpha=0.8)
        for mm in (5, 10, 15):
            ax.axhline(mm, color="#999", lw=0.6, ls="--")
        ax.set(title="Vertical isocenter error vs body size", xlabel="BMI (kg/m²)", ylabel="|z error| (mm)")
        ax.legend(fontsize=8, title="body region", title_fontsize=8)
        save(fig, "iso_z_error_vs_bmi", "|Vertical isocenter error| (mm) vs BMI (kg/m²), by body region")
    ba = bland_altman(records)
    if ba["n"]:
        fig = Figure(figsize=(6, 3.8))
        ax = fig.subplots()
        ax.scatter(ba["mean_mm"], ba["diff_mm"], s=18, alpha=0.8, color="#4a6fa5")
        for y, style, lab in (
            (ba["bias_mm"], "-", f"bias {_mm(ba['bias_mm'])} mm"),
            (ba["loa_low_mm"], "--", f"LoA {_mm(ba['loa_low_mm'])} mm"),
            (ba["loa_high_mm"], "--", f"LoA {_mm(ba['loa_high_mm'])} mm"),
        ):
            if math.isfinite(y):
                ax.axhline(y, color="#c0504d", ls=style, lw=1.0, label=lab)
        ax.set(
            title="Bland–Altman: isocenter height",
            xlabel="mean of planned and true isocenter z (mm)",
            ylabel="planned − true z (mm)",
        )
        ax.legend(fontsize=8)
        save(fig, "bland_altman_iso_z", "Bland–Altman plot of isocenter height (mm): bias and 95 % LoA")
    return out


# ---------------------------------------------------------------------------------------------- sections
def _published_cells(region: str) -> tuple[str, str, dict[str, int]]:
    """The published manual and camera figures for one of our regions, with reference numbers."""
    pubs = published_figures()
    ref = {c: i + 1 for i, c in enumerate(dict.fromkeys(p.citation for p in pubs))}
    cells = {"manual": [], "camera": []}
    for p in pubs:
        if (region == "all" and not p.regions) or region in p.regions:
            label = "" if p.method == "manual" else f"{p.system}: "
            cells[p.method].append(f"{label}{p.value_text} [{ref[p.citation]}]")
    return "; ".join(cells["manual"]) or "–", "; ".join(cells["camera"]) or "–", ref


def _headline_blocks(summary: dict[str, Any]) -> list[_Block]:
    h = summary["headline"]
    rows = [
        ["Cases (all / with truth)", f"{h['cases']} / {h['with_truth']}"],
        ["Failures: patient, no plan (cases)", str(h["failures"])],
        ["Patient position right (%)", _pct(h["position_accuracy"])],
        ["Arm state right (%)", _pct(h["arms_accuracy"])],
        ["|Vertical isocenter error| median/p95 (mm)", _mp(h, "iso_z_median_mm", "iso_z_p95_mm")],
        ["|Lateral isocenter error| median/p95 (mm)", _mp(h, "iso_x_median_mm", "iso_x_p95_mm")],
        ["Vertical isocenter within 5 / 10 / 15 mm (%)",
         f"{_pct(h['iso_z_within_5mm'])} / {_pct(h['iso_z_within_10mm'])} / {_pct(h['iso_z_within_15mm'])}"],
        ["|Table vertical move error| median (mm)", _mm(h["table_vertical_median_mm"])],
        ["|Table longitudinal move error| median (mm)", _mm(h["table_longitudinal_median_mm"])],
        ["|Scan-range end error|, both ends, median/p95 (mm)",
         f"{_mm(h['range_end_median_mm'])}/{_mm(h['range_end_p95_mm'])}"],
        ["Shoulders and hips, 3-D keypoint error median (mm)", _mm(h["shoulders_hips_median_mm"])],
        ["Table top within 10 mm (%)", _pct(h["table_top_within_10mm"])],
        ["Large errors (|z| > 15 mm or a range end > 30 mm) (cases)", str(h["large_errors"])],
        ["Silent failures: large error, no reliability check (cases)", str(h["silent_failures"])],
    ]  # fmt: skip
    return [_Heading(2, "Headline"), _Table(["figure", "value"], rows)]


def _region_blocks(summary: dict[str, Any]) -> list[_Block]:
    headers = [
        "body region",
        "n (planned)",
        "|vertical iso error| median (IQR) (mm)",
        "≤5 mm (%)",
        "≤10 mm (%)",
        "≤15 mm (%)",
        "Bland–Altman bias (95 % LoA) (mm)",
        "|range end error| median/p95 (mm)",
        "manual positioning, published",
        "commercial cameras, published",
    ]
    rows = []
    ref: dict[str, int] = {}
    for name, reg in summary["regions"].items():
        manual, camera, ref = _published_cells(name)
        rows.append(
            [
                name,
                f"{reg['n']} ({reg['planned']})",
                _iqr(reg["iso_z_abs_mm"]),
                _pct(reg["within_5mm"]),
                _pct(reg["within_10mm"]),
                _pct(reg["within_15mm"]),
                _loa(reg["bland_altman"]),
                _mp(reg["range_end_abs_mm"]),
                manual,
                camera,
            ]
        )
    if not ref:
        _, _, ref = _published_cells("all")
    pub_rows = [
        [p.system, p.region, p.statistic, p.value_text, f"[{ref[p.citation]}] {p.citation}"]
        for p in published_figures()
    ]
    return [
        _Heading(2, "Vertical centering by body region"),
        _Para(
            "The form the published studies use: median (IQR) of the absolute vertical isocenter error per "
            "body region, shares within 5, 10 and 15 mm, and the Bland–Altman agreement of the planned "
            "isocenter height with the true one (planned z = true z over the plan's range + error). The "
            "published figures are for real patients (ground truth: skin-contour centroid on CT); ours "
            "are against the simulator's truth. 'all' compares with studies that pooled regions."
        ),
        _Table(headers, rows) if rows else _Para("No cases with truth."),
        _Heading(3, "Published vertical off-centering (mm)"),
        _Table(["who", "region", "statistic", "figure", "source"], pub_rows),
    ]


def _landmark_blocks(summary: dict[str, Any]) -> list[_Block]:
    kp = summary["landmarks"]["keypoints"]
    lv = summary["landmarks"]["levels"]
    blocks: list[_Block] = [_Heading(2, "Landmarks")]
    if kp:
        blocks += [
            _Para("3-D distance of each perceived COCO keypoint to its truth (mm)."),
            _Table(
                ["keypoint", "n", "median (mm)", "p95 (mm)"],
                [[k, str(d["n"]), _mm(d["median_mm"]), _mm(d["p95_mm"])] for k, d in kp.items()],
            ),
        ]
    if lv:
        blocks += [
            _Para("Planning landmark levels along the table (scanner y): signed median (bias) and |error|."),
            _Table(
                ["level", "n", "bias, signed median (mm)", "|error| median (mm)", "|error| p95 (mm)"],
                [
                    [k, str(d["n"]), _mm(d["bias_mm"]), _mm(d["median_mm"]), _mm(d["p95_mm"])]
                    for k, d in lv.items()
                ],
            ),
        ]
    if not kp and not lv:
        blocks.append(_Para("No landmark errors (no planned cases with truth)."))
    return blocks


def _check_blocks(summary: dict[str, Any]) -> list[_Block]:
    blocks: list[_Block] = [
        _Heading(2, "Checks"),
        _Para(
            "A check fires when its code is raised as a warning or an error; positives are the cases where "
            "truth says it should fire. Precision = TP/(TP+FP), recall = TP/(TP+FN) (– when undefined)."
        ),
    ]
    pr = summary["checks"]
    if pr:
        blocks.append(
            _Table(
                ["check", "cases judged", "TP", "FP", "FN", "TN", "precision (%)", "recall (%)"],
                [
                    [
                        c,
                        *(str(d[k]) for k in ("n", "tp", "fp", "fn", "tn")),
                        _pct(d["precision"]),
                        _pct(d["recall"]),
                    ]
                    for c, d in pr.items()
                ],
            )
        )
    else:
        blocks.append(_Para("No check labels (no cases with truth)."))
    fired = summary["checks_fired"]
    if fired:
        blocks += [
            _Para("How often each check was raised, all cases (cases):"),
            _Table(
                ["check", "error", "warning", "info"],
                [
                    [c, str(d.get("error", 0)), str(d.get("warning", 0)), str(d.get("info", 0))]
                    for c, d in fired.items()
                ],
            ),
        ]
    return blocks


def _factor_blocks(summary: dict[str, Any]) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Breakdown by factor")]
    w = summary["worst_factor_level"]
    if w:
        blocks.append(
            _Para(
                "Worst factor level by p95 of |vertical isocenter error| (levels with at least 3 measured "
                f"cases): {w['factor']} = {w['level']}, median/p95 "
                f"{_mp(w, 'iso_z_median_mm', 'iso_z_p95_mm')} mm (n {w['n']})."
            )
        )
    headers = [
        "level",
        "n",
        "position right (%)",
        "arms right (%)",
        "|vertical iso error| median/p95 (mm)",
        "|range end error| median/p95 (mm)",
        "failures",
        "silent failures",
    ]
    for f, levels in summary["factors"].items():
        rows = [
            [
                lv,
                str(g["n"]),
                _pct(g["position_accuracy"]),
                _pct(g["arms_accuracy"]),
                _mp(g, "iso_z_median_mm", "iso_z_p95_mm"),
                _mp(g, "range_end_median_mm", "range_end_p95_mm"),
                str(g["failures"]),
                str(g["silent_failures"]),
            ]
            for lv, g in levels.items()
        ]
        blocks += [_Heading(3, f), _Table(headers, rows)]
    if not summary["factors"]:
        blocks.append(_Para("No factors (no cases with truth)."))
    return blocks


def _failure_blocks(summary: dict[str, Any]) -> list[_Block]:
    fails = summary["failures"]
    silent = summary["silent_failures"]
    return [
        _Heading(2, "Failures and silent failures"),
        _Para(f"Failures (no plan made, {len(fails)}):"),
        _List([f"{f['name']} ({f['protocol']}): {f['failure']}" for f in fails] or ["none"]),
        _Para(f"Silent failures (a large error that no reliability check flagged, {len(silent)}):"),
        _List(
            [
                f"{s['name']} ({s['protocol']}): vertical isocenter error {_mm(s['iso_z_mm'])} mm, "
                f"range start {_mm(s['start_mm'])} mm, end {_mm(s['end_mm'])} mm"
                for s in silent
            ]
            or ["none"]
        ),
    ]


def _fired_text(r: CaseRecord) -> str:
    return ", ".join(f"{c} ({s})" for c, s in r.fired.items() if s != "info") or "–"


def _case_blocks(records: Sequence[CaseRecord]) -> list[_Block]:
    truth = [r for r in records if r.truth is not None]
    if not truth:
        return []
    rows = []
    for r in truth:
        e = r.errors
        perceived = None if r.plan is None else r.plan.get("patient_position")
        status = "no plan" if not r.planned else ("silent failure" if e and e.silent_failure else "")
        if r.truth.position is None:
            status = "empty table" + (", no plan" if not r.planned else ", planned")
        if e and e.large_error and not e.silent_failure:
            status = "large error, flagged"
        rows.append(
            [
                r.name,
                r.protocol,
                f"{r.truth.position or 'empty'} / {perceived or '–'}",
                _mm(e.iso_z_mm if e else None),
                _mm(e.iso_x_mm if e else None),
                _mm(e.start_mm if e else None),
                _mm(e.end_mm if e else None),
                _fired_text(r),
                status,
            ]
        )
    headers = [
        "case",
        "protocol",
        "position true / perceived",
        "iso z error (mm)",
        "iso x error (mm)",
        "range start error (mm)",
        "range end error (mm)",
        "checks fired",
        "note",
    ]
    return [_Heading(2, "Cases with truth"), _Para("Errors signed, estimate − truth."), _Table(headers, rows)]


def _overlay(out_dir: Path, name: str, caption: str) -> list[_Block]:
    path = out_dir / "overlays" / f"{name}.jpg"
    if not path.is_file():
        return [_Para(f"(no overlay picture for {name})")]
    return [_Image(caption, f"overlays/{name}.jpg", path.read_bytes(), "image/jpeg")]


def _worst_case_blocks(records: Sequence[CaseRecord], out_dir: Path) -> list[_Block]:
    pt = [r for r in records if _planned_truth(r) and math.isfinite(r.errors.iso_z_mm)]
    worst = sorted(pt, key=lambda r: -abs(r.errors.iso_z_mm))[:3]
    blocks: list[_Block] = []
    for r in worst:
        if (out_dir / "overlays" / f"{r.name}.jpg").is_file():
            blocks += _overlay(
                out_dir, r.name, f"{r.name}: vertical isocenter error {_mm(r.errors.iso_z_mm)} mm"
            )
    return [_Heading(2, "The 3 worst cases by |vertical isocenter error|"), *blocks] if blocks else []


def _plan_rows(plan: dict[str, Any]) -> list[list[str]]:
    iso = plan.get("isocenter") or {}
    off = plan.get("table_offset") or {}
    rng = plan.get("scan_range") or {}
    return [
        ["status", str(plan.get("status"))],
        ["patient position", str(plan.get("patient_position") or "–")],
        ["arms", str(plan.get("arms") or "–")],
        ["isocenter x / z (mm)", f"{_mm(iso.get('x_mm'))} / {_mm(iso.get('z_mm'))}"],
        ["table offset vertical / longitudinal (mm)",
         f"{_mm(off.get('vertical_mm'))} / {_mm(off.get('longitudinal_mm'))}"],
        ["scan range start / end (mm)", f"{_mm(rng.get('start_mm'))} / {_mm(rng.get('end_mm'))}"],
    ]  # fmt: skip


def _no_truth_blocks(records: Sequence[CaseRecord], out_dir: Path) -> list[_Block]:
    recs = [r for r in records if r.truth is None]
    if not recs:
        return []
    blocks: list[_Block] = [
        _Heading(2, "Recordings without truth"),
        _Para("The plan as made (scanner frame, mm; table offset: positive raises / moves into the gantry)."),
    ]
    for r in recs:
        blocks.append(_Heading(3, f"{r.name} ({r.protocol}, {r.body_region})"))
        if r.plan is None:
            blocks.append(_Para(f"No plan: {r.failure or 'no plan'}"))
        else:
            blocks.append(_Table(["plan", "value"], _plan_rows(r.plan)))
        checks = [f"{c.get('severity')}: {c.get('code')}: {c.get('message', '')}" for c in r.checks]
        blocks.append(_List(checks or ["no checks raised"]))
        blocks += _overlay(out_dir, r.name, f"{r.name}: the plan drawn on the last frame")
    return blocks


# ---------------------------------------------------------------------------------------------- report
def write_report(
    records: Sequence[CaseRecord], summary: dict[str, Any], out_dir: Path, *, title: str, command: str
) -> dict[str, Path]:
    """Write ``report.md``, a self-contained ``report.html`` and the plots (``plots/*.png``) to ``out_dir``.

    Args:
        records: the evaluated cases (the overlays, if any, are at ``out_dir/overlays/NAME.jpg``).
        summary: :func:`~positioning.evaluation.summary.summarize` of ``records``.
        out_dir: the report folder (created).
        title: the report's title.
        command: the command line that made it (shown in the report).

    Returns:
        ``{"markdown": ..., "html": ..., and one entry per plot written}`` (paths).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(records, out_dir / "plots")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    h = summary["headline"]
    blocks: list[_Block] = [
        _Para(f"Made {now} by: {command}"),
        _Para(
            f"{h['cases']} cases: {h['with_truth']} with truth (simulated), {h['cases'] - h['with_truth']} "
            f"without (real recordings)."
        ),
        _Para(NOTATION),
    ]
    blocks += _headline_blocks(summary)
    blocks += _region_blocks(summary)
    if plots:
        blocks.append(_Heading(2, "Plots"))
        blocks += [_Image(cap, f"plots/{p.name}", p.read_bytes(), "image/png") for p, cap in plots.values()]
    blocks += _landmark_blocks(summary)
    blocks += _check_blocks(summary)
    blocks += _factor_blocks(summary)
    blocks += _failure_blocks(summary)
    blocks += _worst_case_blocks(records, out_dir)
    blocks += _case_blocks(records)
    blocks += _no_truth_blocks(records, out_dir)
    md = out_dir / "report.md"
    md.write_text(_render_md(title, blocks), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(_render_html(title, blocks), encoding="utf-8")
    return {"markdown": md, "html": page} | {name: p for name, (p, _) in plots.items()}
