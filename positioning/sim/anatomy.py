"""Anatomical landmarks that scan ranges need, defined from the skeleton and the body surface.

Every rule works in anny's body frame on the posed body (mm; +x left, +y posterior, +z superior), then the
result is mapped to the scanner frame with the placement's rigid ``scanner_from_body``. Torso-relative
levels use the *trunk length* ``T`` = distance along z from the mid-hip joint centre (``H``) up to the
jugular notch (``J``, the midpoint of the two sternoclavicular joints); about 480–540 mm in adults.
Fractions of ``T`` come from standard adult anatomy and scale to children and other body sizes.

==================  ===================================================================================
landmark            rule
==================  ===================================================================================
skull_vertex        the head vertex farthest superior (max z)
chin                the midline (|x| < 12 mm) head vertex above the neck joint farthest along the
                    anterior-inferior diagonal, i.e. maximising (-y - z) (the gnathion)
jugular_notch       J, moved to the anterior surface: the most anterior midline torso vertex within
                    15 mm of J's level
lung_apex           J + 0.06 T superior, halfway between J and the posterior surface (the apices rise
                    2–3 cm above the medial clavicle)
xiphoid             level J - 0.34 T (a sternum of about 18 cm), on the anterior midline surface
costophrenic        level J - 0.52 T (posterior costophrenic recess at about T12), midline, mid-depth
iliac_crest         level H + 0.21 T (top of the crests at about L4, ~10 cm above the hip joints), at
                    the midline mid-depth; ``left_``/``right_iliac_crest`` at 1.25 x the hip joint's x
pubic_symphysis     level H - 0.03 T, midline, 70 % of the way from H to the anterior surface
lesser_trochanter   level H - 0.10 T (the inferior pelvis edge used to end pelvic scans)
greater_trochanter  level H - 0.02 T, each side, 60 % of the way from the hip joint to the lateral
                    surface of the thigh
==================  ===================================================================================
"""

from __future__ import annotations

import numpy as np

from positioning.sim.body import BodyModel, PosedBody

__all__ = ["ANATOMICAL_LANDMARKS", "anatomical_landmarks"]

ANATOMICAL_LANDMARKS: tuple[str, ...] = (
    "skull_vertex", "chin", "jugular_notch", "lung_apex", "xiphoid", "costophrenic", "iliac_crest",
    "left_iliac_crest", "right_iliac_crest", "pubic_symphysis", "lesser_trochanter",
    "left_greater_trochanter", "right_greater_trochanter",
)  # fmt: skip


def _level_band(v: np.ndarray, z: float, half_mm: float = 12.0) -> np.ndarray:
    band = v[np.abs(v[:, 2] - z) < half_mm]
    if len(band) == 0:  # very small bodies: widen until something is found
        return _level_band(v, z, half_mm * 2)
    return band


def anatomical_landmarks(body: PosedBody, model: BodyModel) -> dict[str, np.ndarray]:
    """The anatomical landmarks of a posed body, in the body frame (mm).

    Args:
        body: posed body (body frame).
        model: the body model (for the part of each vertex).

    Returns:
        name -> ``(3,)`` position, for every name in :data:`ANATOMICAL_LANDMARKS`.
    """
    v = body.vertices_mm
    j = body.joints_mm
    head = v[model.part_mask("head")]
    torso = v[model.part_mask("torso")]
    hip_l, hip_r = j["left_hip_joint"], j["right_hip_joint"]
    hips = (hip_l + hip_r) / 2
    notch = (j["left_sternoclavicular"] + j["right_sternoclavicular"]) / 2
    trunk = notch[2] - hips[2]
    out: dict[str, np.ndarray] = {}

    out["skull_vertex"] = head[np.argmax(head[:, 2])]
    face = head[
        (np.abs(head[:, 0]) < 12.0) & (head[:, 2] > j["neck_base"][2]) & (head[:, 1] < j["head_base"][1])
    ]
    out["chin"] = face[np.argmax(-face[:, 1] - face[:, 2])]

    def midline(z: float) -> np.ndarray:
        band = _level_band(torso, z)
        mid = band[np.abs(band[:, 0]) < max(20.0, np.abs(band[:, 0]).min() + 5.0)]
        return mid

    def anterior(z: float) -> np.ndarray:
        mid = midline(z)
        return mid[np.argmin(mid[:, 1])]

    def mid_depth(z: float) -> np.ndarray:
        mid = midline(z)
        return np.array([0.0, (mid[:, 1].min() + mid[:, 1].max()) / 2, z])

    out["jugular_notch"] = anterior(notch[2])
    apex_z = notch[2] + 0.06 * trunk
    out["lung_apex"] = np.array([0.0, (notch[1] + midline(apex_z)[:, 1].max()) / 2, apex_z])
    out["xiphoid"] = anterior(notch[2] - 0.34 * trunk)
    out["costophrenic"] = mid_depth(notch[2] - 0.52 * trunk)
    crest_z = hips[2] + 0.21 * trunk
    out["iliac_crest"] = mid_depth(crest_z)
    out["left_iliac_crest"] = np.array([1.25 * hip_l[0], hip_l[1], crest_z])
    out["right_iliac_crest"] = np.array([1.25 * hip_r[0], hip_r[1], crest_z])
    pubic_z = hips[2] - 0.03 * trunk
    front = anterior(pubic_z)
    out["pubic_symphysis"] = np.array([0.0, hips[1] + 0.7 * (front[1] - hips[1]), pubic_z])
    out["lesser_trochanter"] = np.array([0.0, hips[1], hips[2] - 0.10 * trunk])
    gt_z = hips[2] - 0.02 * trunk
    band = _level_band(v[model.part_mask("torso", "left_leg", "right_leg")], gt_z, 15.0)
    for side, hip, sign in (("left", hip_l, 1.0), ("right", hip_r, -1.0)):
        lateral = band[sign * band[:, 0] > 0]
        surface_x = lateral[np.argmax(sign * lateral[:, 0]), 0]
        out[f"{side}_greater_trochanter"] = np.array([hip[0] + 0.6 * (surface_x - hip[0]), hip[1], gt_z])
    return out
