"""Scenarios: every YAML in sim/ loads and samples, reproducibly; bad files fail with ScenarioError."""

from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest

from positioning.errors import PositioningError, ScenarioError
from positioning.sim.body import ArmPose, Phenotype
from positioning.sim.placement import PatientPosition
from positioning.sim.scenario import (
    Scenario,
    SessionSpec,
    list_scenarios,
    load_scenario,
    sample_session,
    scenario_dir,
)

SCENARIOS = list_scenarios()
NAMES = [s.name for s in SCENARIOS]


def test_the_scenario_folder_is_the_repositorys_sim_folder():
    assert scenario_dir().name == "sim" and (scenario_dir().parent / "pyproject.toml").is_file()
    assert len(SCENARIOS) == len(list(scenario_dir().glob("*.yaml"))) >= 10
    assert NAMES == sorted(NAMES)
    assert {"hfs-arms-up", "empty-table", "patient-moved", "second-person", "mixed"} <= set(NAMES)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=NAMES)
def test_every_scenario_loads_and_samples(scenario: Scenario):
    assert scenario.path is not None and scenario.path.stem == scenario.name  # file name = scenario name
    assert scenario.description
    assert load_scenario(scenario.name) == scenario
    for seed in (0, 1, 12345):
        spec = sample_session(scenario, seed)
        assert isinstance(spec, SessionSpec) and spec.scenario == scenario.name and spec.seed == seed
        assert spec.frames >= 1
        spec.rig.intrinsics  # noqa: B018 - the camera model and resolution are supported
        assert spec.rig.tilt_deg < 45.0
        assert (spec.phenotype is None) == (spec.placement is None)
        if spec.placement is not None:
            p = spec.placement
            assert isinstance(p.position, PatientPosition) and isinstance(p.arms, ArmPose)
            assert p.mattress_top_z_mm == spec.room.mattress_top_z_mm
            assert abs(p.lateral_offset_mm) <= (250.0 if scenario.name == "half-off" else 100.0)
            # the patient lies on the table, head (or feet) end just short of the table's head end
            assert spec.room.table_foot_y_mm + 1500 < p.head_y_mm < spec.room.table_head_y_mm + 300


def test_sampled_values_follow_the_yaml():
    spec = sample_session("hfs-arms-up", 3)
    assert spec.placement.position is PatientPosition.HFS and spec.placement.arms is ArmPose.RAISED
    assert -40 <= spec.placement.lateral_offset_mm <= 40
    assert -210 <= spec.room.mattress_top_z_mm <= -110
    assert 0.45 <= spec.phenotype.age <= 0.95
    assert (spec.rig.model, spec.rig.width, spec.rig.height) == ("D435", 848, 480)
    moved = sample_session("patient-moved", 0)
    assert moved.shift_at_frame == 10 and moved.shift_mm == (25.0, -15.0, 0.0)
    person = sample_session("second-person", 0)
    assert person.second_person is not None and abs(person.second_person[0]) == 650.0
    assert sample_session("empty-table", 0).phenotype is None
    tilted = sample_session("tilted-d455", 0)
    assert (tilted.rig.model, tilted.rig.width, tilted.noise.baseline_mm) == ("D455", 1280, 95.0)
    assert tilted.rig.position_mm == (150, -500, 1750)


def test_same_seed_gives_the_same_session():
    a, b = sample_session("mixed", 7), sample_session("mixed", 7)
    assert a == b
    assert dataclasses.asdict(a) == dataclasses.asdict(b)


@pytest.mark.parametrize("name", ["mixed", "hfs-arms-up", "empty-table"])
def test_different_seeds_give_different_sessions(name):
    specs = [sample_session(name, seed) for seed in range(5)]
    rooms = {s.room.mattress_top_z_mm for s in specs}
    assert len(rooms) == 5
    if specs[0].phenotype is not None:
        assert len({s.phenotype for s in specs}) == 5


def test_mixed_covers_positions_arms_and_cameras():
    specs = [sample_session("mixed", seed) for seed in range(60)]
    assert {s.placement.position for s in specs} == set(PatientPosition)
    assert {s.placement.arms for s in specs} == set(ArmPose)
    assert {s.rig.model for s in specs} == {"D435", "D455"}
    assert {s.noise.baseline_mm for s in specs} == {50.0, 95.0}  # the noise follows the camera model


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'") as info:
        load_scenario("nope")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(ScenarioError, match="unknown scenario"):
        sample_session("nope", 0)
    assert isinstance(info.value, PositioningError) and info.value.code == "SCENARIO_ERROR"


GOOD = """
name: tmp
description: a scenario written by the test
patient:
  position: HFS
  arms: raised
  phenotype: {age: {uniform: [0.45, 0.95]}}
room: {mattress_top_z_mm: {uniform: [-230, -110]}}
camera: {model: D435, width: 848, height: 480}
"""


def write(tmp_path, text: str):
    path = tmp_path / "tmp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_scenario_can_be_loaded_by_path(tmp_path):
    spec = sample_session(load_scenario(write(tmp_path, GOOD)), 0)
    assert spec.scenario == "tmp" and spec.phenotype.age >= 0.45
    assert spec.phenotype == dataclasses.replace(Phenotype(), age=spec.phenotype.age)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("{uniform: [0.45, 0.95]}", "{uniform: [0.45]}", "'uniform' needs \\[low, high\\]"),
        ("{uniform: [0.45, 0.95]}", "{uniform: 0.5}", "'uniform' needs"),
        ("{uniform: [0.45, 0.95]}", "{choice: []}", "'choice' needs a non-empty list"),
        ("{uniform: [0.45, 0.95]}", "1.5", "phenotype age must be in \\[0, 1\\]"),
        ("position: HFS", "position: HFX", "'HFX' is not a valid PatientPosition"),
        ("arms: raised", "arms: akimbo", "'akimbo' is not a valid ArmState"),
        ("model: D435", "model: D405", "malformed"),
        ("width: 848", "width: 640", "unsupported resolution 640x480"),
        ("room: {", "room: {no_such_field: 1, ", "no_such_field"),
    ],
    ids=["uniform-short", "uniform-scalar", "choice-empty", "phenotype-range", "position", "arms",
         "camera-model", "resolution", "room-field"],
)  # fmt: skip
def test_malformed_values_raise_scenario_error(tmp_path, old, new, match):
    assert old in GOOD
    scenario = load_scenario(write(tmp_path, GOOD.replace(old, new)))
    with pytest.raises(ScenarioError, match=match):
        sample_session(scenario, 0)


@pytest.mark.parametrize(
    ("text", "match"),
    [("name: [unclosed\n", "not valid YAML"), ("- just\n- a list\n", "must be a mapping"),
     ("description: no name\n", "at least a 'name'")],
)  # fmt: skip
def test_malformed_files_raise_scenario_error(tmp_path, text, match):
    with pytest.raises(ScenarioError, match=match):
        load_scenario(write(tmp_path, text))


def test_shift_and_person_values_are_numbers():
    spec = sample_session("patient-moved", 0)
    assert all(isinstance(v, float) for v in spec.shift_mm)
    assert np.isfinite(spec.breathing_amplitude_mm) and spec.breathing_period_s > 0


def test_unsupported_camera_fails_when_sampling_not_at_the_first_frame(tmp_path):
    """Regression: a bad width/height used to pass sample_session and fail later as a bare ValueError."""
    scenario = load_scenario(write(tmp_path, GOOD.replace("height: 480", "height: 481")))
    with pytest.raises(ScenarioError, match="unsupported resolution 848x481"):
        sample_session(scenario, 0)
