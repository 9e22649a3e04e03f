"""Calibrating a room from recordings, writing its room file, and the daily check on a recording.

The thin layer between the command line (``positioning calibrate``) and the pure parts
(:mod:`~positioning.calibration.charuco`, :mod:`~positioning.calibration.check`): reading recordings
through the camera's own path (:func:`~positioning.camera.source.open_source`), the console's readings
(``NAME.table.yaml`` beside a recording, or given on the command line), and the room file.

The room file is the one home for a site's fixed facts: the camera-to-scanner transform with the camera's
identity and the calibration's residuals (read by every ``--calibration``), the reference readings of the
board, and the table model (read by ``--room``).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from positioning.calibration.board import Board, load_board
from positioning.calibration.charuco import (
    BoardNotFoundError,
    BoardView,
    CalibrationResult,
    detect_board,
    solve_calibration,
)
from positioning.calibration.check import (
    DriftReport,
    PlaneSpread,
    check_calibration,
    drift_from_board,
    table_plane_angles,
)
from positioning.errors import CalibrationError

__all__ = [
    "readings_path",
    "read_readings",
    "calibrate_recordings",
    "write_room_file",
    "room_reference",
    "room_plane_spread",
    "check_recording",
]


def readings_path(recording: str | Path) -> Path:
    """``NAME.table.yaml`` beside ``NAME.db3``: the console's table readings while it was recorded."""
    p = Path(recording)
    return p.with_name(p.stem + ".table.yaml")


def read_readings(
    recording: str | Path, given: Mapping[str, tuple[float, float]] | None = None
) -> tuple[float, float]:
    """``(height_mm, longitudinal_mm)`` of a recording: given on the command line, or its sidecar.

    Raises:
        CalibrationError: neither, or a malformed sidecar.
    """
    p = Path(recording)
    for key in (str(p), p.name, p.stem):
        if given and key in given:
            return given[key]
    side = readings_path(p)
    if not side.is_file():
        raise CalibrationError(
            f"no table readings for {p.name}: write {side.name} beside it "
            f"({{height_mm: H, longitudinal_mm: L}}) or pass --table {p.name}=H,L"
        )
    try:
        d = yaml.safe_load(side.read_text())
        return float(d["height_mm"]), float(d["longitudinal_mm"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise CalibrationError(f"{side} is malformed: {e}") from e


def _frames(recording: str | Path, max_frames: int | None = 10) -> tuple[list[Any], Any]:
    """The frames of a recording (through pyrealsense2's playback) and its source's device description."""
    from positioning.camera.realsense import RealSenseSource

    src = RealSenseSource.from_file(recording)
    with src:
        frames = list(src.frames(max_frames))
    if not frames:
        raise CalibrationError(f"{Path(recording).name} holds no frames")
    return frames, frames[0]


def calibrate_recordings(
    recordings: Sequence[str | Path],
    *,
    board: Board | None = None,
    readings: Mapping[str, tuple[float, float]] | None = None,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
) -> tuple[CalibrationResult, list[BoardView], Any]:
    """Detect the board in every recording and solve the camera's pose.

    Returns:
        ``(result, views, a frame)`` (the frame: the camera's intrinsics and identity).
    """
    board = board or load_board()
    views, first, skipped = [], None, []
    for rec in recordings:
        h, y = read_readings(rec, readings)
        frames, f0 = _frames(rec)
        first = first or f0
        if f0.intrinsics.shape != first.intrinsics.shape or f0.serial != first.serial:
            raise CalibrationError(f"{Path(rec).name} comes from another camera or stream than the first")
        try:
            views.append(
                detect_board(frames, board, table_height_mm=h, table_longitudinal_mm=y, label=Path(rec).name)
            )
        except BoardNotFoundError as e:  # one hidden view (the gantry over the board's end) need not stop it
            skipped.append(str(e))
    try:
        result = solve_calibration(
            views, board, first.intrinsics,
            reference_height_mm=reference_height_mm, reference_longitudinal_mm=reference_longitudinal_mm,
        )  # fmt: skip
    except CalibrationError as e:
        if not skipped:
            raise
        raise CalibrationError(f"{e} (left out: {'; '.join(skipped)})") from e
    longitudinal = {round(v.table_longitudinal_mm, 1) for v in views}
    if len(longitudinal) < 2:
        raise CalibrationError(
            "the board must be seen at two longitudinal table positions at least: got "
            f"{sorted(longitudinal)} mm" + (f" (left out: {'; '.join(skipped)})" if skipped else "")
        )
    result = dataclasses.replace(result, skipped=tuple(skipped))
    # the table plane's tilt and roll as the depth camera sees them with this calibration: the baseline the
    # daily check compares with (the board, a 5 mm plate lying flat on it, left in)
    from positioning.frames import Calibration

    cal = Calibration(scanner_from_camera=result.camera_to_scanner, method="charuco")
    per_recording = [table_plane_angles(_frames(rec, 10)[0], cal) for rec in recordings]
    angles = np.concatenate(per_recording)
    angles = angles[np.all(np.isfinite(angles), axis=1)]
    if len(angles) < 3:
        raise CalibrationError(
            f"the table's plane was measurable beside the board in {len(angles)} frames (3 needed): the "
            "daily check would have no baseline (keep more of the table top in view)"
        )
    # the baseline, and how much the plane's tilt and roll scatter between frames here (far rooms: a degree)
    baseline = (float(np.median(angles[:, 0])), float(np.median(angles[:, 1])))
    spread = PlaneSpread.of(per_recording)
    return dataclasses.replace(result, table_plane_deg=baseline, table_plane_spread=spread), views, first


def write_room_file(
    out: str | Path,
    result: CalibrationResult,
    board: Board,
    frame: Any,
    *,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
    room: str | Path | None = None,
    recordings: Sequence[str | Path] = (),
) -> Path:
    """Write the room file: the calibration (readable by every ``--calibration``), the camera's identity,
    the board's reference readings, and the table model of ``room`` (default: the default room's)."""
    from positioning import resources

    src = Path(room) if room is not None else resources.data_root() / "calibration" / "default-room.yaml"
    base = yaml.safe_load(src.read_text()) or {}
    doc: dict[str, Any] = {
        "camera_to_scanner": [[round(float(v), 6) for v in row] for row in result.camera_to_scanner],
        "method": "charuco",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "residual_mm": round(result.residual_mm, 3),
        "reprojection_px": round(result.reprojection_px, 3),
        "depth_residual_mm": round(result.depth_residual_mm, 2),
        # the table plane's tilt and roll as the depth camera saw them right after calibrating (deg)
        "table_plane_baseline_deg": {"tilt": round(result.table_plane_deg[0], 3),
                                     "roll": round(result.table_plane_deg[1], 3)},
        # their scatter between frames (depth noise) and between the table positions, in this room
        "table_plane_spread_deg": None if result.table_plane_spread is None
                                  else result.table_plane_spread.to_json(),
        "corners": result.corners,
        "camera": {"device": frame.device_name, "serial": frame.serial,
                   "width": frame.intrinsics.width, "height": frame.intrinsics.height},
        "board": board.name,
        "table_reference": {"height_mm": reference_height_mm, "longitudinal_mm": reference_longitudinal_mm},
        "recordings": [Path(r).name for r in recordings],
        "skipped": list(result.skipped),
    }  # fmt: skip
    for key in ("table", "gantry"):
        if key in base:
            doc[key] = base[key]
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# A room file written by `positioning calibrate`: the camera-to-scanner calibration (any\n"
        "# --calibration reads it), the camera it belongs to, the board's reference readings and the table\n"
        "# model (--room).\n"
    )
    p.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    return p


def room_reference(
    path: str | Path | None,
) -> tuple[float, float, str | None, tuple[float, float] | None]:
    """``(reference height, reference longitudinal, camera serial, table plane baseline (tilt, roll))`` of a
    room file (zeros and Nones without one; the baseline is None for a calibration `positioning calibrate`
    did not make)."""
    if path is None or not Path(path).is_file():
        return 0.0, 0.0, None, None
    d = yaml.safe_load(Path(path).read_text()) or {}
    ref = d.get("table_reference") or {}
    base = d.get("table_plane_baseline_deg")
    baseline = None if not base else (float(base.get("tilt", 0.0)), float(base.get("roll", 0.0)))
    if baseline is not None and not all(np.isfinite(baseline)):
        raise CalibrationError(f"room file {path} has a table_plane_baseline_deg that is not a number")
    return (float(ref.get("height_mm", 0.0)), float(ref.get("longitudinal_mm", 0.0)),
            (d.get("camera") or {}).get("serial"), baseline)  # fmt: skip


def room_plane_spread(path: str | Path | None) -> PlaneSpread | None:
    """The table plane's scatter a room file keeps (None: none kept, as in files written before it was)."""
    if path is None or not Path(path).is_file():
        return None
    d = (yaml.safe_load(Path(path).read_text()) or {}).get("table_plane_spread_deg")
    if not d:
        return None
    if not isinstance(d, dict):
        raise CalibrationError(f"room file {path}: table_plane_spread_deg must be a mapping, got {d!r}")
    try:
        spread = PlaneSpread(
            **{k: (int if k in ("frames", "recordings") else float)(v) for k, v in d.items()}
        )
    except (TypeError, ValueError) as e:
        raise CalibrationError(f"room file {path} has a malformed table_plane_spread_deg: {e}") from e
    if not all(np.isfinite(v) and v >= 0 for v in dataclasses.astuple(spread)):
        raise CalibrationError(f"room file {path} has a table_plane_spread_deg that is not a number >= 0")
    return spread


def check_recording(
    recording: str | Path,
    calibration: str | Path | None = None,
    *,
    table_height_mm: float | None = None,
    table_position_mm: float | None = None,
    board: Board | None = None,
    max_frames: int | None = 30,
    use_board: bool = True,
) -> tuple[DriftReport, str]:
    """The daily check on a recording (its calibration: ``calibration`` or the one beside it): from the
    calibration board when it lies on the table in view (the precise form), else from the table top.

    Returns:
        ``(report, the calibration file used)``.
    """
    from positioning.camera.source import open_source

    board = board or load_board()
    with open_source(recording, calibration=calibration, real_time=False, loop=False) as opened:
        frames = list(opened.source.frames(max_frames))
        cal, used = opened.calibration, str(opened.calibration_path)
    if not frames:
        raise CalibrationError(f"{Path(recording).name} holds no frames")
    h0, l0, serial, baseline = room_reference(used)
    if serial is not None and frames[0].serial and serial != frames[0].serial:
        raise CalibrationError(
            f"{used} calibrates camera {serial}, but {Path(recording).name} comes from {frames[0].serial}"
        )
    readings = {"table_height_mm": table_height_mm, "table_position_mm": table_position_mm,
                "reference_height_mm": h0, "reference_longitudinal_mm": l0}  # fmt: skip
    # the table's plane as when the baseline was measured (the board, a flat plate, left in: leaving it out
    # leaves strips of the table whose depth tilts differently from one recording to the next)
    table = check_calibration(
        frames, cal, board_thickness_mm=board.thickness_mm, baseline_deg=baseline or (0.0, 0.0),
        spread=room_plane_spread(used), **readings,
    )  # fmt: skip
    if not use_board:
        return table, used
    # the board's face: where the height reading puts it, or the seen table top plus the plate
    face = table_height_mm - h0 if table_height_mm is not None else table.seen_top_z_mm + board.thickness_mm
    on_board = drift_from_board(frames, cal, board, face_z_mm=face, table_position_mm=table_position_mm,
                                reference_longitudinal_mm=l0)  # fmt: skip
    if on_board is None:
        return table, used
    report = dataclasses.replace(
        table, yaw_deg=on_board.yaw_deg, lateral_mm=on_board.lateral_mm,
        longitudinal_mm=on_board.longitudinal_mm, tolerance_mm=on_board.tolerance_mm,
        yaw_uncertainty_deg=0.0, lateral_uncertainty_mm=0.0,  # the board's corners, not the table's edges
        notes=tuple(n for n in table.notes if not n.startswith(("yaw", "lateral", "longitudinal")))
        + on_board.notes,
        source="board (yaw, lateral, longitudinal) and the table in depth (tilt, roll, vertical)",
    )  # fmt: skip
    return report, used


def transform_error(estimated: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """``(translation mm, rotation deg)`` between two camera-to-scanner transforms."""
    r = estimated[:3, :3].T @ true[:3, :3]
    angle = float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))
    return float(np.linalg.norm(estimated[:3, 3] - true[:3, 3])), angle
