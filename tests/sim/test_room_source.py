"""The simulated room as a camera: clips cached by content, played through pyrealsense2, looped, scripted."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.camera.source import FrameSource
from positioning.errors import MissingStreamError, ScenarioError
from positioning.sim.room_source import RoomEvent, SimulatedRoomSource, cached_clip, parse_events

SCENARIO = "hfs-arms-up"
FRAMES = 3


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rooms")


def test_parse_events():
    assert parse_events(["8:moved", "2.5:second_person"]) == (
        RoomEvent(2.5, "second_person"),
        RoomEvent(8.0, "moved"),
    )
    with pytest.raises(ScenarioError, match="SECONDS:KIND"):
        parse_events(["moved"])
    with pytest.raises(ScenarioError, match="unknown room event 'jumped'"):
        parse_events(["3:jumped"])
    with pytest.raises(ScenarioError, match=">= 0"):
        RoomEvent(-1.0, "moved")


def test_a_clip_is_recorded_once_and_named_by_its_content(cache):
    still = cached_clip(SCENARIO, 0, "still", frames=FRAMES, directory=cache)
    stamp = still.stat().st_mtime_ns
    assert cached_clip(SCENARIO, 0, "still", frames=FRAMES, directory=cache) == still
    assert still.stat().st_mtime_ns == stamp  # reused, not recorded again
    moved = cached_clip(SCENARIO, 0, "moved", frames=FRAMES, directory=cache)
    assert moved != still
    assert not list(cache.glob(".recording-*"))  # nothing half-written left behind
    with RealSenseSource.from_file(still) as a, RealSenseSource.from_file(moved) as b:
        da, db = a.read().depth_mm, b.read().depth_mm
    assert np.mean(da != db) > 0.01  # the patient is elsewhere


def test_the_room_is_a_frame_source_that_loops_with_time_going_forward(cache):
    with SimulatedRoomSource(SCENARIO, frames=FRAMES, real_time=False, cache=cache) as room:
        assert isinstance(room, FrameSource)
        assert "simulated" in room.device_name and room.calibration_path.is_file()
        frames = list(room.frames(2 * FRAMES + 1))
    assert len(frames) == 2 * FRAMES + 1
    assert all(b.timestamp_ms > a.timestamp_ms for a, b in itertools.pairwise(frames))
    assert np.array_equal(frames[0].depth_mm, frames[FRAMES].depth_mm)  # the clip started again


def test_a_room_that_does_not_loop_ends(cache):
    with SimulatedRoomSource(SCENARIO, frames=FRAMES, real_time=False, loop=False, cache=cache) as room:
        assert len(list(room.frames(10))) == FRAMES


def test_scripted_events_change_what_the_camera_sees(cache):
    events = (RoomEvent(0.4, "camera_lost"), RoomEvent(0.9, "moved"))
    with SimulatedRoomSource(
        SCENARIO, frames=FRAMES, events=events, real_time=False, timeout_s=0.05, cache=cache
    ) as room:
        first = room.read()
        while room.elapsed_s < 0.4:
            time.sleep(0.05)
        with pytest.raises(MissingStreamError, match="camera lost"):
            room.read()
        while room.elapsed_s < 0.9:
            time.sleep(0.05)
        after = room.read()
    moved = cached_clip(SCENARIO, 0, "moved", frames=FRAMES, directory=cache)
    with RealSenseSource.from_file(moved) as source:
        expected = source.read()
    assert np.array_equal(after.depth_mm, expected.depth_mm)
    assert not np.array_equal(first.depth_mm, after.depth_mm)
    assert after.timestamp_ms > first.timestamp_ms


def test_an_unknown_scenario_fails_before_anything_is_recorded(cache):
    with pytest.raises(ScenarioError):
        SimulatedRoomSource("no-such-scenario", cache=cache)
