"""Each check triggered and not triggered, with hand-computed geometry."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.perception.orientation import ArmState, PatientPosition
from positioning.perception.status import PerceptionStatus
from positioning.planning.checks import (
    CheckCode,
    CheckSettings,
    Severity,
    check_arms,
    check_bore,
    check_fov,
    check_head_direction,
    check_landmarks,
    check_lateral,
    check_moved,
    check_orientation,
    check_perception,
    check_range_coverage,
    check_table_travel,
    check_table_vertical,
    check_view_context,
    check_visible_range,
    describe_lateral,
    worst_severity,
)

HFS, FFS = PatientPosition.HFS, PatientPosition.FFS


def codes(checks: list) -> list[str]:
    return [str(c.code) for c in checks]


@pytest.mark.parametrize(
    ("status", "code", "severity"),
    [
        (PerceptionStatus.NO_TABLE, "NO_TABLE", Severity.ERROR),
        (PerceptionStatus.EMPTY_TABLE, "EMPTY_TABLE", Severity.ERROR),
        (PerceptionStatus.NO_DEPTH, "NO_DEPTH", Severity.ERROR),
        (PerceptionStatus.SECOND_PERSON, "SECOND_PERSON", Severity.WARNING),
    ],
)
def test_perception_statuses_map_to_checks(status: PerceptionStatus, code: str, severity: Severity) -> None:
    (c,) = check_perception(status)
    assert (c.code, c.severity) == (code, severity)
    assert c.message


def test_perception_ok_and_no_landmarks() -> None:
    assert check_perception(PerceptionStatus.OK) == []
    assert codes(check_perception(PerceptionStatus.OK, has_landmarks=False)) == ["NO_LANDMARKS"]


def test_orientation() -> None:
    assert check_orientation(HFS, 0.9, (HFS, FFS)) == []
    (c,) = check_orientation(FFS, 0.9, (HFS,))
    assert c.code == CheckCode.ORIENTATION_MISMATCH and c.severity is Severity.ERROR
    assert "FFS (feet first, supine)" in c.message and "HFS" in c.message
    assert codes(check_orientation(FFS, 0.2, (HFS,))) == ["ORIENTATION_UNCERTAIN"]
    assert codes(check_orientation(None, 0.0, (HFS,))) == ["ORIENTATION_UNCERTAIN"]
    assert codes(check_orientation(HFS, 0.2, (HFS,))) == ["ORIENTATION_UNCERTAIN"]


def test_head_direction_from_the_body_shape() -> None:
    assert check_head_direction(0.9, HFS) == []
    assert check_head_direction(float("nan"), HFS) == []
    (warn,) = check_head_direction(0.2, HFS)
    assert warn.code == CheckCode.ORIENTATION_UNCERTAIN and warn.severity is Severity.WARNING
    (err,) = check_head_direction(0.05, HFS)
    assert err.severity is Severity.ERROR and "feet first" in err.message and "HFS" in err.message
    (ff,) = check_head_direction(0.05, FFS)
    assert "head first" in ff.message and ff.details["head_direction_p"] == 0.05


def test_arms() -> None:
    assert check_arms(ArmState.RAISED, 0.9, (ArmState.RAISED,), "chest") == []
    assert check_arms(ArmState.SIDES, 0.9, (), "any") == []
    (c,) = check_arms(ArmState.SIDES, 0.9, (ArmState.RAISED,), "chest")
    assert c.code == CheckCode.ARMS_IN_FIELD and c.severity is Severity.ERROR
    assert "raise both arms" in c.message
    assert codes(check_arms(ArmState.CHEST, 0.1, (ArmState.RAISED,), "chest")) == ["ARMS_UNCERTAIN"]
    assert codes(check_arms(None, 0.0, (ArmState.RAISED,), "chest")) == ["ARMS_UNCERTAIN"]


def test_landmarks() -> None:
    need = ("lung_apex", "costophrenic")
    ok = {"lung_apex": 10.0, "costophrenic": 12.0}
    conf = dict.fromkeys(ok, 0.9)
    assert check_landmarks(need, ok, conf) == []
    (c,) = check_landmarks(need, {"lung_apex": 10.0}, conf, ["hips not seen"])
    assert c.severity is Severity.ERROR and "costophrenic" in c.message and "hips not seen" in c.message
    (c,) = check_landmarks(need, ok | {"costophrenic": 60.0}, conf)
    assert c.severity is Severity.ERROR
    (c,) = check_landmarks(need, ok | {"costophrenic": 30.0}, conf)
    assert c.severity is Severity.WARNING
    (c,) = check_landmarks(need, ok, conf | {"lung_apex": 0.2})
    assert c.severity is Severity.WARNING


def test_visible_range() -> None:
    assert check_visible_range(-2000.0, -500.0, -1200.0, -900.0) == []
    (c,) = check_visible_range(-1100.0, -500.0, -1200.0, -900.0)
    assert c.code == CheckCode.RANGE_NOT_VISIBLE and c.details["visible_fraction"] == pytest.approx(
        2 / 3, abs=1e-3
    )


def test_a_range_near_where_the_body_leaves_the_view_is_uncertain() -> None:
    # the range -1400..-1200 mm; the body leaves the image at -1700 (300 mm beyond) or -2000 (600 mm)
    (c,) = check_view_context([-1700.0], -1400.0, -1200.0)
    assert c.code == CheckCode.LANDMARKS_UNCERTAIN and c.severity is Severity.WARNING
    assert c.details == {"view_cut_y_mm": -1700.0, "distance_mm": 300.0}
    assert check_view_context([-2000.0], -1400.0, -1200.0) == []
    assert check_view_context([], -1400.0, -1200.0) == []
    assert check_view_context([float("nan")], -1400.0, -1200.0) == []
    # inside the range: nothing beyond it is seen either
    (c,) = check_view_context([-2000.0, -1300.0], -1400.0, -1200.0)
    assert c.details["distance_mm"] == 0.0
    assert (
        check_view_context([-1700.0], -1400.0, -1200.0, settings=CheckSettings(min_view_context_mm=250.0))
        == []
    )


@pytest.mark.parametrize("sign", [1, -1])
def test_range_coverage(sign: int) -> None:
    anat = (-1200.0, -900.0)
    kw = {"coverage_tolerance_mm": 10.0, "overscan_tolerance_mm": 20.0, "protocol_name": "chest"}
    assert check_range_coverage(anat, anat, sign, **kw) == []
    (c,) = check_range_coverage((-1200.0, -940.0), anat, sign, **kw)  # 40 mm short at high y
    assert c.code == CheckCode.RANGE_UNDERCOVERAGE and c.severity is Severity.ERROR
    assert ("head end" if sign > 0 else "foot end") in c.message
    (c,) = check_range_coverage((-1260.0, -900.0), anat, sign, **kw)  # 60 mm long at low y
    assert c.code == CheckCode.RANGE_OVERSCAN and c.severity is Severity.WARNING
    assert ("foot end" if sign > 0 else "head end") in c.message


def _slices(x_half: float, height: float, centre_x: float = 0.0, table_z: float = -150.0, n: int = 30):
    y = np.linspace(-1300.0, -1010.0, n)
    return (y, np.full(n, table_z), np.full(n, table_z + height), np.full(n, centre_x - x_half),
            np.full(n, centre_x + x_half))  # fmt: skip


def test_fov_fits_and_truncates() -> None:
    # 400 mm wide, 240 high, centred after the move: lateral extremes at (+-200, -150 + 96 + 54) -> r 200
    y, tz, top, x0, x1 = _slices(200.0, 240.0)
    assert check_fov(y, tz, top, x0, x1, -1300.0, -1000.0, 54.0) == []
    # 90 mm off-centre: the far side is at x = 290 > 250
    y, tz, top, x0, x1 = _slices(200.0, 240.0, centre_x=90.0)
    (c,) = check_fov(y, tz, top, x0, x1, -1300.0, -1000.0, 54.0, PatientPosition.HFS)
    assert c.code == CheckCode.FOV_TRUNCATION and "patient's right" in c.message
    # wider than the FOV
    y, tz, top, x0, x1 = _slices(270.0, 240.0)
    (c,) = check_fov(y, tz, top, x0, x1, -1300.0, -1000.0, 54.0)
    assert "extended field-of-view" in c.message and c.details["max_width_mm"] == pytest.approx(540.0)
    # outside the range: nothing
    assert check_fov(y, tz, top, x0, x1, 0.0, 100.0, 54.0) == []


def test_bore_collision_at_the_planned_height() -> None:
    y, tz, top, x0, x1 = _slices(200.0, 300.0)
    # table moved up 300: top at z = 450 > 350
    (c,) = check_bore(y, tz, top, x0, x1, -1400.0, 300.0)
    assert c.code == CheckCode.BORE_COLLISION and c.severity is Severity.ERROR
    assert c.details["clearance_mm"] == pytest.approx(-100.0)
    # moved up 30: lateral extremes at (+-200, -120 + 0.4 * 300 = 0), r = 200: fits a 70 cm bore
    assert check_bore(y, tz, top, x0, x1, -1400.0, 30.0) == []
    tight = CheckSettings(bore_diameter_mm=420.0, fov_diameter_mm=400.0, bore_clearance_mm=30.0)
    (c,) = check_bore(y, tz, top, x0, x1, -1400.0, 30.0, settings=tight)
    assert c.severity is Severity.WARNING and c.details["clearance_mm"] == pytest.approx(10.0)
    # slices that never enter the bore are ignored
    assert check_bore(y, tz, top, x0, x1, 0.0, 300.0) == []


def test_table_limits() -> None:
    assert check_table_vertical(40.0, 40.0, 0.0, (-450.0, -60.0)) == []
    (c,) = check_table_vertical(40.0, 10.0, -30.0, (-450.0, -60.0))
    assert c.code == CheckCode.TABLE_LIMIT and c.severity is Severity.WARNING
    assert "30 mm below" in c.message and "highest" in c.message
    assert check_table_travel((900.0, 1200.0), (-200.0, 2500.0)) == []
    (c,) = check_table_travel((2400.0, 2700.0), (-200.0, 2500.0))
    assert c.severity is Severity.ERROR and "2700" in c.message


def test_lateral_and_directions() -> None:
    assert check_lateral(10.0, HFS) == []
    (c,) = check_lateral(35.0, HFS)
    # HFS: the patient's left is +x, so a body at +35 moves toward the patient's right (-x)
    assert "toward the patient's right" in c.message and "left as seen from the foot" in c.message
    assert "patient's left" in describe_lateral(-20.0, FFS)  # FFS: the patient's left is -x
    assert "patient's back" in describe_lateral(20.0, PatientPosition.HFDR)  # HFDR: posterior is +x


def test_moved() -> None:
    assert check_moved({}) == []
    assert check_moved({"sideways": 4.0, "along_the_table": 3.0}) == []
    (c,) = check_moved({"sideways": 25.0, "along_the_table": 15.0})
    assert c.code == CheckCode.PATIENT_MOVED and c.severity is Severity.ERROR and "25 mm" in c.message
    assert codes(check_moved({}, moving=True)) == ["PATIENT_MOVING"]


def test_settings_validation_and_worst() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        CheckSettings(bore_diameter_mm=400.0, fov_diameter_mm=500.0)
    with pytest.raises(ValueError, match=">= 0"):
        CheckSettings(lateral_tolerance_mm=-1.0)
    assert worst_severity([]) is None
    found = check_lateral(35.0, HFS) + check_orientation(FFS, 0.9, (HFS,))
    assert worst_severity(found) is Severity.ERROR
