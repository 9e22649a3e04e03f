"""Simulated sessions: frames, truth that agrees with what the camera sees, motion, scenes, recordings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from positioning.camera.realsense import RealSenseSource
from positioning.errors import RecordingError
from positioning.evaluation.truth import frame_cross_sections, load_truth, true_isocenter, truth_summary
from positioning.frames import Calibration, RGBDFrame
from positioning.sim.anatomy import ANATOMICAL_LANDMARKS
from positioning.sim.body import COCO_KEYPOINTS, SKELETON_JOINTS
from positioning.sim.preview import preview_image, project_points
from positioning.sim.room import Label
from positioning.sim.scenario import list_scenarios, sample_session
from positioning.sim.session import (
    TRUTH_SCHEMA,
    SimulatedSession,
    calibration_path_for,
    record_session,
    truth_path_for,
)

NAMES = [s.name for s in list_scenarios()]


@pytest.fixture(scope="module")
def session(model):
    return SimulatedSession(sample_session("hfs-arms-up", 0), model=model)


@pytest.fixture(scope="module")
def frame0(session):
    return session.frame(0)


@pytest.fixture(scope="module")
def ideal0(session):
    return session.render_ideal(0)


def deproject_to_scanner(depth_mm: np.ndarray, session: SimulatedSession) -> np.ndarray:
    """``(H, W, 3)`` scanner-frame points of a z-depth image (pixel centres at integer coordinates)."""
    k = session.intrinsics
    v, u = np.mgrid[0 : k.height, 0 : k.width]
    z = depth_mm.astype(np.float64)
    cam = np.stack([(u - k.ppx) / k.fx * z, (v - k.ppy) / k.fy * z, z], axis=-1)
    return cam @ session.scanner_from_camera[:3, :3].T + session.scanner_from_camera[:3, 3]


# -- one frame -----------------------------------------------------------------------------------------------
def test_frame_is_a_realsense_like_rgbd_frame(session, frame0):
    frame, truth = frame0
    assert isinstance(frame, RGBDFrame)
    assert frame.depth_mm.dtype == np.uint16 and frame.depth_mm.shape == (480, 848)
    assert frame.intrinsics == session.spec.rig.intrinsics
    assert frame.color_rgb.shape == (480, 848, 3) and frame.color_rgb.dtype == np.uint8
    assert frame.color_aligned and frame.color_intrinsics == frame.intrinsics
    assert (frame.frame_number, frame.timestamp_ms) == (0, 0.0)
    assert frame.device_name == "Intel RealSense D435 (simulated)" and frame.serial == "SIM0000000"
    assert 0.8 < frame.valid_fraction < 1.0  # a few holes, as a real D435 has
    assert truth.label.shape == (480, 848) and truth.frame_number == 0


def test_frames_are_reproducible_and_timed(session, frame0):
    again, _ = session.frame(0)
    np.testing.assert_array_equal(again.depth_mm, frame0[0].depth_mm)
    np.testing.assert_array_equal(again.color_rgb, frame0[0].color_rgb)
    third = [f for f, _ in session.frames(3)][2]
    assert third.frame_number == 2 and third.timestamp_ms == pytest.approx(2000.0 / 30)
    assert not np.array_equal(third.depth_mm, frame0[0].depth_mm)  # fresh noise every frame


def test_noisy_depth_follows_the_ideal_depth(frame0, ideal0):
    frame, _ = frame0
    valid = (frame.depth_mm > 0) & np.isfinite(ideal0.depth_mm)
    err = frame.depth_mm[valid].astype(float) - ideal0.depth_mm[valid]
    assert abs(np.median(err)) < 5.0  # unbiased
    assert np.median(np.abs(err)) < 60.0  # RealSense-like noise, not another scene


def test_colour_is_aligned_to_depth(frame0, ideal0):
    """The patient's pixels in the colour image are the patient's pixels in the depth and label images."""
    frame, truth = frame0
    np.testing.assert_array_equal(truth.label, ideal0.label)
    patient = truth.label == Label.PATIENT
    mattress = truth.label == Label.MATTRESS
    c = frame.color_rgb.astype(float)
    # skin and gown are far brighter than the dark blue mattress, pixel for pixel
    assert c[patient].mean() > c[mattress].mean() + 60
    # depth agrees: the patient lies above (nearer than) the mattress
    d = ideal0.depth_mm
    assert np.median(d[patient]) < np.median(d[mattress]) - 50


def test_truth_has_every_name(frame0):
    _, truth = frame0
    assert list(truth.keypoints_mm) == list(COCO_KEYPOINTS)
    assert set(truth.joints_mm) == set(SKELETON_JOINTS)
    assert list(truth.landmarks_mm) == list(ANATOMICAL_LANDMARKS)
    cs = truth.cross_sections
    assert np.allclose(np.diff(cs.y_mm), 5.0) and (cs.area_mm2 > 0).sum() > 250


def test_truth_keypoints_project_onto_the_patient(session, frame0):
    frame, truth = frame0
    cal = session.spec.rig.calibration()
    points = {**truth.keypoints_mm, **truth.landmarks_mm}
    uv = np.rint(project_points(np.array(list(points.values())), frame, cal)).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 848) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    assert inside.all()
    on_patient = truth.label[uv[:, 1], uv[:, 0]] == Label.PATIENT
    assert on_patient.mean() >= 0.9, [n for n, ok in zip(points, on_patient, strict=True) if not ok]


def test_default_camera_sees_the_patient_head_right_and_left_side_down(session, frame0):
    """Convention pin through the whole chain: HFS under the default rig, image right = +y (head, gantry),
    image down = +x (the patient's left in HFS)."""
    frame, truth = frame0
    cal = session.spec.rig.calibration()
    k = truth.keypoints_mm
    (u_nose, _), (u_ankle, _) = project_points(np.array([k["nose"], k["left_ankle"]]), frame, cal)
    assert u_nose > u_ankle + 300
    (_, v_left), (_, v_right) = project_points(
        np.array([k["left_shoulder"], k["right_shoulder"]]), frame, cal
    )
    assert v_left > v_right + 40


def test_cross_section_top_agrees_with_the_rendered_surface(session, frame0, ideal0):
    """Truth z_max(y) is the top of the body that the camera sees from above (ideal depth, deprojected)."""
    _, truth = frame0
    points = deproject_to_scanner(ideal0.depth_mm, session)[ideal0.label == Label.PATIENT]
    cs = truth.cross_sections
    lm = truth.landmarks_mm
    levels = np.linspace(lm["pubic_symphysis"][1], lm["jugular_notch"][1], 6)
    for y in levels:
        k = int(np.argmin(np.abs(cs.y_mm - y)))
        band = points[np.abs(points[:, 1] - cs.y_mm[k]) < 2.0]  # about one pixel column (4 mm) wide
        assert len(band) > 20
        assert band[:, 2].max() == pytest.approx(cs.z_max_mm[k], abs=2.0), f"y = {cs.y_mm[k]}"
        assert band[:, 0].min() >= cs.x_min_mm[k] - 2.0 and band[:, 0].max() <= cs.x_max_mm[k] + 2.0


def test_truth_isocenter_lies_inside_the_body(session, frame0):
    _, truth = frame0
    cs, lm, placed = truth.cross_sections, truth.landmarks_mm, session.placed
    x, z = true_isocenter(cs, lm["xiphoid"][1], lm["jugular_notch"][1])
    assert x == pytest.approx(session.spec.placement.lateral_offset_mm, abs=25.0)
    top = cs.z_max_mm[(cs.y_mm > lm["xiphoid"][1]) & (cs.y_mm < lm["jugular_notch"][1])]
    assert placed.contact_z_mm + 50 < z < np.nanmin(top) - 50
    with pytest.raises(ValueError, match="no body cross-section"):
        true_isocenter(cs, 5000.0, 6000.0)


def test_breathing_lifts_the_chest_by_its_amplitude(session):
    spec = session.spec
    quarter = round(spec.rig.fps * spec.breathing_period_s / 4)  # full inhalation: sin = 1
    label = np.zeros((480, 848), np.uint8)
    rest, inhaled = session.truth(0, 0.0, label), session.truth(quarter, 0.0, label)
    y = rest.landmarks_mm["xiphoid"][1]
    k0 = int(np.argmin(np.abs(rest.cross_sections.y_mm - y)))
    k1 = int(np.argmin(np.abs(inhaled.cross_sections.y_mm - y)))
    assert rest.cross_sections.y_mm[k0] == inhaled.cross_sections.y_mm[k1]
    rise = inhaled.cross_sections.z_max_mm[k1] - rest.cross_sections.z_max_mm[k0]
    assert rise == pytest.approx(spec.breathing_amplitude_mm, abs=0.3)
    assert 1.0 < inhaled.cross_sections.area_mm2[k1] / rest.cross_sections.area_mm2[k0] < 1.05
    # the back stays on the table; keypoints (the skeleton) do not breathe
    assert inhaled.cross_sections.z_min_mm[k1] == pytest.approx(rest.cross_sections.z_min_mm[k0], abs=0.5)
    np.testing.assert_array_equal(inhaled.keypoints_mm["nose"], rest.keypoints_mm["nose"])


# -- other scenes --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moved(model):
    return SimulatedSession(sample_session("patient-moved", 0), model=model)


def test_patient_moved_shifts_the_truth_from_frame_10(moved):
    shift = np.array([25.0, -15.0, 0.0])
    label = np.zeros((480, 848), np.uint8)
    t = {i: moved.truth(i, 0.0, label) for i in (0, 9, 10, 11)}
    for name in ("nose", "left_hip"):
        np.testing.assert_array_equal(t[9].keypoints_mm[name], t[0].keypoints_mm[name])
        np.testing.assert_allclose(t[10].keypoints_mm[name] - t[9].keypoints_mm[name], shift, atol=1e-9)
        np.testing.assert_allclose(t[11].keypoints_mm[name], t[10].keypoints_mm[name], atol=1e-9)
    np.testing.assert_allclose(t[10].landmarks_mm["xiphoid"] - t[9].landmarks_mm["xiphoid"], shift, atol=1e-9)
    np.testing.assert_allclose(t[10].joints_mm["pelvis"] - t[9].joints_mm["pelvis"], shift, atol=1e-9)
    dv = moved.patient_vertices(10) - moved.patient_vertices(9)
    np.testing.assert_allclose(dv[:, :2], np.broadcast_to(shift[:2], (len(dv), 2)), atol=1e-9)
    lm9, lm10 = t[9].landmarks_mm, t[10].landmarks_mm
    x9, _ = true_isocenter(t[9].cross_sections, lm9["xiphoid"][1], lm9["jugular_notch"][1])
    x10, _ = true_isocenter(t[10].cross_sections, lm10["xiphoid"][1], lm10["jugular_notch"][1])
    assert x10 - x9 == pytest.approx(25.0, abs=0.5)


def test_patient_moved_moves_the_patient_in_the_image(moved):
    """+25 mm x = 6 px down, -15 mm y = 4 px left in the default view (image down = +x, right = +y)."""
    before, after = moved.render_ideal(9), moved.render_ideal(10)
    v, u = np.mgrid[0:480, 0:848]
    c = [(u[r.label == Label.PATIENT].mean(), v[r.label == Label.PATIENT].mean()) for r in (before, after)]
    depth = np.median(before.depth_mm[before.label == Label.PATIENT])
    f = moved.intrinsics.fx
    assert c[1][0] - c[0][0] == pytest.approx(-15.0 * f / depth, abs=1.0)
    assert c[1][1] - c[0][1] == pytest.approx(25.0 * f / depth, abs=1.0)


def test_empty_table_has_no_patient(model):
    s = SimulatedSession(sample_session("empty-table", 0), model=model)
    assert s.placed is None and s.patient_vertices(0) is None
    _, truth = s.frame(0)
    assert truth.keypoints_mm == {} and truth.landmarks_mm == {} and truth.cross_sections is None
    assert not (truth.label == Label.PATIENT).any()
    assert (truth.label == Label.MATTRESS).sum() > 30000
    assert truth.to_json()["cross_sections"] is None
    assert s.session_truth()["patient"] is None


def test_second_person_is_labelled_other_person(model):
    s = SimulatedSession(sample_session("second-person", 0), model=model)
    label = s.render_ideal(0).label
    assert (label == Label.OTHER_PERSON).sum() > 2000
    assert (label == Label.PATIENT).sum() > 2000
    x_person, _ = s.spec.second_person
    # standing beside the table on the side the scenario put them: image down = +x
    v = np.mgrid[0:480, 0:848][0]
    below = v[label == Label.OTHER_PERSON].mean() - v[label == Label.PATIENT].mean()
    assert np.sign(below) == np.sign(x_person)


# -- recording -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded(tmp_path_factory, session):
    out = tmp_path_factory.mktemp("rec") / "hfs.db3"
    calls = []
    summary = record_session(
        session.spec, out, frames=2, progress=lambda done, total: calls.append((done, total))
    )
    return summary, calls


def test_record_session_writes_recording_truth_and_calibration(recorded):
    summary, calls = recorded
    assert summary.recording.suffix == ".db3" and summary.recording.is_file()
    assert summary.truth == truth_path_for(summary.recording) and summary.truth.name == "hfs.truth.json"
    assert summary.calibration == calibration_path_for(summary.recording)
    assert summary.calibration.name == "hfs.calibration.yaml" and summary.calibration.is_file()
    assert summary.frames == 2 and summary.bytes == summary.recording.stat().st_size > 0
    assert calls == [(1, 2), (2, 2)]


def test_recording_reads_back_bit_for_bit(recorded, session, frame0):
    summary, _ = recorded
    with RealSenseSource.from_file(summary.recording) as src:
        frames = list(src)
    assert len(frames) == 2
    expected = [frame0[0], session.frame(1)[0]]
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got.depth_mm, want.depth_mm)
        np.testing.assert_array_equal(got.color_rgb, want.color_rgb)
        assert got.timestamp_ms == pytest.approx(want.timestamp_ms, abs=1e-6)
        assert (got.device_name, got.serial) == (want.device_name, want.serial)
        assert got.color_aligned
        for name in ("width", "height"):
            assert getattr(got.intrinsics, name) == getattr(want.intrinsics, name)
        for name in ("fx", "fy", "ppx", "ppy"):
            assert getattr(got.intrinsics, name) == pytest.approx(getattr(want.intrinsics, name), abs=1e-4)


def test_recorded_calibration_is_the_rig(recorded, session):
    summary, _ = recorded
    cal = Calibration.load(summary.calibration)
    np.testing.assert_array_equal(cal.scanner_from_camera, session.scanner_from_camera)
    assert cal.method == "simulated"


def test_truth_sidecar_round_trip(recorded, session, frame0):
    summary, _ = recorded
    doc = load_truth(summary.recording)
    assert load_truth(summary.truth) == doc
    assert doc["schema"] == TRUTH_SCHEMA and doc["units"] == "mm"
    assert (doc["scenario"], doc["seed"]) == ("hfs-arms-up", 0)
    assert [f["frame_number"] for f in doc["frames"]] == [0, 1]
    p = doc["patient"]
    assert p["patient_position"] == "HFS" and p["arms"] == "raised"
    assert p["contact"]["contact_z_mm"] == pytest.approx(session.placed.contact_z_mm, abs=0.01)
    np.testing.assert_allclose(doc["camera"]["camera_to_scanner"], session.scanner_from_camera, atol=1e-6)
    _, truth = frame0
    f0 = doc["frames"][0]
    for name, point in truth.keypoints_mm.items():
        np.testing.assert_allclose(f0["keypoints"][name], point, atol=0.006)
    for name, point in truth.landmarks_mm.items():
        np.testing.assert_allclose(f0["landmarks"][name], point, atol=0.006)
    cs = frame_cross_sections(doc, 0)
    np.testing.assert_allclose(cs.area_mm2, truth.cross_sections.area_mm2, atol=0.006)
    lm = f0["landmarks"]
    x, z = true_isocenter(cs, lm["xiphoid"][1], lm["jugular_notch"][1])
    x_true, z_true = true_isocenter(truth.cross_sections, lm["xiphoid"][1], lm["jugular_notch"][1])
    assert (x, z) == pytest.approx((x_true, z_true), abs=0.01)
    lines = truth_summary(doc)
    assert lines[0].startswith("scenario hfs-arms-up (seed 0)") and "true isocenter" in lines[-1]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no ground-truth sidecar"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00binary", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b"null", "must hold a JSON object"),
        (b'{"schema": "positioning.sim.truth/0"}', "has schema 'positioning.sim.truth/0'"),
        (b"{}", "has schema None"),
    ],
    ids=["missing", "garbled", "binary", "list", "null", "old-schema", "no-schema"],
)
def test_load_truth_refuses_a_missing_or_garbled_sidecar(tmp_path, content, match):
    """Regression (binary, list, null): these used to raise UnicodeDecodeError / AttributeError."""
    recording = tmp_path / "real.db3"
    recording.write_bytes(b"")
    if content is not None:
        truth_path_for(recording).write_bytes(content)
    with pytest.raises(RecordingError, match=match):
        load_truth(recording)


def test_truth_json_is_compact_and_finite(recorded):
    summary, _ = recorded
    text = summary.truth.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: empty slices are null
    doc = json.loads(text)
    assert None in doc["frames"][0]["cross_sections"]["centroid_x_mm"]


# -- preview -------------------------------------------------------------------------------------------------
def test_preview_image_panels(session, frame0):
    frame, truth = frame0
    img = preview_image(frame, calibration=session.spec.rig.calibration(), points_mm=truth.keypoints_mm,
                        label=truth.label, title="t")  # fmt: skip
    assert img.shape == (480, 3 * 848, 3) and img.dtype == np.uint8
    assert preview_image(frame).shape == (480, 2 * 848, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("empty-table", "world", "partial-table")])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_scenario_shows_its_patient(model, name, seed):
    """Every patient scenario renders a patient in view whose truth keypoints land on the patient.

    ``partial-table`` is left out on purpose: its camera sees the chest only
    (tests/planning/test_hard_input.py).
    """
    s = SimulatedSession(sample_session(name, seed), model=model)
    frame, truth = s.frame(0)
    patient = truth.label == Label.PATIENT
    assert patient.mean() > 0.015
    uv = np.rint(project_points(np.array(list(truth.keypoints_mm.values())), frame, s.spec.rig.calibration()))
    h, w = truth.label.shape
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    assert inside.all()
    hits = truth.label[uv[inside, 1].astype(int), uv[inside, 0].astype(int)] == Label.PATIENT
    assert hits.mean() > 0.6
