"""The robustness benchmark: the whole pipeline on held-out sessions of the randomised world, broken down
by every factor the world varies, so that the worst factor shows.

A suite (``sim/suites/NAME.yaml``) names a scenario (the randomised world, ``sim/world.yaml``), a seed
range no model was fitted on, the frames of each session and the protocols to plan. Each case runs the
pipeline exactly as the product does: simulated frames (cached by content, see
:func:`positioning.evaluation.isocenter_fit.load_frames`) ->
:class:`~positioning.perception.pipeline.Perceiver` (tracking over the frames, the chosen landmark
backends) -> :func:`~positioning.planning.plan.make_plan`
(the console's patient position is the simulated one). Truth is read only here, to score:

* table: the table top found, and its height at the patient against the free mattress top (10 mm);
* patient position and arm state against the simulated ones;
* 3-D keypoint errors (COCO-17; shoulders and hips summarised);
* vertical and lateral isocenter error over the plan's range, scan-range start and end error against
  the protocol applied to the truth landmarks;
* silent failures: plans whose vertical isocenter is more than 15 mm off or whose range ends are more
  than 30 mm off, without a check that says the result may be wrong (see :data:`RELIABILITY_CODES`).

Targets (issue 10): table on every session (within 10 mm); position right >= 99 %, arms >= 97 %;
vertical isocenter median <= 3 mm and p95 <= 8 mm uncovered, <= 5 / 12 mm under blankets; shoulders and
hips <= 20 mm median; no silent failure.

Run ``positioning bench robustness`` (``python -m positioning.evaluation.robustness``).

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth.
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

from positioning.evaluation.scoring import RELIABILITY_CODES, SILENT_ISO_MM, SILENT_RANGE_MM
from positioning.evaluation.suite import Suite, load_suite, suite_dir
from positioning.perception.landmarks.base import LANDMARK_MODES

__all__ = [
    "Suite",
    "CaseResult",
    "RELIABILITY_CODES",
    "LANDMARK_MODES",
    "suite_dir",
    "load_suite",
    "session_factors",
    "run_case",
    "run_suite",
    "summarize",
    "format_report",
    "main",
]

SHOULDERS_HIPS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
TABLE_TOLERANCE_MM = 10.0


# ----------------------------------------------------------------------------------------------- factors

_MATTRESS_COLOURS = {
    "black": (0.05, 0.05, 0.06), "dark blue": (0.14, 0.21, 0.38), "grey": (0.40, 0.40, 0.42),
    "light": (0.75, 0.76, 0.74), "blue-green": (0.20, 0.40, 0.45), "light blue": (0.55, 0.65, 0.78),
}  # fmt: skip


def _nearest(rgb: Sequence[float], table: dict[str, tuple[float, float, float]]) -> str:
    return min(table, key=lambda k: sum((a - b) ** 2 for a, b in zip(rgb, table[k], strict=True)))


def _bin(value: float, edges: Sequence[float], names: Sequence[str]) -> str:
    for edge, name in zip(edges, names, strict=False):
        if value < edge:
            return name
    return names[-1]


def session_factors(spec: Any) -> dict[str, str]:
    """The factor levels of one session (for the breakdown), from its spec (what the world drew).

    Args:
        spec: a :class:`~positioning.sim.scenario.SessionSpec`.
    """
    r = spec.room
    f: dict[str, str] = {}
    f["table"] = "bed" if not r.has_gantry else ("ct-curved" if r.cradle_sagitta_mm > 0 else "ct-flat")
    wider = (
        r.base_width_mm > r.table_width_mm and r.base_top_z_mm < r.table_top_z_mm - r.table_thickness_mm - 1
    )
    f["base"] = "wider, below the top" if wider else "narrower or meeting"
    f["mattress colour"] = _nearest(r.mattress_rgb, _MATTRESS_COLOURS)
    f["mattress softness"] = _bin(r.mattress_softness, (0.33, 0.66), ("firm", "medium", "soft"))
    f["nearby surface"] = ",".join(c.kind for c in r.clutter) or "none"
    f["camera"] = spec.rig.model
    height = spec.rig.position_mm[2] - r.mattress_top_z_mm
    f["camera height"] = _bin(height, (1600.0, 2000.0), ("1.2-1.6 m", "1.6-2.0 m", "2.0-2.5 m"))
    f["camera tilt"] = _bin(spec.rig.tilt_deg, (10.0, 20.0), ("0-10 deg", "10-20 deg", "20-35 deg"))
    if spec.placement is None:
        return f
    p = spec.placement
    f["position"] = p.position.lying
    f["arms"] = str(p.arms)
    f["skin"] = next(
        (k for k, v in _skin_types().items() if tuple(v) == tuple(spec.appearance.skin_rgb)), "?"
    )
    f["clothing"] = spec.appearance.clothing
    f["cover"] = spec.cover.kind
    pillows = [n for n, on in (("head", spec.pillows.head), ("knees", p.knee_rest_mm > 0)) if on]
    f["pillows"] = "+".join(pillows) or "none"
    lt = spec.lighting
    level = 1.0 if lt is None else float(np.mean(lt.key_rgb) + np.mean(lt.ambient_rgb))
    f["lighting"] = _bin(level, (0.4, 1.0), ("dim", "normal", "bright"))
    f["staff"] = "+".join(m.pose for m in spec.staff) or "none"
    return f


def _skin_types() -> dict[str, tuple[float, float, float]]:
    from positioning.sim.appearance import FITZPATRICK_SKIN

    return FITZPATRICK_SKIN


# ------------------------------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseResult:
    """One session's scores (NaN where not measurable; see the module docstring).

    Attributes:
        seed: the session's seed.
        mode: the landmark backends used.
        protocol: the protocol planned.
        factors: the session's factor levels.
        status: perception's status code.
        table_found: perception found a table.
        table_err_mm: table-top height at the patient minus the free mattress top.
        table_geometry_err_mm, table_net_err_mm: the same for the geometric height and for the scene
            network's reading (NaN without it), whichever the pipeline used.
        position_true, position: simulated and perceived patient position (None: none).
        arms_true, arms: simulated and perceived arm state.
        keypoint_err_mm: COCO name -> 3-D error (perceived minus truth), perceived landmarks only.
        iso_z_err_mm, iso_x_err_mm: isocenter error over the plan's range.
        start_err_mm, end_err_mm: scan-range end errors against the truth range.
        checks: code -> severity of the plan's checks (the worst per code).
        seconds: wall time of the case.
    """

    seed: int
    mode: str
    protocol: str
    factors: dict[str, str]
    status: str
    table_found: bool
    table_err_mm: float
    position_true: str | None
    position: str | None
    arms_true: str | None
    arms: str | None
    keypoint_err_mm: dict[str, float]
    iso_z_err_mm: float
    iso_x_err_mm: float
    start_err_mm: float
    end_err_mm: float
    checks: dict[str, str]
    seconds: float
    table_geometry_err_mm: float = math.nan
    table_net_err_mm: float = math.nan

    @property
    def planned(self) -> bool:
        return math.isfinite(self.iso_z_err_mm)

    @property
    def large_error(self) -> bool:
        """The plan is off by more than the silent-failure thresholds (or not made at all)."""
        if not self.planned:
            return False
        ends = [abs(e) for e in (self.start_err_mm, self.end_err_mm) if math.isfinite(e)]
        return abs(self.iso_z_err_mm) > SILENT_ISO_MM or any(e > SILENT_RANGE_MM for e in ends)

    @property
    def flagged(self) -> bool:
        """A check says the result may be wrong (a warning or error among :data:`RELIABILITY_CODES`)."""
        return any(c in RELIABILITY_CODES and s in ("warning", "error") for c, s in self.checks.items())

    @property
    def silent_failure(self) -> bool:
        return self.large_error and not self.flagged

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = None if not math.isfinite(v) else round(v, 2)
        d["keypoint_err_mm"] = {k: round(v, 1) for k, v in self.keypoint_err_mm.items()}
        d.update(large_error=self.large_error, flagged=self.flagged, silent_failure=self.silent_failure)
        return d


def run_case(suite: Suite, k: int, perceiver: Any, *, mode: str) -> CaseResult:
    """Run the ``k``-th session of ``suite`` through the pipeline and score it."""
    from positioning.evaluation.bench_plan import truth_range
    from positioning.evaluation.isocenter_fit import load_frames
    from positioning.evaluation.truth import true_isocenter
    from positioning.planning.plan import make_plan
    from positioning.planning.protocol import load_protocol
    from positioning.sim.scenario import sample_session

    t0 = time.perf_counter()
    case = suite.cases[k]
    seed = case.seed
    spec = sample_session(case.scenario, seed)
    truth_position = None if spec.placement is None else str(spec.placement.position)
    protocol = load_protocol(suite.protocol_for(k, truth_position))
    perceiver.reset()
    samples = load_frames(case.scenario, seed, suite.frames)
    state = None
    for s in samples:
        state = perceiver.perceive(s.frame, s.calibration)
    assert state is not None
    sample = samples[-1]
    plan = make_plan(state, protocol, expected_position=truth_position)
    table = state.table
    table_err = table_geometry_err = table_net_err = math.nan
    if table is not None:
        at = sample.keypoints_mm.get("left_hip")
        if at is not None:
            x, y = float(at[0]), float(at[1])
        else:  # empty table: score the height in the middle of the top the pipeline found
            x, y = 0.0, 0.5 * (table.y_min_mm + table.y_max_mm)
        table_err = float(table.z_at(x, y)) - sample.mattress_top_z_mm
        table_geometry_err = table_err - table.height_shift_mm
        if state.scene is not None:
            table_net_err = float(state.scene.table_z_mm) - sample.mattress_top_z_mm
    kp_err = {
        n: float(np.linalg.norm(np.asarray(state.landmarks_mm[n]) - sample.keypoints_mm[n]))
        for n in sample.keypoints_mm
        if state.landmark(n) is not None
    }
    iso_z = iso_x = start = end = math.nan
    if plan.scan_range is not None and plan.isocenter is not None:
        try:
            tx, tz = true_isocenter(sample.cross_sections(), plan.scan_range.start_mm, plan.scan_range.end_mm)
            iso_z, iso_x = plan.isocenter.z_mm - tz, plan.isocenter.x_mm - tx
        except ValueError:
            pass
        tr = truth_range(sample, protocol)
        if tr is not None:
            start, end = plan.scan_range.start_mm - tr[0], plan.scan_range.end_mm - tr[1]
    checks: dict[str, str] = {}
    rank = {"info": 0, "warning": 1, "error": 2}
    for c in plan.checks:
        sev = str(c.severity)
        if rank[sev] >= rank.get(checks.get(str(c.code), "info"), 0):
            checks[str(c.code)] = sev
    return CaseResult(
        seed=seed,
        mode=mode,
        protocol=protocol.name,
        factors=session_factors(spec),
        status=state.status.value,
        table_found=table is not None,
        table_err_mm=table_err,
        position_true=truth_position,
        position=None if state.patient_position is None else str(state.patient_position),
        arms_true=None if spec.placement is None else str(spec.placement.arms),
        arms=None if state.arms is None else str(state.arms),
        keypoint_err_mm=kp_err,
        iso_z_err_mm=iso_z,
        iso_x_err_mm=iso_x,
        start_err_mm=start,
        end_err_mm=end,
        checks=checks,
        seconds=time.perf_counter() - t0,
        table_geometry_err_mm=table_geometry_err,
        table_net_err_mm=table_net_err,
    )


def _perceiver(mode: str) -> Any:
    from positioning.perception.pipeline import Perceiver, PerceiverSettings

    return Perceiver(settings=PerceiverSettings(track=True, landmarks=mode))


_WORKER: dict[str, Any] = {}


def _work(args: tuple[Suite, int, str]) -> CaseResult:
    suite, k, mode = args
    from positioning.native_log import quiet_native_stderr

    if mode not in _WORKER:
        with quiet_native_stderr():
            _WORKER[mode] = _perceiver(mode)
    with quiet_native_stderr():
        return run_case(suite, k, _WORKER[mode], mode=mode)


def run_suite(
    suite: Suite,
    *,
    modes: Sequence[str] = ("fused",),
    cases: int | None = None,
    jobs: int = 1,
    progress: bool = True,
) -> list[CaseResult]:
    """Run the suite's first ``cases`` sessions (all by default) in each landmark mode.

    Args:
        suite: the suite.
        modes: landmark backends (:data:`LANDMARK_MODES`).
        cases: how many sessions (None: all).
        jobs: worker processes (each simulates on a cache miss and runs its own perceiver).
        progress: a tqdm bar on stderr.
    """
    from tqdm import tqdm

    n = len(suite.cases) if cases is None else min(cases, len(suite.cases))
    work = [(suite, k, m) for m in modes for k in range(n)]
    bar = tqdm(
        total=len(work), desc=f"{suite.name} suite", unit="case", file=sys.stderr, disable=not progress
    )
    results: list[CaseResult] = []
    if jobs <= 1:
        for w in work:
            results.append(_work(w))
            bar.update()
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            for r in pool.imap(_work, work):
                results.append(r)
                bar.update()
    bar.close()
    return results


# --------------------------------------------------------------------------------------------- summary


def _stats(values: Sequence[float]) -> dict[str, Any]:
    a = np.abs(np.asarray([v for v in values if math.isfinite(v)], np.float64))
    if len(a) == 0:
        return {"n": 0}
    return {
        "n": len(a),
        "median_mm": round(float(np.median(a)), 1),
        "p95_mm": round(float(np.percentile(a, 95)), 1),
        "max_mm": round(float(a.max()), 1),
    }


def _share(flags: Sequence[bool]) -> dict[str, Any]:
    return {
        "n": len(flags),
        "right": int(sum(flags)),
        "share": round(sum(flags) / len(flags), 3) if flags else None,
    }


def _block(results: Sequence[CaseResult]) -> dict[str, Any]:
    with_patient = [r for r in results if r.position_true is not None]
    sh = [r.keypoint_err_mm[n] for r in with_patient for n in SHOULDERS_HIPS if n in r.keypoint_err_mm]
    return {
        "sessions": len(results),
        "table": _share([r.table_found and abs(r.table_err_mm) <= TABLE_TOLERANCE_MM for r in results]),
        "position": _share([r.position == r.position_true for r in with_patient]),
        "arms": _share([r.arms == r.arms_true for r in with_patient]),
        "table_height": _stats([r.table_err_mm for r in results if r.table_found]),
        "table_height_geometry": _stats([r.table_geometry_err_mm for r in results]),
        "table_height_network": _stats([r.table_net_err_mm for r in results]),
        "shoulders_hips_3d": _stats(sh),
        "iso_z": _stats([r.iso_z_err_mm for r in with_patient]),
        "iso_x": _stats([r.iso_x_err_mm for r in with_patient]),
        "range_ends": _stats([e for r in with_patient for e in (r.start_err_mm, r.end_err_mm)]),
        "planned": sum(r.planned for r in with_patient),
        "large_errors": sum(r.large_error for r in with_patient),
        "silent_failures": sum(r.silent_failure for r in with_patient),
    }


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Per landmark mode: the headline figures, uncovered vs covered, per-keypoint errors, and the
    breakdown by every factor (each level's figures), worst level first by vertical isocenter p95."""
    out: dict[str, Any] = {}
    for mode in sorted({r.mode for r in results}, key=LANDMARK_MODES.index):
        rs = [r for r in results if r.mode == mode]
        m: dict[str, Any] = {"all": _block(rs)}
        m["uncovered"] = _block([r for r in rs if r.factors.get("cover", "none") == "none"])
        m["covered"] = _block([r for r in rs if r.factors.get("cover", "none") != "none"])
        names = sorted({n for r in rs for n in r.keypoint_err_mm})
        m["keypoints"] = {
            n: _stats([r.keypoint_err_mm[n] for r in rs if n in r.keypoint_err_mm]) for n in names
        }
        breakdown: dict[str, dict[str, Any]] = {}
        for factor in sorted({f for r in rs for f in r.factors}):
            levels = sorted({r.factors[factor] for r in rs if factor in r.factors})
            breakdown[factor] = {lv: _block([r for r in rs if r.factors.get(factor) == lv]) for lv in levels}
        m["by_factor"] = breakdown
        m["silent"] = [
            {"seed": r.seed, "iso_z_err_mm": round(r.iso_z_err_mm, 1), "checks": r.checks}
            for r in rs
            if r.silent_failure
        ]
        m["seconds_per_case"] = round(float(np.median([r.seconds for r in rs])), 2)
        out[mode] = m
    return out


def _fmt_block(name: str, b: dict[str, Any]) -> str:
    def pct(s: dict[str, Any]) -> str:
        return "-" if not s["n"] else f"{100 * s['share']:.0f}%"

    def mm(s: dict[str, Any]) -> str:
        return "-" if not s["n"] else f"{s['median_mm']:.1f}/{s['p95_mm']:.1f}"

    return (
        f"  {name:28s} n {b['sessions']:3d}  table {pct(b['table']):>4s}  pos {pct(b['position']):>4s}  "
        f"arms {pct(b['arms']):>4s}  sh+hip {mm(b['shoulders_hips_3d']):>11s}  iso z {mm(b['iso_z']):>11s}  "
        f"ends {mm(b['range_ends']):>11s}  silent {b['silent_failures']}/{b['large_errors']}"
    )


def format_report(summary: dict[str, Any]) -> str:
    """Human-readable report of :func:`summarize` (figures are median/p95 in mm)."""
    lines = []
    for mode, m in summary.items():
        lines.append(f"landmarks: {mode}  (median/p95 mm; silent = large errors without a reliability check)")
        for key in ("all", "uncovered", "covered"):
            lines.append(_fmt_block(key, m[key]))
        a = m["all"]
        lines.append(
            "  table height |error| median/p95 mm: used "
            + ", ".join(
                "-" if not a[k]["n"] else f"{a[k]['median_mm']:.1f}/{a[k]['p95_mm']:.1f}{label}"
                for k, label in (
                    ("table_height", ""),
                    ("table_height_geometry", " (geometry)"),
                    ("table_height_network", " (scene network)"),
                )
            )
        )
        worst: list[tuple[float, str]] = []
        for factor, levels in m["by_factor"].items():
            lines.append(f" by {factor}:")
            for lv, b in levels.items():
                lines.append(_fmt_block(lv, b))
                if b["iso_z"]["n"] >= 3:
                    worst.append((b["iso_z"]["p95_mm"], f"{factor} = {lv}"))
        if worst:
            p95, what = max(worst)
            lines.append(f" worst factor level by vertical isocenter p95: {what} ({p95:.1f} mm)")
        if m["silent"]:
            lines.append(
                " silent failures: "
                + ", ".join(f"seed {s['seed']} ({s['iso_z_err_mm']:+.0f} mm)" for s in m["silent"])
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench robustness", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="robustness", help="suite name or file (default: robustness)")
    parser.add_argument("--cases", type=int, help="the first N sessions only")
    parser.add_argument(
        "--landmarks",
        choices=[*LANDMARK_MODES, "all"],
        default="fused",
        help="landmark backends (default fused)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--json", type=Path, help="write the summary and per-case results here")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    modes = LANDMARK_MODES if args.landmarks == "all" else (args.landmarks,)
    t0 = time.perf_counter()
    results = run_suite(suite, modes=modes, cases=args.cases, jobs=args.jobs)
    summary = summarize(results)
    print(format_report(summary))
    print(f"({time.perf_counter() - t0:.0f} s for {len(results)} cases)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"suite": suite.name, "summary": summary, "results": [r.to_json() for r in results]}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
