"""Anatomical landmarks of a placed body: complete, in anatomical order along y, on the correct sides."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.sim.anatomy import ANATOMICAL_LANDMARKS, anatomical_landmarks
from positioning.sim.body import Phenotype
from positioning.sim.placement import PatientPosition

#: Superior to inferior.
CRANIOCAUDAL = (
    "skull_vertex", "chin", "jugular_notch", "xiphoid", "costophrenic", "iliac_crest", "pubic_symphysis",
    "lesser_trochanter",
)  # fmt: skip

LATERAL_OFFSET_MM = -41.0  # off-centre, so that "x > 0" is not the same as "on the patient's left"
PEOPLE = {"adult": Phenotype(), "child": Phenotype(age=0.3), "obese": Phenotype(weight=1.0, muscle=0.0)}


@pytest.fixture(scope="module")
def landmarks(place_cached, model):
    """``landmarks(code, who)`` -> (scanner-frame landmarks, placed body)."""
    cache = {}

    def _get(code: str, who: str = "adult"):
        if (code, who) not in cache:
            placed = place_cached(
                code, "raised", PEOPLE[who], lateral_offset_mm=LATERAL_OFFSET_MM, yaw_deg=3.0
            )
            m = placed.scanner_from_body
            body = anatomical_landmarks(placed.body, model)
            cache[code, who] = ({k: m[:3, :3] @ p + m[:3, 3] for k, p in body.items()}, placed)
        return cache[code, who]

    return _get


def test_every_landmark_is_returned(landmarks):
    lm, _ = landmarks("HFS")
    assert list(lm) == list(ANATOMICAL_LANDMARKS)
    assert all(p.shape == (3,) and np.isfinite(p).all() for p in lm.values())


@pytest.mark.parametrize(
    ("code", "who"),
    [("HFS", "adult"), ("FFS", "adult"), ("HFS", "child"), ("HFS", "obese"), ("HFP", "adult"),
     ("HFDL", "adult"), ("FFDR", "adult")],
)  # fmt: skip
def test_landmarks_are_in_anatomical_order_along_the_table(landmarks, code, who):
    """Head first: larger y is more superior; feet first: the order reverses."""
    lm, _ = landmarks(code, who)
    y = np.array([lm[name][1] for name in CRANIOCAUDAL])
    superior = 1.0 if PatientPosition(code).head_first else -1.0
    steps = -np.diff(y) * superior  # superior minus the next one down, along the patient's S axis
    assert (steps > 0).all(), dict(zip(CRANIOCAUDAL[1:], steps.round(1), strict=True))


@pytest.mark.parametrize("code", ["HFS", "FFS"])
def test_trunk_landmark_spacing_is_adult_sized(landmarks, code):
    lm, _ = landmarks(code)
    trunk = abs(lm["jugular_notch"][1] - lm["pubic_symphysis"][1])
    assert 380 < trunk < 560
    assert 120 < abs(lm["jugular_notch"][1] - lm["xiphoid"][1]) < 220  # the sternum


def test_head_first_skull_vertex_is_at_head_y(landmarks):
    lm, placed = landmarks("HFS")
    assert lm["skull_vertex"][1] == pytest.approx(placed.params.head_y_mm, abs=5.0)


@pytest.mark.parametrize(
    ("code", "left_axis"),
    [("HFS", (1, 0, 0)), ("HFP", (-1, 0, 0)), ("FFS", (-1, 0, 0)), ("FFP", (1, 0, 0)), ("HFDL", (0, 0, -1)),
     ("FFDR", (0, 0, 1))],
)  # fmt: skip
def test_left_and_right_landmarks_are_on_the_patients_sides(landmarks, code, left_axis):
    lm, _ = landmarks(code)
    left_axis = np.asarray(left_axis, float)
    centre = lm["iliac_crest"]
    for name in ("greater_trochanter", "iliac_crest"):
        assert (lm[f"left_{name}"] - centre) @ left_axis > 60, name
        assert (lm[f"right_{name}"] - centre) @ left_axis < -60, name


def test_hfs_left_greater_trochanter_is_at_plus_x(landmarks):
    """The literal pin: HFS, patient's left = +x (relative to the off-centre midline)."""
    lm, _ = landmarks("HFS")
    assert lm["left_greater_trochanter"][0] > LATERAL_OFFSET_MM + 80
    assert lm["right_greater_trochanter"][0] < LATERAL_OFFSET_MM - 80


@pytest.mark.parametrize("code", ["HFS", "FFS", "HFP"])
def test_lung_apex_is_above_the_jugular_notch(landmarks, code):
    lm, _ = landmarks(code)
    superior = 1.0 if PatientPosition(code).head_first else -1.0
    rise = (lm["lung_apex"][1] - lm["jugular_notch"][1]) * superior
    assert 10 < rise < 60  # 2-3 cm above the medial clavicle


@pytest.mark.parametrize(("code", "anterior_z"), [("HFS", 1.0), ("HFP", -1.0)])
def test_anterior_landmarks_are_on_the_anterior_surface(landmarks, code, anterior_z):
    """Jugular notch and xiphoid lie on the front of the trunk, in front of the mid-depth landmarks."""
    lm, placed = landmarks(code)
    for name in ("jugular_notch", "xiphoid"):
        assert (lm[name][2] - lm["costophrenic"][2]) * anterior_z > 20, name
    # ... and the mid-depth ones between the front and the back
    back_z = placed.contact_z_mm if anterior_z > 0 else placed.vertices_mm[:, 2].max()
    assert (lm["costophrenic"][2] - back_z) * anterior_z > 40
    # midline landmarks sit on the body's midline (it is off-centre)
    for name in ("jugular_notch", "xiphoid", "costophrenic", "pubic_symphysis"):
        assert lm[name][0] == pytest.approx(LATERAL_OFFSET_MM, abs=40), name
