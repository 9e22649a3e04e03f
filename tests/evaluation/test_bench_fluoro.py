"""The fluoroscopy benchmark scores a real recording's set-ups against its truth."""

from __future__ import annotations

import pytest

from positioning.evaluation.bench_fluoro import format_report, score_case, summarize
from positioning.evaluation.suite import SuiteCase, load_suite, suite_recording


@pytest.fixture(scope="module")
def rows():
    rec = suite_recording(load_suite("quick"), SuiteCase("hfs-arms-up", 3100))
    return score_case(str(rec), ["ercp", "hip-left", "nephrostomy-left"], landmarks="depth")


def test_only_procedures_done_in_the_true_position_are_scored(rows):
    assert [r["procedure"] for r in rows] == ["ercp", "hip-left"]  # nephrostomy is prone only
    for r in rows:
        assert r["planned"] and r["position"] == "HFS"
        assert 0.0 <= r["coverage_pa"] <= 1.0 and 0.0 <= r["coverage_lateral"] <= 1.0
        assert r["centre_err_mm"] < 40.0  # the default room: landmarks within a few centimetres
        # the plan's box holds the procedure's margin and its own uncertainty; the true one neither
        assert all(p > t for p, t in zip(r["size_mm"], r["true_size_mm"], strict=True))


def test_the_summary_counts_plans_patients_and_coverage(rows):
    failed = {k: rows[0][k] for k in ("recording", "procedure", "position", "factors", "checks", "seconds")}
    s = summarize([*rows, {**failed, "case": "x@1", "planned": False, "ok": False}])
    assert s["all"]["plans"] == 3 and s["all"]["patients"] == 2 and s["all"]["failures"] == 1
    text = format_report(s)
    assert "ercp" in text and "hip-left" in text and "HFS" in text
