"""Simulated bodies (anny): phenotype validation, posed-body shapes, the body-frame convention, arm poses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from positioning.sim.body import (
    COCO_KEYPOINTS,
    PART_NAMES,
    SKELETON_JOINTS,
    ArmPose,
    Phenotype,
    arm_rotations,
    body_model,
    leg_rotations,
    pose_body,
    rotation_deg,
)


@pytest.fixture(scope="module")
def posed(model):
    """The default phenotype in every arm pose (body frame)."""
    return {arms: pose_body(Phenotype(), arms, model=model) for arms in ArmPose}


# -- Phenotype ---------------------------------------------------------------------------------------------
FIELDS = ("gender", "age", "muscle", "weight", "height", "proportions")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [-0.01, 1.01, -5.0, math.nan, math.inf])
def test_phenotype_out_of_range_is_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"phenotype {field} must be in \[0, 1\], got {value}"):
        Phenotype(**{field: value})


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_phenotype_accepts_the_closed_unit_interval(value):
    p = Phenotype(**dict.fromkeys(FIELDS, value))
    assert p.as_kwargs() == dict.fromkeys(FIELDS, value)


def test_phenotype_is_frozen_and_keyword_only():
    with pytest.raises(TypeError):
        Phenotype(0.5)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Phenotype().age = 0.7  # type: ignore[misc]


# -- rotations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("axis", "v", "expected"),
    [("z", (1, 0, 0), (0, 1, 0)), ("x", (0, 1, 0), (0, 0, 1)), ("y", (0, 0, 1), (1, 0, 0))],
)
def test_rotation_deg_is_right_handed(axis, v, expected):
    np.testing.assert_allclose(rotation_deg(axis, 90.0) @ v, expected, atol=1e-12)


@pytest.mark.parametrize("axis", ["x", "y", "z"])
@pytest.mark.parametrize("angle", [-155.0, -12.5, 0.0, 38.0, 90.0])
def test_rotation_deg_is_a_proper_rotation(axis, angle):
    r = rotation_deg(axis, angle)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


MIRROR = np.diag([-1.0, 1.0, 1.0])  # the sagittal plane (body x = 0)


@pytest.mark.parametrize("arms", list(ArmPose))
def test_right_arm_rotations_mirror_the_left(arms):
    jitter = np.array([[4.0, -3.0, 7.0], [4.0, -3.0, 7.0]])  # the same variation on both sides
    rot = arm_rotations(arms, jitter_deg=jitter, extension_deg=(6.0, 6.0))
    for bone in ("upperarm01", "lowerarm01"):
        np.testing.assert_allclose(rot[f"{bone}.R"], MIRROR @ rot[f"{bone}.L"] @ MIRROR, atol=1e-12)


def test_leg_rotations_mirror_and_extend():
    rot = leg_rotations((5.0, 5.0), extension_deg=(10.0, 10.0))
    np.testing.assert_allclose(rot["upperleg01.R"], MIRROR @ rot["upperleg01.L"] @ MIRROR, atol=1e-12)
    # positive extension moves a leg hanging down (-z) posteriorly (+y)
    down = rotation_deg("x", 10.0) @ np.array([0.0, 0.0, -1.0])
    assert down[1] > 0


# -- pose_body ---------------------------------------------------------------------------------------------
def test_body_model_is_shared(model):
    assert body_model() is model


@pytest.mark.parametrize("arms", list(ArmPose))
def test_pose_body_shapes(posed, model, arms):
    b = posed[arms]
    v = b.vertices_mm
    assert v.ndim == 2 and v.shape[1] == 3 and v.dtype == np.float64 and np.isfinite(v).all()
    assert b.faces.shape[1] == 3 and b.faces.dtype == np.int32
    assert b.faces.min() == 0 and b.faces.max() == len(v) - 1
    assert list(b.keypoints_mm) == list(COCO_KEYPOINTS)
    assert set(b.joints_mm) == set(SKELETON_JOINTS)
    assert all(p.shape == (3,) for p in (*b.keypoints_mm.values(), *b.joints_mm.values()))
    assert b.bone_heads_mm.shape == (len(model.bone_labels), 3)
    assert b.vertex_part.shape == (len(v),)
    assert set(np.unique(b.vertex_part)) == set(range(len(PART_NAMES)))
    # an adult of average build: anthropometry in a plausible range
    assert 1500 < b.height_mm < 1900 and 40 < b.mass_kg < 90 and 15 < b.bmi < 30


def test_shared_arrays_are_read_only(model, posed):
    with pytest.raises(ValueError):
        posed[ArmPose.SIDES].faces[0, 0] = 1
    with pytest.raises(ValueError):
        model.vertex_part[0] = 0


def test_body_frame_convention(posed, model):
    """Body frame = DICOM LPS: +x the patient's left, +y posterior, +z superior."""
    b = posed[ArmPose.SIDES]
    k, v = b.keypoints_mm, b.vertices_mm
    assert k["left_shoulder"][0] > 100 and k["right_shoulder"][0] < -100
    assert k["left_hip"][0] > 0 > k["right_hip"][0]
    assert k["nose"][1] < np.median(v[model.part_mask("torso"), 1]) - 80  # the face is anterior (-y)
    assert k["nose"][2] > k["left_shoulder"][2] > k["left_hip"][2] > k["left_knee"][2] > k["left_ankle"][2]
    assert v[model.part_mask("left_upper_arm"), 0].min() > 0
    assert v[model.part_mask("right_leg"), 0].mean() < 0


def test_vertex_parts_follow_the_skeleton(posed, model):
    b = posed[ArmPose.SIDES]
    v = b.vertices_mm
    head = v[model.part_mask("head")]
    assert head[:, 2].max() == pytest.approx(v[:, 2].max())  # the skull vertex is the top of the body
    legs = v[model.part_mask("left_leg", "right_leg")]
    assert legs[:, 2].min() == pytest.approx(v[:, 2].min())  # the soles are the bottom


def test_arms_at_the_sides_put_the_wrists_below_the_shoulders(posed):
    k = posed[ArmPose.SIDES].keypoints_mm
    for side, sign in (("left", 1), ("right", -1)):
        wrist, shoulder = k[f"{side}_wrist"], k[f"{side}_shoulder"]
        assert wrist[2] < shoulder[2] - 350  # hanging down along the body
        assert sign * wrist[0] > 100  # beside the body, on its own side


def test_raised_arms_put_the_wrists_above_the_head(posed, model):
    b = posed[ArmPose.RAISED]
    skull_z = b.vertices_mm[model.part_mask("head"), 2].max()
    for side, sign in (("left", 1), ("right", -1)):
        wrist = b.keypoints_mm[f"{side}_wrist"]
        assert wrist[2] > skull_z + 50
        assert sign * wrist[0] > 0  # each hand stays on its own side


def test_hands_on_the_chest_put_the_wrists_in_front_of_the_torso_and_medial(posed, model):
    b = posed[ArmPose.CHEST]
    torso = b.vertices_mm[model.part_mask("torso")]
    k = b.keypoints_mm
    for side in ("left", "right"):
        wrist, shoulder = k[f"{side}_wrist"], k[f"{side}_shoulder"]
        level = torso[np.abs(torso[:, 2] - wrist[2]) < 20]
        assert wrist[1] < level[:, 1].min()  # in front of (anterior to) the trunk surface at its level
        assert abs(wrist[0]) < 0.5 * abs(shoulder[0])  # medial, near the midline
        assert k["left_hip"][2] < wrist[2] < shoulder[2]  # between the hips and the shoulders


@pytest.mark.parametrize("arms", list(ArmPose))
def test_default_phenotype_is_left_right_symmetric(posed, arms):
    k = posed[arms].keypoints_mm
    for joint in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        left, right = k[f"left_{joint}"], k[f"right_{joint}"]
        np.testing.assert_allclose(left * [-1, 1, 1], right, atol=1.0, err_msg=joint)


def test_positive_head_tilt_is_flexion_not_extension(model):
    """Regression: ``head_tilt_deg`` > 0 used to extend the head (chin up), against its documented sign."""
    base = pose_body(Phenotype(), ArmPose.SIDES, model=model)
    flexed = pose_body(Phenotype(), ArmPose.SIDES, head_tilt_deg=20.0, model=model)
    extended = pose_body(Phenotype(), ArmPose.SIDES, head_tilt_deg=-20.0, model=model)
    nose = {t: b.keypoints_mm["nose"] for t, b in ((0, base), (20, flexed), (-20, extended))}
    assert nose[20][2] < nose[0][2] - 10 < nose[-20][2] - 20  # flexion: chin toward the chest
    np.testing.assert_allclose(flexed.keypoints_mm["left_hip"], base.keypoints_mm["left_hip"], atol=1e-6)
