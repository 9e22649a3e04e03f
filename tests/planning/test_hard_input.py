"""Hard input ends in a right answer or a named warning or error, never silently wrong: a blanket, a
person leaning over the patient, a patient half off the table, a table only partly in view."""

from __future__ import annotations

import dataclasses

import pytest

from positioning.evaluation.bench_plan import truth_range
from positioning.evaluation.isocenter_fit import load_frames
from positioning.evaluation.truth import true_isocenter
from positioning.perception.pipeline import Perceiver, PerceiverSettings
from positioning.perception.scene_net import default_scene_net_path
from positioning.planning.plan import make_plan
from positioning.planning.protocol import load_protocol
from positioning.sim.scenario import sample_session

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not default_scene_net_path().is_file(), reason="models/scene_net.pt is not built"),
]


@pytest.fixture(scope="module")
def perceiver():
    with Perceiver(settings=PerceiverSettings(track=True)) as p:
        yield p


def _plan(perceiver, scenario, seed, protocol, frames=(0, 1, 2)):
    perceiver.reset()
    samples = load_frames(scenario, seed, list(frames))
    state = None
    for s in samples:
        state = perceiver.perceive(s.frame, s.calibration)
    proto = load_protocol(protocol)
    plan = make_plan(state, proto, expected_position=samples[-1].position)
    return samples[-1], state, plan, proto


def _codes(plan, severities=("warning", "error")):
    return {c.code for c in plan.checks if str(c.severity) in severities}


def _iso_error(sample, plan):
    _, tz = true_isocenter(sample.cross_sections(), plan.scan_range.start_mm, plan.scan_range.end_mm)
    return plan.isocenter.z_mm - tz


def _seed_where(predicate, first=900500):
    """The first world seed from ``first`` (outside the suite's 900000-900119 and the training seeds) whose
    session matches."""
    return _seeds_where(predicate, 1, first)[0]


def _seeds_where(predicate, count, first=900500):
    """The first ``count`` world seeds from ``first`` whose session matches (see :func:`_seed_where`)."""
    found = []
    for seed in range(first, first + 600):
        if predicate(sample_session("world", seed)):
            found.append(seed)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} such sessions in 600 seeds")


def test_blankets_are_named_and_bare_legs_are_not(perceiver):
    # the colour landmarks mark legs under a blanket as hidden (about two in five blankets on the training
    # seeds, fewer in one frame here: positioning/perception/cover.py); a bare patient's legs never are
    def alone(s):
        return s.placement is not None and not s.staff

    covered = _seeds_where(lambda s: alone(s) and s.cover.kind != "none", 12)
    bare = _seeds_where(lambda s: alone(s) and s.cover.kind == "none", 12)
    named = {}
    for seed in covered + bare:
        _, state, plan, _ = _plan(perceiver, "world", seed, "abdomen", frames=(0,))
        named[seed] = "PATIENT_COVERED" in _codes(plan)
        assert named[seed] == (state.cover == "legs")
    assert sum(named[s] for s in covered) >= 2, named
    assert not any(named[s] for s in bare), named


def test_someone_leaning_over_the_patient_is_a_second_person(perceiver):
    seed = _seed_where(lambda s: s.placement is not None and [m.pose for m in s.staff] == ["leaning"])
    _, state, plan, _ = _plan(perceiver, "world", seed, "chest")
    assert state.has_patient and "SECOND_PERSON" in _codes(plan)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_patient_half_off_the_table_is_off_centre_and_still_measured(perceiver, seed):
    sample, state, plan, _ = _plan(perceiver, "half-off", seed, "chest")
    assert state.has_patient and "LATERAL_OFF_CENTRE" in _codes(plan)
    assert abs(plan.isocenter.x_mm - true_isocenter(sample.cross_sections(), plan.scan_range.start_mm,
                                                    plan.scan_range.end_mm)[0]) < 30.0  # fmt: skip
    assert abs(_iso_error(sample, plan)) < 15.0 or _codes(plan) & {"ISOCENTER_UNCERTAIN", "TABLE_UNCERTAIN"}


@pytest.mark.parametrize("protocol", ["chest", "pelvis"])
def test_a_table_partly_in_view_plans_what_it_sees_and_names_what_it_does_not(perceiver, protocol):
    sample, state, plan, proto = _plan(perceiver, "partial-table", 0, protocol)
    assert state.has_patient
    tr = truth_range(sample, proto)
    ok = (
        plan.scan_range is not None
        and max(abs(plan.scan_range.start_mm - tr[0]), abs(plan.scan_range.end_mm - tr[1])) < 30.0
    )
    # a range it cannot see is named: not visible, or its landmarks uncertain
    assert ok or _codes(plan) & {"RANGE_NOT_VISIBLE", "LANDMARKS_UNCERTAIN"}


def test_a_depth_only_recording_plans_end_to_end(tmp_path):
    from positioning.cli import main

    spec = dataclasses.replace(sample_session("hfs-arms-up", 6), frames=3)
    from positioning.sim.session import record_session

    record_session(spec, tmp_path / "depth.db3", color=False)
    assert (
        main(
            [
                "plan",
                str(tmp_path / "depth.db3"),
                "--protocol",
                "chest",
                "--json",
                "--overlay",
                str(tmp_path / "o.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "o.png").is_file()
