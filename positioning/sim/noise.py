"""RealSense-like depth noise: turns an ideal z-depth render into what a D400 camera would deliver.

Convention: depth is z (distance along the optical axis, not the ray length) in millimetres, images are
``(H, W)`` with rows = v (down) and columns = u (right), pixel origin top-left; 0 (or NaN on input) means
no surface / invalid. The stereo pair is horizontal, depth is referenced to the LEFT imager and the right
imager sits at +u (RealSense D400).

Model (per frame, all vectorised; :func:`apply_depth_noise`):

1. **Disparity.** ``d = f B / z`` pixels (``f = focal_px``, ``B = baseline_mm``).
2. **Occlusion shadows** (``occlusion``). A left-image pixel lands at ``x_r = u - d`` in the right image; it
   is invalid when a pixel to its right lands further left (:func:`occlusion_mask`). A near object thus
   casts a shadow of about ``f B (1/z_near - 1/z_far)`` pixels on its LEFT side (the side where the right
   imager sees past it), none on its right side; ``occlusion_margin_px`` widens it on its left (background)
   side, where the matching window still straddles the edge. The real recording shows exactly this: its
   long invalid bands lie left of near surfaces, end at the near surface's edge and reach 1-3 px further
   left than the geometric shadow (8-12 px wide where the geometry gives 7-9 px).
3. **Left border band.** Columns with ``u - d < left_band_extra_px`` are invalid (their match would lie
   outside the right image; the D4 leaves an extra margin), with a ragged edge (``left_band_jitter_px``
   times the noise field below). The band is about ``f B / z + 11`` px wide.
4. **Axial noise, in disparity.** ``d += subpixel_px * s(u, v) * n(u, v)``: ``n`` is a unit Gaussian random
   field with Gaussian correlation of ``noise_correlation_px`` (``* sqrt(aspect)`` along u, ``/ sqrt(aspect)``
   along v: block matching along the baseline smears errors horizontally) plus an optional white share;
   ``s = sqrt(1 + (slope_noise_gain * tan(theta))^2)`` raises it on oblique surfaces. In depth this is
   ``sigma_z = z^2 * subpixel_px / (f B)``, the square law of stereo
   (:meth:`DepthNoiseParams.axial_sigma_mm`).
5. **Quantisation.** The disparity is rounded to ``disparity_step_px`` (the D4's 1/32 px), so depths come
   in steps of ``z^2 / (32 f B)`` (4.6 mm at 1.7 m in the real recording, 0.4 mm at 0.5 m), then
   ``z = f B / d`` is rounded to ``depth_unit_mm`` (``z16``, 1 mm).
6. **Range.** Disparities above ``max_disparity_px`` (nearer than Min-Z ``= f B / 126``) or depths beyond
   ``max_depth_mm`` are invalid.
7. **Dropouts.** A second unit random field with correlation ``blob_size_px`` is thresholded: within
   ``edge_width_px`` of an occlusion shadow a fraction ``edge_dropout_rate`` of pixels is lost (ragged
   shadow borders), everywhere a fraction ``blob_rate`` (clumps of a few pixels, as on low-texture or
   shiny spots); plus isolated pixels with probability ``dropout_rate``.

Calibration (``python -m positioning.evaluation.noise_calibration``, procedure in that module): the real
D435 frame (``d435_single_depth_color_640x480.bag``: 640x480, ``fx`` = 390.4 px, depth units 1 mm, an office
corner with a frontal wall at 1.6-1.8 m, an oblique wall at 0.35-1.3 m, a backpack and a chair) was turned
into a noise-free twin (per-segment smoothing, holes filled with the background), which was run through this
model with the real intrinsics; the defaults of :data:`D435_NOISE` were tuned until the statistics of
:func:`positioning.evaluation.depth_stats.depth_statistics` agreed (seed 0):

====================================  ===================  ===================
statistic                             real                 simulated
====================================  ===================  ===================
valid fraction                        0.933                0.933
left band width (px)                  23                   23
holes (8-connected, band excluded)    283                  273
hole area median / p95 (px)           2 / 27               2 / 43
single-pixel holes                    36 %                 36 %
invalid pixels within 8 px of edges   86 %                 90 %
invalid rate within 8 px of edges     18.0 %               16.4 %
invalid rate elsewhere                0.55 %               0.37 %
plane-fit sigma, 15 px tiles (1.65 m) 5.04 mm              5.28 mm
same, scaled to 1 m (sigma / z^2)     2.89 mm              2.89 mm
same, as disparity RMS                0.056 px             0.056 px
far wall sigma, 9 / 15 / 31 px tiles  3.9 / 7.9 / 15.0 mm  3.8 / 8.0 / 15.7 mm
sigma at 0.25-0.5 / 0.5-0.75 m        0.65 / 1.23 mm       0.65 / 1.10 mm
sigma at 1.5-1.75 / 1.75-2 m          7.1 / 8.5 mm         7.5 / 8.5 mm
residual 1/e correlation, u / v       5.1 / 3.0 px         5.2 / 3.0 px
====================================  ===================  ===================

Remaining differences: the real frame has more invalid pixels far from any depth edge (along its top
border and in wide bands), and its shadows are cleaner strips, while the simulated ones pick up a few
attached clumps (hole p95); the oblique wall at 0.5-1.25 m is matched to within 10-18 %. None of this is
modelled further.

``subpixel_px`` (0.138) is the per-pixel RMS of the whole disparity error, its slowly varying part
included. The local-plane figure that Intel's depth-quality tool reports (RMS about a plane fitted to a
patch) comes out at 0.056 px for 15 px tiles and grows with the patch size (0.10 px for 31 px tiles on
the far wall), in line with the "about 0.08 px" usually quoted for a D435 from Intel's depth-quality white
paper. The real frame is 640x480; at 848x480 the camera has a longer focal length (about 425 px) and,
per Intel's tuning guide ("Tuning depth cameras for best performance": lower resolutions degrade depth
precision), somewhat better subpixel precision, so the preset errs on the noisy side there.
:data:`D455_NOISE` reuses the D435 calibration with the D455's 95 mm baseline (about half the depth noise
at a given distance, and a larger Min-Z); it is not calibrated against a D455 recording.
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
    "D415_NOISE",
    "NOISE_PRESETS",
    "apply_depth_noise",
    "dark_surface_dropouts",
    "occlusion_mask",
    "correlated_field",
    "MAX_SLOPE_TAN",
]

#: Surface obliquity (tan of the angle between the surface normal and the optical axis) is clipped here
#: before it scales the noise, so that the gradient across a depth step does not explode the noise.
MAX_SLOPE_TAN = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthNoiseParams:
    """Parameters of the RealSense-like depth noise model (see the module docstring for the model).

    The class defaults are a plain, uncalibrated model (white noise, no dropouts); use the calibrated
    presets :data:`D435_NOISE` / :data:`D455_NOISE`, or ``dataclasses.replace`` them.

    Attributes:
        baseline_mm: stereo baseline between the left and right imagers (D435: 50 mm, D455: 95 mm).
        subpixel_px: per-pixel RMS disparity noise in pixels on a surface facing the camera (slowly
            varying part included; Intel's plane-fit "subpixel RMS" over a patch is smaller); the axial
            noise is ``sigma_z = z^2 * subpixel_px / (focal_px * baseline_mm)``, the square law of stereo.
        noise_correlation_px: Gaussian sigma (pixels) of the spatial correlation of the disparity noise
            (stereo matching over a window makes neighbouring errors alike); 0 = white.
        noise_correlation_aspect: ratio of the correlation along rows (u) to that along columns (v);
            the Gaussian sigmas are ``noise_correlation_px * sqrt(aspect)`` along u and ``/ sqrt(aspect)``
            along v (matching along the baseline stretches the error blobs horizontally).
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
        occlusion_margin_px: whole pixels by which each shadow is wider on its left (background) side:
            there the matching window still straddles the occluding edge and the match fails.
        left_band_extra_px: columns beyond the geometric ``f*B/z`` left band that are invalid too.
        left_band_jitter_px: RMS raggedness (pixels) of the left band's edge.
        edge_width_px: pixels within this distance of an occlusion shadow are "near an edge".
        edge_dropout_rate: fraction of the near-edge pixels lost, in clumps (the matching window straddles
            the edge and the left-right consistency check fails). Needs ``occlusion``.
        blob_rate: fraction of all pixels lost in clumps (low texture, specular spots).
        blob_size_px: Gaussian sigma (pixels) of the random field whose high values become the clumps;
            larger values give fewer, larger holes at the same rate.
        dropout_rate: probability of an isolated invalid pixel anywhere.
    """

    baseline_mm: float = 50.0
    subpixel_px: float = 0.08
    noise_correlation_px: float = 0.0
    noise_correlation_aspect: float = 1.0
    white_noise_fraction: float = 1.0
    slope_noise_gain: float = 0.0
    noise_floor_mm: float = 0.0
    disparity_step_px: float = 1.0 / 32.0
    depth_unit_mm: float = 1.0
    max_disparity_px: float = 126.0
    max_depth_mm: float = 10_000.0
    occlusion: bool = True
    occlusion_margin_px: int = 0
    left_band_extra_px: float = 0.0
    left_band_jitter_px: float = 0.0
    edge_width_px: int = 2
    edge_dropout_rate: float = 0.0
    blob_rate: float = 0.0
    blob_size_px: float = 1.0
    dropout_rate: float = 0.0

    def __post_init__(self) -> None:
        positive = (
            "baseline_mm",
            "depth_unit_mm",
            "max_disparity_px",
            "max_depth_mm",
            "blob_size_px",
            "noise_correlation_aspect",
        )
        for name in positive:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        non_negative = (
            "subpixel_px",
            "noise_correlation_px",
            "slope_noise_gain",
            "noise_floor_mm",
            "disparity_step_px",
            "occlusion_margin_px",
            "left_band_extra_px",
            "left_band_jitter_px",
            "edge_width_px",
        )
        for name in non_negative:
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.max_depth_mm / self.depth_unit_mm > 65535:
            counts = self.max_depth_mm / self.depth_unit_mm
            raise ValueError(f"max_depth_mm / depth_unit_mm must fit z16 (<= 65535), got {counts}")
        for name in ("edge_width_px", "occlusion_margin_px"):
            v = getattr(self, name)
            if int(v) != v:
                raise ValueError(f"{name} must be a whole number of pixels, got {v}")
        for name in ("white_noise_fraction", "edge_dropout_rate", "blob_rate", "dropout_rate"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v}")

    def min_depth_mm(self, focal_px: float) -> float:
        """Min-Z (mm), the nearest depth the disparity search reaches: ``f * baseline_mm / max_disparity_px``.

        Example:
            >>> round(D435_NOISE.min_depth_mm(425.0))
            169
        """
        return focal_px * self.baseline_mm / self.max_disparity_px

    def axial_sigma_mm(self, depth_mm: np.ndarray | float, focal_px: float) -> np.ndarray | float:
        """Axial (z) noise RMS in mm at ``depth_mm`` on a surface facing the camera.

        ``z^2 * subpixel_px / (focal_px * baseline_mm)``; quantisation and ``noise_floor_mm`` not included.
        """
        return np.asarray(depth_mm, dtype=np.float64) ** 2 * self.subpixel_px / (focal_px * self.baseline_mm)


def _check_depth(depth_true_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the ideal depth; return a float32 copy (0 where there is no surface) and the surface mask."""
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
    lo, hi = np.fmin.reduce(z, axis=None), np.fmax.reduce(z, axis=None)  # NaN-ignoring
    if np.isinf(lo) or np.isinf(hi):
        raise ValueError("depth_true_mm must be finite or NaN (no surface), got +-inf values")
    if lo < 0:
        raise ValueError(f"depth_true_mm must be >= 0 (0 or NaN = no surface), got minimum {lo}")
    cv2.patchNaNs(z, 0.0)
    return z, z > 0


def occlusion_mask(disparity_px: np.ndarray, fill_px: float = 0.0) -> np.ndarray:
    """Pixels of the LEFT (reference) image that the right imager cannot see, row by row.

    A left-image pixel ``u`` with disparity ``d`` appears at ``x_r = u - d`` in the right image. It is hidden
    when a pixel to its right maps further left: ``min_{u' > u} (u' - d(u')) < x_r - fill_px``. For a step
    from a far surface (left) to a near one (right) this marks the far-side pixels in the open interval
    ``(u_edge - (d_near - d_far - fill_px), u_edge)`` just left of the near object's first column
    ``u_edge``; a near object's right edge casts no shadow.

    Convention: ``(H, W)``, columns = u growing to the right, the right imager displaced along +u.

    Args:
        disparity_px: ``(H, W)`` disparity in pixels; NaN or <= 0 where there is no surface.
        fill_px: shadow pixels the matcher fills in (the delivered shadow is this much narrower).

    Returns:
        ``(H, W)`` bool, True where occluded.

    Example:
        >>> d = np.full((1, 8), 2.0, np.float32); d[0, 5:] = 5.0   # near object from column 5 on
        >>> occlusion_mask(d).astype(int).tolist()
        [[0, 0, 0, 1, 1, 0, 0, 0]]
    """
    d = np.asarray(disparity_px, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity_px must be (H, W), got shape {d.shape}")
    surface = d > 0  # False for NaN too
    d = np.where(surface, d, np.float32(0.0))
    x_r = np.arange(d.shape[1], dtype=np.float32)[None, :] - d
    return _occluded(x_r, fill_px, _disparity_span(d, surface))


def _disparity_span(disparity: np.ndarray, surface: np.ndarray) -> float:
    """Largest disparity difference between two surface pixels (0 without surface)."""
    if not surface.any():
        return 0.0
    d_min, d_max = cv2.minMaxLoc(disparity, mask=surface.view(np.uint8))[:2]
    return float(d_max - d_min)


def _occluded(x_r: np.ndarray, fill_px: float, span_px: float) -> np.ndarray:
    """Occlusion test on right-image columns ``x_r``; see :func:`occlusion_mask`.

    A pixel ``u' > u`` can only hide ``u`` if ``u' - u < d(u') - d(u) <= span_px``, so the minimum of ``x_r``
    over the next ``span_px`` columns suffices; it is built by doubling windows (``log2(span)`` passes).
    Pixels without surface have ``x_r = u`` and so never hide anything.
    """
    suffix_min, spare = x_r, np.empty_like(x_r)  # suffix_min: min of x_r over [u, u + width)
    width = 1
    while width <= span_px and width < x_r.shape[1]:
        if x_r.shape[0] * (x_r.shape[1] - width) > 4:  # cv2 would take a one-element array for a scalar
            cv2.min(suffix_min[:, :-width], suffix_min[:, width:], dst=spare[:, :-width])
        else:
            np.minimum(suffix_min[:, :-width], suffix_min[:, width:], out=spare[:, :-width])
        spare[:, -width:] = suffix_min[:, -width:]
        suffix_min, spare = spare, (suffix_min if suffix_min is not x_r else np.empty_like(x_r))
        width *= 2
    out = np.zeros(x_r.shape, bool)
    out[:, :-1] = x_r[:, :-1] - suffix_min[:, 1:] > np.float32(fill_px)
    return out


def _gaussian_kernel(sigma_px: float) -> np.ndarray:
    return cv2.getGaussianKernel(2 * math.ceil(3 * sigma_px) + 1, sigma_px, cv2.CV_32F)


def _interp_variance(scale: int, kernel: np.ndarray) -> float:
    """Mean share of the variance kept, along one axis, by linear upsampling of a ``kernel``-filtered field.

    A value between two coarse samples with correlation ``rho`` has variance
    ``(1 - t)^2 + t^2 + 2 t (1 - t) rho`` for interpolation weight ``t``; averaged over the pixel phases.
    """
    k = kernel.astype(np.float64).ravel()
    rho = float(np.dot(k[:-1], k[1:]) / np.dot(k, k))  # correlation of neighbouring coarse samples
    t = ((np.arange(scale) + 0.5) / scale - 0.5) % 1.0
    return float(np.mean((1 - t) ** 2 + t**2 + 2 * t * (1 - t) * rho))


def correlated_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float | tuple[float, float]
) -> np.ndarray:
    """A zero-mean, unit-variance Gaussian random field with Gaussian spatial correlation.

    White noise filtered by a Gaussian of ``sigma_px`` (one value, or ``(sigma_u_px, sigma_v_px)`` for
    different correlation along rows and columns). For speed, a field whose smaller sigma is ``>= 3`` px is
    drawn on a grid ``floor(min_sigma / 1.5)`` times coarser, one with ``1.2 <= min_sigma < 3`` on a grid
    twice as coarse, and upsampled linearly; the variance lost by the interpolation is put back, so the
    field keeps unit variance on average (exactly at every pixel for the 2x grid, whose interpolation
    weights are the same at every pixel, which keeps thresholded fields free of grid patterns).

    Convention: ``(H, W)`` float32, ``sigma_u_px`` along columns (u, right), ``sigma_v_px`` along rows.

    Args:
        rng: random generator.
        shape: ``(H, W)``.
        sigma_px: correlation sigma in pixels, or ``(sigma_u_px, sigma_v_px)``; 0 gives white noise.

    Returns:
        ``(H, W)`` float32 field.
    """
    h, w = shape
    su, sv = (float(sigma_px), float(sigma_px)) if np.isscalar(sigma_px) else map(float, sigma_px)
    if min(su, sv) < 0:
        raise ValueError(f"sigma_px must be >= 0, got {sigma_px}")
    if max(su, sv) <= 0:
        return rng.standard_normal((h, w), dtype=np.float32)
    smin = min(su, sv)  # a white axis (sigma 0) cannot be drawn on a coarser grid
    scale = int(smin / 1.5) if smin >= 3.0 else (2 if smin >= 1.2 else 1)
    hl, wl = (h, w) if scale == 1 else (-(-h // scale) + 1, -(-w // scale) + 1)
    ku = _gaussian_kernel(su / scale) if su > 0 else np.ones((1, 1), np.float32)
    kv = _gaussian_kernel(sv / scale) if sv > 0 else np.ones((1, 1), np.float32)
    field = cv2.sepFilter2D(
        rng.standard_normal((hl, wl), dtype=np.float32), cv2.CV_32F, ku, kv, borderType=cv2.BORDER_REFLECT
    )
    var = float(np.sum(ku.astype(np.float64) ** 2) * np.sum(kv.astype(np.float64) ** 2))
    if scale > 1:
        var *= _interp_variance(scale, ku) * _interp_variance(scale, kv)
        field = cv2.resize(field, (wl * scale, hl * scale), interpolation=cv2.INTER_LINEAR)[:h, :w]
    field *= np.float32(1.0 / math.sqrt(var))
    return field


def _slope_noise_factor(disparity: np.ndarray, focal_px: float, gain: float) -> np.ndarray:
    """``sqrt(1 + (gain * tan(theta))^2)`` per pixel, ``tan(theta) = f |grad z| / z = f |grad d| / d``.

    ``tan(theta)`` is capped at :data:`MAX_SLOPE_TAN` (pixels without surface, ``d = 0``, get the cap).
    Computed on every other pixel and interpolated back: the factor varies slowly except at edges.
    """
    h, w = disparity.shape
    coarse = disparity[::2, ::2]
    k = 0.25 * focal_px * gain  # the 1x3 Sobel is twice the central difference, over 2 fine pixels
    out = cv2.Sobel(coarse, cv2.CV_32F, 1, 0, ksize=1, scale=k)
    cv2.magnitude(out, cv2.Sobel(coarse, cv2.CV_32F, 0, 1, ksize=1, scale=k), out)
    cv2.divide(out, coarse, dst=out)  # inf or NaN where d = 0
    cv2.patchNaNs(out, 1e30)
    cap = MAX_SLOPE_TAN * gain
    cv2.threshold(out, cap, cap, cv2.THRESH_TRUNC, dst=out)
    # numpy, not cv2, for arithmetic with scalars: cv2 takes a one-element array for a scalar itself
    np.multiply(out, out, out=out)
    out += np.float32(1.0)
    np.sqrt(out, out=out)
    if out.shape != (h, w):
        out = cv2.resize(out, (out.shape[1] * 2, out.shape[0] * 2), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return out


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
    z, surface = _check_depth(depth_true_mm)
    shape = z.shape
    fb = np.float32(focal_px * p.baseline_mm)
    inv_step = np.float32(1.0 / p.disparity_step_px) if p.disparity_step_px > 0 else np.float32(1.0)

    # Ideal disparity (px), 0 where there is no surface, and the column it lands on in the right image (a
    # pixel without surface lands on its own column and so can never hide one to its left).
    with np.errstate(divide="ignore"):
        disparity = np.divide(fb, z)
    disparity = cv2.threshold(disparity, 1e30, 0.0, cv2.THRESH_TOZERO_INV)[1]  # f B / 0 = inf -> 0
    invalid = ~surface
    x_r = np.arange(shape[1], dtype=np.float32)[None, :] - disparity
    shadow = None
    if p.occlusion:
        shadow = _occluded(x_r, 0.0, _disparity_span(disparity, surface))
        if p.occlusion_margin_px > 0:  # widen leftwards: pixel u joins if any of u..u+margin is shadow
            kernel = np.ones((1, int(p.occlusion_margin_px) + 1), np.uint8)
            shadow = cv2.dilate(shadow.view(np.uint8), kernel, anchor=(0, 0)).view(bool)

    # Disparity noise (in ASIC steps): a spatially correlated field, plus an optional white share, scaled
    # up on oblique surfaces; then the disparity in steps, rounded.
    field = None
    noise = None
    if p.subpixel_px > 0:
        corr_share = math.sqrt(1.0 - p.white_noise_fraction)
        white_share = math.sqrt(p.white_noise_fraction)
        if corr_share > 0:
            root_aspect = math.sqrt(p.noise_correlation_aspect)
            sigmas = (p.noise_correlation_px * root_aspect, p.noise_correlation_px / root_aspect)
            field = correlated_field(rng, shape, sigmas)
            noise = field * np.float32(p.subpixel_px * corr_share * inv_step)
        if white_share > 0:
            white = rng.standard_normal(shape, dtype=np.float32)
            white *= np.float32(p.subpixel_px * white_share * inv_step)
            noise = white if noise is None else noise + white
        if p.slope_noise_gain > 0:
            noise *= _slope_noise_factor(disparity, focal_px, p.slope_noise_gain)
    steps = disparity * inv_step
    if noise is not None:
        steps += noise
    if p.disparity_step_px > 0:
        np.rint(steps, out=steps)
    lo = fb * inv_step / np.float32(p.max_depth_mm)
    hi = np.float32(p.max_disparity_px) * inv_step
    invalid |= ~(steps >= lo) | (steps > hi)

    # Left border band: columns whose match would lie left of the right image, plus the ASIC's margin.
    if p.occlusion:
        if p.left_band_jitter_px > 0:
            jitter = field if field is not None else correlated_field(rng, shape, 4.0)
            x_r += np.float32(p.left_band_jitter_px) * jitter
        invalid |= x_r < np.float32(p.left_band_extra_px)

    # Shadows, clumps next to shadows, clumps elsewhere (the clumps are the upper tail of one more
    # random field, thresholded lower near shadows), and isolated pixels.
    edge_rate = p.edge_dropout_rate if shadow is not None else 0.0
    blobs = None
    if p.blob_rate > 0 or edge_rate > 0:
        blobs = correlated_field(rng, shape, p.blob_size_px)
    if shadow is not None:
        invalid |= shadow
        if edge_rate > 0:
            r = int(p.edge_width_px)
            near = shadow.view(np.uint8)
            if r:
                near = cv2.dilate(near, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
            invalid |= near.view(bool) & (blobs > np.float32(_upper_quantile(edge_rate)))
    if p.blob_rate > 0:
        invalid |= blobs > np.float32(_upper_quantile(p.blob_rate))
    if p.dropout_rate > 0:  # Bernoulli per pixel, drawn as a count and distinct positions (cheap)
        n_drop = int(rng.binomial(invalid.size, p.dropout_rate))
        invalid.ravel()[rng.choice(invalid.size, size=n_drop, replace=False)] = True

    np.fmax(steps, lo, out=steps)  # keeps the division finite (NaN too); such pixels are already invalid
    z_out = np.divide(fb * inv_step / np.float32(p.depth_unit_mm), steps, out=steps)
    if p.noise_floor_mm > 0:
        z_out += np.float32(p.noise_floor_mm / p.depth_unit_mm) * rng.standard_normal(shape, dtype=np.float32)
        invalid |= ~(z_out > 0.5) | (z_out > np.float32(p.max_depth_mm / p.depth_unit_mm))
    z_out *= ~invalid
    np.rint(z_out, out=z_out)
    return z_out.astype(np.uint16)  # <= max_depth_mm / depth_unit_mm <= 65535 (checked in the params)


def dark_surface_dropouts(
    depth: np.ndarray,
    albedo: np.ndarray,
    rng: np.random.Generator,
    *,
    dark_albedo: float = 0.15,
    max_rate: float = 0.3,
    blob_size_px: float = 2.0,
) -> np.ndarray:
    """Invalidate depth on dark surfaces, in clumps: a black mattress or dark clothing returns little of
    the projector's infrared pattern, so the stereo match fails more often there (the share of lost
    pixels grows linearly from 0 at ``dark_albedo`` to ``max_rate`` at albedo 0).

    Args:
        depth: ``(H, W)`` uint16 depth (0 = invalid), e.g. from :func:`apply_depth_noise`.
        albedo: ``(H, W)`` mean albedo of what each pixel sees (0 where nothing).
        rng: random generator.
        dark_albedo: albedo below which depth starts to drop out.
        max_rate: share of pixels lost on a black surface.
        blob_size_px: Gaussian sigma (pixels) of the clumps.

    Returns:
        A copy of ``depth`` with the dropouts set to 0.
    """
    rate = np.clip((dark_albedo - np.asarray(albedo, np.float32)) / dark_albedo, 0.0, 1.0) * max_rate
    field = correlated_field(rng, depth.shape, blob_size_px)
    out = depth.copy()
    out[_phi(field) < rate] = 0  # the field's CDF is uniform in [0, 1]
    return out


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (vectorised, float32; Abramowitz-Stegun 7.1.26, error < 1.5e-7)."""
    z = np.abs(x).astype(np.float64) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return (0.5 * (1.0 + np.sign(x) * erf)).astype(np.float32)


def _upper_quantile(rate: float) -> float:
    """Threshold a standard normal exceeds with probability ``rate``."""
    if rate <= 0:
        return math.inf
    if rate >= 1:
        return -math.inf
    return statistics.NormalDist().inv_cdf(1.0 - rate)


#: Intel RealSense D435 (baseline 50 mm), calibrated against the real D435 recording (640x480, f = 390.4 px)
#: with ``python -m positioning.evaluation.noise_calibration``; see the module docstring for the numbers.
D435_NOISE = DepthNoiseParams(
    baseline_mm=50.0,  # D400 datasheet: D435 stereo baseline 50 mm
    subpixel_px=0.138,  # calibrated: far-wall plane-fit sigma at 9/15/31 px windows (3.9/7.9/15.0 mm real)
    noise_correlation_px=4.75,  # calibrated: those three windows + residual 1/e correlation length 3.7 px
    noise_correlation_aspect=1.45,  # calibrated: residual correlation at 4/8 px: u 0.79/0.38, v 0.59/-0.06
    white_noise_fraction=0.0,  # calibrated: any white share makes the 9 px window too noisy
    slope_noise_gain=0.3,  # calibrated: sigma/z^2 on the oblique side wall is 1.3x the frontal wall's
    noise_floor_mm=0.0,
    disparity_step_px=1.0 / 32.0,  # observed: real far-wall depths step by z^2/(32 f B) (4.6 mm at 1.7 m)
    depth_unit_mm=1.0,  # the recording's depth units: 0.001 m
    max_disparity_px=126.0,  # D400 datasheet: Min-Z = focal_px * baseline / 126 (disparity shift 0)
    max_depth_mm=10_000.0,  # product specification: range up to about 10 m
    occlusion=True,  # observed: shadows left of near objects, ~f*B*(1/z_near - 1/z_far) px wide
    occlusion_margin_px=3,  # calibrated: real shadows reach 1-3 px further left than the geometric ones
    left_band_extra_px=11.0,  # calibrated: real left band 23 px at z = 1.7 m where f*B/z = 11.6 px
    left_band_jitter_px=1.5,  # calibrated: spread of the real band edge over rows, 1.7 px RMS
    edge_width_px=1,  # calibrated with edge_dropout_rate: real shadows have fairly clean borders
    edge_dropout_rate=0.1,
    blob_rate=0.0022,  # calibrated: ~145 holes of median 2 px away from edges (283 holes in all)
    blob_size_px=1.2,
    dropout_rate=2e-4,  # calibrated: share of single-pixel holes (36 %)
)

#: Intel RealSense D455: baseline 95 mm (datasheet), everything else as calibrated for the D435 (the
#: same imagers and ASIC family); its Min-Z follows from the baseline (f * 95 / 126, about 0.32 m at
#: 848x480). Not calibrated against a D455 recording.
D455_NOISE = dataclasses.replace(D435_NOISE, baseline_mm=95.0)

#: Intel RealSense D415: baseline 55 mm and a narrower field of view (65 x 40 deg, so a longer focal
#: length: about twice the D435's depth precision at a given distance, as REFERENCES.md says), everything
#: else as calibrated for the D435. Not calibrated against a D415 recording.
D415_NOISE = dataclasses.replace(D435_NOISE, baseline_mm=55.0)

#: Noise preset of each camera model.
NOISE_PRESETS: dict[str, DepthNoiseParams] = {"D435": D435_NOISE, "D455": D455_NOISE, "D415": D415_NOISE}
