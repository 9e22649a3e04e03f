"""Tests of positioning.perception.segmentation and .status: the patient segment and its status.

Simulated frames are scored against the simulator's label image (``Label.PATIENT`` = 6,
``Label.OTHER_PERSON`` = 7), on the pixels that have depth; the label image is truth for tests only.
"""

from __future__ import annotations

import numpy as np
import pytest

from positioning.errors import NoPatientError, PerceptionError
from positioning.frames import RGBDFrame
from positioning.perception.segmentation import (
    PatientSegment,
    SegmentationSettings,
    segment_frame,
    segment_patient,
    view_cut_ends_mm,
)
from positioning.perception.status import (
    EmptyTableError,
    NoDepthError,
    NoTableError,
    PerceptionStatus,
    error_for_status,
)
from positioning.perception.table import TableEstimate
from positioning.sim.room import Label


def _precision_recall(segment: PatientSegment, frame: RGBDFrame, label: np.ndarray) -> tuple[float, float]:
    valid = frame.depth_mm > 0
    truth = (label == Label.PATIENT) & valid
    found = segment.mask & valid
    hit = np.count_nonzero(found & truth)
    return hit / max(np.count_nonzero(found), 1), hit / max(np.count_nonzero(truth), 1)


# ---------------------------------------------------------------------------------------------- status


def test_status_codes_are_stable():
    assert [s.code for s in PerceptionStatus] == [
        "OK",
        "NO_DEPTH",
        "NO_TABLE",
        "EMPTY_TABLE",
        "SECOND_PERSON",
    ]
    assert all(s.message.endswith(".") and len(s.message) > 20 for s in PerceptionStatus)
    assert [s for s in PerceptionStatus if s.has_patient] == [
        PerceptionStatus.OK,
        PerceptionStatus.SECOND_PERSON,
    ]
    assert (
        PerceptionStatus.SECOND_PERSON.severity == "warning" and PerceptionStatus.NO_TABLE.severity == "error"
    )


@pytest.mark.parametrize(
    ("status", "cls", "base"),
    [
        (PerceptionStatus.NO_DEPTH, NoDepthError, PerceptionError),
        (PerceptionStatus.NO_TABLE, NoTableError, NoPatientError),
        (PerceptionStatus.EMPTY_TABLE, EmptyTableError, NoPatientError),
        (PerceptionStatus.OK, None, None),
        (PerceptionStatus.SECOND_PERSON, None, None),
    ],
)
def test_error_for_status(status, cls, base):
    err = error_for_status(status, "(detail)")
    if cls is None:
        assert err is None
        return
    assert type(err) is cls and isinstance(err, base)
    assert err.code == status.code and err.status is status
    assert str(err) == f"{status.message} (detail)"


# ------------------------------------------------------------------------------------- synthetic scene

CELL_MM = 10.0
TABLE = TableEstimate(
    normal=np.array([0.0, 0.0, 1.0]),
    offset_mm=150.0,  # top at z = -150
    top_z_mm=-150.0,
    x_min_mm=-190.0,
    x_max_mm=270.0,  # centred at x = +40
    y_min_mm=-2400.0,
    y_max_mm=-600.0,
    y_min_seen=True,
    y_max_seen=True,
    inliers=1000,
    rms_mm=10.0,  # -> height threshold 20 mm
    area_mm2=460.0 * 1800.0,
    pixels_vu=np.zeros((0, 2), np.int32),
)


def _scene(objects: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """A plan-view raster 'points image' (rows along x, columns along y, 10 mm cells): floor, the table
    top of :data:`TABLE`, then boxes ``(x0, x1, y0, y1, top_z)`` seen from straight above."""
    xs = np.arange(-1000.0, 1000.0, CELL_MM) + CELL_MM / 2
    ys = np.arange(-3000.0, -200.0, CELL_MM) + CELL_MM / 2
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    Z = np.full(X.shape, -1000.0)
    Z[(X > -190) & (X < 270) & (Y > -2400) & (Y < -600)] = -150.0
    for x0, x1, y0, y1, z in objects:
        box = (X > x0) & (X < x1) & (Y > y0) & (Y < y1)
        Z[box] = np.maximum(Z[box], z)
    return np.stack([X, Y, Z], axis=-1).astype(np.float32)


PATIENT_BOX = (-110.0, 190.0, -2200.0, -900.0, 50.0)  # 300 x 1300 mm, 200 mm above the table, x centre +40


def test_synthetic_patient_pins():
    img = _scene([PATIENT_BOX])
    seg = segment_patient(img, TABLE)
    assert seg.status is PerceptionStatus.OK and seg.has_patient
    x, y = img[..., 0], img[..., 1]
    expected = (x > -110) & (x < 190) & (y > -2200) & (y < -900)
    np.testing.assert_array_equal(seg.mask, expected)
    assert len(seg) == np.count_nonzero(expected)
    assert seg.points_mm[:, 0].mean() == pytest.approx(40.0, abs=1e-3)  # x sign pinned by the off-axis box
    assert seg.max_height_mm == pytest.approx(200.0, abs=1e-3)
    assert seg.area_mm2 == pytest.approx(300 * 1300, rel=0.02)
    assert seg.min_height_mm == pytest.approx(20.0)
    assert seg.second_person_area_mm2 == 0.0
    v, u = seg.pixels_vu.T
    assert expected[v, u].all()
    assert not seg.points_mm.flags.writeable and not seg.mask.flags.writeable
    assert seg.raise_for_status() is seg


def test_synthetic_second_person_and_clutter():
    person = (600.0, 900.0, -1600.0, -1300.0, 650.0)  # standing beside the table, 800 mm above its top
    blanket = (270.0, 330.0, -2000.0, -1500.0, -100.0)  # hanging over the edge, lower than the body
    cart = (-900.0, -700.0, -2800.0, -2600.0, -50.0)  # low clutter far from the table
    img = _scene([PATIENT_BOX, person, blanket, cart])
    seg = segment_patient(img, TABLE)
    assert seg.status is PerceptionStatus.SECOND_PERSON and seg.has_patient
    assert seg.second_person_area_mm2 == pytest.approx(300 * 300, rel=0.1)
    assert seg.points_mm[:, 0].max() < 190 and seg.points_mm[:, 0].min() > -110
    assert seg.dropped_points > 0
    assert seg.raise_for_status() is seg  # a warning, not an error


def test_synthetic_person_touching_the_patient_is_cut_off_and_flagged():
    arm = (190.0, 600.0, -1500.0, -1450.0, 60.0)  # a staff member's arm resting on the patient
    person = (600.0, 900.0, -1600.0, -1300.0, 650.0)
    seg = segment_patient(_scene([PATIENT_BOX, (180.0, 610.0, -1500.0, -1450.0, 60.0), arm, person]), TABLE)
    assert seg.status is PerceptionStatus.SECOND_PERSON
    assert seg.points_mm[:, 0].max() <= TABLE.x_max_mm + SegmentationSettings().lateral_margin_mm


def test_synthetic_empty_table_and_speckle():
    speck = (0.0, 30.0, -1500.0, -1470.0, -100.0)  # 50 mm high, 30 x 30 mm: noise, not a patient
    seg = segment_patient(_scene([speck]), TABLE)
    assert seg.status is PerceptionStatus.EMPTY_TABLE and not seg.has_patient
    assert len(seg) == 0 and not seg.mask.any() and seg.area_mm2 == 0.0
    with pytest.raises(EmptyTableError, match="The table is empty") as e:
        seg.raise_for_status()
    assert isinstance(e.value, NoPatientError) and e.value.code == "EMPTY_TABLE"


def test_stride_maps_back_to_full_resolution():
    img = _scene([PATIENT_BOX])
    full = segment_patient(img, TABLE)
    half = segment_patient(img[::2, ::2], TABLE, image_shape=img.shape[:2], stride=2)
    assert half.mask.shape == full.mask.shape and half.stride == 2
    assert np.all(half.pixels_vu % 2 == 0)
    agree = np.count_nonzero(half.mask == full.mask) / full.mask.size
    assert agree > 0.995


@pytest.mark.parametrize(
    ("points_image", "kwargs", "match"),
    [
        (np.zeros((4, 5)), {}, r"\(h, w, 3\)"),
        (np.zeros((4, 5, 2)), {}, r"\(h, w, 3\)"),
        (np.zeros((4, 5, 3)), {"stride": 0}, "stride"),
        (np.zeros((4, 5, 3)), {"stride": 2, "image_shape": (4, 5)}, "does not match"),
    ],
)
def test_invalid_inputs(points_image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        segment_patient(points_image, TABLE, **kwargs)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="min_height_range_mm"):
        SegmentationSettings(min_height_range_mm=(60.0, 20.0))
    with pytest.raises(ValueError, match="max_jump_mm"):
        SegmentationSettings(max_jump_mm=0.0)


# ------------------------------------------------------------------------------------- simulated frames


@pytest.mark.parametrize("scenario", ["hfs-arms-up", "second-person", "off-centre"])
def test_precision_recall_on_simulated_frames(sim_frame, scenario):
    f = sim_frame(scenario)
    _, seg = segment_frame(f.frame, f.calibration)
    precision, recall = _precision_recall(seg, f.frame, f.truth.label)
    assert precision > 0.95 and recall > 0.95, (precision, recall)
    other = np.count_nonzero(seg.mask & (f.truth.label == Label.OTHER_PERSON))
    assert other == 0
    assert seg.max_height_mm < 500.0 and seg.area_mm2 > 0.2e6


def test_second_person_scenario(sim_frame):
    f = sim_frame("second-person")
    _, seg = segment_frame(f.frame, f.calibration)
    assert seg.status is PerceptionStatus.SECOND_PERSON
    assert seg.second_person_area_mm2 > SegmentationSettings().person_min_area_mm2


def test_no_second_person_without_one(sim_frame):
    for scenario in ("hfs-arms-up", "off-centre", "tilted-d455"):
        f = sim_frame(scenario)
        _, seg = segment_frame(f.frame, f.calibration)
        assert seg.status is PerceptionStatus.OK, scenario


def test_empty_table_scenario(sim_frame):
    f = sim_frame("empty-table")
    table, seg = segment_frame(f.frame, f.calibration)
    assert seg.status is PerceptionStatus.EMPTY_TABLE and len(seg) == 0
    assert table.top_z_mm == pytest.approx(f.spec.room.mattress_top_z_mm, abs=4.0)
    with pytest.raises(NoPatientError):
        seg.raise_for_status()


def test_strided_segmentation_on_a_simulated_frame(sim_frame):
    f = sim_frame("hfs-arms-up")
    _, seg = segment_frame(f.frame, f.calibration, stride=2, table_stride=4)
    precision, recall = _precision_recall(seg, f.frame, f.truth.label)
    assert precision > 0.9 and recall > 0.9, (precision, recall)
    with pytest.raises(ValueError, match="multiple"):
        segment_frame(f.frame, f.calibration, stride=2, table_stride=3)


def test_no_depth(sim_frame):
    f = sim_frame("hfs-arms-up")
    blank = RGBDFrame(depth_mm=np.zeros_like(f.frame.depth_mm), intrinsics=f.frame.intrinsics)
    with pytest.raises(NoDepthError, match="almost") as e:
        segment_frame(blank, f.calibration)
    assert e.value.code == "NO_DEPTH" and isinstance(e.value, PerceptionError)


def _body(u_px: np.ndarray, y_mm: np.ndarray, rows: tuple[int, int] = (200, 261)) -> PatientSegment:
    """A body lying along the image's columns (y = column, x = row), rows ``rows``."""
    uu, vv = np.meshgrid(u_px, np.arange(*rows))
    yy, xx = np.meshgrid(y_mm, 3.0 * np.arange(*rows))
    pts = np.stack([xx.ravel(), yy.ravel().astype(float), np.full(uu.size, 100.0)], axis=1)
    mask = np.zeros((480, 848), bool)
    mask[vv.ravel(), uu.ravel()] = True
    pixels = np.stack([vv.ravel(), uu.ravel()], 1).astype(np.int32)
    return PatientSegment(
        status=PerceptionStatus.OK, points_mm=pts, pixels_vu=pixels, mask=mask, stride=1, area_mm2=1.0,
        max_height_mm=100.0, min_height_mm=10.0, second_person_area_mm2=0.0, dropped_points=0,
    )  # fmt: skip


def test_where_the_body_leaves_the_view():
    valid = np.ones((480, 848), bool)
    valid[:, :40] = False  # a stereo camera's band without depth at its left edge
    u = np.arange(42, 700)
    y = -2000.0 + 2.0 * u  # column 42 at y -1916 mm, column 699 at y -602 mm
    ends = view_cut_ends_mm(_body(u, y), valid)
    assert len(ends) == 1 and ends[0] == pytest.approx(-1916.0, abs=10.0)  # the band's edge, not the head end
    # seen whole: nothing cut
    inner = np.arange(100, 700)
    assert view_cut_ends_mm(_body(inner, -2000.0 + 2.0 * inner), valid) == ()
    # cut at both ends, the far one by the image's own edge
    both = np.arange(42, 848)
    assert len(view_cut_ends_mm(_body(both, -2000.0 + 2.0 * both), valid)) == 2
    # a side running along the image's edge is not a cut end
    assert view_cut_ends_mm(_body(inner, -2000.0 + 2.0 * inner, rows=(0, 61)), valid) == ()


def test_a_hole_without_depth_beside_the_body_is_not_the_edge_of_the_view():
    valid = np.ones((480, 848), bool)
    valid[:, :40] = False
    valid[190:270, 300:320] = False  # dark, without depth, inside the image, just beyond the body's end
    u = np.arange(321, 700)
    assert view_cut_ends_mm(_body(u, -2000.0 + 2.0 * u), valid) == ()
    valid[190:270, 40:320] = False  # the same hole joined to the left band: now the view ends there
    assert len(view_cut_ends_mm(_body(u, -2000.0 + 2.0 * u), valid)) == 1
