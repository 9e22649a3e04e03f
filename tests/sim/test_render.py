"""The ray-casting renderer: z-depth (not ray length), labels, aligned colour and misses; lopsided camera."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.frames import Intrinsics
from positioning.sim.render import camera_rays, render, vertex_normals
from positioning.sim.rig import look_at
from positioning.sim.room import Label, Mesh, box_mesh

# Lopsided on purpose: W != H, fx != fy, principal point off centre.
K = Intrinsics(width=64, height=48, fx=50.5, fy=57.25, ppx=30.3, ppy=21.7)
# Tilted camera: about 20 degrees off vertical, rolled (image right is not a scanner axis).
POSE = look_at(np.array([130.0, -270.0, 900.0]), np.array([20.0, 40.0, 0.0]), np.array([0.3, 1.0, 0.0]))
PLANE_Z = -150.0
FLOOR = box_mesh((-5000, -5000, PLANE_Z - 100), (5000, 5000, PLANE_Z), (0.55, 0.55, 0.52), Label.FLOOR)
BLOCK_TOP_Z = 80.0
BLOCK = box_mesh((-60, -20, PLANE_Z), (90, 160, BLOCK_TOP_Z), (0.8, 0.4, 0.2), Label.PATIENT)


def ray_direction(u: float, v: float, k: Intrinsics = K, pose: np.ndarray = POSE) -> np.ndarray:
    """Scanner-frame direction of pixel (u, v) with camera z = 1 (pixel centres at integer coordinates)."""
    return pose[:3, :3] @ np.array([(u - k.ppx) / k.fx, (v - k.ppy) / k.fy, 1.0])


def z_depth_to_plane(u: float, v: float, plane_z: float) -> float:
    """Analytic z-depth of the horizontal plane z = plane_z at pixel (u, v)."""
    d = ray_direction(u, v)
    return (plane_z - POSE[2, 3]) / d[2]  # the hit parameter along a camera-z = 1 direction is the z-depth


def project(p) -> tuple[float, float]:
    x, y, z = POSE[:3, :3].T @ (np.asarray(p, float) - POSE[:3, 3])
    return K.fx * x / z + K.ppx, K.fy * y / z + K.ppy


@pytest.fixture(scope="module")
def plane_only():
    return render([FLOOR], K, POSE)


@pytest.fixture(scope="module")
def scene():
    return render([FLOOR, BLOCK], K, POSE)


def test_shapes_and_dtypes(scene):
    assert scene.depth_mm.shape == (48, 64) and scene.depth_mm.dtype == np.float32
    assert scene.color_rgb.shape == (48, 64, 3) and scene.color_rgb.dtype == np.uint8
    assert scene.label.shape == (48, 64) and scene.label.dtype == np.uint8


@pytest.mark.parametrize(("u", "v"), [(0, 0), (63, 0), (0, 47), (63, 47), (30, 22), (5, 40), (50, 9)])
def test_depth_is_the_analytic_z_depth_not_the_ray_length(plane_only, u, v):
    expected = z_depth_to_plane(u, v, PLANE_Z)
    assert plane_only.depth_mm[v, u] == pytest.approx(expected, abs=0.01)
    ray_length = expected * np.linalg.norm(ray_direction(u, v))
    if (u, v) != (30, 22):  # away from the principal point the two differ by far more than the tolerance
        assert abs(ray_length - expected) > 5.0


def test_whole_depth_image_matches_the_plane(plane_only):
    vv, uu = np.mgrid[0:48, 0:64]
    expected = np.vectorize(z_depth_to_plane)(uu, vv, PLANE_Z)
    np.testing.assert_allclose(plane_only.depth_mm, expected, atol=0.01)


def test_pixel_centres_are_at_integer_coordinates(plane_only):
    """A point projected to an exact integer pixel has exactly that pixel's depth."""
    target = np.array([20.0, 40.0, PLANE_Z])  # on the plane
    u, v = project(target)
    ui, vi = round(u), round(v)
    d = ray_direction(ui, vi)
    p = POSE[:3, 3] + d * z_depth_to_plane(ui, vi, PLANE_Z)  # the plane point seen at pixel (ui, vi)
    assert project(p) == pytest.approx((ui, vi), abs=1e-9)
    z = (POSE[:3, :3].T @ (p - POSE[:3, 3]))[2]
    assert plane_only.depth_mm[vi, ui] == pytest.approx(z, abs=0.01)


def test_label_marks_the_mesh_each_pixel_sees(scene):
    u, v = project([15.0, 70.0, BLOCK_TOP_Z])  # centre of the block's top face
    ui, vi = round(u), round(v)
    assert scene.label[vi, ui] == Label.PATIENT
    assert scene.depth_mm[vi, ui] == pytest.approx(z_depth_to_plane(ui, vi, BLOCK_TOP_Z), abs=0.01)
    u, v = project([-800.0, -700.0, PLANE_Z])  # floor, far from the block
    assert scene.label[round(v), round(u)] == Label.FLOOR
    assert set(np.unique(scene.label)) == {Label.FLOOR, Label.PATIENT}
    # the block is nearer than the floor wherever it is seen
    floor_depth = np.vectorize(z_depth_to_plane)(*np.mgrid[0:64, 0:48], PLANE_Z).T
    assert (scene.depth_mm[scene.label == Label.PATIENT] < floor_depth[scene.label == Label.PATIENT]).all()


def test_colour_is_aligned_and_unlit_colour_is_albedo_times_vignette():
    """With ambient = 1 there is no shading: each pixel is exactly albedo x vignette."""
    res = render([FLOOR, BLOCK], K, POSE, ambient=1.0)
    uu, vv = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 48))
    vignette = 1.0 - 0.18 * (uu**2 + vv**2)
    albedo = np.where(
        (res.label == Label.PATIENT)[..., None], np.array([0.8, 0.4, 0.2]), np.array([0.55, 0.55, 0.52])
    )
    expected = (np.clip(albedo * vignette[..., None], 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_allclose(res.color_rgb.astype(int), expected.astype(int), atol=1)


def test_lit_colour_keeps_the_albedo_hue(scene):
    block = scene.color_rgb[scene.label == Label.PATIENT].astype(float)
    assert len(block) > 20
    np.testing.assert_allclose(block[:, 1] / block[:, 0], 0.5, atol=0.02)  # albedo (0.8, 0.4, 0.2)
    np.testing.assert_allclose(block[:, 2] / block[:, 0], 0.25, atol=0.02)


def test_pixels_that_hit_nothing_are_nan_unlabelled_and_black():
    res = render([BLOCK], K, POSE)
    miss = np.isnan(res.depth_mm)
    assert miss[0, 0] and miss[47, 63]  # the corners see past the block
    assert (~miss).sum() > 20
    assert (res.label[miss] == Label.NOTHING).all() and (res.label[~miss] == Label.PATIENT).all()
    assert (res.color_rgb[miss] == 0).all()


def test_a_mesh_behind_the_camera_is_not_seen():
    behind = box_mesh((-100, -400, 950), (300, 0, 1100), (1, 1, 1), Label.GANTRY)  # above the camera
    res = render([behind], K, POSE)
    assert np.isnan(res.depth_mm).all() and (res.label == Label.NOTHING).all()


def test_camera_rays_have_unit_camera_z_and_are_cached_read_only():
    rays = camera_rays(K, POSE)
    assert rays.shape == (48, 64, 6) and rays.dtype == np.float32
    np.testing.assert_allclose(rays[..., :3], np.broadcast_to(POSE[:3, 3], (48, 64, 3)), atol=1e-3)
    np.testing.assert_allclose(rays[..., 3:] @ POSE[:3, 2], 1.0, atol=1e-6)
    np.testing.assert_allclose(rays[10, 50, 3:], ray_direction(50, 10), atol=1e-6)
    assert camera_rays(K, POSE.copy()) is rays
    with pytest.raises(ValueError):
        rays[0, 0, 0] = 1.0


def test_vertex_normals_of_a_box_point_outward():
    m = box_mesh((-1, -2, -3), (4, 5, 6), (1, 1, 1), Label.TABLE)
    n = vertex_normals(m.vertices_mm, m.faces)
    centre = m.vertices_mm.mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    assert ((n * (m.vertices_mm - centre)).sum(axis=1) > 0).all()


def test_render_accepts_any_mesh_type():
    tri = Mesh(np.array([[-500.0, -500, 0], [500, -500, 0], [0, 800, 0]]), np.array([[0, 1, 2]], np.int32),
               np.ones((3, 3), np.float32), Label.TABLE)  # fmt: skip
    res = render([tri], K, POSE)
    u, v = project([0.0, 0.0, 0.0])
    assert res.label[round(v), round(u)] == Label.TABLE  # one-sided triangles are seen from either side
