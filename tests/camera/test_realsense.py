"""RealSenseSource against a real D435 recording and against recordings written by pyrealsense2 itself."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pyrealsense2 as rs
import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.errors import CorruptRecordingError, MissingStreamError, RecordingNotFoundError
from positioning.frames import Intrinsics
from positioning.sim.recording import RecordingWriter

# Lopsided on purpose: W != H, fx != fy, principal point off centre.
K = Intrinsics(width=64, height=48, fx=50.5, fy=52.25, ppx=30.3, ppy=25.7)
RGB = np.broadcast_to(np.array([200, 100, 10], np.uint8), (K.height, K.width, 3))


def write_raw(path: Path, streams: list[tuple[rs.stream, rs.format, int, np.ndarray]], depth_units=0.001):
    """Write a one-frame recording with any streams and formats, straight through ``rs.software_device``.

    Each stream is ``(kind, format, bytes_per_pixel, image)``, all with the intrinsics ``K``.
    """
    dev = rs.software_device()
    dev.register_info(rs.camera_info.name, "raw test device")
    k = rs.intrinsics()
    k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = K.width, K.height, K.fx, K.fy, K.ppx, K.ppy
    k.model, k.coeffs = rs.distortion.none, [0.0] * 5
    opened = []
    for uid, (kind, fmt, bpp, image) in enumerate(streams):
        sensor = dev.add_sensor(f"sensor {uid}")
        if kind == rs.stream.depth:
            sensor.add_read_only_option(rs.option.depth_units, depth_units)
        vs = rs.video_stream()
        vs.type, vs.fmt, vs.bpp, vs.index, vs.uid, vs.fps = kind, fmt, bpp, 0, uid, 30
        vs.width, vs.height, vs.intrinsics = K.width, K.height, k
        opened.append((sensor, sensor.add_video_stream(vs).as_video_stream_profile(), bpp, image))
    recorder = rs.recorder(str(path), dev)
    for sensor, profile, _, _ in opened:
        sensor.open(profile)
        sensor.start(lambda frame: None)
    for sensor, profile, bpp, image in opened:
        frame = rs.software_video_frame()
        frame.pixels, frame.bpp, frame.stride = np.ascontiguousarray(image), bpp, K.width * bpp
        frame.timestamp, frame.domain, frame.frame_number = 0.0, rs.timestamp_domain.hardware_clock, 0
        frame.profile = profile
        if profile.stream_type() == rs.stream.depth:
            frame.depth_units = depth_units
        sensor.on_video_frame(frame)
    for sensor, *_ in opened:
        sensor.stop()
        sensor.close()
    del recorder, dev, opened, sensor, profile
    gc.collect()
    return path


def read_all(path: Path) -> list:
    with RealSenseSource.from_file(path) as source:
        return list(source)


# --- the real D435 recording -------------------------------------------------------------------------


def test_real_bag_metadata(real_d435_bag):
    with RealSenseSource.from_file(real_d435_bag) as source:
        k = source.depth_intrinsics
        assert (k.width, k.height) == (640, 480)
        assert k.fx == pytest.approx(390.431, abs=1e-3)
        assert k.fy == pytest.approx(390.431, abs=1e-3)
        assert k.ppx == pytest.approx(331.388, abs=1e-3)
        assert k.ppy == pytest.approx(242.187, abs=1e-3)
        assert k.model == "brown_conrady"
        assert source.device_name == "Intel RealSense D435"
        assert source.serial == "728612070259"
        # The D435 colour camera has its own intrinsics and optical centre: colour is mapped onto depth.
        assert source.color_intrinsics == k


def test_real_bag_frames(real_d435_bag):
    frames = read_all(real_d435_bag)
    assert len(frames) == 1
    (f,) = frames
    assert f.frame_number == 170
    assert f.timestamp_ms == pytest.approx(360981.765, abs=1e-3)
    assert f.depth_mm.dtype == np.uint16 and f.depth_mm.shape == (480, 640)
    assert f.valid_fraction == pytest.approx(0.93295, abs=1e-4)
    assert np.median(f.depth_mm[f.depth_mm > 0]) == 1478  # an office wall about 1.5 m away
    assert f.color_aligned and f.color_rgb.shape == (480, 640, 3) and f.color_rgb.dtype == np.uint8
    # The colour camera's narrower field of view covers about 39 % of the depth grid after alignment.
    assert f.color_rgb.any(axis=-1).mean() == pytest.approx(0.391, abs=0.01)
    assert (f.device_name, f.serial) == ("Intel RealSense D435", "728612070259")
    assert f.received_ns > 0


def test_end_of_recording_is_prompt_and_repeatable(real_d435_bag):
    with RealSenseSource.from_file(real_d435_bag) as source:
        source.read()
        start = time.monotonic()
        for _ in range(2):
            with pytest.raises(StopIteration):
                source.read()
        assert time.monotonic() - start < 1.0


def test_repeat_loops_the_recording(real_d435_bag):
    with RealSenseSource.from_file(real_d435_bag, repeat=True) as source:
        frames = list(source.frames(max_frames=3))
    assert [f.frame_number for f in frames] == [170, 170, 170]


def test_closed_source_refuses_to_read(real_d435_bag):
    source = RealSenseSource.from_file(real_d435_bag)
    source.close()
    source.close()
    with pytest.raises(ValueError, match="closed"):
        source.read()


# --- conversions -------------------------------------------------------------------------------------


def test_fast_recording_delivers_every_frame_once(tmp_path):
    # Regression: switching real-time playback off only after pipeline.start() let playback race ahead
    # and drop the first frame(s) of a recording written faster than real time (as the simulator does).
    with RecordingWriter(tmp_path / "fast.db3", depth_intrinsics=K, color_intrinsics=K) as writer:
        for i in range(60):
            writer.write(np.full(K.shape, 500 + i, np.uint16), np.full((*K.shape, 3), i, np.uint8))
    frames = read_all(tmp_path / "fast.db3")
    assert [f.frame_number for f in frames] == list(range(60))
    assert [int(f.depth_mm[0, 0]) for f in frames] == [500 + i for i in range(60)]
    assert [int(f.color_rgb[0, 0, 0]) for f in frames] == list(range(60))


def test_aligned_colour_passes_through_where_depth_is_zero(tmp_path):
    # Regression pin: rs.align blanks colour where depth is 0; colour already on the depth grid must not be.
    depth = np.zeros(K.shape, np.uint16)
    depth[:, : K.width // 2] = 1500
    color = np.random.default_rng(1).integers(1, 256, (*K.shape, 3), dtype=np.uint8)
    with RecordingWriter(tmp_path / "a.db3", depth_intrinsics=K, color_intrinsics=K) as writer:
        writer.write(depth, color)
    (f,) = read_all(tmp_path / "a.db3")
    np.testing.assert_array_equal(f.color_rgb, color)
    assert f.color_aligned and f.color_intrinsics == f.intrinsics


@pytest.mark.parametrize(
    ("fmt", "bpp", "image"),
    [
        (rs.format.rgb8, 3, RGB),
        (rs.format.bgr8, 3, RGB[..., ::-1]),
        (rs.format.rgba8, 4, np.dstack([RGB, np.full(K.shape, 7, np.uint8)])),
        (rs.format.bgra8, 4, np.dstack([RGB[..., ::-1], np.full(K.shape, 7, np.uint8)])),
    ],
)
def test_colour_formats_become_rgb(tmp_path, fmt, bpp, image):
    depth = np.full(K.shape, 1000, np.uint16)
    path = write_raw(
        tmp_path / "c.db3", [(rs.stream.depth, rs.format.z16, 2, depth), (rs.stream.color, fmt, bpp, image)]
    )
    (f,) = read_all(path)
    np.testing.assert_array_equal(f.color_rgb, RGB)


def test_yuyv_colour_is_decoded(tmp_path):
    grey = np.full((K.height, K.width * 2), 128, np.uint8)  # Y = U = V = 128: mid grey
    depth = np.full(K.shape, 1000, np.uint16)
    path = write_raw(
        tmp_path / "y.db3",
        [(rs.stream.depth, rs.format.z16, 2, depth), (rs.stream.color, rs.format.yuyv, 2, grey)],
    )
    (f,) = read_all(path)
    assert f.color_rgb.shape == (*K.shape, 3)
    assert np.all(np.abs(f.color_rgb.astype(int) - 128) <= 3)


def test_depth_units_are_scaled_to_mm(tmp_path):
    # A sensor with 0.1 mm depth units (as on a D405): values are scaled to mm and rounded.
    raw = np.resize(np.array([0, 3, 7, 16, 12346, 65534], np.uint16), K.shape)
    path = write_raw(tmp_path / "u.db3", [(rs.stream.depth, rs.format.z16, 2, raw)], depth_units=0.0001)
    (f,) = read_all(path)
    np.testing.assert_array_equal(f.depth_mm[0, :6], [0, 0, 1, 2, 1235, 6553])
    np.testing.assert_array_equal(f.depth_mm, np.rint(raw / 10.0).astype(np.uint16))
    assert f.color_rgb is None and not f.color_aligned


# --- errors ------------------------------------------------------------------------------------------


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _simulated(path: Path, n: int = 3) -> Path:
    with RecordingWriter(path, depth_intrinsics=K, color_intrinsics=K) as writer:
        for _ in range(n):
            writer.write(np.full(K.shape, 1000, np.uint16), np.zeros((*K.shape, 3), np.uint8))
    return path


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_RECORDINGS = {
    "missing": (lambda d, rq: d / "missing.db3", RecordingNotFoundError, "not found"),
    "directory": (lambda d, rq: d, RecordingNotFoundError, "not found"),
    "text-as-bag": (lambda d, rq: _file(d / "notes.bag", b"not a recording\n"), CorruptRecordingError, None),
    "empty-bag": (lambda d, rq: _file(d / "empty.bag", b""), CorruptRecordingError, None),
    "empty-db3": (lambda d, rq: _file(d / "empty.db3", b""), CorruptRecordingError, None),
    "truncated-real-bag": (
        lambda d, rq: _truncated(rq.getfixturevalue("real_d435_bag"), d / "half.bag"),
        CorruptRecordingError,
        None,
    ),
    "truncated-db3": (
        lambda d, rq: _truncated(_simulated(d / "s.db3"), d / "half.db3"),
        CorruptRecordingError,
        None,
    ),
    "no-frames": (lambda d, rq: _simulated(d / "none.db3", n=0), CorruptRecordingError, "no streams"),
    "colour-only": (
        lambda d, rq: write_raw(d / "colour_only.db3", [(rs.stream.color, rs.format.rgb8, 3, RGB)]),
        MissingStreamError,
        "no depth stream",
    ),
}


@pytest.mark.parametrize(("make", "error", "match"), BAD_RECORDINGS.values(), ids=BAD_RECORDINGS.keys())
def test_bad_recordings_raise_specific_errors(tmp_path, request, make, error, match):
    path = make(tmp_path, request)
    start = time.monotonic()
    with pytest.raises(error, match=match) as info:
        read_all(path)
    assert str(path) in str(info.value)
    assert time.monotonic() - start < 2.0  # fails fast, never hangs
    if error is CorruptRecordingError and match is None:
        assert isinstance(info.value.__cause__, RuntimeError)  # chained from pyrealsense2


def test_live_without_a_camera_raises_missing_stream():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(MissingStreamError, match="848x480"):
        RealSenseSource.live()
