"""RecordingWriter: what it writes, pyrealsense2 reads back bit for bit through RealSenseSource."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.errors import RecordingError
from positioning.frames import Intrinsics
from positioning.sim.recording import RecordingWriter

# Lopsided on purpose: W != H, fx != fy, principal point off centre.
K = Intrinsics(width=64, height=48, fx=50.5, fy=52.25, ppx=30.3, ppy=25.7)
K_COLOR = Intrinsics(width=80, height=60, fx=70.0, fy=69.0, ppx=41.5, ppy=28.25)


def random_frames(n: int, depth_k: Intrinsics, color_k: Intrinsics | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.integers(0, 6000, (n, *depth_k.shape), dtype=np.uint16)
    depth[:, 5:15, 40:60] = 0  # a hole
    color = None if color_k is None else rng.integers(0, 256, (n, *color_k.shape, 3), dtype=np.uint8)
    return depth, color


def read_all(path):
    with RealSenseSource.from_file(path) as source:
        return source, list(source)


def as_float32(k: Intrinsics) -> Intrinsics:
    """What a recording can hold: rs.intrinsics stores float32."""
    fields = {name: float(np.float32(getattr(k, name))) for name in ("fx", "fy", "ppx", "ppy")}
    return Intrinsics(width=k.width, height=k.height, model=k.model, coeffs=k.coeffs, **fields)


def test_round_trip_is_bit_exact(tmp_path):
    depth, color = random_frames(3, K, K)
    path = tmp_path / "scene.db3"
    with RecordingWriter(
        path, depth_intrinsics=K, color_intrinsics=K, device_name="Sim D435", serial="SIM42"
    ) as w:
        for d, c in zip(depth, color, strict=True):
            w.write(d, c)
        assert w.frame_count == 3
    source, frames = read_all(path)
    assert len(frames) == 3
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.depth_mm, depth[i])
        np.testing.assert_array_equal(f.color_rgb, color[i])
        assert f.frame_number == i
        assert f.timestamp_ms == pytest.approx(i * 1000 / 30, abs=1e-6)
        assert f.color_aligned and f.color_intrinsics == f.intrinsics
        assert (f.device_name, f.serial) == ("Sim D435", "SIM42")
    assert source.depth_intrinsics == as_float32(K)


def test_intrinsics_round_trip_and_colour_is_aligned_to_depth(tmp_path):
    depth, color = random_frames(1, K, K_COLOR)
    path = tmp_path / "two_cameras.db3"
    with RecordingWriter(path, depth_intrinsics=K, color_intrinsics=K_COLOR) as w:
        w.write(depth[0], color[0])
    _, (f,) = read_all(path)
    assert f.intrinsics == as_float32(K)
    np.testing.assert_array_equal(f.depth_mm, depth[0])
    # Different colour intrinsics: colour is mapped onto the depth grid.
    assert f.color_rgb.shape == (*K.shape, 3) and f.color_aligned
    assert f.color_intrinsics == f.intrinsics


def test_depth_only_recording_and_explicit_timestamps(tmp_path):
    depth, _ = random_frames(3, K, None)
    timestamps_ms = [1000.0, 1010.5, 1234.567891]
    with RecordingWriter(tmp_path / "d.db3", depth_intrinsics=K) as w:
        for d, t in zip(depth, timestamps_ms, strict=True):
            w.write(d, timestamp_ms=t)
    _, frames = read_all(tmp_path / "d.db3")
    assert [f.timestamp_ms for f in frames] == pytest.approx(timestamps_ms, abs=1e-6)
    assert all(f.color_rgb is None and not f.color_aligned for f in frames)
    for f, d in zip(frames, depth, strict=True):
        np.testing.assert_array_equal(f.depth_mm, d)


def test_existing_file_is_replaced(tmp_path):
    path = tmp_path / "again.db3"
    depth, _ = random_frames(3, K, None)
    for n in (3, 1):
        with RecordingWriter(path, depth_intrinsics=K) as w:
            for d in depth[:n]:
                w.write(d)
    assert len(read_all(path)[1]) == 1


@pytest.mark.parametrize("name", ["scene.bag", "scene.BAG", "scene", "scene.db3.tmp"])
def test_only_db3_can_be_written(tmp_path, name):
    with pytest.raises(ValueError, match=r"only be written as \.db3"):
        RecordingWriter(tmp_path / name, depth_intrinsics=K)
    assert not (tmp_path / name).exists()


D = np.zeros(K.shape, np.uint16)
C = np.zeros((*K.shape, 3), np.uint8)


@pytest.mark.parametrize(
    ("depth", "color", "timestamps", "match"),
    [
        (
            D.astype(np.float32),
            C,
            [None],
            r"depth_mm must be a uint16 array of shape \(48, 64\), got .*float32",
        ),
        (D.T.copy(), C, [None], r"shape \(48, 64\), got ndarray uint16 \(64, 48\)"),
        (D.tolist(), C, [None], r"got list"),
        (D, C.astype(np.uint16), [None], r"color_rgb must be a uint8 array of shape \(48, 64, 3\)"),
        (D, C[..., :1], [None], r"\(48, 64, 3\), got ndarray uint8 \(48, 64, 1\)"),
        (D, None, [None], "color_rgb is required"),
        (D, C, [10.0, 10.0], r"increasing: expected > 10.0, got 10.0"),
        (D, C, [float("nan")], "finite"),
    ],
    ids=[
        "depth-float",
        "depth-transposed",
        "depth-list",
        "colour-uint16",
        "colour-1ch",
        "colour-missing",
        "timestamp-repeated",
        "timestamp-nan",
    ],
)
def test_bad_inputs_are_rejected(tmp_path, depth, color, timestamps, match):
    with RecordingWriter(tmp_path / "bad.db3", depth_intrinsics=K, color_intrinsics=K) as w:
        for t in timestamps[:-1]:
            w.write(D, C, timestamp_ms=t)
        with pytest.raises(ValueError, match=match):
            w.write(depth, color, timestamp_ms=timestamps[-1])


def test_colour_without_a_colour_stream_is_rejected(tmp_path):
    with (
        RecordingWriter(tmp_path / "d.db3", depth_intrinsics=K) as w,
        pytest.raises(ValueError, match="no colour"),
    ):
        w.write(D, C)


def test_unwritable_path_raises_recording_error(tmp_path):
    with pytest.raises(RecordingError, match="cannot create recording") as info:
        RecordingWriter(tmp_path / "no_such_dir" / "x.db3", depth_intrinsics=K)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_write_after_close_is_rejected(tmp_path):
    w = RecordingWriter(tmp_path / "c.db3", depth_intrinsics=K)
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(D)
