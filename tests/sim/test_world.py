"""The randomised world: every factor is drawn within its documented range, reproducibly, and what it
adds to the scene (blankets, pillows, a knee bolster, staff, softer mattresses, lighting, cameras) is
where it should be and never changes the body's truth."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from positioning.sim.appearance import FITZPATRICK_SKIN, Appearance, patient_colors
from positioning.sim.cover import CoverParams, PillowParams, blanket_mesh, surface_heights
from positioning.sim.noise import D415_NOISE, dark_surface_dropouts
from positioning.sim.placement import KNEE_REST_CLEARANCE_MM, mattress_depression, mattress_sink_mm
from positioning.sim.rig import CameraRig, model_intrinsics
from positioning.sim.room import Label, RoomParams, room_meshes
from positioning.sim.scenario import sample_session
from positioning.sim.session import SimulatedSession
from positioning.sim.staff import StaffMember, staff_mesh

SEEDS = range(10000, 10060)


@pytest.fixture(scope="module")
def specs():
    return [sample_session("world", s) for s in SEEDS]


def test_world_is_reproducible_and_varied(specs):
    assert sample_session("world", 10003) == specs[3]
    rooms = [s.room for s in specs]
    assert {r.has_gantry for r in rooms} == {True, False}  # CT tables and beds
    assert {s.rig.model for s in specs} == {"D415", "D435", "D455"}
    assert {s.cover.kind for s in specs} == {"none", "legs", "chest"}
    assert {s.appearance.clothing for s in specs if s.placement is not None} == {"gown", "clothes", "bare"}
    assert any(s.staff for s in specs) and any(not s.staff for s in specs)
    assert any(r.clutter for r in rooms) and any(r.cradle_sagitta_mm > 0 for r in rooms)
    assert any(r.base_width_mm > r.table_width_mm and r.base_top_z_mm < r.table_top_z_mm - 100 for r in rooms)


def test_world_factors_stay_in_their_documented_ranges(specs):
    for s in specs:
        r = s.room
        if r.has_gantry:
            assert 400 <= r.table_width_mm <= 560 and 25 <= r.mattress_thickness_mm <= 100
            assert -420 <= r.mattress_top_z_mm <= -60
        else:  # a bed
            assert 800 <= r.table_width_mm <= 1400 and 100 <= r.mattress_thickness_mm <= 220
        assert r.mattress_width_mm <= r.table_width_mm
        assert 0.0 <= r.mattress_softness <= 1.0
        height = s.rig.position_mm[2] - r.mattress_top_z_mm
        assert height >= 1200 - 1e-6 and s.rig.position_mm[2] - r.floor_z_mm >= 2300 - 1e-6
        assert s.rig.tilt_deg <= 35.5 and abs(s.rig.roll_deg) <= 8
        if s.rig.model == "D415":
            assert height >= 1900 - 1e-6
        if s.placement is not None:
            assert s.appearance.skin_rgb in FITZPATRICK_SKIN.values()
            assert r.table_foot_y_mm + 1500 < s.placement.head_y_mm < r.table_head_y_mm
        assert len(s.staff) <= 2


def test_world_seeds_for_fitting_and_for_measuring_never_meet():
    from positioning.evaluation.robustness import load_suite
    from positioning.evaluation.world_data import TRAIN_SEEDS

    suite = load_suite("robustness")
    assert suite.scenarios == ("world",) and len(suite.seeds) >= 100
    assert not set(suite.seeds) & set(TRAIN_SEEDS)


def test_softer_mattress_sinks_deeper_and_thin_mattress_caps_it():
    assert mattress_sink_mm(70, 0.5) == pytest.approx(16.0)  # the reference foam: the old model
    assert mattress_sink_mm(70, 0.0) < 3.0 < 25.0 < mattress_sink_mm(70, 1.0)
    assert mattress_sink_mm(120, 1.0, thickness_mm=30.0) == pytest.approx(24.0)


def test_mattress_dips_under_and_around_the_body():
    body = np.array([[x, y, -170.0] for x in range(-100, 101, 5) for y in range(-600, -199, 5)], float)
    xs, ys, dip = mattress_depression(body, -150.0, 40.0, (-230, 230), (-900, 100))
    at = lambda x, y: dip[np.argmin(np.abs(ys - y)), np.argmin(np.abs(xs - x))]  # noqa: E731
    assert at(0, -400) == pytest.approx(20.0, abs=0.5)  # under the body: down to the contact
    assert 0.0 < at(150, -400) < at(110, -400) < 20.0  # beside it: decaying
    assert at(0, 0) < 0.5  # far away: the free top


@pytest.fixture(scope="module")
def covered(model):
    spec = sample_session("hfs-arms-up", 3)
    session = SimulatedSession(spec, model=model)
    return spec, session


def test_blanket_lies_over_the_body_and_hangs_beside_the_table(covered):
    spec, session = covered
    placed = session.placed
    cover = CoverParams(kind="chest", top_u=0.7, thickness_mm=8.0, hang_mm=250.0)
    mesh = blanket_mesh(placed.vertices_mm, placed.faces, placed.keypoints_mm, True, spec.room, cover)
    assert mesh is not None and mesh.label == Label.COVER
    v = mesh.vertices_mm
    ys = np.unique(v[:, 1])
    xs = np.unique(v[:, 0])
    z = v[:, 2].reshape(len(ys), len(xs))
    body = surface_heights(placed.vertices_mm, placed.faces, xs, ys)
    inside = np.isfinite(body)
    assert np.all(z[inside] >= body[inside] + cover.thickness_mm - 1e-6)  # never through the body
    hips_y = 0.5 * (placed.keypoints_mm["left_hip"][1] + placed.keypoints_mm["right_hip"][1])
    sh_y = 0.5 * (placed.keypoints_mm["left_shoulder"][1] + placed.keypoints_mm["right_shoulder"][1])
    assert ys.max() == pytest.approx(hips_y + 0.7 * (sh_y - hips_y), abs=15.0)  # the hem on the chest
    assert ys.min() < placed.vertices_mm[:, 1].min()  # beyond the feet
    edge = spec.room.table_width_mm / 2
    assert z[:, np.abs(xs) > edge + 70].max() < spec.room.mattress_top_z_mm - 100  # hanging down


def test_covers_and_pillows_do_not_change_the_truth(model):
    spec = sample_session("hfs-arms-up", 5)
    import dataclasses

    plain = SimulatedSession(spec, model=model)
    dressed = SimulatedSession(
        dataclasses.replace(spec, cover=CoverParams(kind="legs"), pillows=PillowParams(head=True)),
        model=model,
    )
    _, t0 = plain.frame(0)
    _, t1 = dressed.frame(0)
    for k in t0.keypoints_mm:
        np.testing.assert_array_equal(t0.keypoints_mm[k], t1.keypoints_mm[k])
    np.testing.assert_array_equal(t0.cross_sections.centroid_z_mm, t1.cross_sections.centroid_z_mm)
    assert np.count_nonzero(t1.label == Label.COVER) > 5000  # but the camera sees a blanket
    assert np.count_nonzero(t1.label == Label.PATIENT) < np.count_nonzero(t0.label == Label.PATIENT)


def test_knee_bolster_flexes_the_knees_onto_it(place_cached):
    straight = place_cached("HFS", "sides")
    bent = place_cached("HFS", "sides", knee_rest_mm=100.0)
    flex = straight.leg_extension_deg[0] - bent.leg_extension_deg[0]
    assert flex > 5 and bent.knee_flexion_deg[0] == pytest.approx(2 * flex)
    knee = bent.keypoints_mm["left_knee"]
    v = bent.vertices_mm
    back = v[
        (np.abs(v[:, 1] - knee[1]) < KNEE_REST_CLEARANCE_MM) & (np.abs(v[:, 0] - knee[0]) < 80.0), 2
    ].min()
    assert back == pytest.approx(bent.contact_z_mm + 100.0, abs=20.0)  # the back of the knee on the bolster
    assert knee[2] > straight.keypoints_mm["left_knee"][2] + 30.0
    # prone patients get no bolster pose
    assert place_cached("HFP", "raised", knee_rest_mm=100.0).knee_flexion_deg == (0.0, 0.0)


def test_leaning_staff_reach_over_the_table(model):
    room = RoomParams()
    standing = staff_mesh(model, StaffMember(x_mm=650.0, y_mm=-1300.0), room.floor_z_mm)
    leaning = staff_mesh(
        model, StaffMember(x_mm=650.0, y_mm=-1300.0, pose="leaning", lean_deg=40.0), room.floor_z_mm
    )
    for m in (standing, leaning):
        assert m.label == Label.OTHER_PERSON
        assert m.vertices_mm[:, 2].min() == pytest.approx(room.floor_z_mm)
    # leaning toward the table (x = 0) brings the body over it; standing keeps it beside
    assert leaning.vertices_mm[:, 0].min() < standing.vertices_mm[:, 0].min() - 150.0
    assert leaning.vertices_mm[:, 2].max() < standing.vertices_mm[:, 2].max() - 100.0


def test_rooms_have_their_parts(model):
    room = RoomParams(
        cradle_sagitta_mm=30.0, mattress_sagitta_mm=20.0, arm_boards="both", base_width_mm=800.0,
        base_top_below_mm=300.0, gantry_shape="box",
    )  # fmt: skip
    meshes = room_meshes(room)
    labels = collections.Counter(m.label for m in meshes)
    assert labels[Label.MATTRESS] == 1 and labels[Label.GANTRY] == 1 and labels[Label.TABLE] >= 5
    mattress = next(m for m in meshes if m.label == Label.MATTRESS)
    top = mattress.vertices_mm[mattress.vertices_mm[:, 2] > room.mattress_top_z_mm - 1]
    edge = top[np.abs(top[:, 0]) >= room.mattress_width_mm / 2 - 1]
    assert edge[:, 2].max() == pytest.approx(room.mattress_top_z_mm + 20.0, abs=0.5)  # shaped to the cradle
    with pytest.raises(ValueError, match="mattress width"):
        RoomParams(table_width_mm=400.0, mattress_width_mm=450.0)
    with pytest.raises(ValueError, match="arm_boards"):
        RoomParams(arm_boards="middle")


def test_camera_roll_and_the_d415():
    rig = CameraRig(roll_deg=90.0)
    plain = CameraRig()
    np.testing.assert_allclose(rig.scanner_from_camera[:3, 2], plain.scanner_from_camera[:3, 2], atol=1e-12)
    np.testing.assert_allclose(rig.scanner_from_camera[:3, 0], plain.scanner_from_camera[:3, 1], atol=1e-12)
    k = model_intrinsics("D415", 1280, 720)
    assert k.fov_deg[0] == pytest.approx(65.0, abs=0.01)  # narrower than the D435's 87
    assert D415_NOISE.baseline_mm == 55.0


def test_dark_surfaces_lose_depth():
    depth = np.full((120, 160), 1500, np.uint16)
    albedo = np.full((120, 160), 0.6, np.float32)
    albedo[:, :80] = 0.03  # a black mattress on the left
    out = dark_surface_dropouts(depth, albedo, np.random.default_rng(0))
    lost_dark = np.mean(out[:, :80] == 0)
    assert 0.15 < lost_dark < 0.4 and np.mean(out[:, 80:] == 0) == 0.0


def test_clothing_colours_the_right_parts(model, place_cached):
    placed = place_cached("HFS", "sides")
    skin, top, bottom = (0.3, 0.2, 0.1), (0.9, 0.1, 0.1), (0.1, 0.1, 0.9)
    torso = model.part_mask("torso")
    legs = model.part_mask("left_leg", "right_leg")
    appearance = Appearance(skin_rgb=skin, clothing="clothes", top_rgb=top, bottom_rgb=bottom)
    clothes = patient_colors(model, appearance, placed.body.vertices_mm)
    knee_z = placed.body.keypoints_mm["left_knee"][2]
    thighs = legs & (placed.body.vertices_mm[:, 2] > knee_z)
    assert np.allclose(clothes[torso], top) and np.allclose(clothes[thighs], bottom)
    bare = patient_colors(
        model, Appearance(skin_rgb=skin, clothing="bare", bottom_rgb=bottom), placed.body.vertices_mm
    )
    assert np.mean(np.all(np.isclose(bare[torso], skin), axis=1)) > 0.6  # a bare trunk, shorts below


def test_world_session_truth_records_its_factors(model):
    session = SimulatedSession(sample_session("world", 10007), model=model)
    doc = session.session_truth()
    assert {"appearance", "cover", "pillows", "lighting", "staff"} <= set(doc["world"])
    if doc["patient"] is not None:
        assert "mattress_softness" in doc["patient"]["contact"]


@pytest.mark.parametrize("seed", [10011, 10012, 10013])
def test_world_sessions_show_a_patient_or_an_empty_table(model, seed):
    """A blanket or staff may hide much of the patient, but some of the body is always in view."""
    s = SimulatedSession(sample_session("world", seed), model=model)
    _, truth = s.frame(0)
    seen = np.isin(truth.label, (Label.PATIENT, Label.COVER)).mean()
    assert (s.placed is None) or seen > 0.01
    assert np.count_nonzero(np.isin(truth.label, (Label.MATTRESS, Label.TABLE))) > 1000  # a table in view
