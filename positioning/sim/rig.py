"""The simulated camera rig: a RealSense on the ceiling above the table.

Convention: the camera frame is the RealSense depth optical frame (x right, y down, z forward, mm); the
rig's pose is ``scanner_from_camera`` (camera frame -> scanner frame, mm). Intrinsics use RealSense's pixel
convention (pixel centres at integer coordinates, ``u = fx x / z + ppx``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from positioning.frames import Calibration, Intrinsics

__all__ = ["CAMERA_MODELS", "CameraRig", "look_at", "model_intrinsics"]

#: Depth field of view (horizontal, vertical, degrees) and a small principal-point offset (px at 848x480)
#: of each supported camera, from Intel's datasheets (D435: 87 x 58 deg; D455: 87 x 58 deg; D415: 65 x 40
#: deg, rolling-shutter imagers with a 55 mm baseline). Real units
#: report square pixels and a principal point a few pixels off the image centre; we keep both.
CAMERA_MODELS: dict[str, dict[str, float]] = {
    "D435": {"hfov_deg": 87.0, "vfov_deg": 58.0, "ppx_offset": 2.7, "ppy_offset": -1.6, "baseline_mm": 50.0},
    "D455": {"hfov_deg": 87.0, "vfov_deg": 58.0, "ppx_offset": -1.9, "ppy_offset": 2.2, "baseline_mm": 95.0},
    "D415": {"hfov_deg": 65.0, "vfov_deg": 40.0, "ppx_offset": 1.4, "ppy_offset": 0.9, "baseline_mm": 55.0},
}

RESOLUTIONS: tuple[tuple[int, int], ...] = ((848, 480), (1280, 720))


def model_intrinsics(model: str, width: int, height: int) -> Intrinsics:
    """Depth-stream intrinsics of a RealSense model at a resolution.

    Args:
        model: ``"D435"``, ``"D455"`` or ``"D415"``.
        width: image width (848 or 1280).
        height: image height (480 or 720).

    Returns:
        Square-pixel intrinsics with the datasheet horizontal FOV and a slightly off-centre principal point.
    """
    if model not in CAMERA_MODELS:
        raise ValueError(f"unknown camera model {model!r}; expected one of {sorted(CAMERA_MODELS)}")
    if (width, height) not in RESOLUTIONS:
        raise ValueError(f"unsupported resolution {width}x{height}; expected one of {RESOLUTIONS}")
    spec = CAMERA_MODELS[model]
    f = (width / 2) / math.tan(math.radians(spec["hfov_deg"]) / 2)
    scale = width / 848
    return Intrinsics(
        width=width,
        height=height,
        fx=round(f, 3),
        fy=round(f, 3),
        ppx=round(width / 2 - 0.5 + spec["ppx_offset"] * scale, 3),
        ppy=round(height / 2 - 0.5 + spec["ppy_offset"] * scale, 3),
        model="brown_conrady",
    )


def look_at(position_mm: np.ndarray, target_mm: np.ndarray, right_hint: np.ndarray) -> np.ndarray:
    """``scanner_from_camera`` of a camera at ``position_mm`` looking at ``target_mm``.

    Convention: camera z (optical axis) points from the camera to the target; camera x (image right) is
    ``right_hint`` made orthogonal to z; camera y = z x x (image down). All scanner frame, mm.

    Returns:
        ``(4, 4)`` rigid transform camera -> scanner.
    """
    p = np.asarray(position_mm, float)
    z = np.asarray(target_mm, float) - p
    z /= np.linalg.norm(z)
    x = np.asarray(right_hint, float)
    x = x - (x @ z) * z
    nx = np.linalg.norm(x)
    if nx < 1e-6:
        raise ValueError("right_hint is parallel to the viewing direction")
    x /= nx
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, p
    return m


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraRig:
    """A ceiling-mounted RealSense.

    Attributes:
        model: ``"D435"`` or ``"D455"``.
        width, height: depth (and aligned colour) resolution.
        position_mm: camera optical centre, scanner frame.
        look_at_mm: the point the optical axis passes through, scanner frame.
        right_hint: scanner-frame direction that image-right should follow (default: toward the gantry).
        roll_deg: rotation of the camera about its optical axis after ``look_at`` (a mount that is not
            square to the table; positive turns image-right toward image-down).
        fps: frame rate written to recordings.
    """

    model: str = "D435"
    width: int = 848
    height: int = 480
    position_mm: tuple[float, float, float] = (0.0, -1300.0, 1700.0)
    look_at_mm: tuple[float, float, float] = (0.0, -1300.0, -150.0)
    right_hint: tuple[float, float, float] = (0.0, 1.0, 0.0)
    roll_deg: float = 0.0
    fps: int = 30

    @property
    def intrinsics(self) -> Intrinsics:
        return model_intrinsics(self.model, self.width, self.height)

    @property
    def scanner_from_camera(self) -> np.ndarray:
        pose = look_at(np.array(self.position_mm), np.array(self.look_at_mm), np.array(self.right_hint))
        if self.roll_deg:
            a = math.radians(self.roll_deg)
            c, s = math.cos(a), math.sin(a)
            x, y = pose[:3, 0].copy(), pose[:3, 1].copy()
            pose[:3, 0], pose[:3, 1] = c * x + s * y, -s * x + c * y
        return pose

    @property
    def tilt_deg(self) -> float:
        """Angle between the optical axis and straight down."""
        z = self.scanner_from_camera[:3, 2]
        return float(np.degrees(np.arccos(np.clip(-z[2], -1, 1))))

    @property
    def baseline_mm(self) -> float:
        return CAMERA_MODELS[self.model]["baseline_mm"]

    def calibration(self) -> Calibration:
        """The rig's true calibration (what a perfect calibration procedure would find)."""
        return Calibration(scanner_from_camera=self.scanner_from_camera, method="simulated", residual_mm=0.0)
