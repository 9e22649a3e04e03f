"""The Session (no grpc): frames in, estimates, previews, the confirmed plan and its events out.

Frames come from the simulated room's cached clips (genuine recordings read through pyrealsense2); the
perception and planning are the real ones.
"""

from __future__ import annotations

import threading
import time

import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.errors import ProtocolError
from positioning.frames import Calibration
from positioning.perception.pipeline import Perceiver
from positioning.service.session import (
    NothingToConfirmError,
    Session,
    SessionRequest,
)
from positioning.sim.room_source import cached_clip
from positioning.sim.session import calibration_path_for

SCENARIO = "hfs-arms-up"
FRAMES = 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rooms")

    def frames(kind: str) -> list:
        with RealSenseSource.from_file(cached_clip(SCENARIO, 0, kind, frames=FRAMES, directory=cache)) as s:
            return list(s)

    still = cached_clip(SCENARIO, 0, "still", frames=FRAMES, directory=cache)
    return {
        "calibration": Calibration.load(calibration_path_for(still)),
        **{k: frames(k) for k in ("still", "moved", "left", "second_person")},
    }


@pytest.fixture(scope="module")
def perceiver():
    with Perceiver() as p:
        yield p


def _session(clips, perceiver, **request) -> Session:
    return Session(
        SessionRequest(protocol="chest", **request),
        clips["calibration"],
        perceiver=perceiver,
        preview_interval_s=0.0,
    )


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("patient_height_mm", 50.0, "300..2500"),
        ("patient_weight_kg", float("nan"), "finite"),
        ("table_position_mm", float("inf"), "finite"),
        ("expected_position", "HFX", "DICOM position"),
    ],
)
def test_a_malformed_request_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match) as e:
        SessionRequest(protocol="chest", **{field: value})
    assert field in str(e.value)


def test_an_unknown_protocol_fails_before_any_frame(clips, perceiver):
    with pytest.raises(ProtocolError):
        Session(SessionRequest(protocol="no-such-protocol"), clips["calibration"], perceiver=perceiver)


def test_nothing_to_plan_or_confirm_before_the_first_frame(clips, perceiver):
    with _session(clips, perceiver) as s:
        with pytest.raises(NothingToConfirmError, match="no frame"):
            s.plan()
        with pytest.raises(NothingToConfirmError, match="no frame"):
            s.confirm("tech")


def test_confirm_then_the_patient_moves_gives_one_event(clips, perceiver):
    with _session(clips, perceiver, expected_position="HFS", table_position_mm=1000.0) as s:
        for frame in clips["still"][:2]:
            estimate = s.process(frame)
        with pytest.raises(NothingToConfirmError, match="settling"):
            s.confirm("rt.jones")  # the tracker has not settled yet
        for frame in clips["still"] * 2:
            estimate = s.process(frame)
        assert estimate.state.has_patient and estimate.preview is not None
        assert estimate.processing_ms > 0
        decision = s.confirm("rt.jones", note="as suggested")
        assert decision.operator == "rt.jones" and decision.plan.has_patient
        assert decision.plan.table_position_mm == 1000.0
        assert s.events == []
        for frame in clips["moved"]:
            s.process(frame)
        moved = [e for e in s.events if e.kind == "PATIENT_MOVED"]
        assert len(moved) == 1  # once when it starts, not on every frame
        assert moved[0].details["sideways"] == pytest.approx(25.0, abs=8.0)
        assert "PLAN_INVALID" not in {e.kind for e in s.events}  # the move is its own event
        index = moved[0].index
        assert s.events_since(index)[0] == moved[0]
        assert s.wait_events(index, timeout_s=0.0)[0] == moved[0]
        # a new confirmation takes the new position as the reference
        s.confirm("rt.jones")
        for frame in clips["moved"]:
            s.process(frame)
        assert [e.kind for e in s.events].count("PATIENT_MOVED") == 1


def test_an_empty_table_cannot_be_confirmed(clips, perceiver):
    with _session(clips, perceiver) as s:
        for frame in clips["left"]:
            s.process(frame)
        with pytest.raises(NothingToConfirmError, match="no patient"):
            s.confirm("tech")


def test_a_second_person_is_an_event(clips, perceiver):
    with _session(clips, perceiver) as s:
        for frame in clips["still"][:1] + clips["second_person"]:
            s.process(frame)
        assert [e.kind for e in s.events].count("SECOND_PERSON") == 1


def test_camera_lost_and_back(clips, perceiver):
    with _session(clips, perceiver) as s:
        s.camera_lost("no frame within 0.5 s")
        s.camera_lost("no frame within 0.5 s")
        assert not s.camera_ok
        s.process(clips["still"][0])
        assert [e.kind for e in s.events] == ["CAMERA_LOST", "CAMERA_BACK"]
        assert s.camera_ok


def test_a_waiting_reader_wakes_on_an_event_and_on_close(clips, perceiver):
    s = _session(clips, perceiver)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(s.wait_events(0, timeout_s=30.0)))
    reader.start()
    time.sleep(0.1)
    s.camera_lost("unplugged")
    reader.join(5.0)
    assert [e.kind for e in got[0]] == ["CAMERA_LOST"]
    reader = threading.Thread(target=lambda: got.append(s.wait_events(1, timeout_s=30.0)))
    reader.start()
    time.sleep(0.1)
    s.close()
    reader.join(5.0)
    assert not reader.is_alive() and got[1] == []
    with pytest.raises(Exception, match="ended"):
        s.process(clips["still"][0])


def test_concurrent_previews_judge_motion_and_never_outlive_a_reconfirmation(clips, perceiver):
    session = Session(
        SessionRequest(protocol="chest", expected_position="HFS"),
        clips["calibration"],
        perceiver=perceiver,
        preview_interval_s=0.0,
        concurrent_preview=True,
    )

    def process_until_previewed(frames) -> None:
        for frame in frames:
            session.process(frame)
        deadline = time.monotonic() + 30
        while not (session._preview_running is None or session._preview_running.done()):
            assert time.monotonic() < deadline
            time.sleep(0.01)

    with session as s:
        process_until_previewed(clips["still"] * 2)
        assert s.latest_preview is not None and s.latest_preview.ok
        first = s.confirm("rt.jones")
        for _ in range(3):  # the worker judges each preview against the confirmation of its frame
            process_until_previewed(clips["moved"])
        assert [e.kind for e in s.events if e.kind == "PATIENT_MOVED"] == ["PATIENT_MOVED"]
        state = s.latest.state
        s.confirm("rt.jones")  # the technologist confirms the patient where they now lie
        shown, n_events = s.latest_preview, len(s.events)
        # a preview planned against the first confirmation that finishes only now is neither shown nor judged
        s._preview_job(state, first)
        assert s.latest_preview is shown and len(s.events) == n_events and s._preview_fresh is None


def test_steady_frames_carry_the_stretchs_plan_and_a_move_is_still_one_event(clips):
    """A live stream's steady frames (``PerceiverSettings.steady``) repeat a perception: their preview is
    the plan of the same still scene, judged once after confirmation; the patient's move is perceived in
    full and gives one PATIENT_MOVED."""
    import dataclasses

    from positioning.perception.pipeline import PerceiverSettings
    from positioning.perception.steady import SteadySettings

    def stream(frames, start_ms: float, n: int):
        return [
            dataclasses.replace(frames[i % len(frames)], timestamp_ms=start_ms + 33.3 * i) for i in range(n)
        ]

    settings = PerceiverSettings(steady=SteadySettings(refresh_ms=10_000.0))  # no refresh: deterministic
    with Perceiver(settings=settings) as perceiver, _session(clips, perceiver, expected_position="HFS") as s:
        estimates = [s.process(f) for f in stream(clips["still"], 0.0, 12)]
        steady = [e for e in estimates if e.state.repeats_frame_number is not None]
        assert len(steady) >= 5  # after the five frames the tracker settles over
        for e in steady:
            assert e.preview is s.latest_preview  # the plan of the repeated perception, not planned again
        before = s.latest_preview
        decision = s.confirm("rt.jones")
        after = [s.process(f) for f in stream(clips["still"], 400.0, 6)]
        assert all(e.state.repeats_frame_number is not None for e in after)
        # planned again against the confirmation (the plan before it is not reused), then repeated
        assert after[0].preview is not before and s._preview_of[1] is decision
        assert all(e.preview is after[0].preview for e in after)
        assert s.events == []
        moved = [s.process(f) for f in stream(clips["moved"], 600.0, 12)]
        assert moved[0].state.repeats_frame_number is None  # the scene changed: perceived in full
        events = [e for e in s.events if e.kind == "PATIENT_MOVED"]
        assert len(events) == 1 and events[0].details["sideways"] == pytest.approx(25.0, abs=8.0)
        # a preview repeated on a steady frame is one plan: judged once, so it never counts as three
        run = s._moved_run
        s._watch_preview(s.latest.state, s.latest_preview)
        s._watch_preview(s.latest.state, s.latest_preview)
        assert s._moved_run == run
