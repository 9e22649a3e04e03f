"""Tests of positioning.perception.orientation: patient position codes and arm state.

Hand-made 3-D landmark sets (a canonical body turned into each of the eight DICOM positions, off-centre
and slightly yawed) pin the conventions; simulated sessions (SimulatedSession + MediaPipe on the colour
image + lifting) check the whole chain. The larger sweep is marked slow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from positioning.perception.lifting import Landmarks3D, depth_offsets_for, lift_landmarks, reoffset_landmarks
from positioning.perception.orientation import (
    BODY_AXES,
    ArmState,
    OrientationResult,
    PatientPosition,
    axial_profile,
    estimate_arm_state,
    estimate_orientation,
    position_from_axes,
    swap_left_right,
)

ALL_CODES = [str(c) for c in PatientPosition]
TABLE_Z_MM = -180.0

#: A canonical adult in anny's body frame (mm): +x the patient's left, +y posterior, +z superior; the
#: trunk's joint centres at y = 0, its posterior surface about 100 mm behind them.
_BODY = {
    "nose": (0, -105, 650), "left_eye": (32, -78, 680), "right_eye": (-32, -78, 680),
    "left_ear": (75, 0, 660), "right_ear": (-75, 0, 660),
    "left_shoulder": (180, 0, 450), "right_shoulder": (-180, 0, 450),
    "left_hip": (95, 0, 0), "right_hip": (-95, 0, 0),
    "left_knee": (100, -20, -450), "right_knee": (-100, -20, -450),
    "left_ankle": (100, 20, -880), "right_ankle": (-100, 20, -880),
}  # fmt: skip
_ARMS = {
    "sides": {"elbow": (230, 10, 170), "wrist": (240, -10, -90)},
    "raised": {"elbow": (200, 0, 720), "wrist": (150, 0, 960)},
    "chest": {"elbow": (230, -40, 200), "wrist": (60, -150, 170)},
}


def _body(arms: str) -> dict[str, np.ndarray]:
    pts = {k: np.array(v, float) for k, v in _BODY.items()}
    for joint, (x, y, z) in _ARMS[arms].items():
        pts[f"left_{joint}"] = np.array([x, y, z], float)
        pts[f"right_{joint}"] = np.array([-x, y, z], float)
    return pts


def hand_made(
    code: str, arms: str = "sides", *, yaw_deg: float = 2.5, lateral_mm: float = 35.0
) -> Landmarks3D:
    """The canonical body lying in ``code`` on a table, yawed and off-centre (scanner frame)."""
    s, p, left = BODY_AXES[PatientPosition(code)]
    rot = np.stack([left, p, s], axis=1)  # body x -> left, body y -> posterior, body z -> superior
    c, si = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    yaw = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1.0]])
    decub = code.endswith(("DL", "DR"))
    offset = np.array([lateral_mm, -900.0, TABLE_Z_MM + (200.0 if decub else 110.0)])
    body = _body(arms)
    names = tuple(body)
    pts = np.array([yaw @ rot @ body[n] for n in names]) + offset
    return Landmarks3D(
        names=names, points_mm=pts, surface_mm=pts, confidence=np.full(len(names), 0.9),
        uv_px=np.zeros((len(names), 2)), backend="hand",
    )  # fmt: skip


#: Surface height above the table (mm) along the centre line, at multiples of the torso length superior
#: of the hips, as the simulated bodies show it (central band, 90th percentile): supine, the pelvis, the
#: abdomen and chest level or above it, the neck dip, the face; prone, the buttocks the highest, the back
#: falling off toward the head, the back of the head low; obese supine, the belly far above the pelvis and
#: the face (the cases where MediaPipe put the face on the hands crossed above the head).
PROFILES = {
    "supine": [(-2.0, 120), (-1.2, 100), (-0.5, 160), (0.0, 200), (0.3, 225), (0.7, 235), (0.95, 170),
               (1.05, 130), (1.2, 200), (1.4, 225), (1.6, 170), (1.75, 60)],
    "prone": [(-2.0, 80), (-1.0, 150), (-0.4, 240), (0.0, 330), (0.3, 260), (0.7, 225), (1.0, 190),
              (1.2, 140), (1.4, 150), (1.6, 120), (1.75, 60)],
    "obese_supine": [(-2.0, 120), (-0.5, 180), (0.0, 280), (0.3, 330), (0.6, 300), (0.9, 220),
                     (1.05, 150), (1.25, 230), (1.45, 240), (1.6, 160), (1.75, 60)],
}  # fmt: skip
TORSO_MM = 450.0  # the canonical body's shoulder-hip distance


def _profile_height(profile: str, along: np.ndarray) -> np.ndarray:
    knots = np.array(PROFILES[profile], dtype=float)
    return np.interp(along, knots[:, 0], knots[:, 1])


def surface_cloud(
    code: str, profile: str, *, yaw_deg: float = 2.5, lateral_mm: float = 35.0, step_mm: float = 10.0
) -> np.ndarray:
    """Patient surface points (scanner frame) of the canonical body lying in ``code`` (placed as
    :func:`hand_made` places it), with the height profile ``profile`` along its centre line: trunk 340 mm
    wide, head 160 mm, legs 320 mm."""
    s_axis, _p, left = BODY_AXES[PatientPosition(code)]
    c, si = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    yaw = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1.0]])
    along, lat = np.meshgrid(np.arange(-2.0, 1.75, step_mm / TORSO_MM), np.arange(-170, 171, step_mm))
    along, lat = along.ravel(), lat.ravel()
    half_width = np.where(along > 1.05, 80.0, 170.0)
    keep = np.abs(lat) <= half_width
    along, lat = along[keep], lat[keep]
    xy = (yaw @ (np.outer(along * TORSO_MM, s_axis) + np.outer(lat, left)).T).T[:, :2]
    xy += np.array([lateral_mm, -900.0])
    z = TABLE_Z_MM + _profile_height(profile, along)
    return np.column_stack([xy, z])


def seen_from_above(lm: Landmarks3D, profile: str, names: tuple[str, ...]) -> Landmarks3D:
    """``lm`` with the visible surface of ``names`` at the profile's height (as the camera sees the trunk
    and the head), not at the joint centres."""
    surface = lm.surface_mm.copy()
    hips = (lm.point("left_hip") + lm.point("right_hip")) / 2
    sup = (lm.point("left_shoulder") + lm.point("right_shoulder")) / 2 - hips
    sup = sup[:2] / np.linalg.norm(sup[:2])
    for n in names:
        along = float((lm.point(n) - hips)[:2] @ sup) / TORSO_MM
        surface[lm.index(n)][2] = TABLE_Z_MM + float(_profile_height(profile, np.array(along)))
    return lm.replace(surface_mm=surface)


_FACE = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
_TRUNK = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


# ----------------------------------------------------------------------------------- conventions


def test_body_axes_are_right_handed_and_match_the_table():
    for code, (s, p, left) in BODY_AXES.items():
        np.testing.assert_allclose(np.cross(p, s), left, err_msg=str(code))  # L = P x S
        assert (s[1] > 0) == code.startswith("HF")
    assert BODY_AXES[PatientPosition.HFS][2].tolist() == [1, 0, 0]  # HFS: left is +x
    assert BODY_AXES[PatientPosition.HFP][2].tolist() == [-1, 0, 0]
    assert BODY_AXES[PatientPosition.FFS][2].tolist() == [-1, 0, 0]
    assert BODY_AXES[PatientPosition.FFP][2].tolist() == [1, 0, 0]
    assert BODY_AXES[PatientPosition.HFDL][2].tolist() == [0, 0, -1]  # lying on the left side
    assert BODY_AXES[PatientPosition.FFDR][2].tolist() == [0, 0, 1]
    assert [str(c) for c in PatientPosition] == ["HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"]
    assert [str(a) for a in ArmState] == ["sides", "raised", "chest"]


@pytest.mark.parametrize("code", ALL_CODES)
def test_position_from_axes_round_trip(code):
    s, p, _ = BODY_AXES[PatientPosition(code)]
    assert position_from_axes(bool(s[1] > 0), -p) == code


@pytest.mark.parametrize("code", ALL_CODES)
@pytest.mark.parametrize("arms", ["sides", "raised", "chest"])
def test_hand_made_all_codes_and_arm_states(code, arms):
    lm = hand_made(code, arms)
    o = estimate_orientation(lm)
    assert o.position == code, o.evidence
    assert o.confidence > 0.6 and not o.labels_swapped
    assert o.head_first == code.startswith("HF") and o.decubitus == code.endswith(("DL", "DR"))
    left = BODY_AXES[PatientPosition(code)][2]
    np.testing.assert_allclose(o.left, left)
    np.testing.assert_allclose(np.cross(o.superior, o.anterior), left)  # left = S x A
    a = estimate_arm_state(lm, o)
    assert a.state == arms, a.evidence
    assert a.per_arm == {"left": ArmState(arms), "right": ArmState(arms)}
    assert 0.3 < a.confidence <= 1.0


@pytest.mark.parametrize("code", ["HFS", "HFP", "FFS", "FFP", "HFDL", "FFDR"])
def test_swapped_labels_are_detected_and_corrected(code):
    lm = swap_left_right(hand_made(code, "raised"))
    o = estimate_orientation(lm)
    assert o.position == code, o.evidence  # the geometry decides, not the labels
    assert o.labels_swapped
    fixed = swap_left_right(lm)
    assert not estimate_orientation(fixed).labels_swapped
    np.testing.assert_allclose(fixed.points_mm, hand_made(code, "raised").points_mm)


def test_swap_left_right_keeps_order_and_unpaired():
    lm = hand_made("HFS")
    sw = swap_left_right(lm)
    assert sw.names == lm.names
    np.testing.assert_array_equal(sw.point("nose"), lm.point("nose"))
    np.testing.assert_array_equal(sw.point("left_hip"), lm.point("right_hip"))


def test_missing_landmarks_give_no_position():
    lm = hand_made("HFS")
    keep = {"nose", "left_eye"}
    conf = np.array([0.9 if n in keep else 0.0 for n in lm.names])
    o = estimate_orientation(lm.replace(confidence=conf))
    assert o.position is None and o.confidence == 0.0
    a = estimate_arm_state(lm.replace(confidence=conf), o)
    assert a.state is None and a.confidence == 0.0


def test_one_arm_missing_still_judged_with_lower_confidence():
    lm = hand_made("FFS", "raised")
    both = estimate_arm_state(lm, estimate_orientation(lm))
    conf = lm.confidence.copy()
    for n in ("left_wrist", "left_elbow"):
        conf[lm.index(n)] = 0.0
    one = estimate_arm_state(lm.replace(confidence=conf), estimate_orientation(lm))
    assert one.state == "raised" and one.per_arm["left"] is None and one.confidence < both.confidence


def test_arms_disagree_the_arm_in_the_way_wins():
    lm = hand_made("HFS", "raised")
    sides = hand_made("HFS", "sides")
    pts = lm.points_mm.copy()
    for n in ("left_elbow", "left_wrist"):
        pts[lm.index(n)] = sides.point(n)
    mixed = lm.replace(points_mm=pts, surface_mm=pts)
    a = estimate_arm_state(mixed, estimate_orientation(mixed))
    assert a.per_arm == {"left": "sides", "right": "raised"} and a.state == "sides"
    assert a.confidence < 0.5


def test_lost_arm_folded_onto_the_body_is_ignored():
    """Regression (FFP, arms raised, MediaPipe): one arm's elbow and wrist were put on the chest, a
    forearm of 0.13 torso lengths; it must not outvote the other, raised arm."""
    lm = hand_made("FFP", "raised")
    pts = lm.points_mm.copy()
    sh = lm.point("right_shoulder")
    hip = lm.point("right_hip")
    pts[lm.index("right_elbow")] = sh + 0.15 * (hip - sh)
    pts[lm.index("right_wrist")] = sh + 0.25 * (hip - sh) + [0, 0, 10]
    bad = lm.replace(points_mm=pts, surface_mm=pts)
    a = estimate_arm_state(bad, estimate_orientation(bad))
    assert a.state == "raised" and a.per_arm["right"] is None and a.evidence["right_implausible_arm"] == 1.0


def test_trunk_width_cue_from_patient_points():
    lm = hand_made("HFS")
    o = estimate_orientation(lm)
    rng = np.random.default_rng(0)
    wide = rng.uniform([-200, -1500, -150], [250, -700, 50], size=(2000, 3))
    narrow = rng.uniform([-70, -1500, -150], [120, -700, 250], size=(2000, 3))
    o_wide = estimate_orientation(lm, patient_points_mm=wide)
    o_narrow = estimate_orientation(lm, patient_points_mm=narrow)
    assert (
        o_wide.evidence["decubitus_score"]
        < o.evidence["decubitus_score"]
        < o_narrow.evidence["decubitus_score"]
    )
    assert o_wide.position == "HFS"
    with pytest.raises(ValueError, match="patient_points_mm"):
        estimate_orientation(lm, patient_points_mm=np.zeros((5, 2)))


def test_axial_profile_pin():
    """Lopsided case: yawed, off-centre centre line, torso 450 mm; a raised step over the hips, a high
    arm beside the body (outside the band) and a bin too sparse to count."""
    yaw = math.radians(10.0)
    sup = np.array([math.sin(yaw), math.cos(yaw)])  # superior, mostly +y
    lat = np.array([-sup[1], sup[0]])
    origin = np.array([60.0, -1000.0, 5.0])
    along, across = np.meshgrid(np.arange(-0.4, 0.4, 0.01) * 450.0, np.arange(-40.0, 41.0, 10.0))
    along, across = along.ravel(), across.ravel()
    xy = origin[:2] + np.outer(along, sup) + np.outer(across, lat)
    z = np.where(np.abs(along) < 0.1 * 450.0, 120.0, 20.0)
    arm = np.column_stack([origin[:2] + np.outer(np.zeros(50), sup) + 200.0 * lat, np.full(50, 900.0)])
    sparse = np.array([[*(origin[:2] + 1.0 * 450.0 * sup), 700.0]] * 3)
    cloud = np.vstack([np.column_stack([xy, z]), arm, sparse])
    centres, heights = axial_profile(cloud, origin, sup, 450.0, band_fraction=0.12, bin_fraction=0.05)
    assert centres.shape == heights.shape == (100,)
    np.testing.assert_allclose(centres[[0, 50, -1]], [-2.475, 0.025, 2.475])
    at = {round(float(cc), 3): h for cc, h in zip(centres, heights, strict=True)}
    assert at[0.025] == pytest.approx(120.0) and at[-0.025] == pytest.approx(120.0)
    assert at[0.225] == pytest.approx(20.0) and at[-0.225] == pytest.approx(20.0)
    assert math.isnan(at[1.025])  # 3 points: fewer than min_points
    assert np.nanmax(heights) == pytest.approx(120.0)  # the arm beside the body is outside the band
    # z is not relative to anything: shifting the cloud shifts the heights
    _, shifted = axial_profile(cloud + np.array([0, 0, 100.0]), origin, sup, 450.0)
    np.testing.assert_allclose(shifted, heights + 100.0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((5, 2)), np.zeros(3), np.array([0, 1.0]), 450.0), r"points_mm must be \(N, 3\)"),
        ((np.zeros(3), np.zeros(3), np.array([0, 1.0]), 450.0), r"points_mm must be \(N, 3\)"),
        ((np.zeros((5, 3)), np.zeros(3), np.array([0, 1.0]), 0.0), "torso_mm must be > 0"),
        ((np.zeros((5, 3)), np.zeros(3), np.array([0, 1.0]), float("nan")), "torso_mm must be > 0"),
    ],
)
def test_axial_profile_invalid(args, match):
    with pytest.raises(ValueError, match=match):
        axial_profile(*args)


def test_axial_profile_of_no_points_is_empty():
    centres, heights = axial_profile(np.zeros((0, 3)), np.zeros(3), np.array([0, 1.0]), 450.0)
    assert len(centres) == len(heights) and np.all(np.isnan(heights))


@pytest.mark.parametrize("code", ["HFS", "HFP", "FFS", "FFP"])
@pytest.mark.parametrize("arms", ["sides", "raised"])
def test_surface_profile_cues(code, arms):
    """Trunk and head seen from above as the simulated bodies are, and their surface points: every cue
    points the right way, with the labels swapped too (the profile and the head decide)."""
    profile = "supine" if code.endswith("S") else "prone"
    lm = seen_from_above(hand_made(code, arms), profile, _FACE + _TRUNK)
    cloud = surface_cloud(code, profile)
    sign = 1.0 if code.endswith("S") else -1.0
    for landmarks in (lm, swap_left_right(lm)):
        o = estimate_orientation(landmarks, patient_points_mm=cloud)
        assert o.position == code, o.evidence
        ev = o.evidence
        for cue in ("head_hip", "cloud_head_hip", "hip_rise"):
            assert sign * ev[f"supine_score_{cue}"] > 0.5, (cue, ev)


# ------------------------------------------------------------------- regressions (benchmark failures)


def test_regression_hfp_arms_up_504_face_off_the_body():
    """hfp-arms-up#504 (HFP, raised -> HFS): MediaPipe put the face just beyond the crown, off the body,
    so the face had no depth and no height; the head-hip cue was missing and the labels (MediaPipe saw a
    face: supine chirality) decided. The surface profile decides now."""
    lm = swap_left_right(seen_from_above(hand_made("HFP", "raised"), "prone", _FACE + _TRUNK))
    conf = lm.confidence.copy()
    for n in _FACE:
        conf[lm.index(n)] = 0.0  # lifting gives no-depth landmarks confidence 0
    lm = lm.replace(confidence=conf)
    cloud = surface_cloud("HFP", "prone")
    o = estimate_orientation(lm, patient_points_mm=cloud)
    assert o.position == "HFP" and o.labels_swapped, o.evidence
    assert math.isnan(o.evidence["landmark_head_z_mm"]) and math.isfinite(o.evidence["cloud_head_z_mm"])
    assert o.evidence["supine_score_labels"] == pytest.approx(0.25, abs=0.01)  # weak toward supine


def test_regression_ffp_arms_down_529_prone_head_held_high():
    """ffp-arms-down#529 (FFP, sides -> FFS): the back of the head was high for a prone patient (head-hip
    -0.175, the boundary -0.15) and the labels said supine at weight 0.5. The profile (buttocks the
    highest, the back falling off toward the head) outweighs both."""
    lm = swap_left_right(seen_from_above(hand_made("FFP", "sides"), "prone", _TRUNK))
    surface = lm.surface_mm.copy()
    hips_z = (surface[lm.index("left_hip")][2] + surface[lm.index("right_hip")][2]) / 2
    for n in _FACE:
        surface[lm.index(n)][2] = hips_z - 0.175 * TORSO_MM
    lm = lm.replace(surface_mm=surface)
    o = estimate_orientation(lm, patient_points_mm=surface_cloud("FFP", "prone"))
    assert o.position == "FFP" and o.labels_swapped, o.evidence
    assert o.evidence["supine_score"] < -1.0


@pytest.mark.parametrize("case", ["obese#530", "obese#554"])
def test_regression_obese_530_554_face_put_on_the_hands(case):
    """obese#530 and #554 (HFS, raised -> HFP): the forearms crossed above the head; MediaPipe put the
    face (and the shoulders, at the elbows) on them, 200-250 mm superior of the head and as low as the
    hands, and the obese belly made the hips high: head-hip -0.29 and -0.38. The head's height now comes
    from the profile where the face landmarks are lower, and the belly rises above the pelvis."""
    lm = seen_from_above(hand_made("HFS", "raised"), "obese_supine", _TRUNK)
    points, surface = lm.points_mm.copy(), lm.surface_mm.copy()
    sup = BODY_AXES[PatientPosition.HFS][0]
    for n in _FACE:
        i = lm.index(n)
        points[i] = points[i] + 250.0 * sup
        surface[i] = points[i]
        surface[i][2] = TABLE_Z_MM + 40.0  # on the hands, lying on the head holder
    lm = lm.replace(points_mm=points, surface_mm=surface)
    cloud = surface_cloud("HFS", "obese_supine")
    o = estimate_orientation(lm, patient_points_mm=cloud)
    assert o.position == "HFS", (case, o.evidence)
    assert o.evidence["landmark_head_z_mm"] == pytest.approx(TABLE_Z_MM + 40.0)
    assert o.evidence["cloud_head_z_mm"] > TABLE_Z_MM + 200.0


@pytest.mark.parametrize("code", ["HFS", "FFP"])
@pytest.mark.parametrize("missing", ["left_shoulder", "right_hip"])
def test_regression_obese_530_one_shoulder_without_depth(code, missing):
    """obese#530 (HFS -> HFDL once the segmentation dropped the low left shoulder pixel): with one
    shoulder the body axis ran from the hips to that shoulder, 12 degrees off, and the nose lay 125 mm
    off the centre line (a decubitus cue). The seen shoulder is projected onto the axis across the hips."""
    lm = hand_made(code, "raised", yaw_deg=4.0)
    conf = lm.confidence.copy()
    conf[lm.index(missing)] = 0.0
    o = estimate_orientation(lm.replace(confidence=conf))
    assert o.position == code, o.evidence
    assert abs(o.evidence["nose_lateral_mm"]) < 20.0
    assert o.evidence["torso_mm"] == pytest.approx(450.0, abs=15.0)
    a = estimate_arm_state(lm.replace(confidence=conf), o)
    assert a.state == "raised", a.evidence


def test_regression_hfs_arms_up_536_shoulders_drawn_up_to_the_elbows():
    """hfs-arms-up#536 (HFS, raised -> arms None): with the arms raised MediaPipe put both shoulders
    about 100 mm superior, 0.14 torso lengths from the elbows; the shoulder-elbow test called both arms
    folded-up lost arms. The whole arm (0.69 torso lengths) is plausible: raised."""
    lm = hand_made("HFS", "raised")
    pts = lm.points_mm.copy()
    for side in ("left", "right"):
        sh, el = lm.point(f"{side}_shoulder"), lm.point(f"{side}_elbow")
        pts[lm.index(f"{side}_shoulder")] = sh + 0.7 * (el - sh)
    moved = lm.replace(points_mm=pts, surface_mm=pts)
    a = estimate_arm_state(moved, estimate_orientation(lm))
    assert a.state == "raised" and a.per_arm == {"left": "raised", "right": "raised"}, a.evidence
    assert a.evidence["left_upper_arm_over_torso"] < 0.15 and "left_implausible_arm" not in a.evidence


def test_regression_ffp_arms_down_529_wrist_on_the_back_is_not_on_the_chest():
    """ffp-arms-down#529, once read prone: MediaPipe put a wrist (confidence 0.3) on the buttocks near the
    centre line; face down the chest faces the table, so a wrist seen on the back is not on the chest."""
    lm = hand_made("FFP", "sides")
    pts = lm.points_mm.copy()
    o = estimate_orientation(lm)
    sh = (lm.point("left_shoulder") + lm.point("right_shoulder")) / 2
    hip = (lm.point("left_hip") + lm.point("right_hip")) / 2
    for side, dx in (("left", 25.0), ("right", -25.0)):
        w = sh + 0.8 * (hip - sh) + dx * o.left
        w[2] = hip[2] + 20.0  # on the back's surface, a little above the hips' joint height
        pts[lm.index(f"{side}_wrist")] = w
    on_back = lm.replace(points_mm=pts, surface_mm=pts)
    a = estimate_arm_state(on_back, o)
    assert a.state == "sides", a.evidence
    assert a.evidence["left_chest_margin_mm"] < 0 and a.evidence["left_anterior_mm"] < 0
    # supine, the same wrist on the (visible) anterior surface is on the chest
    sup = hand_made("FFS", "chest")
    assert estimate_arm_state(sup, estimate_orientation(sup)).state == "chest"


def test_result_is_a_plain_dataclass():
    o = estimate_orientation(hand_made("HFP"))
    assert isinstance(o, OrientationResult) and dataclasses.is_dataclass(o)
    assert all(isinstance(k, str) for k in o.evidence)


# ----------------------------------------------------------------------------- simulated sessions


def simulate(position: str, arms: str, seed: int):
    """One simulated frame: phenotype, room and rig from ``hfs-arms-up`` with ``seed``, then the position
    and arms set (as ``tests/perception/test_lifting.py``'s offline tools do)."""
    from positioning.sim.body import ArmPose
    from positioning.sim.placement import PatientPosition as SimPosition
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session("hfs-arms-up", seed)
    placement = dataclasses.replace(spec.placement, position=SimPosition(position), arms=ArmPose(arms))
    spec = dataclasses.replace(spec, placement=placement)
    frame, truth = SimulatedSession(spec).frame(0)
    return spec, frame, truth


def run_case(position: str, arms: str, seed: int, backend):
    """Simulate one frame, detect with MediaPipe, lift, orient, re-offset, judge the arms."""
    spec, frame, truth = simulate(position, arms, seed)
    cal = spec.rig.calibration()
    table_z = spec.room.mattress_top_z_mm  # stand-in for the table-plane estimate
    lm2 = backend.detect(frame.color_rgb)
    assert lm2 is not None, f"MediaPipe found nobody in {position} {arms} {seed}"
    lm = lift_landmarks(lm2, frame, cal, table_top_z_mm=table_z)
    o = estimate_orientation(lm)
    lm = reoffset_landmarks(lm, cal, offsets=depth_offsets_for(o.position), table_top_z_mm=table_z)
    if o.labels_swapped:
        lm = swap_left_right(lm)
    a = estimate_arm_state(lm, o)
    return o, a, lm, truth


@pytest.fixture(scope="module")
def backend():
    from positioning.perception.landmarks import MediaPipePoseBackend, default_model_path

    if not default_model_path().is_file():
        pytest.skip("MediaPipe model not built (python -m positioning.perception.landmarks.model_build)")
    with MediaPipePoseBackend() as b:
        yield b


FAST_CASES = [("HFS", "raised", 100), ("HFP", "sides", 100), ("FFS", "sides", 101), ("FFP", "raised", 101)]


@pytest.mark.parametrize(("position", "arms", "seed"), FAST_CASES)
def test_simulated_sessions_position_and_arms(position, arms, seed, backend):
    o, a, lm, truth = run_case(position, arms, seed, backend)
    assert o.position == position, o.evidence
    assert a.state == arms, a.evidence
    assert o.confidence > 0.5
    # after label correction, the patient's left shoulder lies on the patient's left
    left = BODY_AXES[PatientPosition(position)][2]
    d = lm.point("left_shoulder") - lm.point("right_shoulder")
    assert d @ left > 0
    # and the corrected labels match the truth better than the exchanged ones would
    kp = truth.keypoints_mm
    same = sum(np.linalg.norm(lm.point(f"{x}_shoulder") - kp[f"{x}_shoulder"]) for x in ("left", "right"))
    crossed = sum(np.linalg.norm(lm.point(f"{x}_shoulder") - kp[f"{y}_shoulder"]) for x, y in
                  (("left", "right"), ("right", "left")))  # fmt: skip
    assert same < crossed


#: Seeds 300-303 were held out of the design of the rules (100-101, 200-205) and of the offset fit.
SLOW_CASES = [
    (pos, arms, seed)
    for seed in (300, 301, 302, 303)
    for pos in ("HFS", "HFP", "FFS", "FFP")
    for arms in ("raised", "sides")
] + [("HFS", "chest", 300), ("FFS", "chest", 301)]


@pytest.mark.slow
@pytest.mark.parametrize(("position", "arms", "seed"), SLOW_CASES)
def test_simulated_sweep_supine_prone(position, arms, seed, backend):
    o, a, _, _ = run_case(position, arms, seed, backend)
    assert (str(o.position), str(a.state)) == (position, arms), (o.evidence, a.evidence)


@pytest.mark.slow
@pytest.mark.parametrize("position", ["HFDL", "HFDR", "FFDL", "FFDR"])
def test_simulated_sweep_decubitus(position, backend):
    o, a, _, _ = run_case(position, "raised", 302, backend)
    assert o.position == position, o.evidence
    assert a.state == "raised", a.evidence
