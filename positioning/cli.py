"""The ``positioning`` command: wires the stages together; no logic of its own.

Exit codes: 0 success, 1 the job ran but found a problem (e.g. no patient), 2 bad input (a clear error
message on stderr, never a traceback), 3 an internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning.errors import PositioningError
from positioning.service.replay import SessionRun, run_session

__all__ = ["main", "build_parser"]


def _progress(total: int, desc: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, disable=not sys.stderr.isatty())
    last = [0]

    def update(done: int, _total: int) -> None:
        bar.update(done - last[0])
        last[0] = done

    return update, bar.close


# -- sim ---------------------------------------------------------------------------------------------------
def _cmd_sim_list(args: argparse.Namespace) -> int:
    from positioning.sim.scenario import list_scenarios

    for sc in list_scenarios():
        print(f"{sc.name:<18} {sc.description}")
    return 0


def _cmd_sim_record(args: argparse.Namespace) -> int:
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import record_session

    spec = sample_session(args.scenario, args.seed)
    n = spec.frames if args.frames is None else args.frames
    if n < 1:
        raise PositioningError(f"--frames must be at least 1, got {n}")
    update, close = _progress(n, f"recording {Path(args.out).name}")
    try:
        summary = record_session(
            spec, args.out, frames=n, progress=update, color=not getattr(args, "no_color", False)
        )
    finally:
        close()
    print(
        f"wrote {summary.recording} ({summary.frames} frames, {summary.bytes / 1e6:.1f} MB, "
        f"{summary.fps:.2f} frames/s including set-up)"
    )
    print(f"truth       {summary.truth}")
    print(f"calibration {summary.calibration}")
    if args.preview:
        _write_preview(summary.recording, Path(args.preview))
    return 0


def _cmd_sim_preview(args: argparse.Namespace) -> int:
    from positioning.sim.preview import preview_image, save_png
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session(args.scenario, args.seed)
    session = SimulatedSession(spec)
    frame, truth = session.frame(args.frame)
    img = preview_image(
        frame,
        calibration=spec.rig.calibration(),
        points_mm=truth.keypoints_mm | truth.landmarks_mm,
        label=truth.label,
        title=f"{spec.scenario} seed {spec.seed}",
    )
    print(f"wrote {save_png(args.out, img)}")
    return 0


def _cmd_sim_noise_report(args: argparse.Namespace) -> int:
    from positioning.evaluation.noise_calibration import main as noise_main

    return noise_main([str(args.path)] if args.path else [])


# -- recordings --------------------------------------------------------------------------------------------
def _describe_recording(path: Path) -> dict[str, Any]:
    """Read every frame of a recording through the RealSense reader and summarise it."""
    from positioning.camera.realsense import RealSenseSource

    t0 = time.perf_counter()
    valid, median, stamps = [], [], []
    first = None
    with RealSenseSource.from_file(path) as src:
        for frame in src.frames():
            first = first or frame
            d = frame.depth_mm
            valid.append(frame.valid_fraction)
            median.append(float(np.median(d[d > 0])) if np.any(d) else 0.0)
            stamps.append(frame.timestamp_ms)
    if first is None:
        raise PositioningError(f"{path} contains no frames")
    k = first.intrinsics
    info: dict[str, Any] = {
        "recording": str(path),
        "bytes": path.stat().st_size,
        "frames": len(valid),
        "device_name": first.device_name,
        "serial": first.serial,
        "depth": {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "ppx": k.ppx, "ppy": k.ppy},
        "color": None if first.color_rgb is None else {"aligned": first.color_aligned},
        "valid_fraction_median": float(np.median(valid)),
        "depth_median_mm": float(np.median(median)),
        "duration_ms": float(stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0,
        "read_s": time.perf_counter() - t0,
    }
    return info


def _write_preview(recording: Path, out: Path, *, file: Any = None) -> None:
    from positioning.camera.realsense import RealSenseSource
    from positioning.frames import Calibration
    from positioning.sim.preview import preview_image, save_png
    from positioning.sim.session import calibration_path_for

    with RealSenseSource.from_file(recording) as src:
        frame = src.read()
    cal_path = calibration_path_for(recording)
    cal = Calibration.load(cal_path) if cal_path.is_file() else None
    points = None
    if cal is not None:
        from positioning.evaluation.truth import load_truth

        try:
            doc = load_truth(recording)
            f0 = doc["frames"][0]
            points = {k: np.array(v) for k, v in (f0["keypoints"] | f0["landmarks"]).items()}
        except PositioningError:
            points = None
    img = preview_image(frame, calibration=cal, points_mm=points, title=recording.name)
    print(f"preview     {save_png(out, img)}", file=file or sys.stdout)


def _cmd_info(args: argparse.Namespace) -> int:
    info = _describe_recording(Path(args.recording))
    if args.json:  # stdout stays one JSON document: the truth summary goes inside it
        print(json.dumps(info | {"truth": _truth_lines(Path(args.recording))}, indent=2))
    else:
        _print_info(info)
        _print_truth(Path(args.recording))
    if args.preview:
        _write_preview(Path(args.recording), Path(args.preview), file=sys.stderr if args.json else None)
    return 0


def _print_info(info: dict[str, Any]) -> None:
    d = info["depth"]
    print(f"recording   {info['recording']} ({info['bytes'] / 1e6:.1f} MB)")
    print(f"device      {info['device_name']} (serial {info['serial']})")
    print(f"frames      {info['frames']} over {info['duration_ms']:.0f} ms (read in {info['read_s']:.2f} s)")
    print(
        f"depth       {d['width']}x{d['height']} z16, fx {d['fx']:.2f} fy {d['fy']:.2f} "
        f"ppx {d['ppx']:.2f} ppy {d['ppy']:.2f}"
    )
    print(f"colour      {'none' if info['color'] is None else 'rgb, aligned to depth'}")
    print(
        f"valid depth {100 * info['valid_fraction_median']:.1f} % of pixels (median over frames), "
        f"median depth {info['depth_median_mm']:.0f} mm"
    )


def _truth_lines(recording: Path) -> list[str] | None:
    """The truth summary of a simulated recording, or None when it has no truth sidecar."""
    from positioning.evaluation.truth import load_truth, truth_summary
    from positioning.sim.session import truth_path_for

    if not truth_path_for(recording).is_file():
        return None
    return truth_summary(load_truth(recording))


def _print_truth(recording: Path) -> None:
    for line in _truth_lines(recording) or []:
        print(f"truth       {line}")


def _cmd_perceive(args: argparse.Namespace) -> int:
    from positioning.service.session import SessionRequest

    run = run_session(
        args.recording,
        SessionRequest(),
        calibration=args.calibration,
        max_frames=args.frames,
        landmarks=args.landmarks,
        room=args.room,
    )
    code = _report_perception(run, json_out=args.json, overlay=args.overlay)
    if args.scene:
        from positioning.perception.overlay import draw_scene
        from positioning.sim.preview import save_png

        img = draw_scene(run.states[-1])
        if img is None:
            print("scene: no scene network (models/scene_net.pt)", file=sys.stderr)
        else:
            print(f"scene       {save_png(args.scene, img)}", file=sys.stderr if args.json else sys.stdout)
    return code


def _report_perception(run: SessionRun, *, json_out: bool, overlay: str | None) -> int:
    from positioning.perception.overlay import display_image, draw_perception
    from positioning.sim.preview import save_png

    states, last_frame = run.states, run.last_frame
    state = states[-1]
    timings: dict[str, list[float]] = {}
    for s in states:
        for k, v in s.timings_ms.items():
            timings.setdefault(k, []).append(v)
    latency = {k: [float(np.median(v)), float(np.percentile(v, 95))] for k, v in timings.items()}
    used = None if run.calibration_path is None else str(run.calibration_path)
    doc = state.summary() | {"frames": len(states), "latency_ms": latency, "calibration": used}
    if json_out:
        print(json.dumps(doc, indent=2))
    else:
        print(f"frames      {len(states)} from {run.label}")
        print(f"calibration {run.calibration_path}")
        print(f"status      {state.status.value}: {state.message}")
        if state.table is not None:
            t = state.table
            print(f"table       top z {t.top_z_mm:+.1f} mm, x {t.x_min_mm:+.0f}..{t.x_max_mm:+.0f} mm")
            for line in t.considered:
                print(f"  surface   {line}")
        if state.cover is not None:
            print(f"cover       {state.cover} ({state.cover_confidence:.2f})")
        for note in state.notes:
            print(f"note        {note.severity.upper()} {note.code}: {note.message}")
        if state.has_patient:
            print(
                f"position    {state.patient_position} (confidence {state.position_confidence:.2f}), "
                f"arms {state.arms} ({state.arms_confidence:.2f}), "
                f"{'MOVING' if state.moving else 'still'} (motion {state.motion_mm:.1f} mm)"
            )
            for name, p in doc["landmarks"].items():
                print(
                    f"  {name:<16} x {p[0]:+7.1f}  y {p[1]:+8.1f}  z {p[2]:+7.1f} mm  "
                    f"(confidence {state.landmark_confidence[name]:.2f})"
                )
        print(
            "latency     "
            + ", ".join(f"{k} {m:.0f}/{p:.0f}" for k, (m, p) in latency.items())
            + " ms (median/p95)"
        )
    if overlay and last_frame is not None:
        path = save_png(overlay, draw_perception(display_image(last_frame), state))
        print(f"overlay     {path}", file=sys.stderr if json_out else sys.stdout)
    return 0 if state.has_patient else 1


def _cmd_plan(args: argparse.Namespace) -> int:
    from positioning.planning.plan import room_plan_settings
    from positioning.service.session import SessionRequest

    request = SessionRequest(
        protocol=args.protocol,
        expected_position=args.position,
        table_position_mm=args.table_position,
        protocol_dirs=_protocol_dirs(args),
    )
    run = run_session(
        args.recording,
        request,
        calibration=args.calibration,
        max_frames=args.frames,
        landmarks=args.landmarks,
        room=args.room,
        plan_settings=room_plan_settings(args.room, bore_diameter_mm=args.bore_mm),
    )
    return _report_plan(run, json_out=args.json, overlay=args.overlay)


def _report_plan(run: SessionRun, *, json_out: bool, overlay: str | None) -> int:
    from positioning.perception.overlay import display_image
    from positioning.planning.overlay import draw_plan
    from positioning.planning.plan import plan_summary
    from positioning.sim.preview import save_png

    plan = run.plan
    if json_out:
        used = None if run.calibration_path is None else str(run.calibration_path)
        print(json.dumps(plan.to_json() | {"calibration": used}, indent=2))
    else:
        print(f"calibration {run.calibration_path}")
        print(plan_summary(plan))
    if overlay:
        frame = run.last_frame
        img = draw_plan(display_image(frame), plan, run.calibration, frame.intrinsics)
        path = save_png(overlay, img)
        print(f"overlay: {path}", file=sys.stderr if json_out else sys.stdout)
    return 0 if plan.has_patient else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from positioning.evaluation.evaluate import evaluate, write_results
    from positioning.evaluation.floors import check_floors, floors_path, load_floors, tightened, write_floors
    from positioning.evaluation.report import format_text, write_report
    from positioning.evaluation.suite import load_suite
    from positioning.evaluation.summary import headline, summarize

    if args.update_floors and args.cases is not None:
        raise PositioningError("--update-floors needs the whole suite (drop --cases)")
    target = Path(args.target)
    name = target.name if target.is_dir() or target.suffix else str(args.target)
    floors_file = None
    if args.check_floors is not None or args.update_floors:
        if args.check_floors:
            floors_file = Path(args.check_floors)
        elif target.is_dir():
            raise PositioningError("--check-floors needs a floors FILE for a folder of recordings")
        else:
            suite = load_suite(args.target)
            assert suite.path is not None
            floors_file = floors_path(suite.path)
        floors, floor_settings = load_floors(floors_file)  # a missing floors file fails before the run
        if floor_settings.get("landmarks", args.landmarks) != args.landmarks:
            raise PositioningError(
                f"{floors_file} holds floors for --landmarks {floor_settings['landmarks']}, "
                f"not {args.landmarks}"
            )
    ev = evaluate(
        args.target,
        protocol=args.protocol,
        landmarks=args.landmarks,
        room=args.room,
        cases=args.cases,
        calibration=args.calibration,
        scheduler=args.scheduler,
        jobs=args.jobs,
        progress=not args.no_progress,
    )
    summary = summarize(ev.records)
    out_dir = Path(args.report) if args.report else Path("out") / "evaluation" / name
    results = write_results(ev, out_dir, summary)
    command = "positioning evaluate " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [str(args.target)])
    paths = write_report(ev.records, summary, out_dir, title=f"Evaluation: {name}", command=command)
    print(format_text(summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"target": str(args.target), **summary}, indent=1))
    print(
        f"{len(ev.records)} cases in {ev.seconds:.0f} s on {ev.scheduler}; results {results}, "
        f"report {paths.get('html', out_dir)}"
    )
    if floors_file is None:
        return 0
    measured = headline(ev.records)
    checked = check_floors(floors, measured)
    print(f"floors ({floors_file}):")
    for r in checked:
        print(f"  {r.line()}")
    if args.update_floors:
        new = [tightened(f, measured.get(f.figure, float("nan"))) for f in floors]
        header = "".join(line + "\n" for line in floors_file.read_text().splitlines() if line.startswith("#"))
        write_floors(floors_file, new, floor_settings, header)
        moved = [f"{a.figure} {a.value:g} -> {b.value:g}" for a, b in zip(floors, new, strict=True) if a != b]
        print("floors tightened: " + (", ".join(moved) if moved else "none moved"))
    return 0 if all(r.passed for r in checked) else 1


def _cmd_fluoro_procedures(args: argparse.Namespace) -> int:
    from positioning.planning.procedure import list_procedures

    for p in list_procedures(search_dirs=args.procedure_dir or ()):
        positions = "/".join(map(str, p.expected_positions))
        print(f"{p.name:<20} {positions:<16} {p.description}")
    return 0


def _cmd_fluoro_plan(args: argparse.Namespace) -> int:
    from positioning.perception.overlay import display_image
    from positioning.planning.fluoro import make_fluoro_plan
    from positioning.planning.fluoro_overlay import draw_fluoro_plan
    from positioning.planning.procedure import load_procedure
    from positioning.service.session import SessionRequest
    from positioning.sim.preview import save_png

    procedure = load_procedure(args.procedure, search_dirs=args.procedure_dir or ())  # fails first
    run = run_session(
        args.recording,
        SessionRequest(),
        calibration=args.calibration,
        max_frames=args.frames,
        landmarks=args.landmarks,
        room=args.room,
    )
    plan = make_fluoro_plan(run.states[-1], procedure, expected_position=args.position)
    doc = plan.to_json()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"Procedure {plan.procedure}: {'ready' if plan.ok else 'needs attention'}")
        if plan.patient_position is not None:
            print(f"Patient {plan.patient_position}, arms {plan.arms}.")
        if plan.target is not None and plan.table_offset is not None:
            c, z = plan.target.center_mm, plan.target.size_mm
            t = plan.table_offset
            print(
                f"Target centre x {c[0]:+.0f}, y {c[1]:+.0f}, z {c[2]:+.0f} mm; "
                f"size {z[0]:.0f} x {z[1]:.0f} x {z[2]:.0f} mm (C-arm frame)."
            )
            print(
                f"Table: vertical {t.vertical_mm:+.0f} mm, longitudinal {t.longitudinal_mm:+.0f} mm, "
                f"lateral {t.lateral_mm:+.0f} mm; the target's centre then lies "
                + ", ".join(f"{v:+.0f}" for v in t.residual_mm)
                + " mm from the isocenter."
            )
            for beam, f in plan.fields.items():
                print(
                    f"{beam} field at the detector: {f.width_mm:.0f} x {f.height_mm:.0f} mm "
                    f"(magnification {f.magnification:.2f}), {f.area_saved_percent:.0f} % of the "
                    "uncollimated area saved."
                )
        for c in plan.checks:
            print(f"[{str(c.severity).upper()}] {c.code}: {c.message}")
    if args.overlay:
        frame = run.last_frame
        img = draw_fluoro_plan(display_image(frame), plan, procedure.c_arm, run.calibration, frame.intrinsics)
        print(f"overlay: {save_png(args.overlay, img)}", file=sys.stderr if args.json else sys.stdout)
    return 0 if plan.target is not None else 1


def _cmd_sim_calibration(args: argparse.Namespace) -> int:
    from positioning.sim.board import record_calibration_set

    paths = record_calibration_set(
        args.out_dir, scenario=args.scenario, seed=args.seed, heights_mm=args.heights,
        positions_mm=args.positions, frames=args.frames,
    )  # fmt: skip
    for p in paths:
        print(f"wrote {p} (readings in {p.stem}.table.yaml)")
    return 0


def _calibrate_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    solve = argparse.ArgumentParser(
        prog="positioning calibrate",
        description="Calibrate the camera to the scanner from recordings of the ChArUco board at two table "
        "heights and two longitudinal positions at least (readings in NAME.table.yaml or --table). "
        "Other forms: `positioning calibrate board --out FILE`, `positioning calibrate check RECORDING`.",
    )
    solve.add_argument("recordings", nargs="+", metavar="RECORDING")
    solve.add_argument("--out", required=True, metavar="ROOM.yaml", help="the room file to write")
    solve.add_argument("--board", metavar="FILE", help="board file (default calibration/board-charuco.yaml)")
    solve.add_argument(
        "--table", action="append", default=[], metavar="REC=H,L", help="a recording's readings"
    )
    solve.add_argument(
        "--reference-height",
        type=float,
        default=0.0,
        metavar="MM",
        help="the height reading at which the board's face is at the isocenter's height",
    )
    solve.add_argument(
        "--reference-longitudinal",
        type=float,
        default=0.0,
        metavar="MM",
        help="the longitudinal reading at which the board's origin is in the scan plane",
    )
    solve.add_argument("--room", metavar="FILE", help="the table model to keep (default: the default room's)")
    board = argparse.ArgumentParser(
        prog="positioning calibrate board", description="Write the board at scale."
    )
    board.add_argument("--out", required=True, metavar="PNG|PDF")
    board.add_argument("--board", metavar="FILE")
    check = argparse.ArgumentParser(
        prog="positioning calibrate check",
        description="The daily check: the table seen now against the calibration (2 mm / 0.5 deg); exit 0 on "
        "pass, 1 on fail, 3 when inconclusive (a tilt or roll beyond tolerance by less than the depth's "
        "scatter in this room can tell: record longer, or lay the board on the table).",
    )
    check.add_argument("recording")
    check.add_argument(
        "--calibration", metavar="FILE",
        help="default: the recording's own sidecar, else the site's room file ($POSITIONING_CALIBRATION)",
    )  # fmt: skip
    check.add_argument("--table-height", type=float, default=None, metavar="MM")
    check.add_argument("--table-position", type=float, default=None, metavar="MM")
    check.add_argument("--json", action="store_true")
    return solve, board, check  # fmt: skip


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from positioning.calibration.board import load_board, write_board
    from positioning.calibration.workflow import calibrate_recordings, check_recording, write_room_file

    solve_p, board_p, check_p = _calibrate_parsers()
    rest = list(args.rest)
    if rest[:1] == ["board"]:
        a = board_p.parse_args(rest[1:])
        print(f"board {write_board(load_board(a.board), a.out)}")
        return 0
    if rest[:1] == ["check"]:
        a = check_p.parse_args(rest[1:])
        report, used = check_recording(
            a.recording, a.calibration, table_height_mm=a.table_height, table_position_mm=a.table_position
        )
        if a.json:
            print(json.dumps(report.to_json() | {"calibration": used}, indent=2))
        else:
            print(f"calibration {used}")
            print(report.summary())
            for note in report.notes:
                print(f"  not measured: {note}")
            for doubt in report.doubts:
                print(f"  in doubt: {doubt}")
        return {"pass": 0, "fail": 1}.get(report.status, 3)
    a = solve_p.parse_args(rest)
    readings = {}
    for item in a.table:
        name, _, values = item.partition("=")
        try:
            h, y = (float(v) for v in values.split(","))
        except ValueError as e:
            raise PositioningError(f"--table takes REC=HEIGHT,LONGITUDINAL, got {item!r}") from e
        readings[name] = (h, y)
    board = load_board(a.board)
    result, views, frame = calibrate_recordings(
        a.recordings, board=board, readings=readings, reference_height_mm=a.reference_height,
        reference_longitudinal_mm=a.reference_longitudinal,
    )  # fmt: skip
    out = write_room_file(
        a.out, result, board, frame, reference_height_mm=a.reference_height,
        reference_longitudinal_mm=a.reference_longitudinal, room=a.room, recordings=a.recordings,
    )  # fmt: skip
    for v in views:
        print(f"{v.label}: {len(v.ids)} corners in {v.frames} frames at height {v.table_height_mm:+.0f}, "
              f"longitudinal {v.table_longitudinal_mm:+.0f} mm")  # fmt: skip
    for why in result.skipped:
        print(f"left out: {why}")
    print(
        f"calibrated from {result.corners} corners in {result.views} recordings: reprojection "
        f"{result.reprojection_px:.2f} px ({result.residual_mm:.2f} mm on the board), depth against the "
        f"board's plane {result.depth_residual_mm:+.1f} mm"
    )
    print(f"room file {out}")
    return 0


def _cmd_protocols(args: argparse.Namespace) -> int:
    from positioning.planning.protocol import list_protocols

    for p in list_protocols(search_dirs=args.protocol_dir or ()):
        print(f"{p.name:<22} {getattr(p, 'description', '')}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.offline:
        from positioning.service.story import run_story

        return run_story(
            args.out,
            scenario=args.scenario,
            protocol=args.protocol,
            move_at_s=args.move_at,
            frames=args.frames or 15,
            landmarks=args.landmarks,
        )
    out_dir = Path(args.out)
    rec = out_dir / f"{args.scenario}.db3"
    _cmd_sim_record(
        argparse.Namespace(
            scenario=args.scenario, seed=args.seed, frames=args.frames, out=str(rec), preview=None
        )
    )
    print()
    print("read back through pyrealsense2 playback (the live-camera code path):")
    _print_info(_describe_recording(rec))
    _print_truth(rec)
    _write_preview(rec, out_dir / f"{args.scenario}.png")
    print()
    print("perception on the recording (tracked over all frames):")
    from positioning.service.session import SessionRequest

    # once, for both reports: the plan is of the last frame
    run = run_session(rec, SessionRequest(protocol=args.protocol), landmarks=args.landmarks)
    _report_perception(run, json_out=False, overlay=str(out_dir / f"{args.scenario}.perception.png"))
    print()
    print(f"plan for protocol {args.protocol}:")
    return _report_plan(run, json_out=False, overlay=str(out_dir / f"{args.scenario}.plan.png"))


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _protocol_dirs(args: argparse.Namespace) -> tuple[Path, ...]:
    return tuple(Path(d) for d in args.protocol_dir or ())


def _cmd_serve(args: argparse.Namespace) -> int:
    from positioning.service.app import AppSettings, build_server
    from positioning.service.server import ServerSettings

    server = build_server(
        AppSettings(
            source=args.source,
            calibration=_path(args.calibration),
            events=tuple(args.event),
            frames=args.frames,
            real_time=True if args.real_time else None,
            loop=True if args.loop else None,
            landmarks=args.landmarks,
            room=_path(args.room),
            audit=_path(args.audit),
            protocol_dirs=_protocol_dirs(args),
            server=ServerSettings(
                host=args.host,
                port=args.port,
                max_streams=args.max_streams,
                tls_cert=_path(args.tls_cert),
                tls_key=_path(args.tls_key),
                tls_client_ca=_path(args.tls_client_ca),
                tokens=_path(args.tokens),
                http_port=None if args.no_http else args.http_port,
                http_host=args.http_host,
                http_allowed_hosts=tuple(args.http_allowed_host),
            ),
        )
    )
    server.start()
    d = server.hub.device_status()
    print(
        f"serving positioning.v1 on {server.address} ({'TLS' if server.tls else 'plain text'}"
        f"{', tokens' if args.tokens else ''}); source {d.source}: {d.camera_model}; "
        f"calibration {d.calibration_path}",
        flush=True,
    )
    if server.http_url is not None:
        print(f"the tablet app: open {server.http_url} (gRPC-Web on the same port)", flush=True)
        if not args.tokens and (args.http_host or args.host) not in ("127.0.0.1", "localhost", "::1"):
            print(
                "warning: the tablet app is reachable from the network without tokens: anyone who can "
                "reach this port may start sessions and confirm plans (use --tokens)",
                file=sys.stderr,
                flush=True,
            )
    return server.serve_forever()


def _print_message(msg: Any, json_out: bool) -> None:
    from google.protobuf import json_format, text_format

    if json_out:
        print(json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True)), flush=True)
    else:
        print(text_format.MessageToString(msg).rstrip(), flush=True)


def _cmd_client(args: argparse.Namespace) -> int:
    import itertools
    import os

    import grpc

    from positioning.service.client import Client, ClientSettings, describe_error
    from positioning.service.story import format_plan

    settings = ClientSettings(
        address=args.address,
        token=args.token or os.environ.get("POSITIONING_TOKEN") or None,
        tls_ca=_path(args.tls_ca),
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        server_name=args.server_name,
    )
    show = lambda m: _print_message(m, args.json)  # noqa: E731
    try:
        with Client(settings) as c:
            call = args.call
            if call == "protocols":
                for p in c.protocols():
                    print(f"{p.name:<22} {p.description}")
            elif call == "device":
                show(c.device())
            elif call == "health":
                print(c.health())
            elif call == "start":
                show(
                    c.start_session(
                        args.protocol,
                        expected_position=args.position,
                        patient_height_mm=args.height_mm,
                        patient_weight_kg=args.weight_kg,
                        table_position_mm=args.table_position,
                        operator=args.operator,
                    )
                )
            elif call == "session":
                show(c.session(args.session_id))
            elif call == "end":
                show(c.end_session(args.session_id))
            elif call == "watch":
                stream = c.watch(args.session_id)
                for est in itertools.islice(stream, args.count):
                    show(est) if args.json else print(
                        f"frame {est.frame_number}: {est.state.status} {est.state.patient_position or '-'} "
                        f"arms {est.state.arms or '-'}, {len(est.state.landmarks)} landmarks, "
                        f"{est.latency_ms:.0f} ms" + (", plan preview" if est.HasField("preview") else "")
                    )
                stream.cancel()
            elif call == "plan":
                plan = c.plan(args.session_id)
                print(plan.plan_json if args.json else format_plan(plan))
            elif call == "overlay":
                ov = c.overlay(args.session_id, depth_only=args.depth_only)
                Path(args.out).write_bytes(ov.png)
                print(f"overlay {args.out} ({ov.width_px}x{ov.height_px}, frame {ov.frame_number})")
            elif call == "confirm":
                show(c.confirm(args.session_id, operator=args.operator, note=args.note))
            elif call == "events":
                stream = c.events(args.session_id, from_index=args.from_index)
                for event in itertools.islice(stream, args.count):
                    show(event) if args.json else print(f"#{event.index} {event.kind}: {event.message}")
                stream.cancel()
            elif call == "table":
                show(c.report_table_position(args.session_id, args.table_position_mm))
            elif call == "console":
                stream = c.confirmed_plans()
                for confirmed in itertools.islice(stream, args.count):
                    show(confirmed)
                stream.cancel()
    except grpc.RpcError as e:
        print(f"error: {describe_error(e)}", file=sys.stderr)
        return 2
    return 0


def _cmd_sessions(args: argparse.Namespace) -> int:
    from positioning.service.audit import AuditStore, default_audit_path

    path = Path(args.audit) if args.audit else default_audit_path()
    if not path.is_file():
        print(f"error: no audit database at {path}", file=sys.stderr)
        return 2
    with AuditStore(path) as audit:
        if args.what == "list":
            for s in audit.sessions():
                print(
                    f"{s['id'][:12]}  {s['started_at']}  {s['protocol'] or '-':<18} {s['operator']:<14} "
                    f"{s['confirmations']} confirmed  {'ended' if s['ended_at'] else 'OPEN'}"
                )
        elif args.what == "show":
            print(json.dumps(audit.session(args.session_id), indent=2))
        else:
            sys.stdout.write(audit.export(args.format))
    return 0


#: ``positioning bench`` sub-commands whose module parses its own options: name -> (module, help).
_DELEGATED_BENCHES: dict[str, tuple[str, str]] = {
    "perception": ("bench_perception", "perception accuracy and latency on simulated patients"),
    "plan": ("bench_plan", "planning accuracy and check precision/recall"),
    "robustness": (
        "robustness",
        "the whole pipeline on held-out sessions of the randomised world, by factor",
    ),
    "serve": (
        "bench_serve",
        "the service: frame-to-client latency and estimates per second, 1 and 8 clients",
    ),
    "pipeline": (
        "bench_pipeline",
        "the live pipeline at camera rate through the service's path: per-stage and per-frame times",
    ),
    "tablet": (
        "bench_tablet",
        "the tablet app in headless Chromium: page load, frame to picture on the page",
    ),
    "calibration": (
        "bench_calibration",
        "calibration vs the true transform across rooms, the daily check, a wrong calibration's effect",
    ),
    "fluoro": (
        "bench_fluoro",
        "fluoroscopy set-ups vs truth: target centre error, the true target inside the field, area saved",
    ),
}


def _cmd_bench_delegated(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"positioning.evaluation.{args.bench_module}").main(args.rest)


def _cmd_bench_overview(args: argparse.Namespace) -> int:
    from positioning.evaluation.bench_all import run_args

    return run_args(args)


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from positioning.evaluation.bench_sim import benchmark_simulator, format_benchmark

    r = benchmark_simulator(args.scenario, frames=args.frames, seed=args.seed)
    print(json.dumps(r, indent=2) if args.json else format_benchmark(r))
    return 0


# -- parser ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="positioning", description="Patient positioning and scan planning for CT."
    )
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the whole story (the default job): a server on the simulated room, a tablet and a console "
        "client over a real local channel, a plan confirmed, the patient moves, the event arrives",
    )
    demo.add_argument("--out", default="out", help="output folder (default: out/)")
    demo.add_argument("--scenario", default="hfs-arms-up")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--frames", type=int, default=None, help="frames per clip (default 15; offline 30)")
    demo.add_argument("--protocol", default="chest")
    demo.add_argument(
        "--move-at", type=float, default=15.0, help="seconds after the start when the patient moves (15)"
    )
    demo.add_argument(
        "--offline",
        action="store_true",
        help="no server: record a session, read it back, perceive and plan it from the command line",
    )
    _landmarks_option(demo)
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser(
        "serve", help="serve the positioning gRPC service (default: the simulated room on 127.0.0.1:50051)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default loopback only)")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument(
        "--source",
        default=None,
        help="sim[:SCENARIO[@SEED]] (default), realsense[:SERIAL], or a recording's path",
    )
    serve.add_argument("--calibration", metavar="FILE", help="camera-to-scanner calibration")
    serve.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="SECONDS:KIND",
        help="a simulated room event (moved, left, second_person, camera_lost, still); repeatable",
    )
    serve.add_argument("--frames", type=int, default=None, help="frames per simulated clip")
    serve.add_argument("--real-time", action="store_true", help="play a recording at its recorded rate")
    serve.add_argument("--loop", action="store_true", help="loop a recording")
    serve.add_argument("--tokens", metavar="FILE", help="bearer tokens with roles (YAML)")
    serve.add_argument("--tls-cert", metavar="PEM")
    serve.add_argument("--tls-key", metavar="PEM")
    serve.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates (mutual TLS)")
    serve.add_argument("--audit", metavar="SQLITE", help="audit database (default ~/.local/share/...)")
    serve.add_argument("--max-streams", type=int, default=64)
    serve.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="HTTP port of the tablet app and its gRPC-Web endpoint (default 8080; 0: any free port)",
    )
    serve.add_argument("--http-host", default=None, help="its interface (default: --host)")
    serve.add_argument(
        "--http-allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a DNS name tablets use for this server (IP addresses and this machine's names always work)",
    )
    serve.add_argument("--no-http", action="store_true", help="no tablet app, no gRPC-Web")
    _protocol_dir_option(serve)
    _landmarks_option(serve)
    _room_option(serve)
    serve.set_defaults(func=_cmd_serve)

    client = sub.add_parser("client", help="the reference client (tablet and console calls)")
    client.add_argument("--address", default="127.0.0.1:50051")
    client.add_argument("--token", default=None, help="bearer token (or $POSITIONING_TOKEN)")
    client.add_argument("--tls-ca", metavar="PEM", help="CA of the server's certificate (TLS)")
    client.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    client.add_argument("--tls-key", metavar="PEM")
    client.add_argument("--server-name", help="the name in the server's certificate")
    client.add_argument("--json", action="store_true", help="print messages as JSON")
    csub = client.add_subparsers(dest="call", required=True)
    csub.add_parser("protocols", help="list the protocols")
    csub.add_parser("device", help="the camera's status")
    csub.add_parser("health", help="the health service's answer")
    c = csub.add_parser("start", help="start a session")
    c.add_argument("--protocol", required=True)
    c.add_argument("--position", default="", help="expected DICOM position")
    c.add_argument("--height-mm", type=float)
    c.add_argument("--weight-kg", type=float)
    c.add_argument("--table-position", type=float, metavar="MM")
    c.add_argument("--operator", default="")
    for name, help_ in (("session", "a session"), ("end", "end a session")):
        csub.add_parser(name, help=help_).add_argument("session_id")
    c = csub.add_parser("watch", help="live estimates")
    c.add_argument("session_id")
    c.add_argument("--count", type=int, default=10, help="estimates to print (default 10)")
    c = csub.add_parser("plan", help="the plan on the latest frame")
    c.add_argument("session_id")
    c = csub.add_parser("overlay", help="the current frame with the plan drawn")
    c.add_argument("session_id")
    c.add_argument("--out", required=True, metavar="PNG")
    c.add_argument("--depth-only", action="store_true")
    c = csub.add_parser("confirm", help="confirm the plan (operator)")
    c.add_argument("session_id")
    c.add_argument("--operator", default="")
    c.add_argument("--note", default="")
    c = csub.add_parser("events", help="a session's events")
    c.add_argument("session_id")
    c.add_argument("--from", dest="from_index", type=int, default=0)
    c.add_argument("--count", type=int, default=None, help="stop after this many")
    c = csub.add_parser("table", help="report the console's table position")
    c.add_argument("session_id")
    c.add_argument("table_position_mm", type=float)
    c = csub.add_parser("console", help="wait for confirmed plans")
    c.add_argument("--count", type=int, default=1)
    client.set_defaults(func=_cmd_client)

    sessions = sub.add_parser("sessions", help="the audit: sessions and confirmed plans")
    sessions.add_argument("--audit", metavar="SQLITE", help="audit database (default ~/.local/share/...)")
    ssub = sessions.add_subparsers(dest="what", required=True)
    ssub.add_parser("list", help="every session, newest first")
    ssub.add_parser("show", help="one session with its confirmations").add_argument("session_id")
    ssub.add_parser("export", help="everything, as JSON or CSV").add_argument(
        "--format", choices=("json", "csv"), default="json"
    )
    sessions.set_defaults(func=_cmd_sessions)

    info = sub.add_parser("info", help="read a RealSense recording (.db3 or .bag) and describe it")
    info.add_argument("recording")
    info.add_argument("--json", action="store_true")
    info.add_argument("--preview", metavar="PNG", help="write a colour | depth picture of the first frame")
    info.set_defaults(func=_cmd_info)

    per = sub.add_parser("perceive", help="run perception on a recording: table, patient, landmarks, pose")
    per.add_argument(
        "recording",
        help="a RealSense recording (.db3 or .bag), or sim[:SCENARIO[@SEED]] for the simulated room (its "
        "clip once through)",
    )
    per.add_argument("--calibration", metavar="FILE", help="default: RECORDING.calibration.yaml beside it")
    per.add_argument("--frames", type=int, default=None, help="read at most N frames")
    per.add_argument("--json", action="store_true")
    per.add_argument("--overlay", metavar="PNG", help="write the last frame annotated")
    per.add_argument("--scene", metavar="PNG", help="write what the scene network sees, from straight above")
    _landmarks_option(per)
    _room_option(per)
    per.set_defaults(func=_cmd_perceive)

    plan = sub.add_parser("plan", help="plan a scan from a recording: isocenter, table offsets, scan range")
    plan.add_argument(
        "recording",
        help="a RealSense recording (.db3 or .bag), or sim[:SCENARIO[@SEED]] for the simulated room (its "
        "clip once through)",
    )
    plan.add_argument("--protocol", required=True, help="protocol name (see protocols/) or a YAML file")
    plan.add_argument("--calibration", metavar="FILE", help="default: RECORDING.calibration.yaml beside it")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (the console contract)")
    plan.add_argument("--overlay", metavar="PNG", help="write the colour image with the plan drawn on it")
    plan.add_argument(
        "--table-position",
        type=float,
        default=None,
        metavar="MM",
        help="the console's longitudinal table position, for the range in table coordinates",
    )
    plan.add_argument("--frames", type=int, default=None, help="read at most N frames")
    plan.add_argument(
        "--position",
        default=None,
        choices=["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"],
        help="the patient position entered at the console (default: the protocol's)",
    )
    plan.add_argument(
        "--bore-mm", type=float, default=None, help="gantry bore diameter (default: the room file's, 700)"
    )
    _protocol_dir_option(plan)
    _landmarks_option(plan)
    _room_option(plan)
    plan.set_defaults(func=_cmd_plan)

    protos = sub.add_parser("protocols", help="list the scan protocols")
    protos.add_argument("--protocol-dir", action="append", metavar="DIR")
    protos.set_defaults(func=_cmd_protocols)

    sim = sub.add_parser("sim", help="the simulator").add_subparsers(dest="sim_command", required=True)
    sim.add_parser("list", help="list the scenarios").set_defaults(func=_cmd_sim_list)
    rec = sim.add_parser("record", help="record a simulated session as a RealSense .db3 with truth")
    rec.add_argument("out", metavar="OUT.db3")
    rec.add_argument("--scenario", required=True)
    rec.add_argument("--frames", type=int, default=None, help="number of frames (default: the scenario's)")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--preview", metavar="PNG")
    rec.add_argument("--no-color", action="store_true", help="a depth-only recording (no colour stream)")
    rec.set_defaults(func=_cmd_sim_record)
    prev = sim.add_parser("preview", help="render one frame of a scenario to a PNG (colour | depth | labels)")
    prev.add_argument("--scenario", required=True)
    prev.add_argument("--seed", type=int, default=0)
    prev.add_argument("--frame", type=int, default=0)
    prev.add_argument("--out", required=True, metavar="PNG")
    prev.set_defaults(func=_cmd_sim_preview)
    scal = sim.add_parser(
        "calibration", help="record the calibration board at several table readings (with their sidecars)"
    )
    scal.add_argument("out_dir", metavar="OUT_DIR")
    scal.add_argument("--scenario", default="hfs-arms-up", help="the room and camera (default hfs-arms-up)")
    scal.add_argument("--seed", type=int, default=0)
    scal.add_argument("--heights", type=float, nargs="+", default=[-380.0, -220.0, -60.0], metavar="MM")
    scal.add_argument("--positions", type=float, nargs="+", default=[-300.0, -900.0], metavar="MM")
    scal.add_argument("--frames", type=int, default=3)
    scal.set_defaults(func=_cmd_sim_calibration)
    noise = sim.add_parser("noise-report", help="depth noise model vs the real D435 recording")
    noise.add_argument("path", nargs="?", default=None, help="a real RealSense recording")
    noise.set_defaults(func=_cmd_sim_noise_report)

    cal = sub.add_parser(
        "calibrate",
        help="camera-to-scanner calibration (RECORDINGS... --out ROOM.yaml; board --out FILE; check REC)",
        add_help=False,
    )
    cal.add_argument("rest", nargs=argparse.REMAINDER)
    cal.set_defaults(func=_cmd_calibrate)

    fl = sub.add_parser("fluoro", help="fluoroscopy: target region, table position and collimation")
    fsub = fl.add_subparsers(dest="fluoro_command", required=True)
    fp = fsub.add_parser("procedures", help="list the fluoroscopy procedures (protocols/fluoro/)")
    fp.add_argument("--procedure-dir", action="append", metavar="DIR", help="site procedure folder")
    fp.set_defaults(func=_cmd_fluoro_procedures)
    fpl = fsub.add_parser("plan", help="plan a fluoroscopy set-up from a recording")
    fpl.add_argument("recording", help="a RealSense recording (.db3 or .bag), or sim[:SCENARIO[@SEED]]")
    fpl.add_argument(
        "--procedure", required=True, help="procedure name (see `positioning fluoro procedures`)"
    )
    fpl.add_argument("--procedure-dir", action="append", metavar="DIR", help="site procedure folder")
    fpl.add_argument("--calibration", metavar="FILE", help="default: RECORDING.calibration.yaml beside it")
    fpl.add_argument("--json", action="store_true", help="print the plan as JSON")
    fpl.add_argument(
        "--overlay", metavar="PNG", help="write the colour image with the target and field drawn"
    )
    fpl.add_argument("--frames", type=int, default=None, help="read at most N frames")
    fpl.add_argument(
        "--position",
        default=None,
        choices=["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"],
        help="the patient position entered for the procedure (default: the procedure's)",
    )
    _landmarks_option(fpl)
    _room_option(fpl)
    fpl.set_defaults(func=_cmd_fluoro_plan)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate the pipeline on a suite or a folder of recordings: errors against truth, a report",
    )
    ev.add_argument(
        "target", metavar="SUITE_OR_DIR", help="a suite (sim/suites: quick, full, ...) or a folder"
    )
    ev.add_argument(
        "--protocol", default=None, help="plan every case with this protocol (a folder needs one)"
    )
    ev.add_argument(
        "--report", metavar="DIR", default=None, help="report folder (default out/evaluation/NAME)"
    )
    ev.add_argument("--cases", type=int, default=None, help="the first N cases only")
    ev.add_argument("--jobs", type=int, default=2, help="local Dask worker processes (default 2)")
    ev.add_argument("--scheduler", metavar="ADDRESS", default=None, help="a Dask scheduler (tcp://HOST:8786)")
    ev.add_argument(
        "--check-floors",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="fail (exit 1) when a figure is worse than its floor (default: the suite's NAME.floors.yaml)",
    )
    ev.add_argument(
        "--update-floors", action="store_true", help="tighten the floors file toward this run (never loosens)"
    )
    ev.add_argument(
        "--calibration", metavar="FILE", help="for recordings without a NAME.calibration.yaml beside them"
    )
    ev.add_argument("--json", metavar="FILE", help="also write the headline and summary figures here")
    ev.add_argument("--no-progress", action="store_true")
    _landmarks_option(ev)
    _room_option(ev)
    ev.set_defaults(func=_cmd_evaluate)

    from positioning.evaluation.bench_all import add_arguments as _bench_overview_arguments

    bench_overview = sub.add_parser(
        "bench",
        help="benchmarks (with no sub-command: the quick form of each, one table of headline figures)",
        description="Benchmarks. With no sub-command: runs the quick form of every benchmark (sim, "
        "perception, plan, robustness, pipeline, serve, and tablet where Chromium is installed) and "
        "prints their headline figures, median and p95, in one table; exit status 1 if any failed.",
    )
    _bench_overview_arguments(bench_overview)
    bench_overview.set_defaults(func=_cmd_bench_overview)
    bench = bench_overview.add_subparsers(dest="bench_command", required=False)
    bsim = bench.add_parser("sim", help="simulator speed: render + write frames per second")
    bsim.add_argument("--scenario", default="hfs-arms-up")
    bsim.add_argument("--frames", type=int, default=30)
    bsim.add_argument("--seed", type=int, default=0)
    bsim.add_argument("--json", action="store_true")
    bsim.set_defaults(func=_cmd_bench_sim)
    for name, (module, help_text) in _DELEGATED_BENCHES.items():
        delegated = bench.add_parser(name, help=help_text, add_help=False)
        delegated.add_argument("rest", nargs=argparse.REMAINDER)
        delegated.set_defaults(func=_cmd_bench_delegated, bench_module=module)
    return p


def _room_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--room",
        metavar="FILE",
        default=None,
        help="the site's room file (its table model; default: a generic CT table, as in "
        "calibration/default-room.yaml)",
    )


def _protocol_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol-dir", action="append", metavar="DIR", help="site protocol folder (repeatable)"
    )


def _landmarks_option(parser: argparse.ArgumentParser) -> None:
    from positioning.perception.landmarks.base import LANDMARK_MODES

    parser.add_argument(
        "--landmarks",
        choices=LANDMARK_MODES,
        default="fused",
        help="landmark sources: MediaPipe on the colour image, our depth-only scene network, or both fused "
        "by confidence (default; depth alone when the recording has no colour)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``positioning`` console script."""
    parser = build_parser()
    # the bench commands hand their own options on to their modules (argparse's REMAINDER does not take
    # options that come first, so they are collected here)
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "rest"):
        args.rest = [*extra, *args.rest]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except PositioningError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
