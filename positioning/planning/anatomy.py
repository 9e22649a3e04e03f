"""Anatomical landmark levels (lung apex, xiphoid, iliac crest, ...) estimated from the COCO keypoints.

The camera sees the body surface and a 2-D pose model places COCO-17 joints; it cannot see the lung apex,
the xiphoid or the iliac crest that scan ranges are defined by. Their *levels along the body axis* follow
body proportions closely, so each is estimated from a visible anchor and the torso length:

    s(landmark) = s(anchor) + fraction * T + offset_mm

with ``s`` the coordinate along the patient's superior axis (``s = y`` head first, ``s = -y`` feet
first: the superior direction is +y for head-first positions and -y for feet-first ones), ``T`` the
torso length ``s(shoulders) - s(hips)`` (mid-shoulder to mid-hip keypoint, about 420-540 mm in adults)
and the anchors

=========  =======================================================================================
anchor     keypoints (mean of those with confidence above the threshold)
=========  =======================================================================================
head       nose, left_eye, right_eye, left_ear, right_ear
shoulders  left_shoulder, right_shoulder
hips       left_hip, right_hip
knees      left_knee, right_knee
ankles     left_ankle, right_ankle
=========  =======================================================================================

The rules (anchor, fraction, offset, residual sigma per landmark; one set over all postures and one
per posture group: supine, prone, lateral decubitus) are fitted offline on simulated patients against
the simulator's truth landmarks (:mod:`positioning.evaluation.isocenter_fit`) and stored in
``models/isocenter_landmarks.json``; without that file the anatomical priors of
:data:`PRIOR_RULES` apply (standard adult proportions: jugular notch at the shoulder line, lung apex
about 3 cm above it, xiphoid about a third and the costophrenic recess about half of the shoulder-hip
distance below it, the iliac crest about a fifth of it above the hip line, the lesser trochanter a tenth
below it).

Only levels (y) are estimated here; :mod:`positioning.planning.isocenter` gives a level's lateral
position and height (the body's cross-section centre there).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm. Landmark names: COCO-17
(the patient's own left and right) and snake_case anatomical names; ``knee`` and ``ankle`` are the
levels of the midpoints of the two joints.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning import resources
from positioning.conventions import PatientPosition

__all__ = [
    "PLANNING_LANDMARKS",
    "LANDMARK_ORDER",
    "ANCHORS",
    "POSTURE_GROUPS",
    "LandmarkRule",
    "LandmarkModel",
    "PRIOR_RULES",
    "LevelEstimate",
    "AnatomyEstimate",
    "default_landmark_model_path",
    "load_landmark_model",
    "posture_group",
    "superior_sign",
    "keypoint_anchors",
    "estimate_levels",
    "fuse_levels",
    "DISAGREEMENT_SIGMAS",
]

#: Landmarks planning can estimate, superior to inferior.
PLANNING_LANDMARKS: tuple[str, ...] = (
    "skull_vertex", "chin", "lung_apex", "jugular_notch", "xiphoid", "costophrenic", "iliac_crest",
    "pubic_symphysis", "lesser_trochanter", "knee", "ankle",
)  # fmt: skip
#: Rank of each landmark from superior (0) to inferior (for validating protocols).
LANDMARK_ORDER: Mapping[str, int] = {name: i for i, name in enumerate(PLANNING_LANDMARKS)}

#: Anchor name -> keypoints averaged for it.
ANCHORS: Mapping[str, tuple[str, ...]] = {
    "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
    "shoulders": ("left_shoulder", "right_shoulder"),
    "hips": ("left_hip", "right_hip"),
    "knees": ("left_knee", "right_knee"),
    "ankles": ("left_ankle", "right_ankle"),
}

#: Posture groups with their own fitted rules (and shape-model coefficients).
POSTURE_GROUPS: tuple[str, ...] = ("supine", "prone", "decubitus")
#: Plausible torso lengths (mid-shoulder to mid-hip along the body axis, mm); outside: not trusted.
TORSO_RANGE_MM = (250.0, 750.0)
#: Torso length assumed when it cannot be measured (adult median) and the extra sigma per unit fraction.
TORSO_PRIOR_MM = 470.0
TORSO_PRIOR_SIGMA_MM = 80.0

LANDMARK_SCHEMA = "positioning.planning.landmarks/1"
#: Keypoint rule and level network disagreeing by more than this many combined sigmas is reported, and
#: the fused level's sigma widened to half the disagreement.
DISAGREEMENT_SIGMAS = 3.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LandmarkRule:
    """``s(landmark) = s(anchor) + fraction * T + offset_mm`` (see the module docstring).

    Attributes:
        anchor: a key of :data:`ANCHORS`.
        fraction: multiple of the torso length ``T``.
        offset_mm: constant term (mm, along the superior axis).
        sigma_mm: residual standard deviation of the rule on its training data (mm).
    """

    anchor: str
    fraction: float
    offset_mm: float
    sigma_mm: float

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {sorted(ANCHORS)}, got {self.anchor!r}")
        if not all(math.isfinite(v) for v in (self.fraction, self.offset_mm, self.sigma_mm)):
            raise ValueError(f"rule values must be finite, got {self}")
        if self.sigma_mm < 0:
            raise ValueError(f"sigma_mm must be >= 0, got {self.sigma_mm}")


#: Anatomical priors (used when no fitted model file is present): standard adult proportions.
PRIOR_RULES: Mapping[str, LandmarkRule] = {
    "skull_vertex": LandmarkRule(anchor="head", fraction=0.0, offset_mm=120.0, sigma_mm=20.0),
    "chin": LandmarkRule(anchor="head", fraction=0.0, offset_mm=-80.0, sigma_mm=20.0),
    "lung_apex": LandmarkRule(anchor="shoulders", fraction=0.06, offset_mm=0.0, sigma_mm=15.0),
    "jugular_notch": LandmarkRule(anchor="shoulders", fraction=0.0, offset_mm=0.0, sigma_mm=15.0),
    "xiphoid": LandmarkRule(anchor="shoulders", fraction=-0.34, offset_mm=0.0, sigma_mm=15.0),
    "costophrenic": LandmarkRule(anchor="shoulders", fraction=-0.52, offset_mm=0.0, sigma_mm=15.0),
    "iliac_crest": LandmarkRule(anchor="hips", fraction=0.21, offset_mm=0.0, sigma_mm=15.0),
    "pubic_symphysis": LandmarkRule(anchor="hips", fraction=-0.03, offset_mm=0.0, sigma_mm=15.0),
    "lesser_trochanter": LandmarkRule(anchor="hips", fraction=-0.10, offset_mm=0.0, sigma_mm=15.0),
    "knee": LandmarkRule(anchor="knees", fraction=0.0, offset_mm=0.0, sigma_mm=15.0),
    "ankle": LandmarkRule(anchor="ankles", fraction=0.0, offset_mm=0.0, sigma_mm=15.0),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LandmarkModel:
    """A set of landmark rules and where they came from.

    Attributes:
        rules: landmark name -> :class:`LandmarkRule` (every name in :data:`PLANNING_LANDMARKS`), fitted
            over all postures.
        group_rules: posture group (:func:`posture_group`) -> landmark name -> rule fitted on that
            group alone (a prone patient's keypoints come from the back of the body and sit elsewhere
            relative to the skeleton); used when the position is known.
        min_confidence: keypoints at or below this confidence are not used.
        source: the model file, or ``"priors"``.
        info: training metadata from the model file.
    """

    rules: Mapping[str, LandmarkRule]
    group_rules: Mapping[str, Mapping[str, LandmarkRule]] = dataclasses.field(default_factory=dict)
    min_confidence: float = 0.3
    source: str = "priors"
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in PLANNING_LANDMARKS if n not in self.rules]
        if missing:
            raise ValueError(f"landmark model lacks rules for {missing}")
        unknown = set(self.group_rules) - set(POSTURE_GROUPS)
        if unknown:
            raise ValueError(f"unknown posture groups {sorted(unknown)} (known: {POSTURE_GROUPS})")

    def rule(self, name: str, group: str | None = None) -> LandmarkRule:
        """The rule for ``name``: the posture group's own when fitted, else the all-posture rule."""
        return self.group_rules.get(group or "", {}).get(name) or self.rules[name]

    def to_json(self) -> dict[str, Any]:
        """The model file's ``rules`` mapping."""
        return {k: dataclasses.asdict(v) for k, v in self.rules.items()}

    def groups_to_json(self) -> dict[str, Any]:
        """The model file's ``group_rules`` mapping."""
        return {g: {k: dataclasses.asdict(v) for k, v in r.items()} for g, r in self.group_rules.items()}


def default_landmark_model_path() -> Path:
    """``models/isocenter_landmarks.json`` in the repository."""
    return resources.models_dir() / "isocenter_landmarks.json"


_MODEL_CACHE: dict[str, LandmarkModel] = {}


def load_landmark_model(path: str | Path | None = None) -> LandmarkModel:
    """Load the fitted landmark rules (cached per path); the priors when the default file is absent.

    Args:
        path: a model file (default :func:`default_landmark_model_path`).

    Raises:
        ValueError: the file is not a valid landmark model (a given ``path`` must exist).
    """
    p = Path(path) if path is not None else default_landmark_model_path()
    key = str(p)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if not p.is_file():
        if path is not None:
            raise ValueError(f"landmark model file not found: {p}")
        return LandmarkModel(rules=dict(PRIOR_RULES))
    try:
        doc = json.loads(p.read_text())
        if doc.get("schema") != LANDMARK_SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r}, expected {LANDMARK_SCHEMA!r}")
        rules = {k: LandmarkRule(**v) for k, v in doc["rules"].items()}
        groups = {
            g: {k: LandmarkRule(**v) for k, v in r.items()} for g, r in doc.get("group_rules", {}).items()
        }
        model = LandmarkModel(
            rules=rules,
            group_rules=groups,
            min_confidence=float(doc.get("min_confidence", 0.3)),
            source=str(p),
            info=doc.get("training", {}),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p} is not a valid landmark model: {e}") from e
    _MODEL_CACHE[key] = model
    return model


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelEstimate:
    """One landmark's level along the table.

    Attributes:
        y_mm: scanner y of the landmark's level.
        sigma_mm: expected error (the rule's residual, plus the torso prior's when ``T`` was not seen).
        confidence: the lowest confidence of the keypoints it came from, in [0, 1].
        anchor: the anchor used.
    """

    y_mm: float
    sigma_mm: float
    confidence: float
    anchor: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnatomyEstimate:
    """Landmark levels of one patient.

    Attributes:
        superior_sign: +1 when the head points toward +y (head first), -1 feet first, 0 unknown.
        torso_mm: measured torso length ``T`` (NaN when not measured).
        anchors_y_mm: anchor name -> scanner y (only anchors that were seen).
        levels: landmark name -> :class:`LevelEstimate` (landmarks that could be estimated).
        issues: human-readable reasons for missing or degraded landmarks.
    """

    superior_sign: int
    torso_mm: float
    anchors_y_mm: Mapping[str, float]
    levels: Mapping[str, LevelEstimate]
    issues: tuple[str, ...] = ()


def posture_group(position: PatientPosition | str | None) -> str:
    """``"supine"``, ``"prone"`` or ``"decubitus"`` for a DICOM position (None: supine, the most common)."""
    return PatientPosition(str(position or "HFS")).posture


def superior_sign(
    position: PatientPosition | str | None, anchors_y_mm: Mapping[str, float] | None = None
) -> int:
    """+1 when the patient's head points toward +y, -1 when toward -y, 0 when unknown.

    Convention: DICOM positions; head first (HF*) = head toward +y (into the gantry).

    Args:
        position: the patient position, or None.
        anchors_y_mm: anchor levels; used when ``position`` is None (shoulders vs hips, else head vs
            ankles).
    """
    if position is not None:
        return 1 if str(position).startswith("HF") else -1
    a = anchors_y_mm or {}
    for sup, inf in (("shoulders", "hips"), ("head", "hips"), ("shoulders", "knees"), ("head", "ankles")):
        if sup in a and inf in a and abs(a[sup] - a[inf]) > 50.0:
            return 1 if a[sup] > a[inf] else -1
    return 0


def keypoint_anchors(
    keypoints_mm: Mapping[str, np.ndarray],
    confidence: Mapping[str, float] | None = None,
    *,
    min_confidence: float = 0.3,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The anchor points: mean of each anchor's usable keypoints.

    Convention: scanner frame, mm.

    Args:
        keypoints_mm: COCO name -> ``(3,)``.
        confidence: COCO name -> confidence (default: 1 for every keypoint given).
        min_confidence: keypoints at or below this are ignored.

    Returns:
        ``(points, confidences)``: anchor -> ``(3,)`` mean point, anchor -> mean confidence of its
        keypoints used; anchors without a usable keypoint are absent.
    """
    points: dict[str, np.ndarray] = {}
    confs: dict[str, float] = {}
    for anchor, names in ANCHORS.items():
        use = []
        cs = []
        for n in names:
            p = keypoints_mm.get(n)
            c = 1.0 if confidence is None else float(confidence.get(n, 0.0))
            if p is None or c <= min_confidence:
                continue
            p = np.asarray(p, np.float64)
            if p.shape != (3,) or not np.all(np.isfinite(p)):
                continue
            use.append(p)
            cs.append(c)
        if use:
            points[anchor] = np.mean(use, axis=0)
            confs[anchor] = float(np.mean(cs))
    return points, confs


def estimate_levels(
    keypoints_mm: Mapping[str, np.ndarray],
    confidence: Mapping[str, float] | None = None,
    *,
    position: PatientPosition | str | None = None,
    model: LandmarkModel | None = None,
) -> AnatomyEstimate:
    """Estimate the levels of :data:`PLANNING_LANDMARKS` from COCO keypoints.

    Convention: scanner frame (IEC 61217), mm; superior = +y head first, -y feet first.

    Args:
        keypoints_mm: COCO name -> ``(3,)`` joint position (e.g. :attr:`PatientState.landmarks_mm`).
        confidence: COCO name -> confidence in [0, 1] (default 1).
        position: the patient position (decides the superior direction); None: from the keypoints.
        model: the rules (default :func:`load_landmark_model`).

    Returns:
        The estimate; landmarks whose anchor was not seen are absent and named in ``issues``.

    Example:
        >>> est = estimate_levels(state.landmarks_mm, state.landmark_confidence,
        ...                       position=state.patient_position)  # doctest: +SKIP
        >>> est.levels["xiphoid"].y_mm  # doctest: +SKIP
    """
    m = model or load_landmark_model()
    points, confs = keypoint_anchors(keypoints_mm, confidence, min_confidence=m.min_confidence)
    anchors_y = {k: float(v[1]) for k, v in points.items()}
    sign = superior_sign(position, anchors_y)
    issues: list[str] = []
    if sign == 0:
        return AnatomyEstimate(
            superior_sign=0,
            torso_mm=math.nan,
            anchors_y_mm=anchors_y,
            levels={},
            issues=("the head direction is unknown (no position and too few keypoints)",),
        )
    s = {k: sign * v for k, v in anchors_y.items()}
    torso = s["shoulders"] - s["hips"] if "shoulders" in s and "hips" in s else math.nan
    torso_ok = TORSO_RANGE_MM[0] <= torso <= TORSO_RANGE_MM[1]
    if not torso_ok:
        if math.isfinite(torso):
            issues.append(
                f"implausible shoulder-hip distance {torso:.0f} mm along the body (expected "
                f"{TORSO_RANGE_MM[0]:.0f}-{TORSO_RANGE_MM[1]:.0f} mm): the keypoints or the head direction "
                "are wrong"
            )
        else:
            issues.append("shoulders or hips not seen: the torso length is assumed")
    t = torso if torso_ok else TORSO_PRIOR_MM
    group = posture_group(position) if position is not None else None
    levels: dict[str, LevelEstimate] = {}
    for name in PLANNING_LANDMARKS:
        rule = m.rule(name, group)
        if rule.anchor not in s:
            issues.append(f"{name}: its anchor ({rule.anchor}) was not seen")
            continue
        sigma = rule.sigma_mm
        conf = confs[rule.anchor]
        if not torso_ok and rule.fraction != 0.0:
            sigma = math.hypot(sigma, abs(rule.fraction) * TORSO_PRIOR_SIGMA_MM)
            conf *= 0.5
        level_s = s[rule.anchor] + rule.fraction * t + rule.offset_mm
        levels[name] = LevelEstimate(y_mm=sign * level_s, sigma_mm=sigma, confidence=conf, anchor=rule.anchor)
    return AnatomyEstimate(
        superior_sign=sign,
        torso_mm=torso if math.isfinite(torso) else math.nan,
        anchors_y_mm=anchors_y,
        levels=levels,
        issues=tuple(issues),
    )


def fuse_levels(
    keypoint_estimate: AnatomyEstimate,
    net_levels: Mapping[str, Any],
    *,
    net_confidence: float = 1.0,
) -> AnatomyEstimate:
    """Combine the keypoint-rule levels with the level network's (inverse-variance weighting).

    Each landmark seen by both is the sigma-weighted mean of the two, with sigma
    ``1 / sqrt(1 / s_k^2 + 1 / s_n^2)``; when they disagree by more than :data:`DISAGREEMENT_SIGMAS`
    combined sigmas, the sigma is widened to half the disagreement and an issue says so (planning's
    landmark check then reports the level as uncertain). A landmark only the network gives takes the
    network's level. The superior direction and anchors stay the keypoint estimate's.

    Convention: scanner y (IEC 61217), mm.

    Args:
        keypoint_estimate: :func:`estimate_levels`' output.
        net_levels: landmark name -> object with ``y_mm`` and ``sigma_mm`` (e.g.
            :class:`positioning.planning.level_net.LevelPrediction`).
        net_confidence: confidence given to network-only levels, in [0, 1].

    Returns:
        The fused estimate (``anchor`` reads ``"fused"`` or ``"level_net"`` where the network was used).
    """
    levels = dict(keypoint_estimate.levels)
    issues = list(keypoint_estimate.issues)
    for name, pred in net_levels.items():
        yn, sn = float(pred.y_mm), float(pred.sigma_mm)
        if not (math.isfinite(yn) and math.isfinite(sn) and sn > 0):
            continue
        k = levels.get(name)
        if k is None:
            levels[name] = LevelEstimate(y_mm=yn, sigma_mm=sn, confidence=net_confidence, anchor="level_net")
            continue
        wk, wn = 1.0 / k.sigma_mm**2, 1.0 / sn**2
        y = (wk * k.y_mm + wn * yn) / (wk + wn)
        sigma = 1.0 / math.sqrt(wk + wn)
        d = yn - k.y_mm
        if abs(d) > DISAGREEMENT_SIGMAS * math.hypot(k.sigma_mm, sn):
            sigma = max(sigma, abs(d) / 2)
            issues.append(
                f"{name}: the keypoints and the body surface disagree by {abs(d):.0f} mm along the table"
            )
        levels[name] = LevelEstimate(
            y_mm=y, sigma_mm=sigma, confidence=max(k.confidence, net_confidence), anchor="fused"
        )
    return dataclasses.replace(keypoint_estimate, levels=levels, issues=tuple(issues))
