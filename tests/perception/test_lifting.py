"""Tests of positioning.perception.lifting: robust depth, deprojection, surface-to-joint offsets, lifting.

Convention pins use lopsided intrinsics (fx != fy, ppx != W/2, W != H) and a tilted camera above a plane
and a box, where every answer is analytic.

Run as a script for the offline procedures (simulated sessions, truth used here only):

    python tests/perception/test_lifting.py --calibrate   # fit the offsets pasted into lifting.py
    python tests/perception/test_lifting.py --benchmark   # 3-D landmark errors vs truth keypoints
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

from positioning.frames import Calibration, Intrinsics, RGBDFrame
from positioning.perception.landmarks import COCO_LANDMARKS, Landmarks2D
from positioning.perception.lifting import (
    DECUBITUS_LEFT_DEPTH_OFFSETS,
    DECUBITUS_RIGHT_DEPTH_OFFSETS,
    DEFAULT_DEPTH_OFFSETS,
    GENERIC_DEPTH_OFFSET,
    PRONE_DEPTH_OFFSETS,
    SUPINE_DEPTH_OFFSETS,
    DepthOffset,
    Landmarks3D,
    LiftSettings,
    deproject_pixels,
    depth_offsets_for,
    joint_offsets_mm,
    lift_landmarks,
    lift_points,
    nearest_cluster_median,
    push_inward,
    reoffset_landmarks,
    robust_depth_mm,
)

# Lopsided camera: W != H, fx != fy, principal point off-centre.
K = Intrinsics(width=96, height=64, fx=80.0, fy=110.0, ppx=41.3, ppy=35.8)
PLANE_Z_MM = -100.0  # table top (scanner z)
BOX_TOP_Z_MM = 120.0  # a box on the table (scanner z of its top)
BOX_X_MM, BOX_Y_MM = (-150.0, 120.0), (-260.0, 40.0)  # its extent (scanner frame)
NO_OFFSETS = LiftSettings(offsets={})


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _tilted_camera() -> np.ndarray:
    """Camera 1.5 m above the plane, looking down, tilted 20 deg about scanner x and 7 deg about y."""
    down = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # cam x=+x, y=-y, z=-z
    m = np.eye(4)
    m[:3, :3] = _rot("x", 20.0) @ _rot("y", 7.0) @ down
    m[:3, 3] = [30.0, -400.0, 1400.0]
    return m


SCANNER_FROM_CAMERA = _tilted_camera()
CAL = Calibration(scanner_from_camera=SCANNER_FROM_CAMERA, method="test")


def _rays_scanner() -> np.ndarray:
    """``(H, W, 3)`` scanner-frame directions of the pixel rays, scaled so that camera z = 1."""
    vv, uu = np.mgrid[0 : K.height, 0 : K.width].astype(np.float64)
    ray_cam = np.stack([(uu - K.ppx) / K.fx, (vv - K.ppy) / K.fy, np.ones_like(uu)], axis=-1)
    return ray_cam @ SCANNER_FROM_CAMERA[:3, :3].T


def _scene(box: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic z-depth (float mm) of the plane (and box top), the box-top pixel mask, and the rays."""
    rays = _rays_scanner()
    cam = SCANNER_FROM_CAMERA[:3, 3]
    t_plane = (PLANE_Z_MM - cam[2]) / rays[..., 2]  # z-depth: the ray has camera z = 1
    depth = t_plane.copy()
    on_box = np.zeros(depth.shape, dtype=bool)
    if box:
        t_box = (BOX_TOP_Z_MM - cam[2]) / rays[..., 2]
        hit = cam + t_box[..., None] * rays
        on_box = (
            (hit[..., 0] > BOX_X_MM[0]) & (hit[..., 0] < BOX_X_MM[1])
            & (hit[..., 1] > BOX_Y_MM[0]) & (hit[..., 1] < BOX_Y_MM[1])
        )  # fmt: skip
        depth[on_box] = t_box[on_box]
    return depth, on_box, rays


def _frame(depth_float: np.ndarray) -> RGBDFrame:
    return RGBDFrame(depth_mm=np.round(depth_float).astype(np.uint16), intrinsics=K)


def _lm2(names, uv, conf=None) -> Landmarks2D:
    uv = np.asarray(uv, dtype=np.float64)
    conf = np.ones(len(names)) if conf is None else np.asarray(conf, dtype=np.float64)
    return Landmarks2D(names=tuple(names), uv_px=uv, confidence=conf, backend="test", image_shape=K.shape)


# ------------------------------------------------------------------------------------ robust depth


def test_nearest_cluster_median_prefers_near_cluster_with_enough_samples():
    d = np.array([1500.0, 1502, 1498, 1800, 1801, 1799, 1802, 1803])
    assert nearest_cluster_median(d, gap_mm=25, min_fraction=0.2, min_count=3) == 1500.0
    # a lone near outlier (flying pixel) is not a cluster: the next cluster wins
    d2 = np.array([900.0, 1800, 1801, 1799, 1802, 1803])
    assert nearest_cluster_median(d2, gap_mm=25, min_fraction=0.2, min_count=2) == 1801.0
    assert math.isnan(nearest_cluster_median(np.array([1.0, 2.0]), gap_mm=25, min_fraction=0.2, min_count=3))


def test_robust_depth_at_an_edge_takes_the_body_not_the_table():
    d = np.full((9, 9), 1800, np.uint16)
    d[:, :3] = 1500  # body occupies 3 of 7 window columns
    d[4, 1] = 0  # a hole
    z = robust_depth_mm(d, np.array([[4.4, 4.0]]), radius_px=3, gap_mm=25)
    assert z.tolist() == [1500.0]
    # restricted to a mask without the body: the table
    mask = np.zeros(d.shape, bool)
    mask[:, 3:] = True
    assert robust_depth_mm(d, np.array([[4.0, 4.0]]), radius_px=3, mask=mask).tolist() == [1800.0]


@pytest.mark.parametrize(
    ("uv", "why"),
    [([[np.nan, 3.0]], "nan"), ([[-3.0, 2.0]], "left of image"), ([[2.0, 9.6]], "below image")],
)
def test_robust_depth_nan_where_nothing_to_sample(uv, why):
    d = np.full((9, 9), 1500, np.uint16)
    assert np.isnan(robust_depth_mm(d, np.array(uv), radius_px=1)).all(), why


def test_robust_depth_all_invalid_and_too_few():
    d = np.zeros((9, 9), np.uint16)
    d[4, 4] = 1500
    assert np.isnan(robust_depth_mm(d, np.array([[4.0, 4.0]]), radius_px=2, min_valid=3))[0]
    assert robust_depth_mm(d, np.array([[4.0, 4.0]]), radius_px=2, min_valid=1).tolist() == [1500.0]


@pytest.mark.parametrize(
    ("depth", "uv", "kw", "match"),
    [
        (np.zeros((4, 4, 1), np.uint16), [[1.0, 1.0]], {}, "depth_mm must be a"),
        (np.zeros((4, 4), bool).astype(object), [[1.0, 1.0]], {}, "numeric"),
        (np.zeros((4, 4), np.uint16), [[1.0, 1.0, 1.0]], {}, r"uv_px must be \(N, 2\)"),
        (np.zeros((4, 4), np.uint16), [[1.0, 1.0]], {"mask": np.zeros((3, 4), bool)}, "mask shape"),
    ],
)
def test_robust_depth_invalid_inputs(depth, uv, kw, match):
    with pytest.raises(ValueError, match=match):
        robust_depth_mm(depth, np.array(uv), **kw)


# ------------------------------------------------------------------------------------ deprojection


def test_deproject_pixels_convention_pin_lopsided():
    # u = fx x / z + ppx, v = fy y / z + ppy with fx != fy and ppx != W/2
    uv = np.array([[K.ppx, K.ppy], [K.ppx + 80.0, K.ppy], [K.ppx, K.ppy + 55.0], [0.0, 0.0]])
    z = np.array([1000.0, 2000.0, 1000.0, 500.0])
    p = deproject_pixels(uv, z, K)
    np.testing.assert_allclose(p[0], [0, 0, 1000])
    np.testing.assert_allclose(p[1], [2000, 0, 2000])  # 80 px right at fx = 80: x = z
    np.testing.assert_allclose(p[2], [0, 500, 1000])  # 55 px down at fy = 110: y = z / 2
    np.testing.assert_allclose(p[3], [-41.3 / 80 * 500, -35.8 / 110 * 500, 500])
    # round trip through the projection
    back = np.stack([K.fx * p[:, 0] / p[:, 2] + K.ppx, K.fy * p[:, 1] / p[:, 2] + K.ppy], axis=1)
    np.testing.assert_allclose(back, uv, atol=1e-9)


def test_deproject_pixels_shape_mismatch():
    with pytest.raises(ValueError, match="depth_z_mm must be"):
        deproject_pixels(np.zeros((2, 2)), np.zeros(3), K)


# --------------------------------------------------------------------------- tilted camera, plane, box


@pytest.mark.parametrize("uv", [(5, 7), (41, 36), (88, 60), (70, 12)])
def test_lift_plane_tilted_camera_is_analytic(uv):
    """Integer pixels on the plane: the lifted point is the ray's intersection with the plane."""
    depth, _, rays = _scene(box=False)
    points, surface = lift_points(
        ["p"], np.array([uv], float), np.round(depth).astype(np.uint16), K, SCANNER_FROM_CAMERA,
        settings=NO_OFFSETS,
    )  # fmt: skip
    u, v = uv
    expected = SCANNER_FROM_CAMERA[:3, 3] + np.round(depth[v, u]) * rays[v, u]
    np.testing.assert_allclose(surface[0], expected, atol=1e-6)
    np.testing.assert_allclose(points[0], surface[0])
    assert abs(surface[0, 2] - PLANE_Z_MM) < 1.0  # only the uint16 rounding of the depth


def test_lift_subpixel_uses_subpixel_ray():
    depth, _, _ = _scene(box=False)
    d16 = np.round(depth).astype(np.uint16)
    uv = np.array([[30.4, 20.7]])
    _, surface = lift_points(
        ["p"],
        uv,
        d16,
        K,
        SCANNER_FROM_CAMERA,
        settings=LiftSettings(window_radius_px=0, min_valid_px=1, offsets={}),
    )
    z = float(d16[21, 30])
    cam = np.array([(30.4 - K.ppx) / K.fx * z, (20.7 - K.ppy) / K.fy * z, z])
    np.testing.assert_allclose(surface[0], CAL.to_scanner(cam), atol=1e-9)


def test_lift_at_box_edge_prefers_box_top_and_mask_restricts():
    depth, on_box, _ = _scene()
    frame = _frame(depth)
    # a pixel outside the box, one pixel from its edge: most of the window is table
    vv, uu = np.nonzero(on_box)
    v_mid = int(np.median(vv))
    u_edge = int(uu[vv == v_mid].max()) + 1  # first table pixel right of the box on that row
    assert not on_box[v_mid, u_edge]
    lm = lift_landmarks(_lm2(["p"], [[u_edge, v_mid]]), frame, CAL, settings=NO_OFFSETS)
    # the box's depth (not the table's 220 mm lower); a few mm off because the box pixels lie on one side
    # of the window and the tilted top's z-depth changes across it
    assert abs(lm.surface_mm[0, 2] - BOX_TOP_Z_MM) < 8.0
    # with a mask that excludes the box, the table
    lm_t = lift_landmarks(
        _lm2(["p"], [[u_edge, v_mid]]), frame, CAL, patient_mask=~on_box, settings=NO_OFFSETS
    )
    assert abs(lm_t.surface_mm[0, 2] - PLANE_Z_MM) < 5.0
    # with an empty mask, nothing: NaN and confidence 0
    lm_n = lift_landmarks(_lm2(["p"], [[u_edge, v_mid]]), frame, CAL, patient_mask=np.zeros_like(on_box))
    assert np.isnan(lm_n.points_mm).all() and lm_n.confidence.tolist() == [0.0]


def test_lift_landmarks_offsets_with_and_without_table_top():
    depth, on_box, _ = _scene()
    frame = _frame(depth)
    vv, uu = np.nonzero(on_box)
    u, v = int(np.median(uu)), int(np.median(vv))
    settings = LiftSettings(offsets={"left_hip": DepthOffset(fraction=0.5, max_mm=80.0, fixed_mm=30.0)})
    lm2 = _lm2(["left_hip", "left_heel"], [[u, v], [u, v]])
    thick = BOX_TOP_Z_MM - PLANE_Z_MM  # 220 mm
    with_table = lift_landmarks(lm2, frame, CAL, table_top_z_mm=PLANE_Z_MM, settings=settings)
    drop = with_table.surface_mm[0, 2] - with_table.points_mm[0, 2]
    assert drop == pytest.approx(min(0.5 * thick, 80.0), abs=1.5)  # capped at max_mm
    # the point moved along the viewing ray (further from the camera, same pixel)
    cam = CAL.to_camera(with_table.points_mm[0])
    assert K.fx * cam[0] / cam[2] + K.ppx == pytest.approx(u, abs=1e-6)
    assert K.fy * cam[1] / cam[2] + K.ppy == pytest.approx(v, abs=1e-6)
    # no entry for the heel: no offset
    np.testing.assert_allclose(with_table.points_mm[1], with_table.surface_mm[1])
    no_table = lift_landmarks(lm2, frame, CAL, settings=settings)
    assert no_table.surface_mm[0, 2] - no_table.points_mm[0, 2] == pytest.approx(30.0, abs=1e-6)
    down = lift_landmarks(lm2, frame, CAL, settings=dataclasses.replace(settings, offset_direction="down"))
    np.testing.assert_allclose(down.points_mm[0, :2], down.surface_mm[0, :2])
    assert down.surface_mm[0, 2] - down.points_mm[0, 2] == pytest.approx(30.0)


def test_lift_landmarks_missing_and_holes_get_nan_and_zero_confidence():
    depth, _, _ = _scene()
    depth[10:20, 10:20] = 0  # a hole
    lm2 = _lm2(["a", "b", "c"], [[15, 15], [np.nan, np.nan], [50, 30]], [0.9, 0.0, 0.8])
    lm = lift_landmarks(lm2, _frame(depth), CAL)
    assert lm.confidence.tolist() == [0.0, 0.0, 0.8]
    assert np.isnan(lm.points_mm[:2]).all() and np.isfinite(lm.points_mm[2]).all()
    np.testing.assert_allclose(lm.uv_px[2], [50, 30])


def test_lift_landmarks_rejects_other_image_shape():
    lm2 = Landmarks2D(names=("a",), uv_px=[[1.0, 1.0]], confidence=[1.0], backend="t", image_shape=(480, 848))
    with pytest.raises(ValueError, match="aligned to depth"):
        lift_landmarks(lm2, _frame(_scene()[0]), CAL)


# ------------------------------------------------------------------------------------------ offsets


def test_depth_offset_delta():
    off = DepthOffset(fraction=0.5, max_mm=80.0, fixed_mm=30.0, min_mm=10.0)
    np.testing.assert_allclose(
        off.delta_mm(np.array([0.0, 100.0, 400.0, -5.0, np.nan])), [10, 50, 80, 10, 30]
    )
    assert float(off.delta_mm(None)) == 30.0


@pytest.mark.parametrize(
    "kw",
    [
        {"fraction": -0.1, "max_mm": 1, "fixed_mm": 1},
        {"fraction": 1.5, "max_mm": 1, "fixed_mm": 1},
        {"fraction": 0.5, "max_mm": 1, "fixed_mm": 1, "min_mm": 2},
        {"fraction": 0.5, "max_mm": 1, "fixed_mm": -1},
    ],
)
def test_depth_offset_invalid(kw):
    with pytest.raises(ValueError):
        DepthOffset(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"window_radius_px": -1},
        {"window_radius_px": 2.5},
        {"cluster_gap_mm": 0},
        {"min_cluster_fraction": 1.5},
        {"min_valid_px": 0},
        {"offset_direction": "up"},
        {"min_ray_down_cos": 0},
    ],
)
def test_lift_settings_invalid(kw):
    with pytest.raises(ValueError):
        LiftSettings(**kw)


def test_joint_offsets_mm():
    offs = {"a": DepthOffset(fraction=0.5, max_mm=60.0, fixed_mm=25.0)}
    np.testing.assert_allclose(
        joint_offsets_mm(["a", "b"], np.array([0.0, 0.0]), table_top_z_mm=-100, offsets=offs), [50, 0]
    )
    np.testing.assert_allclose(joint_offsets_mm(["a", "b"], np.array([0.0, 0.0]), offsets=offs), [25, 0])
    with pytest.raises(ValueError, match="surface_z_mm"):
        joint_offsets_mm(["a"], np.zeros(2))


def test_push_inward_ray_drops_exactly_and_grazing_falls_back_to_down():
    cam = np.array([[100.0, -50.0, 1500.0], [0.0, 0.0, 1000.0]])
    out = push_inward(cam, np.array([40.0, 0.0]), SCANNER_FROM_CAMERA)
    surface = CAL.to_scanner(cam)
    assert surface[0, 2] - out[0, 2] == pytest.approx(40.0)
    np.testing.assert_allclose(out[1], surface[1])
    ray = CAL.to_camera(out[0])
    np.testing.assert_allclose(ray / ray[2], cam[0] / cam[0, 2])  # same viewing ray
    # a camera looking horizontally: every ray is grazing, the point moves straight down
    side = np.eye(4)
    side[:3, :3] = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # cam z -> +y, cam y -> -z
    o2 = push_inward(np.array([[0.0, 0.0, 1000.0]]), np.array([30.0]), side)
    np.testing.assert_allclose(o2[0], [0.0, 1000.0, -30.0])


def test_calibrated_tables_cover_coco_and_depth_offsets_for():
    for table in (SUPINE_DEPTH_OFFSETS, PRONE_DEPTH_OFFSETS, DECUBITUS_LEFT_DEPTH_OFFSETS):
        assert set(table) == set(COCO_LANDMARKS)
    assert DEFAULT_DEPTH_OFFSETS is SUPINE_DEPTH_OFFSETS
    assert (
        depth_offsets_for("HFS") is SUPINE_DEPTH_OFFSETS and depth_offsets_for(None) is SUPINE_DEPTH_OFFSETS
    )
    assert depth_offsets_for("FFP") is PRONE_DEPTH_OFFSETS
    assert depth_offsets_for("HFDL") is DECUBITUS_LEFT_DEPTH_OFFSETS
    assert depth_offsets_for("FFDR") is DECUBITUS_RIGHT_DEPTH_OFFSETS
    # lying on the left side: the left shoulder is the hidden, lower one
    assert DECUBITUS_LEFT_DEPTH_OFFSETS["left_shoulder"] == DECUBITUS_RIGHT_DEPTH_OFFSETS["right_shoulder"]
    assert DECUBITUS_LEFT_DEPTH_OFFSETS["left_shoulder"].delta_mm(400.0) > DECUBITUS_LEFT_DEPTH_OFFSETS[
        "right_shoulder"
    ].delta_mm(400.0)
    # prone, the nose lies far below the back of the head
    assert PRONE_DEPTH_OFFSETS["nose"].delta_mm(150.0) > 100 > SUPINE_DEPTH_OFFSETS["nose"].delta_mm(150.0)
    assert LiftSettings().offset_for("left_heel") is GENERIC_DEPTH_OFFSET


def test_reoffset_matches_lifting_with_those_offsets():
    depth, on_box, _ = _scene()
    frame = _frame(depth)
    vv, uu = np.nonzero(on_box)
    lm2 = _lm2(["left_hip", "nose"], [[np.median(uu), np.median(vv)], [5.0, 5.0]])
    supine = lift_landmarks(lm2, frame, CAL, table_top_z_mm=PLANE_Z_MM)
    prone = lift_landmarks(
        lm2, frame, CAL, table_top_z_mm=PLANE_Z_MM, settings=LiftSettings(offsets=PRONE_DEPTH_OFFSETS)
    )
    re = reoffset_landmarks(supine, CAL, offsets=PRONE_DEPTH_OFFSETS, table_top_z_mm=PLANE_Z_MM)
    np.testing.assert_allclose(re.points_mm, prone.points_mm, atol=1e-6)
    np.testing.assert_allclose(re.surface_mm, supine.surface_mm)


# -------------------------------------------------------------------------------------- Landmarks3D


def test_landmarks3d_validation_and_helpers():
    lm = Landmarks3D(
        names=("a", "b"), points_mm=[[1.0, 2.0, 3.0], [np.nan, 0, 0]],
        surface_mm=[[1.0, 2.0, 4.0], [0, 0, 0]], confidence=[0.5, 0.9], uv_px=[[1.0, 1.0], [2.0, 2.0]],
        backend="t",
    )  # fmt: skip
    assert lm.confidence.tolist() == [0.5, 0.0]  # a NaN point has confidence 0
    assert np.isnan(lm.points_mm[1]).all()
    assert not lm.points_mm.flags.writeable and not lm.confidence.flags.writeable
    assert lm.to_dict() == {"a": [1.0, 2.0, 3.0]} and "a" in lm and len(lm) == 2
    assert lm.conf("zz") == 0.0 and lm.point("a").tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(KeyError):
        lm.index("zz")
    with pytest.raises(ValueError, match="unique"):
        Landmarks3D(names=("a", "a"), points_mm=np.zeros((2, 3)), surface_mm=np.zeros((2, 3)),
                    confidence=[1, 1], uv_px=np.zeros((2, 2)))  # fmt: skip
    with pytest.raises(ValueError, match="points_mm must be"):
        Landmarks3D(names=("a",), points_mm=np.zeros((1, 2)), surface_mm=np.zeros((1, 3)), confidence=[1],
                    uv_px=np.zeros((1, 2)))  # fmt: skip
    with pytest.raises(ValueError, match="confidence"):
        Landmarks3D(names=("a",), points_mm=np.zeros((1, 3)), surface_mm=np.zeros((1, 3)), confidence=[2],
                    uv_px=np.zeros((1, 2)))  # fmt: skip


# ----------------------------------------------------------------------- simulated session (one case)


@pytest.fixture(scope="module")
def hfs_session():
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session("hfs-arms-down", 7)
    frame, truth = SimulatedSession(spec).frame(0)
    return spec, frame, truth


def test_lifting_truth_pixels_on_simulated_session(hfs_session):
    """With the truth keypoints' own pixels, lifting (depth + offsets) lands near the truth joints.

    This isolates lifting from the 2-D detector: the errors are the surface-to-joint model's."""
    spec, frame, truth = hfs_session
    cal = spec.rig.calibration()
    names = COCO_LANDMARKS
    kp = np.array([truth.keypoints_mm[n] for n in names])
    cam = cal.to_camera(kp)
    uv = np.stack([frame.intrinsics.fx * cam[:, 0] / cam[:, 2] + frame.intrinsics.ppx,
                   frame.intrinsics.fy * cam[:, 1] / cam[:, 2] + frame.intrinsics.ppy], axis=1)  # fmt: skip
    lm2 = Landmarks2D(names=names, uv_px=uv, confidence=np.ones(len(names)), backend="truth",
                      image_shape=frame.depth_mm.shape)  # fmt: skip
    lm = lift_landmarks(lm2, frame, cal, table_top_z_mm=spec.room.mattress_top_z_mm)
    err = np.linalg.norm(lm.points_mm - kp, axis=1)
    trunk = [names.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    assert np.nanmax(err[trunk]) < 35.0, dict(zip(names, err.round(1), strict=True))
    assert np.nanmedian(err) < 25.0, dict(zip(names, err.round(1), strict=True))


# ===================================================================================== offline tools

#: Sessions of the offset calibration (disjoint from the benchmark's seeds 100-101).
CALIBRATION_CASES = [
    (pos, arms, seed)
    for seed in range(200, 206)
    for pos in ("HFS", "HFP", "FFS", "FFP")
    for arms in ("raised", "sides", "chest")
] + [
    (pos, arms, seed)
    for seed in range(200, 203)
    for pos in ("HFDL", "HFDR", "FFDL", "FFDR")
    for arms in ("raised", "sides")
]
#: Sessions of the benchmark: seeds 300-302 were held out of both the offset calibration (200-205) and the
#: design of the orientation rules (100-101, 200-205).
BENCHMARK_CASES = [
    (pos, arms, seed)
    for seed in (300, 301)
    for pos in ("HFS", "HFP", "FFS", "FFP")
    for arms in ("raised", "sides")
] + [("HFS", "chest", 300), ("FFS", "chest", 301), ("HFDL", "raised", 302), ("HFDR", "raised", 302),
     ("FFDL", "sides", 302), ("FFDR", "sides", 302)]  # fmt: skip


def simulate(position: str, arms: str, seed: int):
    """One simulated frame of a patient in ``position`` with ``arms``: ``(spec, frame, truth)``.

    The phenotype, room and rig are drawn from the ``hfs-arms-up`` scenario with ``seed``; position and
    arms are then set (so every position sees the same bodies)."""
    from positioning.sim.body import ArmPose
    from positioning.sim.placement import PatientPosition
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session("hfs-arms-up", seed)
    placement = dataclasses.replace(spec.placement, position=PatientPosition(position), arms=ArmPose(arms))
    spec = dataclasses.replace(spec, placement=placement)
    frame, truth = SimulatedSession(spec).frame(0)
    return spec, frame, truth


def _posture_group(position: str, name: str) -> str:
    if position.endswith("S"):
        return "supine"
    if position.endswith("P"):
        return "prone"
    down = "left_" if position.endswith("DL") else "right_"
    return "decubitus_down" if name.startswith(down) else "decubitus_up"


def calibrate(cases=CALIBRATION_CASES) -> str:  # pragma: no cover - offline tool
    """Fit the surface-to-joint offsets; returns the Python block pasted into lifting.py."""
    from positioning.sim.room import Label

    groups = ("nose", "eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    data: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for i, (pos, arms, seed) in enumerate(cases):
        spec, frame, truth = simulate(pos, arms, seed)
        cal = spec.rig.calibration()
        kp = np.array([truth.keypoints_mm[n] for n in COCO_LANDMARKS])
        cam = cal.to_camera(kp)
        k = frame.intrinsics
        uv = np.stack([k.fx * cam[:, 0] / cam[:, 2] + k.ppx, k.fy * cam[:, 1] / cam[:, 2] + k.ppy], axis=1)
        z = robust_depth_mm(frame.depth_mm, uv, radius_px=3, mask=truth.label == Label.PATIENT)
        surf = cal.to_scanner(deproject_pixels(uv, z, k))
        for j, name in enumerate(COCO_LANDMARKS):
            group = name.replace("left_", "").replace("right_", "")
            key = (_posture_group(pos, name), group)
            data.setdefault(key, []).append((surf[j, 2] - kp[j, 2], surf[j, 2] - spec.room.mattress_top_z_mm))
        print(f"[{i + 1}/{len(cases)}] {pos} {arms} {seed}", file=sys.stderr)
    lines = ["_OFFSET_GROUPS: dict[str, dict[str, DepthOffset]] = {"]
    for posture in ("supine", "prone", "decubitus_up", "decubitus_down"):
        lines.append(f'    "{posture}": {{')
        for group in groups:
            key = (posture, group) if (posture, group) in data else ("decubitus_up", group)
            a = np.array(data[key])
            a = a[np.all(np.isfinite(a), axis=1)]
            drop, thick = a[:, 0], np.maximum(a[:, 1], 0.0)
            fixed = float(np.median(drop))
            best = (np.mean(np.minimum(np.abs(drop - fixed), 60.0)), 0.0, fixed, fixed)  # a constant
            for frac in np.arange(0.0, 1.001, 0.05):
                for mx in np.arange(0.0, 401.0, 5.0):
                    cost = np.mean(np.minimum(np.abs(drop - np.clip(frac * thick, 0.0, mx)), 60.0))
                    if cost < best[0] - 1e-9:
                        best = (cost, float(frac), float(mx), 0.0)
            _, frac, mx, mn = best
            res = np.abs(drop - np.clip(frac * thick, mn, mx))
            lines.append(
                f'        "{group}": _offset({frac:.2f}, {mx:.0f}.0, {round(fixed):.0f}.0'
                + (f", {mn:.0f}.0)," if mn else "),")
                + f"  # n={len(a)}, residual {np.median(res):.0f}/{np.percentile(res, 90):.0f}"
            )
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines)


def benchmark(cases=BENCHMARK_CASES) -> str:  # pragma: no cover - offline tool
    """Full pipeline (MediaPipe -> lift -> orientation -> re-offset -> repair) against truth keypoints.

    Inputs besides the frame: by default the table top from the scenario and no patient mask; with
    ``--ideal-mask`` also the truth label as the patient mask (an ideal segmentation); with
    ``--segmentation`` the table top, patient mask and patient points of
    :func:`positioning.perception.segmentation.segment_frame` (no truth in the pipeline at all)."""
    from positioning.errors import PositioningError
    from positioning.perception.landmarks import MediaPipePoseBackend
    from positioning.perception.orientation import (
        BODY_AXES,
        PatientPosition,
        estimate_arm_state,
        estimate_orientation,
        swap_left_right,
    )
    from positioning.perception.repair import repair_landmarks
    from positioning.perception.segmentation import segment_frame
    from positioning.sim.room import Label

    ideal_mask = "--ideal-mask" in sys.argv
    use_segmentation = "--segmentation" in sys.argv
    groups = {
        "head (nose, eyes, ears)": ("nose", "eye", "ear"),
        "shoulders": ("shoulder",),
        "elbows": ("elbow",),
        "wrists": ("wrist",),
        "hips": ("hip",),
        "knees": ("knee",),
        "ankles": ("ankle",),
    }
    errs: dict[str, dict[str, list[float]]] = {"supine": {}, "prone": {}, "decubitus": {}}
    bias: dict[str, list[np.ndarray]] = {}  # signed error in body axes (superior, anterior, left)
    truth_px: dict[str, list[float]] = {}
    rows = []
    with MediaPipePoseBackend() as backend:
        for pos, arms, seed in cases:
            spec, frame, truth = simulate(pos, arms, seed)
            cal = spec.rig.calibration()
            table_z = spec.room.mattress_top_z_mm
            mask = truth.label == Label.PATIENT if ideal_mask else None
            points, note = None, ""
            if use_segmentation:
                try:
                    table, segment = segment_frame(frame, cal, stride=2)
                    table_z, mask, points = table.top_z_mm, segment.mask, segment.points_mm
                except PositioningError as e:  # carry on without table and mask, and say so
                    table_z, note = None, f" [segmentation failed: {e.code}: {str(e)[:150]}]"
            lm2 = backend.detect(frame.color_rgb)
            if lm2 is None:
                rows.append(f"{pos:5s} {arms:6s} {seed}: no person found")
                continue
            lm3 = lift_landmarks(lm2, frame, cal, table_top_z_mm=table_z, patient_mask=mask)
            o = estimate_orientation(lm3, patient_points_mm=points)
            if o.labels_swapped:
                lm3 = swap_left_right(lm3)
            lm3 = reoffset_landmarks(lm3, cal, offsets=depth_offsets_for(o.position), table_top_z_mm=table_z)
            rep = repair_landmarks(
                lm3, frame, cal, table_top_z_mm=table_z, patient_mask=mask, patient_points_mm=points,
                lift_settings=LiftSettings(offsets=depth_offsets_for(o.position)),
            )  # fmt: skip
            lm3 = rep.landmarks
            a = estimate_arm_state(lm3, o)
            ok_pos, ok_arm = str(o.position) == pos, str(a.state) == arms
            rows.append(
                f"{pos:5s} {arms:6s} {seed}: position {o.position!s:5s} ({o.confidence:.2f}) "
                f"{'ok ' if ok_pos else 'BAD'}  arms {a.state!s:6s} ({a.confidence:.2f}) "
                f"{'ok ' if ok_arm else 'BAD'}  labels swapped {o.labels_swapped!s:5s} "
                f"repairs {rep.changed()}{note}"
            )
            kind = "decubitus" if "D" in pos[2:] else ("supine" if pos.endswith("S") else "prone")
            sup_ax, post_ax, left_ax = BODY_AXES[PatientPosition(pos)]
            for i, name in enumerate(lm3.names):
                if name not in COCO_LANDMARKS or not lm3.confidence[i] > 0:
                    continue
                group = name.replace("left_", "").replace("right_", "")
                label = next(g for g, members in groups.items() if group in members)
                e = float(np.linalg.norm(lm3.points_mm[i] - truth.keypoints_mm[name]))
                errs[kind].setdefault(label, []).append(e)
                d = lm3.points_mm[i] - truth.keypoints_mm[name]
                if kind != "decubitus":
                    bias.setdefault(label, []).append(np.array([d @ sup_ax, -(d @ post_ax), d @ left_ax]))
            # lifting alone: the truth keypoints' pixels
            kp = np.array([truth.keypoints_mm[n] for n in COCO_LANDMARKS])
            cam = cal.to_camera(kp)
            k = frame.intrinsics
            uv = np.stack([k.fx * cam[:, 0] / cam[:, 2] + k.ppx, k.fy * cam[:, 1] / cam[:, 2] + k.ppy], 1)
            lt = lift_landmarks(
                Landmarks2D(names=COCO_LANDMARKS, uv_px=uv, confidence=np.ones(17), backend="truth",
                            image_shape=frame.depth_mm.shape),
                frame, cal, table_top_z_mm=table_z, patient_mask=mask,
                settings=LiftSettings(offsets=depth_offsets_for(pos)),
            )  # fmt: skip
            if kind != "decubitus":
                for i, name in enumerate(COCO_LANDMARKS):
                    group = name.replace("left_", "").replace("right_", "")
                    label = next(g for g, members in groups.items() if group in members)
                    truth_px.setdefault(label, []).append(float(np.linalg.norm(lt.points_mm[i] - kp[i])))
    source = "segment_frame" if use_segmentation else "the scenario" + (" + truth mask" if ideal_mask else "")
    out = [f"Cases (MediaPipe on the colour image, lifted; table top and mask from {source}):", *rows, ""]

    def table(title: str, d: dict[str, list[float]]) -> None:
        out.append(title)
        out.append(f"{'group':26s} {'n':>4s} {'median':>8s} {'p95':>8s}")
        for g in groups:
            v = np.asarray(d.get(g, []))
            v = v[np.isfinite(v)]
            if len(v):
                out.append(f"{g:26s} {len(v):4d} {np.median(v):8.1f} {np.percentile(v, 95):8.1f}")
        out.append("")

    table("3-D error, full pipeline, supine (mm):", errs["supine"])
    table("3-D error, full pipeline, prone (mm):", errs["prone"])
    table("3-D error, full pipeline, decubitus (mm):", errs["decubitus"])
    out.append("Mean signed error (pipeline - truth), supine + prone, body axes (mm):")
    out.append(f"{'group':26s} {'superior':>9s} {'anterior':>9s} {'left':>9s}")
    for g in groups:
        if g in bias:
            m = np.nanmean(np.array(bias[g]), axis=0)
            out.append(f"{g:26s} {m[0]:9.1f} {m[1]:9.1f} {m[2]:9.1f}")
    out.append("")
    table("3-D error, lifting only (truth pixels, true posture's offsets), supine + prone (mm):", truth_px)
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    if "--calibrate" in sys.argv:
        print(calibrate())
    elif "--benchmark" in sys.argv:
        print(benchmark())
    else:
        print(__doc__)
