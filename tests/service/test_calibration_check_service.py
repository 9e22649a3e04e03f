"""The service runs the calibration check when a session starts: device status says it, and a camera that
moved refuses every plan of the session (CALIBRATION_DRIFT)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from positioning.camera.source import OpenedSource, SourceSpec
from positioning.frames import Calibration
from positioning.perception.pipeline import PerceiverSettings
from positioning.service.client import Client
from positioning.service.hub import CameraHub
from positioning.service.server import Server, ServerSettings
from positioning.sim.room_source import SimulatedRoomSource

SCENARIO = "hfs-arms-up"


def _room_file(path, matrix, baseline):
    path.write_text(
        yaml.safe_dump(
            {"camera_to_scanner": np.asarray(matrix).round(6).tolist(), "method": "charuco",
             "table_plane_baseline_deg": {"tilt": baseline[0], "roll": baseline[1]}},
            default_flow_style=None,
        )
    )  # fmt: skip
    return path


def _server(room_cache, calibration_path):
    room = SimulatedRoomSource(SCENARIO, frames=3, cache=room_cache, timeout_s=0.1)
    opened = OpenedSource(
        source=room,
        calibration=Calibration.load(calibration_path),
        calibration_path=calibration_path,
        spec=SourceSpec(kind="sim", scenario=SCENARIO),
    )
    hub = CameraHub(opened, perceiver_settings=PerceiverSettings(landmarks="depth"), preview_interval_s=0.0)
    return Server(hub, ServerSettings(port=0)).start()


@pytest.fixture(scope="module")
def calibrations(room_cache, tmp_path_factory):
    """A room file with the true transform and the baseline its depth gives, and one rotated 5 deg."""
    from positioning.calibration.check import check_calibration
    from positioning.camera.source import open_source
    from positioning.evaluation.bench_calibration import perturbed

    room = SimulatedRoomSource(SCENARIO, frames=3, cache=room_cache)
    true = Calibration.load(room.calibration_path)
    room.close()
    with open_source(f"sim:{SCENARIO}", real_time=False, loop=False) as o:
        frames = list(o.source.frames(2))
    base = check_calibration(frames, true)
    d = tmp_path_factory.mktemp("rooms")
    good = _room_file(d / "good.yaml", true.scanner_from_camera, (base.tilt_deg, base.roll_deg))
    bad = _room_file(d / "moved.yaml", perturbed(true.scanner_from_camera, rot_x_deg=5.0),
                     (base.tilt_deg, base.roll_deg))  # fmt: skip
    return good, bad


def _plan_after_start(server):
    """The plan once the session's calibration check has run (on its first frames with a table)."""
    with Client(server.address) as client:
        s = client.start_session("chest")
        deadline = time.monotonic() + 60
        while not client.device().HasField("calibration_check"):
            assert time.monotonic() < deadline, "the calibration check never ran"
            time.sleep(0.2)
        plan, device = client.plan(s.session_id), client.device()
        client.end_session(s.session_id)
    return plan, device


def test_a_failed_check_refuses_every_plan_of_the_session_and_a_right_one_none(room_cache, calibrations):
    """The session's own path, fed the clip's frames in order (the server's camera thread skips frames by
    the clock). With the right calibration the check runs and passes; a failed check (set here as the
    check reports one: its measurement has its own tests in tests/calibration) refuses CT and
    fluoroscopy plans alike."""
    from positioning.calibration.check import DriftReport
    from positioning.camera.source import open_source
    from positioning.planning.procedure import load_procedure
    from positioning.service.session import Session, SessionRequest

    good, _ = calibrations
    with open_source(f"sim:{SCENARIO}", real_time=False, loop=False) as o:
        frames = list(o.source.frames(3))
    baseline = tuple(yaml.safe_load(good.read_text())["table_plane_baseline_deg"].values())
    with Session(SessionRequest(protocol="chest"), Calibration.load(good), preview_interval_s=None,
                 calibration_baseline_deg=baseline) as session:  # fmt: skip
        for f in frames * 2:
            session.process(f)
        assert session.calibration_check is not None and session.calibration_check.passed
        plan, fluoro = session.plan(), session.fluoro_plan(load_procedure("ercp"))
        assert "CALIBRATION_DRIFT" not in [c.code for c in (*plan.checks, *fluoro.checks)]
        # in doubt (beyond 1.5 deg by less than twice its uncertainty): plans go on
        session.calibration_check = DriftReport(tilt_deg=1.8, roll_deg=0.1, yaw_deg=float("nan"),
                                                lateral_mm=float("nan"), tolerance_deg=1.5,
                                                tilt_uncertainty_deg=0.4)  # fmt: skip
        assert session.calibration_check.status == "inconclusive"
        assert "CALIBRATION_DRIFT" not in [c.code for c in session.plan().checks]
        session.calibration_check = DriftReport(tilt_deg=2.1, roll_deg=0.1, yaw_deg=float("nan"),
                                                lateral_mm=float("nan"), tolerance_deg=1.5)  # fmt: skip
        plan, fluoro = session.plan(), session.fluoro_plan(load_procedure("ercp"))
    assert "CALIBRATION_DRIFT" in [c.code for c in plan.checks] and not plan.ok
    assert "CALIBRATION_DRIFT" in [c.code for c in fluoro.checks] and not fluoro.ok


def test_a_check_the_depth_cannot_decide_is_an_event_and_refuses_nothing(calibrations):
    """The session's own check, from real frames: the table seen 5 deg off the baseline fails when the room
    file says nothing of its depth's scatter (these frames' own, about half a degree here), and is
    inconclusive (CALIBRATION_UNCHECKED, plans go on) where it says the plane's tilt spreads by 3 deg
    between table positions."""
    from positioning.calibration.check import PlaneSpread
    from positioning.camera.source import open_source
    from positioning.service.session import Session, SessionRequest

    good, _ = calibrations
    with open_source(f"sim:{SCENARIO}", real_time=False, loop=False) as o:
        frames = list(o.source.frames(3))
    tilt, roll = yaml.safe_load(good.read_text())["table_plane_baseline_deg"].values()
    noisy = PlaneSpread(tilt_frame_sd_deg=0.1, roll_frame_sd_deg=0.1, tilt_position_sd_deg=3.0,
                        roll_position_sd_deg=0.1, frames=12, recordings=6)  # fmt: skip
    outcomes = {}
    for name, spread in (("steady", None), ("noisy", noisy)):
        request, cal = SessionRequest(protocol="chest"), Calibration.load(good)
        with Session(request, cal, preview_interval_s=None, calibration_baseline_deg=(tilt - 5.0, roll),
                     calibration_spread=spread) as session:  # fmt: skip
            for f in frames * 2:
                session.process(f)
            check = session.calibration_check
            assert check is not None and abs(check.tilt_deg - 5.0) < 1.5, check
            codes = [e.kind for e in session.events]
            outcomes[name] = (check.status, "CALIBRATION_DRIFT" in [c.code for c in session.plan().checks],
                              "CALIBRATION_UNCHECKED" in codes, "CALIBRATION_DRIFT" in codes)  # fmt: skip
    assert outcomes == {"steady": ("fail", True, False, True), "noisy": ("inconclusive", False, True, False)}


def test_device_status_reports_the_check_over_the_channel(room_cache, calibrations):
    _good, bad = calibrations
    server = _server(room_cache, bad)
    try:
        plan, device = _plan_after_start(server)
    finally:
        server.stop()
    c = device.calibration_check
    assert c.summary.lower().startswith(c.status) and c.status in ("pass", "fail", "inconclusive")
    assert bool(c.failures) == (c.status == "fail") and bool(c.doubts) == (c.status == "inconclusive")
    assert c.passed == (c.status == "pass")
    # the plan says what device status says: refused on a failed check only
    assert ("CALIBRATION_DRIFT" in [x.code for x in plan.checks]) == (c.status == "fail")
