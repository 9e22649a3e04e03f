"""The patient's plan-view height map in body-canonical coordinates: what the level network reads.

The segmented patient points (scanner frame) are rasterised onto a grid aligned with the table: each
cell holds the mean height of its points above the table top. The grid is *body-canonical*, so that a
head-first and a feet-first patient look the same to a model:

* rows run along the patient's superior axis ``s`` (``s = sign * (y - origin_y)``, ``sign`` = +1 head first,
  -1 feet first; row index grows toward the head);
* columns run along ``u = sign * (x - origin_x)`` (the 180 degree turn about the vertical that maps feet first
  onto head first flips x as well as y);
* the origin is the middle of the patient's extent along y and the median x of its points.

Row ``r`` is centred at ``s = (r + 0.5 - rows / 2) * cell_mm``, column ``c`` at
``u = (c + 0.5 - cols / 2) * cell_mm``. Points outside the window are dropped (the default window,
2560 x 720 mm, holds an adult with raised arms).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm; DICOM positions decide
``sign`` (head first = head toward +y).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from positioning.perception.table import TableEstimate

__all__ = ["HeightMapSettings", "HeightMap", "height_map", "DEFAULT_HEIGHT_MAP_SETTINGS"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeightMapSettings:
    """Grid of :func:`height_map`.

    Attributes:
        cell_mm: cell size (square).
        rows: cells along the body axis.
        cols: cells across it.
        extent_quantile: the patient's y extent is taken between this quantile of its points' y and its
            complement (robust to a few stray points).
    """

    cell_mm: float = 10.0
    rows: int = 256
    cols: int = 72
    extent_quantile: float = 0.002

    def __post_init__(self) -> None:
        if not (self.cell_mm > 0 and self.rows > 0 and self.cols > 0):
            raise ValueError(f"cell_mm, rows and cols must be > 0, got {self}")
        if not 0 <= self.extent_quantile < 0.5:
            raise ValueError(f"extent_quantile must be in [0, 0.5), got {self.extent_quantile}")


DEFAULT_HEIGHT_MAP_SETTINGS = HeightMapSettings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeightMap:
    """A body-canonical height map (see the module docstring).

    Attributes:
        height_mm: ``(rows, cols)`` float32 mean height of the cell's points above the table top (0 where
            the cell is empty).
        count: ``(rows, cols)`` int32 number of points in the cell.
        superior_sign: +1 head first (superior = +y), -1 feet first.
        origin_y_mm: scanner y at ``s = 0``.
        origin_x_mm: scanner x at ``u = 0``.
        cell_mm: cell size.
    """

    height_mm: np.ndarray
    count: np.ndarray
    superior_sign: int
    origin_y_mm: float
    origin_x_mm: float
    cell_mm: float

    def __post_init__(self) -> None:
        if self.height_mm.ndim != 2 or self.count.shape != self.height_mm.shape:
            raise ValueError(f"height_mm and count must be equal 2-D shapes, got {self.height_mm.shape}, "
                             f"{self.count.shape}")  # fmt: skip
        if self.superior_sign not in (1, -1):
            raise ValueError(f"superior_sign must be +1 or -1, got {self.superior_sign}")

    @property
    def rows(self) -> int:
        return int(self.height_mm.shape[0])

    @property
    def cols(self) -> int:
        return int(self.height_mm.shape[1])

    def s_of_y(self, y_mm: np.ndarray | float) -> np.ndarray:
        """Body-axis coordinate ``s`` (mm, toward the head) of scanner ``y``."""
        return self.superior_sign * (np.asarray(y_mm, np.float64) - self.origin_y_mm)

    def y_of_s(self, s_mm: np.ndarray | float) -> np.ndarray:
        """Scanner ``y`` of body-axis coordinate ``s``."""
        return self.origin_y_mm + self.superior_sign * np.asarray(s_mm, np.float64)

    def row_s_mm(self) -> np.ndarray:
        """``(rows,)`` body-axis coordinate of each row's centre."""
        return (np.arange(self.rows) + 0.5 - self.rows / 2) * self.cell_mm


def height_map(
    points_mm: np.ndarray,
    table: TableEstimate,
    superior_sign: int,
    settings: HeightMapSettings = DEFAULT_HEIGHT_MAP_SETTINGS,
) -> HeightMap:
    """Rasterise the patient points into a body-canonical height map.

    Convention: scanner frame (IEC 61217), mm; heights above the table plane
    (:meth:`TableEstimate.height_above_mm`).

    Args:
        points_mm: ``(N, 3)`` patient points (e.g. :attr:`PatientState.patient_points_mm`).
        table: the table estimate of the same frame.
        superior_sign: +1 head first, -1 feet first (from the patient position).
        settings: grid settings.

    Returns:
        The height map.

    Raises:
        ValueError: no points, or ``superior_sign`` not +-1.
    """
    pts = np.asarray(points_mm, np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        raise ValueError("height_map needs patient points, got none")
    if superior_sign not in (1, -1):
        raise ValueError(f"superior_sign must be +1 or -1, got {superior_sign}")
    q = settings.extent_quantile
    y_lo, y_hi = np.quantile(pts[:, 1], [q, 1 - q])
    origin_y = float((y_lo + y_hi) / 2)
    origin_x = float(np.median(pts[:, 0]))
    s = superior_sign * (pts[:, 1] - origin_y)
    u = superior_sign * (pts[:, 0] - origin_x)
    h = table.height_above_mm(pts)
    rows, cols, cell = settings.rows, settings.cols, settings.cell_mm
    r = np.floor(s / cell + rows / 2).astype(np.int64)
    c = np.floor(u / cell + cols / 2).astype(np.int64)
    keep = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    idx = r[keep] * cols + c[keep]
    count = np.bincount(idx, minlength=rows * cols)
    total = np.bincount(idx, weights=h[keep], minlength=rows * cols)
    height = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return HeightMap(
        height_mm=height.reshape(rows, cols).astype(np.float32),
        count=count.reshape(rows, cols).astype(np.int32),
        superior_sign=int(superior_sign),
        origin_y_mm=origin_y,
        origin_x_mm=origin_x,
        cell_mm=float(cell),
    )
