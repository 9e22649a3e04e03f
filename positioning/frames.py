"""The shared data types: camera intrinsics, RGB-D frames and the camera-to-scanner calibration.

Convention (used by every module of the package):
    * Units are millimetres. Depth images are ``uint16`` millimetres (RealSense ``z16`` with depth units
      0.001 m); a value of 0 means "no depth" (a hole).
    * Depth is the z coordinate in the camera frame (distance along the optical axis), not the ray length.
    * Camera frame: the RealSense depth optical frame, x right, y down, z forward (into the scene).
    * Pixel origin: the centre of the top-left pixel is (0, 0); ``u`` grows to the right (columns), ``v``
      down (rows). Images are ``(H, W)`` / ``(H, W, 3)`` row-major arrays.
    * Scanner frame: IEC 61217 fixed system, origin at the gantry isocenter, +x lateral (to the right of an
      observer at the foot of the table facing the gantry), +y along the table into the gantry, +z up.
    * A transform is named by the frames it maps between: ``scanner_from_camera`` maps camera-frame points
      to scanner-frame points, ``p_scanner = R @ p_camera + t``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from positioning.errors import CalibrationError

__all__ = ["Intrinsics", "RGBDFrame", "Calibration", "transform_points"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Intrinsics:
    """Pinhole intrinsics of one stream, as RealSense reports them.

    Convention: pixel centres at integer coordinates, ``u = fx * x / z + ppx``, ``v = fy * y / z + ppy``
    with (x, y, z) in the camera optical frame. Distortion coefficients are carried but the package treats
    the depth stream as undistorted (RealSense depth streams report zero or negligible distortion).

    Attributes:
        width: image width in pixels (columns).
        height: image height in pixels (rows).
        fx: focal length along u, in pixels.
        fy: focal length along v, in pixels.
        ppx: principal point u, in pixels.
        ppy: principal point v, in pixels.
        model: RealSense distortion model name (``"none"``, ``"brown_conrady"``, ...).
        coeffs: five distortion coefficients.
    """

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    model: str = "none"
    coeffs: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Intrinsics size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"Focal lengths must be positive, got fx={self.fx}, fy={self.fy}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the numpy shape of an image of this stream."""
        return (self.height, self.width)

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K."""
        return np.array(
            [[self.fx, 0.0, self.ppx], [0.0, self.fy, self.ppy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view in degrees."""
        h = np.degrees(2 * np.arctan2(self.width / 2, self.fx))
        v = np.degrees(2 * np.arctan2(self.height / 2, self.fy))
        return float(h), float(v)

    def project(self, points_camera_mm: np.ndarray) -> np.ndarray:
        """Pixels ``(u, v)`` of camera-frame points: ``u = fx x / z + ppx``, ``v = fy y / z + ppy``.

        The one projection of the project (see also :meth:`deproject`). Distortion is not applied (the
        streams this project reads are rectified).

        Args:
            points_camera_mm: ``(N, 3)`` points in the camera optical frame, mm.

        Returns:
            ``(N, 2)`` float64 ``(u, v)``; NaN for a point on or behind the camera's plane (``z <= 0``),
            which no pixel sees.

        Raises:
            ValueError: ``points_camera_mm`` is not ``(N, 3)``.

        Example:
            >>> k = Intrinsics(width=4, height=2, fx=2.0, fy=4.0, ppx=1.0, ppy=0.5)
            >>> k.project(np.array([[1000.0, -125.0, 1000.0], [0.0, 0.0, -5.0]])).tolist()
            [[3.0, 0.0], [nan, nan]]
        """
        c = np.asarray(points_camera_mm, np.float64)
        if c.ndim != 2 or c.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {c.shape}")
        z = np.where(c[:, 2] > 1e-6, c[:, 2], np.nan)
        return np.stack([self.fx * c[:, 0] / z + self.ppx, self.fy * c[:, 1] / z + self.ppy], axis=1)

    def deproject(self, uv_px: np.ndarray, depth_z_mm: np.ndarray) -> np.ndarray:
        """Camera-frame points of pixels ``(u, v)`` at z-depths: ``x = (u - ppx) z / fx``,
        ``y = (v - ppy) z / fy`` (the inverse of :meth:`project`).

        Args:
            uv_px: ``(N, 2)`` pixel positions.
            depth_z_mm: ``(N,)`` z-depths (along the optical axis, not ray length), mm; NaN gives NaN.

        Returns:
            ``(N, 3)`` float64 camera-frame points, mm.

        Raises:
            ValueError: mismatched or malformed shapes.
        """
        uv = np.asarray(uv_px, np.float64)
        z = np.asarray(depth_z_mm, np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv_px must be (N, 2), got {uv.shape}")
        if z.shape != (len(uv),):
            raise ValueError(f"depth_z_mm must be ({len(uv)},), got {z.shape}")
        return np.stack([(uv[:, 0] - self.ppx) / self.fx * z, (uv[:, 1] - self.ppy) / self.fy * z, z], axis=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Intrinsics:
        d = dict(d)
        if "coeffs" in d:
            d["coeffs"] = tuple(float(c) for c in d["coeffs"])
        return cls(**d)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RGBDFrame:
    """One depth frame with its (optional) colour image, as read from a camera, recording or simulator.

    Convention: see the module docstring. When ``color_aligned`` is True the colour image has the depth
    stream's geometry (same intrinsics, same pixel grid); otherwise it has ``color_intrinsics``.

    Attributes:
        depth_mm: ``(H, W)`` uint16, z-depth in millimetres, 0 = invalid.
        intrinsics: intrinsics of the depth stream.
        color_rgb: ``(H, W, 3)`` uint8 RGB image or None when the source has no colour stream.
        color_intrinsics: intrinsics of the colour image as delivered (equal to ``intrinsics`` if aligned).
        color_aligned: whether ``color_rgb`` is pixel-aligned to ``depth_mm``.
        frame_number: the depth frame's number as the source reports it.
        timestamp_ms: the depth frame's device/recording timestamp in milliseconds.
        received_ns: ``time.monotonic_ns()`` when this process received the frame.
        device_name: camera or recording name (e.g. ``"Intel RealSense D435"``).
        serial: device serial number, or "" when unknown.
    """

    depth_mm: np.ndarray
    intrinsics: Intrinsics
    color_rgb: np.ndarray | None = None
    color_intrinsics: Intrinsics | None = None
    color_aligned: bool = False
    frame_number: int = 0
    timestamp_ms: float = 0.0
    received_ns: int = 0
    device_name: str = ""
    serial: str = ""

    def __post_init__(self) -> None:
        d = self.depth_mm
        if not isinstance(d, np.ndarray) or d.dtype != np.uint16 or d.ndim != 2:
            raise ValueError(
                f"depth_mm must be a (H, W) uint16 array, got {type(d).__name__} "
                f"{getattr(d, 'dtype', None)} {getattr(d, 'shape', None)}"
            )
        if d.shape != self.intrinsics.shape:
            raise ValueError(f"depth_mm shape {d.shape} != intrinsics (H, W) {self.intrinsics.shape}")
        if self.color_rgb is not None:
            c = self.color_rgb
            if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
                raise ValueError(f"color_rgb must be (H, W, 3) uint8, got {c.dtype} {c.shape}")
            if self.color_aligned and c.shape[:2] != d.shape:
                raise ValueError(f"aligned color shape {c.shape[:2]} != depth shape {d.shape}")

    @property
    def valid_fraction(self) -> float:
        """Fraction of depth pixels with a valid (non-zero) value."""
        return float(np.count_nonzero(self.depth_mm)) / self.depth_mm.size


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform to points.

    Convention: ``points`` is ``(..., 3)``; returns ``(..., 3)`` = ``R @ p + t`` in the target frame.

    Args:
        transform: ``(4, 4)`` matrix, e.g. ``scanner_from_camera``.
        points: ``(..., 3)`` points in the source frame.

    Returns:
        ``(..., 3)`` float64 points in the target frame.
    """
    transform = np.asarray(transform, dtype=np.float64)
    if transform.shape != (4, 4):
        raise ValueError(f"transform must be (4, 4), got {transform.shape}")
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"points must be (..., 3), got {points.shape}")
    return points @ transform[:3, :3].T + transform[:3, 3]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Calibration:
    """Camera-to-scanner calibration of one room.

    The YAML file has ``camera_to_scanner`` (4x4 row-major, maps camera-frame mm to scanner-frame mm),
    ``method``, ``created`` (RFC 3339) and ``residual_mm``.

    Attributes:
        scanner_from_camera: ``(4, 4)`` float64 rigid transform, camera frame (mm) -> scanner frame (mm).
        method: how the calibration was obtained (``"simulated"``, ``"charuco"``, ...).
        created: RFC 3339 timestamp.
        residual_mm: RMS residual of the calibration fit (0 for a simulated ground-truth calibration).
    """

    scanner_from_camera: np.ndarray
    method: str = "unknown"
    created: str = ""
    residual_mm: float = 0.0

    def __post_init__(self) -> None:
        m = np.asarray(self.scanner_from_camera, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise CalibrationError(f"camera_to_scanner must be a finite 4x4 matrix, got shape {m.shape}")
        if not np.allclose(m[3], [0, 0, 0, 1]):
            raise CalibrationError(f"camera_to_scanner last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
            raise CalibrationError("camera_to_scanner rotation is not proper (orthonormal, det +1)")
        m.setflags(write=False)
        object.__setattr__(self, "scanner_from_camera", m)

    @property
    def camera_from_scanner(self) -> np.ndarray:
        """The inverse transform, scanner frame (mm) -> camera frame (mm)."""
        r = self.scanner_from_camera[:3, :3]
        t = self.scanner_from_camera[:3, 3]
        inv = np.eye(4)
        inv[:3, :3] = r.T
        inv[:3, 3] = -r.T @ t
        return inv

    @property
    def camera_position_mm(self) -> np.ndarray:
        """Camera optical centre in the scanner frame (mm)."""
        return self.scanner_from_camera[:3, 3].copy()

    def to_scanner(self, points_camera_mm: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` camera-frame points (mm) to the scanner frame (mm)."""
        return transform_points(self.scanner_from_camera, points_camera_mm)

    def to_camera(self, points_scanner_mm: np.ndarray) -> np.ndarray:
        """Map ``(..., 3)`` scanner-frame points (mm) to the camera frame (mm)."""
        return transform_points(self.camera_from_scanner, points_scanner_mm)

    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "camera_to_scanner": [[float(x) for x in row] for row in self.scanner_from_camera],
            "method": self.method,
            "created": self.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "residual_mm": float(self.residual_mm),
        }

    def save(self, path: str | Path) -> None:
        """Write the calibration YAML file."""
        Path(path).write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration YAML file.

        Raises:
            CalibrationError: the file is missing, not YAML, or lacks a valid ``camera_to_scanner``.
        """
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise CalibrationError(f"calibration file {path} is not valid YAML: {e}") from e
        if not isinstance(data, dict) or "camera_to_scanner" not in data:
            raise CalibrationError(f"calibration file {path} has no 'camera_to_scanner' matrix")
        try:
            m = np.array(data["camera_to_scanner"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise CalibrationError(f"calibration file {path}: camera_to_scanner is not numeric: {e}") from e
        if m.shape != (4, 4):
            raise CalibrationError(f"calibration file {path}: camera_to_scanner must be 4x4, got {m.shape}")
        return cls(
            scanner_from_camera=m,
            method=str(data.get("method", "unknown")),
            created=str(data.get("created", "")),
            residual_mm=float(data.get("residual_mm", 0.0)),
        )
