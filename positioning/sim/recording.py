"""Write genuine RealSense recordings (``.db3``) from depth and colour arrays.

The simulator's frames go through pyrealsense2's own recorder (``rs.software_device`` + ``rs.recorder``),
so a simulated recording and one made with a real camera are read by the same code
(:class:`positioning.camera.realsense.RealSenseSource`).

Convention: depth is ``(H, W)`` uint16 millimetres (RealSense ``z16`` with depth units 0.001 m, 0 = no
depth); colour is ``(H, W, 3)`` uint8 RGB (``rgb8``); the depth and colour streams share the optical
centre (identity extrinsics), so colour written with the depth intrinsics is pixel-aligned to depth.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from types import TracebackType

import numpy as np
import pyrealsense2 as rs

from positioning.errors import RecordingError
from positioning.frames import Intrinsics

__all__ = ["RecordingWriter"]

#: RealSense depth units of the recorded ``z16`` stream: 1 mm.
DEPTH_UNITS_M = 0.001

_IDENTITY_ROTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def _rs_intrinsics(intrinsics: Intrinsics) -> rs.intrinsics:
    out = rs.intrinsics()
    out.width, out.height = intrinsics.width, intrinsics.height
    out.fx, out.fy, out.ppx, out.ppy = intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy
    out.model = getattr(rs.distortion, intrinsics.model)
    out.coeffs = list(intrinsics.coeffs)
    return out


def _add_stream(
    sensor: rs.software_sensor, kind: rs.stream, fmt: rs.format, bpp: int, uid: int, fps: int, i: Intrinsics
) -> rs.video_stream_profile:
    vs = rs.video_stream()
    vs.type, vs.fmt, vs.bpp, vs.index, vs.uid, vs.fps = kind, fmt, bpp, 0, uid, fps
    vs.width, vs.height, vs.intrinsics = i.width, i.height, _rs_intrinsics(i)
    return sensor.add_video_stream(vs).as_video_stream_profile()


def _check_image(name: str, image: np.ndarray, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != dtype or image.shape != shape:
        raise ValueError(
            f"{name} must be a {np.dtype(dtype)} array of shape {shape}, got {type(image).__name__} "
            f"{getattr(image, 'dtype', None)} {getattr(image, 'shape', None)}"
        )
    return np.ascontiguousarray(image)


class RecordingWriter:
    """Write depth (and optionally colour) frames to a RealSense ``.db3`` recording.

    The recording has one depth stream (``z16``, depth units 0.001 m, on a sensor named "Stereo Module")
    and, when ``color_intrinsics`` is given, one colour stream (``rgb8``, "RGB Camera"), with identity
    extrinsics between them. The file is complete once :meth:`close` returns (or the ``with`` block ends).

    Convention: depth ``(H, W)`` uint16 z-depth in mm with ``(H, W) = depth_intrinsics.shape``; colour
    ``(H, W, 3)`` uint8 RGB with ``(H, W) = color_intrinsics.shape``; timestamps in milliseconds.

    Args:
        path: output file; must end in ``.db3`` (pyrealsense2 >= 2.58 writes ROS 2 recordings only).
            An existing file is replaced.
        depth_intrinsics: intrinsics of the depth stream.
        color_intrinsics: intrinsics of the colour stream, or None for a recording without colour. Pass
            ``depth_intrinsics`` for colour that is already aligned to depth.
        fps: nominal frame rate of both streams; also spaces the default timestamps.
        device_name: camera name recorded as ``camera_info.name``.
        serial: serial number recorded as ``camera_info.serial_number``.

    Raises:
        ValueError: the path does not end in ``.db3`` or ``fps`` is not positive.
        RecordingError: pyrealsense2 cannot create the file.

    Example:
        >>> with RecordingWriter("scene.db3", depth_intrinsics=k, color_intrinsics=k) as w:
        ...     w.write(depth_mm, color_rgb)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        depth_intrinsics: Intrinsics,
        color_intrinsics: Intrinsics | None = None,
        fps: int = 30,
        device_name: str = "Intel RealSense D435 (simulated)",
        serial: str = "SIM0000001",
    ) -> None:
        path = Path(path)
        if path.suffix.lower() != ".db3":
            raise ValueError(
                f"RealSense recordings can only be written as .db3 (pyrealsense2 >= 2.58 writes ROS 2 "
                f"recordings; .bag is read-only), got {path.name!r}"
            )
        if int(fps) != fps or fps <= 0:
            raise ValueError(f"fps must be a positive integer, got {fps}")
        self.path = path
        self.depth_intrinsics = depth_intrinsics
        self.color_intrinsics = color_intrinsics
        self.fps = int(fps)
        self.frame_count = 0
        self._last_timestamp_ms = -math.inf

        path.unlink(missing_ok=True)
        self._device = rs.software_device()
        self._device.register_info(rs.camera_info.name, device_name)
        self._device.register_info(rs.camera_info.serial_number, serial)
        depth_sensor = self._device.add_sensor("Stereo Module")
        depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS_M)
        depth_profile = _add_stream(
            depth_sensor, rs.stream.depth, rs.format.z16, 2, 0, self.fps, depth_intrinsics
        )
        self._streams = [(depth_sensor, depth_profile)]
        if color_intrinsics is not None:
            color_sensor = self._device.add_sensor("RGB Camera")
            color_profile = _add_stream(
                color_sensor, rs.stream.color, rs.format.rgb8, 3, 1, self.fps, color_intrinsics
            )
            identity = rs.extrinsics()
            identity.rotation, identity.translation = _IDENTITY_ROTATION, [0.0, 0.0, 0.0]
            depth_profile.register_extrinsics_to(color_profile, identity)
            self._streams.append((color_sensor, color_profile))
        try:
            self._recorder = rs.recorder(str(path), self._device, True)
        except RuntimeError as e:
            self._release()
            raise RecordingError(f"cannot create recording {path}: {e}") from e
        for sensor, profile in self._streams:
            sensor.open(profile)
            sensor.start(lambda frame: None)

    def write(
        self, depth_mm: np.ndarray, color_rgb: np.ndarray | None = None, timestamp_ms: float | None = None
    ) -> None:
        """Append one frame (depth and, if the recording has colour, colour with the same timestamp).

        Convention: see the class docstring.

        Args:
            depth_mm: ``(H, W)`` uint16 depth in millimetres, 0 = no depth.
            color_rgb: ``(H, W, 3)`` uint8 RGB; required exactly when the recording has a colour stream.
            timestamp_ms: frame timestamp in ms; must increase from frame to frame. Default:
                ``frame_count * 1000 / fps``.

        Raises:
            ValueError: wrong dtype or shape, colour given or missing against the recording's streams,
                a timestamp that is not finite or does not increase, or the writer is closed.
        """
        if not self._streams:
            raise ValueError(f"recording {self.path} is closed")
        images = [_check_image("depth_mm", depth_mm, np.uint16, self.depth_intrinsics.shape)]
        if self.color_intrinsics is None:
            if color_rgb is not None:
                raise ValueError(
                    "color_rgb given, but this recording has no colour stream (color_intrinsics)"
                )
        elif color_rgb is None:
            raise ValueError("this recording has a colour stream: color_rgb is required")
        else:
            images.append(_check_image("color_rgb", color_rgb, np.uint8, (*self.color_intrinsics.shape, 3)))
        if timestamp_ms is None:
            timestamp_ms = self.frame_count * 1000.0 / self.fps
        if not math.isfinite(timestamp_ms) or timestamp_ms <= self._last_timestamp_ms:
            raise ValueError(
                f"timestamp_ms must be finite and increasing: expected > {self._last_timestamp_ms}, "
                f"got {timestamp_ms}"
            )
        for (sensor, profile), image in zip(self._streams, images, strict=True):
            frame = rs.software_video_frame()
            frame.pixels = image
            frame.bpp = image.itemsize * (image.shape[2] if image.ndim == 3 else 1)
            frame.stride = image.shape[1] * frame.bpp
            frame.timestamp = float(timestamp_ms)
            frame.domain = rs.timestamp_domain.hardware_clock
            frame.frame_number = self.frame_count
            frame.profile = profile
            if profile.stream_type() == rs.stream.depth:
                frame.depth_units = DEPTH_UNITS_M
            sensor.on_video_frame(frame)
        self._last_timestamp_ms = float(timestamp_ms)
        self.frame_count += 1

    def close(self) -> None:
        """Stop the streams and release the recorder, which finishes the file. Safe to call twice."""
        for sensor, _ in self._streams:
            sensor.stop()
            sensor.close()
        self._release()

    def _release(self) -> None:
        # The recorder writes the file's end when the last reference to it (and its device) goes away.
        self._streams = []
        self._recorder = self._device = None
        gc.collect()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
