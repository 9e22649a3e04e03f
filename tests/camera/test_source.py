"""Frame sources: parsing ``--source``, opening a recording with its calibration, real-time playback, and the
continuous clock across loops."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.camera.source import (
    ContinuousClock,
    FrameSource,
    SourceSpec,
    open_source,
    parse_source,
)
from positioning.errors import CalibrationError, PositioningError, RecordingNotFoundError
from positioning.frames import Calibration, Intrinsics
from positioning.sim.recording import RecordingWriter
from positioning.sim.session import calibration_path_for

K = Intrinsics(width=64, height=48, fx=50.5, fy=52.25, ppx=30.3, ppy=25.7)


def _recording(path: Path, frames: int = 30, *, calibration: bool = True) -> Path:
    with RecordingWriter(path, depth_intrinsics=K, color_intrinsics=K, fps=30) as writer:
        for i in range(frames):
            writer.write(np.full(K.shape, 800 + i, np.uint16), np.full((*K.shape, 3), i, np.uint8))
    if calibration:
        Calibration(scanner_from_camera=np.eye(4), method="test").save(calibration_path_for(path))
    return path


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        (None, SourceSpec(kind="sim")),
        ("sim", SourceSpec(kind="sim")),
        ("sim:patient-moved", SourceSpec(kind="sim", scenario="patient-moved")),
        ("sim:obese@7", SourceSpec(kind="sim", scenario="obese", seed=7)),
        ("realsense", SourceSpec(kind="realsense")),
        ("realsense:123456789", SourceSpec(kind="realsense", serial="123456789")),
        ("rooms/a.db3", SourceSpec(kind="recording", path=Path("rooms/a.db3"))),
    ],
)
def test_parse_source(text, spec):
    assert parse_source(text) == spec
    assert parse_source(str(spec)) == spec  # the printed form parses back


def test_parse_source_refuses_nonsense():
    with pytest.raises(PositioningError, match="seed"):
        parse_source("sim:obese@seven")
    with pytest.raises(PositioningError, match="empty"):
        parse_source("  ")


def test_clock_continues_across_loops():
    clock = ContinuousClock()
    raw = [0.0, 33.3, 66.7, 100.0] * 3  # a recording looped three times
    out = [clock(t) for t in raw]
    assert all(b > a for a, b in itertools.pairwise(out))
    steps = np.diff(out)
    assert steps == pytest.approx(np.full(len(steps), 33.33), abs=0.5)


def test_a_recording_opens_with_its_calibration_sidecar(tmp_path):
    rec = _recording(tmp_path / "a.db3", 5)
    with open_source(rec) as opened:
        assert isinstance(opened.source, RealSenseSource) and isinstance(opened.source, FrameSource)
        assert opened.calibration_path == calibration_path_for(rec)
        frames = list(opened.source.frames())
    assert [int(f.depth_mm[0, 0]) for f in frames] == [800 + i for i in range(5)]


def test_the_recording_is_checked_before_its_calibration(tmp_path):
    with pytest.raises(RecordingNotFoundError):
        open_source(tmp_path / "missing.db3")
    rec = _recording(tmp_path / "b.db3", 2, calibration=False)
    with pytest.raises(CalibrationError, match="calibration"):
        open_source(rec)
    with pytest.raises(CalibrationError, match=r"other\.yaml"):
        open_source(rec, calibration=tmp_path / "other.yaml")


def test_a_recording_without_a_sidecar_uses_the_sites_room_file_and_says_so(tmp_path, monkeypatch):
    """--calibration, else the recording's sidecar, else $POSITIONING_CALIBRATION (the site's room file);
    the simulated room keeps its own."""
    from positioning.sim.room_source import SimulatedRoomSource

    site = tmp_path / "site-room.yaml"
    site.write_text(calibration_path_for(_recording(tmp_path / "s.db3", 1)).read_text())
    bare = _recording(tmp_path / "bare.db3", 2, calibration=False)
    monkeypatch.setenv("POSITIONING_CALIBRATION", str(site))
    with open_source(bare) as opened:
        assert opened.calibration_path == site
    with_sidecar = _recording(tmp_path / "own.db3", 2)
    with open_source(with_sidecar) as opened:  # its own sidecar first
        assert opened.calibration_path == calibration_path_for(with_sidecar)
    with open_source("sim", frames=2, loop=False, real_time=False) as opened:
        assert isinstance(opened.source, SimulatedRoomSource) and opened.calibration_path != site
    monkeypatch.setenv("POSITIONING_CALIBRATION", str(tmp_path / "gone.yaml"))
    with pytest.raises(CalibrationError, match=r"\$POSITIONING_CALIBRATION names .*gone\.yaml"):
        open_source(bare)
    monkeypatch.delenv("POSITIONING_CALIBRATION")
    with pytest.raises(CalibrationError, match="POSITIONING_CALIBRATION"):
        open_source(bare)


def test_events_are_for_the_simulated_room_only(tmp_path):
    rec = _recording(tmp_path / "c.db3", 2)
    with pytest.raises(PositioningError, match="simulated room"):
        open_source(rec, events=["3:moved"])


def test_real_time_playback_keeps_the_recorded_rate(tmp_path):
    rec = _recording(tmp_path / "d.db3", 30)  # 30 frames at 30 fps: 0.97 s from first to last
    with open_source(rec, real_time=True) as opened:
        t0 = time.monotonic()
        n = sum(1 for _ in opened.source.frames())
        elapsed = time.monotonic() - t0
    assert n >= 20  # a fast reader sees (nearly) every frame
    assert elapsed > 0.6  # not as fast as it can be read


def test_a_slow_reader_of_real_time_playback_gets_the_newest_frame(tmp_path):
    # the playback runs on its own thread, as a live camera's: a reader that falls behind misses frames
    # and gets the newest one at once, with the colour that belongs to it
    rec = _recording(tmp_path / "f.db3", 60)
    with open_source(rec, real_time=True) as opened:
        source = opened.source
        first = source.read()
        time.sleep(0.5)  # about 15 frames fall due meanwhile
        second = source.read()
        third = source.read()
    assert source.frames_skipped >= 2  # passed over while the reader slept (about 15), never queued
    for frame in (first, second, third):  # depth and colour of one frame
        assert int(frame.color_rgb[0, 0, 0]) == int(frame.depth_mm[0, 0]) - 800
    assert third.timestamp_ms > second.timestamp_ms > first.timestamp_ms


def test_a_looped_recording_keeps_time_moving_forward(tmp_path):
    rec = _recording(tmp_path / "e.db3", 4)
    with open_source(rec, loop=True) as opened:
        frames = list(opened.source.frames(10))
    assert len(frames) == 10
    values = [int(f.depth_mm[0, 0]) for f in frames]
    # it starts again and plays a whole pass in order. Not necessarily the first pass: under load
    # pyrealsense2's playback now and then delivers the last frame four times at the very start
    # (2026-12-08, a busy process beside it: 1 of 40 opens with our looping, 3 of 80 with the code before
    # it; none in 370 later tries)
    later = ",".join(map(str, values[4:]))
    assert set(values) == {800, 801, 802, 803} and "800,801,802,803" in later
    stamps = [f.timestamp_ms for f in frames]
    assert all(b > a for a, b in itertools.pairwise(stamps))
