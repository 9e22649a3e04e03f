"""The scene seen from straight above: a plan-view raster of the scanner-frame point cloud.

The scene network (:mod:`positioning.perception.scene_net`) reads the scene this way because, once the
calibration has put the points in the scanner frame, a plan view looks the same whatever the camera's
height, tilt, roll or model: only the noise, the resolution and what hides what still differ. Each cell
holds the highest and lowest point seen in it (a vertical surface, such as a person standing beside the
table or the side of a table top, spreads over a height range) and how many points fell in it.

The grid is fixed in the scanner frame: ``cols`` cells across x centred on x = 0 (the gantry's axis, on
which tables are centred), ``rows`` cells along y centred on the scene (:func:`scene_centre_y_mm`).
Cell ``(r, c)`` covers ``x in [x0 + c * cell, x0 + (c + 1) * cell)`` and ``y in [y0 + r * cell, ...)``
with ``(x0, y0)`` = :attr:`PlanView.origin_mm`; rows grow toward +y (into the gantry).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), millimetres.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "PlanViewSettings",
    "PlanView",
    "DEFAULT_PLAN_VIEW_SETTINGS",
    "scene_centre_y_mm",
    "plan_view",
    "input_planes",
    "INPUT_CHANNELS",
]

#: Channels of :func:`input_planes`.
INPUT_CHANNELS: tuple[str, ...] = ("top_z", "seen", "spread", "count")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanViewSettings:
    """Grid of :func:`plan_view`.

    Attributes:
        cell_mm: cell size (square).
        rows: cells along y.
        cols: cells across x.
        z_scale_mm: heights are divided by this in the network's input.
        spread_scale_mm: height spreads are divided by this.
        centre_step_mm: the grid's centre along y snaps to multiples of this.
        centre_range_mm: the grid's centre along y stays within this range.
    """

    cell_mm: float = 20.0
    rows: int = 176
    cols: int = 128
    z_scale_mm: float = 500.0
    spread_scale_mm: float = 200.0
    centre_step_mm: float = 40.0
    centre_range_mm: tuple[float, float] = (-2400.0, 400.0)

    def __post_init__(self) -> None:
        if not (self.cell_mm > 0 and self.rows > 0 and self.cols > 0):
            raise ValueError(f"cell_mm, rows and cols must be > 0, got {self}")
        if self.rows % 16 or self.cols % 16:
            raise ValueError(
                f"rows and cols must be multiples of 16 (the network halves them 4 times), got {self}"
            )

    @property
    def extent_mm(self) -> tuple[float, float]:
        """``(across x, along y)`` of the grid."""
        return self.cols * self.cell_mm, self.rows * self.cell_mm


DEFAULT_PLAN_VIEW_SETTINGS = PlanViewSettings()


@dataclasses.dataclass(frozen=True)
class PlanView:
    """The scene on a plan-view grid (see the module docstring for the grid convention).

    Attributes:
        top_z_mm: ``(rows, cols)`` float32 highest point's z per cell, NaN where nothing is seen.
        bottom_z_mm: ``(rows, cols)`` float32 lowest point's z per cell, NaN where nothing is seen.
        count: ``(rows, cols)`` int32 points per cell.
        origin_mm: ``(x0, y0)`` corner of cell (0, 0).
        cell_mm: cell size.
    """

    top_z_mm: np.ndarray
    bottom_z_mm: np.ndarray
    count: np.ndarray
    origin_mm: tuple[float, float]
    cell_mm: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.top_z_mm.shape  # type: ignore[return-value]

    def xy_of(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scanner ``(x, y)`` of (fractional) cell coordinates (``(0, 0)`` is cell (0, 0)'s centre)."""
        x = self.origin_mm[0] + (np.asarray(cols, np.float64) + 0.5) * self.cell_mm
        y = self.origin_mm[1] + (np.asarray(rows, np.float64) + 0.5) * self.cell_mm
        return x, y

    def cell_of(self, x_mm: np.ndarray, y_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer ``(row, col)`` of scanner ``(x, y)`` (may lie outside the grid)."""
        r = np.floor((np.asarray(y_mm, np.float64) - self.origin_mm[1]) / self.cell_mm).astype(np.int64)
        c = np.floor((np.asarray(x_mm, np.float64) - self.origin_mm[0]) / self.cell_mm).astype(np.int64)
        return r, c

    def lookup(self, grid: np.ndarray, points_mm: np.ndarray, fill: float | bool = 0) -> np.ndarray:
        """The values of a ``(rows, cols)`` grid at the cells of ``(N, >=2)`` scanner points (``fill``
        outside the grid)."""
        r, c = self.cell_of(points_mm[:, 0], points_mm[:, 1])
        ok = (r >= 0) & (r < self.shape[0]) & (c >= 0) & (c < self.shape[1])
        out = np.full(len(points_mm), fill, dtype=grid.dtype)
        out[ok] = grid[r[ok], c[ok]]
        return out


def scene_centre_y_mm(
    points_mm: np.ndarray, settings: PlanViewSettings = DEFAULT_PLAN_VIEW_SETTINGS
) -> float:
    """Where the grid centres along y: the median y of what is seen between 900 mm below and 400 mm
    above the isocenter (tables, patients, the gantry; not the floor of a CT room), snapped to
    ``centre_step_mm`` and kept within ``centre_range_mm``."""
    p = np.asarray(points_mm, np.float64)
    z = p[:, 2]
    sel = (z > -900.0) & (z < 400.0)
    y = (
        float(np.median(p[sel, 1]))
        if np.count_nonzero(sel) > 100
        else float(np.median(p[:, 1]))
        if len(p)
        else -1300.0
    )
    lo, hi = settings.centre_range_mm
    step = settings.centre_step_mm
    return float(np.clip(np.round(y / step) * step, lo, hi))


def plan_view(
    points_mm: np.ndarray,
    settings: PlanViewSettings = DEFAULT_PLAN_VIEW_SETTINGS,
    *,
    centre_y_mm: float | None = None,
) -> PlanView:
    """Rasterise scanner-frame points into a plan view.

    Args:
        points_mm: ``(N, 3)`` scanner-frame points (NaN rows are ignored).
        settings: the grid.
        centre_y_mm: y of the grid's centre (default :func:`scene_centre_y_mm`).

    Returns:
        The plan view.

    Raises:
        ValueError: ``points_mm`` is not ``(N, 3)``.
    """
    p = np.asarray(points_mm, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points_mm must be (N, 3), got {p.shape}")
    p = p[np.all(np.isfinite(p), axis=1)]
    cy = scene_centre_y_mm(p, settings) if centre_y_mm is None else float(centre_y_mm)
    w, h = settings.extent_mm
    origin = (-w / 2, cy - h / 2)
    rows, cols, cell = settings.rows, settings.cols, settings.cell_mm
    r = np.floor((p[:, 1] - origin[1]) / cell).astype(np.int64)
    c = np.floor((p[:, 0] - origin[0]) / cell).astype(np.int64)
    ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    idx = r[ok] * cols + c[ok]
    z = p[ok, 2]
    top = np.full(rows * cols, -np.inf)
    bottom = np.full(rows * cols, np.inf)
    np.maximum.at(top, idx, z)
    np.minimum.at(bottom, idx, z)
    count = np.bincount(idx, minlength=rows * cols).astype(np.int32)
    seen = count > 0
    top = np.where(seen, top, np.nan).astype(np.float32)
    bottom = np.where(seen, bottom, np.nan).astype(np.float32)
    return PlanView(
        top_z_mm=top.reshape(rows, cols),
        bottom_z_mm=bottom.reshape(rows, cols),
        count=count.reshape(rows, cols),
        origin_mm=origin,
        cell_mm=cell,
    )


def input_planes(
    pv: PlanView, settings: PlanViewSettings = DEFAULT_PLAN_VIEW_SETTINGS, *, z_offset_mm: float = 0.0
) -> np.ndarray:
    """The network's input: ``(4, rows, cols)`` float32 planes (:data:`INPUT_CHANNELS`): the highest z
    (scaled, 0 where nothing is seen; ``z_offset_mm`` is added first, for training augmentation), whether
    anything is seen, the height spread within the cell and the point count (log-scaled)."""
    seen = np.isfinite(pv.top_z_mm)
    top = np.where(seen, (pv.top_z_mm + z_offset_mm) / settings.z_scale_mm, 0.0)
    spread = np.where(seen, (pv.top_z_mm - pv.bottom_z_mm) / settings.spread_scale_mm, 0.0)
    count = np.log1p(pv.count.astype(np.float32)) / 4.0
    return np.stack([top, seen.astype(np.float32), spread, count]).astype(np.float32)
