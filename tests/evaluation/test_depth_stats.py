"""Tests of the depth-image statistics (positioning.evaluation.depth_stats), on hand-made images and on the
real D435 recording against its simulated twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from positioning.evaluation.depth_stats import (
    DepthStats,
    depth_statistics,
    discontinuity_mask,
    left_band_mask,
    local_plane_noise,
)

FOCAL_PX = 390.4
H, W = 120, 200  # W != H


def plane(depth_mm: float = 1500.0, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.full(shape, depth_mm, dtype=np.float64)


# -- holes -------------------------------------------------------------------------------------------------
def test_known_holes() -> None:
    depth = plane().astype(np.uint16)
    depth[10, 50] = 0  # 1 px
    depth[30:32, 80:82] = 0  # 4 px
    depth[60:63, 120:123] = 0  # 9 px
    depth[90, 150] = 0  # 1 px
    s = depth_statistics(depth, FOCAL_PX)
    assert s.hole_count == 4
    assert s.hole_area_median_px == 2.5
    assert s.hole_single_pixel_fraction == 0.5
    assert s.hole_area_p95_px == pytest.approx(np.percentile([1, 1, 4, 9], 95))
    assert s.valid_fraction == pytest.approx(1 - 15 / (H * W))
    assert s.holes_per_mpx == pytest.approx(4 / (H * W) * 1e6)
    assert s.left_band_px == 0
    assert (s.height, s.width) == (H, W)


def test_diagonal_pixels_are_one_hole() -> None:
    depth = plane().astype(np.uint16)
    depth[20, 20] = depth[21, 21] = 0  # 8-connected
    assert depth_statistics(depth, FOCAL_PX).hole_count == 1


def test_left_band_is_measured_and_not_a_hole() -> None:
    depth = plane().astype(np.uint16)
    depth[:, :7] = 0
    depth[::2, 7] = 0  # ragged edge: every other row one column wider
    depth[50, 100] = 0
    s = depth_statistics(depth, FOCAL_PX)
    assert s.left_band_px == 7.5  # median of 7 and 8
    assert s.hole_count == 1
    mask = left_band_mask(depth > 0)
    assert mask[:, :7].all() and mask[0, 7] and not mask[1, 7] and not mask[50, 100]


def test_nan_and_zero_are_invalid() -> None:
    depth = plane()
    depth[5, 5] = np.nan
    depth[50, 50] = 0.0
    s = depth_statistics(depth, FOCAL_PX)
    assert s.hole_count == 2
    assert s.valid_fraction == pytest.approx(1 - 2 / (H * W))


def test_no_holes_gives_nan_distribution() -> None:
    s = depth_statistics(plane(), FOCAL_PX)
    assert s.hole_count == 0
    assert np.isnan(s.hole_area_median_px) and np.isnan(s.hole_single_pixel_fraction)
    assert s.valid_fraction == 1.0


# -- edges -------------------------------------------------------------------------------------------------
def test_invalid_pixels_at_a_step_count_as_near_edge() -> None:
    depth = plane(2000.0)
    depth[:, 100:] = 1000.0  # near surface on the right
    depth[:, 93:100] = 0  # occlusion shadow left of it
    depth[30, 30] = 0  # one hole far from the edge
    s = depth_statistics(depth, FOCAL_PX, edge_radius_px=8)
    assert s.invalid_near_edge_fraction == pytest.approx(7 * H / (7 * H + 1))
    assert s.invalid_rate_near_edge == pytest.approx(7 / 18)
    assert s.invalid_rate_elsewhere == pytest.approx(1 / (H * W - 18 * H))
    # The hole is filled with the farther depth, so the step lies between columns 99 and 100.
    near = discontinuity_mask(depth, radius_px=8)
    assert near[:, 91:109].all() and not near[:, :91].any() and not near[:, 109:].any()


def test_steep_smooth_surface_is_not_an_edge() -> None:
    u = np.arange(W, dtype=np.float64)
    depth = np.tile(600.0 + 10.0 * u, (H, 1))  # 10 mm per pixel: oblique, but continuous
    assert not discontinuity_mask(depth).any()


# -- noise -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth_mm", [800.0, 2000.0])
def test_white_noise_sigma(depth_mm: float) -> None:
    rng = np.random.default_rng(0)
    depth = depth_mm + rng.normal(0.0, 2.0, (H, W))
    s = depth_statistics(depth, FOCAL_PX, baseline_mm=50.0)
    assert s.noise_sigma_mm == pytest.approx(2.0, rel=0.05)
    assert s.noise_sigma_at_1m_mm == pytest.approx(2.0 / (depth_mm / 1000) ** 2, rel=0.05)
    assert s.subpixel_rms_px == pytest.approx(2.0 * FOCAL_PX * 50.0 / depth_mm**2, rel=0.05)
    assert s.correlation_length_px < 1.0
    assert s.noise_depth_mm == pytest.approx(depth_mm, abs=1.0)
    assert s.noise_tiles == (H // 15) * (W // 15)


def test_plane_tilt_is_removed() -> None:
    rng = np.random.default_rng(1)
    vv, uu = np.mgrid[0:H, 0:W]
    depth = 1500.0 + 3.0 * uu - 2.0 * vv + rng.normal(0.0, 1.0, (H, W))  # lopsided tilt
    assert depth_statistics(depth, FOCAL_PX).noise_sigma_mm == pytest.approx(1.0, rel=0.06)


def test_outliers_are_rejected() -> None:
    rng = np.random.default_rng(2)
    depth = 1500.0 + rng.normal(0.0, 1.0, (H, W))
    depth[rng.random((H, W)) < 0.01] += 25.0  # outliers (below the 40 mm step that counts as an edge)
    assert depth_statistics(depth, FOCAL_PX).noise_sigma_mm == pytest.approx(1.0, rel=0.1)


def test_correlated_noise_has_longer_correlation_and_direction() -> None:
    rng = np.random.default_rng(3)
    white = rng.normal(0.0, 1.0, (240, 400)).astype(np.float32)
    field = cv2.GaussianBlur(white, (0, 0), sigmaX=3.0, sigmaY=1.5)
    depth = 1500.0 + 5.0 * field / field.std()
    s = depth_statistics(depth, FOCAL_PX)
    assert s.correlation_length_px > 1.5
    assert s.correlation_length_u_px > 1.5 * s.correlation_length_v_px


def test_noise_by_depth_bins() -> None:
    rng = np.random.default_rng(4)
    depth = np.empty((H, W))
    depth[:, : W // 2] = 1100.0 + rng.normal(0.0, 1.21, (H, W // 2))
    depth[:, W // 2 :] = 2200.0 + rng.normal(0.0, 4.84, (H, W - W // 2))
    s = depth_statistics(depth, FOCAL_PX)
    assert [round(b.depth_mm) for b in s.noise_by_depth] == [1100, 2200]
    assert s.noise_by_depth[0].sigma_mm == pytest.approx(1.21, rel=0.1)
    assert s.noise_by_depth[1].sigma_mm == pytest.approx(4.84, rel=0.1)
    # 15 px tiles; those within 8 px of the step (columns 91..108: tiles 90-104 and 105-119) are dropped.
    assert [b.tiles for b in s.noise_by_depth] == [8 * 6, 8 * 5]
    assert s.noise_sigma_at_1m_mm == pytest.approx(1.0, rel=0.1)  # both are 1 mm at 1 m


def test_local_plane_noise_skips_sparse_and_excluded_tiles() -> None:
    depth = plane()
    depth[:15, :15] = 0  # one empty tile
    exclude = np.zeros((H, W), bool)
    exclude[20, 20] = True  # one excluded tile
    lp = local_plane_noise(depth, window_px=15, exclude=exclude)
    assert len(lp.depth_mm) == (H // 15) * (W // 15) - 2
    assert np.allclose(lp.sigma_mm, 0.0)


def test_as_dict_is_plain() -> None:
    d = depth_statistics(plane(), FOCAL_PX).as_dict()
    assert d["valid_fraction"] == 1.0
    assert isinstance(d["noise_by_depth"], list) and isinstance(d["noise_by_depth"][0], dict)


# -- input checks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("depth", "focal", "match"),
    [
        (np.ones((4, 5, 3)), FOCAL_PX, r"\(H, W\) array, got shape \(4, 5, 3\)"),
        (np.ones((0, 5)), FOCAL_PX, "non-empty"),
        (np.array([["a"]]), FOCAL_PX, "integer or float dtype"),
        (np.array([[1.0, np.inf]]), FOCAL_PX, "inf"),
        (np.array([[1.0, -5.0]]), FOCAL_PX, "minimum -5"),
        (plane(), 0.0, "focal_px must be a positive finite number, got 0.0"),
        (plane(), float("nan"), "focal_px must be a positive"),
    ],
)
def test_invalid_inputs_raise(depth: np.ndarray, focal: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        depth_statistics(depth, focal)


def test_invalid_baseline_raises() -> None:
    with pytest.raises(ValueError, match="baseline_mm must be a positive finite number or None, got -1"):
        depth_statistics(plane(), FOCAL_PX, baseline_mm=-1.0)


# -- the real recording against its simulated twin ---------------------------------------------------------
@pytest.fixture(scope="module")
def comparison(real_d435_bag: Path) -> dict[str, Any]:
    from positioning.evaluation.noise_calibration import compare_noise_to_reference

    return compare_noise_to_reference(real_d435_bag, seed=0)


def test_reference_frame_loads(real_d435_bag: Path) -> None:
    from positioning.evaluation.noise_calibration import load_reference_depth

    depth_mm, focal_px = load_reference_depth(real_d435_bag)
    assert depth_mm.shape == (480, 640) and depth_mm.dtype == np.uint16
    assert focal_px == pytest.approx(390.43, abs=0.01)
    assert 0.9 < np.count_nonzero(depth_mm) / depth_mm.size < 0.96
    assert 1400 < np.median(depth_mm[depth_mm > 0]) < 1550


def test_real_frame_statistics(comparison: dict[str, Any]) -> None:
    real = comparison["real"]
    # The reference figures this calibration is built on (if these move, the reader changed).
    assert real["valid_fraction"] == pytest.approx(0.933, abs=0.002)
    assert real["left_band_px"] == 23
    assert real["hole_count"] == 283
    assert real["noise_sigma_at_1m_mm"] == pytest.approx(2.89, abs=0.05)


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("valid_fraction", 0.01),
        ("left_band_px", 0.1),
        ("hole_count", 0.25),
        ("invalid_rate_near_edge", 0.2),
        ("noise_sigma_mm", 0.15),
        ("noise_sigma_at_1m_mm", 0.1),
        ("subpixel_rms_px", 0.1),
        ("correlation_length_px", 0.15),
        ("correlation_length_u_px", 0.2),
        ("correlation_length_v_px", 0.2),
        ("far_wall_sigma_w9_mm", 0.1),
        ("far_wall_sigma_w15_mm", 0.1),
        ("far_wall_sigma_w31_mm", 0.1),
    ],
)
def test_simulated_twin_matches_real(comparison: dict[str, Any], name: str, rel: float) -> None:
    assert comparison["sim"][name] == pytest.approx(comparison["real"][name], rel=rel)


def test_simulated_twin_hole_shapes(comparison: dict[str, Any]) -> None:
    real, sim = comparison["real"], comparison["sim"]
    assert sim["hole_area_median_px"] == real["hole_area_median_px"]
    assert abs(sim["hole_single_pixel_fraction"] - real["hole_single_pixel_fraction"]) < 0.1
    assert sim["invalid_near_edge_fraction"] > 0.8  # most holes sit at depth edges, as in the real frame
    assert sim["hole_area_p95_px"] < 2.5 * real["hole_area_p95_px"]


def test_depth_stats_type(comparison: dict[str, Any]) -> None:
    assert set(DepthStats.__dataclass_fields__) - {"height", "width", "noise_by_depth"} <= set(
        comparison["real"]
    )
