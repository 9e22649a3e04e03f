"""Benchmark: fluoroscopy set-ups against simulator truth (``positioning bench fluoro``).

Every patient of a suite (``sim/suites/full.yaml`` by default: recordings cached by content) is perceived
once through the service's path (:func:`~positioning.service.replay.run_session`), then planned with every
procedure done in the patient's true position (the operator enters that position). Truth is read only
here: the truth's landmark levels and body cross-sections give each procedure's true target region by the
same definition (:func:`~positioning.planning.fluoro.target_box`), and the suggested set-up is scored by

* the target centre's error (3-D distance and per axis, mm);
* coverage: the share of the true target (its box without the procedure's margin, which is there for the
  plan's errors; a 7 x 7 x 7 grid filling it), moved by the suggested table
  moves and projected through the diverging beam, that falls inside the suggested field, PA and lateral
  (the goal: 100 % on at least 99 % of cases);
* the area saved against the uncollimated field;
* failures (no target placed) counted, never dropped.

Run ``positioning bench fluoro [--suite full] [--cases N] [--jobs 2] [--json FILE]``.

Convention: C-arm frame (the simulated room's scanner frame, its isocenter the C-arm's), mm.
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

__all__ = ["truth_slices", "score_case", "run", "summarize", "format_report", "main"]

GRID = 7
FULL_COVERAGE = 0.999


def truth_slices(doc: dict[str, Any], frame_index: int) -> Any:
    """The truth's body cross-sections of a frame as :class:`~positioning.planning.fluoro.BodySlices`."""
    from positioning.evaluation.truth import frame_cross_sections
    from positioning.planning.fluoro import BodySlices

    cs = frame_cross_sections(doc, frame_index)
    return BodySlices(
        y_mm=cs.y_mm,
        centroid_x_mm=cs.centroid_x_mm,
        centroid_z_mm=cs.centroid_z_mm,
        x_min_mm=cs.x_min_mm,
        x_max_mm=cs.x_max_mm,
        z_min_mm=cs.z_min_mm,
        z_max_mm=cs.z_max_mm,
    )


def _coverage(true_box: Any, plan: Any, c_arm: Any, beam: str) -> float:
    from positioning.planning.fluoro import project

    field = plan.fields[beam]
    uv = project(true_box.grid(GRID, plan.table_offset.move_mm), c_arm, beam)
    return float(np.mean(field.contains(uv)))


def score_case(
    recording: str, procedures: Sequence[str] | None = None, landmarks: str = "fused"
) -> list[dict]:
    """Perceive one recording and score every procedure done in the patient's true position."""
    from positioning.evaluation.scoring import factor_levels, truth_frame_index
    from positioning.evaluation.truth import load_truth, truth_level_y_mm
    from positioning.native_log import quiet_native_stderr
    from positioning.planning.fluoro import make_fluoro_plan, target_box
    from positioning.planning.procedure import list_procedures, load_procedure
    from positioning.service.replay import run_session
    from positioning.service.session import SessionRequest

    doc = load_truth(recording)
    patient = doc.get("patient")
    if patient is None:
        return []
    position = str(patient["patient_position"])
    procs = [load_procedure(p) for p in procedures] if procedures else list_procedures()
    procs = [p for p in procs if position in map(str, p.expected_positions)]
    if not procs:
        return []
    with quiet_native_stderr():
        run = run_session(recording, SessionRequest(), landmarks=landmarks)
    state = run.states[-1]
    k = truth_frame_index(doc, state.frame_number)
    frame = doc["frames"][k]
    levels = truth_level_y_mm(
        {n: np.asarray(v) for n, v in frame["landmarks"].items()},
        {n: np.asarray(v) for n, v in frame["keypoints"].items()},
    )
    body = truth_slices(doc, k)
    sign = 1 if position.startswith("HF") else -1
    out = []
    for proc in procs:
        t0 = time.perf_counter()
        plan = make_fluoro_plan(state, proc, expected_position=position)
        # the true target itself, without the procedure's margin (the margin is the plan's, for its error)
        truth = target_box(dataclasses.replace(proc.target, margin_mm=0.0), levels, sign, position, body)
        row: dict[str, Any] = {
            "recording": recording,
            "case": f"{doc['scenario']}@{doc['seed']}",
            "procedure": proc.name,
            "position": position,
            "factors": factor_levels(doc),
            "planned": plan.target is not None,
            "checks": sorted({c.code for c in plan.checks if str(c.severity) != "info"}),
            "ok": plan.ok,
            "seconds": time.perf_counter() - t0,
        }
        if plan.target is not None and truth is not None:
            d = plan.target.center_mm - truth.center_mm
            row.update(
                centre_err_mm=float(np.linalg.norm(d)),
                centre_err_xyz_mm=[float(v) for v in d],
                size_mm=[float(v) for v in plan.target.size_mm],
                true_size_mm=[float(v) for v in truth.size_mm],
                coverage_pa=_coverage(truth, plan, proc.c_arm, "PA"),
                coverage_lateral=_coverage(truth, plan, proc.c_arm, "lateral"),
                area_saved_pa=plan.fields["PA"].area_saved_percent,
                area_saved_lateral=plan.fields["lateral"].area_saved_percent,
                field_covers_plan_target=plan.fields["PA"].covers_target,
            )
        out.append(row)
    return out


def _work(args: tuple[str, tuple[str, ...] | None, str]) -> list[dict]:
    return score_case(*args)


def run(
    suite: str = "full",
    *,
    cases: int | None = None,
    procedures: Sequence[str] | None = None,
    jobs: int = 2,
    landmarks: str = "fused",
    progress: bool = True,
) -> list[dict]:
    """Score every (patient, procedure) pair of a suite's sessions (recorded first when missing)."""
    from tqdm import tqdm

    from positioning.evaluation.suite import load_suite, suite_recording

    s = load_suite(suite)
    chosen = s.cases if cases is None else s.cases[:cases]
    work = [
        (str(suite_recording(s, c)), tuple(procedures) if procedures else None, landmarks) for c in chosen
    ]
    rows: list[dict] = []
    bar = tqdm(total=len(work), desc="fluoro", unit="session", file=sys.stderr, disable=not progress)
    if jobs <= 1:
        for w in work:
            rows += _work(w)
            bar.update()
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            for r in pool.imap(_work, work):
                rows += r
                bar.update()
    bar.close()
    return rows


def _stats(values: Sequence[float]) -> dict[str, Any]:
    from positioning.evaluation.figures import median_p95

    a = [v for v in values if v is not None and math.isfinite(v)]
    return {"n": len(a), **median_p95(a)} if a else {"n": 0}


def _block(rows: Sequence[dict]) -> dict[str, Any]:
    scored = [r for r in rows if "centre_err_mm" in r]
    full = [r["coverage_pa"] >= FULL_COVERAGE for r in scored]
    full_lat = [r["coverage_lateral"] >= FULL_COVERAGE for r in scored]
    return {
        "plans": len(rows),
        "patients": len({r["case"] for r in rows}),
        "failures": sum(not r["planned"] for r in rows),
        # planned, but the truth could not place the target (its landmarks or body missing there)
        "unscored": sum(r["planned"] and "centre_err_mm" not in r for r in rows),
        "centre_err_mm": _stats([r["centre_err_mm"] for r in scored]),
        "centre_err_abs_x_mm": _stats([abs(r["centre_err_xyz_mm"][0]) for r in scored]),
        "centre_err_abs_y_mm": _stats([abs(r["centre_err_xyz_mm"][1]) for r in scored]),
        "centre_err_abs_z_mm": _stats([abs(r["centre_err_xyz_mm"][2]) for r in scored]),
        "full_coverage_pa_share": round(float(np.mean(full)), 3) if full else None,
        "full_coverage_lateral_share": round(float(np.mean(full_lat)), 3) if full_lat else None,
        "coverage_pa": _stats([100 * r["coverage_pa"] for r in scored]),
        "coverage_lateral": _stats([100 * r["coverage_lateral"] for r in scored]),
        "area_saved_pa": _stats([r["area_saved_pa"] for r in scored]),
        "area_saved_lateral": _stats([r["area_saved_lateral"] for r in scored]),
    }


def summarize(rows: Sequence[dict]) -> dict[str, Any]:
    """All plans, per procedure and per patient position."""
    return {
        "all": _block(rows),
        "by_procedure": {p: _block([r for r in rows if r["procedure"] == p])
                         for p in sorted({r["procedure"] for r in rows})},
        "by_position": {p: _block([r for r in rows if r["position"] == p])
                        for p in sorted({r["position"] for r in rows})},
        "worst_coverage": sorted(
            ({"case": r["case"], "procedure": r["procedure"], "coverage_pa": round(100 * r["coverage_pa"], 1)}
             for r in rows if "coverage_pa" in r and r["coverage_pa"] < FULL_COVERAGE),
            key=lambda d: d["coverage_pa"],
        )[:10],
    }  # fmt: skip


def format_report(summary: dict[str, Any]) -> str:
    def mp(s: dict[str, Any]) -> str:
        return "-" if not s.get("n") else f"{s['median']:.1f}/{s['p95']:.1f}"

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    lines = [
        "fluoroscopy set-ups vs truth (median/p95; coverage: the true target inside the suggested field)"
    ]
    rows = [("all", summary["all"]), *summary["by_procedure"].items(), *summary["by_position"].items()]
    head = (
        "plans",
        "pts",
        "fail",
        "centre err mm",
        "100% PA",
        "100% lat",
        "PA cover %",
        "saved PA %",
        "saved lat %",
    )
    widths = (5, 4, 4, 14, 8, 8, 11, 11, 11)
    lines.append("  " + " " * 20 + " " + " ".join(f"{h:>{w}s}" for h, w in zip(head, widths, strict=True)))
    for name, b in rows:
        cells = (str(b["plans"]), str(b["patients"]), str(b["failures"]), mp(b["centre_err_mm"]),
                 pct(b["full_coverage_pa_share"]), pct(b["full_coverage_lateral_share"]),
                 mp(b["coverage_pa"]), mp(b["area_saved_pa"]), mp(b["area_saved_lateral"]))  # fmt: skip
        lines.append(f"  {name:20s} " + " ".join(f"{c:>{w}s}" for c, w in zip(cells, widths, strict=True)))
    if summary["worst_coverage"]:
        lines.append(
            "  least covered: "
            + ", ".join(
                f"{w['case']} {w['procedure']} {w['coverage_pa']:.0f}%" for w in summary["worst_coverage"]
            )
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench fluoro", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="full", help="suite of sessions (default full)")
    parser.add_argument("--cases", type=int, help="the first N sessions only")
    parser.add_argument("--procedure", action="append", help="only these procedures (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--landmarks", default="fused", choices=["mediapipe", "depth", "fused"])
    parser.add_argument("--json", type=Path, help="write the summary and every plan's scores here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(
        args.suite, cases=args.cases, procedures=args.procedure, jobs=args.jobs, landmarks=args.landmarks
    )
    summary = summarize(rows)
    print(format_report(summary))
    print(f"({time.perf_counter() - t0:.0f} s, {len(rows)} plans)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "plans": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
