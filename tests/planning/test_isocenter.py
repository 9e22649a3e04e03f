"""Shape model pieces: hat basis, body coordinate, envelope features, range averaging, model files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from planning_builders import body_points, make_table

from positioning.perception.profile import surface_profile
from positioning.planning.isocenter import (
    GLOBAL_FEATURES,
    ISOCENTER_SCHEMA,
    KNOTS,
    REGION_FEATURES,
    IsocenterModel,
    body_coordinate,
    hat_basis,
    isocenter_over,
    load_isocenter_model,
    naive_isocenter_z,
    posture_group,
    predict_centroids,
    slice_features,
)


def test_hat_basis_partitions_unity() -> None:
    u = np.linspace(-4, 4, 161)
    b = hat_basis(u)
    assert b.shape == (161, len(KNOTS))
    np.testing.assert_allclose(b.sum(axis=1), 1.0)
    assert b[np.argmin(np.abs(u - 0.3)), KNOTS.index(0.3)] == pytest.approx(1.0)


@pytest.mark.parametrize(("sh", "hip"), [(-900.0, -1400.0), (-1400.0, -900.0)])
def test_body_coordinate_both_directions(sh: float, hip: float) -> None:
    u = body_coordinate(np.array([hip, sh, (sh + hip) / 2]), sh, hip)
    np.testing.assert_allclose(u, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError):
        body_coordinate(np.zeros(1), 5.0, 5.0)


@pytest.mark.parametrize(
    ("position", "group"), [("HFS", "supine"), ("FFP", "prone"), ("HFDL", "decubitus"), (None, "supine")]
)
def test_posture_group(position: str | None, group: str) -> None:
    assert posture_group(position) == group


def test_envelope_of_a_half_ellipse() -> None:
    """Lopsided: off-centre body (x = +60 mm) on a table at z = -170: envelope area pi a h / 2 (above the
    40 mm cut), centroid height 4 h / (3 pi) and lateral centre 60 mm."""
    table = make_table(-170.0)
    a, h = 180.0, 240.0
    pts = body_points(table_top_z_mm=-170.0, y_range_mm=(-1500.0, -1000.0), centre_x_mm=60.0,
                      half_width_mm=a, height_mm=h, step_mm=2.5)  # fmt: skip
    f = slice_features(surface_profile(pts, table), pts, table)
    mid = f.valid & (f.y_mm > -1450) & (f.y_mm < -1050)
    assert np.nanmedian(f.envelope_x_mm[mid]) == pytest.approx(60.0, abs=2.0)
    assert np.nanmedian(f.envelope_area_mm2[mid]) == pytest.approx(math.pi * a * h / 2, rel=0.05)
    assert np.nanmedian(f.envelope_z_mm[mid]) == pytest.approx(4 * h / (3 * math.pi), rel=0.05)
    assert np.nanmedian(f.height_mm[mid]) == pytest.approx(h, abs=3.0)


def test_half_ellipse_model_and_range_average() -> None:
    table = make_table(-150.0)
    pts = body_points(table_top_z_mm=-150.0, y_range_mm=(-1500.0, -1000.0), height_mm=200.0)
    f = slice_features(surface_profile(pts, table), pts, table)
    model = IsocenterModel.half_ellipse()
    for u in (None, body_coordinate(f.y_mm, -1000.0, -1500.0)):
        x, z = predict_centroids(f, model, group="supine", u=u)
        est = isocenter_over(f, x, z, -1400.0, -1100.0)
        assert est is not None
        assert est.z_mm == pytest.approx(-150.0 + 0.45 * 200.0, abs=2.0)
        assert est.x_mm == pytest.approx(0.0, abs=1.0)
        assert est.slices == 30 and est.coverage == pytest.approx(1.0)
    assert naive_isocenter_z(f, -1400.0, -1100.0) == pytest.approx(-50.0, abs=2.0)
    assert isocenter_over(f, x, z, 0.0, 100.0) is None


def test_without_points_the_envelope_is_approximated() -> None:
    table = make_table(-150.0)
    pts = body_points(table_top_z_mm=-150.0, y_range_mm=(-1500.0, -1000.0))
    f = slice_features(surface_profile(pts, table))
    assert np.isfinite(f.envelope_z_mm[f.valid]).all()


def test_shipped_model_loads_and_round_trips(tmp_path: Path) -> None:
    m = load_isocenter_model()
    assert m.source.endswith("isocenter_model.json")
    assert m.info["isocenter"]["groups"]["supine"]["sessions"] > 0
    doc = {"schema": ISOCENTER_SCHEMA, **m.to_json()}
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    m2 = load_isocenter_model(p)
    np.testing.assert_allclose(m2.region["prone"], m.region["prone"], atol=1e-6)
    assert len(m2.region["supine"]) == len(KNOTS) * len(REGION_FEATURES)
    assert len(m2.fallback["supine"]) == len(GLOBAL_FEATURES)


def test_bad_model_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_isocenter_model(tmp_path / "none.json")
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="schema"):
        load_isocenter_model(p)
