"""Tests of positioning.perception.repair: checks, re-sampling, mirroring and dropping of landmarks.

The scene: a lopsided, tilted camera (fx != fy, ppx != W/2) above a table plane with a box on it (the
"body"); every expected answer is analytic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from positioning.frames import Calibration, Intrinsics, RGBDFrame
from positioning.perception.landmarks import Landmarks2D
from positioning.perception.lifting import Landmarks3D, LiftSettings, lift_landmarks
from positioning.perception.repair import (
    LandmarkIssue,
    RepairAction,
    RepairSettings,
    find_issues,
    mirror_points,
    nearest_distance_mm,
    repair_landmarks,
    walk_to_body,
)

K = Intrinsics(width=120, height=90, fx=95.0, fy=120.0, ppx=52.7, ppy=47.1)
TABLE_Z_MM = -100.0
BOX_TOP_Z_MM = 120.0
BOX_X_MM, BOX_Y_MM = (-150.0, 120.0), (-260.0, 40.0)
NO_OFFSETS = LiftSettings(offsets={})


def _camera() -> np.ndarray:
    c, s = math.cos(math.radians(15.0)), math.sin(math.radians(15.0))
    tilt = np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    down = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    m = np.eye(4)
    m[:3, :3] = tilt @ down
    m[:3, 3] = [20.0, -420.0, 1300.0]
    return m


CAL = Calibration(scanner_from_camera=_camera(), method="test")


def _scene() -> tuple[RGBDFrame, np.ndarray, np.ndarray]:
    """Frame, box pixel mask and the box top's scanner points."""
    m = CAL.scanner_from_camera
    vv, uu = np.mgrid[0 : K.height, 0 : K.width].astype(np.float64)
    rays = np.stack([(uu - K.ppx) / K.fx, (vv - K.ppy) / K.fy, np.ones_like(uu)], axis=-1) @ m[:3, :3].T
    cam = m[:3, 3]
    depth = (TABLE_Z_MM - cam[2]) / rays[..., 2]
    t_box = (BOX_TOP_Z_MM - cam[2]) / rays[..., 2]
    hit = cam + t_box[..., None] * rays
    on_box = (
        (hit[..., 0] > BOX_X_MM[0]) & (hit[..., 0] < BOX_X_MM[1])
        & (hit[..., 1] > BOX_Y_MM[0]) & (hit[..., 1] < BOX_Y_MM[1])
    )  # fmt: skip
    depth[on_box] = t_box[on_box]
    frame = RGBDFrame(depth_mm=np.round(depth).astype(np.uint16), intrinsics=K)
    return frame, on_box, hit[on_box]


FRAME, ON_BOX, BOX_POINTS = _scene()


def _px(x_mm: float, y_mm: float, z_mm: float) -> list[float]:
    c = CAL.to_camera(np.array([x_mm, y_mm, z_mm]))
    return [K.fx * c[0] / c[2] + K.ppx, K.fy * c[1] / c[2] + K.ppy]


def _lift(names, scanner_pts, conf=None) -> Landmarks3D:
    uv = np.array([_px(*p) if p is not None else [np.nan, np.nan] for p in scanner_pts])
    conf = np.where(np.isfinite(uv[:, 0]), 0.9, 0.0) if conf is None else np.asarray(conf, float)
    lm2 = Landmarks2D(names=tuple(names), uv_px=uv, confidence=conf, backend="t", image_shape=K.shape)
    return lift_landmarks(lm2, FRAME, CAL, table_top_z_mm=TABLE_Z_MM, settings=NO_OFFSETS)


def _repair(lm, **kw):
    kw.setdefault("lift_settings", NO_OFFSETS)
    return repair_landmarks(lm, FRAME, CAL, **kw)


def test_scene_sanity():
    assert 0.03 < ON_BOX.mean() < 0.6
    lm = _lift(["a", "b"], [(0.0, -100.0, BOX_TOP_Z_MM), (350.0, -100.0, TABLE_Z_MM)])
    np.testing.assert_allclose(lm.points_mm[0], [0.0, -100.0, BOX_TOP_Z_MM], atol=3.0)
    np.testing.assert_allclose(lm.points_mm[1], [350.0, -100.0, TABLE_Z_MM], atol=3.0)


def test_good_landmark_kept_unchanged():
    lm = _lift(["nose"], [(0.0, -100.0, BOX_TOP_Z_MM)])
    res = _repair(lm, table_top_z_mm=TABLE_Z_MM, patient_mask=ON_BOX, patient_points_mm=BOX_POINTS)
    assert res.reasons() == {"nose": "ok:kept"} and res.changed() == {}
    np.testing.assert_array_equal(res.landmarks.points_mm, lm.points_mm)
    assert res.landmarks.confidence.tolist() == lm.confidence.tolist()


@pytest.mark.parametrize(
    ("kw", "issue"),
    [
        ({"table_top_z_mm": TABLE_Z_MM}, "on_table"),
        ({"patient_mask": ON_BOX}, "off_body"),
        ({"patient_points_mm": BOX_POINTS}, "far_from_body"),
    ],
)
def test_landmark_beside_the_body_is_resampled_onto_it(kw, issue):
    # a wrist 60 mm beside the box (on the table), body centre at the other landmarks
    names = ["left_wrist", "left_hip", "right_hip", "nose"]
    pts = [(180.0, -100.0, TABLE_Z_MM), (60.0, -200.0, BOX_TOP_Z_MM), (-100.0, -200.0, BOX_TOP_Z_MM),
           (-20.0, 0.0, BOX_TOP_Z_MM)]  # fmt: skip
    lm = _lift(names, pts)
    res = _repair(lm, **kw)
    r = res.repairs[0]
    assert r.code == f"{issue}:resampled", res.reasons()
    assert r.issue == LandmarkIssue(issue) and r.action is RepairAction.RESAMPLED
    assert 0 < r.moved_px <= RepairSettings().search_px
    p = res.landmarks.point("left_wrist")
    # on the box top, at its edge (within the lifting window's reach of the silhouette: 3 px of ~12 mm)
    assert abs(p[2] - BOX_TOP_Z_MM) < 8.0 and BOX_X_MM[1] - 40 < p[0] < BOX_X_MM[1] + 40
    assert res.landmarks.conf("left_wrist") == pytest.approx(0.9 * 0.7)
    # its pixel moved toward the body, and the others are untouched
    assert not np.allclose(res.landmarks.uv_px[0], lm.uv_px[0])
    assert [x.code for x in res.repairs[1:]] == ["ok:kept"] * 3


def test_no_depth_is_resampled_from_nearby_valid_depth():
    depth = FRAME.depth_mm.copy()
    u, v = (round(c) for c in _px(0.0, -100.0, BOX_TOP_Z_MM))
    depth[v - 5 : v + 6, u - 5 : u + 6] = 0  # a hole at the landmark, on the body
    frame = RGBDFrame(depth_mm=depth, intrinsics=K)
    names = ["nose", "left_hip", "right_hip"]
    uv = np.array([[u, v], _px(60.0, -200.0, BOX_TOP_Z_MM), _px(-100.0, -200.0, BOX_TOP_Z_MM)])
    lm2 = Landmarks2D(
        names=tuple(names), uv_px=uv, confidence=[0.8, 0.9, 0.9], backend="t", image_shape=K.shape
    )
    lm = lift_landmarks(lm2, frame, CAL, settings=NO_OFFSETS)
    assert lm.confidence[0] == 0.0  # lifting could not place it
    res = repair_landmarks(lm, frame, CAL, lift_settings=NO_OFFSETS)
    assert res.repairs[0].code == "no_depth:resampled"
    assert abs(res.landmarks.point("nose")[2] - BOX_TOP_Z_MM) < 10.0  # one-sided window at the hole's edge
    # lifting zeroed the confidence, the repair starts again from the backend's 0.8
    assert res.landmarks.conf("nose") == pytest.approx(0.8 * 0.7)


def test_far_landmark_is_mirrored_from_its_partner():
    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    pts = [(420.0, 0.0, TABLE_Z_MM), (-100.0, 0.0, BOX_TOP_Z_MM), (60.0, -200.0, BOX_TOP_Z_MM),
           (-100.0, -200.0, BOX_TOP_Z_MM)]  # fmt: skip
    lm = _lift(names, pts)
    res = _repair(lm, table_top_z_mm=TABLE_Z_MM, settings=RepairSettings(resample=False))
    assert res.reasons()["left_shoulder"] == "on_table:mirrored"
    # mirror plane: normal along the hips' left - right (about x), through their midpoint (about x = -20)
    out = res.landmarks
    n = out.point("left_hip") - out.point("right_hip")
    n /= np.linalg.norm(n)
    c = (out.point("left_hip") + out.point("right_hip")) / 2
    r = out.point("right_shoulder")
    np.testing.assert_allclose(out.point("left_shoulder"), r - 2 * ((r - c) @ n) * n, atol=1e-9)
    assert out.point("left_shoulder")[0] == pytest.approx(60.0, abs=5.0)
    assert res.landmarks.conf("left_shoulder") == pytest.approx(0.9 * 0.5)
    assert np.isnan(res.landmarks.uv_px[0]).all()  # no pixel for a mirrored landmark


def test_unrepairable_landmarks_are_dropped_with_a_reason():
    names = ["left_wrist", "right_wrist", "left_ankle"]
    pts = [(450.0, -100.0, TABLE_Z_MM), None, (-100.0, -100.0, BOX_TOP_Z_MM)]
    lm = _lift(names, pts)
    res = _repair(lm, table_top_z_mm=TABLE_Z_MM, settings=RepairSettings(search_px=3))
    assert res.reasons() == {
        "left_wrist": "on_table:dropped",  # too far to walk, wrists are not mirrored
        "right_wrist": "not_detected:dropped",
        "left_ankle": "ok:kept",
    }
    assert np.isnan(res.landmarks.points_mm[:2]).all() and res.landmarks.confidence[:2].tolist() == [0, 0]


def test_find_issues_order_and_thresholds():
    lm = _lift(["a", "b", "c"], [(0.0, -100.0, BOX_TOP_Z_MM), (300.0, -100.0, TABLE_Z_MM), None])
    assert find_issues(lm) == [LandmarkIssue.NONE, LandmarkIssue.NONE, LandmarkIssue.NOT_DETECTED]
    issues = find_issues(lm, table_top_z_mm=TABLE_Z_MM, patient_mask=ON_BOX, patient_points_mm=BOX_POINTS)
    assert issues[:2] == [LandmarkIssue.NONE, LandmarkIssue.ON_TABLE]  # on-table wins over off-body
    # the margin: 25 mm above the "table" passes, 5 mm does not (default margin 15 mm)
    assert find_issues(lm, table_top_z_mm=BOX_TOP_Z_MM - 25.0)[0] is LandmarkIssue.NONE
    assert find_issues(lm, table_top_z_mm=BOX_TOP_Z_MM - 5.0)[0] is LandmarkIssue.ON_TABLE


def test_pure_helpers():
    d = nearest_distance_mm(
        np.array([[0.0, 0, 0], [np.nan, 0, 0]]), np.array([[3.0, 4.0, 0.0], [10, 0, 0]]), chunk=1
    )
    assert d[0] == 5.0 and np.isnan(d[1])
    assert np.isinf(nearest_distance_mm(np.zeros((1, 3)), np.zeros((0, 3))))[0]
    np.testing.assert_allclose(
        mirror_points(np.array([[1.0, 2.0, 3.0]]), np.array([0, 0, 1.0]), [0, 0, 5.0]), [[1, 2, -1]]
    )
    hit = walk_to_body(np.array([0.0, 0.0]), np.array([10.0, 0.0]), lambda uv: uv[0] >= 4.0, search_px=8)
    np.testing.assert_allclose(hit, [4.0, 0.0])
    assert (
        walk_to_body(np.array([0.0, 0.0]), np.array([10.0, 0.0]), lambda uv: uv[0] >= 4.0, search_px=3)
        is None
    )
    assert walk_to_body(np.array([0.0, 0.0]), np.array([0.0, 0.0]), lambda uv: True, search_px=3) is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"table_margin_mm": -1.0}, "table_margin_mm"),
        ({"max_distance_mm": 0.0}, "max_distance_mm"),
        ({"search_px": -1}, "search_px"),
        ({"resample_confidence_factor": 1.5}, "resample_confidence_factor"),
        ({"mirror_confidence_factor": -0.1}, "mirror_confidence_factor"),
    ],
)
def test_settings_invalid(kw, match):
    with pytest.raises(ValueError, match=match):
        RepairSettings(**kw)


def test_repair_invalid_inputs():
    lm = _lift(["a"], [(0.0, -100.0, BOX_TOP_Z_MM)])
    with pytest.raises(ValueError, match="patient_mask shape"):
        repair_landmarks(lm, FRAME, CAL, patient_mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="patient_points_mm"):
        repair_landmarks(lm, FRAME, CAL, patient_points_mm=np.zeros((3, 2)))


# ------------------------------------------------------------------------------ simulated session


@pytest.fixture(scope="module")
def sim_arms_down():
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session("hfs-arms-down", 11)
    frame, _truth = SimulatedSession(spec).frame(0)
    return spec, frame


def test_no_repaired_landmark_lies_on_the_table_in_a_simulated_session(sim_arms_down):
    """Regression: wrists beside the hips were lifted onto the mattress. After repair, every landmark
    that is passed on lies above the table, and each one that is not has a reason."""
    from positioning.perception.landmarks import MediaPipePoseBackend, default_model_path

    if not default_model_path().is_file():
        pytest.skip("MediaPipe model not built (python -m positioning.perception.landmarks.model_build)")
    spec, frame = sim_arms_down
    cal = spec.rig.calibration()
    table_z = spec.room.mattress_top_z_mm  # stand-in for the table-plane estimate
    with MediaPipePoseBackend() as backend:
        lm2 = backend.detect(frame.color_rgb)
    assert lm2 is not None
    # push the left wrist 30 px away from the body, onto the table: it must not be passed on there
    uv = lm2.uv_px.copy()
    centre = np.nanmean(
        uv[[lm2.index(n) for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")]], 0
    )
    i = lm2.index("left_wrist")
    away = (uv[i] - centre) * np.array([0.0, 1.0])  # lateral in the image (the body lies along u)
    for push_px in (30.0, 45.0, 60.0, 80.0):  # far enough off the hand to land on the mattress
        moved = uv.copy()
        moved[i] += push_px * away / np.linalg.norm(away)
        lm = lift_landmarks(dataclasses.replace(lm2, uv_px=moved), frame, cal, table_top_z_mm=table_z)
        if lm.surface_mm[i, 2] - table_z < RepairSettings().table_margin_mm:
            break
    assert lm.surface_mm[i, 2] - table_z < RepairSettings().table_margin_mm  # it is on the table now
    res = repair_landmarks(lm, frame, cal, table_top_z_mm=table_z)
    out = res.landmarks
    assert res.repairs[i].issue is LandmarkIssue.ON_TABLE and res.repairs[i].action is not RepairAction.KEPT
    passed_on = out.valid()
    assert np.all(out.surface_mm[passed_on, 2] - table_z >= RepairSettings().table_margin_mm - 1e-9)
    for r, ok in zip(res.repairs, passed_on, strict=True):
        if r.issue is not LandmarkIssue.NONE:
            assert r.action is not RepairAction.KEPT, r
        assert ok == (r.action is not RepairAction.DROPPED), r
