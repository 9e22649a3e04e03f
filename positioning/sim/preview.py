"""A picture of a simulated (or recorded) frame that a person can look at: colour, depth and labels.

Convention: images are RGB uint8 ``(H, W, 3)``; truth points are scanner-frame mm and are projected with
the frame's intrinsics and calibration (pixel centres at integer coordinates).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from positioning.frames import Calibration, RGBDFrame

__all__ = ["colorize_depth", "project_points", "preview_image", "save_png"]

_LABEL_COLORS = np.array(
    [[0, 0, 0], [110, 110, 105], [45, 45, 50], [40, 60, 100], [30, 45, 75], [225, 225, 220], [240, 150, 90],
     [90, 200, 90]],
    dtype=np.uint8,
)  # fmt: skip


def colorize_depth(depth_mm: np.ndarray) -> np.ndarray:
    """Turbo-coloured depth by rank (histogram-equalised: near = red, far = blue), invalid pixels black."""
    valid = depth_mm > 0
    img = np.zeros((*depth_mm.shape, 3), np.uint8)
    if not valid.any():
        return img
    levels = np.sort(depth_mm[valid][:: max(1, int(valid.sum()) // 20000)])
    rank = np.searchsorted(levels, depth_mm, side="right") / max(len(levels), 1)
    turbo = cv2.applyColorMap(((1.0 - np.clip(rank, 0, 1)) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[valid] = turbo[..., ::-1][valid]
    return img


def project_points(points_scanner_mm: np.ndarray, frame: RGBDFrame, calibration: Calibration) -> np.ndarray:
    """Project ``(N, 3)`` scanner-frame points to ``(N, 2)`` pixel ``(u, v)`` of the depth image (NaN
    behind the camera: :meth:`~positioning.frames.Intrinsics.project`)."""
    cam = calibration.to_camera(np.asarray(points_scanner_mm, float).reshape(-1, 3))
    return frame.intrinsics.project(cam)


def preview_image(
    frame: RGBDFrame,
    *,
    calibration: Calibration | None = None,
    points_mm: dict[str, np.ndarray] | None = None,
    label: np.ndarray | None = None,
    title: str = "",
) -> np.ndarray:
    """Colour | depth (| labels) side by side, with optional named points drawn on the colour image."""
    h, w = frame.depth_mm.shape
    color = frame.color_rgb.copy() if frame.color_rgb is not None else np.zeros((h, w, 3), np.uint8)
    if color.shape[:2] != (h, w):
        color = cv2.resize(color, (w, h))
    if points_mm and calibration is not None:
        names = list(points_mm)
        uv = project_points(np.array([points_mm[n] for n in names]), frame, calibration)
        for name, (u, v) in zip(names, uv, strict=True):
            if np.isfinite(u) and np.isfinite(v):
                c = (
                    (255, 60, 60)
                    if name.startswith("left")
                    else (60, 160, 255)
                    if name.startswith("right")
                    else (255, 230, 0)
                )
                cv2.circle(color, (round(u), round(v)), 4, c, -1, cv2.LINE_AA)
    panels = [color, colorize_depth(frame.depth_mm)]
    if label is not None:
        panels.append(_LABEL_COLORS[np.clip(label, 0, len(_LABEL_COLORS) - 1)])
    out = np.concatenate(panels, axis=1)
    if title:
        cv2.putText(out, title, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), rgb[..., ::-1]):
        raise OSError(f"could not write {path}")
    return path
