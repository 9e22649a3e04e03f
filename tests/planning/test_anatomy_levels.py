"""Landmark levels from COCO keypoints: the head direction convention, the rules, missing keypoints."""

from __future__ import annotations

import numpy as np
import pytest
from planning_builders import keypoints_for

from positioning.planning.anatomy import (
    PLANNING_LANDMARKS,
    PRIOR_RULES,
    LandmarkModel,
    LandmarkRule,
    estimate_levels,
    keypoint_anchors,
    load_landmark_model,
    superior_sign,
)

PRIORS = LandmarkModel(rules=dict(PRIOR_RULES))


@pytest.mark.parametrize(
    ("position", "sign"), [("HFS", 1), ("HFP", 1), ("HFDL", 1), ("FFS", -1), ("FFDR", -1)]
)
def test_superior_sign_from_position(position: str, sign: int) -> None:
    assert superior_sign(position) == sign


def test_superior_sign_from_keypoints_when_position_unknown() -> None:
    assert superior_sign(None, {"shoulders": -900.0, "hips": -1400.0}) == 1
    assert superior_sign(None, {"shoulders": -1400.0, "hips": -900.0}) == -1
    assert superior_sign(None, {"shoulders": -900.0}) == 0


@pytest.mark.parametrize("position", ["HFS", "FFS"])
def test_levels_follow_the_head_direction(position: str) -> None:
    """Convention pin: head first, superior landmarks have larger y; feet first, smaller."""
    kp = keypoints_for(position, y_shoulders_mm=-1300.0, torso_mm=500.0)
    est = estimate_levels(kp, position=position, model=PRIORS)
    s = 1 if position == "HFS" else -1
    assert est.superior_sign == s
    assert est.torso_mm == pytest.approx(500.0)
    y = {k: v.y_mm for k, v in est.levels.items()}
    # priors: lung apex 0.06 T above the shoulders, xiphoid 0.34 T below, iliac crest 0.21 T above the hips
    assert y["lung_apex"] == pytest.approx(-1300.0 + s * 30.0)
    assert y["xiphoid"] == pytest.approx(-1300.0 - s * 170.0)
    assert y["iliac_crest"] == pytest.approx(-1300.0 - s * 500.0 + s * 105.0)
    order = [
        y[n] * s for n in ("skull_vertex", "lung_apex", "xiphoid", "costophrenic", "iliac_crest", "knee")
    ]
    assert order == sorted(order, reverse=True)


def test_missing_anchor_is_reported() -> None:
    kp = keypoints_for("HFS")
    for n in ("left_ankle", "right_ankle"):
        del kp[n]
    est = estimate_levels(kp, position="HFS", model=PRIORS)
    assert "ankle" not in est.levels
    assert any("ankle" in i for i in est.issues)


def test_low_confidence_keypoints_are_ignored() -> None:
    kp = keypoints_for("HFS")
    conf = dict.fromkeys(kp, 0.9) | {"left_hip": 0.1, "right_hip": 0.1}
    est = estimate_levels(kp, conf, position="HFS", model=PRIORS)
    assert "iliac_crest" not in est.levels
    assert est.levels["xiphoid"].sigma_mm > PRIOR_RULES["xiphoid"].sigma_mm  # torso length assumed


def test_implausible_torso_is_flagged() -> None:
    kp = keypoints_for("HFS", torso_mm=120.0)
    est = estimate_levels(kp, position="HFS", model=PRIORS)
    assert any("implausible" in i for i in est.issues)


def test_anchor_mean_and_confidence() -> None:
    pts, conf = keypoint_anchors(
        {"left_hip": np.array([100.0, -10.0, 0.0]), "right_hip": np.array([-100.0, 10.0, 0.0])},
        {"left_hip": 0.8, "right_hip": 0.6},
    )
    np.testing.assert_allclose(pts["hips"], [0.0, 0.0, 0.0])
    assert conf["hips"] == pytest.approx(0.7)


def test_shipped_model_has_every_landmark() -> None:
    m = load_landmark_model()
    assert set(PLANNING_LANDMARKS) <= set(m.rules)


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="anchor"):
        LandmarkRule(anchor="elbow", fraction=0.0, offset_mm=0.0, sigma_mm=1.0)
    with pytest.raises(ValueError, match="lacks rules"):
        LandmarkModel(rules={"chin": PRIOR_RULES["chin"]})


def test_posture_group_rules_are_used_when_the_position_is_known() -> None:
    prone_apex = LandmarkRule(anchor="shoulders", fraction=0.0, offset_mm=-40.0, sigma_mm=5.0)
    model = LandmarkModel(rules=dict(PRIOR_RULES), group_rules={"prone": {"lung_apex": prone_apex}})
    kp = keypoints_for("HFP", y_shoulders_mm=-900.0)
    assert estimate_levels(kp, position="HFP", model=model).levels["lung_apex"].y_mm == pytest.approx(-940.0)
    supine = estimate_levels(keypoints_for("HFS", y_shoulders_mm=-900.0), position="HFS", model=model)
    assert supine.levels["lung_apex"].y_mm == pytest.approx(-870.0)  # the all-posture prior
    with pytest.raises(ValueError, match="posture groups"):
        LandmarkModel(rules=dict(PRIOR_RULES), group_rules={"sitting": {}})


def _net(y_mm: float, sigma_mm: float):
    from positioning.planning.level_net import LevelPrediction

    return LevelPrediction(y_mm=y_mm, sigma_mm=sigma_mm, spread_mm=sigma_mm)


def test_fused_levels_weight_by_inverse_variance() -> None:
    from positioning.planning.anatomy import fuse_levels

    kp = keypoints_for("HFS", y_shoulders_mm=-1300.0, torso_mm=500.0)
    est = estimate_levels(kp, position="HFS", model=PRIORS)
    k = est.levels["xiphoid"]
    net = {"xiphoid": _net(k.y_mm + 20.0, k.sigma_mm / 2)}  # 4x the weight, 20 mm away
    fused = fuse_levels(est, net)
    f = fused.levels["xiphoid"]
    assert f.y_mm == pytest.approx(k.y_mm + 16.0)
    assert f.sigma_mm == pytest.approx(k.sigma_mm / np.sqrt(5.0))
    assert f.anchor == "fused"
    assert fused.levels["chin"] == est.levels["chin"]  # not given by the network: unchanged
    assert fused.superior_sign == est.superior_sign and fused.issues == est.issues


def test_large_disagreement_widens_sigma_and_says_so() -> None:
    from positioning.planning.anatomy import DISAGREEMENT_SIGMAS, fuse_levels

    kp = keypoints_for("HFS", y_shoulders_mm=-1300.0, torso_mm=500.0)
    est = estimate_levels(kp, position="HFS", model=PRIORS)
    k = est.levels["iliac_crest"]
    d = DISAGREEMENT_SIGMAS * np.hypot(k.sigma_mm, 10.0) + 30.0
    fused = fuse_levels(est, {"iliac_crest": _net(k.y_mm - d, 10.0)})
    assert fused.levels["iliac_crest"].sigma_mm == pytest.approx(d / 2)
    assert any("iliac_crest" in i and "disagree" in i for i in fused.issues)


def test_network_only_levels_and_bad_values() -> None:
    from positioning.planning.anatomy import fuse_levels

    est = estimate_levels({}, position="HFS", model=PRIORS)  # no keypoints: no levels
    assert not est.levels
    fused = fuse_levels(est, {"knee": _net(-2000.0, 12.0), "ankle": _net(float("nan"), 12.0)})
    assert fused.levels["knee"].y_mm == -2000.0 and fused.levels["knee"].anchor == "level_net"
    assert "ankle" not in fused.levels
