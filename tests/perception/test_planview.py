"""The plan view: which cell a scanner point falls in, what the cell keeps, and where the grid sits."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.perception.planview import (
    INPUT_CHANNELS,
    PlanViewSettings,
    input_planes,
    plan_view,
    scene_centre_y_mm,
)

SMALL = PlanViewSettings(cell_mm=20.0, rows=32, cols=16)


def test_cell_convention_pins():
    # lopsided on purpose: x off the axis, y off the centre, two heights in one cell
    pts = np.array([[-150.0, -1290.0, -200.0], [-141.0, -1281.0, -120.0], [130.0, -1000.0, 50.0]])
    pv = plan_view(pts, SMALL, centre_y_mm=-1200.0)
    assert pv.origin_mm == (-160.0, -1520.0)  # 16 x 20 mm across x = 0, 32 x 20 mm about y = -1200
    r, c = pv.cell_of(pts[:, 0], pts[:, 1])
    assert (r[0], c[0]) == (11, 0) and (r[1], c[1]) == (11, 0) and (r[2], c[2]) == (26, 14)
    assert pv.top_z_mm[11, 0] == -120.0 and pv.bottom_z_mm[11, 0] == -200.0 and pv.count[11, 0] == 2
    assert np.isnan(pv.top_z_mm[0, 0]) and pv.count.sum() == 3
    x, y = pv.xy_of(np.array([11]), np.array([0]))
    assert (x[0], y[0]) == (-150.0, -1290.0)  # the centre of cell (11, 0)
    np.testing.assert_array_equal(pv.lookup(pv.count, pts), [2, 2, 1])


def test_points_outside_the_grid_and_nan_are_ignored():
    pts = np.array([[5000.0, -1200.0, 0.0], [np.nan, -1200.0, 0.0], [0.0, -1200.0, 0.0]])
    pv = plan_view(pts, SMALL, centre_y_mm=-1200.0)
    assert pv.count.sum() == 1
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        plan_view(np.zeros((4, 2)), SMALL)


def test_the_grid_centres_on_the_scene_not_the_floor():
    rng = np.random.default_rng(0)
    table = np.c_[rng.uniform(-250, 250, 500), rng.uniform(-1800, -700, 500), np.full(500, -150.0)]
    floor = np.c_[rng.uniform(-2000, 2000, 2000), rng.uniform(-4000, 1000, 2000), np.full(2000, -1000.0)]
    assert scene_centre_y_mm(np.r_[table, floor]) == pytest.approx(-1240.0, abs=40.0)
    assert scene_centre_y_mm(np.r_[table, floor]) % 40.0 == 0.0
    far = table.copy()
    far[:, 1] -= 5000.0
    assert scene_centre_y_mm(far) == PlanViewSettings().centre_range_mm[0]  # kept within its range


def test_input_planes():
    pts = np.array([[0.0, 0.0, -150.0], [1.0, 1.0, 50.0]])
    pv = plan_view(pts, SMALL, centre_y_mm=0.0)
    x = input_planes(pv, SMALL, z_offset_mm=100.0)
    assert x.shape == (len(INPUT_CHANNELS), 32, 16) and x.dtype == np.float32
    r, c = pv.cell_of(np.array([0.0]), np.array([0.0]))
    assert x[0, r[0], c[0]] == pytest.approx(150.0 / 500.0)  # (top 50 + offset 100) / 500
    assert x[1, r[0], c[0]] == 1.0 and x[2, r[0], c[0]] == pytest.approx(200.0 / 200.0)
    assert x[1].sum() == 1.0 and x[0][x[1] == 0].max() == 0.0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="multiples of 16"):
        PlanViewSettings(rows=30)
