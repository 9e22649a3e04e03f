"""Exact cross-sections of a closed triangle mesh by planes of constant y.

Convention: scanner frame, mm. A cross-section at ``y`` lies in the x-z plane; its centroid is the area
centroid of all closed contours the plane cuts (trunk, arms and legs together).

Method: every triangle the plane crosses contributes one segment. Segments are oriented by
``n_face x e_y`` so that, for a closed mesh with outward normals, all contours run the same way; Green's
theorem then gives area and centroid from the segments alone, without assembling polygons:
``A = 1/2 sum(x_p z_q - x_q z_p)``, ``C = 1/(6A) sum((p + q)(x_p z_q - x_q z_p))``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["CrossSections", "cross_sections"]


@dataclasses.dataclass(frozen=True)
class CrossSections:
    """Body cross-sections sampled along y.

    Attributes:
        y_mm: ``(K,)`` slice positions.
        area_mm2: ``(K,)`` cross-section area (0 where the plane misses the body).
        centroid_x_mm, centroid_z_mm: ``(K,)`` area centroid (NaN where the area is 0).
        x_min_mm, x_max_mm, z_min_mm, z_max_mm: ``(K,)`` lateral and vertical extent (NaN where empty).
    """

    y_mm: np.ndarray
    area_mm2: np.ndarray
    centroid_x_mm: np.ndarray
    centroid_z_mm: np.ndarray
    x_min_mm: np.ndarray
    x_max_mm: np.ndarray
    z_min_mm: np.ndarray
    z_max_mm: np.ndarray

    def to_dict(self, decimals: int = 2) -> dict[str, list[float | None]]:
        """JSON-friendly columns (NaN -> None)."""
        out: dict[str, list[float | None]] = {}
        for f in dataclasses.fields(self):
            a = np.round(getattr(self, f.name), decimals)
            out[f.name] = [None if not np.isfinite(v) else float(v) for v in a]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, list[float | None]]) -> CrossSections:
        return cls(**{k: np.array([np.nan if v is None else v for v in d[k]], float) for k in d})


def cross_sections(vertices_mm: np.ndarray, faces: np.ndarray, y_mm: np.ndarray) -> CrossSections:
    """Cut a closed mesh with the planes ``y = y_mm[k]``.

    Args:
        vertices_mm: ``(V, 3)`` scanner-frame vertices.
        faces: ``(F, 3)`` triangles, outward normals (counter-clockwise from outside).
        y_mm: ``(K,)`` increasing slice positions.

    Returns:
        The cross-sections (see :class:`CrossSections`).
    """
    y_mm = np.asarray(y_mm, dtype=np.float64)
    if y_mm.ndim != 1 or np.any(np.diff(y_mm) <= 0):
        raise ValueError("y_mm must be a 1-D strictly increasing array")
    tri = vertices_mm[faces]  # (F, 3, 3)
    ty = tri[..., 1]
    # A vertex counts as above plane k when its y > y_k (``s > 0`` below), so a triangle is cut by plane k
    # when min <= y_k < max: a plane through a vertex ring keeps the triangles that start on it.
    k_lo = np.searchsorted(y_mm, ty.min(axis=1), side="left")
    k_hi = np.searchsorted(y_mm, ty.max(axis=1), side="left")
    counts = np.maximum(k_hi - k_lo, 0)
    f_idx = np.repeat(np.arange(len(faces)), counts)
    starts = np.repeat(k_lo, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    k_idx = starts + offsets
    t = tri[f_idx]  # (P, 3, 3)
    s = t[..., 1] - y_mm[k_idx][:, None]  # signed distance of each vertex to its plane

    points = []
    for i, j in ((0, 1), (1, 2), (2, 0)):
        crosses = (s[:, i] > 0) != (s[:, j] > 0)
        w = np.where(crosses, s[:, i] / np.where(crosses, s[:, i] - s[:, j], 1.0), np.nan)
        p = t[:, i] + w[:, None] * (t[:, j] - t[:, i])
        points.append(np.where(crosses[:, None], p, np.nan))
    pts = np.stack(points, axis=1)  # (P, 3 edges, 3)
    ok = np.isfinite(pts[..., 0])
    keep = ok.sum(axis=1) == 2
    pts, ok, f_idx, k_idx, t = pts[keep], ok[keep], f_idx[keep], k_idx[keep], t[keep]
    order = np.argsort(~ok, axis=1, kind="stable")[:, :2]
    p = np.take_along_axis(pts, order[..., None], axis=1)
    a, b = p[:, 0], p[:, 1]
    normal = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    direction = np.cross(normal, np.array([0.0, 1.0, 0.0]))
    flip = ((b - a) * direction).sum(axis=1) < 0
    a, b = np.where(flip[:, None], b, a), np.where(flip[:, None], a, b)

    cross = a[:, 0] * b[:, 2] - b[:, 0] * a[:, 2]
    n = len(y_mm)
    area2 = np.bincount(k_idx, cross, minlength=n)
    cx6 = np.bincount(k_idx, (a[:, 0] + b[:, 0]) * cross, minlength=n)
    cz6 = np.bincount(k_idx, (a[:, 2] + b[:, 2]) * cross, minlength=n)
    area = area2 / 2.0
    sign = np.sign(area.sum()) or 1.0
    area = area * sign
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(area > 1e-6, cx6 * sign / (6.0 * area), np.nan)
        cz = np.where(area > 1e-6, cz6 * sign / (6.0 * area), np.nan)

    both_x = np.concatenate([a[:, 0], b[:, 0]])
    both_z = np.concatenate([a[:, 2], b[:, 2]])
    k2 = np.concatenate([k_idx, k_idx])
    x_min = np.full(n, np.inf)
    x_max = np.full(n, -np.inf)
    z_min = np.full(n, np.inf)
    z_max = np.full(n, -np.inf)
    np.minimum.at(x_min, k2, both_x)
    np.maximum.at(x_max, k2, both_x)
    np.minimum.at(z_min, k2, both_z)
    np.maximum.at(z_max, k2, both_z)
    empty = ~(area > 1e-6)
    for arr in (x_min, x_max, z_min, z_max):
        arr[empty | ~np.isfinite(arr)] = np.nan
    area[empty] = 0.0
    return CrossSections(y_mm, area, cx, cz, x_min, x_max, z_min, z_max)
