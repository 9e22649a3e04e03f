"""Tests of the RealSense-like depth noise model (positioning.sim.noise)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from positioning.sim.noise import (
    D435_NOISE,
    D455_NOISE,
    DepthNoiseParams,
    apply_depth_noise,
    correlated_field,
    occlusion_mask,
)

# Lopsided camera: W != H, and a focal length that is not a round number.
FOCAL_PX = 423.7
H, W = 240, 424

#: Geometry only: no noise, no quantisation of the disparity, no dropouts, no extra left margin.
EXACT = DepthNoiseParams(
    subpixel_px=0.0,
    disparity_step_px=0.0,
    left_band_extra_px=0.0,
    left_band_jitter_px=0.0,
    edge_dropout_rate=0.0,
    blob_rate=0.0,
    dropout_rate=0.0,
)
#: Noise only: no occlusion, no dropouts.
NOISE_ONLY = dataclasses.replace(
    D435_NOISE, occlusion=False, edge_dropout_rate=0.0, blob_rate=0.0, dropout_rate=0.0
)


def plane(depth_mm: float, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.full(shape, depth_mm, dtype=np.float64)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- smoke, shapes, determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(480, 848), (240, 424), (37, 53), (1, 7), (9, 1)])
def test_shape_and_dtype(shape: tuple[int, int]) -> None:
    out = apply_depth_noise(plane(1500.0, shape), FOCAL_PX, rng())
    assert out.shape == shape
    assert out.dtype == np.uint16


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32])
def test_accepts_float_and_integer_depth(dtype: type) -> None:
    depth = plane(1500.0).astype(dtype)
    out = apply_depth_noise(depth, FOCAL_PX, rng(3))
    ref = apply_depth_noise(plane(1500.0), FOCAL_PX, rng(3))
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 2), (3, 1)])
def test_tiny_images_regression_cv2_scalar_arrays(shape: tuple[int, int]) -> None:
    # cv2 arithmetic takes a one-element array for a scalar; a 1x1 (or 2x2, halved) image once broke that.
    exact = apply_depth_noise(
        plane(1500.4, shape), FOCAL_PX, rng(), dataclasses.replace(EXACT, occlusion=False)
    )
    assert (exact == 1500).all()
    noisy = apply_depth_noise(plane(1500.0, shape), FOCAL_PX, rng(), NOISE_ONLY).astype(np.float64)
    assert np.all(np.abs(noisy - 1500.0) < 60.0)


def test_deterministic_per_seed() -> None:
    depth = plane(1500.0)
    depth[80:160, 200:300] = 900.0
    a = apply_depth_noise(depth, FOCAL_PX, rng(7))
    b = apply_depth_noise(depth, FOCAL_PX, rng(7))
    c = apply_depth_noise(depth, FOCAL_PX, rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_does_not_modify_input() -> None:
    depth = plane(1500.0)
    depth[0, 0] = np.nan
    before = depth.copy()
    apply_depth_noise(depth, FOCAL_PX, rng())
    np.testing.assert_array_equal(depth, before)


def test_default_params_are_d435() -> None:
    depth = plane(1500.0)
    np.testing.assert_array_equal(
        apply_depth_noise(depth, FOCAL_PX, rng(1)), apply_depth_noise(depth, FOCAL_PX, rng(1), D435_NOISE)
    )


# -- the noise ---------------------------------------------------------------------------------------------
def _sigma_mm(depth_mm: float, params: DepthNoiseParams, seeds: range = range(3)) -> float:
    errors = []
    for s in seeds:
        out = apply_depth_noise(plane(depth_mm, (480, 848)), FOCAL_PX, rng(s), params).astype(np.float64)
        errors.append(out[out > 0] - depth_mm)
    return float(np.std(np.concatenate(errors)))


def test_sigma_grows_with_square_of_depth() -> None:
    s1 = _sigma_mm(1000.0, NOISE_ONLY)
    s2 = _sigma_mm(2000.0, NOISE_ONLY)
    assert 3.6 < s2 / s1 < 4.4, (s1, s2)


@pytest.mark.parametrize("depth_mm", [800.0, 1500.0, 2500.0])
def test_sigma_matches_documented_formula(depth_mm: float) -> None:
    expected = float(NOISE_ONLY.axial_sigma_mm(depth_mm, FOCAL_PX))
    assert _sigma_mm(depth_mm, NOISE_ONLY) == pytest.approx(expected, rel=0.1)


def test_d455_is_less_noisy_by_its_baseline() -> None:
    d455 = dataclasses.replace(D455_NOISE, occlusion=False, edge_dropout_rate=0.0, blob_rate=0.0)
    ratio = _sigma_mm(2000.0, d455) / _sigma_mm(2000.0, NOISE_ONLY)
    assert ratio == pytest.approx(50.0 / 95.0, rel=0.1)


def test_noise_is_unbiased() -> None:
    out = apply_depth_noise(plane(1500.0, (480, 848)), FOCAL_PX, rng(), NOISE_ONLY).astype(np.float64)
    assert abs(out[out > 0].mean() - 1500.0) < 1.0


def test_oblique_surface_is_noisier() -> None:
    # A plane tilted by 60 degrees about the v axis: z grows along u with dz/dx = tan(60 deg).
    params = dataclasses.replace(NOISE_ONLY, slope_noise_gain=1.0)
    u = np.arange(848, dtype=np.float64)
    z0 = 1500.0
    x_over_z = (u - 424.0) / FOCAL_PX
    tilt = np.tan(np.radians(60.0))
    z_row = z0 / (1.0 - tilt * x_over_z)  # intersection of the rays with z = z0 + tilt * x
    keep = (z_row > 1000) & (z_row < 2200)
    depth = np.tile(np.where(keep, z_row, np.nan), (480, 1))
    out = apply_depth_noise(depth, FOCAL_PX, rng(), params).astype(np.float64)
    frontal = apply_depth_noise(depth, FOCAL_PX, rng(), dataclasses.replace(params, slope_noise_gain=0.0))
    inner = np.zeros_like(keep)
    inner[np.flatnonzero(keep)[5:-5]] = True
    sel = (out > 0) & inner[None, :]
    norm = (depth[sel] / 1000.0) ** 2
    ratio = np.std((out[sel] - depth[sel]) / norm) / np.std((frontal[sel] - depth[sel]) / norm)
    assert ratio == pytest.approx(np.sqrt(1.0 + tilt**2), rel=0.1)  # sqrt(1 + (1 * tan 60)^2) = 2


def test_noise_is_spatially_correlated_and_stretched_along_rows() -> None:
    out = apply_depth_noise(plane(2000.0, (480, 848)), FOCAL_PX, rng(), NOISE_ONLY).astype(np.float64)
    err = np.where(out > 0, out - 2000.0, np.nan)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        ok = np.isfinite(a) & np.isfinite(b)
        return float(np.corrcoef(a[ok], b[ok])[0, 1])

    along_u = corr(err[:, :-3], err[:, 3:])
    along_v = corr(err[:-3, :], err[3:, :])
    assert along_u > along_v > 0.5


# -- quantisation ------------------------------------------------------------------------------------------
def test_output_is_rounded_to_whole_millimetres() -> None:
    depth = np.array([[1234.4, 1234.6, 999.7, 2000.3]])
    out = apply_depth_noise(depth, FOCAL_PX, rng(), dataclasses.replace(EXACT, occlusion=False))
    np.testing.assert_array_equal(out, [[1234, 1235, 1000, 2000]])


def test_depth_unit_scales_output() -> None:
    params = dataclasses.replace(EXACT, occlusion=False, depth_unit_mm=2.0)
    out = apply_depth_noise(np.array([[1000.0, 1501.2, 1502.8]]), FOCAL_PX, rng(), params)
    np.testing.assert_array_equal(out, [[500, 751, 751]])


def test_depths_fall_on_disparity_steps() -> None:
    out = apply_depth_noise(plane(2000.0), FOCAL_PX, rng(), NOISE_ONLY)
    values = np.unique(out[out > 0]).astype(np.float64)
    fb = FOCAL_PX * NOISE_ONLY.baseline_mm
    steps = fb / values * 32.0  # disparity in 1/32 px: whole numbers up to the 1 mm rounding of depth
    tolerance = 0.5 * fb * 32.0 / values**2 + 1e-3  # d(steps)/dz * 0.5 mm
    assert np.all(np.abs(steps - np.rint(steps)) <= tolerance)
    assert len(values) < 0.3 * (values.max() - values.min())  # depths skip values: steps of ~6 mm


# -- invalid pixels ----------------------------------------------------------------------------------------
def test_no_surface_stays_invalid() -> None:
    depth = plane(1500.0)
    depth[10:20, 100:140] = np.nan
    depth[50:60, 200:260] = 0.0
    out = apply_depth_noise(depth, FOCAL_PX, rng())
    assert not out[10:20, 100:140].any()
    assert not out[50:60, 200:260].any()


def test_all_nan_gives_all_invalid() -> None:
    out = apply_depth_noise(np.full((20, 30), np.nan), FOCAL_PX, rng())
    assert not out.any()


def test_occlusion_shadow_is_left_of_near_object() -> None:
    # Background at 2000 mm, a near box at 1000 mm in columns 250..349: the right imager (at +u) sees
    # behind the box's LEFT edge, so the shadow is on the left, f*B*(1/1000 - 1/2000) = 10.6 px wide.
    depth = plane(2000.0)
    depth[60:180, 250:350] = 1000.0
    out = apply_depth_noise(depth, FOCAL_PX, rng(), EXACT)
    rows = slice(60, 180)
    shadow_px = FOCAL_PX * 50.0 * (1 / 1000.0 - 1 / 2000.0)
    assert not out[rows, 250 - int(shadow_px) : 250].any()  # shadow: columns 240..249
    assert out[rows, 250 - int(shadow_px) - 1].all()  # just beyond it: valid background
    assert out[rows, 250:360].all()  # the box and the background right of it
    assert out[:60, 100:400].all()  # no shadow above the box


def test_occlusion_shadow_with_default_noise() -> None:
    depth = plane(2000.0)
    depth[60:180, 250:350] = 1000.0
    out = apply_depth_noise(depth, FOCAL_PX, rng(5))
    rows = slice(70, 170)
    assert (out[rows, 240:250] == 0).mean() > 0.9
    assert (out[rows, 350:360] == 0).mean() < 0.1
    assert (out[rows, 270:330] == 0).mean() < 0.05


def test_left_border_band_width() -> None:
    out = apply_depth_noise(plane(2000.0), FOCAL_PX, rng(), EXACT)
    geometric = FOCAL_PX * 50.0 / 2000.0  # 10.6 px: columns 0..10 have no match in the right image
    assert not out[:, : int(np.ceil(geometric))].any()
    assert out[:, int(np.ceil(geometric)) :].all()
    params = dataclasses.replace(EXACT, left_band_extra_px=5)
    wider = apply_depth_noise(plane(2000.0), FOCAL_PX, rng(), params)
    assert not wider[:, : int(np.ceil(geometric + 5))].any()
    assert wider[:, int(np.ceil(geometric + 5)) :].all()


def test_default_left_band_is_about_fb_over_z_plus_margin() -> None:
    out = apply_depth_noise(plane(1700.0, (480, 640)), 390.4, rng())
    first_valid = np.argmax(out > 0, axis=1)
    expected = 390.4 * 50.0 / 1700.0 + D435_NOISE.left_band_extra_px  # 22.5 px (23 px in the real frame)
    assert abs(np.median(first_valid) - expected) <= 1.5


def test_no_band_and_no_shadow_without_occlusion() -> None:
    depth = plane(2000.0)
    depth[60:180, 250:350] = 1000.0
    out = apply_depth_noise(depth, FOCAL_PX, rng(), dataclasses.replace(EXACT, occlusion=False))
    assert out.all()


@pytest.mark.parametrize("rate", [0.002, 0.01, 0.05])
def test_isolated_dropout_rate(rate: float) -> None:
    params = dataclasses.replace(EXACT, occlusion=False, dropout_rate=rate)
    out = apply_depth_noise(plane(1500.0, (480, 848)), FOCAL_PX, rng(), params)
    assert (out == 0).mean() == pytest.approx(rate, rel=0.1)


@pytest.mark.parametrize("rate", [0.005, 0.02])
def test_blob_dropout_rate_and_clumping(rate: float) -> None:
    params = dataclasses.replace(EXACT, occlusion=False, blob_rate=rate, blob_size_px=1.5)
    fractions = [
        (apply_depth_noise(plane(1500.0, (480, 848)), FOCAL_PX, rng(s), params) == 0).mean() for s in range(3)
    ]
    assert np.mean(fractions) == pytest.approx(rate, rel=0.2)
    out = apply_depth_noise(plane(1500.0, (480, 848)), FOCAL_PX, rng(), params)
    hole = out == 0
    # Clumped: a hole pixel's right neighbour is far more often a hole than the rate would make it.
    assert (hole[:, :-1] & hole[:, 1:]).sum() / hole[:, :-1].sum() > 5 * rate


def test_edge_dropouts_stay_next_to_shadows() -> None:
    depth = plane(2000.0)
    depth[60:180, 250:350] = 1000.0
    params = dataclasses.replace(EXACT, edge_width_px=2, edge_dropout_rate=0.5)
    out = apply_depth_noise(depth, FOCAL_PX, rng(), params)
    geometric = apply_depth_noise(depth, FOCAL_PX, rng(), EXACT)
    extra = (out == 0) & (geometric > 0)
    assert extra.any()
    ys, xs = np.nonzero(extra)
    assert ys.min() >= 58 and ys.max() <= 181  # within 2 px of the shadow (rows 60..179, columns 240..249)
    assert xs.min() >= 238 - 1 and xs.max() <= 251


def test_min_z_and_max_depth() -> None:
    params = dataclasses.replace(EXACT, occlusion=False)
    min_z = params.min_depth_mm(FOCAL_PX)  # 423.7 * 50 / 126 = 168 mm
    assert min_z == pytest.approx(FOCAL_PX * 50.0 / 126.0)
    depth = np.array([[min_z * 0.95, min_z * 1.05, 9_000.0, 12_000.0]])
    out = apply_depth_noise(depth, FOCAL_PX, rng(), params)
    assert out[0, 0] == 0 and out[0, 1] > 0 and out[0, 2] == 9000 and out[0, 3] == 0


# -- occlusion_mask and correlated_field ------------------------------------------------------------------
def test_occlusion_mask_pins_the_side() -> None:
    d = np.full((2, 10), 2.0, np.float32)
    d[:, 6:] = 6.0  # near object from column 6: disparity jump of 4 px
    d[1, :] = d[1, ::-1]  # mirrored row: near object on the left, its right edge casts no shadow
    m = occlusion_mask(d)
    assert m[0].astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert not m[1].any()


@pytest.mark.parametrize("width", [2, 3, 4, 5, 6])
def test_occlusion_mask_tiny_rows(width: int) -> None:
    d = np.full((1, width), 1.0, np.float32)
    d[0, -1] = 1.0 + width  # lands at x_r = -2, left of every other pixel's x_r = u - 1 >= -1
    assert occlusion_mask(d)[0].astype(int).tolist() == [1] * (width - 1) + [0]
    d[0, -1] = float(width)  # lands at x_r = -1, level with pixel 0 (a tie: not hidden)
    assert occlusion_mask(d)[0].astype(int).tolist() == [0] + [1] * (width - 2) + [0]


def test_occlusion_mask_fill_and_nan() -> None:
    d = np.full((1, 10), 2.0, np.float32)
    d[0, 6:] = 6.0
    assert occlusion_mask(d, fill_px=2.0)[0].astype(int).tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    d[0, 6:] = np.nan  # no surface occludes nothing
    assert not occlusion_mask(d).any()


@pytest.mark.parametrize("sigma", [0.0, 1.2, 2.0, 4.75, (5.7, 3.9), (0.0, 2.0)])
def test_correlated_field_is_unit_variance(sigma: float | tuple[float, float]) -> None:
    field = np.stack([correlated_field(rng(s), (240, 424), sigma) for s in range(4)])
    assert field.shape == (4, 240, 424) and field.dtype == np.float32
    assert abs(field.mean()) < 0.1
    assert field.std() == pytest.approx(1.0, abs=0.06)


def test_correlated_field_correlation_follows_sigma() -> None:
    field = correlated_field(rng(), (480, 848), (6.0, 3.0))
    lag = 4
    along_u = np.mean(field[:, :-lag] * field[:, lag:]) / field.var()
    along_v = np.mean(field[:-lag] * field[lag:]) / field.var()
    # Gaussian-filtered white noise has correlation exp(-lag^2 / (4 sigma^2)).
    assert along_u == pytest.approx(np.exp(-(lag**2) / (4 * 6.0**2)), abs=0.05)
    assert along_v == pytest.approx(np.exp(-(lag**2) / (4 * 3.0**2)), abs=0.05)


# -- input checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("depth", "match"),
    [
        (np.full((4, 5, 1), 1000.0), "2-D"),
        (np.full(5, 1000.0), "2-D"),
        (np.zeros((0, 5)), "empty"),
        (np.full((4, 5), 1000.0 + 0j), "dtype complex"),
        (np.ones((4, 5), bool), "dtype bool"),
        (np.array([[1000.0, np.inf]]), "inf"),
        (np.array([[1000.0, -np.inf]]), "inf"),
        (np.array([[1000.0, -1.0]]), "minimum -1"),
        ([[1000.0]], "numpy array, got list"),
    ],
)
def test_invalid_depth_raises(depth: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        apply_depth_noise(depth, FOCAL_PX, rng())  # type: ignore[arg-type]


@pytest.mark.parametrize("focal", [0.0, -400.0, float("nan"), float("inf")])
def test_invalid_focal_raises(focal: float) -> None:
    with pytest.raises(ValueError, match="focal_px must be a positive finite number"):
        apply_depth_noise(plane(1000.0), focal, rng())


def test_invalid_rng_and_params_raise() -> None:
    with pytest.raises(ValueError, match=r"numpy\.random\.Generator, got RandomState"):
        apply_depth_noise(plane(1000.0), FOCAL_PX, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="DepthNoiseParams, got dict"):
        apply_depth_noise(plane(1000.0), FOCAL_PX, rng(), {"subpixel_px": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="focal_px must be a number, got str"):
        apply_depth_noise(plane(1000.0), "425", rng())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"baseline_mm": 0.0}, "baseline_mm must be a positive"),
        ({"subpixel_px": -0.1}, "subpixel_px must be a finite number >= 0, got -0.1"),
        ({"dropout_rate": 1.5}, r"dropout_rate must be in \[0, 1\], got 1.5"),
        ({"white_noise_fraction": -0.1}, "white_noise_fraction must be in"),
        ({"edge_width_px": 1.5}, "whole number"),
        ({"noise_correlation_aspect": 0.0}, "noise_correlation_aspect must be a positive"),
        ({"max_depth_mm": 70_000.0}, "must fit z16"),
    ],
)
def test_invalid_params_raise(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DepthNoiseParams(**kwargs)


def test_params_are_frozen_and_keyword_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        D435_NOISE.subpixel_px = 0.2  # type: ignore[misc]
    with pytest.raises(TypeError):
        DepthNoiseParams(50.0)  # type: ignore[misc]


def test_presets() -> None:
    assert D435_NOISE.baseline_mm == 50.0
    assert D455_NOISE.baseline_mm == 95.0
    assert D455_NOISE.min_depth_mm(425.0) > D435_NOISE.min_depth_mm(425.0)
    sigma_1m, sigma_2m = (D435_NOISE.axial_sigma_mm(z, 425.0) for z in (1000.0, 2000.0))
    assert sigma_2m == pytest.approx(4 * sigma_1m)
