"""Staff beside the table: a radiographer standing upright, or leaning over the patient with the arms
reaching toward them (partly hiding the patient from the ceiling camera).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), millimetres. A staff member
stands on the floor at ``(x_mm, y_mm)`` (the midpoint between the feet) and faces the table's centre line
(toward x = the table's lateral position).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from positioning.sim.body import BodyModel, Phenotype, rotation_deg
from positioning.sim.room import Label, Mesh

__all__ = ["StaffMember", "STAFF_POSES", "staff_mesh"]

RGB = tuple[float, float, float]

STAFF_POSES: tuple[str, ...] = ("standing", "leaning")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StaffMember:
    """One person beside the table.

    Attributes:
        x_mm, y_mm: where they stand (scanner frame, on the floor).
        pose: ``"standing"`` (upright, arms hanging) or ``"leaning"`` (bent forward at the hips by
            ``lean_deg`` with the arms raised forward by ``reach_deg``, over the patient).
        lean_deg: forward bend of the trunk.
        reach_deg: forward raise of the arms.
        phenotype: their body (anny phenotype).
        scrubs_rgb: albedo of their clothes.
        skin_rgb: albedo of their skin.
    """

    x_mm: float
    y_mm: float
    pose: str = "standing"
    lean_deg: float = 35.0
    reach_deg: float = 60.0
    phenotype: Phenotype = dataclasses.field(default_factory=lambda: Phenotype(gender=0.3, age=0.55))
    scrubs_rgb: RGB = (0.25, 0.45, 0.55)
    skin_rgb: RGB = (0.80, 0.62, 0.50)

    def __post_init__(self) -> None:
        if self.pose not in STAFF_POSES:
            raise ValueError(f"staff pose must be one of {STAFF_POSES}, got {self.pose!r}")


def staff_mesh(model: BodyModel, member: StaffMember, floor_z_mm: float, table_x_mm: float = 0.0) -> Mesh:
    """The staff member's mesh (label OTHER_PERSON), standing on the floor, facing the table."""
    rotations: dict[str, np.ndarray] = {}
    if member.pose == "leaning":
        # anny's body frame: +x left, +y posterior, +z superior; +x rotation turns superior to anterior
        rotations["spine05"] = rotation_deg("x", 0.6 * member.lean_deg)
        rotations["spine03"] = rotation_deg("x", 0.4 * member.lean_deg)
        for side, sign in ((".L", 1.0), (".R", -1.0)):  # arms forward (shoulder flexion: -x), elbows bent
            rotations[f"upperarm01{side}"] = rotation_deg("x", -member.reach_deg) @ rotation_deg(
                "y", sign * 20.0
            )
            rotations[f"lowerarm01{side}"] = rotation_deg("x", 30.0)
    body = model.posed_body(member.phenotype, rotations)
    face_dir = float(np.sign(table_x_mm - member.x_mm)) or 1.0
    # body frame: anterior (-y) -> (face_dir, 0, 0), superior (+z) -> +z, left = P x S
    rot = np.array([[0.0, -face_dir, 0.0], [face_dir, 0.0, 0.0], [0.0, 0.0, 1.0]])
    v = body.vertices_mm @ rot.T
    feet = model.part_mask("left_leg", "right_leg")
    v += np.array([member.x_mm - np.median(v[feet, 0]), member.y_mm - np.median(v[feet, 1]), 0.0])
    v[:, 2] += floor_z_mm - v[:, 2].min()
    colors = np.tile(np.asarray(member.scrubs_rgb, np.float32), (len(v), 1))
    colors[model.part_mask("head", "left_forearm", "right_forearm")] = np.asarray(member.skin_rgb, np.float32)
    return Mesh(v, body.faces, colors, Label.OTHER_PERSON)
