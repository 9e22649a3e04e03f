"""Placement on the table: DICOM patient positions in the scanner frame (the convention pins), offsets,
yaw and roll, and the mattress contact model."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.sim.body import Phenotype
from positioning.sim.placement import (
    PatientPosition,
    mattress_sink_mm,
    scanner_from_body_rotation,
    tissue_flatten_mm,
)

# Lopsided placement values, so that an offset applied to the wrong axis or with the wrong sign shows.
LATERAL_OFFSET_MM = 37.0
HEAD_Y_MM = -523.0
MATTRESS_TOP_Z_MM = -143.0
LOPSIDED = {
    "lateral_offset_mm": LATERAL_OFFSET_MM,
    "head_y_mm": HEAD_Y_MM,
    "mattress_top_z_mm": MATTRESS_TOP_Z_MM,
}


@pytest.fixture(scope="module")
def place(place_cached):
    """``place(position, arms, phenotype=None, **params)`` with the lopsided values as defaults."""
    return lambda position, arms, phenotype=None, **params: place_cached(
        position, arms, phenotype, **(LOPSIDED | params)
    )


# The table of placement.py's docstring, written out by hand (not computed): scanner-frame direction of the
# patient's superior (S), posterior (P) and left (L) axes.
X, Y, Z = np.eye(3)
TABLE = {
    "HFS": (Y, -Z, X),
    "HFP": (Y, Z, -X),
    "FFS": (-Y, -Z, -X),
    "FFP": (-Y, Z, X),
    "HFDL": (Y, -X, -Z),
    "HFDR": (Y, X, Z),
    "FFDL": (-Y, X, -Z),
    "FFDR": (-Y, -X, Z),
}
CODES = list(TABLE)


def test_every_dicom_code_is_in_the_table():
    assert sorted(TABLE) == sorted(p.value for p in PatientPosition)


@pytest.mark.parametrize("code", CODES)
def test_scanner_from_body_rotation_matches_the_table(code):
    r = scanner_from_body_rotation(code)
    s, p, left = TABLE[code]
    np.testing.assert_array_equal(r @ [1, 0, 0], left)  # body +x = the patient's left
    np.testing.assert_array_equal(r @ [0, 1, 0], p)  # body +y = posterior
    np.testing.assert_array_equal(r @ [0, 0, 1], s)  # body +z = superior
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)  # proper: no mirror image of the patient
    assert np.array_equal(r, scanner_from_body_rotation(PatientPosition(code)))


@pytest.mark.parametrize("code", ["hfs", "XYZ", "", "HF"])
def test_unknown_position_code_is_rejected(code):
    with pytest.raises(ValueError):
        scanner_from_body_rotation(code)


@pytest.mark.parametrize(
    ("code", "head_first", "lying"),
    [("HFS", True, "supine"), ("FFP", False, "prone"), ("HFDL", True, "left_decubitus"),
     ("FFDR", False, "right_decubitus")],
)  # fmt: skip
def test_position_properties(code, head_first, lying):
    assert PatientPosition(code).head_first is head_first
    assert PatientPosition(code).lying == lying


# -- placed bodies: convention pins --------------------------------------------------------------------------
def _spine(placed):
    return placed.joints_mm["spine_mid"]


@pytest.mark.parametrize("code", CODES)
def test_placed_body_follows_the_dicom_position(place, code):
    """Nose vs back, the patient's left, and head vs feet, straight from the table."""
    placed = place(code, "sides")
    k = placed.keypoints_mm
    s_axis, p_axis, l_axis = TABLE[code]
    anterior = -p_axis
    # the face is on the anterior side of the spine
    assert (k["nose"] - _spine(placed)) @ anterior > 60
    # the patient's left shoulder is on the patient's left
    assert (k["left_shoulder"] - k["right_shoulder"]) @ l_axis > 200
    assert (k["left_hip"] - k["right_hip"]) @ l_axis > 100
    # the head is superior of the feet
    assert (k["nose"] - k["left_ankle"]) @ s_axis > 1200
    # head-first: the head toward the gantry (+y)
    assert bool(k["nose"][1] > k["left_ankle"][1]) is PatientPosition(code).head_first


@pytest.mark.parametrize(
    ("code", "left_x_sign", "nose_above_back"),
    [("HFS", 1, True), ("HFP", -1, False), ("FFS", -1, True), ("FFP", 1, False)],
)
def test_supine_and_prone_pins(place, code, left_x_sign, nose_above_back):
    """The literal statements: HFS left = +x and nose up; HFP left = -x, face down; FFS left -x; FFP +x."""
    placed = place(code, "sides")
    k = placed.keypoints_mm
    assert np.sign(k["left_shoulder"][0] - LATERAL_OFFSET_MM) == left_x_sign
    assert np.sign(k["right_shoulder"][0] - LATERAL_OFFSET_MM) == -left_x_sign
    assert bool(k["nose"][2] > _spine(placed)[2]) is nose_above_back


@pytest.mark.parametrize(("code", "left_down"), [("HFDL", True), ("HFDR", False), ("FFDL", True),
                                                 ("FFDR", False)])  # fmt: skip
def test_decubitus_lies_on_the_named_side(place, code, left_down):
    k = place(code, "sides").keypoints_mm
    assert bool(k["left_shoulder"][2] < k["right_shoulder"][2] - 200) is left_down
    assert bool(k["left_hip"][2] < k["right_hip"][2] - 100) is left_down


@pytest.mark.parametrize("code", CODES)
def test_keypoints_and_joints_use_the_same_transform_as_the_mesh(place, code):
    placed = place(code, "sides")
    m = placed.scanner_from_body
    np.testing.assert_allclose(m[3], [0, 0, 0, 1])
    for name, p in placed.body.keypoints_mm.items():
        np.testing.assert_allclose(placed.keypoints_mm[name], m[:3, :3] @ p + m[:3, 3], atol=1e-9)
    raw = placed.body.vertices_mm @ m[:3, :3].T + m[:3, 3]
    above = raw[:, 2] > placed.contact_z_mm + placed.sink_mm  # untouched by the contact model
    np.testing.assert_allclose(placed.vertices_mm[above], raw[above], atol=1e-9)


# -- offsets -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", CODES)
def test_lateral_offset_is_the_trunk_median_x(place, model, code):
    v = place(code, "sides").vertices_mm
    assert np.median(v[model.part_mask("torso"), 0]) == pytest.approx(LATERAL_OFFSET_MM, abs=1e-6)


def test_lateral_offset_moves_the_whole_body_along_x_only(place):
    a, b = place("HFS", "sides"), place("HFS", "sides", lateral_offset_mm=-61.5)
    shift = [-61.5 - LATERAL_OFFSET_MM, 0.0, 0.0]
    expected = np.broadcast_to(shift, a.vertices_mm.shape)
    np.testing.assert_allclose(b.vertices_mm - a.vertices_mm, expected, atol=1e-9)
    np.testing.assert_allclose(b.keypoints_mm["nose"] - a.keypoints_mm["nose"], shift, atol=1e-9)


@pytest.mark.parametrize("code", ["HFS", "HFP", "HFDL", "HFDR"])
def test_head_y_is_the_skull_vertex_when_head_first(place, model, code):
    v = place(code, "sides").vertices_mm
    assert v[model.part_mask("head"), 1].max() == pytest.approx(HEAD_Y_MM, abs=1e-6)
    assert v[:, 1].max() == pytest.approx(HEAD_Y_MM, abs=1e-6)  # arms at the sides: nothing beyond


@pytest.mark.parametrize("code", ["FFS", "FFP", "FFDL", "FFDR"])
def test_head_y_is_the_feet_end_when_feet_first(place, model, code):
    placed = place(code, "sides")
    v = placed.vertices_mm
    assert v[model.part_mask("left_leg", "right_leg"), 1].max() == pytest.approx(HEAD_Y_MM, abs=1e-6)
    assert v[:, 1].max() == pytest.approx(HEAD_Y_MM, abs=1e-6)
    # the ankles are just short of the feet end; a prone patient's plantar-flexed foot lies along the leg
    reach_mm = 260 if code.endswith("P") else 150
    for side in ("left", "right"):
        assert 0 < HEAD_Y_MM - placed.keypoints_mm[f"{side}_ankle"][1] < reach_mm


def test_raised_hands_may_reach_beyond_head_y(place, model):
    v = place("HFS", "raised").vertices_mm
    assert v[model.part_mask("head"), 1].max() == pytest.approx(HEAD_Y_MM, abs=1e-6)
    assert v[:, 1].max() > HEAD_Y_MM + 150


def test_positive_yaw_is_right_handed_about_up(place, model):
    """Yaw +10 deg turns the patient's superior axis (+y for HFS) toward -x: the head moves to -x."""
    straight, yawed = place("HFS", "sides"), place("HFS", "sides", yaw_deg=10.0)
    for placed, expected in ((straight, 0.0), (yawed, -np.sin(np.radians(10.0)))):
        k = placed.keypoints_mm
        axis = k["nose"] - placed.joints_mm["pelvis"]
        assert axis[0] / np.hypot(axis[0], axis[1]) == pytest.approx(expected, abs=0.02)
    assert np.median(yawed.vertices_mm[model.part_mask("torso"), 0]) == pytest.approx(LATERAL_OFFSET_MM)


def test_positive_roll_is_right_handed_about_the_superior_axis(place):
    """Roll +10 deg in HFS (superior = +y): the anterior (+z) turns toward +x, so the nose moves to +x."""
    rolled = place("HFS", "sides", roll_deg=10.0).keypoints_mm
    straight = place("HFS", "sides").keypoints_mm
    assert rolled["nose"][0] - straight["nose"][0] > 15
    assert rolled["left_shoulder"][2] < rolled["right_shoulder"][2] - 30  # the left side goes down


def test_positive_head_tilt_flexes_the_placed_head(place):
    """Regression (placement path): head_tilt_deg > 0 is flexion: in HFS the nose moves toward the feet."""
    flexed = place("HFS", "sides", head_tilt_deg=20.0).keypoints_mm
    straight = place("HFS", "sides").keypoints_mm
    assert flexed["nose"][1] < straight["nose"][1] - 10


# -- contact model -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mass_kg", "sink"), [(0.0, 4.0), (20.0, 6.0), (70.0, 16.0), (100.0, 22.0), (150.0, 30.0), (500.0, 30.0)]
)
def test_mattress_sink_table(mass_kg, sink):
    assert mattress_sink_mm(mass_kg) == pytest.approx(sink)


@pytest.mark.parametrize(
    ("bmi", "flatten"), [(10.0, 4.0), (18.0, 4.0), (28.0, 10.0), (45.0, 20.2), (60.0, 25.0)]
)
def test_tissue_flatten_table(bmi, flatten):
    assert tissue_flatten_mm(bmi) == pytest.approx(flatten)


@pytest.mark.parametrize("code", CODES)
def test_no_vertex_below_the_contact_surface_and_the_trunk_touches_it(place, model, code):
    placed = place(code, "sides")
    v = placed.vertices_mm
    supported = ~model.part_mask("head") if code.endswith("P") else slice(None)  # prone face: in the opening
    assert placed.contact_z_mm == pytest.approx(MATTRESS_TOP_Z_MM - placed.sink_mm)
    assert v[supported, 2].min() >= placed.contact_z_mm - 1e-9
    assert v[model.part_mask("torso"), 2].min() == pytest.approx(placed.contact_z_mm, abs=1e-9)
    assert placed.sink_mm == pytest.approx(mattress_sink_mm(placed.body.mass_kg))
    assert placed.flatten_mm == pytest.approx(tissue_flatten_mm(placed.body.bmi))


ADULTS = {
    "average": Phenotype(),
    "thin": Phenotype(weight=0.1, muscle=0.5, gender=1.0),
    "heavy": Phenotype(weight=1.0, muscle=0.0, gender=0.0, age=0.7),
}


BUILDS_AND_ARMS = [
    ("average", "sides"),
    ("thin", "sides"),
    ("heavy", "sides"),
    ("average", "raised"),
    pytest.param("thin", "raised", marks=pytest.mark.slow),
    pytest.param("heavy", "raised", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("who", "arms"), BUILDS_AND_ARMS)
def test_supine_back_and_buttocks_both_bear_weight(place, model, who, arms):
    """The upper back (shoulder blades) and the buttocks both rest on the contact surface."""
    placed = place("HFS", arms, ADULTS[who])
    torso = placed.vertices_mm[model.part_mask("torso")]
    j = placed.joints_mm
    notch_y = (j["left_sternoclavicular"][1] + j["right_sternoclavicular"][1]) / 2
    hip_y = (j["left_hip_joint"][1] + j["right_hip_joint"][1]) / 2
    upper_back = torso[(torso[:, 1] < notch_y) & (torso[:, 1] > notch_y - 150)]
    buttocks = torso[np.abs(torso[:, 1] - hip_y) < 80]
    contact = placed.contact_z_mm
    assert upper_back[:, 2].min() - contact < 3.0
    assert buttocks[:, 2].min() - contact < 3.0
    # ... with a flat contact patch, as on a CT table: many trunk vertices on the surface
    assert np.count_nonzero(torso[:, 2] < contact + 0.5) > 20


@pytest.mark.parametrize(("who", "arms"), BUILDS_AND_ARMS)
def test_supine_arms_and_legs_rest_on_the_mattress(place, model, who, arms):
    placed = place("HFS", arms, ADULTS[who])
    v = placed.vertices_mm
    limb_floor = placed.contact_z_mm + 0.5 * placed.sink_mm  # limbs sink half as deep as the trunk
    for side in ("left", "right"):
        arm = v[model.part_mask(f"{side}_upper_arm", f"{side}_forearm"), 2]
        leg = v[model.part_mask(f"{side}_leg"), 2]
        assert arm.min() == pytest.approx(limb_floor, abs=10.0), side
        assert leg.min() == pytest.approx(limb_floor, abs=10.0), side
        assert arm.min() >= limb_floor - 1e-9 and leg.min() >= limb_floor - 1e-9


def test_hands_on_the_chest_rest_on_the_body_not_the_mattress(place, model):
    placed = place("HFS", "chest")
    forearms = placed.vertices_mm[model.part_mask("left_forearm", "right_forearm"), 2]
    assert forearms.min() > placed.contact_z_mm + 30
    assert placed.arm_extension_deg == (0.0, 0.0)


def test_heavier_patients_sink_deeper(place):
    placed = sorted((place("HFS", "sides", p) for p in ADULTS.values()), key=lambda b: b.body.mass_kg)
    masses = [b.body.mass_kg for b in placed]
    sinks = [b.sink_mm for b in placed]
    contacts = [b.contact_z_mm for b in placed]
    assert masses[0] < masses[1] < masses[2]
    assert sinks[0] < sinks[1] < sinks[2]
    assert contacts[0] > contacts[1] > contacts[2]  # same mattress top, deeper contact surface
    flattens = [b.flatten_mm for b in placed]
    assert flattens[0] <= flattens[1] < flattens[2]


def test_mattress_height_moves_the_body_vertically_only(place):
    a, b = place("HFS", "sides"), place("HFS", "sides", mattress_top_z_mm=MATTRESS_TOP_Z_MM + 41.0)
    expected = np.broadcast_to([0.0, 0.0, 41.0], a.vertices_mm.shape)
    np.testing.assert_allclose(b.vertices_mm - a.vertices_mm, expected, atol=1e-9)


@pytest.mark.parametrize("code", ["HFP", "FFP"])
def test_prone_face_lies_in_the_cushion_opening_unflattened(place, model, code):
    """Regression: prone faces used to be flattened onto the mattress (about 30 % of the head's
    cross-section removed). The face now lies in the prone cushion's opening (contact model step 5b)."""
    placed = place(code, "sides")
    m = placed.scanner_from_body
    raw = placed.body.vertices_mm @ m[:3, :3].T + m[:3, 3]  # before the contact model
    head = model.part_mask("head")
    np.testing.assert_allclose(placed.vertices_mm[head], raw[head], atol=1e-9)
    assert raw[head, 2].min() < placed.contact_z_mm  # the face does reach below the contact surface
