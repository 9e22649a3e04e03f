"""Camera-to-scanner calibration from a ChArUco board seen at several table positions.

Each recording shows the board lying on the table (``calibration/board-charuco.yaml`` says how it is
placed) at table readings the console reports. OpenCV's :class:`cv2.aruco.CharucoDetector` finds the
board's corners in the colour image (the median over the recording's frames); the readings place every
corner in the scanner frame (:func:`~positioning.calibration.board.board_to_scanner`: the table's travel is
the scanner's y and z axes, the reference readings the origin); one :func:`cv2.solvePnP` over all corners
of all recordings (not coplanar once the table height changes) then gives the camera's pose, refined with
:func:`cv2.solvePnPRefineLM`.

The depth stream checks the result: the board's face, seen in depth inside the detected corners, should
lie on the plane the readings put it on; the median distance is reported as ``depth_residual_mm`` beside the
corners' reprojection residual (pixels, and millimetres on the board).

Convention: ``camera_to_scanner`` maps camera-frame mm (RealSense depth optical frame) to scanner-frame
mm, as every calibration file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from positioning.calibration.board import Board, board_to_scanner
from positioning.errors import CalibrationError
from positioning.frames import Intrinsics, RGBDFrame

__all__ = ["BoardNotFoundError", "BoardView", "CalibrationResult", "detect_board", "solve_calibration"]

MIN_CORNERS = 6


class BoardNotFoundError(CalibrationError):
    """A recording in which the board's corners were not found (hidden, out of view, too small)."""


@dataclasses.dataclass(frozen=True)
class BoardView:
    """The board's corners found in one recording, with the table readings it was seen at.

    Attributes:
        ids: ``(N,)`` ChArUco corner ids.
        image_px: ``(N, 2)`` their pixel positions (median over the frames that found them).
        frames: the frames they were found in.
        table_height_mm, table_longitudinal_mm: the console's readings.
        face_points_mm: ``(M, 3)`` camera-frame depth points on the board's face (inside its corners).
        label: where it came from.
    """

    ids: np.ndarray
    image_px: np.ndarray
    frames: int
    table_height_mm: float
    table_longitudinal_mm: float
    face_points_mm: np.ndarray
    label: str = ""


def _face_points(frame: RGBDFrame, image_px: np.ndarray, max_points: int = 4000) -> np.ndarray:
    """Camera-frame points of the depth inside the convex hull of the corners (shrunk 10 %)."""
    hull = cv2.convexHull(image_px.astype(np.float32)).reshape(-1, 2)
    centre = hull.mean(0)
    hull = centre + 0.9 * (hull - centre)
    mask = np.zeros(frame.depth_mm.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(hull).astype(np.int32)], 1)
    v, u = np.nonzero((mask > 0) & (frame.depth_mm > 0))
    if len(v) > max_points:
        keep = np.linspace(0, len(v) - 1, max_points).astype(np.int64)
        v, u = v[keep], u[keep]
    z = frame.depth_mm[v, u].astype(np.float64)
    k = frame.intrinsics
    return np.stack([(u - k.ppx) * z / k.fx, (v - k.ppy) * z / k.fy, z], 1)


def detect_board(
    frames: Sequence[RGBDFrame],
    board: Board,
    *,
    table_height_mm: float,
    table_longitudinal_mm: float,
    label: str = "",
) -> BoardView:
    """The board's corners in a recording's frames (colour images, aligned to depth).

    Raises:
        CalibrationError: no colour stream, or fewer than :data:`MIN_CORNERS` corners found.
    """
    detector = cv2.aruco.CharucoDetector(board.cv_board())
    found: dict[int, list[np.ndarray]] = {}
    used = 0
    last = None
    most = 0  # the most corners any frame showed
    for f in frames:
        if f.color_rgb is None:
            raise CalibrationError(
                f"{label or 'recording'} has no colour stream: the board is found in colour"
            )
        gray = cv2.cvtColor(f.color_rgb, cv2.COLOR_RGB2GRAY)
        corners, ids, _, _ = detector.detectBoard(gray)
        most = max(most, 0 if ids is None else len(ids))
        if ids is None or len(ids) < MIN_CORNERS:
            continue
        used += 1
        last = f
        for i, c in zip(ids.ravel(), corners.reshape(-1, 2), strict=True):
            found.setdefault(int(i), []).append(c)
    if last is None or len(found) < MIN_CORNERS:
        raise BoardNotFoundError(
            f"{label or 'recording'}: the calibration board was not found (at most {most} of its "
            f"{len(board.corners_mm())} corners in a frame, {MIN_CORNERS} needed): check that it lies fully "
            "in view (not under the gantry), flat and lit"
        )
    ids = np.array(sorted(found), np.int64)
    px = np.array([np.median(found[i], axis=0) for i in ids], np.float64)
    return BoardView(ids, px, used, float(table_height_mm), float(table_longitudinal_mm),
                     _face_points(last, px), label)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """A solved calibration and how well it fits.

    Attributes:
        camera_to_scanner: ``(4, 4)``.
        reprojection_px: RMS distance of the corners to their reprojections.
        residual_mm: the same, in millimetres on the board (at each corner's distance).
        depth_residual_mm: median distance of the depth points on the board's face to its plane (signed
            median, the camera's depth against the corners' geometry).
        corners: corners used; views: recordings used.
        table_plane_deg: ``(tilt, roll)`` of the table's plane in depth with this calibration (the daily
            check's baseline; filled by :func:`positioning.calibration.workflow.calibrate_recordings`).
        skipped: recordings left out, each with why (the board not found in it).
        table_plane_spread: how the table plane's tilt and roll scatter between frames in this room
            (:class:`~positioning.calibration.check.PlaneSpread`; filled with ``table_plane_deg``).
    """

    camera_to_scanner: np.ndarray
    reprojection_px: float
    residual_mm: float
    depth_residual_mm: float
    corners: int
    views: int
    table_plane_deg: tuple[float, float] = (0.0, 0.0)
    skipped: tuple[str, ...] = ()
    table_plane_spread: Any = None


def _intrinsics_matrix(k: Intrinsics) -> np.ndarray:
    return np.array([[k.fx, 0.0, k.ppx], [0.0, k.fy, k.ppy], [0.0, 0.0, 1.0]])


def solve_calibration(
    views: Sequence[BoardView],
    board: Board,
    intrinsics: Intrinsics,
    *,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
) -> CalibrationResult:
    """The camera's pose from the board's corners at every table position (see the module docstring).

    Raises:
        CalibrationError: fewer than two table heights (the corners would all be coplanar), or no views.
    """
    if not views:
        raise CalibrationError("no board views to calibrate from")
    heights = {round(v.table_height_mm, 1) for v in views}
    if len(heights) < 2:
        raise CalibrationError(
            "the board must be seen at two table heights at least (and two longitudinal positions): got "
            f"{sorted(heights)} mm"
        )
    corners_b = board.corners_mm()
    obj, img, dist_mm = [], [], []
    for v in views:
        t = board_to_scanner(board, v.table_height_mm, v.table_longitudinal_mm,
                             reference_height_mm=reference_height_mm,
                             reference_longitudinal_mm=reference_longitudinal_mm)  # fmt: skip
        pts = corners_b[v.ids] @ t[:3, :3].T + t[:3, 3]
        obj.append(pts)
        img.append(v.image_px)
    obj_a, img_a = np.concatenate(obj), np.concatenate(img)
    k = _intrinsics_matrix(intrinsics)
    dist = np.zeros(5)
    ok, rvec, tvec = cv2.solvePnP(obj_a, img_a, k, dist, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise CalibrationError("the board's corners gave no camera pose (solvePnP failed)")
    rvec, tvec = cv2.solvePnPRefineLM(obj_a, img_a, k, dist, rvec, tvec)
    r, _ = cv2.Rodrigues(rvec)
    camera_from_scanner = np.eye(4)
    camera_from_scanner[:3, :3], camera_from_scanner[:3, 3] = r, tvec.ravel()
    m = np.linalg.inv(camera_from_scanner)
    proj, _ = cv2.projectPoints(obj_a, rvec, tvec, k, dist)
    err_px = np.linalg.norm(proj.reshape(-1, 2) - img_a, axis=1)
    z_cam = (obj_a @ r.T + tvec.ravel())[:, 2]
    err_mm = err_px * z_cam / intrinsics.fx
    for v in views:  # depth: the face's points against the plane the readings put the board on
        if len(v.face_points_mm):
            face = v.face_points_mm @ m[:3, :3].T + m[:3, 3]
            dist_mm.append(face[:, 2] - (v.table_height_mm - reference_height_mm))
    depth = float(np.median(np.concatenate(dist_mm))) if dist_mm else float("nan")
    return CalibrationResult(
        camera_to_scanner=m,
        reprojection_px=float(np.sqrt(np.mean(err_px**2))),
        residual_mm=float(np.sqrt(np.mean(err_mm**2))),
        depth_residual_mm=depth,
        corners=len(obj_a),
        views=len(views),
    )
