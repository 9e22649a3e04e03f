"""What lies on and around the patient: blankets, a pillow under the head, a bolster under the knees.

A *blanket* is a sheet draped over the body from beyond the feet up to a hem on the trunk (over the legs,
or up to the chest). It rests on the body's upper surface and on the mattress, bridges the gaps between
the legs and between the arms and the trunk (a dilation and a smoothing of that surface: ``drape_mm``),
and hangs down beside the table (``hang_mm``). A *head pillow* is a rounded cushion wider than the head
whose top is pressed down to the body's underside where the head, neck and shoulders lie on it, and
rises ``head_rim_mm`` above that around them (the head sinks into it). A *knee bolster* is a half
cylinder across the table whose crest meets the backs of the knees (the placement flexes the hips and
knees onto it; see ``positioning.sim.placement``).

None of them is the patient: truth (keypoints, cross-sections, isocenter) is the body's own. They only
change what the camera sees.

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), millimetres.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import open3d as o3d

from positioning.sim.room import Label, Mesh, RoomParams, cradle_rise_mm, heightfield_mesh

__all__ = [
    "CoverParams",
    "PillowParams",
    "COVER_KINDS",
    "surface_heights",
    "blanket_mesh",
    "head_pillow_mesh",
    "knee_bolster_mesh",
]

RGB = tuple[float, float, float]

#: How much of the body a blanket covers.
COVER_KINDS: tuple[str, ...] = ("none", "legs", "chest")
GRID_MM = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoverParams:
    """A blanket or sheet over the patient.

    Attributes:
        kind: ``"none"``, ``"legs"`` (hem on the thighs or hips) or ``"chest"`` (hem on the chest).
        top_u: the hem's position along the body, in body coordinates ``u`` (0 at the hip joints, 1 at
            the shoulders; a legs cover has ``u`` about -0.4 to 0.1, a chest cover 0.5 to 0.9).
        rgb: its albedo.
        thickness_mm: how far it lies above what it rests on.
        drape_mm: how smoothly it drapes (it bridges gaps about this wide).
        hang_mm: how far it hangs down beside the table.
    """

    kind: str = "none"
    top_u: float = 0.0
    rgb: RGB = (0.85, 0.85, 0.82)
    thickness_mm: float = 8.0
    drape_mm: float = 40.0
    hang_mm: float = 250.0

    def __post_init__(self) -> None:
        if self.kind not in COVER_KINDS:
            raise ValueError(f"cover kind must be one of {COVER_KINDS}, got {self.kind!r}")
        if self.thickness_mm < 0 or self.drape_mm < 0 or self.hang_mm < 0:
            raise ValueError(f"cover sizes must be >= 0, got {self}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PillowParams:
    """Cushions under the patient.

    Attributes:
        head: a pillow under the head (supine and decubitus patients; prone patients keep the face
            cushion of the default head rest).
        head_width_mm, head_length_mm: the head pillow's size (across, along the table).
        head_rim_mm: how far its top rises above where the head rests (how deep the head sinks in).
        head_rgb: its albedo.
        knee_mm: height of a bolster under the knees above the compressed mattress (0: none; supine only).
        knee_rgb: its albedo.
    """

    head: bool = False
    head_width_mm: float = 520.0
    head_length_mm: float = 380.0
    head_rim_mm: float = 30.0
    head_rgb: RGB = (0.88, 0.88, 0.86)
    knee_mm: float = 0.0
    knee_rgb: RGB = (0.20, 0.30, 0.45)


def surface_heights(
    vertices_mm: np.ndarray, faces: np.ndarray, x_mm: np.ndarray, y_mm: np.ndarray, *, from_above: bool = True
) -> np.ndarray:
    """Heights of a mesh seen straight down (its upper surface) or straight up (its underside).

    Args:
        vertices_mm, faces: the mesh.
        x_mm: ``(nx,)`` lateral sample positions.
        y_mm: ``(ny,)`` longitudinal sample positions.
        from_above: True for the upper surface, False for the underside.

    Returns:
        ``(ny, nx)`` z in mm, NaN where a vertical line misses the mesh.
    """
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.asarray(vertices_mm, np.float32)), o3d.core.Tensor(np.asarray(faces, np.uint32))
    )
    xx, yy = np.meshgrid(np.asarray(x_mm, np.float32), np.asarray(y_mm, np.float32))
    start = 5000.0 if from_above else -5000.0
    rays = np.zeros((*xx.shape, 6), np.float32)
    rays[..., 0], rays[..., 1], rays[..., 2] = xx, yy, start
    rays[..., 5] = -1.0 if from_above else 1.0
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    z = start - t if from_above else start + t
    return np.where(np.isfinite(t), z, np.nan)


def _body_levels(keypoints_mm: dict[str, np.ndarray], head_first: bool) -> tuple[float, float, int]:
    """``(y of the hip joints, y of the shoulders, superior sign)`` of a placed body."""
    sign = 1 if head_first else -1
    hips = 0.5 * (keypoints_mm["left_hip"][1] + keypoints_mm["right_hip"][1])
    shoulders = 0.5 * (keypoints_mm["left_shoulder"][1] + keypoints_mm["right_shoulder"][1])
    return float(hips), float(shoulders), sign


def blanket_mesh(
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    keypoints_mm: dict[str, np.ndarray],
    head_first: bool,
    room: RoomParams,
    cover: CoverParams,
) -> Mesh | None:
    """The blanket over a placed body (None for ``kind == "none"``).

    Args:
        vertices_mm, faces: the placed body (scanner frame).
        keypoints_mm: its COCO keypoints (scanner frame), for the hem's level.
        head_first: the patient's head points to +y.
        room: the room (mattress height, table width).
        cover: the blanket.
    """
    if cover.kind == "none":
        return None
    y_hip, y_sh, sign = _body_levels(keypoints_mm, head_first)
    y_hem = y_hip + cover.top_u * (y_sh - y_hip)
    feet = vertices_mm[:, 1].min() if head_first else vertices_mm[:, 1].max()
    y_feet = feet - sign * 120.0
    y_lo, y_hi = sorted((y_feet, y_hem))
    x0 = room.table_lateral_mm
    half = room.table_width_mm / 2
    reach = 80.0  # the hanging part, beyond the table edge, in plan view
    xs = np.arange(x0 - half - reach, x0 + half + reach + GRID_MM / 2, GRID_MM)
    ys = np.arange(y_lo, y_hi + GRID_MM / 2, GRID_MM)
    body = surface_heights(vertices_mm, faces, xs, ys)
    rest = room.mattress_top_z_mm + cradle_rise_mm(
        xs - x0, room.mattress_width_mm / 2, room.mattress_sagitta_mm
    )
    support = np.fmax(body, rest[None, :])
    over = np.abs(xs - x0) <= half
    over_y = (ys >= room.table_foot_y_mm) & (ys <= room.table_head_y_mm + room.head_holder_length_mm)
    support = np.where(over[None, :] & over_y[:, None], support, np.nan)
    base = support + cover.thickness_mm
    # drape: bridge gaps (dilate) and smooth; never below what it rests on
    k = max(1, round(cover.drape_mm / GRID_MM))
    filled = np.nan_to_num(base, nan=float(np.nanmin(base)))
    draped = cv2.dilate(filled.astype(np.float32), np.ones((k, k), np.uint8))
    draped = cv2.GaussianBlur(draped, (0, 0), sigmaX=max(cover.drape_mm / GRID_MM / 2, 0.5))
    z = np.fmax(draped.astype(np.float64), base)
    # hanging beside the table (and beyond its foot end): from the last supported sample straight down
    inside = np.isfinite(support)
    for r in range(len(ys)):
        cols = np.flatnonzero(inside[r])
        if cols.size == 0:
            z[r] = np.nan
            continue
        c0, c1 = cols[0], cols[-1]
        d_lo = (c0 - np.arange(len(xs))) * GRID_MM
        d_hi = (np.arange(len(xs)) - c1) * GRID_MM
        z[r, :c0] = z[r, c0] - cover.hang_mm * np.clip(d_lo[:c0] / reach, 0, 1) ** 0.5
        z[r, c1 + 1 :] = z[r, c1] - cover.hang_mm * np.clip(d_hi[c1 + 1 :] / reach, 0, 1) ** 0.5
    rows = np.flatnonzero(np.all(np.isfinite(z), axis=1))
    if len(rows) < 2:
        return None
    z = z[rows[0] : rows[-1] + 1]
    ys = ys[rows[0] : rows[-1] + 1]
    z = np.nan_to_num(z, nan=room.mattress_top_z_mm - cover.hang_mm)
    # a rolled hem at the upper edge
    hem = slice(-3, None) if sign > 0 else slice(0, 3)
    z[hem] += 10.0
    return heightfield_mesh(xs, ys, z, cover.rgb, Label.COVER)


def head_pillow_mesh(
    vertices_mm: np.ndarray, faces: np.ndarray, head_mask: np.ndarray, room: RoomParams, pillow: PillowParams
) -> Mesh | None:
    """The pillow under the head (None without one).

    Args:
        vertices_mm, faces: the placed body (scanner frame).
        head_mask: ``(V,)`` which vertices belong to the head.
        room: the room (mattress top).
        pillow: the pillow.
    """
    if not pillow.head:
        return None
    head = vertices_mm[head_mask]
    cx, cy = float(np.median(head[:, 0])), float(np.median(head[:, 1]))
    xs = np.arange(cx - pillow.head_width_mm / 2, cx + pillow.head_width_mm / 2 + 1, GRID_MM)
    ys = np.arange(cy - pillow.head_length_mm / 2, cy + pillow.head_length_mm / 2 + 1, GRID_MM)
    under = surface_heights(vertices_mm, faces, xs, ys, from_above=False)
    top = room.mattress_top_z_mm
    head_under = surface_heights(head, _head_faces(faces, head_mask), xs, ys, from_above=False)
    rest = float(np.nanmin(head_under)) if np.any(np.isfinite(head_under)) else top + 60.0
    height = max(rest - top + pillow.head_rim_mm, 20.0)
    u = np.clip(np.abs(xs - cx) / (pillow.head_width_mm / 2), 0, 1)
    v = np.clip(np.abs(ys - cy) / (pillow.head_length_mm / 2), 0, 1)
    shape = np.sqrt(np.clip((1 - u[None, :] ** 4) * (1 - v[:, None] ** 4), 0, 1))
    z = top + height * shape
    z = np.where(np.isfinite(under), np.minimum(z, under - 1.0), z)
    return heightfield_mesh(
        xs, ys, np.maximum(z, top + 1.0), pillow.head_rgb, Label.HEAD_REST, bottom_z_mm=top
    )


def _head_faces(faces: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The faces of a vertex subset, re-indexed to it."""
    index = np.full(len(mask), -1, np.int64)
    index[mask] = np.arange(int(mask.sum()))
    keep = np.all(mask[faces], axis=1)
    return index[faces[keep]].astype(np.uint32)


def knee_bolster_mesh(
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    keypoints_mm: dict[str, np.ndarray],
    contact_z_mm: float,
    room: RoomParams,
    pillow: PillowParams,
) -> Mesh | None:
    """The bolster under the knees (None without one): a half cylinder across the table, its crest at
    ``contact_z_mm + knee_mm`` (where the placement rests the backs of the knees), pressed down under the
    legs."""
    if pillow.knee_mm <= 0:
        return None
    y_knee = 0.5 * (keypoints_mm["left_knee"][1] + keypoints_mm["right_knee"][1])
    x0 = room.table_lateral_mm
    half = 0.45 * room.mattress_width_mm
    top = room.mattress_top_z_mm
    crest = contact_z_mm + pillow.knee_mm
    radius = max(crest - top, 30.0) * 1.6
    xs = np.arange(x0 - half, x0 + half + 1, GRID_MM)
    ys = np.arange(y_knee - radius, y_knee + radius + 1, GRID_MM)
    profile = np.sqrt(np.clip(1 - ((ys - y_knee) / radius) ** 2, 0, 1))
    z = np.tile((top + (crest - top) * profile)[:, None], (1, len(xs)))
    under = surface_heights(vertices_mm, faces, xs, ys, from_above=False)
    z = np.where(np.isfinite(under), np.minimum(z, under - 1.0), z)
    return heightfield_mesh(xs, ys, np.maximum(z, top + 1.0), pillow.knee_rgb, Label.PILLOW, bottom_z_mm=top)
