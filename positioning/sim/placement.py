"""Lay a posed body on the table: DICOM patient position, offsets, and the mattress contact model.

Convention:
    Input bodies are in anny's body frame (mm; +x patient's left, +y posterior, +z superior: DICOM LPS).
    Output is in the scanner frame (IEC 61217 fixed system, mm; +x lateral to the right of an observer at
    the foot of the table facing the gantry, +y into the gantry, +z up). Head-first means the head toward +y.

Orientation of each DICOM Patient Position (0018,5100): where the patient's superior (S), posterior (P)
and left (L) axes point in the scanner frame. L = P x S keeps the frame right-handed.

    ====  =====  =====  =====
    code    S      P      L
    ====  =====  =====  =====
    HFS    +y     -z     +x
    HFP    +y     +z     -x
    FFS    -y     -z     -x
    FFP    -y     +z     +x
    HFDL   +y     -x     -z     (lying on the left side)
    HFDR   +y     +x     +z     (lying on the right side)
    FFDL   -y     +x     -z
    FFDR   -y     -x     +z
    ====  =====  =====  =====

Contact model (documented because the true isocenter depends on it):
    1. The body is rotated into the patient position and yawed by ``yaw_deg`` about z.
    2. *Mattress sink*: a foam mattress compresses under the body by ``sink_mm`` =
       clip(6 + 0.2 (mass_kg - 20), 4, 30) mm times ``0.15 + 1.7 softness`` (``mattress_softness`` 0 is a
       firm pad the back barely sinks into, 0.5 the reference foam, 1 soft foam the body sinks 25-40 mm
       into), at most 80 % of the mattress thickness: the contact surface lies that far below the free
       mattress top. The part of the body below the mattress top is hidden, as it is in a real
       depression; with ``depression_length_mm`` > 0 the mattress top dips around the body too
       (:func:`mattress_depression`: soft foam pulled down beside the contact), else it stays flat.
    3. *Tissue flattening*: soft tissue flattens against the contact surface. The body is lowered so that
       its lowest trunk point lies ``flatten_mm`` = clip(4 + 0.6 (BMI - 18), 4, 25) mm times
       ``flatten_scale`` *below* the contact surface, and every vertex below the contact surface is moved
       up onto it. The back (or front, or
       side) becomes a flat contact patch whose width grows with weight, as on a CT table. Volume is not
       conserved (the flattened tissue is removed, not displaced sideways); the cross-section truth is
       computed from this final mesh, so truth and rendering agree exactly.
    1b. *Spine flattening*: the body is tilted about its transverse axis (within +-12 degrees) until the
       upper trunk (shoulder blades) and the lower trunk (buttocks) are equally low, as a lying spine
       flattens and both bear weight. (Standing, anny's buttocks lie about 35 mm behind its shoulders.)
    4. *Limbs rest on the mattress*: for supine and prone patients each upper arm (sides or raised) and
       each leg is rotated about the body's x axis (a batch of candidate angles, one anny forward pass)
       until its lowest point reaches the contact surface; limbs sink half as deep as the trunk. Arms on
       the chest rest on the body. Feet are plantar-flexed (15 degrees supine; 60 degrees prone, so the
       backs of the feet lie on the mattress). In lateral decubitus the limbs are left as posed (the
       down-side limbs are flattened by step 3). With a knee rest (``knee_rest_mm`` > 0, supine only) the
       hips flex from the angle that lays the legs on the mattress until the back of the knees lies
       ``knee_rest_mm`` above the contact surface (the bolster's crest) and the knees flex twice as
       much, so the shanks slope back down to the heels.
    5b. *Prone face*: a prone patient's face lies in the opening of a prone head cushion, so head
       vertices are not flattened (the face reaches below the mattress top, hidden as in a real cut-out).
    5. The head rest is a cushion whose top meets the lowest point of the head (see ``positioning.sim.room``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from positioning.conventions import BODY_AXES, PatientPosition
from positioning.sim.body import (
    COCO_KEYPOINTS,
    ArmPose,
    BodyModel,
    Phenotype,
    PosedBody,
    body_model,
    body_rotations,
    rotation_deg,
)

__all__ = [
    "PatientPosition",
    "PlacementParams",
    "PlacedBody",
    "scanner_from_body_rotation",
    "place_body",
    "mattress_sink_mm",
    "tissue_flatten_mm",
    "mattress_depression",
    "KNEE_REST_CLEARANCE_MM",
]

#: The back of the knee: leg vertices within this distance along the table of the knee joint (mm).
KNEE_REST_CLEARANCE_MM = 45.0


def scanner_from_body_rotation(position: PatientPosition | str) -> np.ndarray:
    """3x3 rotation mapping body-frame (L, P, S) vectors to the scanner frame for a DICOM position.

    Convention: columns are the scanner-frame directions of the body's +x (left), +y (posterior) and
    +z (superior) axes.

    Example:
        >>> scanner_from_body_rotation("HFS") @ [1, 0, 0]  # the patient's left, supine head-first
        array([1., 0., 0.])
    """
    s, p, left = BODY_AXES[PatientPosition(position)]
    return np.stack([left, p, s], axis=1).astype(np.float64)


def mattress_sink_mm(mass_kg: float, softness: float = 0.5, thickness_mm: float | None = None) -> float:
    """How far the mattress compresses under a body of this mass (contact model step 2).

    Args:
        mass_kg: the patient's mass.
        softness: 0 a firm pad, 0.5 the reference foam, 1 soft foam.
        thickness_mm: the mattress thickness (the sink stays below 80 % of it), or None.
    """
    sink = float(np.clip(6.0 + 0.2 * (mass_kg - 20.0), 4.0, 30.0)) * (0.15 + 1.7 * softness)
    if thickness_mm is not None:
        sink = min(sink, 0.8 * thickness_mm)
    return sink


def tissue_flatten_mm(bmi: float, scale: float = 1.0) -> float:
    """How much soft tissue flattens against the contact surface (contact model step 3)."""
    return float(np.clip(4.0 + 0.6 * (bmi - 18.0), 4.0, 25.0)) * scale


def mattress_depression(
    vertices_mm: np.ndarray,
    mattress_top_z_mm: float,
    length_mm: float,
    x_range_mm: tuple[float, float],
    y_range_mm: tuple[float, float],
    *,
    cell_mm: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How far the mattress top dips below its free height around a body lying in it (contact model).

    Under the body the top lies at the body's lowest point in each plan-view cell; beside it the dip
    decays as ``exp(-distance / length_mm)`` from the nearest contact (soft foam is pulled down around a
    heavy body; a firm pad hardly dips at all, because the body hardly sinks into it).

    Convention: scanner frame, mm.

    Args:
        vertices_mm: ``(V, 3)`` the placed body.
        mattress_top_z_mm: z of the free mattress top.
        length_mm: decay length of the dip (> 0).
        x_range_mm, y_range_mm: the mattress's plan-view extent.
        cell_mm: grid spacing.

    Returns:
        ``(x_mm (nx,), y_mm (ny,), dip_mm (ny, nx))``, dips >= 0.
    """
    import cv2

    xs = np.arange(x_range_mm[0], x_range_mm[1] + cell_mm, cell_mm)
    ys = np.arange(y_range_mm[0], y_range_mm[1] + cell_mm, cell_mm)
    v = np.asarray(vertices_mm, np.float64)
    below = v[:, 2] < mattress_top_z_mm
    c = np.round((v[below, 0] - xs[0]) / cell_mm).astype(np.int64)
    r = np.round((v[below, 1] - ys[0]) / cell_mm).astype(np.int64)
    ok = (c >= 0) & (c < len(xs)) & (r >= 0) & (r < len(ys))
    dip = np.zeros((len(ys), len(xs)), np.float32)
    np.maximum.at(dip, (r[ok], c[ok]), (mattress_top_z_mm - v[below, 2][ok]).astype(np.float32))
    dip = cv2.morphologyEx(dip, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # gaps between vertices
    if length_mm > 0:
        decay = float(np.exp(-cell_mm / length_mm))
        spread = dip.copy()
        for _ in range(int(np.ceil(4.0 * length_mm / cell_mm))):
            spread = np.maximum(spread, cv2.dilate(spread, np.ones((3, 3), np.uint8)) * decay)
        dip = spread
    return xs, ys, dip.astype(np.float64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlacementParams:
    """Where and how the patient lies.

    Attributes:
        position: DICOM patient position.
        arms: arm pose.
        lateral_offset_mm: body midline x in the scanner frame (0 = centred on the table).
        head_y_mm: scanner y of the body's end nearest the gantry: the vertex of the skull when
            head-first, the toes when feet-first (raised hands may reach beyond it).
        yaw_deg: rotation of the body about the vertical axis (degrees, right-handed about +z).
        roll_deg: rotation about the body's long axis (degrees; a slightly tilted patient).
        mattress_top_z_mm: scanner z of the free mattress top.
        arm_jitter_deg, leg_spread_deg, head_tilt_deg: natural variation, see :mod:`positioning.sim.body`.
        mattress_softness: 0 firm pad to 1 soft foam (contact model step 2).
        mattress_thickness_mm: the mattress thickness (caps the sink), or None.
        flatten_scale: scales the tissue flattening (contact model step 3).
        knee_rest_mm: height of a bolster under the knees (0: none; supine only, step 4).
    """

    position: PatientPosition
    arms: ArmPose
    lateral_offset_mm: float = 0.0
    head_y_mm: float = -500.0
    yaw_deg: float = 0.0
    roll_deg: float = 0.0
    mattress_top_z_mm: float = -150.0
    arm_jitter_deg: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0, 0, 0), (0, 0, 0))
    leg_spread_deg: tuple[float, float] = (6.0, 6.0)
    head_tilt_deg: float = 0.0
    mattress_softness: float = 0.5
    mattress_thickness_mm: float | None = None
    flatten_scale: float = 1.0
    knee_rest_mm: float = 0.0


@dataclasses.dataclass(frozen=True)
class PlacedBody:
    """A body lying on the table, in the scanner frame (mm).

    Attributes:
        vertices_mm: ``(V, 3)`` mesh vertices, scanner frame.
        faces: ``(F, 3)`` triangles.
        keypoints_mm: COCO-17 name -> ``(3,)`` scanner-frame position.
        joints_mm: skeleton joint name -> ``(3,)`` scanner-frame position.
        body: the posed body in the body frame (before placement and contact).
        scanner_from_body: ``(4, 4)`` rigid transform body frame -> scanner frame (before contact).
        contact_z_mm: scanner z of the contact surface (compressed mattress).
        sink_mm, flatten_mm: the contact model's values for this patient.
        arm_extension_deg: the arm angles the contact model chose (left, right).
        leg_extension_deg: the hip angles the contact model chose (left, right).
        knee_flexion_deg: the knee angles (left, right; non-zero with a knee rest).
        params: the placement that produced it.
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    keypoints_mm: dict[str, np.ndarray]
    joints_mm: dict[str, np.ndarray]
    body: PosedBody
    scanner_from_body: np.ndarray
    contact_z_mm: float
    sink_mm: float
    flatten_mm: float
    arm_extension_deg: tuple[float, float]
    leg_extension_deg: tuple[float, float]
    params: PlacementParams
    knee_flexion_deg: tuple[float, float] = (0.0, 0.0)


def _orientation(params: PlacementParams) -> np.ndarray:
    yaw = rotation_deg("z", params.yaw_deg)
    r = scanner_from_body_rotation(params.position)
    roll = r @ rotation_deg("z", params.roll_deg) @ r.T  # roll about the body's long axis
    return yaw @ roll @ r


def _axis_rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rodrigues rotation about a unit axis."""
    a = np.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def _trunk_pitch(vertices_mm: np.ndarray, torso: np.ndarray, rot_sb: np.ndarray) -> np.ndarray:
    """Contact model step 1b: tilt the body about its transverse axis so that the upper and the lower
    trunk both touch the mattress (a lying spine flattens: shoulders and buttocks both bear weight).

    Returns:
        3x3 body-frame rotation to apply before ``rot_sb``.
    """
    down_body = rot_sb.T @ np.array([0.0, 0.0, -1.0])
    axis = np.cross(np.array([0.0, 0.0, 1.0]), down_body)
    if np.linalg.norm(axis) < 1e-9:
        return np.eye(3)
    axis /= np.linalg.norm(axis)
    v = vertices_mm[torso]
    z_mid = np.median(v[:, 2])
    upper, lower = v[v[:, 2] > z_mid + 100.0], v[v[:, 2] <= z_mid]
    best, best_cost = np.eye(3), np.inf
    for angle in np.arange(-12.0, 12.01, 0.5):
        r = _axis_rotation(axis, angle)
        cost = abs((upper @ r.T @ down_body).max() - (lower @ r.T @ down_body).max())
        if cost < best_cost:
            best, best_cost = r, cost
    return best


def _limb_angles(
    model: BodyModel,
    phenotype: Phenotype,
    params: PlacementParams,
    rot_sb: np.ndarray,
    z_shift: float,
    contact_z: float,
    sink_mm: float,
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Contact model step 4: per-side arm and leg angles about the body's x axis that lay the limbs on
    the mattress, from one batched anny forward pass over candidate angles (two with a knee rest: the
    hips then flex from the angle that lays the legs flat until the knees rest on the bolster, the knees
    twice as much).

    Returns:
        ``((left_arm, right_arm), (left_leg, right_leg), (left_knee, right_knee))`` in degrees.
    """
    if params.position.lying not in ("supine", "prone"):
        return (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)
    # A positive angle about x moves a limb hanging down (arms at the sides, legs) posteriorly and an arm
    # pointing up (raised) anteriorly. Supine patients need limbs moved posteriorly, prone ones anteriorly.
    posterior = 1.0 if params.position.lying == "supine" else -1.0
    arm_dir = -posterior if params.arms is ArmPose.RAISED else posterior
    steps = np.arange(-10.0, 41.0, 2.5)
    rotations = []
    for a in steps:
        ext = (a * arm_dir, a * arm_dir) if params.arms is not ArmPose.CHEST else (0.0, 0.0)
        rotations.append(_rotations(params, ext, (a * posterior, a * posterior)))
    verts, _, _, _ = model.forward(phenotype, rotations)
    low_z = (verts @ rot_sb.T)[..., 2] + z_shift  # (N, V)

    def first_touch(mask: np.ndarray, target: float, direction: float) -> float:
        low = low_z[:, mask].min(axis=1)
        touching = np.nonzero(low <= target)[0]
        k = int(touching[0]) if touching.size else int(np.argmin(low))
        return float(steps[k] * direction)

    arms = (0.0, 0.0)
    if params.arms is not ArmPose.CHEST:
        arm_target = contact_z + 0.5 * sink_mm  # arms are light: they sink half as deep
        arms = tuple(  # type: ignore[assignment]
            first_touch(model.part_mask(f"{s}_upper_arm", f"{s}_forearm"), arm_target, arm_dir)
            for s in ("left", "right")
        )
    legs = tuple(
        first_touch(model.part_mask(f"{s}_leg"), contact_z + 0.5 * sink_mm, posterior)
        for s in ("left", "right")
    )
    knees = (0.0, 0.0)
    if params.knee_rest_mm > 0 and params.position.lying == "supine":
        flex = np.arange(0.0, 50.1, 2.5)
        batch = [
            _rotations(params, arms, (legs[0] - f, legs[1] - f), (2.0 * f, 2.0 * f))  # type: ignore[arg-type]
            for f in flex
        ]
        verts, kps, _, _ = model.forward(phenotype, batch)
        v = verts @ rot_sb.T  # (N, V, 3), z without the shift
        k = kps @ rot_sb.T
        target = contact_z + params.knee_rest_mm - z_shift
        best = []
        for side in ("left", "right"):
            leg = model.part_mask(f"{side}_leg")
            knee_y = k[:, COCO_KEYPOINTS.index(f"{side}_knee"), 1][:, None]
            near = leg[None, :] & (np.abs(v[..., 1] - knee_y) < KNEE_REST_CLEARANCE_MM)
            under = np.where(near, v[..., 2], np.inf).min(axis=1)  # the back of the knee
            best.append(float(flex[int(np.argmin(np.abs(under - target)))]))
        legs = (legs[0] - best[0], legs[1] - best[1])
        knees = (2.0 * best[0], 2.0 * best[1])
    return arms, legs, knees  # type: ignore[return-value]


def _rotations(
    params: PlacementParams,
    arms_ext: tuple[float, float],
    legs_ext: tuple[float, float],
    knees_deg: tuple[float, float] = (0.0, 0.0),
) -> dict[str, np.ndarray]:
    # Feet plantar-flexed: relaxed when lying; prone feet lie on their backs instead of on the toes.
    return body_rotations(
        params.arms,
        arm_jitter_deg=np.asarray(params.arm_jitter_deg, float),
        arm_extension_deg=arms_ext,
        leg_spread_deg=params.leg_spread_deg,
        leg_extension_deg=legs_ext,
        head_tilt_deg=params.head_tilt_deg,
        foot_flexion_deg=60.0 if params.position.lying == "prone" else 15.0,
        knee_flexion_deg=knees_deg,
    )


def place_body(
    phenotype: Phenotype,
    params: PlacementParams,
    *,
    model: BodyModel | None = None,
) -> PlacedBody:
    """Pose a body, lay it on the mattress with the contact model, and return it in the scanner frame.

    Args:
        phenotype: anny phenotype of the patient.
        params: position, arms, offsets and the mattress height.
        model: body model (default: the shared one).

    Returns:
        The placed body (scanner frame, mm).
    """
    model = model or body_model()
    base = model.posed_body(phenotype, _rotations(params, (0.0, 0.0), (0.0, 0.0)))
    sink = mattress_sink_mm(base.mass_kg, params.mattress_softness, params.mattress_thickness_mm)
    flatten = tissue_flatten_mm(base.bmi, params.flatten_scale)
    contact_z = params.mattress_top_z_mm - sink

    torso = model.part_mask("torso")
    rot_sb = _orientation(params)
    rot_sb = rot_sb @ _trunk_pitch(base.vertices_mm, torso, rot_sb)
    # Vertical placement from the trunk: its lowest point lies flatten_mm below the contact surface.
    z_shift = (contact_z - flatten) - (base.vertices_mm[torso] @ rot_sb.T)[:, 2].min()

    arms_ext, legs_ext, knees = _limb_angles(model, phenotype, params, rot_sb, z_shift, contact_z, sink)
    body = model.posed_body(phenotype, _rotations(params, arms_ext, legs_ext, knees))

    # Longitudinal and lateral placement: skull vertex (head first) or toes (feet first) at head_y,
    # trunk midline at the lateral offset. Raised hands may reach beyond, over the head holder.
    rotated = body.vertices_mm @ rot_sb.T
    end_parts = ("head",) if params.position.head_first else ("left_leg", "right_leg")
    end_part = model.part_mask(*end_parts)
    y_shift = params.head_y_mm - rotated[end_part, 1].max()
    x_shift = params.lateral_offset_mm - float(np.median(rotated[torso, 0]))
    t = np.array([x_shift, y_shift, z_shift])
    scanner_from_body = np.eye(4)
    scanner_from_body[:3, :3] = rot_sb
    scanner_from_body[:3, 3] = t

    verts = rotated + t
    # Contact: everything below the contact surface is flattened onto it (limbs sink half as deep).
    limbs = model.part_mask(
        "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm", "left_leg", "right_leg"
    )
    floor = np.where(limbs, contact_z + 0.5 * sink, contact_z)
    if params.position.lying == "prone":  # step 5b: the face lies in the cushion's opening
        floor = np.where(model.part_mask("head"), -np.inf, floor)
    verts[:, 2] = np.maximum(verts[:, 2], floor)

    return PlacedBody(
        vertices_mm=verts,
        faces=body.faces,
        keypoints_mm={k: rot_sb @ v + t for k, v in body.keypoints_mm.items()},
        joints_mm={k: rot_sb @ v + t for k, v in body.joints_mm.items()},
        body=body,
        scanner_from_body=scanner_from_body,
        contact_z_mm=float(contact_z),
        sink_mm=sink,
        flatten_mm=flatten,
        arm_extension_deg=arms_ext,
        leg_extension_deg=legs_ext,
        params=params,
        knee_flexion_deg=knees,
    )
