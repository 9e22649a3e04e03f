"""Dose model: the published points (Li et al. 2007; +22 % noise at 60 mm) and the scan-length model."""

from __future__ import annotations

import math

import pytest

from positioning.planning.dose import centering_impact, noise_increase, overscan_impact, surface_dose_increase


@pytest.mark.parametrize(
    ("offset_mm", "mid", "low", "high"),
    [(0.0, 0.0, 0.0, 0.0), (-30.0, 15.0, 12.0, 18.0), (-60.0, 45.0, 41.0, 49.0), (-15.0, 7.5, 6.0, 9.0)],
)
def test_surface_dose_at_the_published_points(offset_mm: float, mid: float, low: float, high: float) -> None:
    f = surface_dose_increase(offset_mm)
    assert (f.percent, f.low_percent, f.high_percent) == pytest.approx((mid, low, high))
    assert not f.extrapolated


def test_surface_dose_is_symmetric_and_extrapolates() -> None:
    assert surface_dose_increase(30.0).percent == surface_dose_increase(-30.0).percent
    f = surface_dose_increase(-70.0)
    assert f.extrapolated and f.percent == pytest.approx(55.0)


def test_noise() -> None:
    assert noise_increase(-60.0).percent == pytest.approx(22.0)
    assert noise_increase(-30.0).percent == pytest.approx(11.0)
    assert math.isnan(noise_increase(float("nan")).percent)


def test_centering_impact() -> None:
    c = centering_impact(-30.0, 0.0)
    assert c.current_surface_dose.percent == pytest.approx(15.0)
    assert c.corrected_surface_dose.percent == 0.0
    assert c.surface_dose_saved_percent == pytest.approx(100 * (1 - 1 / 1.15))
    assert c.to_json()["assumption"] is None
    assert centering_impact(20.0).to_json()["assumption"]


def test_overscan() -> None:
    o = overscan_impact(340.0, 400.0)
    assert (o.overscan_avoided_mm, o.dlp_saved_percent, o.generic_too_short_mm) == pytest.approx(
        (60.0, 15.0, 0.0)
    )
    o = overscan_impact(450.0, 400.0)
    assert o.overscan_avoided_mm == 0 and o.generic_too_short_mm == 50 and o.dlp_saved_percent < 0
    with pytest.raises(ValueError):
        overscan_impact(0.0, 400.0)
