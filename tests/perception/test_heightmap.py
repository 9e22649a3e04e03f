"""Body-canonical height maps: heights above the table, head-first / feet-first symmetry, the window."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.perception.heightmap import HeightMapSettings, height_map
from positioning.perception.table import TableEstimate


def _table(top_z_mm: float = -150.0) -> TableEstimate:
    return TableEstimate(
        normal=np.array([0.0, 0.0, 1.0]), offset_mm=-top_z_mm, top_z_mm=top_z_mm, x_min_mm=-250.0,
        x_max_mm=250.0, y_min_mm=-2700.0, y_max_mm=-450.0, y_min_seen=True, y_max_seen=True, inliers=100,
        rms_mm=3.0, area_mm2=1e6, pixels_vu=np.zeros((0, 2), np.int32),
    )  # fmt: skip


def _wedge(top_z_mm: float = -150.0) -> np.ndarray:
    """A body-like wedge: 1000 mm long from y = -1800 to -800, height rising toward +y, off-centre in x."""
    ys = np.arange(-1800.0, -800.0, 2.5) + 1.25
    xs = np.arange(-150.0, 150.0, 2.5) + 1.25 + 40.0
    gx, gy = np.meshgrid(xs, ys)
    h = 100.0 + 0.1 * (gy + 1800.0)  # 100 mm at the low-y end, 200 mm at the high-y end
    return np.column_stack([gx.ravel(), gy.ravel(), (top_z_mm + h).ravel()])


def test_heights_are_above_the_table_and_the_origin_is_the_body_middle() -> None:
    hm = height_map(_wedge(), _table(), superior_sign=1)
    assert hm.height_mm.shape == (256, 72)
    assert hm.origin_y_mm == pytest.approx(-1300.0, abs=5.0)
    assert hm.origin_x_mm == pytest.approx(40.0, abs=2.0)
    occupied = hm.count > 0
    assert occupied.sum() == pytest.approx(100 * 30, rel=0.05)
    # head first: s grows with y, so the high end (200 mm) is at the high rows
    rows = np.nonzero(occupied.any(axis=1))[0]
    lo, hi = hm.height_mm[rows[0]][occupied[rows[0]]], hm.height_mm[rows[-1]][occupied[rows[-1]]]
    assert lo.mean() == pytest.approx(100.5, abs=1.5)
    assert hi.mean() == pytest.approx(199.5, abs=1.5)
    assert np.all(hm.height_mm[~occupied] == 0)
    # s and y convert both ways
    assert hm.y_of_s(hm.s_of_y(-1000.0)) == pytest.approx(-1000.0)
    assert hm.s_of_y(-800.0) == pytest.approx(500.0, abs=5.0)


def test_feet_first_is_head_first_turned_half_round() -> None:
    pts = _wedge()
    turned = pts * np.array([-1.0, -1.0, 1.0]) + np.array([0.0, -2600.0, 0.0])  # 180 deg about z
    a = height_map(pts, _table(), superior_sign=1)
    b = height_map(turned, _table(), superior_sign=-1)
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_allclose(a.height_mm, b.height_mm, atol=1e-3)
    assert b.s_of_y(-1800.0 * -1 - 2600.0) == pytest.approx(a.s_of_y(-1800.0))


def test_a_tilted_table_counts_heights_along_its_normal() -> None:
    t = _table()
    n = np.array([0.0, np.sin(0.02), np.cos(0.02)])
    tilted = TableEstimate(**{**t.__dict__, "normal": n, "offset_mm": 150.0 * n[2]})
    pts = _wedge()
    hm = height_map(pts, tilted, superior_sign=1)
    occ = hm.count > 0
    expected = (pts @ n + tilted.offset_mm).mean()
    assert hm.height_mm[occ].mean() == pytest.approx(expected, abs=3.0)


def test_points_outside_the_window_are_dropped() -> None:
    pts = np.vstack([_wedge(), [[40.0, -1300.0 + 5000.0, 0.0]], [[2000.0, -1300.0, 0.0]]])
    hm = height_map(pts, _table(), superior_sign=1)
    assert hm.count.sum() == len(_wedge())  # stray points neither move the origin nor enter the map
    assert hm.origin_y_mm == pytest.approx(-1300.0, abs=5.0)
    small = height_map(_wedge(), _table(), superior_sign=1, settings=HeightMapSettings(rows=64, cols=16))
    assert small.count.sum() < len(_wedge()) and small.height_mm.shape == (64, 16)


@pytest.mark.parametrize("sign", [0, 2])
def test_bad_sign_is_refused(sign: int) -> None:
    with pytest.raises(ValueError, match="superior_sign"):
        height_map(_wedge(), _table(), superior_sign=sign)


def test_no_points_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs patient points"):
        height_map(np.zeros((0, 3)), _table(), superior_sign=1)
