"""The legs judged hidden (a blanket over them) from the colour landmarks' visibility."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.perception.cover import LEGS, CoverSettings, legs_hidden
from positioning.perception.landmarks.base import TRUNK_LANDMARKS, Landmarks2D

SHAPE = (480, 848)


def _landmarks(
    legs: float, trunk: float = 0.98, *, leg_uv: tuple[float, float] = (420.0, 300.0)
) -> Landmarks2D:
    names = TRUNK_LANDMARKS + LEGS + ("nose",)
    uv = (
        [(400.0, 100.0 + 20 * i) for i in range(len(TRUNK_LANDMARKS))]
        + [leg_uv] * len(LEGS)
        + [(420.0, 60.0)]
    )
    conf = [trunk] * len(TRUNK_LANDMARKS) + [legs] * len(LEGS) + [0.99]
    return Landmarks2D(
        names=names, uv_px=np.array(uv), confidence=np.array(conf), backend="mediapipe", image_shape=SHAPE
    )


def test_legs_seen_plainly_are_not_hidden():
    j = legs_hidden(_landmarks(legs=0.95))
    assert j is not None and not j.hidden
    assert j.leg_visibility == pytest.approx(0.95) and j.confidence > 0.5
    assert j.legs_in_view == LEGS


def test_legs_the_model_marks_as_occluded_are_hidden():
    j = legs_hidden(_landmarks(legs=0.2))
    assert j is not None and j.hidden and j.confidence > 0.5


def test_one_leg_hiding_the_other_is_not_a_blanket():
    # on the side, the lower leg lies under the upper one: the better-seen leg decides
    lm = _landmarks(legs=0.9)
    conf = np.array(
        [
            0.1 if n.startswith("right_") and n in LEGS else c
            for n, c in zip(lm.names, lm.confidence, strict=True)
        ]
    )
    one = Landmarks2D(names=lm.names, uv_px=lm.uv_px, confidence=conf, backend="mediapipe", image_shape=SHAPE)
    j = legs_hidden(one)
    assert j is not None and not j.hidden and j.leg_visibility == pytest.approx(0.9)


def test_the_threshold_is_the_settings():
    assert not legs_hidden(_landmarks(legs=0.55), CoverSettings(max_leg_visibility=0.5)).hidden
    assert legs_hidden(_landmarks(legs=0.55), CoverSettings(max_leg_visibility=0.6)).hidden


def test_legs_outside_the_image_are_not_judged():
    # BlazePose places landmarks beyond the frame with a low visibility: that is not a blanket
    assert legs_hidden(_landmarks(legs=0.1, leg_uv=(420.0, 479.0))) is None
    assert legs_hidden(_landmarks(legs=0.0, leg_uv=(np.nan, np.nan))) is None  # not placed at all


def test_a_poorly_seen_trunk_is_not_judged():
    # a weak detection altogether (a dim room) says nothing about the legs
    assert legs_hidden(_landmarks(legs=0.1, trunk=0.5)) is None


def test_landmarks_without_the_trunk_are_not_judged():
    lm = _landmarks(legs=0.1)
    keep = [i for i, n in enumerate(lm.names) if n != "left_hip"]
    partial = Landmarks2D(
        names=tuple(lm.names[i] for i in keep), uv_px=lm.uv_px[keep], confidence=lm.confidence[keep],
        backend="mediapipe", image_shape=SHAPE,
    )  # fmt: skip
    assert legs_hidden(partial) is None


@pytest.mark.parametrize(
    "kwargs", [{"max_leg_visibility": 0.0}, {"min_trunk_visibility": 1.5}, {"min_legs_in_view": 5}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        CoverSettings(**kwargs)
