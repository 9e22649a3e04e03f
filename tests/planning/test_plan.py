"""make_plan on hand-made states: convention pins (directions, signs), clamping, the JSON contract, the
no-patient case, and the checks as they come out of a whole plan."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from planning_builders import make_state

from positioning.perception.orientation import ArmState
from positioning.perception.state import PatientState
from positioning.perception.status import PerceptionStatus
from positioning.planning.anatomy import PRIOR_RULES, LandmarkModel
from positioning.planning.isocenter import IsocenterModel
from positioning.planning.plan import (
    Plan,
    PlanSettings,
    TableLimits,
    bound_y_mm,
    make_plan,
    plan_summary,
    range_from_levels,
    surface_displacement,
    table_offsets,
)
from positioning.planning.protocol import RangeBound, load_protocol

MODELS = {
    "isocenter_model": IsocenterModel.half_ellipse(),
    "landmark_model": LandmarkModel(rules=dict(PRIOR_RULES)),
}
CHEST = load_protocol("chest")
CONTRACT = {
    "patient_position",
    "arms",
    "landmarks",
    "isocenter",
    "table_offset",
    "scan_range",
    "checks",
    "dose",
}


def plan_for(state: PatientState, protocol=CHEST, **kw) -> Plan:
    """A plan with the prior keypoint rules alone (the hand-made bodies are cylinders: the level network,
    trained on human shapes, is exercised in test_plan_sim and below)."""
    settings = kw.pop("settings", PlanSettings())
    return make_plan(
        state, protocol, settings=dataclasses.replace(settings, use_level_net=False), **MODELS, **kw
    )


def test_level_network_is_fused_when_enabled(tmp_path) -> None:
    from test_level_net import _model_file

    state = make_state("HFS")
    without = plan_for(state)
    settings = PlanSettings(level_net_path=_model_file(tmp_path))  # random weights: any levels will do
    with_net = make_plan(state, CHEST, settings=settings, **MODELS)
    assert with_net.models["level_net"].endswith("level_net.pt") and "level_net" not in without.models
    lm_with, lm_without = with_net.to_json()["landmarks"], without.to_json()["landmarks"]
    assert lm_with["xiphoid"][1] != lm_without["xiphoid"][1]
    assert lm_with["left_shoulder"] == lm_without["left_shoulder"]  # keypoints are not touched


# ---------------------------------------------------------------------------------------- convention pins


def test_bound_moves_outward() -> None:
    b = RangeBound(landmark="lung_apex", margin_mm=10.0)
    assert bound_y_mm(-900.0, b, +1, superior=True) == -890.0  # head first: superior is +y
    assert bound_y_mm(-900.0, b, -1, superior=True) == -910.0  # feet first: superior is -y
    assert bound_y_mm(-900.0, b, +1, superior=False) == -910.0


def test_range_from_levels_orders_and_rejects_crossed_bounds() -> None:
    sup, inf = RangeBound(landmark="lung_apex"), RangeBound(landmark="costophrenic")
    assert range_from_levels({"lung_apex": -900.0, "costophrenic": -1200.0}, sup, inf, +1) == (
        -1200.0,
        -900.0,
    )
    assert range_from_levels({"lung_apex": -1500.0, "costophrenic": -1200.0}, sup, inf, -1) == (
        -1500.0,
        -1200.0,
    )
    assert range_from_levels({"lung_apex": -1200.0, "costophrenic": -900.0}, sup, inf, +1) is None
    assert range_from_levels({"lung_apex": -900.0}, sup, inf, +1) is None


def test_chest_range_head_first() -> None:
    """HFS, shoulders at y = -900, torso 500: apex -870 (+10 margin -> -860), costophrenic -1160 (-35 ->
    -1195); craniocaudal starts at the superior (high-y) end, so the table travels +860 mm."""
    p = plan_for(make_state("HFS", y_shoulders_mm=-900.0))
    r = p.scan_range
    assert (r.start_mm, r.end_mm) == pytest.approx((-1195.0, -860.0))
    assert r.first_slice_mm == pytest.approx(-860.0)
    assert p.table_offset.longitudinal_mm == pytest.approx(860.0)
    assert r.start_mm < r.end_mm


def test_chest_range_feet_first() -> None:
    """FFS, shoulders at y = -1600 (head toward -y): apex -1630 (-> -1640), costophrenic -1340 (-> -1305);
    craniocaudal starts at the superior end, now the low-y end."""
    p = plan_for(make_state("FFS", y_shoulders_mm=-1600.0))
    r = p.scan_range
    assert (r.start_mm, r.end_mm) == pytest.approx((-1640.0, -1305.0))
    assert r.first_slice_mm == pytest.approx(-1640.0)
    assert p.table_offset.longitudinal_mm == pytest.approx(1640.0)


def test_caudocranial_starts_at_the_inferior_end() -> None:
    head = load_protocol("head")
    p = plan_for(make_state("HFS", arms=ArmState.SIDES), head)
    assert p.scan_range.first_slice_mm == p.scan_range.start_mm  # head first: inferior = low y


def test_offset_sign_patient_40mm_below_isocenter() -> None:
    """Half-ellipse model: centroid at 0.45 h above the table; table -150, h = 244.4 -> centre z -40:
    the table must go up 40 mm."""
    p = plan_for(
        make_state(
            "HFS",
            table_top_z_mm=-150.0,
            height_mm=110.0 / 0.45,
        )
    )
    assert p.isocenter.z_mm == pytest.approx(-40.0, abs=1.5)
    assert p.table_offset.vertical_mm == pytest.approx(-p.isocenter.z_mm)
    assert p.table_offset.vertical_mm == pytest.approx(40.0, abs=1.5)
    assert p.table_offset.vertical_residual_mm == pytest.approx(0.0, abs=1e-9)
    assert p.to_json()["table_offset"]["vertical_mm"] == pytest.approx(
        -p.to_json()["isocenter"]["z_mm"], abs=0.11
    )


def test_table_offsets_pure() -> None:
    t = table_offsets(12.0, -40.0, -900.0, -150.0)
    assert (t.vertical_mm, t.longitudinal_mm, t.lateral_patient_move_mm) == (40.0, 900.0, -12.0)
    assert t.planned_top_z_mm == -110.0
    t = table_offsets(0.0, 30.0, -900.0, -150.0)  # above the isocenter: lower the table
    assert t.vertical_mm == -30.0


def test_clamping_reports_the_residual() -> None:
    """Table at -150 may rise only to -130: 20 of the 40 mm, 20 mm remain below the isocenter."""
    limits = PlanSettings(table=TableLimits(top_z_range_mm=(-450.0, -130.0)))
    p = plan_for(make_state("HFS", table_top_z_mm=-150.0, height_mm=110.0 / 0.45), settings=limits)
    t = p.table_offset
    assert t.requested_vertical_mm == pytest.approx(40.0, abs=1.5)
    assert t.vertical_mm == pytest.approx(20.0)
    assert t.vertical_residual_mm == pytest.approx(-20.0, abs=1.5)
    assert t.planned_top_z_mm == pytest.approx(-130.0)
    assert "TABLE_LIMIT" in p.check_codes()
    assert p.centering.corrected_offset_mm == pytest.approx(t.vertical_residual_mm)
    t2 = table_offsets(0.0, -40.0, -900.0, -100.0, TableLimits(top_z_range_mm=(-450.0, -130.0)))
    assert t2.vertical_mm == 0.0  # already above the limit: never moved further out


# ------------------------------------------------------------------------------------------ JSON contract


def test_json_contract_keys_and_types() -> None:
    p = plan_for(make_state("HFS"), table_position_mm=1000.0)
    doc = json.loads(json.dumps(p.to_json()))
    assert CONTRACT <= set(doc)
    assert doc["patient_position"] == "HFS" and doc["arms"] == "raised"
    assert set(doc["isocenter"]) >= {"x_mm", "z_mm"}
    assert set(doc["table_offset"]) >= {"vertical_mm", "longitudinal_mm"}
    assert doc["scan_range"]["start_mm"] < doc["scan_range"]["end_mm"]
    for name in ("left_shoulder", "lung_apex", "costophrenic", "xiphoid"):
        assert len(doc["landmarks"][name]) == 3
    for c in doc["checks"]:
        assert {"code", "severity", "message"} <= set(c) and c["severity"] in ("info", "warning", "error")
    assert doc["scan_range_table"]["first_slice_mm"] == pytest.approx(
        1000.0 - doc["scan_range"]["first_slice_mm"]
    )
    assert doc["dose"]["centering"]["current"]["surface_dose_increase"]["percent"] >= 0
    assert doc["dose"]["overscan"]["generic_length_mm"] == CHEST.generic_length_mm
    assert doc["ok"] is True and p.ok


@pytest.mark.parametrize(
    "status", [PerceptionStatus.EMPTY_TABLE, PerceptionStatus.NO_TABLE, PerceptionStatus.NO_DEPTH]
)
def test_no_patient(status: PerceptionStatus) -> None:
    state = PatientState(status=status, message=status.message)
    p = plan_for(state)
    doc = json.loads(json.dumps(p.to_json()))
    assert CONTRACT <= set(doc)
    assert doc["patient_position"] is None and doc["scan_range"] is None and doc["isocenter"] is None
    assert [c["code"] for c in doc["checks"]] == [status.code]
    assert doc["checks"][0]["severity"] == "error" and not p.ok
    assert "No patient" in plan_summary(p)


# ------------------------------------------------------------------------------------- checks via the plan


def test_clean_plan_has_no_checks() -> None:
    assert plan_for(make_state("HFS")).checks == ()


def test_orientation_mismatch_with_the_console() -> None:
    assert (
        "ORIENTATION_MISMATCH"
        in plan_for(make_state("FFS", y_shoulders_mm=-1600.0), expected_position="HFS").check_codes()
    )
    assert "ORIENTATION_MISMATCH" not in plan_for(make_state("FFS", y_shoulders_mm=-1600.0)).check_codes()


def test_arms_in_field() -> None:
    p = plan_for(make_state("HFS", arms=ArmState.SIDES))
    assert p.checks[0].code == "ARMS_IN_FIELD" and not p.ok


def test_lateral_off_centre_and_truncation() -> None:
    p = plan_for(make_state("HFS", centre_x_mm=60.0, half_width_mm=220.0))
    assert {"LATERAL_OFF_CENTRE", "FOV_TRUNCATION"} <= set(p.check_codes())
    assert p.isocenter.x_mm == pytest.approx(60.0, abs=2.0)
    assert p.table_offset.lateral_patient_move_mm == pytest.approx(-60.0, abs=2.0)


def test_bore_collision_with_a_small_bore() -> None:
    from positioning.planning.checks import CheckSettings

    small = PlanSettings(checks=CheckSettings(bore_diameter_mm=500.0, fov_diameter_mm=500.0))
    assert "BORE_COLLISION" in plan_for(make_state("HFS", half_width_mm=240.0), settings=small).check_codes()
    assert "BORE_COLLISION" not in plan_for(make_state("HFS", half_width_mm=150.0)).check_codes()


def test_a_collision_read_with_someone_else_at_the_table_is_a_warning_to_look() -> None:
    import dataclasses

    from positioning.perception.status import PerceptionNote
    from positioning.planning.checks import CheckSettings

    small = PlanSettings(checks=CheckSettings(bore_diameter_mm=500.0, fov_diameter_mm=500.0))
    state = make_state("HFS", half_width_mm=290.0)
    alone = next(c for c in plan_for(state, settings=small).checks if c.code == "BORE_COLLISION")
    assert str(alone.severity) == "error"
    staff = dataclasses.replace(
        state, notes=(PerceptionNote(code="SECOND_PERSON", severity="warning", message="someone"),)
    )
    doubt = next(c for c in plan_for(staff, settings=small).checks if c.code == "BORE_COLLISION")
    assert str(doubt.severity) == "warning" and "another person" in doubt.message


def test_missing_keypoints_make_landmarks_uncertain() -> None:
    p = plan_for(make_state("HFS", drop=("left_hip", "right_hip")), load_protocol("pelvis"))
    assert p.scan_range is None and p.isocenter is None and not p.ok
    (c,) = [c for c in p.checks if c.code == "LANDMARKS_UNCERTAIN"]
    assert c.severity == "error"


def test_a_range_near_where_the_body_leaves_the_view_is_named_once() -> None:
    state = make_state("HFS")
    p = plan_for(state)
    assert "LANDMARKS_UNCERTAIN" not in p.check_codes()
    lo = p.scan_range.start_mm  # the chest's inferior end (head first: the low y end)
    near = dataclasses.replace(state, view_cut_ends_mm=(lo - 250.0,))
    (c,) = [c for c in plan_for(near).checks if c.code == "LANDMARKS_UNCERTAIN"]
    assert c.severity == "warning" and c.details["distance_mm"] == pytest.approx(250.0, abs=1.0)
    far = dataclasses.replace(state, view_cut_ends_mm=(lo - 600.0,))
    assert "LANDMARKS_UNCERTAIN" not in plan_for(far).check_codes()
    # landmarks already uncertain for their own reasons: one LANDMARKS_UNCERTAIN, not two
    both = dataclasses.replace(
        make_state("HFS", drop=("left_hip", "right_hip")), view_cut_ends_mm=(lo - 250.0,)
    )
    assert plan_for(both, load_protocol("pelvis")).check_codes().count("LANDMARKS_UNCERTAIN") == 1


def test_operator_range_is_checked_against_the_anatomy() -> None:
    state = make_state("HFS")
    p = plan_for(state, scan_range_mm=(-1150.0, -860.0))  # 45 mm short at the foot end
    assert p.scan_range.start_mm == -1150.0 and p.anatomical_range_mm == pytest.approx((-1195.0, -860.0))
    assert "RANGE_UNDERCOVERAGE" in p.check_codes()
    assert "RANGE_OVERSCAN" in plan_for(state, scan_range_mm=(-1195.0, -800.0)).check_codes()
    with pytest.raises(ValueError, match="start < end"):
        plan_for(state, scan_range_mm=(-800.0, -1195.0))


def test_patient_moved_since_confirmed() -> None:
    confirmed = plan_for(make_state("HFS"))
    assert "PATIENT_MOVED" not in plan_for(make_state("HFS"), confirmed=confirmed).check_codes()
    sideways = plan_for(make_state("HFS", centre_x_mm=25.0), confirmed=confirmed)
    assert "PATIENT_MOVED" in sideways.check_codes()
    # the table raised by 40 mm with the patient on it is not patient motion
    raised = plan_for(make_state("HFS", table_top_z_mm=-110.0), confirmed=confirmed)
    assert "PATIENT_MOVED" not in raised.check_codes()
    along = plan_for(make_state("HFS", y_shoulders_mm=-930.0), confirmed=confirmed)
    assert "PATIENT_MOVED" in along.check_codes()
    assert "PATIENT_MOVING" in plan_for(make_state("HFS", moving=True)).check_codes()


def test_surface_displacement() -> None:
    y = np.arange(-2000.0, -600.0, 10.0)
    kp = {"left_hip": -1400.0, "right_hip": -1400.0, "left_shoulder": -900.0, "right_shoulder": -900.0}
    ref = {"y_mm": y, "height_mm": np.full_like(y, 200.0), "x_mm": np.zeros_like(y), "keypoints_y_mm": kp,
           "table_y_ref_mm": -2700.0}  # fmt: skip
    cur = ref | {"x_mm": np.full_like(y, 7.0), "keypoints_y_mm": {k: v + 24.0 for k, v in kp.items()}}
    d = surface_displacement(ref, cur)
    assert d == pytest.approx({"sideways": 7.0, "height": 0.0, "along_the_table": 24.0})
    # the table moved 300 mm into the gantry with the patient: no patient motion along it
    moved_table = cur | {"keypoints_y_mm": {k: v + 300.0 for k, v in kp.items()}, "table_y_ref_mm": -2400.0}
    assert surface_displacement(ref, moved_table)["along_the_table"] == pytest.approx(0.0)
    # ... and the patient moved 40 mm on it as it went
    slid = moved_table | {"keypoints_y_mm": {k: v + 340.0 for k, v in kp.items()}}
    assert surface_displacement(ref, slid)["along_the_table"] == pytest.approx(40.0)
    # the table's seen foot end jumped by 926 mm (a strip of the top chosen instead of all of it) while
    # the patient moved 15 mm toward the feet: that jump is not the patient's motion
    jumped = cur | {"keypoints_y_mm": {k: v - 15.0 for k, v in kp.items()}, "table_y_ref_mm": -1774.0}
    assert surface_displacement(ref, jumped)["along_the_table"] == pytest.approx(15.0)
    # the console's table readings, when both plans have one, decide the table's move
    console = {"table_position_mm": 100.0}
    told = jumped | {"table_position_mm": 400.0, "keypoints_y_mm": {k: v + 310.0 for k, v in kp.items()}}
    assert surface_displacement(ref | console, told)["along_the_table"] == pytest.approx(10.0)
    assert (
        surface_displacement(
            ref | {"y_mm": y[:5], "height_mm": y[:5], "x_mm": y[:5], "keypoints_y_mm": {}}, cur
        )
        == {}
    )


def test_second_person_is_a_warning_not_a_blocker() -> None:
    p = plan_for(make_state("HFS", status=PerceptionStatus.SECOND_PERSON))
    assert p.check_codes() == ["SECOND_PERSON"] and p.ok


def test_summary_text() -> None:
    text = plan_summary(plan_for(make_state("HFS", arms=ArmState.SIDES)))
    assert "Scan range" in text and "Table: raise" in text and "[ERROR] ARMS_IN_FIELD" in text


def test_unknown_position_uses_the_keypoints() -> None:
    p = plan_for(make_state(None))
    assert p.scan_range is not None and math.isfinite(p.isocenter.z_mm)
    assert "ORIENTATION_UNCERTAIN" in p.check_codes()
