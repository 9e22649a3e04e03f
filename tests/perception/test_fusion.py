"""Fusing the scene network with MediaPipe: landmarks, position and arms by confidence; disagreement named."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.conventions import ArmState, PatientPosition
from positioning.perception.fusion import decide_arms, decide_position, fuse_landmarks_3d, labels_for_position
from positioning.perception.lifting import Landmarks3D


def _lm(names, points, conf, backend):
    p = np.asarray(points, float)
    uv = np.zeros((len(names), 2))
    return Landmarks3D(
        names=tuple(names), points_mm=p, surface_mm=p, confidence=conf, uv_px=uv, backend=backend
    )


def test_agreeing_landmarks_average_by_confidence_and_disagreeing_ones_are_named():
    a = _lm(
        ["left_hip", "right_hip", "nose"],
        [[100, -1000, -50], [-100, -1000, -50], [0, -300, 20]],
        [0.9, 0.9, 0.8],
        "mediapipe",
    )
    b = _lm(
        ["left_hip", "right_hip", "xiphoid"],
        [[130, -1000, -50], [-100, -1200, -50], [0, -700, 60]],
        [0.3, 0.6, 0.7],
        "scene_net",
    )
    fused, disagree = fuse_landmarks_3d(a, b)
    assert fused.names == ("left_hip", "right_hip", "nose", "xiphoid")
    np.testing.assert_allclose(fused.point("left_hip"), [(0.9 * 100 + 0.3 * 130) / 1.2, -1000, -50])
    assert fused.conf("left_hip") == 0.9
    assert disagree == ["right_hip"]  # 200 mm apart: the more confident kept, its confidence halved
    np.testing.assert_allclose(fused.point("right_hip"), [-100, -1000, -50])
    assert fused.conf("right_hip") == pytest.approx(0.45)
    assert fused.conf("nose") == 0.8 and fused.conf("xiphoid") == 0.7  # one source each
    assert fuse_landmarks_3d(a, None)[0] is a and fuse_landmarks_3d(None, b)[0] is b


def test_position_decisions():
    probs = {str(p): 0.0 for p in PatientPosition}
    probs["HFS"] = 0.9
    probs["HFP"] = 0.1
    assert decide_position(probs, None)[:2] == (PatientPosition.HFS, 0.9)
    assert decide_position(probs, (PatientPosition.HFS, 0.6))[:2] == (PatientPosition.HFS, 0.9)
    pos, conf, note = decide_position(probs, (PatientPosition.HFP, 0.7))
    assert (
        pos == PatientPosition.HFS and conf < 0.9 and note is not None and note.code == "ORIENTATION_DISAGREE"
    )
    assert decide_position(None, (PatientPosition.FFS, 0.5)) == (PatientPosition.FFS, 0.5, None)
    assert decide_position(None, None) == (None, 0.0, None)


def test_arm_decisions():
    probs = {"raised": 0.2, "sides": 0.7, "chest": 0.1}
    assert decide_arms(probs, (ArmState.RAISED, 0.9)) == (ArmState.RAISED, 0.9)
    assert decide_arms(probs, (ArmState.SIDES, 0.5)) == (ArmState.SIDES, 0.7)
    assert decide_arms(probs, None) == (ArmState.SIDES, 0.7)


def test_labels_follow_the_decided_position():
    lm = _lm(["left_shoulder", "right_shoulder"], [[150, -600, 0], [-150, -600, 0]], [0.9, 0.9], "mediapipe")
    # labelled for HFS (left at +x); the decided HFP has the left at -x: swap
    swapped = labels_for_position(lm, PatientPosition.HFS, PatientPosition.HFP)
    np.testing.assert_allclose(swapped.point("left_shoulder"), [-150, -600, 0])
    # HFS -> FFP keeps the left at +x: no swap
    assert labels_for_position(lm, PatientPosition.HFS, PatientPosition.FFP) is lm
