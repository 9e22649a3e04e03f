"""Tests of positioning.perception.pointcloud: deprojection, scanner-frame clouds with their pixels, cleaning.

Convention pins use lopsided intrinsics (fx != fy, principal point off-centre, W != H) and a camera whose
axes are permuted against the scanner's, so a swapped axis or a sign slip fails loudly.
"""

from __future__ import annotations

import numpy as np
import pytest

from positioning.frames import Calibration, Intrinsics, RGBDFrame
from positioning.perception.pointcloud import (
    ScannerCloud,
    clean,
    cloud_from_image,
    deproject,
    remove_outliers,
    scanner_image,
    scanner_points,
    voxel_downsample,
)

# W=5, H=3, fx != fy, principal point neither centred nor integer.
K = Intrinsics(width=5, height=3, fx=2.0, fy=4.0, ppx=1.5, ppy=0.25)

# Camera 1700 mm above the scanner's (100, -1300) looking straight down, image right = scanner +y:
# camera x -> scanner +y, camera y (down in the image) -> scanner +x, camera z (forward) -> scanner -z.
SCANNER_FROM_CAMERA = np.array(
    [[0.0, 1.0, 0.0, 100.0], [1.0, 0.0, 0.0, -1300.0], [0.0, 0.0, -1.0, 1700.0], [0.0, 0.0, 0.0, 1.0]]
)
CAL = Calibration(scanner_from_camera=SCANNER_FROM_CAMERA)


def _depth() -> np.ndarray:
    d = np.full((3, 5), 1000, np.uint16)
    d[0, 0] = 2000
    d[1, 2] = 0  # a hole
    return d


def _frame(depth: np.ndarray, k: Intrinsics = K) -> RGBDFrame:
    return RGBDFrame(depth_mm=depth, intrinsics=k)


# ------------------------------------------------------------------------------------------- deproject


def test_deproject_convention_pins():
    p = deproject(_depth(), K)
    assert p.shape == (3, 5, 3) and p.dtype == np.float64
    # (v=2, u=4), z=1000: x = (4 - 1.5) / 2 * 1000, y = (2 - 0.25) / 4 * 1000
    np.testing.assert_allclose(p[2, 4], [1250.0, 437.5, 1000.0])
    # (v=0, u=0), z=2000: x = -1.5 / 2 * 2000, y = -0.25 / 4 * 2000
    np.testing.assert_allclose(p[0, 0], [-1500.0, -125.0, 2000.0])
    # the principal point column/row sign: u > ppx -> x > 0, v > ppy -> y > 0
    assert p[1, 1, 0] < 0 < p[1, 3, 0] and p[0, 3, 1] < 0 < p[1, 3, 1]
    assert np.isnan(p[1, 2]).all()


def test_deproject_reprojects_to_its_pixel():
    rng = np.random.default_rng(0)
    k = Intrinsics(width=64, height=40, fx=61.0, fy=47.5, ppx=35.25, ppy=17.75)
    depth = rng.integers(300, 4000, size=(40, 64)).astype(np.uint16)
    depth[rng.random((40, 64)) < 0.1] = 0
    p = deproject(depth, k)
    v, u = np.nonzero(depth)
    x, y, z = p[v, u].T
    np.testing.assert_allclose(k.fx * x / z + k.ppx, u, atol=1e-9)
    np.testing.assert_allclose(k.fy * y / z + k.ppy, v, atol=1e-9)
    np.testing.assert_array_equal(z, depth[v, u])


def test_deproject_float_input_marks_nan_and_negative_invalid():
    d = np.array([[1000.0, np.nan, -5.0, 0.0, 1.0]] * 3)
    p = deproject(d, K)
    assert np.isfinite(p[:, 0]).all() and np.isfinite(p[:, 4]).all()
    assert np.isnan(p[:, 1:4]).all()


@pytest.mark.parametrize(
    ("depth", "match"),
    [
        (np.zeros(5, np.uint16), r"\(H, W\) array"),
        (np.zeros((3, 5, 1), np.uint16), r"\(H, W\) array"),
        ([[0] * 5] * 3, r"\(H, W\) array"),
        (np.zeros((5, 3), np.uint16), r"shape \(5, 3\) != intrinsics \(H, W\) \(3, 5\)"),
        (np.zeros((3, 5), bool), "numeric"),
        (np.zeros((3, 5), "U1"), "numeric"),
    ],
)
def test_deproject_invalid_inputs(depth, match):
    with pytest.raises(ValueError, match=match):
        deproject(depth, K)


# ------------------------------------------------------------------------------ scanner_points / image


def test_scanner_points_convention_pins():
    cloud = scanner_points(_frame(_depth()), CAL)
    assert len(cloud) == 14 and cloud.image_shape == (3, 5) and cloud.stride == 1
    assert cloud.pixels_vu.dtype == np.int32
    by_pixel = {tuple(px): pt for px, pt in zip(cloud.pixels_vu.tolist(), cloud.points_mm, strict=True)}
    assert (1, 2) not in by_pixel  # the hole
    # camera (1250, 437.5, 1000) -> scanner (100 + 437.5, -1300 + 1250, 1700 - 1000)
    np.testing.assert_allclose(by_pixel[(2, 4)], [537.5, -50.0, 700.0])
    # camera (-1500, -125, 2000) -> scanner (100 - 125, -1300 - 1500, 1700 - 2000)
    np.testing.assert_allclose(by_pixel[(0, 0)], [-25.0, -2800.0, -300.0])
    # row-major order of the pixels
    order = cloud.pixels_vu[:, 0] * 5 + cloud.pixels_vu[:, 1]
    assert np.all(np.diff(order) > 0)


def test_scanner_points_match_deproject_then_calibration():
    rng = np.random.default_rng(1)
    k = Intrinsics(width=48, height=30, fx=40.0, fy=52.0, ppx=20.3, ppy=16.9)
    depth = rng.integers(500, 3000, size=(30, 48)).astype(np.uint16)
    depth[rng.random((30, 48)) < 0.2] = 0
    a = 0.3
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    m[:3, 3] = [10.0, -20.0, 1500.0]
    cal = Calibration(scanner_from_camera=m)
    cloud = scanner_points(_frame(depth, k), cal)
    ref = cal.to_scanner(deproject(depth, k))
    v, u = cloud.pixels_vu.T
    np.testing.assert_allclose(cloud.points_mm, ref[v, u], atol=1e-3)  # float32 grid inside
    assert len(cloud) == np.count_nonzero(depth)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_scanner_image_and_stride_shapes(stride):
    depth = np.full((3, 5), 1500, np.uint16)
    img = scanner_image(_frame(depth), CAL, stride=stride)
    h, w = -(-3 // stride), -(-5 // stride)
    assert img.shape == (h, w, 3) and img.dtype == np.float32
    cloud = scanner_points(_frame(depth), CAL, stride=stride)
    assert len(cloud) == h * w and cloud.stride == stride
    assert np.all(cloud.pixels_vu % stride == 0)
    full = scanner_image(_frame(depth), CAL)
    v, u = cloud.pixels_vu.T
    np.testing.assert_allclose(cloud.points_mm, full[v, u], atol=1e-3)


def test_cloud_mask_draws_points_back_on_the_image():
    cloud = scanner_points(_frame(_depth()), CAL)
    np.testing.assert_array_equal(cloud.mask(), _depth() > 0)
    sel = cloud.points_mm[:, 2] < 0  # the far pixel (0, 0)
    expected = np.zeros((3, 5), bool)
    expected[0, 0] = True
    np.testing.assert_array_equal(cloud.mask(sel), expected)
    strided = scanner_points(_frame(np.full((3, 5), 900, np.uint16)), CAL, stride=2)
    assert strided.mask().shape == (3, 5) and strided.mask().all()


def test_empty_frame_gives_empty_cloud():
    cloud = scanner_points(_frame(np.zeros((3, 5), np.uint16)), CAL)
    assert len(cloud) == 0 and cloud.points_mm.shape == (0, 3) and cloud.pixels_vu.shape == (0, 2)
    assert len(voxel_downsample(cloud)) == 0 and len(clean(cloud)) == 0


@pytest.mark.parametrize("stride", [0, -1, 1.5, True, "2"])
def test_invalid_stride(stride):
    with pytest.raises(ValueError, match="stride"):
        scanner_points(_frame(_depth()), CAL, stride=stride)
    with pytest.raises(ValueError, match="stride"):
        scanner_image(_frame(_depth()), CAL, stride=stride)


def test_cloud_from_image_checks_shape():
    img = scanner_image(_frame(_depth()), CAL)
    with pytest.raises(ValueError, match="points_image shape"):
        cloud_from_image(img, image_shape=(3, 5), stride=2)


def test_scanner_cloud_validates_its_arrays():
    with pytest.raises(ValueError, match=r"points_mm must be \(N, 3\)"):
        ScannerCloud(points_mm=np.zeros((4, 2)), pixels_vu=np.zeros((4, 2), np.int32), image_shape=(3, 5))
    with pytest.raises(ValueError, match=r"pixels_vu must be \(4, 2\)"):
        ScannerCloud(points_mm=np.zeros((4, 3)), pixels_vu=np.zeros((3, 2), np.int32), image_shape=(3, 5))


# ---------------------------------------------------------------------------------------------- cleaning


def _cloud(points: np.ndarray) -> ScannerCloud:
    n = len(points)
    pixels = np.stack([np.arange(n) // 100, np.arange(n) % 100], axis=1).astype(np.int32)
    return ScannerCloud(points_mm=np.asarray(points, float), pixels_vu=pixels, image_shape=(100, 100))


def test_voxel_downsample_pins():
    c = _cloud([[1.0, 1.0, 1.0], [9.0, 0.5, 0.5], [3.0, 3.0, 3.0], [-1.0, 2.0, 2.0]])
    d = voxel_downsample(c, voxel_mm=8.0)
    # voxels in the order of their first members: [0,8)^3, [8,16)x[0,8)^2, [-8,0)x[0,8)^2
    np.testing.assert_allclose(d.points_mm, [[2.0, 2.0, 2.0], [9.0, 0.5, 0.5], [-1.0, 2.0, 2.0]])
    np.testing.assert_array_equal(d.pixels_vu, c.pixels_vu[[0, 1, 3]])
    assert d.image_shape == c.image_shape


@pytest.mark.parametrize("voxel_mm", [0.0, -8.0, np.nan, np.inf])
def test_voxel_downsample_invalid_size(voxel_mm):
    with pytest.raises(ValueError, match="voxel_mm"):
        voxel_downsample(_cloud([[0.0, 0.0, 0.0]]), voxel_mm)


def test_remove_outliers_drops_a_flying_pixel_and_keeps_pixels():
    g = np.stack(np.meshgrid(np.arange(20.0) * 5, np.arange(20.0) * 5), -1).reshape(-1, 2)
    pts = np.c_[g, np.zeros(len(g))]
    pts = np.vstack([pts, [[50.0, 50.0, 400.0]]])  # far above the surface
    c = _cloud(pts)
    kept = remove_outliers(c, neighbours=8, std_ratio=2.0)
    assert len(kept) == len(pts) - 1
    assert not np.any(kept.points_mm[:, 2] > 100)
    # the mapping survives: each kept point's pixel indexes the same point in the input
    idx = kept.pixels_vu[:, 0] * 100 + kept.pixels_vu[:, 1]
    np.testing.assert_array_equal(c.points_mm[idx], kept.points_mm)
    with pytest.raises(ValueError, match="neighbours"):
        remove_outliers(c, neighbours=0)


def test_clean_on_a_simulated_frame_keeps_valid_pixels(sim_frame):
    f = sim_frame("hfs-arms-up")
    cloud = scanner_points(f.frame, f.calibration, stride=4)
    cleaned = clean(cloud, voxel_mm=10.0)
    assert 0 < len(cleaned) < len(cloud)
    v, u = cleaned.pixels_vu.T
    assert np.all(f.frame.depth_mm[v, u] > 0)
    # every cleaned point lies near the point of its own pixel (within the voxel)
    full = scanner_image(f.frame, f.calibration)
    assert np.percentile(np.linalg.norm(full[v, u] - cleaned.points_mm, axis=1), 95) < 10.0 * np.sqrt(3)
