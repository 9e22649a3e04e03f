"""Tests of positioning.perception.profile: the body surface profile along y.

The synthetic pin is a half cylinder lying along y off the scanner axis; the simulated check compares the
profile with the truth cross-sections (``FrameTruth.cross_sections``, evaluation only).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from positioning.perception.profile import ProfileSettings, SurfaceProfile, surface_profile
from positioning.perception.segmentation import segment_frame
from positioning.perception.table import TableEstimate

TABLE = TableEstimate(
    normal=np.array([0.0, 0.0, 1.0]),
    offset_mm=150.0,  # top at z = -150
    top_z_mm=-150.0,
    x_min_mm=-190.0,
    x_max_mm=270.0,
    y_min_mm=-2400.0,
    y_max_mm=-600.0,
    y_min_seen=True,
    y_max_seen=True,
    inliers=1000,
    rms_mm=10.0,
    area_mm2=460.0 * 1800.0,
    pixels_vu=np.zeros((0, 2), np.int32),
)

X0_MM, R_MM = 60.0, 150.0  # cylinder axis at x = +60, z = -150 (on the table top), radius 150


def _half_cylinder(y0: float = -1500.0, y1: float = -1000.0, step: float = 2.0) -> np.ndarray:
    """Upper half of the cylinder, sampled on a plan-view grid (as a camera straight above sees it)."""
    xs = np.arange(X0_MM - R_MM, X0_MM + R_MM + 1e-9, step)
    ys = np.arange(y0, y1, step) + step / 2
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    Z = -150.0 + np.sqrt(np.clip(R_MM**2 - (X - X0_MM) ** 2, 0.0, None))
    return np.stack([X.ravel(), Y.ravel(), Z.ravel()], axis=1)


def test_half_cylinder_pins():
    prof = surface_profile(_half_cylinder(), TABLE, settings=ProfileSettings(smoothing_mm=0.0))
    assert isinstance(prof, SurfaceProfile) and len(prof) == 50
    np.testing.assert_allclose(prof.y_mm, np.arange(-1495.0, -1000.0, 10.0))
    assert prof.valid.all() and np.all(prof.count == 151 * 5)
    np.testing.assert_allclose(prof.top_z_max_mm, 0.0, atol=1e-9)
    np.testing.assert_allclose(prof.height_max_mm, R_MM, atol=1e-9)
    np.testing.assert_allclose(prof.x_min_mm, X0_MM - R_MM)
    np.testing.assert_allclose(prof.x_max_mm, X0_MM + R_MM)
    np.testing.assert_allclose(prof.width_mm, 2 * R_MM)
    np.testing.assert_allclose(prof.midline_x_mm, X0_MM)  # the off-axis centre pins the x sign
    np.testing.assert_allclose(prof.median_x_mm, X0_MM, atol=1e-9)
    np.testing.assert_allclose(prof.table_z_mm, -150.0)
    # unsmoothed, the raster top is the mean z of the 5 mm cell at the apex: within 0.1 mm of it
    np.testing.assert_allclose(prof.top_z_mm, 0.0, atol=0.1)
    # heights h = sqrt(R^2 - (x - x0)^2), x uniform: P(h > t) = sqrt(1 - (t / R)^2) = 0.05 at the p95
    expected_p95 = -150.0 + R_MM * np.sqrt(1 - 0.05**2)
    np.testing.assert_allclose(prof.top_z_p95_mm, expected_p95, atol=0.5)
    assert not prof.top_z_mm.flags.writeable


def test_smoothing_lowers_a_curved_apex_only_a_little():
    prof = surface_profile(_half_cylinder(), TABLE)  # default 20 mm smoothing
    inner = prof.valid & (prof.y_mm > -1440) & (prof.y_mm < -1060)  # away from the ends
    # sigma^2 / (2 R) = 400 / 300 = 1.3 mm at the apex of a radius-150 mm cylinder
    np.testing.assert_allclose(prof.top_z_mm[inner], -400.0 / 300.0, atol=0.6)
    np.testing.assert_allclose(prof.height_mm[inner], R_MM - 400.0 / 300.0, atol=0.6)


def test_slices_line_up_across_frames_and_respect_y_range():
    pts = _half_cylinder(-1503.0, -1001.0)
    prof = surface_profile(pts, TABLE)
    assert np.allclose(np.mod(prof.y_mm - 5.0, 10.0), 0.0)  # centres at multiples of 10 plus 5
    part = surface_profile(pts, TABLE, y_range_mm=(-1300.0, -1200.0))
    np.testing.assert_allclose(part.y_mm, np.arange(-1295.0, -1195.0, 10.0))
    np.testing.assert_allclose(part.top_z_max_mm[:-1], 0.0, atol=1e-9)
    np.testing.assert_allclose(part.at(-1250.0, "x_min_mm"), X0_MM - R_MM)
    assert np.isnan(part.at(-2000.0))


def test_sparse_and_empty():
    pts = _half_cylinder()
    prof = surface_profile(pts[::400], TABLE, settings=ProfileSettings(min_points=3))
    assert np.any(~prof.valid) and np.all(np.isnan(prof.width_mm[~prof.valid]))
    assert np.all(prof.count[~prof.valid] < 3)
    empty = surface_profile(np.zeros((0, 3)), TABLE)
    assert len(empty) == 0 and empty.count.dtype == np.int64
    blank = surface_profile(np.zeros((0, 3)), TABLE, y_range_mm=(-100.0, 0.0))
    assert len(blank) >= 10 and not blank.valid.any()


@pytest.mark.parametrize(
    ("points", "kwargs", "match"),
    [
        (np.zeros((5, 2)), {}, r"\(N, 3\)"),
        (np.array([[0.0, 0.0, np.nan]]), {}, "finite"),
        (np.zeros((5, 3)), {"y_range_mm": (10.0, 0.0)}, "y_range_mm"),
    ],
)
def test_invalid_inputs(points, kwargs, match):
    with pytest.raises(ValueError, match=match):
        surface_profile(points, TABLE, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"slice_mm": 0.0}, "slice_mm"),
        ({"slice_mm": 12.0, "grid_mm": 5.0}, "multiple"),
        ({"top_quantile": 0.2}, "top_quantile"),
        ({"lateral_quantile": 0.5}, "lateral_quantile"),
        ({"min_points": 0}, "min_points"),
    ],
)
def test_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProfileSettings(**kwargs)


# ------------------------------------------------------------------------------------- simulated frames


@pytest.mark.parametrize("scenario", ["hfs-arms-up", "off-centre"])
def test_profile_against_truth_cross_sections(sim_frame, scenario):
    f = sim_frame(scenario)
    table, seg = segment_frame(f.frame, f.calibration)
    prof = surface_profile(seg.points_mm, table)
    cs = f.truth.cross_sections
    assert cs is not None
    seen = prof.valid & (prof.count >= 20)
    assert np.count_nonzero(seen) > 100

    def error(field: str, truth_field: str) -> np.ndarray:
        t = np.interp(prof.y_mm, cs.y_mm, getattr(cs, truth_field), left=np.nan, right=np.nan)
        e = getattr(prof, field) - t
        return e[seen & np.isfinite(e)]

    top = error("top_z_mm", "z_max_mm")
    # single noisy frame (D435 noise about 20 mm at 1.8 m): a few mm of bias, under 12 mm typical error
    assert abs(np.median(top)) < 8.0 and np.median(np.abs(top)) < 12.0
    raw = error("top_z_max_mm", "z_max_mm")
    assert np.median(raw) > np.median(top)  # the raw maximum is biased up by the noise
    assert np.median(np.abs(error("x_min_mm", "x_min_mm"))) < 8.0
    assert np.median(np.abs(error("x_max_mm", "x_max_mm"))) < 8.0
    assert np.all(prof.height_mm[seen] > 0) and np.nanmax(prof.height_mm) < 500.0


def test_profile_settings_change_the_slices(sim_frame):
    f = sim_frame("hfs-arms-up")
    table, seg = segment_frame(f.frame, f.calibration)
    coarse = surface_profile(
        seg.points_mm, table, settings=dataclasses.replace(ProfileSettings(), slice_mm=20.0)
    )
    fine = surface_profile(seg.points_mm, table)
    assert len(coarse) == pytest.approx(len(fine) / 2, abs=1)


def test_support_dip_beside_the_body():
    """Soft foam pulled down 12 mm around a body lying in it reads as a dip of -12 mm; a firm pad as none."""
    from positioning.perception.profile import support_dip_mm

    rng = np.random.default_rng(0)
    body = np.c_[rng.uniform(-150, 150, 4000), rng.uniform(-1800, -800, 4000), rng.uniform(-50, 100, 4000)]
    xs, ys = np.meshgrid(np.arange(-240, 241, 10.0), np.arange(-2000, -600, 10.0))
    mattress = np.c_[xs.ravel(), ys.ravel(), np.full(xs.size, -150.0)]
    outside = (np.abs(mattress[:, 0]) > 150) | (mattress[:, 1] < -1800) | (mattress[:, 1] > -800)
    mattress = mattress[outside]
    near = (np.abs(mattress[:, 0]) < 230) & (mattress[:, 1] > -1880) & (mattress[:, 1] < -720)
    soft = mattress.copy()
    soft[near, 2] -= 12.0
    assert support_dip_mm(np.r_[soft, body], body, TABLE) == pytest.approx(-12.0, abs=0.5)
    assert support_dip_mm(np.r_[mattress, body], body, TABLE) == pytest.approx(0.0, abs=0.5)
    assert np.isnan(support_dip_mm(body, body[:5], TABLE))
