"""Simulated patient bodies from the ``anny`` parametric body model (MakeHuman topology, PyTorch).

The body model is loaded once per process (:func:`body_model`) and shared. :func:`pose_body` turns a
:class:`Phenotype` and an :class:`ArmPose` into a posed mesh in anny's *body frame*; placing that body on
the table (and the mattress contact) is :mod:`positioning.sim.placement`'s job.

Convention:
    Body frame (anny's, converted to millimetres): origin between the hips, +x the patient's left,
    +y posterior (anny's -y is the front), +z superior (toward the head). This is DICOM's LPS patient
    frame. Vertices are ``(V, 3)`` float64 mm; faces ``(F, 3)`` int32 triangles with outward normals
    (counter-clockwise seen from outside).

Posing: rotations are anny ``local-ref`` deltas, i.e. expressed in body-frame axes at each bone's head.
The rest pose is an A-pose with the forearms bent forward; every arm pose here straightens the forearm
into the body's plane (``lowerarm01`` about x by about +60 degrees). A rotation of the patient's right side
mirrors the left across the sagittal plane: the angle about x is kept, the angles about y and z change sign.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from typing import Any

import numpy as np

from positioning.conventions import ArmState
from positioning.native_log import quiet_native_stderr, quiet_native_stderr_at_exit

__all__ = [
    "ArmPose",
    "Phenotype",
    "PosedBody",
    "BodyModel",
    "body_model",
    "pose_body",
    "COCO_KEYPOINTS",
    "SKELETON_JOINTS",
    "PART_NAMES",
    "arm_rotations",
    "leg_rotations",
    "body_rotations",
    "rotation_deg",
]

#: The 17 COCO keypoint names in COCO order (the patient's own left and right).
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip

#: Skeleton joints exported as ground truth: our snake_case name -> anny bone whose head is the joint.
SKELETON_JOINTS: dict[str, str] = {
    "pelvis": "root",
    "spine_lower": "spine04",
    "spine_mid": "spine03",
    "spine_upper": "spine01",
    "neck_base": "neck01",
    "head_base": "head",
    "left_sternoclavicular": "clavicle.L",
    "right_sternoclavicular": "clavicle.R",
    "left_shoulder_joint": "upperarm01.L",
    "right_shoulder_joint": "upperarm01.R",
    "left_elbow_joint": "lowerarm01.L",
    "right_elbow_joint": "lowerarm01.R",
    "left_wrist_joint": "wrist.L",
    "right_wrist_joint": "wrist.R",
    "left_hip_joint": "upperleg01.L",
    "right_hip_joint": "upperleg01.R",
    "left_knee_joint": "lowerleg01.L",
    "right_knee_joint": "lowerleg01.R",
    "left_ankle_joint": "foot.L",
    "right_ankle_joint": "foot.R",
}


#: The simulator's name for :class:`positioning.conventions.ArmState` (one enum for every stage).
ArmPose = ArmState


@dataclasses.dataclass(frozen=True, kw_only=True)
class Phenotype:
    """anny phenotype parameters, each in [0, 1] (anny's own scale).

    ``gender`` 0 = male, 1 = female; ``age`` 0 = newborn, 0.25 = about 6 years, 0.5 = young adult,
    1 = about 90 years; ``weight`` and ``muscle`` together set the build (high weight with low muscle is
    obese); ``height`` 0.5 is average for the age and sex; ``proportions`` 0.5 is average.
    """

    gender: float = 0.5
    age: float = 0.5
    muscle: float = 0.5
    weight: float = 0.5
    height: float = 0.5
    proportions: float = 0.5

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"phenotype {f.name} must be in [0, 1], got {v}")

    def as_kwargs(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PosedBody:
    """A posed body in anny's body frame (see module Convention), millimetres.

    Attributes:
        vertices_mm: ``(V, 3)`` mesh vertices.
        faces: ``(F, 3)`` int32 triangles.
        keypoints_mm: COCO-17 name -> ``(3,)`` position (anny's COCO keypoint regressor).
        joints_mm: :data:`SKELETON_JOINTS` name -> ``(3,)`` joint position.
        bone_heads_mm: ``(B, 3)`` head of every anny bone (order of ``BodyModel.bone_labels``).
        vertex_part: ``(V,)`` int index into ``BodyModel.part_names``: which body part each vertex follows.
        height_mm, mass_kg, bmi: anthropometry of the rest (unposed) body.
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    keypoints_mm: dict[str, np.ndarray]
    joints_mm: dict[str, np.ndarray]
    bone_heads_mm: np.ndarray
    vertex_part: np.ndarray
    height_mm: float
    mass_kg: float
    bmi: float


def rotation_deg(axis: str, angle_deg: float) -> np.ndarray:
    """3x3 right-handed rotation by ``angle_deg`` about body axis ``'x'``, ``'y'`` or ``'z'``."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


#: Body parts, by the dominant skinning bone of each vertex.
PART_NAMES: tuple[str, ...] = (
    "head", "torso", "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
    "left_leg", "right_leg",
)  # fmt: skip


def _part_of_bone(label: str) -> str:
    side = "right" if label.endswith(".R") else "left"
    if label.startswith("upperarm"):
        return f"{side}_upper_arm"
    if label.startswith(("lowerarm", "wrist", "finger", "metacarpal")):
        return f"{side}_forearm"
    if label.startswith(("upperleg", "lowerleg", "foot", "toe")):
        return f"{side}_leg"
    if label.startswith(("head", "neck", "eye")):
        return "head"
    return "torso"


class BodyModel:
    """The anny body model, its COCO keypoint regressor and derived lookup tables (load once, share).

    Args:
        dtype: torch dtype name for the model (``"float32"`` is about twice as fast as ``"float64"``).
    """

    def __init__(self, *, dtype: str = "float32") -> None:
        with quiet_native_stderr():  # anny's skinning backend (warp) prints a "no CUDA" notice
            import warp

            warp.config.log_level = warp.LOG_WARNING  # no start-up banner on stdout
            warp.init()  # now, so that its exit handlers are registered before ours
            import anny  # heavy import: only when a body is actually needed
            import torch
        quiet_native_stderr_at_exit()

        self._torch = torch
        self._lock = threading.Lock()
        self.model = anny.Anny()
        self.model = self.model.to(getattr(torch, dtype))
        self.keypoint_regressor = anny.KeypointsRegressor.coco(self.model)
        self.keypoint_regressor = self.keypoint_regressor.to(getattr(torch, dtype))
        self.anthropometry = anny.Anthropometry(self.model)
        self.bone_labels: list[str] = list(self.model.bone_labels)
        faces = self.model.get_triangular_faces()
        self.faces = np.ascontiguousarray(faces.cpu().numpy().astype(np.int32))
        self.faces.setflags(write=False)
        kp_labels = list(self.keypoint_regressor.labels)
        self._coco_index = [kp_labels.index(n) for n in COCO_KEYPOINTS]
        self._joint_index = {k: self.bone_labels.index(b) for k, b in SKELETON_JOINTS.items()}
        self.part_names = PART_NAMES
        self.vertex_part = self._vertex_parts()
        self.vertex_part.setflags(write=False)

    def _vertex_parts(self) -> np.ndarray:
        idx = self.model.vertex_bone_indices.cpu().numpy()
        w = self.model.vertex_bone_weights.cpu().numpy()
        dominant = idx[np.arange(idx.shape[0]), np.argmax(w, axis=1)]
        part_of_bone = np.array([PART_NAMES.index(_part_of_bone(b)) for b in self.bone_labels], np.int16)
        return part_of_bone[dominant]

    def part_mask(self, *names: str) -> np.ndarray:
        """Boolean ``(V,)`` mask of the vertices that belong to any of the named parts."""
        ids = [self.part_names.index(n) for n in names]
        return np.isin(self.vertex_part, ids)

    def forward(
        self, phenotype: Phenotype, rotations: list[dict[str, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
        """Batch forward pass: one body per entry of ``rotations`` (bone -> 3x3 local-ref rotation).

        Returns:
            ``vertices_mm`` (N, V, 3), ``keypoints_mm`` (N, 17, 3) COCO order, ``bone_heads_mm`` (N, B, 3),
            and the rest body's anthropometry (``height_mm``, ``mass_kg``, ``bmi``).
        """
        torch = self._torch
        n = len(rotations)
        bones = sorted({b for r in rotations for b in r})
        pose: dict[str, Any] = {}
        dtype = self.model.template_vertices.dtype
        for b in bones:
            m = np.tile(np.eye(4), (n, 1, 1))
            for i, r in enumerate(rotations):
                if b in r:
                    m[i, :3, :3] = r[b]
            pose[b] = torch.as_tensor(m, dtype=dtype)
        pheno = {k: torch.full((n,), v, dtype=dtype) for k, v in phenotype.as_kwargs().items()}
        with self._lock, torch.no_grad(), quiet_native_stderr():
            out = self.model(pose_parameters=pose or None, phenotype_kwargs=pheno)
            kp = self.keypoint_regressor(out)[:, self._coco_index]
            anthro = self.anthropometry(out["rest_vertices"][:1])
        verts = out["vertices"].double().cpu().numpy() * 1000.0
        heads = out["bone_poses"][..., :3, 3].double().cpu().numpy() * 1000.0
        stats = {
            "height_mm": float(anthro["height"][0]) * 1000.0,
            "mass_kg": float(anthro["mass"][0]),
            "bmi": float(anthro["bmi"][0]),
        }
        return verts, kp.double().cpu().numpy() * 1000.0, heads, stats

    def posed_body(self, phenotype: Phenotype, rotations: dict[str, np.ndarray]) -> PosedBody:
        """One posed body as a :class:`PosedBody`."""
        verts, kp, heads, stats = self.forward(phenotype, [rotations])
        return PosedBody(
            vertices_mm=verts[0],
            faces=self.faces,
            keypoints_mm={n: kp[0, i] for i, n in enumerate(COCO_KEYPOINTS)},
            joints_mm={k: heads[0, i] for k, i in self._joint_index.items()},
            bone_heads_mm=heads[0],
            vertex_part=self.vertex_part,
            **stats,
        )


@functools.cache
def body_model() -> BodyModel:
    """The process-wide shared :class:`BodyModel` (first call loads anny: seconds, or ~1 min uncached)."""
    return BodyModel()


def arm_rotations(
    arms: ArmPose,
    *,
    jitter_deg: np.ndarray | None = None,
    extension_deg: tuple[float, float] = (0.0, 0.0),
) -> dict[str, np.ndarray]:
    """Local-ref rotations of the arm bones for an arm pose.

    Args:
        arms: the arm pose.
        jitter_deg: optional ``(2, 3)`` small per-side variation (left, right) of (abduction, rotation,
            elbow) in degrees.
        extension_deg: rotation of each upper arm (left, right) about the body's x axis, degrees; positive
            moves the arm posteriorly. The placement uses it to lay the arms on the mattress.

    Returns:
        bone label -> 3x3 rotation.
    """
    j = np.zeros((2, 3)) if jitter_deg is None else np.asarray(jitter_deg, dtype=float).reshape(2, 3)
    rot: dict[str, np.ndarray] = {}
    for k, side in enumerate((".L", ".R")):
        sign = 1.0 if side == ".L" else -1.0  # mirror across the sagittal plane: y and z angles flip
        abd, twist, elbow = j[k]
        ext = extension_deg[k]
        if arms is ArmPose.SIDES:
            upper = rotation_deg("x", ext) @ rotation_deg("y", sign * (38.0 + abd))
            lower = rotation_deg("x", 60.0 + elbow)
        elif arms is ArmPose.RAISED:
            upper = rotation_deg("x", ext) @ rotation_deg("y", sign * (-155.0 + abd))
            lower = rotation_deg("x", 60.0 + elbow)
        else:  # CHEST: upper arm at the side turned inward, elbow flexed, hand on the upper abdomen
            upper = (
                rotation_deg("x", ext)
                @ rotation_deg("z", sign * (-90.0 + twist))
                @ rotation_deg("y", sign * (38.0 + abd))
            )
            lower = rotation_deg("x", -70.0 + elbow)
        rot[f"upperarm01{side}"] = upper
        rot[f"lowerarm01{side}"] = lower
    return rot


def leg_rotations(
    spread_deg: tuple[float, float] = (6.0, 6.0),
    *,
    extension_deg: tuple[float, float] = (0.0, 0.0),
    knee_flexion_deg: tuple[float, float] = (0.0, 0.0),
) -> dict[str, np.ndarray]:
    """Close the rest pose's legs to a natural lying stance (``upperleg01`` about y, mirrored), extend
    the hips about x (positive moves the leg posteriorly; negative flexes the hip) and flex the knees
    (``lowerleg01`` about x, positive moves the shank posteriorly)."""
    rot = {
        "upperleg01.L": rotation_deg("x", extension_deg[0]) @ rotation_deg("y", spread_deg[0]),
        "upperleg01.R": rotation_deg("x", extension_deg[1]) @ rotation_deg("y", -spread_deg[1]),
    }
    for side, k in zip((".L", ".R"), knee_flexion_deg, strict=True):
        if k:
            rot[f"lowerleg01{side}"] = rotation_deg("x", k)
    return rot


def pose_body(
    phenotype: Phenotype,
    arms: ArmPose,
    *,
    arm_jitter_deg: np.ndarray | None = None,
    arm_extension_deg: tuple[float, float] = (0.0, 0.0),
    leg_spread_deg: tuple[float, float] = (6.0, 6.0),
    head_tilt_deg: float = 0.0,
    model: BodyModel | None = None,
) -> PosedBody:
    """Pose one body in the body frame.

    Args:
        phenotype: anny phenotype.
        arms: arm pose.
        arm_jitter_deg: ``(2, 3)`` natural variation per side, see :func:`arm_rotations`.
        arm_extension_deg: per-side rotation of the upper arm about x (posterior positive).
        leg_spread_deg: per-side rotation of ``upperleg01`` about y (degrees, positive opens).
        head_tilt_deg: head flexion (+) / extension (-) about x.
        model: body model (default: the shared one).

    Returns:
        The posed body.
    """
    model = model or body_model()
    rot = body_rotations(
        arms,
        arm_jitter_deg=arm_jitter_deg,
        arm_extension_deg=arm_extension_deg,
        leg_spread_deg=leg_spread_deg,
        head_tilt_deg=head_tilt_deg,
    )
    return model.posed_body(phenotype, rot)


def body_rotations(
    arms: ArmPose,
    *,
    arm_jitter_deg: np.ndarray | None = None,
    arm_extension_deg: tuple[float, float] = (0.0, 0.0),
    leg_spread_deg: tuple[float, float] = (6.0, 6.0),
    leg_extension_deg: tuple[float, float] = (0.0, 0.0),
    head_tilt_deg: float = 0.0,
    foot_flexion_deg: float = 0.0,
    knee_flexion_deg: tuple[float, float] = (0.0, 0.0),
) -> dict[str, np.ndarray]:
    """All local-ref bone rotations of a lying pose (arms, legs, head, feet); see :func:`pose_body`.

    ``foot_flexion_deg`` is plantar flexion of both feet about x (+ points the toes inferiorly);
    ``knee_flexion_deg`` flexes each knee (see :func:`leg_rotations`).
    """
    rot = arm_rotations(arms, jitter_deg=arm_jitter_deg, extension_deg=arm_extension_deg)
    rot |= leg_rotations(leg_spread_deg, extension_deg=leg_extension_deg, knee_flexion_deg=knee_flexion_deg)
    if head_tilt_deg:
        rot["head"] = rotation_deg("x", head_tilt_deg)  # +x turns superior toward anterior (-y): flexion
    if foot_flexion_deg:
        rot["foot.L"] = rot["foot.R"] = rotation_deg("x", foot_flexion_deg)
    return rot
