"""Fluoroscopy: procedures as data, the target region in the body, table moves, collimated fields, checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from positioning.errors import ProtocolError
from positioning.planning.fluoro import (
    BodySlices,
    FluoroCode,
    TargetBox,
    collimated_field,
    make_fluoro_plan,
    project,
    table_moves,
    target_box,
)
from positioning.planning.procedure import CArm, Detector, TargetSpec, list_procedures, load_procedure
from positioning.planning.protocol import RangeBound

REQUIRED = {"ercp", "nephrostomy-left", "nephrostomy-right", "hip-left", "hip-right", "lumbar-spine",
            "chest-port", "barium-swallow"}  # fmt: skip


def _c_arm(**kw) -> CArm:
    d = {"source_to_image_mm": 1000.0, "source_to_isocenter_mm": 750.0,
         "detector": Detector(shape="rectangle", width_mm=300.0, height_mm=400.0),
         "table_top_z_range_mm": (-400.0, -50.0)} | kw  # fmt: skip
    return CArm(**d)


def _body(cx=10.0, cz=-100.0, half_x=150.0, half_z=100.0) -> BodySlices:
    y = np.arange(-1800.0, -200.0, 10.0)
    k = len(y)
    return BodySlices(
        y_mm=y, centroid_x_mm=np.full(k, cx), centroid_z_mm=np.full(k, cz),
        x_min_mm=np.full(k, cx - half_x), x_max_mm=np.full(k, cx + half_x),
        z_min_mm=np.full(k, cz - half_z), z_max_mm=np.full(k, cz + half_z),
    )  # fmt: skip


LEVELS = {"jugular_notch": -520.0, "xiphoid": -700.0, "iliac_crest": -900.0, "lesser_trochanter": -1100.0,
          "chin": -450.0}  # fmt: skip
SPEC = TargetSpec(
    superior=RangeBound(landmark="xiphoid"), inferior=RangeBound(landmark="iliac_crest"),
    left_mm=(-120.0, 0.0), posterior_fraction=(0.0, 0.5), margin_mm=0.0,
)  # fmt: skip


def test_the_shipped_procedures_load_and_span_the_issue():
    procs = {p.name: p for p in list_procedures()}
    assert REQUIRED <= set(procs)
    assert procs["nephrostomy-left"].target.left_mm[0] > 0 > procs["nephrostomy-right"].target.left_mm[1]
    assert {p.c_arm.detector.shape for p in procs.values()} == {"rectangle", "circle"}
    for p in procs.values():
        assert p.c_arm.magnification > 1.0 and p.expected_positions


def test_a_malformed_procedure_names_its_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    src = (load_procedure("ercp").source).read_text()
    bad.write_text(src.replace("posterior_fraction: [0.25, 0.8]", "posterior_fraction: [0.8, 0.2]"))
    with pytest.raises(ProtocolError, match=r"bad\.yaml.*posterior_fraction"):
        load_procedure(bad)
    bad.write_text(src.replace("source_to_isocenter_mm: 800", "source_to_isocenter_mm: 1200"))
    with pytest.raises(ProtocolError, match="source-to-isocenter"):
        load_procedure(bad)
    with pytest.raises(ProtocolError, match=r"known: .*ercp"):
        load_procedure("no-such-procedure")


@pytest.mark.parametrize(
    ("position", "lateral_axis", "right_sign", "post_axis", "front"),
    [
        ("HFS", 0, -1, 2, "z_max"),  # supine head first: the patient's right is -x, the front is up
        ("HFP", 0, +1, 2, "z_min"),  # prone: the patient's right is +x, the front is down
        ("HFDL", 2, +1, 0, "x_max"),  # left side down: the patient's right is up, the front toward +x
    ],
)
def test_the_target_follows_the_body_axes_of_the_position(
    position, lateral_axis, right_sign, post_axis, front
):
    body = _body()
    box = target_box(SPEC, LEVELS, 1, position, body)
    assert box is not None
    assert box.lo_mm[1] == pytest.approx(-900.0) and box.hi_mm[1] == pytest.approx(-700.0)
    centre = {0: 10.0, 2: -100.0}
    # left_mm (-120, 0): from the midline toward the patient's right
    far = box.lo_mm[lateral_axis] if right_sign < 0 else box.hi_mm[lateral_axis]
    assert far == pytest.approx(centre[lateral_axis] + right_sign * 120.0)
    # posterior fraction (0, 0.5): from the anterior skin to the middle
    skin = {"z_max": -100.0 + 100.0, "z_min": -100.0 - 100.0, "x_max": 10.0 + 150.0}[front]
    ends = (box.lo_mm[post_axis], box.hi_mm[post_axis])
    assert skin == pytest.approx(ends[1] if front.endswith("max") else ends[0])
    assert centre[post_axis] == pytest.approx(ends[0] if front.endswith("max") else ends[1])


def test_no_target_without_its_landmarks_or_the_body_there():
    assert target_box(SPEC, {"xiphoid": -700.0}, 1, "HFS", _body()) is None
    far = {"xiphoid": -100.0, "iliac_crest": -150.0}  # beyond the body's slices
    assert target_box(SPEC, far, 1, "HFS", _body()) is None


def test_table_moves_bring_the_centre_to_the_isocenter_within_reach():
    arm = _c_arm()
    t = table_moves(np.array([20.0, -800.0, -120.0]), -200.0, arm)
    assert (t.lateral_mm, t.longitudinal_mm, t.vertical_mm) == pytest.approx((-20.0, 800.0, 120.0))
    assert np.allclose(t.residual_mm, 0.0) and t.table_top_z_mm == pytest.approx(-80.0)
    t = table_moves(np.array([0.0, 0.0, -300.0]), -200.0, arm)  # the top could rise 150 mm only
    assert t.vertical_mm == pytest.approx(150.0) and t.residual_mm[2] == pytest.approx(-150.0)


def test_projection_magnifies_with_the_distance_from_the_source():
    arm = _c_arm()
    uv = project(np.array([[0.0, 0.0, 0.0], [100.0, 50.0, 0.0], [100.0, 0.0, 250.0]]), arm, "PA")
    assert uv[0] == pytest.approx([0.0, 0.0])
    assert uv[1] == pytest.approx([100.0 * 1000 / 750, 50.0 * 1000 / 750])
    assert uv[2, 0] == pytest.approx(100.0)  # 1000 mm from the source, as the detector: no magnification
    lat = project(np.array([[0.0, 30.0, 40.0]]), arm, "lateral")
    assert lat[0] == pytest.approx([30.0 * 1000 / 750, 40.0 * 1000 / 750])


def test_the_field_just_covers_the_target_and_saves_the_rest():
    arm = _c_arm()
    box = TargetBox(np.array([-50.0, -60.0, -40.0]), np.array([50.0, 60.0, 40.0]))
    f = collimated_field(box, np.zeros(3), arm, "PA")
    assert f.covers_target
    assert all(f.contains(project(box.grid(7), arm, "PA")))  # every point of the target is in the field
    # the nearest face to the source (z = -40) sets the width: 100 mm * 1000 / 710
    assert f.width_mm == pytest.approx(100.0 * 1000 / 710) and f.height_mm == pytest.approx(
        120.0 * 1000 / 710
    )
    assert f.area_saved_percent == pytest.approx(100 * (1 - f.width_mm * f.height_mm / (300 * 400)))
    big = TargetBox(np.array([-300.0, -60.0, -40.0]), np.array([300.0, 60.0, 40.0]))
    g = collimated_field(big, np.zeros(3), arm, "PA")
    assert not g.covers_target and g.width_mm == pytest.approx(400.0)  # the panel turned to the target


def test_a_circular_detector_needs_the_corners_inside():
    arm = _c_arm(detector=Detector(shape="circle", width_mm=300.0, height_mm=300.0))
    square = TargetBox(np.array([-100.0, -100.0, 0.0]), np.array([100.0, 100.0, 0.0]))
    assert not collimated_field(square, np.zeros(3), arm, "PA").covers_target  # its corners reach 189 mm
    small = TargetBox(np.array([-70.0, -70.0, 0.0]), np.array([70.0, 70.0, 0.0]))
    assert collimated_field(small, np.zeros(3), arm, "PA").covers_target
    assert arm.detector.area_mm2 == pytest.approx(math.pi * 150**2)


# ----------------------------------------------------------------------------------------- on recordings


@pytest.fixture(scope="module")
def supine_run(tmp_path_factory):
    from positioning.service.replay import run_session
    from positioning.service.session import SessionRequest
    from positioning.sim.room_source import cached_clip

    rec = cached_clip("hfs-arms-up", 0, "still", frames=3, directory=tmp_path_factory.mktemp("clips"))
    return rec, run_session(rec, SessionRequest(), landmarks="depth")


def test_a_supine_patient_gets_an_ercp_set_up_from_the_recording(supine_run):
    _, run = supine_run
    plan = make_fluoro_plan(run.states[-1], load_procedure("ercp"))
    assert plan.target is not None and plan.table_offset is not None and plan.ok, plan.checks
    c = plan.target.center_mm
    assert c[0] < 0  # the patient's right (HFS: -x; the patient lies within 30 mm of the table's middle)
    assert np.allclose(plan.table_offset.residual_mm, 0.0, atol=1.0)
    assert plan.fields["PA"].covers_target and 20.0 < plan.fields["PA"].area_saved_percent < 95.0
    doc = json.loads(json.dumps(plan.to_json()))
    assert {"procedure", "target", "table_offset", "field", "checks"} <= set(doc)
    assert set(doc["target"]) >= {"center_mm", "size_mm"}
    assert set(doc["field"]) >= {"width_mm", "height_mm", "area_saved_percent"}
    wrong = make_fluoro_plan(run.states[-1], load_procedure("nephrostomy-left"))  # prone only
    assert any(c.code == "ORIENTATION_MISMATCH" and str(c.severity) == "error" for c in wrong.checks)
    assert not wrong.ok


def test_arms_at_the_sides_are_in_a_lateral_beam(supine_run):
    from positioning.conventions import ArmState

    _, run = supine_run
    state = run.states[-1]
    import dataclasses

    sides = dataclasses.replace(state, arms=ArmState.SIDES)
    wrists = {**state.landmarks_mm, "left_wrist": np.array([150.0, -1150.0, -150.0])}
    conf = {**state.landmark_confidence, "left_wrist": 0.9}
    sides = dataclasses.replace(sides, landmarks_mm=wrists, landmark_confidence=conf)
    plan = make_fluoro_plan(sides, load_procedure("ercp"))
    assert plan.target is not None and plan.target.lo_mm[1] - 50 <= -1150.0 <= plan.target.hi_mm[1] + 50
    assert any(c.code == FluoroCode.ARMS_IN_LATERAL_BEAM for c in plan.checks)
    raised = make_fluoro_plan(state, load_procedure("ercp"))  # the scenario's arms are raised
    assert not any(c.code == FluoroCode.ARMS_IN_LATERAL_BEAM for c in raised.checks)


def test_the_command_prints_the_json_contract_and_draws_the_overlay(supine_run, tmp_path, capsys):
    from positioning.cli import main

    rec, _ = supine_run
    png = tmp_path / "fluoro.png"
    code = main(["fluoro", "plan", str(rec), "--procedure", "hip-left", "--json", "--overlay", str(png),
                 "--landmarks", "depth"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert (
        code == 0 and doc["procedure"] == "hip-left" and doc["target"]["center_mm"][0] > 0
    )  # patient's left
    assert png.is_file() and png.stat().st_size > 10_000
    assert main(["fluoro", "plan", str(rec), "--procedure", "no-such"]) == 2
    assert main(["fluoro", "procedures"]) == 0
    assert "nephrostomy-left" in capsys.readouterr().out


def test_an_empty_table_gets_no_target_and_says_why(tmp_path):
    from positioning.service.replay import run_session
    from positioning.service.session import SessionRequest
    from positioning.sim.room_source import cached_clip

    rec = cached_clip("empty-table", 0, "still", frames=2, directory=tmp_path)
    run = run_session(rec, SessionRequest(), landmarks="depth")
    plan = make_fluoro_plan(run.states[-1], load_procedure("ercp"))
    assert plan.target is None and not plan.ok
    assert any(str(c.severity) == "error" for c in plan.checks)
    assert plan.to_json()["target"] is None
