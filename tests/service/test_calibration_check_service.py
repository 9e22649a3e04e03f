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
    """A room file with the true transform and the baseline its depth gives, and one rotated 3 deg."""
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
    bad = _room_file(d / "moved.yaml", perturbed(true.scanner_from_camera, rot_x_deg=3.0),
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


def test_a_moved_camera_refuses_every_plan_and_device_status_says_why(room_cache, calibrations):
    _good, bad = calibrations
    server = _server(room_cache, bad)
    try:
        plan, device = _plan_after_start(server)
    finally:
        server.stop()
    codes = [c.code for c in plan.checks]
    assert "CALIBRATION_DRIFT" in codes and not plan.ok
    assert device.HasField("calibration_check") and not device.calibration_check.passed
    assert any("tilt" in f for f in device.calibration_check.failures), device.calibration_check.summary


def test_a_camera_where_it_was_calibrated_plans_as_usual(room_cache, calibrations):
    good, _ = calibrations
    server = _server(room_cache, good)
    try:
        plan, device = _plan_after_start(server)
    finally:
        server.stop()
    assert "CALIBRATION_DRIFT" not in [c.code for c in plan.checks], device.calibration_check.summary
    assert device.calibration_check.passed, device.calibration_check.summary
