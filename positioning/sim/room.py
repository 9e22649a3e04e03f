"""The simulated CT room: table top with mattress and head rest, gantry with its bore, floor.

Convention: scanner frame (IEC 61217 fixed system), millimetres; +y into the gantry, +z up, isocenter at
the origin. Meshes are :class:`Mesh` triangle soups with outward normals and one colour per vertex.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

__all__ = ["Label", "Mesh", "RoomParams", "room_meshes", "box_mesh", "annulus_mesh"]


class Label(enum.IntEnum):
    """What a rendered pixel shows (the simulator's label image; evaluation only)."""

    NOTHING = 0
    FLOOR = 1
    TABLE = 2
    MATTRESS = 3
    HEAD_REST = 4
    GANTRY = 5
    PATIENT = 6
    OTHER_PERSON = 7


@dataclasses.dataclass(frozen=True)
class Mesh:
    """A labelled, coloured triangle mesh in the scanner frame.

    Attributes:
        vertices_mm: ``(V, 3)`` float64.
        faces: ``(F, 3)`` int32, counter-clockwise seen from outside.
        colors_rgb: ``(V, 3)`` float32 albedo in [0, 1].
        label: what the mesh is.
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    colors_rgb: np.ndarray
    label: Label


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomParams:
    """Geometry of the room. Defaults describe a common 70 cm bore CT with its table lowered for loading.

    Attributes:
        mattress_top_z_mm: z of the free mattress top (the table height the console would report, minus
            the mattress). Below the isocenter, so negative.
        table_head_y_mm: y of the table top's head end (the end toward the gantry).
        table_length_mm, table_width_mm, table_thickness_mm: carbon-fibre table top.
        mattress_thickness_mm, mattress_width_mm: foam mattress on the table top.
        table_lateral_mm: x of the table centre line (0 for a table on the scanner axis).
        head_holder_length_mm, head_holder_width_mm: the head holder extending the table top beyond its
            head end (its top is level with the mattress top).
        bore_diameter_mm: gantry bore (70, 78 or 80 cm).
        gantry_outer_radius_mm, gantry_depth_mm: gantry housing, centred on the isocenter along y.
        floor_z_mm: z of the floor.
    """

    mattress_top_z_mm: float = -150.0
    table_head_y_mm: float = -450.0
    table_length_mm: float = 2300.0
    table_width_mm: float = 480.0
    table_thickness_mm: float = 60.0
    mattress_thickness_mm: float = 50.0
    mattress_width_mm: float = 460.0
    table_lateral_mm: float = 0.0
    head_holder_length_mm: float = 300.0
    head_holder_width_mm: float = 260.0
    bore_diameter_mm: float = 700.0
    gantry_outer_radius_mm: float = 1050.0
    gantry_depth_mm: float = 800.0
    floor_z_mm: float = -1000.0

    def __post_init__(self) -> None:
        if self.bore_diameter_mm <= 0 or self.gantry_outer_radius_mm <= self.bore_diameter_mm / 2:
            raise ValueError(
                f"gantry outer radius {self.gantry_outer_radius_mm} mm must exceed the bore radius "
                f"{self.bore_diameter_mm / 2} mm"
            )

    @property
    def table_foot_y_mm(self) -> float:
        return self.table_head_y_mm - self.table_length_mm


_COLORS = {
    Label.FLOOR: (0.55, 0.55, 0.52),
    Label.TABLE: (0.18, 0.18, 0.20),
    Label.MATTRESS: (0.16, 0.24, 0.40),
    Label.HEAD_REST: (0.12, 0.18, 0.30),
    Label.GANTRY: (0.88, 0.88, 0.86),
}


def box_mesh(lo: np.ndarray, hi: np.ndarray, color: tuple[float, float, float], label: Label) -> Mesh:
    """Axis-aligned box from corner ``lo`` to corner ``hi`` (mm)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[(hi if (i >> k) & 1 else lo)[k] for k in range(3)] for i in range(8)])
    # vertex index bits: x=1, y=2, z=4; faces counter-clockwise from outside
    faces = np.array(
        [
            [0, 2, 3], [0, 3, 1],  # bottom (z=lo)
            [4, 5, 7], [4, 7, 6],  # top
            [0, 1, 5], [0, 5, 4],  # y=lo
            [2, 6, 7], [2, 7, 3],  # y=hi
            [0, 4, 6], [0, 6, 2],  # x=lo
            [1, 3, 7], [1, 7, 5],  # x=hi
        ],
        dtype=np.int32,
    )  # fmt: skip
    colors = np.tile(np.asarray(color, np.float32), (8, 1))
    return Mesh(corners, faces, colors, label)


def annulus_mesh(
    r_in_mm: float,
    r_out_mm: float,
    y0_mm: float,
    y1_mm: float,
    color: tuple[float, float, float],
    label: Label,
    *,
    segments: int = 128,
) -> Mesh:
    """A closed ring (a gantry housing) around the y axis, between ``y0_mm`` and ``y1_mm``."""
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    c, s = np.cos(a), np.sin(a)
    rings = []
    for r, y in ((r_in_mm, y0_mm), (r_out_mm, y0_mm), (r_out_mm, y1_mm), (r_in_mm, y1_mm)):
        rings.append(np.stack([r * c, np.full_like(c, y), r * s], axis=1))
    verts = np.concatenate(rings)
    n = segments
    faces = []
    for k in range(4):  # quads between consecutive rings, around the profile
        a0, b0 = k * n, ((k + 1) % 4) * n
        for i in range(n):
            j = (i + 1) % n
            faces.append([a0 + i, b0 + i, b0 + j])
            faces.append([a0 + i, b0 + j, a0 + j])
    faces_arr = np.asarray(faces, dtype=np.int32)
    colors = np.tile(np.asarray(color, np.float32), (len(verts), 1))
    return Mesh(verts, faces_arr, colors, label)


def room_meshes(room: RoomParams, *, head_rest: tuple[float, float, float] | None = None) -> list[Mesh]:
    """The static meshes of the room.

    Args:
        room: room geometry.
        head_rest: optional ``(y_min_mm, y_max_mm, top_z_mm)`` of a head-rest cushion lying on the mattress
            (its top is where the patient's head rests; see the contact model in ``placement``).

    Returns:
        Floor, table top, mattress, optional head rest, gantry.
    """
    x0 = room.table_lateral_mm
    y_foot, y_head = room.table_foot_y_mm, room.table_head_y_mm
    top = room.mattress_top_z_mm
    base = top - room.mattress_thickness_mm
    meshes = [
        box_mesh(
            (-3000, -4500, room.floor_z_mm - 10), (3000, 3000, room.floor_z_mm), _COLORS[Label.FLOOR],
            Label.FLOOR,
        ),
        box_mesh(
            (x0 - room.table_width_mm / 2, y_foot, base - room.table_thickness_mm),
            (x0 + room.table_width_mm / 2, y_head, base),
            _COLORS[Label.TABLE], Label.TABLE,
        ),
        # table pedestal under the foot half of the table
        box_mesh(
            (x0 - 200, y_foot + 200, room.floor_z_mm),
            (x0 + 200, y_foot + 1000, base - room.table_thickness_mm),
            _COLORS[Label.TABLE], Label.TABLE,
        ),
        # head holder: a narrower extension of the table top beyond its head end, with its own pad
        box_mesh(
            (x0 - room.head_holder_width_mm / 2, y_head, top - 25.0),
            (x0 + room.head_holder_width_mm / 2, y_head + room.head_holder_length_mm, top),
            _COLORS[Label.TABLE], Label.TABLE,
        ),
        box_mesh(
            (x0 - room.mattress_width_mm / 2, y_foot + 10, base),
            (x0 + room.mattress_width_mm / 2, y_head - 10, top),
            _COLORS[Label.MATTRESS], Label.MATTRESS,
        ),
        annulus_mesh(
            room.bore_diameter_mm / 2, room.gantry_outer_radius_mm,
            -room.gantry_depth_mm / 2, room.gantry_depth_mm / 2, _COLORS[Label.GANTRY], Label.GANTRY,
        ),
    ]  # fmt: skip
    if head_rest is not None and head_rest[2] > top + 1.0:
        y0, y1, z = head_rest
        meshes.append(
            box_mesh((x0 - 130, y0, top), (x0 + 130, y1, z), _COLORS[Label.HEAD_REST], Label.HEAD_REST)
        )
    return meshes
