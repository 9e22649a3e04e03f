"""The robustness benchmark's bookkeeping: suites, factors, and what counts as a silent failure."""

from __future__ import annotations

import math

import pytest

from positioning.errors import ScenarioError
from positioning.evaluation.robustness import (
    CaseResult,
    format_report,
    load_suite,
    session_factors,
    summarize,
)
from positioning.sim.scenario import sample_session


def _case(seed, *, iso=2.0, start=5.0, checks=None, cover="none", position="HFS", found=True, mode="fused"):
    return CaseResult(
        seed=seed, mode=mode, protocol="chest", factors={"cover": cover, "table": "ct-flat"}, status="OK",
        table_found=found, table_err_mm=3.0 if found else math.nan, position_true="HFS", position=position,
        arms_true="raised", arms="raised", keypoint_err_mm={"left_hip": 12.0, "left_shoulder": 30.0},
        iso_z_err_mm=iso, iso_x_err_mm=1.0, start_err_mm=start, end_err_mm=-4.0, checks=checks or {},
        seconds=1.0,
    )  # fmt: skip


def test_silent_failures_are_large_errors_without_a_reliability_check():
    ok = _case(1)
    silent = _case(2, iso=-22.0, checks={"ARMS_IN_FIELD": "warning"})  # a set-up check does not count
    flagged = _case(3, iso=-22.0, checks={"PATIENT_COVERED": "warning"})
    long_range = _case(4, start=45.0)
    assert not ok.large_error and silent.silent_failure and not flagged.silent_failure
    assert long_range.silent_failure
    s = summarize([ok, silent, flagged, long_range, _case(5, cover="legs", position="HFP")])["fused"]
    assert s["all"]["silent_failures"] == 2 and s["all"]["large_errors"] == 3
    assert s["all"]["position"]["right"] == 4 and s["covered"]["sessions"] == 1
    assert s["by_factor"]["cover"]["legs"]["sessions"] == 1
    assert s["keypoints"]["left_hip"]["median_mm"] == 12.0
    assert "silent failures: seed 2" in format_report({"fused": s})


def test_suite_and_factors():
    suite = load_suite("robustness")
    assert (
        suite.protocol_for(1, "HFS") == suite.protocols[1] and suite.protocol_for(0, "FFP") == "chest-prone"
    )
    f = session_factors(sample_session(suite.cases[0].scenario, suite.cases[0].seed))
    assert {"table", "base", "mattress colour", "camera", "camera height", "camera tilt"} <= set(f)
    with pytest.raises(ScenarioError, match="unknown suite"):
        load_suite("nope")
