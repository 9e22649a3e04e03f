"""``positioning evaluate``: suites, scoring against truth, the Dask runner, floors, the command."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from positioning.errors import PositioningError, ScenarioError
from positioning.evaluation.evaluate import EvalTask, resolve_tasks, run_task, run_tasks
from positioning.evaluation.floors import Floor, check_floors, load_floors, tightened, write_floors
from positioning.evaluation.records import CaseRecord
from positioning.evaluation.scoring import age_years, case_errors, case_truth, check_labels, factor_levels
from positioning.evaluation.suite import SuiteCase, load_suite, suite_recording, swap_head_feet
from positioning.planning.protocol import load_protocol
from positioning.sim.scenario import sample_session
from positioning.sim.session import calibration_path_for, truth_path_for

#: Seeds models were fitted or trained on (named scenarios; the world's 10000-59999).
FIT_SEEDS = set(range(500, 560)) | set(range(1000, 1020)) | set(range(2000, 2100))


# ---------------------------------------------------------------------------------------------- suites


@pytest.mark.parametrize("name", ["quick", "full"])
def test_suites_never_measure_on_fitting_seeds(name):
    suite = load_suite(name)
    robustness = set(load_suite("robustness").cases)
    for c in suite.cases:
        assert not (c.scenario == "world" and 10000 <= c.seed < 60000), c
        assert not (c.scenario != "world" and c.seed in FIT_SEEDS), c
        assert c not in robustness
    assert not set(load_suite("quick").cases) & set(load_suite("full").cases)


def test_the_full_suite_spans_the_population_and_the_rooms():
    suite = load_suite("full")
    assert len(suite.cases) >= 60
    positions, arms, ages, cameras, weights, offsets = set(), set(), set(), set(), [], []
    for c in suite.cases:
        spec = sample_session(c.scenario, c.seed)
        cameras.add(spec.rig.model)
        if spec.placement is None:
            continue
        positions.add(str(spec.placement.position))
        arms.add(str(spec.placement.arms))
        a = age_years(spec.phenotype.age)
        ages.add("child" if a < 18 else "elderly" if a >= 65 else "adult")
        weights.append(spec.phenotype.weight)
        offsets.append(abs(spec.placement.lateral_offset_mm))
    assert positions == {"HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "FFDL", "FFDR"}
    assert arms == {"raised", "sides", "chest"}
    assert ages == {"child", "adult", "elderly"}
    assert cameras == {"D415", "D435", "D455"}
    assert min(weights) < 0.15 and max(weights) > 0.85  # thin to obese
    assert max(offsets) > 40.0  # off-centre placement


def test_the_console_is_wrong_on_every_nth_session_only():
    suite = load_suite("quick")
    n = suite.console_wrong_every
    assert n > 0
    got = [suite.console_position(k, "HFS") for k in range(2 * n)]
    assert got.count("FFS") == 2 and got[n - 1] == "FFS" and got[0] == "HFS"
    assert suite.console_position(n - 1, None) is None
    assert swap_head_feet("FFDL") == "HFDL" and swap_head_feet("HFP") == "FFP"


def test_malformed_suites_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprotocols: [chest]\nsessions:\n  - {scenario: nowhere, seeds: [1]}\n")
    with pytest.raises(ScenarioError, match="nowhere"):
        load_suite(bad)
    bad.write_text("name: bad\nprotocols: [chest]\nsessions:\n  - {scenario: world, seeds: [1, 1]}\n")
    with pytest.raises(ScenarioError, match="twice"):
        load_suite(bad)
    bad.write_text("name: bad\nsessions: []\n")
    with pytest.raises(ScenarioError, match="malformed"):
        load_suite(bad)
    with pytest.raises(ScenarioError, match=r"known suites: .*quick"):
        load_suite("no-such-suite")


# -------------------------------------------------------------------------------------------- scoring


def _truth_doc(*, iso_z=-100.0, iso_x=5.0, position="HFS", staff=(), cover="none"):
    """A small truth document: a body along y from -1800 to -200 mm with a constant centroid."""
    y = np.arange(-1800.0, -195.0, 5.0)
    k = len(y)
    cs = {
        "y_mm": y.tolist(), "area_mm2": [50000.0] * k, "centroid_x_mm": [iso_x] * k,
        "centroid_z_mm": [iso_z] * k, "x_min_mm": [iso_x - 150] * k, "x_max_mm": [iso_x + 150] * k,
        "z_min_mm": [iso_z - 100] * k, "z_max_mm": [iso_z + 100] * k,
    }  # fmt: skip
    levels = {"skull_vertex": -250.0, "chin": -450.0, "lung_apex": -500.0, "jugular_notch": -520.0,
              "xiphoid": -700.0, "costophrenic": -750.0, "iliac_crest": -900.0, "pubic_symphysis": -1050.0,
              "lesser_trochanter": -1100.0}  # fmt: skip
    kp = {"left_shoulder": [150.0, -540.0, -60.0], "right_shoulder": [-150.0, -540.0, -60.0],
          "left_knee": [80.0, -1400.0, -150.0], "right_knee": [-80.0, -1400.0, -150.0],
          "left_ankle": [80.0, -1750.0, -160.0], "right_ankle": [-80.0, -1750.0, -160.0]}  # fmt: skip
    frame = {"frame_number": 7, "keypoints": kp, "landmarks": {n: [0.0, v, -50.0] for n, v in levels.items()},
             "cross_sections": cs}  # fmt: skip
    return {
        "camera": {"model": "D435", "tilt_deg": 12.0, "intrinsics": {"fx": 425.0},
                   "noise": {"subpixel_px": 0.1, "baseline_mm": 50.0}},
        "room": {"mattress_top_z_mm": -200.0, "has_gantry": True, "cradle_sagitta_mm": 0.0},
        "world": {"camera_height_above_table_mm": 1800.0, "cover": {"kind": cover},
                  "staff": [{"pose": p} for p in staff], "lighting": None},
        "second_person": None,
        "patient": {"patient_position": position, "arms": "raised", "height_mm": 1700.0, "mass_kg": 90.0,
                    "bmi": 31.1, "lateral_offset_mm": 45.0,
                    "phenotype": {"age": 0.9, "gender": 0.8}},
        "frames": [frame],
    }  # fmt: skip


def _plan(*, z=-96.0, x=3.0, start=-720.0, end=-480.0, checks=(), landmarks=None):
    return {
        "frame_number": 7, "patient_position": "HFS", "arms": "raised",
        "isocenter": {"x_mm": x, "z_mm": z},
        "table_offset": {"vertical_mm": -z, "requested_vertical_mm": -z, "longitudinal_mm": -start},
        "scan_range": {"start_mm": start, "end_mm": end, "first_slice_mm": start},
        "table": {"top_z_mm": -204.0},
        "landmarks": landmarks
        or {"left_shoulder": [150.0, -537.0, -56.0], "jugular_notch": [0.0, -510.0, -40.0]},
        "checks": list(checks),
    }  # fmt: skip


def test_scoring_measures_the_plan_against_the_truth_it_is_given():
    chest = load_protocol("chest")
    doc = _truth_doc()
    start, end = case_truth(doc, chest, None).start_mm + 3.0, case_truth(doc, chest, None).end_mm - 2.0
    plan = _plan(start=start, end=end)
    truth = case_truth(doc, chest, plan)
    assert truth.iso_z_mm == pytest.approx(-100.0) and truth.iso_x_mm == pytest.approx(5.0)
    assert truth.iso_z_plan_range_mm == pytest.approx(-100.0)
    assert truth.start_mm < truth.end_mm and truth.position == "HFS"
    e = case_errors(doc, truth, plan)
    assert e.iso_z_mm == pytest.approx(4.0) and e.iso_x_mm == pytest.approx(-2.0)
    assert e.table_vertical_mm == pytest.approx(96.0 - 100.0)
    assert e.start_mm == pytest.approx(3.0) and e.end_mm == pytest.approx(-2.0)
    assert e.table_longitudinal_mm == pytest.approx(-e.start_mm)  # the first slice is the start here
    assert e.table_top_mm == pytest.approx(-4.0)
    assert e.keypoints_mm == {"left_shoulder": pytest.approx(5.0)}
    assert e.levels_mm == {"jugular_notch": pytest.approx(10.0)}
    assert e.position_right and e.arms_right and not e.large_error


def test_a_large_error_is_silent_unless_a_reliability_check_flags_it():
    chest = load_protocol("chest")
    doc = _truth_doc()
    wrong = _plan(z=-80.0, checks=[{"code": "ARMS_IN_FIELD", "severity": "warning", "message": ""}])
    e = case_errors(doc, case_truth(doc, chest, wrong), wrong)
    assert e.large_error and not e.flagged and e.silent_failure
    flagged = _plan(z=-80.0, checks=[{"code": "LANDMARKS_UNCERTAIN", "severity": "warning", "message": ""}])
    e = case_errors(doc, case_truth(doc, chest, flagged), flagged)
    assert e.large_error and e.flagged and not e.silent_failure


def test_check_labels_come_from_truth():
    chest = load_protocol("chest")
    doc = _truth_doc(staff=("standing",), cover="legs")
    labels = check_labels(doc, chest, "FFS", _plan())
    assert labels["SECOND_PERSON"] and labels["PATIENT_COVERED"] and labels["ORIENTATION_MISMATCH"]
    assert not labels["EMPTY_TABLE"] and not labels["LATERAL_OFF_CENTRE"]  # centroid x 5 mm
    assert not labels["FOV_TRUNCATION"]
    assert not check_labels(_truth_doc(), chest, "HFS", None)["ORIENTATION_MISMATCH"]
    empty = _truth_doc() | {"patient": None}
    assert check_labels(empty, chest, None, None) == {"EMPTY_TABLE": True, "SECOND_PERSON": False}


def test_factor_levels_name_phenotype_pose_and_camera():
    f = factor_levels(_truth_doc())
    assert f["age group"] == "elderly (65+ y)" and f["sex"] == "female" and f["BMI class"] == "obese (30+)"
    assert f["position"] == "HFS" and f["camera"] == "D435" and f["camera tilt"] == "10-20 deg"
    assert f["lateral placement"] == "40+ mm off" and f["cover"] == "none" and f["lighting"] == "normal"
    assert "noise level" in f
    assert age_years(0.5) == pytest.approx(25.0) and age_years(0.25) == pytest.approx(6.0)


# --------------------------------------------------------------------------------------------- floors


def test_floors_fail_on_a_worse_figure_and_on_a_missing_one():
    floors = [Floor("iso_z_median_mm", "max", 5.0), Floor("position_accuracy", "min", 0.9)]
    ok = check_floors(floors, {"iso_z_median_mm": 4.0, "position_accuracy": 0.95})
    assert all(r.passed for r in ok)
    bad = check_floors(floors, {"iso_z_median_mm": 6.0, "position_accuracy": 0.95})
    assert [r.passed for r in bad] == [False, True] and "FAIL" in bad[0].line()
    nan = check_floors(floors, {"iso_z_median_mm": math.nan})
    assert not any(r.passed for r in nan) and "not measured" in nan[1].line()


def test_floors_are_only_ever_tightened(tmp_path):
    f = Floor("iso_z_median_mm", "max", 8.0)
    assert tightened(f, 3.0).value == pytest.approx(4.8)  # 3 * 1.25 + 1
    assert tightened(f, 9.0).value == 8.0  # worse: never loosened
    assert tightened(f, math.nan) == f
    s = Floor("position_accuracy", "min", 0.8)
    assert tightened(s, 0.95).value == pytest.approx(0.9) and tightened(s, 0.7).value == 0.8
    path = tmp_path / "x.floors.yaml"
    write_floors(path, [tightened(f, 3.0), s], {"landmarks": "fused"}, "# header\n")
    floors, settings = load_floors(path)
    assert path.read_text().startswith("# header") and settings == {"landmarks": "fused"}
    assert floors == [Floor("iso_z_median_mm", "max", 4.8), s]
    path.write_text("floors:\n  iso_z_median_mm: {below: 3}\n")
    with pytest.raises(ScenarioError, match="malformed"):
        load_floors(path)


def test_the_quick_suite_has_floors_for_the_headline():
    from positioning.evaluation.floors import floors_path
    from positioning.evaluation.summary import headline

    suite = load_suite("quick")
    floors, settings = load_floors(floors_path(suite.path))
    assert settings["landmarks"] == "fused"
    known = set(headline([]))
    assert {f.figure for f in floors} <= known


# ------------------------------------------------------------------------------------- running cases


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A recorded suite session (cached by content), copied into a folder with and without truth, and a
    corrupt recording beside them."""
    suite = load_suite("quick")
    src = suite_recording(suite, SuiteCase("hfs-arms-up", 3100))
    folder = tmp_path_factory.mktemp("recordings")
    for name, truth in (("with-truth", True), ("real-like", False)):
        dst = folder / f"{name}.db3"
        shutil.copy(src, dst)
        shutil.copy(calibration_path_for(src), calibration_path_for(dst))
        if truth:
            shutil.copy(truth_path_for(src), truth_path_for(dst))
    (folder / "broken.db3").write_bytes(b"not a recording" * 100)
    shutil.copy(calibration_path_for(src), calibration_path_for(folder / "broken.db3"))
    return folder


def test_a_folder_needs_recordings_and_a_protocol(tmp_path, recorded):
    with pytest.raises(ScenarioError, match="no RealSense recordings"):
        resolve_tasks(tmp_path, protocol="chest")
    with pytest.raises(PositioningError, match="--protocol"):
        resolve_tasks(recorded)
    with pytest.raises(PositioningError, match="no-such"):
        resolve_tasks(recorded, protocol="no-such")
    tasks = resolve_tasks(recorded, protocol="chest")
    assert [t.name for t in tasks] == ["broken", "real-like", "with-truth"]


def test_a_case_with_truth_is_scored_and_one_without_still_plans(recorded):
    with_truth = run_task(EvalTask(name="t", protocol="chest", recording=str(recorded / "with-truth.db3")))
    assert with_truth.failure is None and with_truth.planned and with_truth.frames == 3
    assert with_truth.truth is not None and with_truth.errors is not None
    assert with_truth.errors.position_right and abs(with_truth.errors.iso_z_mm) < 15.0
    assert with_truth.check_labels["EMPTY_TABLE"] is False
    plan_z = with_truth.plan["isocenter"]["z_mm"]
    assert plan_z - with_truth.truth.iso_z_plan_range_mm == pytest.approx(
        with_truth.errors.iso_z_mm, abs=0.05
    )
    no_truth = run_task(EvalTask(name="r", protocol="chest", recording=str(recorded / "real-like.db3")))
    assert no_truth.truth is None and no_truth.errors is None and no_truth.planned
    assert no_truth.overlay_jpeg is not None and no_truth.overlay_jpeg[:2] == b"\xff\xd8"
    assert no_truth.plan == with_truth.plan  # truth is never an input to the pipeline
    broken = run_task(EvalTask(name="b", protocol="chest", recording=str(recorded / "broken.db3")))
    assert broken.failure and "broken.db3" in broken.failure and broken.plan is None
    assert "internal error" not in broken.failure
    again = CaseRecord.from_json(json.loads(json.dumps(with_truth.to_json())))
    assert again.to_json() == with_truth.to_json()  # rounded to 0.01 mm once, then stable


@pytest.mark.slow
def test_cases_run_as_tasks_on_a_local_dask_cluster(recorded):
    tasks = resolve_tasks(recorded, protocol="chest")
    seen = []
    records, workers, address = run_tasks(tasks, jobs=2, progress=False, on_record=seen.append)
    assert workers == 2 and "LocalCluster" in address
    assert [r.name for r in records] == ["broken", "real-like", "with-truth"]  # the tasks' order
    assert len(seen) == 3 and records[0].failure and records[2].errors is not None
    assert all(r.worker for r in records)


@pytest.mark.slow
def test_the_evaluate_command_writes_a_report_and_counts_failures(recorded, tmp_path, capsys):
    from positioning.cli import main

    out = tmp_path / "report"
    code = main(["evaluate", str(recorded), "--protocol", "chest", "--jobs", "1", "--report", str(out),
                 "--no-progress", "--json", str(tmp_path / "figures.json")])  # fmt: skip
    assert code == 0
    from positioning.evaluation.bench_all import evaluate_headline

    figures = {f.name: f for f in evaluate_headline(json.loads((tmp_path / "figures.json").read_text()))}
    assert figures["vertical isocenter |error| (n=1)"].median is not None  # the one recording with truth
    doc = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in doc["cases"]] == ["broken", "real-like", "with-truth"]
    assert doc["cases"][0]["failure"] and doc["cases"][1]["overlay"] == "overlays/real-like.jpg"
    assert (out / "overlays" / "real-like.jpg").is_file()
    html = (out / "report.html").read_text()
    assert "real-like" in html and "data:image/jpeg;base64" in html
    assert (out / "report.md").is_file()
    printed = capsys.readouterr().out
    assert "3 cases" in printed
