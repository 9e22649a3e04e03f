"""The simulated camera rig: RealSense intrinsics, look-at poses, the default view, its calibration file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from positioning.errors import CalibrationError
from positioning.frames import Calibration, Intrinsics
from positioning.sim.rig import CAMERA_MODELS, CameraRig, look_at, model_intrinsics


def project(k: Intrinsics, scanner_from_camera: np.ndarray, p_scanner) -> tuple[float, float, float]:
    """Pixel (u, v) and z-depth of a scanner-frame point (RealSense convention, written out by hand)."""
    r, t = scanner_from_camera[:3, :3], scanner_from_camera[:3, 3]
    x, y, z = r.T @ (np.asarray(p_scanner, float) - t)
    return k.fx * x / z + k.ppx, k.fy * y / z + k.ppy, z


# -- intrinsics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["D435", "D455"])
@pytest.mark.parametrize(("width", "height"), [(848, 480), (1280, 720)])
def test_model_intrinsics(model, width, height):
    k = model_intrinsics(model, width, height)
    assert (k.width, k.height) == (width, height) and k.shape == (height, width)
    assert k.fx == k.fy  # square pixels
    assert k.fov_deg[0] == pytest.approx(87.0, abs=0.01)
    assert 50.0 < k.fov_deg[1] < 60.0
    # principal point a few pixels off the centre of the pixel grid ((W - 1) / 2, (H - 1) / 2)
    assert 0.5 < abs(k.ppx - (width - 1) / 2) < 5.0
    assert 0.5 < abs(k.ppy - (height - 1) / 2) < 5.0
    assert k.model == "brown_conrady" and k.coeffs == (0.0,) * 5


@pytest.mark.parametrize(
    ("model", "width", "height", "fx", "ppx", "ppy"),
    [
        ("D435", 848, 480, 446.803, 426.2, 237.9),
        ("D455", 1280, 720, 674.42, 636.632, 362.821),
    ],
)
def test_model_intrinsics_values(model, width, height, fx, ppx, ppy):
    """Hand-computed: fx = (W/2) / tan(87°/2); pp = pixel-grid centre + the datasheet offset x W/848."""
    k = model_intrinsics(model, width, height)
    assert k.fx == pytest.approx((width / 2) / math.tan(math.radians(43.5)), abs=1e-3)
    assert k.fx == pytest.approx(fx, abs=2e-3)
    assert (k.ppx, k.ppy) == pytest.approx((ppx, ppy), abs=1e-3)


@pytest.mark.parametrize(
    ("model", "width", "height", "match"),
    [
        ("D405", 848, 480, "unknown camera model 'D405'"),
        ("d435", 848, 480, "unknown camera model"),
        ("D435", 640, 480, "unsupported resolution 640x480"),
        ("D455", 480, 848, "unsupported resolution 480x848"),
        ("D435", 1280, 480, "unsupported resolution"),
    ],
)
def test_model_intrinsics_rejects_unknown_models_and_resolutions(model, width, height, match):
    with pytest.raises(ValueError, match=match):
        model_intrinsics(model, width, height)


def test_camera_models_have_their_datasheet_baselines():
    assert CAMERA_MODELS["D435"]["baseline_mm"] == 50.0
    assert CAMERA_MODELS["D455"]["baseline_mm"] == 95.0
    assert CameraRig(model="D455").baseline_mm == 95.0


# -- look_at -------------------------------------------------------------------------------------------------
LOOKS = [
    ((130.0, -270.0, 900.0), (20.0, 40.0, 0.0), (0.0, 1.0, 0.0)),
    ((150.0, -500.0, 1750.0), (0.0, -1350.0, -150.0), (0.0, 1.0, 0.0)),
    ((-700.0, 300.0, 400.0), (100.0, -200.0, -100.0), (1.0, 0.5, 0.0)),
]


@pytest.mark.parametrize(("position", "target", "hint"), LOOKS)
def test_look_at_points_the_optical_axis_at_the_target(position, target, hint):
    m = look_at(np.array(position), np.array(target), np.array(hint))
    r = m[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    np.testing.assert_allclose(m[3], [0, 0, 0, 1])
    np.testing.assert_allclose(m[:3, 3], position)
    d = np.subtract(target, position)
    np.testing.assert_allclose(r[:, 2], d / np.linalg.norm(d), atol=1e-12)  # camera z -> target
    assert r[:, 0] @ hint > 0  # image right follows the hint
    np.testing.assert_allclose(np.cross(r[:, 2], r[:, 0]), r[:, 1], atol=1e-12)  # y = z x x (down)
    k = model_intrinsics("D435", 848, 480)
    u, v, z = project(k, m, target)
    assert (u, v) == pytest.approx((k.ppx, k.ppy), abs=1e-9)
    assert z == pytest.approx(np.linalg.norm(d))


def test_look_at_rejects_a_hint_along_the_view():
    with pytest.raises(ValueError, match="parallel"):
        look_at(np.array([0.0, 0.0, 1000.0]), np.zeros(3), np.array([0.0, 0.0, 5.0]))


def test_default_rig_looks_straight_down_with_image_right_toward_the_gantry():
    rig = CameraRig()
    m = rig.scanner_from_camera
    assert rig.tilt_deg == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(m[:3, 0], [0, 1, 0], atol=1e-12)  # image right (u) = +y, into the gantry
    np.testing.assert_allclose(m[:3, 1], [1, 0, 0], atol=1e-12)  # image down (v) = +x
    np.testing.assert_allclose(m[:3, 2], [0, 0, -1], atol=1e-12)  # looking down
    # pin with points: toward the gantry -> right in the image; +x -> down in the image
    k = rig.intrinsics
    target = np.array(rig.look_at_mm)
    u0, v0, z0 = project(k, m, target)
    u1, v1, _ = project(k, m, target + np.array([0, 100, 0]))
    u2, v2, _ = project(k, m, target + np.array([100, 0, 0]))
    _, _, z3 = project(k, m, target + np.array([0, 0, 100]))
    assert u1 - u0 == pytest.approx(100 * k.fx / z0) and v1 == pytest.approx(v0)
    assert v2 - v0 == pytest.approx(100 * k.fy / z0) and u2 == pytest.approx(u0)
    assert z3 == pytest.approx(z0 - 100)  # closer to the camera
    assert z0 == pytest.approx(1850.0)


def test_tilted_rig_tilt_angle():
    rig = CameraRig(model="D455", width=1280, height=720, position_mm=(150.0, -500.0, 1750.0),
                    look_at_mm=(0.0, -1350.0, -150.0))  # fmt: skip
    d = np.array([-150.0, -850.0, -1900.0])
    assert rig.tilt_deg == pytest.approx(math.degrees(math.acos(1900.0 / np.linalg.norm(d))), abs=1e-9)
    assert rig.intrinsics == model_intrinsics("D455", 1280, 720)


# -- calibration ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("position", "target", "hint"), LOOKS)
def test_calibration_yaml_round_trip_is_exact(tmp_path, position, target, hint):
    rig = CameraRig(position_mm=position, look_at_mm=target, right_hint=hint)
    cal = rig.calibration()
    assert cal.method == "simulated" and cal.residual_mm == 0.0
    np.testing.assert_array_equal(cal.scanner_from_camera, rig.scanner_from_camera)
    path = tmp_path / "room.calibration.yaml"
    cal.save(path)
    back = Calibration.load(path)
    np.testing.assert_array_equal(back.scanner_from_camera, cal.scanner_from_camera)  # bit for bit
    assert (back.method, back.residual_mm) == ("simulated", 0.0)
    assert back.created  # an RFC 3339 time stamp was written
    p_cam = np.array([[12.5, -40.0, 1500.0]])
    np.testing.assert_allclose(back.to_camera(back.to_scanner(p_cam)), p_cam, atol=1e-9)


def _with(m, **cells):
    m = np.array(m, float)
    for key, value in cells.items():
        i, j = int(key[1]), int(key[2])
        m[i, j] = value
    return m


GOOD = CameraRig().scanner_from_camera


@pytest.mark.parametrize(
    "matrix",
    [
        GOOD * 2.0,  # scaled (and a wrong last row)
        np.diag([2.0, 2.0, 2.0, 1.0]),  # scale
        np.diag([-1.0, 1.0, 1.0, 1.0]),  # mirror (det -1)
        _with(np.eye(4), m01=0.2),  # shear
        _with(GOOD, m30=1.0),  # projective last row
        _with(GOOD, m03=np.nan),  # not finite
        np.eye(4)[:3],  # 3x4
        np.eye(3),  # 3x3
    ],
    ids=["scaled", "scale", "mirror", "shear", "last-row", "nan", "3x4", "3x3"],
)
def test_calibration_rejects_non_rigid_matrices(matrix):
    with pytest.raises(CalibrationError):
        Calibration(scanner_from_camera=matrix)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, "not found"),
        ("camera_to_scanner: [1, 2\n", "not valid YAML"),
        ("method: charuco\n", "no 'camera_to_scanner'"),
        ("camera_to_scanner: [[1, 0], [0, 1]]\n", "must be 4x4"),
        ("camera_to_scanner: [[a, b, c, d]]\n", "not numeric"),
    ],
    ids=["missing", "not-yaml", "no-matrix", "2x2", "not-numeric"],
)
def test_calibration_load_rejects_bad_files(tmp_path, text, match):
    path = tmp_path / "bad.calibration.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CalibrationError, match=match):
        Calibration.load(path)


def test_the_one_projection_and_its_inverse():
    k = Intrinsics(width=64, height=48, fx=50.5, fy=52.25, ppx=30.3, ppy=25.7)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-500, 500, (50, 2)), rng.uniform(300, 3000, 50)])
    uv = k.project(pts)
    assert np.allclose(k.deproject(uv, pts[:, 2]), pts)
    assert np.allclose(uv[0], [k.fx * pts[0, 0] / pts[0, 2] + k.ppx, k.fy * pts[0, 1] / pts[0, 2] + k.ppy])
    # on or behind the camera's plane no pixel sees a point
    assert np.isnan(k.project(np.array([[10.0, 0.0, 0.0], [10.0, 5.0, -200.0]]))).all()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        k.project(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="depth_z_mm"):
        k.deproject(uv, pts[:3, 2])
