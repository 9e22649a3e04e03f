"""Draw a plan on the camera's colour image: anatomical landmarks, the isocenter and the scan range.

The scan range is drawn as two lines across the table at the range's ends (``y = start_mm`` and
``y = end_mm``, from the table's left to its right edge at table-top height) with the scanned band
tinted between them; the isocenter as a cross at ``(x, y_centre, z)``; landmarks as dots with their
names. Everything is projected with the calibration and the depth intrinsics (pinhole, no distortion).

Convention: scanner frame (IEC 61217), mm, mapped to the camera frame with
``Calibration.camera_from_scanner``; pixels ``u = fx x / z + ppx``, ``v = fy y / z + ppy`` (pixel centres
at integer coordinates) on the colour image aligned to depth, RGB uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from positioning.frames import Calibration, Intrinsics
from positioning.perception.pointcloud import project_points
from positioning.planning.anatomy import PLANNING_LANDMARKS
from positioning.planning.plan import Plan

__all__ = ["project_points", "canvas", "draw_plan", "save_overlay"]

_RANGE = (255, 200, 0)
_ISO = (255, 40, 40)
_LANDMARK = (0, 230, 255)
_TEXT = (255, 255, 255)


def _pt(uv: np.ndarray) -> tuple[int, int]:
    return (round(float(uv[0])), round(float(uv[1])))


def _ok(uv: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(uv)) and np.all(np.abs(uv) < 1e5))


def canvas(color_rgb: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """A copy of the colour image to draw on.

    Raises:
        ValueError: the image is not ``(H, W, 3)`` uint8 of the intrinsics' size.
    """
    img = np.asarray(color_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"color_rgb must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    if img.shape[:2] != intrinsics.shape:
        raise ValueError(f"image is {img.shape[:2]}, intrinsics are {intrinsics.shape}")
    return img.copy()


def draw_plan(
    color_rgb: np.ndarray, plan: Plan, calibration: Calibration, intrinsics: Intrinsics
) -> np.ndarray:
    """The colour image with the plan drawn on it (a copy; the input is not changed).

    Args:
        color_rgb: ``(H, W, 3)`` uint8 colour image aligned to the depth image.
        plan: the plan.
        calibration: camera-to-scanner calibration.
        intrinsics: depth-stream intrinsics (the colour image's, as it is aligned).

    Returns:
        The annotated ``(H, W, 3)`` uint8 image.

    Raises:
        ValueError: the image is not ``(H, W, 3)`` uint8 of the intrinsics' size.
    """
    img = canvas(color_rgb, intrinsics)
    rng, top = plan.scan_range, plan.table_top_z_mm
    if rng is not None and top is not None:
        x0, x1 = plan.table_x_range_mm or (-250.0, 250.0)
        corners = np.array(
            [[x0, rng.start_mm, top], [x1, rng.start_mm, top], [x1, rng.end_mm, top], [x0, rng.end_mm, top]]
        )
        uv = project_points(corners, calibration, intrinsics)
        if all(_ok(p) for p in uv):
            band = img.copy()
            cv2.fillPoly(band, [np.round(uv).astype(np.int32)], _RANGE)
            img = cv2.addWeighted(band, 0.18, img, 0.82, 0)
            for (a, b), label in (((0, 1), f"start {rng.start_mm:.0f}"), ((3, 2), f"end {rng.end_mm:.0f}")):
                cv2.line(img, _pt(uv[a]), _pt(uv[b]), _RANGE, 2, cv2.LINE_AA)
                cv2.putText(img, label, _pt(uv[b]), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _RANGE, 1, cv2.LINE_AA)
            first = 0 if rng.first_slice_mm == rng.start_mm else 3
            cv2.circle(img, _pt((uv[first] + uv[first + 1 if first == 0 else 2]) / 2), 5, _RANGE, -1)
    names = [n for n in PLANNING_LANDMARKS if n in plan.landmarks_mm]
    if names:
        uv = project_points(np.array([plan.landmarks_mm[n] for n in names]), calibration, intrinsics)
        for n, p in zip(names, uv, strict=True):
            if _ok(p):
                cv2.circle(img, _pt(p), 4, _LANDMARK, -1, cv2.LINE_AA)
                cv2.putText(img, n, _pt(p + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, _LANDMARK, 1, cv2.LINE_AA)
    iso = plan.isocenter
    if iso is not None:
        p = project_points(np.array([[iso.x_mm, iso.y_center_mm, iso.z_mm]]), calibration, intrinsics)[0]
        if _ok(p):
            cv2.drawMarker(img, _pt(p), _ISO, cv2.MARKER_CROSS, 18, 2, cv2.LINE_AA)
            cv2.putText(
                img,
                f"iso z {iso.z_mm:+.0f}",
                _pt(p + 8),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                _ISO,
                1,
                cv2.LINE_AA,
            )
    worst = [c for c in plan.checks if str(c.severity) == "error"] or list(plan.checks)
    status = f"{plan.protocol}: " + ("ready" if plan.ok else (worst[0].code if worst else "no plan"))
    cv2.putText(img, status, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, status, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, _TEXT, 1, cv2.LINE_AA)
    return img


def save_overlay(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG (OpenCV writes BGR, so the channels are swapped here).

    Raises:
        OSError: the file could not be written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {p}")
    return p
