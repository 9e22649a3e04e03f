"""``positioning bench pipeline``: the live pipeline at camera rate, through the service's own path.

A simulated session (genuine RealSense recordings played through pyrealsense2 at 30 frames per second,
in real time, looped, on the playback's own thread as a live camera's) goes through a
:class:`~positioning.service.hub.CameraHub` exactly as under ``positioning serve``: the camera's thread
reads the newest frame, the session perceives it (tracking on) and plans a preview when one is due.
Printed, for ``--seconds`` after a warm-up:

* frames offered by the camera per second against frames given a state per second (a frame that arrives
  while another is being perceived is skipped, never queued: the newest frame wins), and how many of
  them were steady frames that repeated the last perception in full
  (:mod:`~positioning.perception.steady`), of how many perceived in full per second;
* the whole frame on the camera's thread (perception or the steady test, and the preview), ms;
* end-to-end: from the frame's arrival to its estimate, and the age of the perception the frame shows
  (from the frame perceived in full that a steady frame repeats to this frame), ms;
* plan previews per second, and a full plan on request (median, p95 over 10 requests made while the
  camera runs);
* the stages of the frames perceived in full (on the camera's thread or the steady frames' refresh
  worker), and a steady frame's test;
* the plan: the previews' median and the standard deviation of the distinct previews (a still patient:
  a run's answer and its jitter, to compare a run with its baseline);
* the CPU the process used (the simulated camera's playback included: decoding a recorded frame costs
  about 18 ms of CPU, a live camera's USB transfer far less) and its peak memory.

``--baseline`` runs the same session with every speed-up of the live path turned off (the pipeline as it
was before this benchmark existed), in the same process, so that the two can be compared on one machine
at one time. ``--json FILE`` writes the figures for other tools.

Figures are medians and 95th percentiles over the frames of the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from positioning.evaluation.figures import median_p95
from positioning.perception.landmarks.base import LANDMARK_MODES

__all__ = ["RESOLUTION_SCENARIOS", "benchmark_pipeline", "main"]

#: The simulated scenario that gives each camera resolution.
RESOLUTION_SCENARIOS: dict[str, str] = {"848x480": "hfs-arms-up", "1280x720": "tilted-d455"}


@dataclasses.dataclass(frozen=True)
class _Figures:
    """What the benchmark keeps of one estimate."""

    timings_ms: dict[str, float]
    age_ms: float  # from the frame its state was perceived from to this frame (> 0: a steady frame's repeat)
    perceived: float  # the timestamp of the frame its state was perceived from
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


def _distinct(previews: Sequence[dict[str, float]]) -> list[dict[str, float]]:
    """The previews with different figures (a repeated preview once)."""
    return list({tuple(p[k] for k in _PLAN_KEYS): p for p in previews}.values())


def _plan_spread(previews: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """The previews' standard deviation of each figure (how much the plan shown jitters on a still
    patient), over the distinct previews (a steady frame's repeated preview counted once)."""
    distinct = _distinct(previews)
    out: dict[str, float | None] = {}
    for k in _PLAN_KEYS:
        values = np.asarray([p[k] for p in distinct], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[k] = round(float(values.std()), 1) if len(values) >= 2 else None
    return out


def _time_to_moved(hub: Any, session: Any, timeout_s: float = 20.0) -> dict[str, Any]:
    """Confirm the plan, shift the patient 25 mm sideways (the room's ``moved`` clip) and time the events:
    ms from the move to ``PATIENT_MOVING`` and to ``PATIENT_MOVED`` (None: not within ``timeout_s``), or
    why the plan could not be confirmed (``not_confirmed``)."""
    from positioning.service.session import NothingToConfirmError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            hub.confirm(session.id, "bench")
            break
        except NothingToConfirmError as e:
            if time.monotonic() > deadline:
                return {"not_confirmed": str(e)}
            time.sleep(0.1)
    index = len(session.events)
    hub.opened.source.bring_forward("moved")
    t0 = time.monotonic()
    seen: dict[str, float | None] = {"PATIENT_MOVING": None, "PATIENT_MOVED": None}
    while seen["PATIENT_MOVED"] is None and time.monotonic() - t0 < timeout_s:
        for event in session.wait_events(index, timeout_s=0.5):
            index = event.index + 1
            if event.kind in seen and seen[event.kind] is None:
                seen[event.kind] = round(1000.0 * (time.monotonic() - t0), 1)
    return seen


def _run(
    *,
    resolution: str,
    seconds: float,
    landmarks: str,
    frames: int,
    baseline: bool,
    warmup_s: float = 4.0,
    preview_interval_s: float = 0.1,
    move: bool = True,
) -> dict[str, Any]:
    from positioning.camera.source import open_source
    from positioning.perception.pipeline import site_settings
    from positioning.service.hub import CameraHub
    from positioning.service.session import SessionRequest

    settings = site_settings(landmarks, None, live=True)
    if baseline:
        settings = settings.baseline()
    # the patient's move is scripted far ahead and brought forward once the plan is confirmed
    opened = open_source(
        f"sim:{RESOLUTION_SCENARIOS[resolution]}", frames=frames, events=["3600:moved"] if move else ()
    )
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
                _Figures(
                    dict(e.state.timings_ms),
                    float(e.state.timestamp_ms - e.state.perceived_timestamp_ms),
                    float(e.state.perceived_timestamp_ms),
                    e.processing_ms,
                    e.latency_ms,
                    _plan_figures(e.preview),
                )
            )

    hub.add_estimate_listener(listen)
    hub.start()
    try:
        session = hub.start_session(SessionRequest(protocol="chest"))
        time.sleep(warmup_s)
        source = hub.opened.source
        frames0 = hub.device_status().frames_delivered + source.frames_skipped
        recording.set()
        hub.perceiver.full_timings_ms.clear()
        t0, cpu0 = time.monotonic(), os.times()
        time.sleep(seconds)
        recording.clear()
        elapsed, cpu1 = time.monotonic() - t0, os.times()
        full_timings = list(hub.perceiver.full_timings_ms)
        offered = hub.device_status().frames_delivered + source.frames_skipped - frames0
        plan_ms = []
        for _ in range(10):
            t = time.perf_counter()
            session.plan()
            plan_ms.append(1000.0 * (time.perf_counter() - t))
        moved_ms = _time_to_moved(hub, session) if move else {}
        hub.end_session(session.id)
    finally:
        hub.stop()
    previews = [e.plan for e in estimates if e.plan is not None]
    # the stages of the frames perceived in full, on the camera's thread or the steady frames' refresh
    stage_names = list(dict.fromkeys(k for t in full_timings for k in t))
    stages = {k: median_p95([t.get(k, float("nan")) for t in full_timings]) for k in stage_names}
    repeats = [e for e in estimates if e.age_ms > 0.0]
    if repeats:
        stages["steady"] = median_p95([e.timings_ms.get("steady", float("nan")) for e in repeats])
    width, height = (int(x) for x in resolution.split("x"))
    return {
        "resolution": resolution,
        "baseline": baseline,
        "landmarks": landmarks,
        "seconds": round(elapsed, 1),
        "offered_fps": round(offered / elapsed, 1),
        "processed_fps": round(len(estimates) / elapsed, 1),
        "perceived_in_full_fps": round(len({e.perceived for e in estimates}) / elapsed, 1),  # refreshes too
        "repeated_share": round(len(repeats) / max(len(estimates), 1), 3),
        "cpu_cores": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed, 2),
        "frame_ms": median_p95([e.processing_ms for e in estimates]),
        "perception_age_ms": median_p95([e.age_ms for e in estimates]),
        "end_to_end_ms": median_p95([e.latency_ms for e in estimates]),
        "plan_preview_hz": round(sum(e.plan is not None for e in estimates) / elapsed, 1),
        # previews planned anew (a steady frame's repeated preview counted once)
        "distinct_plan_preview_hz": round(len(_distinct(previews)) / elapsed, 1),
        "full_plan_ms": median_p95(plan_ms),
        "stages_ms": stages,
        "move_ms": moved_ms,
        "plan_median_mm": _plan_medians(previews),
        "plan_sd_mm": _plan_spread(previews),
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
    move: bool = True,
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
                move=move,
            )
        )
    peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    for r in runs:
        r["peak_rss_mb"] = peak
    return runs


def format_run(r: dict[str, Any]) -> str:
    """The run as printed (a document written before steady frames lacks their lines)."""

    def f(s: dict[str, Any]) -> str:
        return f"{s['median']} / {s['p95']}"

    steady = "perception_age_ms" in r
    lines = [
        f"bench pipeline{' (baseline: speed-ups off)' if r['baseline'] else ''}: {r['resolution']}, "
        f"landmarks {r['landmarks']}, {r['seconds']} s, {r['frames']} frames",
        f"  frames per second: {r['offered_fps']} offered by the camera, {r['processed_fps']} with a state"
        + (
            f" ({100 * r['repeated_share']:.0f} % steady frames repeating one of the "
            f"{r['perceived_in_full_fps']} perceived in full)"
            if steady
            else ""
        ),
        f"  per frame (perception + preview): {f(r['frame_ms'])} ms (median / p95)",
        f"  frame to estimate: {f(r['end_to_end_ms'])} ms"
        + (
            f"; age of the perception a frame shows (a steady frame's repeated one): "
            f"{f(r['perception_age_ms'])} ms"
            if steady
            else ""
        ),
        f"  plan previews: {r['plan_preview_hz']} per second"
        + (f" ({r['distinct_plan_preview_hz']} planned anew)" if "distinct_plan_preview_hz" in r else "")
        + f"; a full plan on request: {f(r['full_plan_ms'])} ms",
        "  stages of the frames perceived in full, and a steady frame's test (median / p95 ms): "
        + ", ".join(f"{k} {f(v)}" for k, v in r["stages_ms"].items()),
        "  plan (median of the previews, mm): "
        + ", ".join(f"{k} {v}" for k, v in r["plan_median_mm"].items()),
    ]
    if "plan_sd_mm" in r:
        lines.append(
            "  plan (standard deviation of the distinct previews, mm): "
            + ", ".join(f"{k} {v}" for k, v in r["plan_sd_mm"].items())
        )
    if "cpu_cores" in r:
        lines.append(
            f"  CPU: {r['cpu_cores']} cores busy on average (the simulated camera's playback included)"
        )
    lines.append(f"  peak memory (process): {r['peak_rss_mb']} MB")
    if r.get("move_ms", {}).get("not_confirmed"):
        lines.append(
            f"  the plan could not be confirmed, so no move was timed: {r['move_ms']['not_confirmed']}"
        )
    elif r.get("move_ms"):
        moved = r["move_ms"]
        lines.append(
            "  the confirmed patient shifted 25 mm sideways: PATIENT_MOVING after "
            f"{moved['PATIENT_MOVING']} ms, PATIENT_MOVED after {moved['PATIENT_MOVED']} ms"
        )
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
    parser.add_argument(
        "--no-move",
        action="store_true",
        help="skip the end of each run: confirm, shift the patient 25 mm and time PATIENT_MOVED",
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
        move=not args.no_move,
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
