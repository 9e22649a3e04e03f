"""Comparable statistics of one depth image: holes, edge dropout, flat-region noise and its correlation.

The statistics are chosen so that a real RealSense frame and a simulated one can be compared number by
number (see :mod:`positioning.evaluation.noise_calibration`), and so that frames taken at different
distances stay comparable: stereo noise grows with the square of the distance, so the noise is also
reported scaled to 1 m (``sigma / (z / 1 m)^2``) and, when the stereo baseline is known, as the
equivalent disparity ("subpixel") RMS in pixels, Intel's own depth-quality metric.

Convention: depth is z (distance along the optical axis, not the ray length) in millimetres, in an
``(H, W)`` array with rows = v (down) and columns = u (right), pixel origin top-left; 0 (or NaN for float
input) means no depth. RealSense depth is referenced to the LEFT imager, so the band of columns the right
imager cannot see is at the left image border (``left_band``) and occlusion shadows lie on the left side
of near objects.

Example:
    >>> import numpy as np
    >>> depth_mm = np.full((120, 160), 1500, dtype=np.uint16)
    >>> depth_mm[50:52, 70:73] = 0
    >>> stats = depth_statistics(depth_mm, focal_px=390.0)
    >>> stats.hole_count, stats.hole_area_median_px
    (1, 6.0)
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

__all__ = [
    "DepthStats",
    "NoiseAtDepth",
    "depth_statistics",
    "discontinuity_mask",
    "fill_rows_with_background",
    "left_band_mask",
    "local_plane_noise",
    "LocalPlaneNoise",
]

_MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoiseAtDepth:
    """Flat-region noise of the tiles whose depth falls in one depth bin.

    Attributes:
        depth_mm: median depth of the tiles in the bin.
        sigma_mm: median residual standard deviation of the local plane fits in the bin.
        tiles: number of tiles in the bin.
    """

    depth_mm: float
    sigma_mm: float
    tiles: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalPlaneNoise:
    """Result of :func:`local_plane_noise`: one entry per accepted tile, plus the residual correlation.

    Attributes:
        depth_mm: ``(n,)`` plane depth at each accepted tile's centre.
        sigma_mm: ``(n,)`` robust residual standard deviation of each tile's plane fit.
        correlation: ``(window_px // 2 + 1,)`` autocorrelation of the residual at lags 0, 1, ... px
            (mean of the horizontal and vertical directions, pooled over the accepted tiles).
        correlation_u: the same along rows only (lag in u, columns).
        correlation_v: the same along columns only (lag in v, rows).
        correlation_length_px: lag at which ``correlation`` first falls to 1/e (linear interpolation),
            or the largest lag when it never does; NaN when no tile was accepted.
    """

    depth_mm: np.ndarray
    sigma_mm: np.ndarray
    correlation: np.ndarray
    correlation_u: np.ndarray
    correlation_v: np.ndarray
    correlation_length_px: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthStats:
    """Statistics of one depth image (see :func:`depth_statistics`).

    Attributes:
        height: image rows.
        width: image columns.
        valid_fraction: fraction of pixels with depth.
        left_band_px: median over rows of the number of leading invalid columns (RealSense's left
            invalid band: columns the right imager cannot see).
        hole_count: connected components (8-connected) of invalid pixels, the left band excluded.
        hole_area_median_px: median hole area in pixels (NaN without holes).
        hole_area_p95_px: 95th percentile of hole area in pixels (NaN without holes).
        hole_single_pixel_fraction: fraction of holes that are a single pixel (NaN without holes).
        holes_per_mpx: holes per million pixels (so that frames of different sizes compare).
        invalid_near_edge_fraction: of the invalid pixels outside the left band, the fraction lying
            within ``edge_radius_px`` of a depth discontinuity.
        invalid_rate_near_edge: fraction of the pixels near a discontinuity that are invalid.
        invalid_rate_elsewhere: fraction of the other pixels (left band excluded) that are invalid.
        median_depth_mm: median of the valid depths.
        noise_tiles: number of flat tiles used for the noise figures.
        noise_depth_mm: median depth of those tiles.
        noise_sigma_mm: median residual standard deviation of the local plane fits.
        noise_sigma_at_1m_mm: median over tiles of ``sigma_mm / (depth_mm / 1000)^2``: the noise
            scaled to 1 m by the square law of stereo.
        subpixel_rms_px: median over tiles of ``sigma_mm * focal_px * baseline_mm / depth_mm^2``, the
            equivalent disparity noise; NaN when no baseline was given.
        correlation_length_px: 1/e autocorrelation length of the plane-fit residual, in pixels.
        correlation_length_u_px: the same along rows (u); stereo matching stretches it along the baseline.
        correlation_length_v_px: the same along columns (v).
        noise_by_depth: the tile noise binned by depth.
    """

    height: int
    width: int
    valid_fraction: float
    left_band_px: float
    hole_count: int
    hole_area_median_px: float
    hole_area_p95_px: float
    hole_single_pixel_fraction: float
    holes_per_mpx: float
    invalid_near_edge_fraction: float
    invalid_rate_near_edge: float
    invalid_rate_elsewhere: float
    median_depth_mm: float
    noise_tiles: int
    noise_depth_mm: float
    noise_sigma_mm: float
    noise_sigma_at_1m_mm: float
    subpixel_rms_px: float
    correlation_length_px: float
    correlation_length_u_px: float
    correlation_length_v_px: float
    noise_by_depth: tuple[NoiseAtDepth, ...]

    def as_dict(self) -> dict[str, object]:
        """The statistics as a plain (JSON-friendly) dict."""
        d = dataclasses.asdict(self)
        d["noise_by_depth"] = [dataclasses.asdict(b) for b in self.noise_by_depth]
        return d


def _as_depth_float(depth_mm: np.ndarray) -> np.ndarray:
    """Validate a depth image and return it as float32 with NaN for invalid pixels."""
    if not isinstance(depth_mm, np.ndarray):
        raise ValueError(f"depth_mm must be a numpy array, got {type(depth_mm).__name__}")
    if depth_mm.ndim != 2 or min(depth_mm.shape) < 1:
        raise ValueError(f"depth_mm must be a non-empty (H, W) array, got shape {depth_mm.shape}")
    if not (np.issubdtype(depth_mm.dtype, np.integer) or np.issubdtype(depth_mm.dtype, np.floating)):
        raise ValueError(f"depth_mm must have an integer or float dtype, got {depth_mm.dtype}")
    z = depth_mm.astype(np.float32)
    if np.isinf(z).any():
        raise ValueError("depth_mm contains +-inf; use 0 or NaN for pixels without depth")
    if (z < 0).any():
        raise ValueError(f"depth_mm must be >= 0 (0 = invalid), got minimum {np.nanmin(z)}")
    z[z == 0] = np.nan
    return z


def left_band_mask(valid: np.ndarray) -> np.ndarray:
    """Mark, in each row, the run of invalid pixels that starts at the left border.

    Args:
        valid: ``(H, W)`` bool, True where the depth is valid.

    Returns:
        ``(H, W)`` bool, True on the leading invalid run of each row.
    """
    return np.logical_and.accumulate(~valid, axis=1)


def fill_rows_with_background(depth_mm: np.ndarray) -> np.ndarray:
    """Fill each invalid run of a row with the farther of its two valid neighbours in that row.

    Occlusion holes of a stereo camera lie on the background side of an edge, so filling with the farther
    value puts the depth step where the near object's edge is. Runs touching the border take the one
    neighbour they have; rows without any valid pixel stay NaN.

    Args:
        depth_mm: ``(H, W)`` depth in mm, 0 or NaN = invalid.

    Returns:
        ``(H, W)`` float32 depth, NaN only in rows without any valid pixel.

    Example:
        >>> fill_rows_with_background(np.array([[2000, 0, 0, 1000, 0]], np.uint16)).tolist()
        [[2000.0, 2000.0, 2000.0, 1000.0, 1000.0]]
    """
    z = _as_depth_float(depth_mm)
    h, w = z.shape
    valid = np.isfinite(z)
    cols = np.broadcast_to(np.arange(w), (h, w))
    left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    zl = np.where(left_idx >= 0, z[rows, np.clip(left_idx, 0, w - 1)], np.nan)
    zr = np.where(right_idx < w, z[rows, np.clip(right_idx, 0, w - 1)], np.nan)
    return np.where(valid, z, np.fmax(zl, zr))


def discontinuity_mask(
    depth_mm: np.ndarray,
    *,
    radius_px: int = 8,
    min_step_mm: float = 40.0,
    relative_step: float = 0.03,
) -> np.ndarray:
    """Mark pixels lying within ``radius_px`` of a depth discontinuity.

    Holes are first filled along rows with the farther of their two valid neighbours (occlusion holes lie
    on the background side), then a step is any jump between 8-neighbours larger than
    ``max(min_step_mm, relative_step * nearer depth)``; the steps are dilated by ``radius_px``. Pixel-to-
    pixel jumps are used rather than window ranges so that smooth, spatially correlated stereo noise and
    steep (oblique) surfaces are not mistaken for edges.

    Args:
        depth_mm: ``(H, W)`` depth in mm, 0 or NaN = invalid.
        radius_px: distance in pixels (square neighbourhood) counted as "near" a step.
        min_step_mm: smallest depth jump counted as a discontinuity.
        relative_step: smallest jump relative to the nearer depth.

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        ValueError: bad depth image or radius.
    """
    if radius_px < 0:
        raise ValueError(f"radius_px must be >= 0, got {radius_px}")
    z = _as_depth_float(depth_mm)
    filled = fill_rows_with_background(z)
    has = np.isfinite(filled)
    k3 = np.ones((3, 3), np.uint8)
    zmax = cv2.dilate(np.where(has, filled, 0.0).astype(np.float32), k3)
    zmin = cv2.erode(np.where(has, filled, np.float32(3.0e38)).astype(np.float32), k3)
    step = has & (zmax - zmin > np.maximum(np.float32(min_step_mm), np.float32(relative_step) * zmin))
    if radius_px == 0:
        return step
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    return cv2.dilate(step.astype(np.uint8), kernel).astype(bool)


def _tiles(a: np.ndarray, window_px: int) -> np.ndarray:
    """Cut ``a`` into non-overlapping ``window_px`` tiles: ``(n_tiles, window_px, window_px)``."""
    nty, ntx = a.shape[0] // window_px, a.shape[1] // window_px
    t = a[: nty * window_px, : ntx * window_px].reshape(nty, window_px, ntx, window_px)
    return t.transpose(0, 2, 1, 3).reshape(nty * ntx, window_px, window_px)


def _fit_planes(z: np.ndarray, m: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Weighted least-squares planes for a batch of tiles; returns ``(n, 3)`` coefficients."""
    a = np.einsum("nk,ki,kj->nij", m, x, x)
    b = np.einsum("nk,ki->ni", m * z, x)
    a += np.eye(3) * 1e-9
    return np.linalg.solve(a, b[..., None])[..., 0]


def _autocorrelation(r: np.ndarray, m: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled autocorrelation of masked residual tiles ``(n, w, w)`` at lags 0..max_lag, along u and v.

    Each lag's correlation is normalised by the residual power of the same pixel pairs, so tiles with
    holes do not bias it.
    """
    r = np.where(m, r, 0.0)
    out_u = np.ones(max_lag + 1)
    out_v = np.ones(max_lag + 1)
    for lag in range(1, max_lag + 1):
        for ax, out in ((2, out_u), (1, out_v)):
            a = np.take(r, np.arange(0, r.shape[ax] - lag), axis=ax)
            b = np.take(r, np.arange(lag, r.shape[ax]), axis=ax)
            both = np.take(m, np.arange(0, r.shape[ax] - lag), axis=ax) & np.take(
                m, np.arange(lag, r.shape[ax]), axis=ax
            )
            power = float(np.sum((a * a + b * b) * both)) / 2.0
            out[lag] = float(np.sum(a * b * both)) / power if power > 0 else np.nan
    return out_u, out_v


def local_plane_noise(
    depth_mm: np.ndarray,
    *,
    window_px: int = 15,
    min_valid_fraction: float = 0.8,
    exclude: np.ndarray | None = None,
    outlier_sigmas: float = 3.5,
) -> LocalPlaneNoise:
    """Noise of locally flat regions: robust plane fits in non-overlapping square tiles.

    Each tile with at least ``min_valid_fraction`` valid pixels (and none in ``exclude``) gets a plane
    ``z = a + b u + c v`` by least squares; pixels off by more than ``outlier_sigmas`` robust sigmas (MAD)
    are dropped and the plane refitted once. The residual standard deviation is the tile's noise.

    Args:
        depth_mm: ``(H, W)`` depth in mm, 0 or NaN = invalid.
        window_px: tile size in pixels (>= 5).
        min_valid_fraction: fewest valid pixels per tile, as a fraction of ``window_px ** 2``.
        exclude: optional ``(H, W)`` bool mask; a tile touching it is skipped (e.g. discontinuities).
        outlier_sigmas: rejection threshold of the refit, in robust sigmas.

    Returns:
        Per-tile depths and sigmas and the residual autocorrelation.

    Raises:
        ValueError: bad depth image, window or mask.
    """
    if window_px < 5:
        raise ValueError(f"window_px must be >= 5, got {window_px}")
    z = _as_depth_float(depth_mm)
    if z.shape[0] < window_px or z.shape[1] < window_px:
        raise ValueError(f"depth_mm {z.shape} is smaller than one {window_px}x{window_px} tile")
    valid = np.isfinite(z)
    if exclude is not None:
        if exclude.shape != z.shape:
            raise ValueError(f"exclude shape {exclude.shape} != depth shape {z.shape}")
        ex_tiles = _tiles(exclude.astype(bool), window_px).reshape(-1, window_px * window_px).any(axis=1)
    else:
        ex_tiles = np.zeros(_tiles(valid, window_px).shape[0], bool)
    zt = _tiles(np.where(valid, z, 0.0), window_px).reshape(-1, window_px * window_px).astype(np.float64)
    mt = _tiles(valid, window_px).reshape(-1, window_px * window_px)
    keep = (mt.mean(axis=1) >= min_valid_fraction) & ~ex_tiles
    zt, mt = zt[keep], mt[keep].astype(np.float64)
    half = (window_px - 1) / 2.0
    vv, uu = np.mgrid[0:window_px, 0:window_px]
    x = np.stack([np.ones(window_px * window_px), (uu.ravel() - half), (vv.ravel() - half)], axis=1)
    max_lag = window_px // 2
    if zt.shape[0] == 0:
        nan_corr = np.full(max_lag + 1, np.nan)
        return LocalPlaneNoise(
            depth_mm=np.zeros(0),
            sigma_mm=np.zeros(0),
            correlation=nan_corr,
            correlation_u=nan_corr,
            correlation_v=nan_corr,
            correlation_length_px=np.nan,
        )
    coef = _fit_planes(zt, mt, x)
    res = zt - coef @ x.T
    absr = np.where(mt > 0, np.abs(res), np.nan)
    mad = np.nanmedian(absr, axis=1)
    thresh = outlier_sigmas * _MAD_TO_SIGMA * np.maximum(mad, 0.5)
    mt = mt * (np.abs(res) <= thresh[:, None])
    coef = _fit_planes(zt, mt, x)
    res = (zt - coef @ x.T) * mt
    n = mt.sum(axis=1)
    sigma = np.sqrt(np.sum(res * res, axis=1) / np.maximum(n - 3, 1))
    corr_u, corr_v = _autocorrelation(
        res.reshape(-1, window_px, window_px), mt.reshape(-1, window_px, window_px) > 0, max_lag
    )
    corr = (corr_u + corr_v) / 2.0
    return LocalPlaneNoise(
        depth_mm=coef[:, 0],
        sigma_mm=sigma,
        correlation=corr,
        correlation_u=corr_u,
        correlation_v=corr_v,
        correlation_length_px=_one_over_e(corr),
    )


def _one_over_e(corr: np.ndarray) -> float:
    """First lag where ``corr`` falls to 1/e, linearly interpolated (largest lag if it never does)."""
    level = float(np.exp(-1.0))
    for k in range(1, len(corr)):
        if not np.isfinite(corr[k]):
            return float("nan")
        if corr[k] <= level:
            c0, c1 = corr[k - 1], corr[k]
            return float(k - 1 + (c0 - level) / (c0 - c1))
    return float(len(corr) - 1)


def _nan_percentile(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if a.size else float("nan")


def depth_statistics(
    depth_mm: np.ndarray,
    focal_px: float,
    *,
    baseline_mm: float | None = None,
    window_px: int = 15,
    edge_radius_px: int = 8,
    min_step_mm: float = 40.0,
    depth_bin_mm: float = 250.0,
) -> DepthStats:
    """Compute the comparable statistics of one depth image.

    Args:
        depth_mm: ``(H, W)`` z-depth in mm (uint16 as RealSense delivers it, or float); 0 or NaN = invalid.
        focal_px: horizontal focal length of the depth stream in pixels (for the disparity figures).
        baseline_mm: stereo baseline; when given, ``subpixel_rms_px`` is reported.
        window_px: tile size of the local plane fits.
        edge_radius_px: neighbourhood radius of :func:`discontinuity_mask`.
        min_step_mm: smallest depth jump counted as a discontinuity.
        depth_bin_mm: bin width of ``noise_by_depth``.

    Returns:
        The statistics.

    Raises:
        ValueError: bad depth image, focal length or baseline.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> depth_mm = 1000.0 + rng.normal(0.0, 2.0, (90, 120))
        >>> round(depth_statistics(depth_mm, focal_px=400.0).noise_sigma_mm)
        2
    """
    if not (np.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal_px must be a positive finite number, got {focal_px}")
    if baseline_mm is not None and not (np.isfinite(baseline_mm) and baseline_mm > 0):
        raise ValueError(f"baseline_mm must be a positive finite number or None, got {baseline_mm}")
    if depth_bin_mm <= 0:
        raise ValueError(f"depth_bin_mm must be positive, got {depth_bin_mm}")
    z = _as_depth_float(depth_mm)
    h, w = z.shape
    valid = np.isfinite(z)
    band = left_band_mask(valid)
    invalid = ~valid & ~band

    n_lab, _, cc_stats, _ = cv2.connectedComponentsWithStats(invalid.astype(np.uint8), connectivity=8)
    areas = cc_stats[1:, cv2.CC_STAT_AREA].astype(np.float64)

    near = discontinuity_mask(z, radius_px=edge_radius_px, min_step_mm=min_step_mm) & ~band
    n_invalid = int(np.count_nonzero(invalid))
    n_near = int(np.count_nonzero(near))
    n_else = int(np.count_nonzero(~near & ~band))
    inv_near = int(np.count_nonzero(invalid & near))

    lp = local_plane_noise(z, window_px=window_px, exclude=near)
    tile_z, tile_s = lp.depth_mm, lp.sigma_mm
    ok = tile_z > 0
    tile_z, tile_s = tile_z[ok], tile_s[ok]
    s1m = tile_s / (tile_z / 1000.0) ** 2
    if baseline_mm is not None and tile_z.size:
        subpx = float(np.median(tile_s * focal_px * baseline_mm / tile_z**2))
    else:
        subpx = float("nan")
    bins: list[NoiseAtDepth] = []
    if tile_z.size:
        idx = np.floor(tile_z / depth_bin_mm).astype(np.int64)
        for b in np.unique(idx):
            sel = idx == b
            bins.append(
                NoiseAtDepth(
                    depth_mm=float(np.median(tile_z[sel])),
                    sigma_mm=float(np.median(tile_s[sel])),
                    tiles=int(np.count_nonzero(sel)),
                )
            )
    return DepthStats(
        height=h,
        width=w,
        valid_fraction=float(np.count_nonzero(valid)) / valid.size,
        left_band_px=float(np.median(band.sum(axis=1))),
        hole_count=int(n_lab - 1),
        hole_area_median_px=_nan_percentile(areas, 50),
        hole_area_p95_px=_nan_percentile(areas, 95),
        hole_single_pixel_fraction=float(np.mean(areas == 1)) if areas.size else float("nan"),
        holes_per_mpx=(n_lab - 1) / (h * w) * 1e6,
        invalid_near_edge_fraction=inv_near / n_invalid if n_invalid else float("nan"),
        invalid_rate_near_edge=inv_near / n_near if n_near else float("nan"),
        invalid_rate_elsewhere=(n_invalid - inv_near) / n_else if n_else else float("nan"),
        median_depth_mm=float(np.median(z[valid])) if valid.any() else float("nan"),
        noise_tiles=int(tile_z.size),
        noise_depth_mm=_nan_percentile(tile_z, 50),
        noise_sigma_mm=_nan_percentile(tile_s, 50),
        noise_sigma_at_1m_mm=_nan_percentile(s1m, 50),
        subpixel_rms_px=subpx,
        correlation_length_px=lp.correlation_length_px,
        correlation_length_u_px=_one_over_e(lp.correlation_u),
        correlation_length_v_px=_one_over_e(lp.correlation_v),
        noise_by_depth=tuple(bins),
    )
