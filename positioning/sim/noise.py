"""RealSense-like depth noise: turns an ideal z-depth render into what a D400 camera would deliver.

MODEL_DOC_PLACEHOLDER
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import cv2
import numpy as np

__all__ = [
    "DepthNoiseParams",
    "D435_NOISE",
    "D455_NOISE",
    "apply_depth_noise",
    "occlusion_mask",
    "correlated_field",
]

#: Surface obliquity (tan of the angle between the surface normal and the viewing ray) is clipped here
#: before it scales the noise, so that the gradient across a depth step does not explode the noise.
MAX_SLOPE_TAN = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthNoiseParams:
    """Parameters of the RealSense-like depth noise model (see the module docstring for the model).

    Attributes:
        baseline_mm: stereo baseline between the left and right imagers (D435: 50 mm, D455: 95 mm).
        subpixel_px: RMS disparity noise in pixels on a surface facing the camera (Intel's "subpixel
            RMS"); the axial noise is ``sigma_z = z^2 * subpixel_px / (focal_px * baseline_mm)``, growing
            with the square of the distance.
        noise_correlation_px: Gaussian sigma (pixels) of the spatial correlation of the disparity noise
            (stereo matching over a window makes neighbouring errors alike); 0 = white.
        white_noise_fraction: share of the disparity noise variance that is uncorrelated pixel to pixel.
        slope_noise_gain: oblique surfaces are noisier: the disparity noise is multiplied by
            ``sqrt(1 + (slope_noise_gain * tan(theta))^2)``, theta the angle between the surface normal
            and the optical axis (``tan(theta)`` clipped at :data:`MAX_SLOPE_TAN`); 0 disables.
        noise_floor_mm: extra constant white axial noise (mm RMS); 0 disables.
        disparity_step_px: the ASIC's disparity quantum (the D4 reports disparity in 1/32 pixel), so
            depths come in steps of ``z^2 * step / (focal_px * baseline_mm)``; 0 disables.
        depth_unit_mm: quantum of the output (``z16`` with depth units 0.001 m: 1 mm).
        max_disparity_px: disparity search range (126 px at disparity shift 0): surfaces nearer than
            Min-Z ``= focal_px * baseline_mm / max_disparity_px`` are invalid.
        max_depth_mm: farthest depth delivered; farther pixels are invalid.
        occlusion: model what the right imager cannot see. Depth is referenced to the LEFT imager, so a
            near object casts an invalid shadow ``f*B*(1/z_near - 1/z_far)`` px wide on its LEFT side,
            and the columns at the left border (``u < f*B/z``) form an invalid band.
        occlusion_fill_px: pixels of each occlusion shadow that the matcher fills in anyway.
        left_band_extra_px: columns beyond the geometric ``f*B/z`` left band that are invalid too.
        left_band_jitter_px: RMS raggedness (pixels) of the left band's edge.
        edge_width_px: pixels within this distance of an occlusion shadow are "near an edge".
        edge_dropout_rate: fraction of the near-edge pixels lost, in clumps (the matching window straddles
            the edge and the left-right consistency check fails). Needs ``occlusion``.
        blob_rate: fraction of all other pixels lost in clumps (low texture, specular spots).
        blob_size_px: Gaussian sigma (pixels) of the random field whose high values become the clumps;
            larger values give fewer, larger holes at the same rate.
        dropout_rate: probability of an isolated invalid pixel anywhere.
    """

    baseline_mm: float = 50.0
    subpixel_px: float = 0.08
    noise_correlation_px: float = 0.0
    white_noise_fraction: float = 1.0
    slope_noise_gain: float = 0.0
    noise_floor_mm: float = 0.0
    disparity_step_px: float = 1.0 / 32.0
    depth_unit_mm: float = 1.0
    max_disparity_px: float = 126.0
    max_depth_mm: float = 10_000.0
    occlusion: bool = True
    occlusion_fill_px: float = 0.0
    left_band_extra_px: float = 0.0
    left_band_jitter_px: float = 0.0
    edge_width_px: int = 2
    edge_dropout_rate: float = 0.0
    blob_rate: float = 0.0
    blob_size_px: float = 1.0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("baseline_mm", "depth_unit_mm", "max_disparity_px", "max_depth_mm", "blob_size_px"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        non_negative = (
            "subpixel_px",
            "noise_correlation_px",
            "slope_noise_gain",
            "noise_floor_mm",
            "disparity_step_px",
            "occlusion_fill_px",
            "left_band_extra_px",
            "left_band_jitter_px",
            "edge_width_px",
        )
        for name in non_negative:
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if int(self.edge_width_px) != self.edge_width_px:
            raise ValueError(f"edge_width_px must be a whole number of pixels, got {self.edge_width_px}")
        for name in ("white_noise_fraction", "edge_dropout_rate", "blob_rate", "dropout_rate"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    def min_depth_mm(self, focal_px: float) -> float:
        """Min-Z, the nearest depth the disparity search reaches: ``focal_px * baseline_mm / max_disparity_px``."""
        return focal_px * self.baseline_mm / self.max_disparity_px

    def axial_sigma_mm(self, depth_mm: np.ndarray | float, focal_px: float) -> np.ndarray | float:
        """Axial (z) noise RMS in mm at ``depth_mm`` on a surface facing the camera.

        ``z^2 * subpixel_px / (focal_px * baseline_mm)``; quantisation and ``noise_floor_mm`` not included.
        """
        return np.asarray(depth_mm, dtype=np.float64) ** 2 * self.subpixel_px / (focal_px * self.baseline_mm)


def _check_depth(depth_true_mm: np.ndarray) -> np.ndarray:
    """Validate the ideal depth input; return a float32 copy with NaN where there is no surface."""
    if not isinstance(depth_true_mm, np.ndarray):
        raise ValueError(f"depth_true_mm must be a numpy array, got {type(depth_true_mm).__name__}")
    if depth_true_mm.ndim != 2:
        raise ValueError(f"depth_true_mm must be a 2-D (H, W) array, got shape {depth_true_mm.shape}")
    if depth_true_mm.shape[0] < 1 or depth_true_mm.shape[1] < 1:
        raise ValueError(f"depth_true_mm must not be empty, got shape {depth_true_mm.shape}")
    dt = depth_true_mm.dtype
    if dt == np.bool_ or not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)):
        raise ValueError(f"depth_true_mm must be a float (or integer) array, got dtype {dt}")
    z = depth_true_mm.astype(np.float32, copy=True)
    lo, hi = np.nanmin(z) if z.size else 0.0, np.nanmax(z) if z.size else 0.0
    if np.isinf(lo) or np.isinf(hi):
        raise ValueError("depth_true_mm must be finite or NaN (no surface), got +-inf values")
    if lo < 0:
        raise ValueError(f"depth_true_mm must be >= 0 (0 or NaN = no surface), got minimum {lo}")
    z[z == 0] = np.nan
    return z


def occlusion_mask(disparity_px: np.ndarray, fill_px: float = 0.0) -> np.ndarray:
    """Pixels of the LEFT (reference) image that the right imager cannot see, row by row.

    A left-image pixel ``u`` with disparity ``d`` appears at ``x_r = u - d`` in the right image. It is hidden
    when a pixel to its right maps further left: ``min_{u' > u} (u' - d(u')) < x_r - fill_px``. For a step
    from a far surface (left) to a near one (right) this marks the ``d_near - d_far - fill_px`` far-side
    pixels just left of the near object's edge; a near object's right edge casts no shadow.

    Convention: ``(H, W)``, columns = u growing to the right, the right imager displaced along +u.

    Args:
        disparity_px: ``(H, W)`` disparity in pixels; NaN or <= 0 where there is no surface.
        fill_px: shadow pixels the matcher fills in (the delivered shadow is this much narrower).

    Returns:
        ``(H, W)`` bool, True where occluded.

    Example:
        >>> d = np.full((1, 8), 2.0, np.float32); d[0, 5:] = 5.0   # near object from column 5 on
        >>> occlusion_mask(d).astype(int).tolist()
        [[0, 0, 1, 1, 1, 0, 0, 0]]
    """
    d = np.asarray(disparity_px, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity_px must be (H, W), got shape {d.shape}")
    x_r = np.arange(d.shape[1], dtype=np.float32)[None, :] - d
    x_r[~(d > 0)] = np.inf  # no surface: occludes nothing (and is invalid anyway)
    suffix_min = np.minimum.accumulate(x_r[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros(d.shape, bool)
    out[:, :-1] = x_r[:, :-1] - suffix_min[:, 1:] > np.float32(fill_px)
    return out


def _gaussian_kernel(sigma_px: float) -> np.ndarray:
    return cv2.getGaussianKernel(2 * math.ceil(3 * sigma_px) + 1, sigma_px, cv2.CV_32F)


def _interp_variance(scale: int, kernel: np.ndarray) -> float:
    """Mean share of variance (per axis) kept by linear upsampling by ``scale`` of a field filtered by ``kernel``."""
    k = kernel.astype(np.float64).ravel()
    rho = float(np.dot(k[:-1], k[1:]) / np.dot(k, k))  # correlation of neighbouring coarse samples
    t = ((np.arange(scale) + 0.5) / scale - 0.5) % 1.0
    return float(np.mean((1 - t) ** 2 + t**2 + 2 * t * (1 - t) * rho))


def correlated_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with Gaussian correlation of ``sigma_px`` pixels.

    White noise filtered by a Gaussian of ``sigma_px``. For speed, a field with ``sigma_px >= 3`` is drawn
    on a grid ``floor(sigma_px / 1.5)`` times coarser, one with ``1.2 <= sigma_px < 3`` on a grid twice as
    coarse, and upsampled linearly; the variance lost by the interpolation is put back, so the field
    keeps unit variance on average (exactly at every pixel for the 2x grid, whose interpolation weights
    are the same at every pixel, which keeps thresholded fields free of grid patterns).

    Args:
        rng: random generator.
        shape: ``(H, W)``.
        sigma_px: correlation sigma in pixels; 0 gives white noise.

    Returns:
        ``(H, W)`` float32 field.
    """
    h, w = shape
    if sigma_px <= 0:
        return rng.standard_normal((h, w), dtype=np.float32)
    scale = int(sigma_px / 1.5) if sigma_px >= 3.0 else (2 if sigma_px >= 1.2 else 1)
    sigma_low = sigma_px / scale
    hl, wl = (h, w) if scale == 1 else (-(-h // scale) + 1, -(-w // scale) + 1)
    k = _gaussian_kernel(sigma_low)
    field = cv2.sepFilter2D(
        rng.standard_normal((hl, wl), dtype=np.float32), cv2.CV_32F, k, k, borderType=cv2.BORDER_REFLECT
    )
    norm = float(np.sum(k.astype(np.float64) ** 2))  # std of the filtered field (separable kernel)
    if scale > 1:
        norm *= _interp_variance(scale, k)  # x and y each lose this share of the variance
        field = cv2.resize(field, (wl * scale, hl * scale), interpolation=cv2.INTER_LINEAR)[:h, :w]
    field *= np.float32(1.0 / norm)
    return field


def apply_depth_noise(
    depth_true_mm: np.ndarray,
    focal_px: float,
    rng: np.random.Generator,
    params: DepthNoiseParams | None = None,
) -> np.ndarray:
    """Turn an ideal z-depth image into a RealSense-like ``z16`` depth image.

    Convention: depth is z (along the optical axis, not the ray length) in millimetres, ``(H, W)`` with
    rows = v (down) and columns = u (right), pixel origin top-left; the camera is a horizontal stereo
    pair whose depth is referenced to the LEFT imager, the right imager displaced along +u (RealSense).
    0 (or NaN) means "no surface" on input and "invalid" on output.

    Args:
        depth_true_mm: ``(H, W)`` ideal z-depth in mm (float; integer accepted); 0 or NaN = no surface hit.
        focal_px: horizontal focal length of the depth stream in pixels (``Intrinsics.fx``).
        rng: random generator; the same generator state gives the same output.
        params: noise model parameters; defaults to :data:`D435_NOISE`.

    Returns:
        ``(H, W)`` uint16 depth in depth units (mm by default), 0 = invalid.

    Raises:
        ValueError: ``depth_true_mm`` is not a 2-D real array of finite-or-NaN values >= 0, ``focal_px``
            is not a positive finite number, or ``rng``/``params`` have the wrong type.

    Example:
        >>> depth = np.full((480, 848), 1000.0)
        >>> out = apply_depth_noise(depth, 425.0, np.random.default_rng(0))
        >>> out.dtype, out.shape
        (dtype('uint16'), (480, 848))
    """
    p = D435_NOISE if params is None else params
    if not isinstance(p, DepthNoiseParams):
        raise ValueError(f"params must be a DepthNoiseParams, got {type(p).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(focal_px, bool) or not isinstance(focal_px, (int, float, np.integer, np.floating)):
        raise ValueError(f"focal_px must be a number, got {type(focal_px).__name__}")
    if not (math.isfinite(focal_px) and focal_px > 0):
        raise ValueError(f"focal_px must be a positive finite number, got {focal_px}")
    z = _check_depth(depth_true_mm)
    shape = z.shape
    fb = np.float32(focal_px * p.baseline_mm)

    # Ideal disparity (px); NaN where there is no surface.
    disparity = np.divide(fb, z)
    invalid = ~(disparity > 0)

    shadow = occlusion_mask(disparity, p.occlusion_fill_px) if p.occlusion else None
    if shadow is not None:
        invalid |= shadow

    # Disparity noise: a spatially correlated field (plus an optional white share), scaled by obliquity.
    field = None
    noisy = disparity
    if p.subpixel_px > 0:
        corr_share = math.sqrt(1.0 - p.white_noise_fraction)
        white_share = math.sqrt(p.white_noise_fraction)
        noise = np.zeros(shape, np.float32)
        if corr_share > 0:
            field = correlated_field(rng, shape, p.noise_correlation_px)
            noise += np.float32(p.subpixel_px * corr_share) * field
        if white_share > 0:
            noise += np.float32(p.subpixel_px * white_share) * rng.standard_normal(shape, dtype=np.float32)
        if p.slope_noise_gain > 0:
            # tan(theta) = f * |grad z| / z = f * |grad d| / d for disparity d = f B / z.
            d0 = np.nan_to_num(disparity, nan=0.0)
            gx = cv2.Sobel(d0, cv2.CV_32F, 1, 0, ksize=1)
            gy = cv2.Sobel(d0, cv2.CV_32F, 0, 1, ksize=1)
            tan = np.sqrt(gx * gx + gy * gy)
            tan *= np.float32(0.5 * focal_px)
            tan /= np.maximum(d0, np.float32(1e-6))
            np.minimum(tan, np.float32(MAX_SLOPE_TAN), out=tan)
            tan *= np.float32(p.slope_noise_gain)
            noise *= np.sqrt(1.0 + tan * tan)
        noisy = disparity + noise
    if p.disparity_step_px > 0:
        inv_step = np.float32(1.0 / p.disparity_step_px)
        noisy = np.rint(noisy * inv_step)
        noisy *= np.float32(p.disparity_step_px)

    # Left border band: columns whose match would lie left of the right image, plus the ASIC's margin.
    if p.occlusion:
        x_r = np.arange(shape[1], dtype=np.float32)[None, :] - disparity
        if p.left_band_jitter_px > 0:
            jitter = field if field is not None else correlated_field(rng, shape, 4.0)
            x_r += np.float32(p.left_band_jitter_px) * jitter
        invalid |= x_r < np.float32(p.left_band_extra_px)

    invalid |= ~(noisy > 0) | (noisy > np.float32(p.max_disparity_px))
    with np.errstate(divide="ignore"):
        z_out = np.divide(fb, noisy)
    if p.noise_floor_mm > 0:
        z_out += np.float32(p.noise_floor_mm) * rng.standard_normal(shape, dtype=np.float32)
    invalid |= ~(z_out <= np.float32(p.max_depth_mm))

    # Dropouts: clumps next to occlusion shadows, clumps elsewhere, isolated pixels.
    edge_rate = p.edge_dropout_rate if shadow is not None else 0.0
    if p.blob_rate > 0 or edge_rate > 0:
        blobs = correlated_field(rng, shape, p.blob_size_px)
        thr = np.float32(_upper_quantile(p.blob_rate))
        if edge_rate > 0:
            r = int(p.edge_width_px)
            near = cv2.dilate(shadow.view(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) if r else shadow
            thr = np.where(near.view(bool), np.float32(_upper_quantile(edge_rate)), thr)
        invalid |= blobs > thr
    if p.dropout_rate > 0:
        invalid |= rng.random(shape, dtype=np.float32) < np.float32(p.dropout_rate)

    z_out[invalid] = 0.0
    if p.depth_unit_mm != 1.0:
        z_out *= np.float32(1.0 / p.depth_unit_mm)
    np.rint(z_out, out=z_out)
    np.clip(z_out, 0, 65535, out=z_out)
    return z_out.astype(np.uint16)


def _upper_quantile(rate: float) -> float:
    """Threshold a standard normal exceeds with probability ``rate``."""
    if rate <= 0:
        return math.inf
    if rate >= 1:
        return -math.inf
    return statistics.NormalDist().inv_cdf(1.0 - rate)


#: Intel RealSense D435 (baseline 50 mm). Calibrated, see the module docstring.
D435_NOISE = DepthNoiseParams(
    baseline_mm=50.0,
    subpixel_px=0.128,
    noise_correlation_px=4.5,
    white_noise_fraction=0.0,
    left_band_extra_px=11.0,
    left_band_jitter_px=2.0,
    edge_width_px=2,
    edge_dropout_rate=0.45,
    blob_rate=0.0015,
    blob_size_px=1.3,
    dropout_rate=0.0,
)

#: Intel RealSense D455 (baseline 95 mm): the D435 calibration with the D455 baseline.
D455_NOISE = dataclasses.replace(D435_NOISE, baseline_mm=95.0)
