"""Tests of positioning.perception.landmarks: the result type, fusion, rotations, the model build and the
MediaPipe backend on a synthetic render of an ``anny`` body.

The backend tests need ``models/pose_landmarker_full.task`` (``python -m
positioning.perception.landmarks.model_build``) and skip with that hint when it is missing.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from positioning.errors import PositioningError
from positioning.perception.landmarks import (
    BLAZEPOSE_LANDMARKS,
    COCO_LANDMARKS,
    EXTRA_LANDMARKS,
    LandmarkBackend,
    LandmarkModelError,
    Landmarks2D,
    MediaPipePoseBackend,
    ModelNotFoundError,
    default_model_path,
    fuse_landmarks,
    uv_from_rot90,
)
from positioning.perception.landmarks import model_build as mb
from positioning.perception.landmarks.mediapipe_backend import (
    blazepose_to_landmarks,
    leg_to_torso_ratio,
    upright_rotation,
)

W, H = 848, 480  # RealSense D435 best depth resolution; the colour image aligned to it
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
SKIN_RGB = np.array([224.0, 172.0, 140.0])
BACKGROUND_RGB = np.array([40, 70, 110], dtype=np.uint8)


def _lm(names, uv, conf, backend="b", **kw) -> Landmarks2D:
    return Landmarks2D(names=tuple(names), uv_px=np.array(uv, float), confidence=np.array(conf, float),
                       backend=backend, **kw)  # fmt: skip


# ------------------------------------------------------------------------------------------ Landmarks2D


def test_landmarks2d_smoke_and_defaults():
    lm = _lm(["nose", "left_heel"], [[1.0, 2.0], [3.0, 4.0]], [0.5, 1.0])
    assert len(lm) == 2 and "nose" in lm and "right_eye" not in lm
    assert lm.uv("left_heel").tolist() == [3.0, 4.0]
    assert lm.score == pytest.approx(0.5)  # mean over the COCO names only (left_heel is extra)
    assert lm.to_dict()["nose"] == (1.0, 2.0, 0.5)
    assert not lm.uv_px.flags.writeable and not lm.confidence.flags.writeable
    sub = lm.subset(["left_heel", "right_eye"])
    assert sub.names == ("left_heel", "right_eye")
    assert np.isnan(sub.uv("right_eye")).all() and sub.confidence.tolist() == [1.0, 0.0]
    with pytest.raises(KeyError, match="right_eye"):
        lm.uv("right_eye")


def test_landmarks2d_copies_caller_arrays():
    uv = np.array([[1.0, 2.0]])
    lm = _lm(["nose"], uv, [1.0])
    uv[0, 0] = 99.0
    assert lm.uv("nose")[0] == 1.0 and uv.flags.writeable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ("nose", "nose"), "uv_px": np.zeros((2, 2)), "confidence": [1, 1]}, "unique"),
        ({"names": ("nose",), "uv_px": np.zeros((2, 2)), "confidence": [1]}, r"uv_px must be \(1, 2\)"),
        ({"names": ("nose",), "uv_px": np.zeros((1, 3)), "confidence": [1]}, r"uv_px must be \(1, 2\)"),
        ({"names": ("nose",), "uv_px": np.zeros((1, 2)), "confidence": [1, 1]}, r"confidence must be \(1,\)"),
        ({"names": ("nose",), "uv_px": np.zeros((1, 2)), "confidence": [1.5]}, r"in \[0, 1\]"),
        ({"names": ("nose",), "uv_px": np.zeros((1, 2)), "confidence": [np.nan]}, r"in \[0, 1\]"),
        ({"names": ("nose",), "uv_px": [[np.nan, 0.0]], "confidence": [0.2]}, "confidence 0"),
        ({"names": ("nose",), "uv_px": np.zeros((1, 2)), "confidence": [1], "score": 2.0}, "score"),
        (
            {"names": ("nose",), "uv_px": np.zeros((1, 2)), "confidence": [1], "image_shape": (0, 4)},
            "image_shape",
        ),
    ],
)
def test_landmarks2d_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Landmarks2D(backend="b", **kwargs)


def test_coco_names_and_blazepose_mapping_pin():
    assert len(COCO_LANDMARKS) == 17 and COCO_LANDMARKS[0] == "nose" and COCO_LANDMARKS[-1] == "right_ankle"
    # BlazePose indices from mediapipe's pose_landmark_by_roi_cpu.pbtxt / PoseLandmark enum.
    expected = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    assert [BLAZEPOSE_LANDMARKS.index(n) for n in COCO_LANDMARKS] == expected
    assert [BLAZEPOSE_LANDMARKS.index(n) for n in EXTRA_LANDMARKS] == [29, 30, 31, 32]
    assert len(BLAZEPOSE_LANDMARKS) == 33


# -------------------------------------------------------------------------------------------- rotations


@pytest.mark.parametrize("k", [0, 1, 2, 3, -1, 5])
def test_uv_from_rot90_matches_numpy_exactly(k):
    h, w = 5, 7  # W != H, both odd: a swapped axis or an off-by-one shows
    image = np.arange(h * w).reshape(h, w)
    rot = np.rot90(image, k)
    vr, ur = np.mgrid[0 : rot.shape[0], 0 : rot.shape[1]]
    uv = uv_from_rot90(np.stack([ur, vr], -1).astype(float), k, (h, w))
    u, v = uv[..., 0].astype(int), uv[..., 1].astype(int)
    np.testing.assert_array_equal(image[v, u], rot)
    np.testing.assert_array_equal(uv, np.round(uv))


def test_uv_from_rot90_pixel_edges_pin():
    # The rotated image's top-left corner (-0.5, -0.5) maps to the original's top-right corner for k=1.
    np.testing.assert_allclose(uv_from_rot90([-0.5, -0.5], 1, (480, 848)), [847.5, -0.5])
    np.testing.assert_allclose(uv_from_rot90([-0.5, -0.5], 3, (480, 848)), [-0.5, 479.5])
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        uv_from_rot90(np.zeros((4, 3)), 1, (4, 4))


def test_blazepose_to_landmarks_pin():
    xy = np.full((33, 2), 0.5)
    xy[0] = (0.0, 0.0)  # nose at the rotated image's top-left corner
    xy[11] = (1.0, 0.25)  # left shoulder on its right edge
    vis, pres = np.full(33, 0.9), np.full(33, 0.5)
    # k=1 on a (H=480, W=848) image: the rotated image is 480 wide and 848 high.
    uv, conf = blazepose_to_landmarks(
        xy, vis, pres, k=1, image_shape=(480, 848), names=("nose", "left_shoulder")
    )
    np.testing.assert_allclose(uv[0], [847.5, -0.5])
    np.testing.assert_allclose(uv[1], [847 - (0.25 * 848 - 0.5), 480 - 0.5])
    np.testing.assert_allclose(conf, [0.45, 0.45])
    with pytest.raises(ValueError, match=r"\(33, 2\)"):
        blazepose_to_landmarks(xy[:17], vis, pres, k=0, image_shape=(4, 4))


@pytest.mark.parametrize(
    ("head_dir_uv", "k"),
    [((0, -1), 0), ((1, 0), 1), ((0, 1), 2), ((-1, 0), 3), ((1, -0.9), 1), ((0.9, -1), 0)],
)
def test_upright_rotation(head_dir_uv, k):
    hip = np.array([300.0, 200.0])
    sh = hip + 100 * np.array(head_dir_uv)
    off = np.array([0.0, 5.0])
    lm = _lm(TORSO, [sh + off, sh - off, hip + off, hip - off], [1, 1, 1, 1])
    assert upright_rotation(lm) == k


def test_upright_rotation_missing_landmarks():
    assert upright_rotation(_lm(["nose"], [[1, 1]], [1])) is None
    assert upright_rotation(_lm(TORSO, [[np.nan, np.nan]] + [[1, 1]] * 3, [0, 1, 1, 1])) is None


LEGS = ("left_knee", "right_knee", "left_ankle", "right_ankle")


def _skeleton(head_dir_uv, legs_px: float, *, score: float = 0.9) -> Landmarks2D:
    """Shoulders, hips, knees and ankles: trunk 100 px long toward ``head_dir_uv``, the legs ``legs_px``
    long (hip-knee and knee-ankle halves) the other way."""
    d = np.array(head_dir_uv, float) / np.linalg.norm(head_dir_uv)
    hip = np.array([400.0, 240.0])
    off = np.array([-d[1], d[0]]) * 20.0
    sh, knee, ankle = hip + 100.0 * d, hip - 0.5 * legs_px * d, hip - legs_px * d
    uv = [sh + off, sh - off, hip + off, hip - off, knee + off, knee - off, ankle + off, ankle - off]
    return _lm(TORSO + LEGS, uv, [score] * 8, score=score)


def test_leg_to_torso_ratio_pin():
    assert leg_to_torso_ratio(_skeleton((1, 0), 160.0)) == pytest.approx(1.6)
    assert leg_to_torso_ratio(_skeleton((0.3, -1), 20.0)) == pytest.approx(0.2)
    # folded legs: the knees beyond the ankles still add up their two segments
    lm = _skeleton((1, 0), 160.0)
    uv = lm.uv_px.copy()
    uv[lm.index("left_knee")] = uv[lm.index("right_knee")] = [250.0, 240.0]  # 150 px from the hips
    uv[lm.index("left_ankle")] = uv[lm.index("right_ankle")] = [350.0, 240.0]  # then 100 px back
    assert leg_to_torso_ratio(_lm(lm.names, uv, lm.confidence)) == pytest.approx(2.5)
    assert np.isnan(leg_to_torso_ratio(_lm(TORSO, _skeleton((1, 0), 160.0).uv_px[:4], [1] * 4)))
    nan_knee = _skeleton((1, 0), 160.0).uv_px.copy()
    nan_knee[4] = np.nan
    assert np.isnan(leg_to_torso_ratio(_lm(TORSO + LEGS, nan_knee, [1, 1, 1, 1, 0, 1, 1, 1])))


# --------------------------------------------------------------------------------------------- fusion


def test_fuse_agreeing_backends_weighted_mean():
    a = _lm(["nose", "left_hip"], [[100, 50], [300, 200]], [0.9, 0.6], backend="mediapipe_pose")
    b = _lm(["nose", "left_hip"], [[110, 50], [306, 212]], [0.3, 0.2], backend="depth_net")
    fused = fuse_landmarks([a, b])
    np.testing.assert_allclose(fused.uv("nose"), [(0.9 * 100 + 0.3 * 110) / 1.2, 50])
    np.testing.assert_allclose(
        fused.uv("left_hip"), [(0.6 * 300 + 0.2 * 306) / 0.8, (0.6 * 200 + 0.2 * 212) / 0.8]
    )
    np.testing.assert_allclose(fused.confidence, [0.9, 0.6])
    assert fused.backend == "mediapipe_pose+depth_net"


def test_fuse_disagreeing_backends_takes_most_confident():
    a = _lm(["left_wrist"], [[100, 100]], [0.4])
    b = _lm(["left_wrist"], [[400, 100]], [0.7], backend="c")
    c = _lm(["left_wrist"], [[405, 100]], [0.7 / 2], backend="d")
    fused = fuse_landmarks([a, b], agree_px=20)
    np.testing.assert_allclose(fused.uv("left_wrist"), [400, 100])
    assert fused.confidence[0] == pytest.approx(0.7)
    # A third backend agreeing with the anchor is averaged in; the outlier still is not.
    fused3 = fuse_landmarks([a, b, c], agree_px=20)
    np.testing.assert_allclose(fused3.uv("left_wrist"), [(0.7 * 400 + 0.35 * 405) / 1.05, 100])


def test_fuse_union_of_names_missing_and_single():
    a = _lm(["nose", "left_eye"], [[10, 10], [np.nan, np.nan]], [0.8, 0.0], image_shape=(480, 848))
    b = _lm(["left_eye", "left_heel"], [[20, 12], [30, 400]], [0.5, 0.9], image_shape=(480, 848))
    fused = fuse_landmarks([a, b])
    assert fused.names == ("nose", "left_eye", "left_heel")
    np.testing.assert_allclose(fused.uv_px, [[10, 10], [20, 12], [30, 400]])
    assert fused.image_shape == (480, 848) and fused.score == pytest.approx(max(a.score, b.score))
    single = fuse_landmarks([a])
    np.testing.assert_array_equal(single.uv_px, a.uv_px)
    nobody = fuse_landmarks([_lm(["nose"], [[np.nan, np.nan]], [0.0])])
    assert np.isnan(nobody.uv_px).all() and nobody.confidence[0] == 0


@pytest.mark.parametrize(
    ("results", "kwargs", "match"),
    [
        ([], {}, "at least one"),
        ([_lm(["nose"], [[1, 1]], [1])], {"agree_px": 0.0}, "agree_px"),
        ([_lm(["nose"], [[1, 1]], [1])], {"agree_px": float("nan")}, "agree_px"),
        (
            [
                _lm(["nose"], [[1, 1]], [1], image_shape=(480, 848)),
                _lm(["nose"], [[1, 1]], [1], image_shape=(848, 480)),
            ],
            {},
            "different pixel grids",
        ),
    ],
)
def test_fuse_invalid(results, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fuse_landmarks(results, **kwargs)


class _DepthOnlyBackend:
    """What a future depth network looks like to the rest of the code."""

    name = "depth_net"

    def detect(self, color_rgb, *, depth_mm=None):
        if depth_mm is None or not np.any(depth_mm):
            return None
        v, u = np.unravel_index(np.argmin(np.where(depth_mm > 0, depth_mm, 65535)), depth_mm.shape)
        return _lm(["nose"], [[u, v]], [0.5], backend=self.name, image_shape=depth_mm.shape)


def test_depth_only_backend_fits_the_protocol():
    backend = _DepthOnlyBackend()
    assert isinstance(backend, LandmarkBackend)
    depth = np.full((H, W), 1400, np.uint16)
    depth[100, 200] = 1100
    lm = backend.detect(None, depth_mm=depth)
    assert lm is not None and lm.uv("nose").tolist() == [200, 100]
    assert backend.detect(None, depth_mm=np.zeros((H, W), np.uint16)) is None


# ---------------------------------------------------------------------------------------- model build


def _fake_wheel(path: Path, *, variants=("full",)) -> Path:
    fake = b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mediapipe/modules/pose_detection/pose_detection.tflite", fake + b"det")
        for variant in variants:
            zf.writestr(
                f"mediapipe/modules/pose_landmark/pose_landmark_{variant}.tflite", fake + variant.encode()
            )
    return path


def _offline_pip(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "offline")


def _no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run: {args}")


def test_download_failure_is_a_clear_build_error(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "mediapipe==0.10.21" in cmd
        assert "--only-binary=:all:" in cmd and "manylinux_2_28_x86_64" in cmd and "cp311" in cmd
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution (network is unreachable)"
        )

    monkeypatch.setattr(mb.subprocess, "run", failing_pip)
    with pytest.raises(mb.ModelBuildError, match=r"pip download of mediapipe==0\.10\.21 failed") as info:
        mb.build_pose_landmarker_task(tmp_path / "m.task", wheel_dir=tmp_path / "wheels")
    msg = str(info.value)
    assert "network is unreachable" in msg and str(tmp_path / "wheels") in msg
    assert isinstance(info.value, PositioningError) and info.value.code == "MODEL_BUILD_ERROR"
    assert not (tmp_path / "m.task").exists()


def test_cached_wheel_is_used_without_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(mb.subprocess, "run", _no_pip)
    wheel = _fake_wheel(tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert mb.download_mediapipe_wheel(tmp_path) == wheel
    det, lmk = mb.extract_pose_models(wheel, variant="full")
    assert det.endswith(b"det") and lmk.endswith(b"full")
    with pytest.raises(mb.ModelBuildError, match=r"pose_landmark_heavy\.tflite"):
        mb.extract_pose_models(wheel, variant="heavy")
    with pytest.raises(ValueError, match="variant"):
        mb.extract_pose_models(wheel, variant="huge")


def test_corrupt_cached_wheel_is_discarded(tmp_path, monkeypatch):
    (tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"not a zip")
    monkeypatch.setattr(mb.subprocess, "run", _offline_pip)
    with pytest.raises(mb.ModelBuildError, match="offline"):
        mb.download_mediapipe_wheel(tmp_path)
    assert not list(tmp_path.glob("*.whl"))


def test_existing_valid_bundle_is_not_rebuilt(tmp_path, monkeypatch):
    out = tmp_path / "pose.task"
    fake = b"\x1c\x00\x00\x00TFL3....TFLITE_METADATA...."
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(mb.BUNDLE_DETECTOR_ENTRY, fake)
        zf.writestr(mb.BUNDLE_LANDMARKS_ENTRY, fake)
    before = out.read_bytes()

    def no_download(*a, **k):
        raise AssertionError("must not download")

    monkeypatch.setattr(mb, "download_mediapipe_wheel", no_download)
    assert mb.is_valid_pose_task(out)
    assert mb.build_pose_landmarker_task(out) == out and out.read_bytes() == before
    with pytest.raises(AssertionError, match="must not download"):
        mb.build_pose_landmarker_task(out, force=True)


def test_invalid_existing_file_is_kept_when_rebuild_fails(tmp_path, monkeypatch):
    out = tmp_path / "pose.task"
    out.write_bytes(b"garbage")
    assert not mb.is_valid_pose_task(out)
    monkeypatch.setattr(mb.subprocess, "run", _offline_pip)
    with pytest.raises(mb.ModelBuildError):
        mb.build_pose_landmarker_task(out, wheel_dir=tmp_path / "wheels")
    assert out.read_bytes() == b"garbage"


def test_main_reports_build_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mb.subprocess, "run", _offline_pip)
    assert mb.main(["--out", str(tmp_path / "x.task"), "--wheel-dir", str(tmp_path / "w")]) == 1
    assert "error: pip download" in capsys.readouterr().err


def _version_of(md) -> str:
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(md.Pack(builder), b"M001")
    return mb.minimum_metadata_parser_version(bytes(builder.Output()))


def test_minimum_metadata_parser_version_port():
    fb = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")

    def model(**subgraph_fields):
        tensor = fb.TensorMetadataT()
        tensor.processUnits = subgraph_fields.pop("tensor_units", None)
        tensor.associatedFiles = subgraph_fields.pop("tensor_files", None)
        sg = fb.SubGraphMetadataT()
        sg.inputTensorMetadata = [tensor]
        for key, value in subgraph_fields.items():
            setattr(sg, key, value)
        md = fb.ModelMetadataT()
        md.subgraphMetadata = [sg]
        return md

    def unit(options_type):
        u = fb.ProcessUnitT()
        u.optionsType = options_type
        u.options = {
            fb.ProcessUnitOptions.NormalizationOptions: fb.NormalizationOptionsT,
            fb.ProcessUnitOptions.RegexTokenizerOptions: fb.RegexTokenizerOptionsT,
        }[options_type]()
        return u

    def file(type_=fb.AssociatedFileType.DESCRIPTIONS, version=None):
        f = fb.AssociatedFileT()
        f.name, f.type, f.version = "f.txt", type_, version
        return f

    assert _version_of(model()) == "1.0.0"
    # What the model build writes: a tensor-level normalisation unit, no subgraph-level units.
    assert _version_of(model(tensor_units=[unit(fb.ProcessUnitOptions.NormalizationOptions)])) == "1.0.0"
    assert _version_of(model(tensor_files=[file(fb.AssociatedFileType.VOCABULARY)])) == "1.0.1"
    assert _version_of(model(inputProcessUnits=[unit(fb.ProcessUnitOptions.NormalizationOptions)])) == "1.1.0"
    assert _version_of(model(tensor_units=[unit(fb.ProcessUnitOptions.RegexTokenizerOptions)])) == "1.2.1"
    assert _version_of(model(tensor_files=[file(version="2")])) == "1.4.1"
    assert _version_of(model(customMetadata=[fb.CustomMetadataT()])) == "1.5.0"


@pytest.mark.slow
def test_build_produces_a_valid_task_bundle(tmp_path):
    out = tmp_path / "pose_landmarker_full.task"
    try:
        wheel = mb.download_mediapipe_wheel()  # the set-up cache; downloads once if needed
    except mb.ModelBuildError as e:
        pytest.skip(f"cannot get the mediapipe==0.10.21 wheel (no network?): {e}")
    mb.build_pose_landmarker_task(out, wheel_dir=wheel.parent)  # verifies by loading it in MediaPipe
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted([mb.BUNDLE_DETECTOR_ENTRY, mb.BUNDLE_LANDMARKS_ENTRY])
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        det, lmk = zf.read(mb.BUNDLE_DETECTOR_ENTRY), zf.read(mb.BUNDLE_LANDMARKS_ENTRY)
    assert mb.read_image_input_normalization(det) == ([127.5], [127.5])  # detector input in [-1, 1]
    assert mb.read_image_input_normalization(lmk) == ([0.0], [255.0])  # landmark model input in [0, 1]
    assert mb.is_valid_pose_task(out)
    first = out.read_bytes()
    mb.build_pose_landmarker_task(out, wheel_dir=wheel.parent, force=True, verify=False)
    assert out.read_bytes() == first  # reproducible bytes


# --------------------------------------------------------------------------- synthetic render (anny)


def _render_anny(*, width: int, height: int, head: str, arms: str = "a_pose"):
    """Orthographic front view of the default ``anny`` body, Lambert-shaded skin on a blue background.

    Convention: anny body frame x = patient's left, -y = front, z = head (metres). The view looks along +y
    at the body's front, so the patient's left appears on the image's right when the head is up.
    ``head="up"``: u grows with x, v with -z. ``head="left"``: the same view turned a quarter turn
    counter-clockwise (u grows with -z, v with -x), as a patient lying along a landscape image.

    Returns:
        ``(rgb, expected, body_len_px)``: the ``(H, W, 3)`` uint8 image, ``{coco_name: (u, v)}`` from
        anny's COCO keypoint regressor projected the same way, and the body's length in pixels.
    """
    anny = pytest.importorskip("anny")
    o3d = pytest.importorskip("open3d")
    import torch

    model = anny.Anny()
    pose = {}
    if arms == "sides":  # arms down along the body, forearms in the body's plane
        for side, sign in (("L", 1.0), ("R", -1.0)):
            pose[f"upperarm01.{side}"] = _rot_y_deg(sign * 38.0)
            pose[f"lowerarm01.{side}"] = _rot_x_deg(60.0)
    with torch.no_grad():
        pose_parameters = {k: torch.as_tensor(v)[None] for k, v in pose.items()}
        out = model(pose_parameters=pose_parameters) if pose else model()
        keypoints = anny.KeypointsRegressor.coco(model)(out)[0].numpy()
    labels = anny.KeypointsRegressor.coco(model).labels
    verts = out["vertices"][0].numpy().astype(np.float32)
    faces = model.faces.numpy().astype(np.uint32)

    x_mid = 0.5 * (verts[:, 0].min() + verts[:, 0].max())
    z_mid = 0.5 * (verts[:, 2].min() + verts[:, 2].max())
    body_len_m = verts[:, 2].max() - verts[:, 2].min()
    long_px = height if head == "up" else width
    s = 0.8 * long_px / body_len_m  # pixels per metre

    def to_uv(p):  # (N, 3) body frame -> (N, 2) pixels
        a, b = (p[:, 0] - x_mid, z_mid - p[:, 2]) if head == "up" else (z_mid - p[:, 2], x_mid - p[:, 0])
        return np.stack([a * s + (width - 1) / 2, b * s + (height - 1) / 2], axis=1)

    vv, uu = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = (uu - (width - 1) / 2) / s, (vv - (height - 1) / 2) / s
    x, z = (x_mid + a, z_mid - b) if head == "up" else (x_mid - b, z_mid - a)
    rays = np.zeros((height, width, 6), np.float32)
    rays[..., 0], rays[..., 1], rays[..., 2], rays[..., 4] = x, -3.0, z, 1.0
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(faces))
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    mask = np.isfinite(hit["t_hit"].numpy())
    lambert = np.clip(-hit["primitive_normals"].numpy()[..., 1], 0.0, 1.0)  # light from the viewer
    rgb = np.where(mask[..., None], SKIN_RGB * (0.25 + 0.75 * lambert[..., None]), BACKGROUND_RGB)
    expected = dict(zip(labels, to_uv(keypoints), strict=False))
    return np.clip(rgb, 0, 255).astype(np.uint8), {n: expected[n] for n in COCO_LANDMARKS}, body_len_m * s


def _rot_y_deg(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]])


def _rot_x_deg(deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def backend():
    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"{path} missing: run `python -m positioning.perception.landmarks.model_build`")
    with MediaPipePoseBackend() as b:
        yield b


@pytest.fixture(scope="module")
def lying_render():
    """848x480, patient lying along the image's horizontal axis, head on the left."""
    return _render_anny(width=W, height=H, head="left")


@pytest.fixture(scope="module")
def upright_render():
    """480x848, head up."""
    return _render_anny(width=H, height=W, head="up")


def _assert_torso_found(lm: Landmarks2D, expected: dict, body_len_px: float):
    assert lm is not None, "no person found on the synthetic render"
    tol = 0.05 * body_len_px  # BlazePose and COCO place hips and shoulders slightly differently
    for name in TORSO:
        err = np.linalg.norm(lm.uv(name) - expected[name])
        assert err < tol, f"{name}: {lm.uv(name)} vs expected {expected[name]} ({err:.1f} px > {tol:.1f})"
        assert lm.confidence[lm.index(name)] > 0.5
        other = name.replace("left", "right") if name.startswith("left") else name.replace("right", "left")
        assert err < np.linalg.norm(lm.uv(name) - expected[other]), f"{name} swapped with {other}"
    assert lm.score > 0.5 and lm.backend == "mediapipe_pose"
    assert lm.names == COCO_LANDMARKS + EXTRA_LANDMARKS


def test_backend_conforms_to_protocol(backend):
    assert isinstance(backend, LandmarkBackend) and backend.name == "mediapipe_pose"


def test_detects_upright_render(backend, upright_render):
    rgb, expected, body_len_px = upright_render
    lm = backend.detect(rgb)
    _assert_torso_found(lm, expected, body_len_px)
    assert lm.image_shape == (W, H)


def test_detects_lying_render_848x480(backend, lying_render):
    rgb, expected, body_len_px = lying_render
    assert rgb.shape == (H, W, 3)
    lm = backend.detect(rgb)
    _assert_torso_found(lm, expected, body_len_px)
    assert lm.image_shape == (H, W)
    # Head on the left: nose left of the shoulders, ankles right of the hips.
    assert lm.uv("nose")[0] < lm.uv("left_shoulder")[0] < lm.uv("left_hip")[0] < lm.uv("left_ankle")[0]


def test_detects_arms_at_sides(backend):
    rgb, expected, body_len_px = _render_anny(width=W, height=H, head="left", arms="sides")
    _assert_torso_found(backend.detect(rgb), expected, body_len_px)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_pass_on_rotated_image_maps_back_exactly(backend, lying_render, k):
    """The same pixels through the model give the same landmarks, whichever way they are handed in."""
    rgb = lying_render[0]
    direct = backend.detect_rotated(rgb, k)
    pre_rotated = np.ascontiguousarray(np.rot90(rgb, k))
    via = backend.detect_rotated(pre_rotated, 0)
    assert direct is not None and via is not None
    np.testing.assert_allclose(uv_from_rot90(via.uv_px, k, rgb.shape[:2]), direct.uv_px, atol=1e-3)
    np.testing.assert_allclose(via.confidence, direct.confidence, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_detect_is_rotation_invariant(backend, lying_render, k):
    """detect() on a turned image, mapped back, equals detect() on the original.

    Regression: keeping the best-scoring of several turns made the answer depend on the input orientation
    (7.6 px apart for a half turn); "auto" now always ends on the head-up view of the same pixels.
    """
    rgb = lying_render[0]
    ref = backend.detect(rgb)
    turned = backend.detect(np.ascontiguousarray(np.rot90(rgb, k)))
    assert ref is not None and turned is not None
    assert ref.confidence[: len(COCO_LANDMARKS)].min() > 0.5
    np.testing.assert_allclose(uv_from_rot90(turned.uv_px, k, rgb.shape[:2]), ref.uv_px, atol=1e-3)
    np.testing.assert_allclose(turned.confidence, ref.confidence, atol=1e-6)
    assert turned.image_shape == np.rot90(rgb, k).shape[:2]


@pytest.mark.parametrize(
    ("rotation", "image_k", "expected_passes"),
    [
        ("none", 0, [0]),
        ("all", 0, [1, 3, 2, 0]),  # landscape image: long axis upright first
        ("auto", 3, [0]),  # portrait, head up: one pass
        ("auto", 1, [0, 2]),  # portrait, head down: then turned head up
        ("auto", 0, [1, 3]),  # landscape, head left: long axis up (head down), then head up
        ("auto", 2, [1]),  # landscape, head right: the first turn is already head up
    ],
)
def test_rotation_policy_passes(backend, lying_render, monkeypatch, rotation, image_k, expected_passes):
    passes = []
    one_pass = backend.detect_rotated

    def counting(image, k):
        passes.append(k)
        return one_pass(image, k)

    monkeypatch.setattr(backend, "detect_rotated", counting)
    monkeypatch.setattr(backend, "rotation", rotation)
    image = np.ascontiguousarray(np.rot90(lying_render[0], image_k))
    assert backend.detect(image) is not None
    assert passes == expected_passes


def test_regression_ffp_arms_down_653_upside_down_reading_is_not_kept(backend, monkeypatch):
    """ffp-arms-down#653 (FFP -> HFS) and prone children (HFP -> FFS): BlazePose read the prone body
    upside down in the head-up view (face on the buttocks, legs folded onto the back: legs 0.2-1.1 torso
    lengths) with a confident score, and "auto" kept it. It is now only a candidate: the other turns are
    tried and the plausible reading wins."""
    folded = _skeleton((1, 0), 20.0, score=0.95)  # head right: upright after one turn (k = 1)
    good = _skeleton((-1, 0), 160.0, score=0.85)  # head left: upright after three turns
    readings = {1: folded, 3: folded, 2: good, 0: good}
    passes = []

    def fake(image, k):
        passes.append(k)
        return readings[k]

    monkeypatch.setattr(backend, "detect_rotated", fake)
    image = np.zeros((H, W, 3), np.uint8)
    assert backend.detect(image) is good
    assert passes == [1, 3, 2]
    monkeypatch.setattr(backend, "rotation", "all")
    assert backend.detect(image) is good  # the most confident plausible reading, not the most confident
    # nothing plausible: the most confident reading, as before
    readings.update({2: folded, 0: _skeleton((-1, 0), 20.0, score=0.5)})
    monkeypatch.setattr(backend, "rotation", "auto")
    assert backend.detect(image) is folded
    # a plausible reading in the head-up view is taken at once
    passes.clear()
    readings.update({1: good})
    assert backend.detect(image) is good and passes == [1, 3]


@pytest.mark.parametrize(
    "image",
    [np.full((H, W, 3), 128, np.uint8), np.broadcast_to(BACKGROUND_RGB, (H, W, 3)).copy()],
    ids=["grey", "background"],
)
def test_no_person_returns_none(backend, image):
    assert backend.detect(image) is None


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (None, "needs a colour image"),
        (np.zeros((H, W), np.uint8), r"\(H, W, 3\) uint8"),
        (np.zeros((H, W, 3), np.float32), r"\(H, W, 3\) uint8"),
        (np.zeros((H, W, 4), np.uint8), r"\(H, W, 3\)"),
        ([[0, 0, 0]], r"\(H, W, 3\) uint8"),
    ],
)
def test_detect_rejects_bad_input(backend, image, match):
    with pytest.raises(ValueError, match=match):
        backend.detect(image)


def test_missing_model_raises_with_setup_command(tmp_path):
    setup_command = r"python -m positioning\.perception\.landmarks\.model_build"
    with pytest.raises(ModelNotFoundError, match=setup_command) as e:
        MediaPipePoseBackend(model_path=tmp_path / "nope.task")
    assert isinstance(e.value, PositioningError) and e.value.code == "MODEL_NOT_FOUND"


def test_corrupt_model_raises_model_error(tmp_path):
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(LandmarkModelError, match="--force"):
        MediaPipePoseBackend(model_path=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"rotation": "sideways"}, "rotation"), ({"min_detection_confidence": 1.5}, "min_detection_confidence")],
)
def test_backend_invalid_settings(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        MediaPipePoseBackend(model_path=tmp_path / "nope.task", **kwargs)
