"""Benchmark: simulator speed (render + noise + truth, and recording write) at a given resolution.

Prints median and p95 per stage over N frames and the end-to-end frames per second of
render + write, plus the size of the written recording. Machines are shared and noisy: compare ratios
within one run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from positioning.sim.recording import RecordingWriter
from positioning.sim.scenario import sample_session
from positioning.sim.session import SimulatedSession

__all__ = ["benchmark_simulator", "format_benchmark"]


def _stats(values_s: list[float]) -> dict[str, float]:
    a = np.asarray(values_s) * 1000.0
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95))}


def benchmark_simulator(
    scenario: str = "hfs-arms-up", *, frames: int = 30, seed: int = 0, out_dir: Path | None = None
) -> dict[str, Any]:
    """Time the simulator's stages and the recording writer.

    Args:
        scenario: scenario name.
        frames: frames to simulate and write.
        seed: scenario seed.
        out_dir: where to write the recording (default: a temporary folder, deleted afterwards).

    Returns:
        Per-stage ``median_ms``/``p95_ms``, ``fps`` of render + write, ``bytes`` of the recording.
    """
    spec = sample_session(scenario, seed)
    t0 = time.perf_counter()
    session = SimulatedSession(spec)
    setup_s = time.perf_counter() - t0
    stages: dict[str, list[float]] = {"render": [], "noise": [], "truth": [], "write": [], "total": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(out_dir or tmp) / f"bench-{scenario}.db3"
        with RecordingWriter(
            path, depth_intrinsics=session.intrinsics, color_intrinsics=session.intrinsics, fps=spec.rig.fps
        ) as writer:
            for i in range(frames):  # exactly what ``record_session`` does per frame, timed by stage
                timings: dict[str, float] = {}
                ta = time.perf_counter()
                frame, _ = session.frame(i, timings_s=timings)
                tb = time.perf_counter()
                writer.write(frame.depth_mm, frame.color_rgb, frame.timestamp_ms)
                te = time.perf_counter()
                timings |= {"write": te - tb, "total": te - ta}
                for k in stages:
                    stages[k].append(timings[k])
        size = path.stat().st_size
    total = sum(stages["total"])
    return {
        "scenario": scenario,
        "resolution": f"{session.intrinsics.width}x{session.intrinsics.height}",
        "frames": frames,
        "setup_s": setup_s,
        "stages": {k: _stats(v) for k, v in stages.items()},
        "fps": frames / total,
        "bytes": size,
    }


def format_benchmark(r: dict[str, Any]) -> str:
    lines = [
        f"simulator benchmark: scenario {r['scenario']}, {r['resolution']}, {r['frames']} frames "
        f"(set-up {r['setup_s']:.2f} s)",
        f"{'stage':<8} {'median ms':>10} {'p95 ms':>10}",
    ]
    for k, s in r["stages"].items():
        lines.append(f"{k:<8} {s['median_ms']:>10.1f} {s['p95_ms']:>10.1f}")
    lines.append(f"render + write: {r['fps']:.2f} frames/s")
    lines.append(f"recording size: {r['bytes'] / 1e6:.1f} MB for {r['frames']} frames")
    return "\n".join(lines)
