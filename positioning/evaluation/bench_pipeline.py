"""``positioning bench pipeline``: the live pipeline at camera rate, through the service's own path.

A simulated session (genuine RealSense recordings played through pyrealsense2 at 30 frames per second,
in real time, looped) goes through a :class:`~positioning.service.hub.CameraHub` exactly as under
``positioning serve``: the camera's thread reads the newest frame, the session perceives it (tracking on)
and plans a preview when one is due. Printed, for ``--seconds`` after a warm-up:

* per-stage perception time (median, p95) and the whole frame (perception + preview), ms;
* end-to-end: from the frame's arrival to its estimate (median, p95), ms;
* frames offered by the camera per second against frames perceived per second (a frame that arrives
  while another is being perceived is skipped, never queued: the newest frame wins);
* plan previews per second, and a full plan on request (median, p95 over 10 requests made while the
  camera runs);
* the process's peak memory.

``--baseline`` runs the same session with every speed-up of the live path turned off (the pipeline as it
was before this benchmark existed), in the same process, so that the two can be compared on one machine
at one time. ``--json FILE`` writes the figures for other tools.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from positioning.evaluation.figures import median_p95
from positioning.perception.landmarks.base import LANDMARK_MODES

__all__ = ["RESOLUTION_SCENARIOS", "benchmark_pipeline", "main"]

#: The simulated scenario that gives each camera resolution.
RESOLUTION_SCENARIOS: dict[str, str] = {"848x480": "hfs-arms-up", "1280x720": "tilted-d455"}


@dataclasses.dataclass(frozen=True)
class _Figures:
    """What the benchmark keeps of one estimate."""

    timings_ms: dict[str, float]
    processing_ms: float
    latency_ms: float
    plan: dict[str, float] | None  # the preview's figures (None: no preview on this estimate)


_PLAN_KEYS = ("isocenter_x", "isocenter_z", "vertical_move", "range_start", "range_end")


def _plan_figures(preview: Any | None) -> dict[str, float] | None:
    if preview is None:
        return None
    nan = float("nan")
    planned = preview.isocenter is not None and preview.scan_range is not None
    return {
        "isocenter_x": float(preview.isocenter.x_mm) if planned else nan,
        "isocenter_z": float(preview.isocenter.z_mm) if planned else nan,
        "vertical_move": float(preview.table_offset.vertical_mm) if preview.table_offset else nan,
        "range_start": float(preview.scan_range.start_mm) if planned else nan,
        "range_end": float(preview.scan_range.end_mm) if planned else nan,
    }


def _plan_medians(previews: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """The previews' median isocenter, vertical move and range ends (a still patient: the run's answer, to
    compare a run with its baseline)."""

    return {k: median_p95([p[k] for p in previews])["median"] for k in _PLAN_KEYS}


def _run(
    *,
    resolution: str,
    seconds: float,
    landmarks: str,
    frames: int,
    baseline: bool,
    warmup_s: float = 4.0,
    preview_interval_s: float = 0.1,
) -> dict[str, Any]:
    from positioning.camera.source import open_source
    from positioning.perception.pipeline import site_settings
    from positioning.service.hub import CameraHub
    from positioning.service.session import SessionRequest

    settings = site_settings(landmarks, None, live=True)
    if baseline:
        settings = settings.baseline()
    opened = open_source(f"sim:{RESOLUTION_SCENARIOS[resolution]}", frames=frames)
    hub = CameraHub(
        opened,
        perceiver_settings=settings,
        preview_interval_s=preview_interval_s,
        concurrent_preview=not baseline,
    )
    # only the figures of each estimate are kept: its frame and state would hold ~4 MB each, and the
    # process's peak memory is a figure of the server, not of this benchmark
    estimates: list[_Figures] = []
    recording = threading.Event()

    def listen(e: Any) -> None:
        if recording.is_set():
            estimates.append(
                _Figures(dict(e.state.timings_ms), e.processing_ms, e.latency_ms, _plan_figures(e.preview))
            )

    hub.add_estimate_listener(listen)
    hub.start()
    try:
        session = hub.start_session(SessionRequest(protocol="chest"))
        time.sleep(warmup_s)
        source = hub.opened.source
        frames0 = hub.device_status().frames_delivered + source.frames_skipped
        recording.set()
        t0 = time.monotonic()
        time.sleep(seconds)
        recording.clear()
        elapsed = time.monotonic() - t0
        offered = hub.device_status().frames_delivered + source.frames_skipped - frames0
        plan_ms = []
        for _ in range(10):
            t = time.perf_counter()
            session.plan()
            plan_ms.append(1000.0 * (time.perf_counter() - t))
        hub.end_session(session.id)
    finally:
        hub.stop()
    previews = [e.plan for e in estimates if e.plan is not None]
    stage_names = list(estimates[-1].timings_ms) if estimates else []
    stages = {k: median_p95([e.timings_ms.get(k, float("nan")) for e in estimates]) for k in stage_names}
    width, height = (int(x) for x in resolution.split("x"))
    return {
        "resolution": resolution,
        "baseline": baseline,
        "landmarks": landmarks,
        "seconds": round(elapsed, 1),
        "offered_fps": round(offered / elapsed, 1),
        "processed_fps": round(len(estimates) / elapsed, 1),
        "frame_ms": median_p95([e.processing_ms for e in estimates]),
        "end_to_end_ms": median_p95([e.latency_ms for e in estimates]),
        "plan_preview_hz": round(sum(e.plan is not None for e in estimates) / elapsed, 1),
        "full_plan_ms": median_p95(plan_ms),
        "stages_ms": stages,
        "plan_median_mm": _plan_medians(previews),
        "frames": len(estimates),
        "image": [width, height],
    }


def benchmark_pipeline(
    *,
    resolution: str = "848x480",
    seconds: float = 20.0,
    landmarks: str = "fused",
    frames: int = 15,
    baseline: bool = False,
    warmup_s: float = 4.0,
    preview_interval_s: float = 0.1,
) -> list[dict[str, Any]]:
    """Run the benchmark (and its baseline first, when asked); returns one figures dict per run."""
    runs = []
    for base in [True, False] if baseline else [False]:
        runs.append(
            _run(
                resolution=resolution,
                seconds=seconds,
                landmarks=landmarks,
                frames=frames,
                baseline=base,
                warmup_s=warmup_s,
                preview_interval_s=preview_interval_s,
            )
        )
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    for r in runs:
        r["peak_rss_mb"] = peak
    return runs


def format_run(r: dict[str, Any]) -> str:
    def f(s: dict[str, Any]) -> str:
        return f"{s['median']} / {s['p95']}"

    lines = [
        f"bench pipeline{' (baseline: speed-ups off)' if r['baseline'] else ''}: {r['resolution']}, "
        f"landmarks {r['landmarks']}, {r['seconds']} s, {r['frames']} frames",
        f"  frames per second: {r['offered_fps']} offered by the camera, {r['processed_fps']} perceived",
        f"  per frame (perception + preview): {f(r['frame_ms'])} ms (median / p95)",
        f"  frame to estimate: {f(r['end_to_end_ms'])} ms",
        f"  plan previews: {r['plan_preview_hz']} per second; "
        f"a full plan on request: {f(r['full_plan_ms'])} ms",
        "  stages (median / p95 ms): "
        + ", ".join(f"{k} {f(v)}" for k, v in r["stages_ms"].items() if k != "total"),
        "  plan (median of the previews, mm): "
        + ", ".join(f"{k} {v}" for k, v in r["plan_median_mm"].items()),
        f"  peak memory (process): {r['peak_rss_mb']} MB",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="848x480", choices=sorted(RESOLUTION_SCENARIOS))
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, after a 4 s warm-up")
    parser.add_argument("--landmarks", default="fused", choices=LANDMARK_MODES)
    parser.add_argument("--frames", type=int, default=15, help="frames per simulated clip")
    parser.add_argument("--baseline", action="store_true", help="also run with the speed-ups off, first")
    parser.add_argument(
        "--preview-interval",
        type=float,
        default=0.1,
        metavar="S",
        help="shortest time between plan previews (serve's default 0.1 s)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures (a list of runs)")
    args = parser.parse_args(argv)
    runs = benchmark_pipeline(
        resolution=args.resolution,
        seconds=args.seconds,
        landmarks=args.landmarks,
        frames=args.frames,
        baseline=args.baseline,
        preview_interval_s=args.preview_interval,
    )
    for r in runs:
        print(format_run(r))
    if len(runs) == 2:
        a, b = runs
        if a["frame_ms"]["median"] and b["frame_ms"]["median"]:
            print(
                f"  speed-up per frame: {a['frame_ms']['median'] / b['frame_ms']['median']:.2f}x median, "
                f"{a['frame_ms']['p95'] / b['frame_ms']['p95']:.2f}x p95; frames perceived "
                f"{b['processed_fps'] / max(a['processed_fps'], 1e-9):.2f}x"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs if len(runs) > 1 else runs[0], fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
