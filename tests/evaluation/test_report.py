"""The evaluation summary's figures (hand-computed on synthetic cases) and the report files it renders."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from positioning.evaluation.records import CaseErrors, CaseRecord, CaseTruth
from positioning.evaluation.report import format_text, write_report
from positioning.evaluation.summary import HEADLINE_KEYS, headline, published_figures, summarize

KEYPOINTS = {
    "left_shoulder": 10.0,
    "right_shoulder": 20.0,
    "left_hip": 30.0,
    "right_hip": 40.0,
    "nose": 100.0,
}


def _plan(position="HFS", arms="down", iso_z=-3.0, scan=True):
    return {
        "status": "OK",
        "patient_position": position,
        "arms": arms,
        "isocenter": {"x_mm": 1.5, "z_mm": iso_z} if scan else None,
        "table_offset": {"vertical_mm": -iso_z, "longitudinal_mm": 812.0},
        "scan_range": {"start_mm": 100.0, "end_mm": 420.0} if scan else None,
        "checks": [],
    }


def _case(
    name, region, iso_z, *, position="HFS", perceived="HFS", sex="male", cover="none", end=-3.0,
    large=False, flagged=False, checks=(), labels=None, table_top=3.0, bmi=25.0, planned=True,
):  # fmt: skip
    truth = CaseTruth(
        position=position, arms="down", height_mm=1750.0, mass_kg=bmi * 1.75**2, bmi=bmi, age_years=50.0,
        sex=sex, iso_z_mm=-30.0, iso_x_mm=0.0, iso_z_plan_range_mm=-30.0, start_mm=100.0, end_mm=420.0,
        table_top_z_mm=-150.0, factors={"sex": sex, "cover": cover, "position": position or "empty"},
    )  # fmt: skip
    errors = None
    if planned:
        errors = CaseErrors(
            iso_z_mm=iso_z, iso_x_mm=1.0, table_vertical_mm=-iso_z, table_longitudinal_mm=2.0, start_mm=2.0,
            end_mm=end, table_top_mm=table_top, keypoints_mm=dict(KEYPOINTS), levels_mm={"xiphoid": iso_z},
            position_right=perceived == position, arms_right=True, large_error=large, flagged=flagged,
        )  # fmt: skip
    return CaseRecord(
        name=name, recording=f"/rec/{name}.db3", protocol=f"{region}-routine", body_region=region,
        console_position=None, landmarks="fused", plan=_plan(perceived) if planned else None,
        failure=None if planned else "no patient found <depth> & colour", checks=list(checks),
        check_labels=labels or {}, truth=truth, errors=errors, frames=10, seconds=1.25, worker="local",
    )  # fmt: skip


def _chk(code, severity="warning"):
    return {"code": code, "severity": severity, "message": f"{code} said so"}


AIF = "ARMS_IN_FIELD"


def _records() -> list[CaseRecord]:
    """Twelve truth cases (chest, abdomen, one failure, one empty table) and one real recording.

    Planned |vertical isocenter errors|: 1 2 2 3 4 5 6 8 16 20 (median 4.5, p95 16 + 0.55·4 = 18.2).
    ARMS_IN_FIELD (fires, should fire): TT TF FT FF TT, and an info-only (not firing) positive: tp 2, fp 1,
    fn 2, tn 1.
    """
    no = {AIF: False, "RANGE_OVERSCAN": False}
    yes = {AIF: True, "RANGE_OVERSCAN": False}
    recs = [
        _case("c1", "chest", 1.0, checks=[_chk(AIF)], labels=yes),
        _case("c2", "chest", -2.0, sex="female", checks=[_chk(AIF, "error")], labels=no),
        _case("c3", "chest", 3.0, perceived="HFP", labels=yes),
        _case("c4", "chest", -4.0, sex="female", labels=no, bmi=32.0),
        _case("c5", "chest", 6.0, checks=[_chk(AIF)], labels=yes),
        _case("c6", "chest", 16.0, cover="legs", large=True, flagged=True,
              checks=[_chk("LANDMARKS_UNCERTAIN"), _chk(AIF, "info")], labels={AIF: True}),
        _case("a1", "abdomen", -8.0, sex="female", cover="legs", table_top=12.0),
        _case("a2", "abdomen", 2.0, sex="female"),
        _case("a3", "abdomen", 5.0),
        _case("a4", "abdomen", 20.0, sex="female", cover="legs", end=-40.0, large=True),
        _case("a5", "abdomen", math.nan, planned=False, checks=[_chk("NO_LANDMARKS", "error")]),
        _case("e1", "abdomen", math.nan, position=None, planned=False),
    ]  # fmt: skip
    # the empty table has no arms either
    e1 = recs[-1]
    recs[-1] = CaseRecord(**{**_fields(e1), "truth": CaseTruth(**{**_fields(e1.truth), "arms": None})})
    real = CaseRecord(
        name="real session 1", recording="/rec/real.db3", protocol="chest-routine", body_region="chest",
        console_position="HFS", landmarks="fused", plan=_plan("HFS", iso_z=-12.5), failure=None,
        checks=[_chk(AIF)], check_labels={}, truth=None, errors=None, frames=30, seconds=2.5, worker="local",
    )  # fmt: skip
    return [*recs, real]


def _fields(obj) -> dict:
    import dataclasses

    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def test_headline_hand_computed():
    h = headline(_records())
    assert tuple(h) == HEADLINE_KEYS
    assert (h["cases"], h["with_truth"], h["failures"]) == (13, 12, 1)  # the empty table is no failure
    assert h["position_accuracy"] == pytest.approx(9 / 11)  # c3 wrong, the failure a5 counts as wrong
    assert h["arms_accuracy"] == pytest.approx(10 / 11)
    assert h["iso_z_median_mm"] == pytest.approx(4.5)
    assert h["iso_z_p95_mm"] == pytest.approx(18.2)
    assert h["iso_x_median_mm"] == pytest.approx(1.0)
    assert h["table_vertical_median_mm"] == pytest.approx(4.5)
    assert h["table_longitudinal_median_mm"] == pytest.approx(2.0)
    assert h["range_end_median_mm"] == pytest.approx(2.5)  # ten 2s, nine 3s and one 40, pooled
    assert h["shoulders_hips_median_mm"] == pytest.approx(25.0)  # the nose is not pooled
    assert (h["iso_z_within_5mm"], h["iso_z_within_10mm"], h["iso_z_within_15mm"]) == (0.6, 0.8, 0.8)
    assert h["table_top_within_10mm"] == pytest.approx(0.9)
    assert (h["silent_failures"], h["large_errors"]) == (1, 2)


def test_headline_of_nothing_is_nan_not_an_error():
    h = headline([])
    assert h["cases"] == 0 and h["failures"] == 0
    assert math.isnan(h["iso_z_median_mm"]) and math.isnan(h["position_accuracy"])


def test_check_precision_and_recall():
    s = summarize(_records())
    aif = s["checks"][AIF]
    assert {k: aif[k] for k in ("tp", "fp", "fn", "tn", "n")} == {"tp": 2, "fp": 1, "fn": 2, "tn": 1, "n": 6}
    assert aif["precision"] == pytest.approx(2 / 3, abs=1e-3) and aif["recall"] == 0.5
    never = s["checks"]["RANGE_OVERSCAN"]
    assert (
        never["tp"] + never["fp"] + never["fn"] == 0
        and never["precision"] is None
        and never["recall"] is None
    )
    assert s["checks_fired"][AIF] == {"info": 1, "warning": 3, "error": 1}  # the real recording counts here


def test_regions_bland_altman_factors_and_lists():
    recs = _records()
    s = summarize(recs)
    assert set(s["regions"]) == {"chest", "abdomen", "all"}
    chest, abd = s["regions"]["chest"], s["regions"]["abdomen"]
    assert (chest["n"], chest["planned"], chest["failures"]) == (6, 6, 0)
    assert chest["iso_z_abs_mm"]["median_mm"] == 3.5  # 1 2 3 4 6 16
    assert chest["iso_z_abs_mm"]["q1_mm"] == 2.25 and chest["iso_z_abs_mm"]["q3_mm"] == 5.5
    assert chest["within_5mm"] == pytest.approx(4 / 6, abs=1e-3)
    assert (abd["n"], abd["planned"], abd["failures"]) == (5, 4, 1)  # the empty table is not a patient
    assert (abd["within_5mm"], abd["within_10mm"], abd["within_15mm"]) == (0.5, 0.75, 0.75)
    diffs = np.array([1, -2, 3, -4, 6, 16, -8, 2, 5, 20], dtype=float)
    ba = s["bland_altman"]
    assert ba["n"] == 10
    assert ba["bias_mm"] == pytest.approx(diffs.mean(), abs=1e-3)
    assert ba["sd_mm"] == pytest.approx(diffs.std(ddof=1), abs=1e-3)
    assert ba["loa_high_mm"] == pytest.approx(diffs.mean() + 1.96 * diffs.std(ddof=1), abs=1e-3)
    assert s["regions"]["all"]["bland_altman"] == ba
    assert s["landmarks"]["keypoints"]["left_shoulder"] == {"n": 10, "median_mm": 10.0, "p95_mm": 10.0}
    assert s["landmarks"]["levels"]["xiphoid"]["bias_mm"] == 2.5  # signed median of the same diffs
    legs = s["factors"]["cover"]["legs"]
    assert (legs["n"], legs["iso_z_median_mm"], legs["silent_failures"]) == (3, 16.0, 1)
    assert s["factors"]["position"]["HFS"]["failures"] == 1 and s["factors"]["position"]["empty"]["n"] == 1
    w = s["worst_factor_level"]
    assert (w["factor"], w["level"], w["n"]) == ("cover", "legs", 3) and w["iso_z_p95_mm"] == pytest.approx(
        19.6
    )
    assert [f["name"] for f in s["failures"]] == ["a5"] and "<depth>" in s["failures"][0]["failure"]
    assert [f["name"] for f in s["silent_failures"]] == ["a4"]
    assert s["without_truth"] == [{"name": "real session 1", "protocol": "chest-routine", "planned": True,
                                   "status": "OK"}]  # fmt: skip
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN


def test_summary_survives_the_json_round_trip():
    recs = _records()
    back = [CaseRecord.from_json(json.loads(json.dumps(r.to_json(f"overlays/{r.name}.jpg")))) for r in recs]
    assert summarize(back) == summarize(recs)
    assert headline(back)["iso_z_p95_mm"] == pytest.approx(18.2)


def test_published_figures_carry_citations():
    pubs = published_figures()
    assert all(p.citation and p.value_text.endswith(("mm", ")")) for p in pubs)
    booij_head = [p for p in pubs if p.region == "head"]
    assert [(p.method, p.value_mm, p.citation[:5]) for p in booij_head] == [("camera", 9.5, "Booij")]
    assert {p.citation.split()[0] for p in pubs} >= {"Booij", "Saltybaeva", "Gang", "Hadi", "Eur"}


def _write_overlay(out, name):
    img = np.zeros((24, 32, 3), np.uint8)
    img[4:20, 8:24] = (0, 200, 255)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    (out / "overlays" / f"{name}.jpg").write_bytes(buf.tobytes())


def test_report_is_self_contained_and_complete(tmp_path):
    recs = _records()
    _write_overlay(tmp_path, "real session 1")
    _write_overlay(tmp_path, "a4")  # the worst case
    s = summarize(recs)
    paths = write_report(recs, s, tmp_path, title="Suite <quick>", command="positioning evaluate quick")
    page = paths["html"].read_text(encoding="utf-8")
    md = paths["markdown"].read_text(encoding="utf-8")
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 4  # four plots
    assert page.count("data:image/jpeg;base64,") == 2  # the real recording and the worst case
    assert "&lt;depth&gt; &amp; colour" in page and "<depth>" not in page and "Suite &lt;quick&gt;" in page
    plots = ("isocenter_error_hist", "range_end_error_hist", "iso_z_error_vs_bmi", "bland_altman_iso_z")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"{n}.png" for n in plots)
    assert set(paths) == {"markdown", "html", *plots}
    assert "| chest | 6 (6) | 3.5 (2.2–5.5) | 67 | 83 | 83 |" in md
    assert "Booij et al., Eur Radiol 2019" in md and "median 9.5 mm" in md and "Hadi et al." in md
    assert "![real session 1: the plan drawn on the last frame](overlays/real%20session%201.jpg)" in md
    assert "812.0" in md  # the real recording's longitudinal table offset
    assert "median (IQR)" in md and "(mm)" in md
    text = format_text(s)
    assert "failure: a5" in text and "silent failure: a4" in text and "cover = legs" in text


@pytest.mark.parametrize("which", ["real only", "no plan at all"])
def test_report_renders_without_truth_or_plans(tmp_path, which):
    recs = _records()
    recs = [recs[-1]] if which == "real only" else [recs[10], recs[11]]
    s = summarize(recs)
    paths = write_report(recs, s, tmp_path, title="t", command="c")
    assert paths["html"].is_file() and paths["markdown"].is_file() and set(paths) == {"markdown", "html"}
    assert "data:image/png" not in paths["html"].read_text(encoding="utf-8")
    assert format_text(s).startswith(f"cases {len(recs)}")
    json.dumps(s, allow_nan=False)
