"""How the scene network's view and MediaPipe's meet: landmarks in 3-D, the patient position and the arm
state, each decided from both sources by confidence, and their disagreements named.

* Landmarks: the scene network gives every landmark in 3-D (plan-view position, height above the table)
  with a calibrated confidence (the probability that it is within 40 mm); MediaPipe's keypoints, lifted
  to 3-D (:mod:`positioning.perception.lifting`), carry BlazePose's visibility. Where both have a
  landmark and agree (within :data:`AGREE_MM`) the position is their confidence-weighted mean and the
  confidence the larger; where they disagree the more confident one is kept with its confidence halved
  and the disagreement named (``LANDMARKS_DISAGREE``).
* Position and arms: the network's class probabilities against the geometric estimate from the lifted
  keypoints (:func:`~positioning.perception.orientation.estimate_orientation`): the more confident
  decides; when both are confident and disagree, the confidence drops and the disagreement is named
  (``ORIENTATION_DISAGREE``), so that planning asks the technologist.

Convention: scanner frame (IEC 61217), mm; landmark names COCO-17 (the patient's own left and right).
"""

from __future__ import annotations

import numpy as np

from positioning.conventions import BODY_AXES, ArmState, PatientPosition
from positioning.perception.lifting import Landmarks3D
from positioning.perception.orientation import swap_left_right
from positioning.perception.scene_net import SceneOutput
from positioning.perception.status import PerceptionNote
from positioning.perception.table import TableEstimate

__all__ = [
    "AGREE_MM",
    "scene_landmarks",
    "fuse_landmarks_3d",
    "decide_position",
    "decide_arms",
    "labels_for_position",
]

#: Two sources' positions of one landmark agree when closer than this (3-D, mm).
AGREE_MM = 80.0
#: Below this confidence a categorical decision is called uncertain.
CONFIDENT = 0.6


def scene_landmarks(scene: SceneOutput, table: TableEstimate) -> Landmarks3D:
    """The scene network's landmarks in 3-D: plan-view position, and z = the table plane there plus the
    predicted height above it."""
    names = tuple(scene.keypoints_xy_mm)
    xy = np.array([scene.keypoints_xy_mm[n] for n in names], np.float64).reshape(-1, 2)
    h = np.array([scene.keypoints_height_mm[n] for n in names], np.float64)
    z = table.z_at(xy[:, 0], xy[:, 1]) + h
    pts = np.c_[xy, z]
    conf = np.clip(np.array([scene.keypoint_confidence[n] for n in names], np.float64), 0.0, 1.0)
    return Landmarks3D(
        names=names,
        points_mm=pts,
        surface_mm=pts,
        confidence=conf,
        uv_px=np.full((len(names), 2), np.nan),
        backend="scene_net",
    )


def fuse_landmarks_3d(
    a: Landmarks3D | None, b: Landmarks3D | None, *, agree_mm: float = AGREE_MM
) -> tuple[Landmarks3D | None, list[str]]:
    """Fuse two landmark sets by name (see the module docstring). Returns the fused set (names of ``a``
    first, then those only ``b`` has) and the names on which the two disagreed."""
    if a is None or b is None:
        return (a if b is None else b), []
    names = list(a.names) + [n for n in b.names if n not in a.names]
    pts = np.full((len(names), 3), np.nan)
    surf = np.full((len(names), 3), np.nan)
    uv = np.full((len(names), 2), np.nan)
    conf = np.zeros(len(names))
    disagree = []
    for i, n in enumerate(names):
        sources = []
        for lm in (a, b):
            if n in lm.names:
                k = lm.index(n)
                if np.all(np.isfinite(lm.points_mm[k])) and lm.confidence[k] > 0:
                    sources.append((lm.points_mm[k], lm.surface_mm[k], lm.uv_px[k], float(lm.confidence[k])))
        if not sources:
            continue
        if len(sources) == 1:
            pts[i], surf[i], uv[i], conf[i] = sources[0]
            continue
        (pa, sa, ua, ca), (pb, sb, ub, cb) = sources
        if np.linalg.norm(pa - pb) <= agree_mm:
            w = np.array([ca, cb]) / (ca + cb)
            pts[i] = w[0] * pa + w[1] * pb
            surf[i] = sa if np.all(np.isfinite(sa)) else sb
            uv[i] = ua if np.all(np.isfinite(ua)) else ub
            conf[i] = max(ca, cb)
        else:
            disagree.append(n)
            best = (pa, sa, ua, ca) if ca >= cb else (pb, sb, ub, cb)
            pts[i], surf[i], uv[i], conf[i] = best[0], best[1], best[2], 0.5 * best[3]
    fused = Landmarks3D(
        names=tuple(names),
        points_mm=pts,
        surface_mm=surf,
        confidence=conf,
        uv_px=uv,
        backend=f"{a.backend}+{b.backend}",
    )
    return fused, disagree


def decide_position(
    scene_prob: dict[str, float] | None,
    geometric: tuple[PatientPosition | None, float] | None,
) -> tuple[PatientPosition | None, float, PerceptionNote | None]:
    """The patient position from the network's probabilities and/or the geometric estimate
    ``(position, confidence)``: ``(position, confidence, note)``."""
    net = None
    if scene_prob:
        code = max(scene_prob, key=scene_prob.__getitem__)
        net = (PatientPosition(code), float(scene_prob[code]))
    if net is None:
        return (None, 0.0, None) if geometric is None else (geometric[0], geometric[1], None)
    if geometric is None or geometric[0] is None:
        return net[0], net[1], None
    (pn, cn), (pg, cg) = net, geometric
    if pn == pg:
        return pn, max(cn, cg), None
    winner, conf = (pn, cn) if cn >= cg else (pg, cg)
    note = None
    if min(cn, cg) >= CONFIDENT * 0.5:
        conf = conf * (1.0 - min(cn, cg))
        note = PerceptionNote(
            code="ORIENTATION_DISAGREE",
            severity="warning",
            message=(
                f"The body's shape reads {pn} ({cn:.0%}) but the body landmarks read {pg} ({cg:.0%}): "
                "check the patient position."
            ),
        )
    return winner, conf, note


def decide_arms(
    scene_prob: dict[str, float] | None, geometric: tuple[ArmState | None, float] | None
) -> tuple[ArmState | None, float]:
    """The arm state from the network's probabilities and/or the geometric estimate: the more confident
    one (agreement keeps the larger confidence)."""
    net = None
    if scene_prob:
        k = max(scene_prob, key=scene_prob.__getitem__)
        net = (ArmState(k), float(scene_prob[k]))
    if net is None:
        return (None, 0.0) if geometric is None else geometric
    if geometric is None or geometric[0] is None:
        return net
    if net[0] == geometric[0]:
        return net[0], max(net[1], geometric[1])
    return net if net[1] >= geometric[1] else geometric


def labels_for_position(
    landmarks: Landmarks3D, labelled_as: PatientPosition | None, position: PatientPosition | None
) -> Landmarks3D:
    """Left and right labels made consistent with ``position`` when they were decided for another
    position (``labelled_as``) whose left points the other way."""
    if labelled_as is None or position is None or labelled_as == position:
        return landmarks
    if float(np.dot(BODY_AXES[labelled_as][2], BODY_AXES[position][2])) < 0:
        return swap_left_right(landmarks)
    return landmarks
