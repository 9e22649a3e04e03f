"""The patient's body surface profile along the table: per slice of constant y, how high the anterior
(upward-facing) surface rises above the table top, how wide the body is and where its midline lies.

This is what isocenter estimation consumes: the body's extent in each cross-section plane (y constant) as
the ceiling camera sees it.

Depth noise matters here: a D435 at 1.8 m has about 20 mm of spatially correlated noise, so the highest
point of a slice (``top_z_max_mm``) sits well above the true surface (about +15 to +20 mm) and a high
percentile (``top_z_p95_mm``) still does. ``top_z_mm`` is the recommended estimate: the top of the
surface after smoothing it in plan view (normalised Gaussian convolution of the points' z over a
``grid_mm`` raster, ``smoothing_mm`` sigma), which averages the noise over neighbouring slices and
columns and lowers a curved apex by only ``sigma^2 / (2 R)`` (about 1 mm for a torso).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm. Slice ``k`` covers
``y_mm[k] +- slice_mm / 2``. Per-slice values are NaN where the slice has fewer than ``min_points`` points.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from positioning.perception.table import TableEstimate

__all__ = [
    "support_dip_mm",
    "slice_share",
    "freeze_slice_arrays",
    "ProfileSettings",
    "SurfaceProfile",
    "surface_profile",
    "DEFAULT_PROFILE_SETTINGS",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """Settings of :func:`surface_profile` (mm).

    Attributes:
        slice_mm: slice length along y.
        min_points: fewer points than this leaves a slice empty (NaN).
        top_quantile: the quantile reported as ``top_z_p95_mm``.
        lateral_quantile: ``x_min_mm`` / ``x_max_mm`` are this quantile and its complement of the slice's
            x (0 = the extreme points).
        grid_mm: plan-view raster for the smoothed surface; ``slice_mm`` is a multiple of it.
        smoothing_mm: Gaussian sigma of the plan-view smoothing.
    """

    slice_mm: float = 10.0
    min_points: int = 5
    top_quantile: float = 0.95
    lateral_quantile: float = 0.0
    grid_mm: float = 5.0
    smoothing_mm: float = 20.0

    def __post_init__(self) -> None:
        if not (self.slice_mm > 0 and self.grid_mm > 0 and self.smoothing_mm >= 0):
            raise ValueError(
                f"slice_mm and grid_mm must be > 0 and smoothing_mm >= 0, got {self.slice_mm}, "
                f"{self.grid_mm}, {self.smoothing_mm}"
            )
        if not 0.5 <= self.top_quantile <= 1 or not 0 <= self.lateral_quantile < 0.5:
            raise ValueError(
                f"need top_quantile in [0.5, 1] and lateral_quantile in [0, 0.5), got {self.top_quantile}, "
                f"{self.lateral_quantile}"
            )
        if abs(self.slice_mm / self.grid_mm - round(self.slice_mm / self.grid_mm)) > 1e-9:
            raise ValueError(f"slice_mm ({self.slice_mm}) must be a multiple of grid_mm ({self.grid_mm})")
        if self.min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {self.min_points}")


DEFAULT_PROFILE_SETTINGS = ProfileSettings()


def freeze_slice_arrays(obj: object) -> None:
    """Check that every ndarray field of a per-slice dataclass has shape ``(K,)`` with ``K = len(obj.y_mm)``
    and make it read-only (shared by the surface profile and planning's slice features)."""
    k = len(obj.y_mm)  # type: ignore[attr-defined]
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if isinstance(v, np.ndarray):
            if v.shape != (k,):
                raise ValueError(f"{f.name} must have shape ({k},), got {v.shape}")
            v.setflags(write=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SurfaceProfile:
    """Per-slice body surface measurements along scanner y.

    Convention: scanner frame (IEC 61217), mm; all arrays ``(K,)`` float64 (``count`` int64), slice ``k``
    centred at ``y_mm[k]``, NaN where the slice is empty. Heights are above the table plane, measured at
    the slice's midline.

    Attributes:
        y_mm: slice centres, increasing.
        slice_mm: slice length along y.
        count: patient points in the slice.
        top_z_mm: top of the plan-view-smoothed surface (the recommended anterior surface height).
        top_z_max_mm: highest point (biased upward by the depth noise).
        top_z_p95_mm: ``top_quantile`` quantile of z.
        table_z_mm: z of the table plane at ``(midline_x_mm, y_mm)``.
        height_mm, height_max_mm, height_p95_mm: the three tops minus ``table_z_mm``.
        x_min_mm, x_max_mm: lateral extent.
        width_mm: ``x_max_mm - x_min_mm``.
        midline_x_mm: centre of the lateral extent.
        median_x_mm: median x of the slice's points.
    """

    y_mm: np.ndarray
    slice_mm: float
    count: np.ndarray
    top_z_mm: np.ndarray
    top_z_max_mm: np.ndarray
    top_z_p95_mm: np.ndarray
    table_z_mm: np.ndarray
    height_mm: np.ndarray
    height_max_mm: np.ndarray
    height_p95_mm: np.ndarray
    x_min_mm: np.ndarray
    x_max_mm: np.ndarray
    width_mm: np.ndarray
    midline_x_mm: np.ndarray
    median_x_mm: np.ndarray

    def __post_init__(self) -> None:
        freeze_slice_arrays(self)

    def __len__(self) -> int:
        return len(self.y_mm)

    @property
    def valid(self) -> np.ndarray:
        """``(K,)`` bool: slices with measurements."""
        return np.isfinite(self.top_z_max_mm)

    def at(self, y_mm: np.ndarray | float, field: str = "top_z_mm") -> np.ndarray:
        """A field linearly interpolated at ``y_mm`` (NaN outside the profile or next to empty slices)."""
        values = getattr(self, field)
        y = np.asarray(y_mm, np.float64)
        if len(self.y_mm) == 0:
            return np.full(y.shape, np.nan)
        return np.interp(y, self.y_mm, values, left=np.nan, right=np.nan)


def _quantile_sorted(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile ``q`` of each group of already group-wise sorted values."""
    pos = starts + q * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, starts + np.maximum(counts - 1, 0))
    frac = pos - lo
    return values[lo] * (1 - frac) + values[hi] * frac


def _smoothed_top(points: np.ndarray, y0_mm: float, n_slices: int, s: ProfileSettings) -> np.ndarray:
    """Per slice, the highest value of the plan-view-smoothed surface over the raster cells the points
    occupy (the raster's y cells tile the slices exactly)."""
    g = s.grid_mm
    per_slice = round(s.slice_mm / g)
    pad = int(np.ceil(3 * s.smoothing_mm / g)) + 1
    ci = np.floor((points[:, 0] - points[:, 0].min()) / g).astype(np.int64) + pad
    cj = np.clip(np.floor((points[:, 1] - y0_mm) / g).astype(np.int64), 0, n_slices * per_slice - 1)
    shape = (int(ci.max()) + pad + 1, n_slices * per_slice)
    flat = ci * shape[1] + cj
    total = np.bincount(flat, weights=points[:, 2], minlength=shape[0] * shape[1]).reshape(shape)
    count = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape).astype(np.float64)
    occupied = count > 0
    if s.smoothing_mm > 0:
        sigma = s.smoothing_mm / g
        total = cv2.GaussianBlur(total, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        count = cv2.GaussianBlur(count, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    surface = np.where(occupied, total / np.maximum(count, 1e-12), -np.inf)
    column_top = surface.max(axis=0)  # (n_slices * per_slice,)
    return column_top.reshape(n_slices, per_slice).max(axis=1)


def surface_profile(
    points_mm: np.ndarray,
    table: TableEstimate,
    *,
    y_range_mm: tuple[float, float] | None = None,
    settings: ProfileSettings = DEFAULT_PROFILE_SETTINGS,
) -> SurfaceProfile:
    """Measure the body surface slice by slice along y.

    Convention: scanner frame (IEC 61217), mm; slices are ``[y0 + k * slice_mm, y0 + (k + 1) * slice_mm)``
    with ``y0`` a multiple of ``slice_mm`` (so profiles of different frames line up).

    Args:
        points_mm: ``(N, 3)`` patient points (e.g. :attr:`PatientSegment.points_mm`).
        table: the table top of the same frame (for heights).
        y_range_mm: ``(y_min, y_max)`` to profile (default: the points' y extent).
        settings: slice length and estimators.

    Returns:
        The profile (``K = 0`` slices when there are no points).

    Raises:
        ValueError: ``points_mm`` is not ``(N, 3)`` finite, or ``y_range_mm`` is empty.

    Example:
        >>> prof = surface_profile(segment.points_mm, table)  # doctest: +SKIP
        >>> prof.height_mm[prof.valid].max()  # doctest: +SKIP
    """
    p = np.asarray(points_mm, np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points_mm must be (N, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("points_mm must be finite (drop invalid depth first)")
    s = settings
    w = s.slice_mm
    if y_range_mm is not None:
        lo, hi = map(float, y_range_mm)
        if not hi > lo:
            raise ValueError(f"y_range_mm must be (low, high) with low < high, got {y_range_mm}")
        p = p[(p[:, 1] >= lo) & (p[:, 1] < hi)]
    elif len(p):
        lo, hi = float(p[:, 1].min()), float(p[:, 1].max())
    else:
        lo = hi = 0.0
    y0 = np.floor(lo / w) * w
    if y_range_mm is not None:  # slices cover [lo, hi)
        n_slices = max(1, int(np.ceil((hi - y0) / w - 1e-9)))
    else:  # slices cover every point, the highest y included
        n_slices = int(np.floor((hi - y0) / w)) + 1 if len(p) else 0
    y_c = y0 + (np.arange(n_slices) + 0.5) * w
    nan = np.full(n_slices, np.nan)
    if len(p) == 0:
        empty = {f.name: nan.copy() for f in dataclasses.fields(SurfaceProfile)}
        empty.update(y_mm=y_c, slice_mm=w, count=np.zeros(n_slices, np.int64))
        return SurfaceProfile(**empty)

    k = np.clip(np.floor((p[:, 1] - y0) / w).astype(np.int64), 0, n_slices - 1)
    counts = np.bincount(k, minlength=n_slices)
    ok = counts >= s.min_points
    starts = np.minimum(np.r_[0, np.cumsum(counts)[:-1]], len(p) - 1)

    def sorted_within_slices(v: np.ndarray) -> np.ndarray:
        # one float sort on (slice, value): v's range is far below the 1e7 mm slice key step
        return v[np.argsort(k * 1e7 + (v - v.min()))]

    z_sorted = sorted_within_slices(p[:, 2])
    x_sorted = sorted_within_slices(p[:, 0])
    z_max = np.where(ok, _quantile_sorted(z_sorted, starts, counts, 1.0), np.nan)
    z_q = np.where(ok, _quantile_sorted(z_sorted, starts, counts, s.top_quantile), np.nan)
    x_lo = np.where(ok, _quantile_sorted(x_sorted, starts, counts, s.lateral_quantile), np.nan)
    x_hi = np.where(ok, _quantile_sorted(x_sorted, starts, counts, 1 - s.lateral_quantile), np.nan)
    x_med = np.where(ok, _quantile_sorted(x_sorted, starts, counts, 0.5), np.nan)
    top = np.where(ok, _smoothed_top(p, y0, n_slices, s), np.nan)
    mid = 0.5 * (x_lo + x_hi)
    table_z = np.where(ok, table.z_at(np.nan_to_num(mid), y_c), np.nan)
    return SurfaceProfile(
        y_mm=y_c,
        slice_mm=w,
        count=counts.astype(np.int64),
        top_z_mm=top,
        top_z_max_mm=z_max,
        top_z_p95_mm=z_q,
        table_z_mm=table_z,
        height_mm=top - table_z,
        height_max_mm=z_max - table_z,
        height_p95_mm=z_q - table_z,
        x_min_mm=x_lo,
        x_max_mm=x_hi,
        width_mm=x_hi - x_lo,
        midline_x_mm=mid,
        median_x_mm=x_med,
    )


def support_dip_mm(
    scene_points_mm: np.ndarray,
    patient_points_mm: np.ndarray,
    table: TableEstimate,
    *,
    band_mm: tuple[float, float] = (20.0, 80.0),
    cell_mm: float = 10.0,
    max_offset_mm: float = 80.0,
) -> float:
    """How far the surface the patient lies on dips just beside the body (mm, negative = below the table
    plane): the median height of what is seen ``band_mm`` outside the patient's plan-view outline, within
    ``max_offset_mm`` of the plane. Soft foam is pulled down around a body sinking into it, a firm pad is
    not: the dip is the one visible trace of how deep the unseen back lies.

    Convention: scanner frame (IEC 61217), mm; heights above the table plane.

    Args:
        scene_points_mm: ``(N, 3)`` points of the whole frame (a strided cloud is plenty).
        patient_points_mm: ``(M, 3)`` the patient's points.
        table: the table of the same frame.

    Returns:
        The dip, or NaN when nothing is seen beside the body.
    """
    import cv2

    body = np.asarray(patient_points_mm, np.float64)
    scene = np.asarray(scene_points_mm, np.float64)
    if len(body) < 10 or len(scene) == 0:
        return float("nan")
    lo = body[:, :2].min(axis=0) - band_mm[1] - 2 * cell_mm
    shape = (
        int((body[:, 1].max() - lo[1] + band_mm[1]) / cell_mm) + 3,
        int((body[:, 0].max() - lo[0] + band_mm[1]) / cell_mm) + 3,
    )
    occ = np.zeros(shape, np.uint8)
    r = ((body[:, 1] - lo[1]) / cell_mm).astype(np.int64)
    c = ((body[:, 0] - lo[0]) / cell_mm).astype(np.int64)
    occ[r, c] = 1
    occ = cv2.morphologyEx(occ, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))

    def grown(mm: float) -> np.ndarray:
        k = 2 * round(mm / cell_mm) + 1
        return cv2.dilate(occ, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)

    band = grown(band_mm[1]) & ~grown(band_mm[0])
    rs = ((scene[:, 1] - lo[1]) / cell_mm).astype(np.int64)
    cs = ((scene[:, 0] - lo[0]) / cell_mm).astype(np.int64)
    ok = (rs >= 0) & (rs < shape[0]) & (cs >= 0) & (cs < shape[1])
    ok[ok] = band[rs[ok], cs[ok]]
    h = table.height_above_mm(scene[ok])
    h = h[np.abs(h) < max_offset_mm]
    return float(np.median(h)) if len(h) >= 20 else float("nan")


def slice_share(profile: SurfaceProfile, points_mm: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per profile slice, the share of the points in it that are flagged (e.g. seen under a blanket).

    Convention: scanner frame, mm; slices as in ``profile``.

    Args:
        profile: the surface profile.
        points_mm: ``(N, 3)`` the points the profile was measured from.
        flags: ``(N,)`` bool.

    Returns:
        ``(K,)`` float64 in [0, 1], NaN for empty slices.
    """
    k_n = len(profile)
    p = np.asarray(points_mm, np.float64)
    if k_n == 0 or len(p) == 0:
        return np.full(k_n, np.nan)
    y0 = profile.y_mm[0] - profile.slice_mm / 2
    k = np.clip(np.floor((p[:, 1] - y0) / profile.slice_mm).astype(np.int64), 0, k_n - 1)
    n = np.bincount(k, minlength=k_n).astype(np.float64)
    f = np.bincount(k, weights=np.asarray(flags, np.float64), minlength=k_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, f / n, np.nan)
