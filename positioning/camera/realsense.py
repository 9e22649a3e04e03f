"""RGB-D frames from an Intel RealSense camera or recording, through one ``rs.pipeline`` code path.

A live camera and a recording (``.db3``, ROS 2, as pyrealsense2 >= 2.58 records; or legacy ``.bag``)
differ only in the ``rs.config`` the pipeline starts with. Recordings play back with
``set_real_time(False)``, so every recorded frame is read exactly once. By default they are delivered as
fast as they are read; with ``real_time=True`` each is delivered when its timestamp falls due (the rate it
was recorded at, as a live camera delivers them) and a reader that falls behind misses frames, as it would
from a live camera. (pyrealsense2's own real-time playback paces by the time the file was written, not
by the frames' timestamps: a simulator recording written at 3 frames/s would play at 3 frames/s.) A
looping recording is started again on the same pipeline when its playback stops, rather than through
pyrealsense2's ``repeat_playback``, which stalled at the loop now and then and delivered the last frame in
place of the first pass's others (200 opens of a 4-frame file: none of either with ours, 1 stall and 3
such passes in 40 with it).

Convention: frames are :class:`positioning.frames.RGBDFrame`: depth ``(H, W)`` uint16 z-depth in mm
(scaled from the sensor's depth units), in the depth optical frame (x right, y down, z forward), pixel
origin at the centre of the top-left pixel; colour ``(H, W, 3)`` uint8 RGB, mapped onto the depth grid.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyrealsense2 as rs

from positioning.camera.source import ContinuousClock, FrameReader
from positioning.errors import (
    CorruptRecordingError,
    MissingStreamError,
    RecordingError,
    RecordingNotFoundError,
)
from positioning.frames import Intrinsics, RGBDFrame

__all__ = ["RealSenseSource", "intrinsics_from_rs"]

_log = logging.getLogger(__name__)

#: Longest wait for the next frame before a source counts as stalled.
DEFAULT_TIMEOUT_S = 5.0
#: Poll period while waiting for frames; end of a recording is noticed within about this long.
_END_GRACE_S = 0.3
_POLL_MS = 50
#: Tolerance for "these two streams share intrinsics and optical centre" (pixels, unitless, metres).
_SAME_GEOMETRY_ATOL = 1e-6

# Colour formats turned into RGB here; the YUV ones go through librealsense.
#: OpenCV's conversion of each colour format to RGB (None: already RGB, copied). OpenCV, not numpy's
#: channel indexing: that took 7.6 ms a frame at 848x480 against 0.2 ms (a copy: 0.1 ms).
_CHANNELS_TO_RGB = {
    rs.format.rgb8: None,
    rs.format.bgr8: cv2.COLOR_BGR2RGB,
    rs.format.rgba8: cv2.COLOR_RGBA2RGB,
    rs.format.bgra8: cv2.COLOR_BGRA2RGB,
}
_YUV_CONVERTERS = {
    rs.format.yuyv: rs.yuy2_converter,
    rs.format.uyvy: rs.uyvy_converter,
    rs.format.m420: rs.m420_converter,
    rs.format.nv12: rs.nv12_converter,
}


def intrinsics_from_rs(intrinsics: rs.intrinsics) -> Intrinsics:
    """Convert pyrealsense2 intrinsics to :class:`positioning.frames.Intrinsics`.

    Convention: pixel units, RealSense pixel origin (centre of the top-left pixel), unchanged values.
    """
    return Intrinsics(
        width=intrinsics.width,
        height=intrinsics.height,
        fx=intrinsics.fx,
        fy=intrinsics.fy,
        ppx=intrinsics.ppx,
        ppy=intrinsics.ppy,
        model=intrinsics.model.name,
        coeffs=tuple(float(c) for c in intrinsics.coeffs),
    )


def _same_geometry(depth: rs.video_stream_profile, color: rs.video_stream_profile) -> bool:
    """Whether colour is already on the depth pixel grid: same intrinsics, identity extrinsics."""
    a, b = depth.get_intrinsics(), color.get_intrinsics()
    try:
        e = depth.get_extrinsics_to(color)
    except RuntimeError:
        return False
    actual = [a.width, a.height, a.fx, a.fy, a.ppx, a.ppy, *e.rotation, *e.translation]
    aligned = [b.width, b.height, b.fx, b.fy, b.ppx, b.ppy, *np.eye(3).ravel(), 0.0, 0.0, 0.0]
    return bool(np.allclose(actual, aligned, rtol=0.0, atol=_SAME_GEOMETRY_ATOL))


def _device_info(device: rs.device, info: rs.camera_info) -> str:
    return device.get_info(info) if device.supports(info) else ""


class RealSenseSource(FrameReader):
    """Frames from a RealSense camera or recording; a context manager and an iterator of RGBDFrames.

    Build one with :meth:`from_file` or :meth:`live`. Colour is delivered pixel-aligned to depth: passed
    through when the colour stream already has the depth stream's intrinsics and optical centre,
    otherwise mapped onto the depth grid with ``rs.align`` (which blanks colour where depth is 0).

    Convention: see the module docstring; ``timestamp_ms`` is the depth frame's timestamp as the device
    or recording reports it, ``received_ns`` is ``time.monotonic_ns()`` on arrival.

    Example:
        >>> with RealSenseSource.from_file("scene.db3") as source:
        ...     for frame in source:
        ...         print(frame.frame_number, frame.valid_fraction)
    """

    def __init__(
        self,
        config: rs.config,
        *,
        label: str,
        error: type[RecordingError],
        timeout_s: float,
        repeat: bool = False,
        real_time: bool = False,
    ) -> None:
        """Start ``config`` on a fresh pipeline; use :meth:`from_file` or :meth:`live` instead.

        Args:
            config: what to stream, from a file or a device.
            label: names the source in error messages.
            error: raised (chained) when pyrealsense2 fails to open or read the source.
            timeout_s: longest wait for a frame.
            repeat: whether a recording loops (its end is then never reported; timestamps then continue
                across loops, see :class:`~positioning.camera.source.ContinuousClock`).
            real_time: a recording's frames are delivered when their timestamps fall due (frames are
                skipped when the reader is slower), instead of every frame as fast as it is read.
        """
        self._config = config
        self._label = label
        self._error = error
        self._timeout_s = float(timeout_s)
        self._repeat = repeat
        self._real_time = real_time
        self._clock = ContinuousClock() if repeat else None
        self._delivered = 0
        # looping (repeat): frames delivered in this pass, and in a whole pass once one has ended
        self._pass_delivered = 0
        self._frames_per_pass: int | None = None
        self._running = False
        # A private context per source: a recording resolved here is the very device start() uses, so
        # real-time playback can be switched off before the first frame is read.
        self._pipeline = rs.pipeline(rs.context())
        try:
            resolved = config.resolve(rs.pipeline_wrapper(self._pipeline))
        except RuntimeError as e:
            raise self._error(f"cannot open {label}: {e}") from e
        device = resolved.get_device()
        self._playback = device.as_playback() if device.is_playback() else None
        if self._playback is not None:
            self._playback.set_real_time(False)
        streams = {s.stream_type(): s.as_video_stream_profile() for s in resolved.get_streams()}
        if not streams:
            raise CorruptRecordingError(f"{label} contains no streams (no frames were recorded)")
        if rs.stream.depth not in streams:
            found = ", ".join(sorted(s.name for s in streams)) or "none"
            raise MissingStreamError(f"{label} has no depth stream (streams: {found})")
        depth = streams[rs.stream.depth]
        color = streams.get(rs.stream.color)
        #: frames real-time playback passed over because their time had passed while the reader was busy
        self.frames_skipped = 0
        # real-time playback: its thread, the newest due frame not yet read, and why it ended (StopIteration
        # or the error to raise)
        self._pacer: threading.Thread | None = None
        self._closing = threading.Event()
        self._slot_cond = threading.Condition()
        self._slot: RGBDFrame | None = None
        self._pace_end: BaseException | None = None
        self.depth_intrinsics: Intrinsics = intrinsics_from_rs(depth.get_intrinsics())
        self.device_name: str = _device_info(device, rs.camera_info.name)
        self.serial: str = _device_info(device, rs.camera_info.serial_number)
        self._converter = self._align = None
        self.color_intrinsics: Intrinsics | None = None
        if color is not None:
            fmt = color.format()
            if fmt not in _CHANNELS_TO_RGB and fmt not in _YUV_CONVERTERS:
                supported = ", ".join(f.name for f in [*_CHANNELS_TO_RGB, *_YUV_CONVERTERS])
                raise MissingStreamError(f"{label}: colour format {fmt.name} is not supported ({supported})")
            if fmt in _YUV_CONVERTERS:
                self._converter = _YUV_CONVERTERS[fmt](rs.format.rgb8)
            if _same_geometry(depth, color):
                self.color_intrinsics = intrinsics_from_rs(color.get_intrinsics())
            else:
                self._align = rs.align(rs.stream.depth)
                self.color_intrinsics = self.depth_intrinsics
        try:
            self._pipeline.start(config)
        except RuntimeError as e:
            raise self._error(f"cannot start {label}: {e}") from e
        self._running = True

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        repeat: bool = False,
        real_time: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> RealSenseSource:
        """Play a recording (``.db3`` or legacy ``.bag``): every frame exactly once, as fast as it is read,
        or (``real_time``) at the recorded rate, as a live camera delivers them.

        Args:
            path: the recording.
            repeat: start again at the end instead of stopping.
            real_time: play at the recorded frame rate; a reader slower than that misses frames.
            timeout_s: longest wait for a frame before the recording counts as broken.

        Raises:
            RecordingNotFoundError: ``path`` is not an existing file.
            CorruptRecordingError: not a RealSense recording, empty, truncated, or without frames.
            MissingStreamError: the recording has no depth stream or an unsupported colour format.
        """
        path = Path(path)
        if not path.is_file():
            raise RecordingNotFoundError(f"recording not found: {path}")
        config = rs.config()
        # Looping is ours (the playback started again on the same pipeline at its end), not pyrealsense2's
        # repeat_playback, which now and then stalled at the loop ("no frame within 5 s", about 1 open in
        # 12 of a 4-frame file under load) and is suspected in a crash (librealsense issue #10318).
        config.enable_device_from_file(str(path), repeat_playback=False)
        return cls(
            config,
            label=f"recording {path}",
            error=CorruptRecordingError,
            timeout_s=timeout_s,
            repeat=repeat,
            real_time=real_time,
        )

    @classmethod
    def live(
        cls,
        *,
        serial: str | None = None,
        width: int = 848,
        height: int = 480,
        fps: int = 30,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> RealSenseSource:
        """Stream from a connected camera: depth ``z16`` and colour ``rgb8``, both ``width x height``.

        Args:
            serial: the camera's serial number; None takes the first camera found.
            width: image width in pixels of both streams.
            height: image height in pixels of both streams.
            fps: frame rate of both streams.
            timeout_s: longest wait for a frame before the camera counts as stalled.

        Raises:
            MissingStreamError: no camera connected (with that serial) offers these streams, or it stalls.
        """
        config = rs.config()
        if serial is not None:
            config.enable_device(serial)
        config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        label = f"RealSense camera {serial or '(first found)'} depth+colour {width}x{height} @ {fps} fps"
        return cls(config, label=label, error=MissingStreamError, timeout_s=timeout_s)

    @property
    def label(self) -> str:
        """Names the source in messages (``"recording scene.db3"``)."""
        return self._label

    def _restart_playback(self) -> None:
        """Stop and start the recording again on a fresh pipeline, real time off before the first frame."""
        self._pipeline.stop()
        self._pipeline = rs.pipeline(rs.context())
        resolved = self._config.resolve(rs.pipeline_wrapper(self._pipeline))
        self._playback = resolved.get_device().as_playback()
        self._playback.set_real_time(False)
        self._pipeline.start(self._config)

    def read(self) -> RGBDFrame:
        """The next frame (with ``real_time``: the frame due now, waiting for it when it is not yet due).

        Raises:
            StopIteration: the (non-repeating) recording has ended.
            CorruptRecordingError: a recording delivers no frame at all, or none within ``timeout_s``.
            MissingStreamError: a live camera delivers no frame within ``timeout_s``.
            ValueError: the source is closed.
        """
        if not self._running:
            raise ValueError(f"{self._label} is closed")
        if not self._real_time or self._playback is None:
            return self._to_rgbd(self._next_frames())
        if self._pacer is None:
            self._pacer = threading.Thread(target=self._pace, name="playback", daemon=True)
            self._pacer.start()
        deadline = time.monotonic() + self._timeout_s + 1.0  # the pacer itself says when it stalls
        with self._slot_cond:
            while self._slot is None and self._pace_end is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._error(f"{self._label}: no frame within {self._timeout_s:g} s")
                self._slot_cond.wait(remaining)
            if self._slot is None:
                end = self._pace_end
                assert end is not None
                if isinstance(end, StopIteration):
                    raise StopIteration  # the recording has ended: every later read says so
                # an error: said once (a fresh exception, not the stored one again), and the next read
                # starts the playback's thread again, as a read of the camera's own thread would retry
                self._pace_end, self._pacer = None, None
                raise type(end)(str(end)) from end
            frame, self._slot = self._slot, None
        return frame

    def _pace(self) -> None:
        """Real-time playback's own thread, as a live camera's: read each frame when its timestamp falls
        due and keep the newest one for :meth:`read` (a frame not read before the next one is due is
        skipped: ``frames_skipped``). The end of the recording or an error is handed to :meth:`read`.

        Frames are converted here (about 1 ms a frame without ``rs.align``), so that no pyrealsense2
        object is used on two threads: the playback restarts its pipeline at each loop."""
        clock = ContinuousClock()  # loops continue the clock, as the frames' own timestamps do
        origin: tuple[float, float] | None = None  # (monotonic s, timestamp ms) of the first frame
        try:
            while self._running:
                frames = self._next_frames()
                stamp = clock(frames.get_depth_frame().get_timestamp())
                now = time.monotonic()
                if origin is None:
                    origin = (now, stamp)
                due = origin[0] + (stamp - origin[1]) / 1000.0
                if due > now and self._closing.wait(due - now):
                    return
                frame = self._to_rgbd(frames, time.monotonic_ns())
                with self._slot_cond:
                    if self._slot is not None:
                        self.frames_skipped += 1
                    self._slot = frame
                    self._slot_cond.notify_all()
        except (StopIteration, RecordingError) as e:
            end: BaseException = e
        except Exception as e:  # anything else still reaches the reader, named
            end = self._error(f"error reading {self._label}: {e!r}")
        else:
            return
        with self._slot_cond:
            self._pace_end = end
            self._slot_cond.notify_all()

    def _loop_playback(self) -> None:
        """Start the recording again on the same pipeline (about a millisecond), real time off."""
        self._pipeline.stop()
        profile = self._pipeline.start(self._config)
        self._playback = profile.get_device().as_playback()
        self._playback.set_real_time(False)

    def _next_frames(self) -> rs.composite_frame:
        """The next frameset the pipeline delivers (see :meth:`read`)."""
        try:
            frames = self._wait_for_frames()
            if frames is None and self._delivered == 0 and self._playback is not None:
                # pyrealsense2 playback occasionally loses the first frame of a very short recording
                # (seen ~1 in 40 opens of the one-frame D435 .bag): open it once more and read again.
                self._restart_playback()
                frames = self._wait_for_frames()
            if frames is None:
                if self._delivered == 0:
                    raise CorruptRecordingError(f"{self._label} opened but contains no frames")
                raise StopIteration
            self._delivered += 1
            return frames
        except RuntimeError as e:
            raise self._error(f"error reading {self._label}: {e}") from e

    def _wait_for_frames(self) -> rs.composite_frame | None:
        """Next frameset, or None at the end of a non-repeating recording (a repeating one starts again)."""
        deadline = time.monotonic() + self._timeout_s
        # Once playback has stopped, frames can still be in flight through the pipeline's syncer (seen:
        # the only frame of a one-frame .bag arriving after the status said "stopped"). Declare the end
        # only after empty waits for a grace period.
        grace_s = _END_GRACE_S
        stopped_since: float | None = None
        empty_passes = 0
        while True:
            if self._closing.is_set():
                raise StopIteration  # closed while the playback's thread waits: it ends, quietly
            ended = (
                self._playback is not None and self._playback.current_status() == rs.playback_status.stopped
            )
            # looping: once the playback has stopped after a whole pass (its length learnt from the first),
            # nothing is in flight: start again without the grace period (restarting before it stops stalls)
            whole_pass = self._frames_per_pass is not None and self._pass_delivered >= self._frames_per_pass
            if not (ended and whole_pass):
                ok, frames = self._pipeline.try_wait_for_frames(_POLL_MS)
                if ok:
                    self._pass_delivered += 1
                    return frames
            now = time.monotonic()
            if ended:
                stopped_since = stopped_since if stopped_since is not None else now
                if whole_pass or now - stopped_since >= grace_s:
                    if not self._repeat or self._delivered == 0:
                        return None  # the end (of an empty recording: the caller opens it once more)
                    empty_passes = 0 if self._pass_delivered else empty_passes + 1
                    if empty_passes >= 3:
                        raise self._error(f"{self._label}: {empty_passes} passes in a row without a frame")
                    if self._frames_per_pass is None and self._pass_delivered:
                        self._frames_per_pass = self._pass_delivered
                    self._loop_playback()
                    self._pass_delivered = 0
                    stopped_since = None
                    deadline = time.monotonic() + self._timeout_s
            else:
                stopped_since = None
            if now > deadline and not ended:
                raise self._error(f"{self._label}: no frame within {self._timeout_s:g} s")

    def _to_rgbd(self, frames: rs.composite_frame, received_ns: int | None = None) -> RGBDFrame:
        received_ns = time.monotonic_ns() if received_ns is None else received_ns
        if self._converter is not None:
            frames = self._converter.process(frames).as_frameset()
        if self._align is not None:
            frames = self._align.process(frames)
        depth = frames.get_depth_frame()
        depth_raw = np.asanyarray(depth.get_data())
        units = depth.get_units()
        if np.float32(units) == np.float32(0.001):
            depth_mm = depth_raw.copy()
        else:
            depth_mm = np.clip(np.rint(depth_raw * (units * 1000.0)), 0, 65535).astype(np.uint16)
        color = frames.get_color_frame()
        color_rgb = None
        if color:
            image = np.asanyarray(color.get_data())
            code = _CHANNELS_TO_RGB.get(color.get_profile().format())
            color_rgb = np.array(image[..., :3]) if code is None else cv2.cvtColor(image, code)
        return RGBDFrame(
            depth_mm=depth_mm,
            intrinsics=self.depth_intrinsics,
            color_rgb=color_rgb,
            color_intrinsics=self.color_intrinsics if color_rgb is not None else None,
            color_aligned=color_rgb is not None,
            frame_number=depth.get_frame_number(),
            timestamp_ms=depth.get_timestamp() if self._clock is None else self._clock(depth.get_timestamp()),
            received_ns=received_ns,
            device_name=self.device_name,
            serial=self.serial,
        )

    def close(self) -> None:
        """Stop the pipeline and release the device or file. Safe to call twice."""
        if self._running:
            self._running = False
            self._closing.set()
            with self._slot_cond:  # a reader waiting for a frame hears of it at once
                self._pace_end = ValueError(f"{self._label} is closed")
                self._slot_cond.notify_all()
            if self._pacer is not None:
                # it notices within one poll (50 ms), or once a restart of the playback returns
                self._pacer.join(timeout=10.0)
                if self._pacer.is_alive():
                    # stopping the pipeline under a thread still inside it could crash the process:
                    # leave the file open instead (a daemon thread; the process's exit releases it)
                    _log.warning("%s: the playback's thread did not stop; left open", self._label)
                    return
            self._slot = None
            self._playback = None
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass
