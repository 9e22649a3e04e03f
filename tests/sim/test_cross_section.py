"""Exact cross-sections of closed meshes by planes of constant y (the source of the true isocenter)."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from positioning.sim.cross_section import CrossSections, cross_sections
from positioning.sim.room import Label, box_mesh


def box(lo, hi):
    m = box_mesh(np.asarray(lo, float), np.asarray(hi, float), (0.5, 0.5, 0.5), Label.PATIENT)
    return m.vertices_mm, m.faces


def sphere(radius: float, centre, resolution: int = 80):
    """A UV sphere with its poles on the y axis (so slices cut its latitude rings), outward faces."""
    s = o3d.geometry.TriangleMesh.create_sphere(radius=radius, resolution=resolution)
    v = np.asarray(s.vertices)[:, [0, 2, 1]] * [1, 1, -1]  # poles z -> y, kept right-handed (det +1)
    return v + np.asarray(centre, float), np.asarray(s.triangles).astype(np.int32)


def octahedron(a: float, b: float, c: float, centre):
    """Vertices (±a, 0, 0), (0, ±b, 0), (0, 0, ±c) about ``centre``; faces counter-clockwise from outside."""
    v = np.array([[a, 0, 0], [-a, 0, 0], [0, b, 0], [0, -b, 0], [0, 0, c], [0, 0, -c]], float)
    faces = []
    for i in (0, 1):
        for j in (2, 3):
            for k in (4, 5):
                f = [i, j, k]
                n = np.cross(v[j] - v[i], v[k] - v[i])
                faces.append(f if n @ (v[i] + v[j] + v[k]) > 0 else [i, k, j])
    return v + np.asarray(centre, float), np.array(faces, np.int32)


# -- exact results -------------------------------------------------------------------------------------------
def test_centred_box():
    v, f = box((-50, -100, -20), (50, 100, 20))
    cs = cross_sections(v, f, np.array([-99.0, 0.0, 37.5, 99.0]))
    np.testing.assert_allclose(cs.area_mm2, 4000.0, rtol=1e-12)
    np.testing.assert_allclose(cs.centroid_x_mm, 0.0, atol=1e-9)
    np.testing.assert_allclose(cs.centroid_z_mm, 0.0, atol=1e-9)


def test_lopsided_off_centre_box():
    """W != depth, off-centre in x and z: a swapped axis or a sign slip changes every number."""
    v, f = box((-30, -100, -170), (70, 200, -110))  # 100 wide (x), 60 high (z), centre (20, -140)
    y = np.array([-99.5, -3.0, 150.25, 199.9])
    cs = cross_sections(v, f, y)
    np.testing.assert_array_equal(cs.y_mm, y)
    np.testing.assert_allclose(cs.area_mm2, 6000.0, rtol=1e-12)
    np.testing.assert_allclose(cs.centroid_x_mm, 20.0, atol=1e-9)
    np.testing.assert_allclose(cs.centroid_z_mm, -140.0, atol=1e-9)
    np.testing.assert_allclose(cs.x_min_mm, -30.0)
    np.testing.assert_allclose(cs.x_max_mm, 70.0)
    np.testing.assert_allclose(cs.z_min_mm, -170.0)
    np.testing.assert_allclose(cs.z_max_mm, -110.0)


def test_two_disjoint_bodies_are_summed_and_area_weighted():
    """Trunk and an arm together: total area and the area-weighted centroid of both contours."""
    v1, f1 = box((-100, 0, 0), (100, 500, 200))  # 40000 mm², centroid (0, 100)
    v2, f2 = box((150, 100, 20), (210, 400, 60))  # 2400 mm², centroid (180, 40)
    v = np.concatenate([v1, v2])
    f = np.concatenate([f1, f2 + len(v1)])
    cs = cross_sections(v, f, np.array([50.0, 250.0]))
    np.testing.assert_allclose(cs.area_mm2, [40000.0, 42400.0])
    np.testing.assert_allclose(cs.centroid_x_mm, [0.0, 180 * 2400 / 42400], atol=1e-9)
    np.testing.assert_allclose(cs.centroid_z_mm, [100.0, (100 * 40000 + 40 * 2400) / 42400], atol=1e-9)
    np.testing.assert_allclose(cs.x_max_mm, [100.0, 210.0])


@pytest.mark.parametrize("h_frac", [-0.8, -0.35, 0.0, 0.2, 0.6])
def test_sphere_slices_are_circles(h_frac):
    r, centre = 120.0, (31.0, -400.0, -77.0)
    v, f = sphere(r, centre)
    y = centre[1] + h_frac * r
    cs = cross_sections(v, f, np.array([y]))
    rho2 = r**2 * (1 - h_frac**2)
    assert cs.area_mm2[0] == pytest.approx(np.pi * rho2, rel=0.01)
    assert cs.centroid_x_mm[0] == pytest.approx(centre[0], abs=0.1)
    assert cs.centroid_z_mm[0] == pytest.approx(centre[2], abs=0.1)
    assert cs.x_max_mm[0] - cs.x_min_mm[0] == pytest.approx(2 * np.sqrt(rho2), rel=0.01)


def test_plane_through_a_vertex_ring_is_not_dropped():
    """Regression: a plane through vertices (the octahedron's waist, 4 vertices on y = y0; a sphere's
    equator) used to give area 0: the triangles starting at y0 were not offered to that slice."""
    v, f = octahedron(40.0, 90.0, 25.0, (10.0, 300.0, -60.0))
    cs = cross_sections(v, f, np.array([300.0, 345.0]))
    np.testing.assert_allclose(cs.area_mm2, [2 * 40 * 25, 2 * 20 * 12.5], rtol=1e-12)
    np.testing.assert_allclose(cs.centroid_x_mm, 10.0, atol=1e-9)
    np.testing.assert_allclose(cs.centroid_z_mm, -60.0, atol=1e-9)


@pytest.mark.parametrize("mesh", ["box", "sphere", "octahedron"])
def test_face_orientation_does_not_matter(mesh):
    v, f = {
        "box": lambda: box((-30, -100, -170), (70, 200, -110)),
        "sphere": lambda: sphere(80.0, (5.0, 0.0, 12.0), resolution=24),
        "octahedron": lambda: octahedron(40.0, 90.0, 25.0, (10.0, 0.0, -60.0)),
    }[mesh]()
    y = np.linspace(-60.0, 60.0, 7)
    a, b = cross_sections(v, f, y), cross_sections(v, f[:, ::-1].copy(), y)
    for name in ("area_mm2", "centroid_x_mm", "centroid_z_mm", "x_min_mm", "z_max_mm"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12, atol=1e-9)
    assert (a.area_mm2 > 0).all()


def test_empty_slices_have_zero_area_and_nan_geometry():
    v, f = box((-30, -100, -170), (70, 200, -110))
    cs = cross_sections(v, f, np.array([-500.0, -100.5, 0.0, 200.5, 900.0]))
    np.testing.assert_allclose(cs.area_mm2, [0.0, 0.0, 6000.0, 0.0, 0.0], rtol=1e-12)
    assert (cs.area_mm2[[0, 1, 3, 4]] == 0.0).all()
    for name in ("centroid_x_mm", "centroid_z_mm", "x_min_mm", "x_max_mm", "z_min_mm", "z_max_mm"):
        col = getattr(cs, name)
        assert np.isnan(col[[0, 1, 3, 4]]).all() and np.isfinite(col[2]), name


def test_output_shapes():
    v, f = box((0, 0, 0), (1, 1, 1))
    for k in (1, 2, 17):
        cs = cross_sections(v, f, np.linspace(0.1, 0.9, k))
        for field in ("y_mm", "area_mm2", "centroid_x_mm", "centroid_z_mm", "x_min_mm", "z_max_mm"):
            assert getattr(cs, field).shape == (k,)


@pytest.mark.parametrize(
    "y",
    [
        np.array([[0.0, 1.0]]),
        np.array([2.0, 1.0]),
        np.array([0.0, 1.0, 1.0]),
        np.array([0.0, 5.0, 3.0]),
    ],
    ids=["2-D", "decreasing", "repeated", "unsorted"],
)
def test_invalid_y_grid_is_rejected(y):
    v, f = box((0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="1-D strictly increasing"):
        cross_sections(v, f, y)


def test_to_dict_round_trip_turns_nan_into_none():
    v, f = box((-30, -100, -170), (70, 200, -110))
    cs = cross_sections(v, f, np.array([-500.0, 0.0]))
    d = cs.to_dict()
    assert d["centroid_x_mm"] == [None, 20.0] and d["area_mm2"] == [0.0, 6000.0]
    back = CrossSections.from_dict(d)
    np.testing.assert_allclose(back.area_mm2, cs.area_mm2, atol=0.005)
    np.testing.assert_allclose(back.centroid_z_mm, cs.centroid_z_mm, atol=0.005)  # NaN == NaN here


# -- a real body ---------------------------------------------------------------------------------------------
STEP_MM = 5.0


def _volume_mm3(vertices, faces) -> float:
    """Sum of area x step over slices at the midpoints of 5 mm bins (midpoint rule)."""
    y = np.arange(np.floor(vertices[:, 1].min()) - STEP_MM / 2, vertices[:, 1].max() + STEP_MM, STEP_MM)
    return float(cross_sections(vertices, faces, y).area_mm2.sum() * STEP_MM)


def _divergence_volume_mm3(vertices, faces) -> float:
    t = vertices[faces]
    return float(abs((np.cross(t[:, 0], t[:, 1]) * t[:, 2]).sum() / 6.0))


def test_placed_body_volume_matches_the_mesh_and_anny(place_cached):
    placed = place_cached("HFS", "raised", lateral_offset_mm=-23.0, yaw_deg=4.0)
    m = placed.scanner_from_body
    unflattened = placed.body.vertices_mm @ m[:3, :3].T + m[:3, 3]
    # exact geometry: the slices integrate to the mesh's own volume
    assert _volume_mm3(unflattened, placed.faces) == pytest.approx(
        _divergence_volume_mm3(placed.body.vertices_mm, placed.faces), rel=0.003
    )
    # the contact model removes only a thin layer of flattened tissue
    placed_volume = _volume_mm3(placed.vertices_mm, placed.faces)
    assert 0.98 < placed_volume / _volume_mm3(unflattened, placed.faces) < 1.0
    # and anny's own (rest-pose) volume: mass / 980 kg/m³
    anny_volume_mm3 = placed.body.mass_kg / 980.0 * 1e9
    assert placed_volume == pytest.approx(anny_volume_mm3, rel=0.03)
