"""Benchmark perception on simulated patients, and fit the landmark definition correction.

``python -m positioning.evaluation.bench_perception`` (or ``positioning bench perception``) simulates
patients spanning phenotypes, poses, orientations and camera rigs, runs the whole
:class:`~positioning.perception.pipeline.Perceiver` on each (single frames, no tracking), and compares
with the simulator's truth:

* 3-D landmark error per landmark (median, p95, mm) against the truth COCO keypoints;
* orientation (DICOM code) and arm-state accuracy, per lying group;
* per-stage latency (median, p95, ms) at each case's resolution.

``--fit-correction OUT.json`` instead runs training seeds (disjoint from the benchmark's) *without* the
correction and writes, per pose group (``lying:arms``) and landmark, minus the median signed error in the
patient's body axes: BlazePose's keypoints are defined differently from the COCO joint centres that the
simulator's keypoint regressor places, and the correction moves them onto the COCO definition. This is
an offline model fit on training patients; evaluation uses other seeds, and the pipeline never reads truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from positioning.perception.landmarks import COCO_LANDMARKS
from positioning.perception.landmarks.base import LANDMARK_MODES
from positioning.perception.orientation import PatientPosition
from positioning.perception.pipeline import (
    DEFAULT_CORRECTION_PATH,
    LandmarkCorrection,
    Perceiver,
    PerceiverSettings,
    body_axes,
    lying_of,
)

__all__ = ["CaseResult", "default_cases", "run_cases", "summarize", "fit_correction", "main"]

#: Scenarios of the benchmark (each case draws one seed of one of these).
BENCH_SCENARIOS: tuple[str, ...] = (
    "hfs-arms-up", "hfs-arms-down", "hfs-hands-chest", "ffs-arms-up", "hfp-arms-up", "ffp-arms-down",
    "obese", "child", "off-centre", "tilted-d455", "decubitus", "mixed",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """One simulated case: truth, what perception said, errors."""

    scenario: str
    seed: int
    true_position: str
    true_arms: str
    camera: str
    status: str
    position: str | None
    arms: str | None
    errors_mm: dict[str, float]
    signed_body_mm: dict[str, list[float]]  # (superior, anterior, left) of perceived - truth
    timings_ms: dict[str, float]


def default_cases(n: int, first_seed: int) -> list[tuple[str, int]]:
    """``n`` cases cycling through :data:`BENCH_SCENARIOS`, seeds from ``first_seed``."""
    return [(BENCH_SCENARIOS[i % len(BENCH_SCENARIOS)], first_seed + i) for i in range(n)]


def run_cases(
    cases: list[tuple[str, int]],
    *,
    use_correction: bool = True,
    progress: bool = True,
    landmarks: str = "fused",
) -> list[CaseResult]:
    """Perceive frame 0 of each case (simulated once and cached), compare with truth (cases without a
    patient are skipped)."""
    from tqdm import tqdm

    from positioning.evaluation.isocenter_fit import load_frames

    results = []
    perceiver = Perceiver(settings=PerceiverSettings(track=False, landmarks=landmarks))
    if not use_correction:
        perceiver.correction = LandmarkCorrection({}, source="disabled")
    with perceiver:
        for scenario, seed in tqdm(
            cases, desc="perception", unit="case", disable=not progress, file=sys.stderr
        ):
            sample = load_frames(scenario, seed, [0])[0]
            if sample.position is None:
                continue
            state = perceiver.perceive(sample.frame, sample.calibration)
            k = sample.frame.intrinsics
            true_pos = PatientPosition(sample.position)
            axes = body_axes(true_pos)
            errors, signed = {}, {}
            for name in COCO_LANDMARKS:
                p = state.landmark(name)
                if p is None:
                    continue
                d = p - sample.keypoints_mm[name]
                errors[name] = float(np.linalg.norm(d))
                signed[name] = [float(x) for x in axes @ d]
            results.append(
                CaseResult(
                    scenario=scenario,
                    seed=seed,
                    true_position=sample.position,
                    true_arms=str(sample.arms),
                    camera=f"{sample.camera} {k.width}x{k.height}",
                    status=state.status.value,
                    position=None if state.patient_position is None else str(state.patient_position),
                    arms=None if state.arms is None else str(state.arms),
                    errors_mm=errors,
                    signed_body_mm=signed,
                    timings_ms=dict(state.timings_ms),
                )
            )
    return results


def _q(values: list[float]) -> tuple[float, float, int]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(np.median(a)), float(np.percentile(a, 95)), int(a.size)


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """Figures: landmark errors (median, p95), orientation and arm accuracy, stage latency."""
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        groups[lying_of(r.true_position)].append(r)
    out: dict[str, Any] = {"cases": len(results), "by_lying": {}, "landmarks": {}, "latency_ms": {}}
    for lying, rs in sorted(groups.items()):
        out["by_lying"][lying] = {
            "cases": len(rs),
            "position_correct": sum(r.position == r.true_position for r in rs),
            "arms_correct": sum(r.arms == r.true_arms for r in rs),
            "failures": [
                f"{r.scenario}#{r.seed}: {r.true_position}/{r.true_arms} -> "
                f"{r.position}/{r.arms} ({r.status})"
                for r in rs
                if r.position != r.true_position or r.arms != r.true_arms
            ],
        }
        per: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for name, e in r.errors_mm.items():
                per[name].append(e)
        out["landmarks"][lying] = {name: _q(per[name]) for name in COCO_LANDMARKS if per[name]}
        shoulders_hips = [
            e for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip") for e in per[n]
        ]
        out["landmarks"][lying]["shoulders+hips"] = _q(shoulders_hips)
    stages: dict[str, list[float]] = defaultdict(list)
    for r in results:
        for k, v in r.timings_ms.items():
            stages[k].append(v)
    out["latency_ms"] = {k: _q(v)[:2] for k, v in stages.items()}
    return out


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"perception benchmark: {s['cases']} simulated patients (single frames)", ""]
    lines.append("orientation and arm state")
    for lying, g in s["by_lying"].items():
        lines.append(
            f"  {lying:<10} position {g['position_correct']}/{g['cases']}   "
            f"arms {g['arms_correct']}/{g['cases']}"
        )
        lines.extend(f"      wrong: {f}" for f in g["failures"])
    lines.append("")
    lines.append("3-D landmark error vs truth (mm): median / p95 (n)")
    for lying, table in s["landmarks"].items():
        lines.append(f"  {lying}")
        for name, (med, p95, n) in table.items():
            lines.append(f"    {name:<16} {med:7.1f} / {p95:7.1f}  ({n})")
    lines.append("")
    lines.append("latency per stage (ms): median / p95")
    for k, (med, p95) in s["latency_ms"].items():
        lines.append(f"  {k:<14} {med:7.1f} / {p95:7.1f}")
    return "\n".join(lines)


def fit_correction(results: list[CaseResult]) -> dict[str, Any]:
    """Minus the median signed body-axis error per pose group and landmark (groups with >= 3 samples)."""
    samples: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.position != r.true_position:  # only cases perception understood
            continue
        lying = lying_of(r.true_position)
        for name, d in r.signed_body_mm.items():
            for group in (f"{lying}:{r.arms}", f"{lying}:*", "*"):
                samples[group][name].append(d)
    shifts = {
        group: {
            name: [round(-float(x), 1) for x in np.median(np.asarray(v), axis=0)]
            for name, v in sorted(names.items())
            if len(v) >= 3
        }
        for group, names in sorted(samples.items())
    }
    return {
        "schema": "positioning.landmark_correction/1",
        "axes": ["superior", "anterior", "left"],
        "units": "mm",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "fitted_on": sorted({f"{r.scenario}#{r.seed}" for r in results}),
        "shifts_mm": shifts,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="positioning bench perception", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=36, help="number of simulated patients (default 36)")
    p.add_argument("--first-seed", type=int, default=1000, help="first seed (benchmark default 1000)")
    p.add_argument("--no-correction", action="store_true", help="run without the landmark correction")
    p.add_argument(
        "--fit-correction",
        metavar="OUT.json",
        type=Path,
        default=None,
        help=f"fit the correction on training seeds and write it (default model: {DEFAULT_CORRECTION_PATH})",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--world", action="store_true", help="sessions of the randomised world instead of the scenarios"
    )
    p.add_argument(
        "--landmarks",
        choices=LANDMARK_MODES,
        default="fused",
        help="landmark sources (default fused)",
    )
    args = p.parse_args(argv)
    if args.world:
        cases = [("world", args.first_seed + i) for i in range(args.cases)]
    else:
        cases = default_cases(args.cases, args.first_seed)
    if args.fit_correction is not None:  # the correction applies to MediaPipe's landmarks: fit on them alone
        results = run_cases(cases, use_correction=False, landmarks="mediapipe")
        doc = fit_correction(results)
        args.fit_correction.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.fit_correction} from {len(results)} cases (seeds {args.first_seed}..)")
        print(format_summary(summarize(results)))
        return 0
    results = run_cases(cases, use_correction=not args.no_correction, landmarks=args.landmarks)
    s = summarize(results)
    print(json.dumps(s, indent=1) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
