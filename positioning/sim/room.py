"""The simulated CT room: table top with mattress, head holder, arm boards and base, gantry, floor, and
other furniture (a transfer stretcher, a cart, an instrument tray).

Every part is a parameter of :class:`RoomParams`, so the randomised world (``sim/world.yaml``) can vary
what real rooms vary: the table top's width and cradle curvature, the mattress's thickness, colour and
softness (its top is a height field that dips around the patient), head holders and arm boards, bases
narrower or wider than the top at different heights, gantry shapes, and horizontal surfaces nearby. The
defaults describe the room every scenario used before the randomised world (a 480 mm flat carbon top,
a 50 mm dark-blue mattress, a pedestal under the foot half, a ring gantry with a 70 cm bore).

Convention: scanner frame (IEC 61217 fixed system), millimetres; +y into the gantry, +z up, isocenter at
the origin. Meshes are :class:`Mesh` triangle soups with outward normals and one colour per vertex.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "Label",
    "Mesh",
    "ClutterItem",
    "RoomParams",
    "room_meshes",
    "box_mesh",
    "annulus_mesh",
    "heightfield_mesh",
    "cradle_rise_mm",
]

RGB = tuple[float, float, float]


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
    COVER = 8
    CLUTTER = 9
    PILLOW = 10
    BOARD = 11


@dataclasses.dataclass(frozen=True)
class Mesh:
    """A labelled, coloured triangle mesh in the scanner frame.

    Attributes:
        vertices_mm: ``(V, 3)`` float64.
        faces: ``(F, 3)`` int32, counter-clockwise seen from outside.
        colors_rgb: ``(V, 3)`` float32 albedo in [0, 1].
        label: what the mesh is.
        texture: a pattern printed on it (the calibration board), replacing the vertex colours.
    """

    vertices_mm: np.ndarray
    faces: np.ndarray
    colors_rgb: np.ndarray
    label: Label
    #: a printed pattern: scanner-frame hit points ``(N, 3)`` -> albedo ``(N, 3)`` (None: vertex colours)
    texture: Callable[[np.ndarray], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClutterItem:
    """A piece of furniture near the table, drawn as a top slab on legs (or on a pole).

    Attributes:
        kind: ``"stretcher"`` (a transfer trolley with its own mattress, often parked alongside at table
            height), ``"cart"`` (a trolley with a lower shelf) or ``"tray"`` (an instrument tray on a pole).
        centre_x_mm, centre_y_mm: plan-view centre of the top.
        top_z_mm: z of the top surface (of the mattress for a stretcher).
        length_mm: extent along y.
        width_mm: extent along x.
        rgb: albedo of the top (legs are grey metal).
    """

    kind: str = "stretcher"
    centre_x_mm: float = 900.0
    centre_y_mm: float = -1300.0
    top_z_mm: float = -150.0
    length_mm: float = 1900.0
    width_mm: float = 600.0
    rgb: RGB = (0.25, 0.35, 0.45)

    def __post_init__(self) -> None:
        if self.kind not in ("stretcher", "cart", "tray"):
            raise ValueError(f"clutter kind must be stretcher, cart or tray, got {self.kind!r}")
        if self.length_mm <= 0 or self.width_mm <= 0:
            raise ValueError(f"clutter size must be > 0, got {self.length_mm} x {self.width_mm} mm")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomParams:
    """Geometry and colours of the room. Defaults describe a common 70 cm bore CT with its table lowered
    for loading (the room of every scenario before the randomised world).

    Attributes:
        mattress_top_z_mm: z of the free mattress top on the table's centre line (the table height the
            console would report, minus the mattress). Below the isocenter, so negative.
        table_head_y_mm: y of the table top's head end (the end toward the gantry).
        table_length_mm, table_width_mm, table_thickness_mm: the (carbon-fibre) table top.
        mattress_thickness_mm, mattress_width_mm: the mattress on the table top.
        table_lateral_mm: x of the table centre line (0 for a table on the scanner axis).
        cradle_sagitta_mm: a curved cradle: the table top's surface rises by this much from its centre
            line to its lateral edges (parabolic); 0 is a flat top.
        mattress_sagitta_mm: the same for the mattress top (a mattress shaped to a curved cradle).
        mattress_softness: how soft the mattress is, 0 (a firm pad) to 1 (soft foam); it scales the
            patient's sink (:func:`positioning.sim.placement.mattress_sink_mm`) and how far around the
            body the top dips (``depression_length_mm``).
        depression_length_mm: decay length of the dip of the mattress top around the body's contact.
        head_holder: ``"flat"`` (a narrower extension of the top beyond its head end, level with the
            mattress) or ``"none"``.
        head_holder_length_mm, head_holder_width_mm: its size.
        arm_boards: ``"none"``, ``"left"`` (toward -x), ``"right"`` (toward +x) or ``"both"``: boards beside
            the table top at mattress height, for arms held out.
        arm_board_length_mm, arm_board_width_mm, arm_board_y_mm: their size (along y, out from the table
            edge) and centre y.
        base_width_mm, base_length_mm: the table base (pedestal or lift housing) under the top.
        base_foot_offset_mm: distance of the base's foot-side end from the table top's foot end.
        base_top_below_mm: distance from the free mattress top down to the base's top face; the default
            (mattress plus top thickness) makes the base meet the table top's underside. Larger values
            leave a gap: a lift housing seen beside the top when it is wider than the top.
        has_gantry: whether the gantry is there at all.
        gantry_shape: ``"ring"`` (round housing) or ``"box"`` (square housing, round bore).
        bore_diameter_mm: gantry bore (70, 78 or 80 cm).
        gantry_outer_radius_mm, gantry_depth_mm: gantry housing (half the outer size for a box), centred
            on the isocenter along y.
        floor_z_mm: z of the floor.
        clutter: furniture near the table (:class:`ClutterItem`).
        table_rgb, mattress_rgb, head_rest_rgb, gantry_rgb, floor_rgb: albedos.
    """

    mattress_top_z_mm: float = -150.0
    table_head_y_mm: float = -450.0
    table_length_mm: float = 2300.0
    table_width_mm: float = 480.0
    table_thickness_mm: float = 60.0
    mattress_thickness_mm: float = 50.0
    mattress_width_mm: float = 460.0
    table_lateral_mm: float = 0.0
    cradle_sagitta_mm: float = 0.0
    mattress_sagitta_mm: float = 0.0
    mattress_softness: float = 0.5
    depression_length_mm: float = 0.0
    head_holder: str = "flat"
    head_holder_length_mm: float = 300.0
    head_holder_width_mm: float = 260.0
    arm_boards: str = "none"
    arm_board_length_mm: float = 550.0
    arm_board_width_mm: float = 180.0
    arm_board_y_mm: float = -900.0
    base_width_mm: float = 400.0
    base_length_mm: float = 800.0
    base_foot_offset_mm: float = 200.0
    base_top_below_mm: float | None = None
    has_gantry: bool = True
    gantry_shape: str = "ring"
    bore_diameter_mm: float = 700.0
    gantry_outer_radius_mm: float = 1050.0
    gantry_depth_mm: float = 800.0
    floor_z_mm: float = -1000.0
    clutter: tuple[ClutterItem, ...] = ()
    table_rgb: RGB = (0.18, 0.18, 0.20)
    mattress_rgb: RGB = (0.16, 0.24, 0.40)
    head_rest_rgb: RGB = (0.12, 0.18, 0.30)
    gantry_rgb: RGB = (0.88, 0.88, 0.86)
    floor_rgb: RGB = (0.55, 0.55, 0.52)

    def __post_init__(self) -> None:
        if self.bore_diameter_mm <= 0 or self.gantry_outer_radius_mm <= self.bore_diameter_mm / 2:
            raise ValueError(
                f"gantry outer radius {self.gantry_outer_radius_mm} mm must exceed the bore radius "
                f"{self.bore_diameter_mm / 2} mm"
            )
        if self.mattress_width_mm > self.table_width_mm + 1e-9:
            raise ValueError(
                f"mattress width {self.mattress_width_mm} mm exceeds the table top's {self.table_width_mm} mm"
            )
        if not 0.0 <= self.mattress_softness <= 1.0:
            raise ValueError(f"mattress_softness must be in [0, 1], got {self.mattress_softness}")
        for name, allowed in (
            ("head_holder", ("flat", "none")),
            ("arm_boards", ("none", "left", "right", "both")),
            ("gantry_shape", ("ring", "box")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.base_top_below_mm is not None and self.base_top_below_mm < self.mattress_thickness_mm:
            raise ValueError(
                f"base_top_below_mm {self.base_top_below_mm} mm would put the base above the table top"
            )
        if self.floor_z_mm >= self.mattress_top_z_mm - self.mattress_thickness_mm - self.table_thickness_mm:
            raise ValueError(f"floor z {self.floor_z_mm} mm is not below the table")

    @property
    def table_foot_y_mm(self) -> float:
        return self.table_head_y_mm - self.table_length_mm

    @property
    def table_top_z_mm(self) -> float:
        """z of the table top's upper surface (under the mattress) on its centre line."""
        return self.mattress_top_z_mm - self.mattress_thickness_mm

    @property
    def base_top_z_mm(self) -> float:
        """z of the base's top face."""
        below = self.base_top_below_mm
        if below is None:
            below = self.mattress_thickness_mm + self.table_thickness_mm
        return self.mattress_top_z_mm - below


def cradle_rise_mm(x_mm: np.ndarray, half_width_mm: float, sagitta_mm: float) -> np.ndarray:
    """How far a curved surface lies above its centre line at lateral offset ``x_mm`` (parabolic)."""
    if sagitta_mm == 0.0:
        return np.zeros_like(np.asarray(x_mm, np.float64))
    u = np.clip(np.asarray(x_mm, np.float64) / half_width_mm, -1.0, 1.0)
    return sagitta_mm * u * u


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
    square_outside: bool = False,
) -> Mesh:
    """A closed ring (a gantry housing) around the y axis, between ``y0_mm`` and ``y1_mm``; with
    ``square_outside`` the outside is a square of half-size ``r_out_mm`` (a box housing)."""
    a = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    c, s = np.cos(a), np.sin(a)
    r_out = r_out_mm / np.maximum(np.abs(c), np.abs(s)) if square_outside else np.full_like(c, r_out_mm)
    rings = []
    for r, y in ((r_in_mm, y0_mm), (r_out, y0_mm), (r_out, y1_mm), (r_in_mm, y1_mm)):
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


def heightfield_mesh(
    x_mm: np.ndarray,
    y_mm: np.ndarray,
    z_mm: np.ndarray,
    color: tuple[float, float, float] | np.ndarray,
    label: Label,
    *,
    bottom_z_mm: float | None = None,
) -> Mesh:
    """A surface ``z = f(x, y)`` sampled on a grid, optionally closed by vertical skirts down to
    ``bottom_z_mm`` and a flat bottom (a solid: a mattress, a pillow, a blanket's hanging sides).

    Args:
        x_mm: ``(nx,)`` increasing lateral sample positions.
        y_mm: ``(ny,)`` increasing longitudinal sample positions.
        z_mm: ``(ny, nx)`` heights.
        color: one albedo, or ``(ny, nx, 3)`` per sample.
        label: what the surface is.
        bottom_z_mm: close the surface into a solid down to this z (None: an open sheet).
    """
    x = np.asarray(x_mm, np.float64)
    y = np.asarray(y_mm, np.float64)
    z = np.asarray(z_mm, np.float64)
    ny, nx = len(y), len(x)
    if z.shape != (ny, nx) or nx < 2 or ny < 2:
        raise ValueError(f"z_mm must be (len(y), len(x)) with both >= 2, got {z.shape} for {ny} x {nx}")
    xx, yy = np.meshgrid(x, y)
    top = np.stack([xx, yy, z], axis=-1).reshape(-1, 3)
    idx = np.arange(ny * nx).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]  # counter-clockwise seen from above
    col = np.asarray(color, np.float32)
    colors = np.broadcast_to(col, (ny, nx, 3)).reshape(-1, 3) if col.ndim == 3 else np.tile(col, (ny * nx, 1))
    verts = [top]
    cols = [colors]
    if bottom_z_mm is not None:
        ring = np.concatenate([idx[0, :], idx[1:, -1], idx[-1, -2::-1], idx[-2:0:-1, 0]])  # around the border
        low = top[ring].copy()
        low[:, 2] = bottom_z_mm
        base = len(top)
        verts.append(low)
        cols.append(colors[ring])
        k = np.arange(len(ring))
        k1 = (k + 1) % len(ring)
        faces += [np.stack([ring[k], base + k, base + k1], 1), np.stack([ring[k], base + k1, ring[k1]], 1)]
        # flat bottom: a fan over the lowered ring (the ring is convex in plan view for a grid)
        centre = base + len(ring)
        verts.append(np.array([[x.mean(), y.mean(), bottom_z_mm]]))
        cols.append(colors[:1])
        faces.append(np.stack([np.full(len(ring), centre), base + k1, base + k], 1))
    return Mesh(
        np.concatenate(verts),
        np.concatenate(faces).astype(np.int32),
        np.concatenate(cols).astype(np.float32),
        label,
    )


def _mattress_mesh(room: RoomParams, depression: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> Mesh:
    """The mattress as a height field: flat or shaped to the cradle, dipping where ``depression`` says
    (``(x_mm, y_mm, dip_mm)`` on a grid), closed down to the table top."""
    x0 = room.table_lateral_mm
    half = room.mattress_width_mm / 2
    y0, y1 = room.table_foot_y_mm + 10, room.table_head_y_mm - 10
    base = room.table_top_z_mm
    if depression is None:
        xs = np.linspace(x0 - half, x0 + half, 17)
        ys = np.array([y0, y1])
        dip = np.zeros((2, len(xs)))
    else:
        dx, dy, dd = depression
        keep_x = (dx > x0 - half) & (dx < x0 + half)
        keep_y = (dy > y0) & (dy < y1)
        xs = np.r_[x0 - half, dx[keep_x], x0 + half]
        ys = np.r_[y0, dy[keep_y], y1]
        dip = np.zeros((len(ys), len(xs)))
        dip[1:-1, 1:-1] = dd[np.ix_(keep_y, keep_x)]
    z = room.mattress_top_z_mm + cradle_rise_mm(xs - x0, half, room.mattress_sagitta_mm)[None, :] - dip
    z = np.maximum(z, base + 2.0)
    return heightfield_mesh(xs, ys, z, room.mattress_rgb, Label.MATTRESS, bottom_z_mm=base)


def _table_top_mesh(room: RoomParams) -> Mesh:
    x0 = room.table_lateral_mm
    half = room.table_width_mm / 2
    top = room.table_top_z_mm
    y_foot, y_head = room.table_foot_y_mm, room.table_head_y_mm
    if room.cradle_sagitta_mm == 0.0:
        return box_mesh(
            (x0 - half, y_foot, top - room.table_thickness_mm),
            (x0 + half, y_head, top),
            room.table_rgb,
            Label.TABLE,
        )
    xs = np.linspace(x0 - half, x0 + half, 25)
    z = top + cradle_rise_mm(xs - x0, half, room.cradle_sagitta_mm)
    return heightfield_mesh(
        xs,
        np.array([y_foot, y_head]),
        np.tile(z, (2, 1)),
        room.table_rgb,
        Label.TABLE,
        bottom_z_mm=top - room.table_thickness_mm,
    )


def _clutter_meshes(item: ClutterItem, floor_z_mm: float) -> list[Mesh]:
    metal = (0.62, 0.63, 0.65)
    x, y, z = item.centre_x_mm, item.centre_y_mm, item.top_z_mm
    hx, hy = item.width_mm / 2, item.length_mm / 2
    out = []
    if item.kind == "stretcher":
        out.append(box_mesh((x - hx, y - hy, z - 80), (x + hx, y + hy, z), item.rgb, Label.CLUTTER))  # pad
        out.append(
            box_mesh(
                (x - hx - 20, y - hy - 20, z - 130), (x + hx + 20, y + hy + 20, z - 80), metal, Label.CLUTTER
            )
        )
        slab_bottom = z - 130
    elif item.kind == "cart":
        out.append(box_mesh((x - hx, y - hy, z - 30), (x + hx, y + hy, z), item.rgb, Label.CLUTTER))
        shelf = floor_z_mm + 150
        if shelf < z - 200:
            out.append(
                box_mesh((x - hx, y - hy, shelf - 20), (x + hx, y + hy, shelf), item.rgb, Label.CLUTTER)
            )
        slab_bottom = z - 30
    else:  # tray on a pole
        out.append(box_mesh((x - hx, y - hy, z - 12), (x + hx, y + hy, z), item.rgb, Label.CLUTTER))
        out.append(box_mesh((x - 15, y - 15, floor_z_mm), (x + 15, y + 15, z - 12), metal, Label.CLUTTER))
        return out
    leg = 20.0
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = x + sx * (hx - leg), y + sy * (hy - leg)
            out.append(
                box_mesh(
                    (cx - leg / 2, cy - leg / 2, floor_z_mm),
                    (cx + leg / 2, cy + leg / 2, slab_bottom),
                    metal,
                    Label.CLUTTER,
                )
            )
    return out


def room_meshes(
    room: RoomParams,
    *,
    head_rest: tuple[float, float, float] | None = None,
    depression: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    extra: Sequence[Mesh] = (),
) -> list[Mesh]:
    """The static meshes of the room.

    Args:
        room: room geometry.
        head_rest: optional ``(y_min_mm, y_max_mm, top_z_mm)`` of a head-rest cushion lying on the mattress
            (its top is where the patient's head rests; see the contact model in ``placement``).
        depression: optional ``(x_mm (nx,), y_mm (ny,), dip_mm (ny, nx))``: how far the mattress top dips
            below its free height around the patient (see ``placement.mattress_depression``).
        extra: more meshes appended as they are (pillows, covers).

    Returns:
        Floor, table top, base, head holder, arm boards, mattress, head rest, gantry, clutter, ``extra``.
    """
    x0 = room.table_lateral_mm
    y_foot, y_head = room.table_foot_y_mm, room.table_head_y_mm
    top = room.mattress_top_z_mm
    table_top = room.table_top_z_mm
    meshes = [
        box_mesh(
            (-3000, -4500, room.floor_z_mm - 10), (3000, 3000, room.floor_z_mm), room.floor_rgb, Label.FLOOR
        ),
        _table_top_mesh(room),
    ]
    # table base under the top (a pedestal meeting the top, or a lift housing below it)
    base_top = min(room.base_top_z_mm, table_top - room.table_thickness_mm)
    b0 = y_foot + room.base_foot_offset_mm
    meshes.append(
        box_mesh(
            (x0 - room.base_width_mm / 2, b0, room.floor_z_mm),
            (x0 + room.base_width_mm / 2, b0 + room.base_length_mm, base_top),
            room.table_rgb,
            Label.TABLE,
        )
    )
    if base_top < table_top - room.table_thickness_mm - 1.0:  # a column holds the top above the housing
        w = min(room.base_width_mm, room.table_width_mm) / 2 - 20.0
        meshes.append(
            box_mesh(
                (x0 - w, b0 + 100, base_top),
                (x0 + w, b0 + room.base_length_mm - 100, table_top - room.table_thickness_mm),
                room.table_rgb,
                Label.TABLE,
            )
        )
    if room.head_holder == "flat":
        hw = room.head_holder_width_mm / 2
        meshes.append(
            box_mesh(
                (x0 - hw, y_head, top - 25.0),
                (x0 + hw, y_head + room.head_holder_length_mm, top),
                room.table_rgb,
                Label.TABLE,
            )
        )
    sides = {"none": (), "left": (-1,), "right": (1,), "both": (-1, 1)}[room.arm_boards]
    for side in sides:
        edge = x0 + side * room.table_width_mm / 2
        far = edge + side * room.arm_board_width_mm
        yc, hl = room.arm_board_y_mm, room.arm_board_length_mm / 2
        meshes.append(
            box_mesh(
                (min(edge, far), yc - hl, top - 20.0),
                (max(edge, far), yc + hl, top),
                room.table_rgb,
                Label.TABLE,
            )
        )
    meshes.append(_mattress_mesh(room, depression))
    if room.has_gantry:
        meshes.append(
            annulus_mesh(
                room.bore_diameter_mm / 2,
                room.gantry_outer_radius_mm,
                -room.gantry_depth_mm / 2,
                room.gantry_depth_mm / 2,
                room.gantry_rgb,
                Label.GANTRY,
                square_outside=room.gantry_shape == "box",
            )
        )
    for item in room.clutter:
        meshes += _clutter_meshes(item, room.floor_z_mm)
    if head_rest is not None and head_rest[2] > top + 1.0:
        y0, y1, z = head_rest
        meshes.append(box_mesh((x0 - 130, y0, top), (x0 + 130, y1, z), room.head_rest_rgb, Label.HEAD_REST))
    meshes.extend(extra)
    return meshes
