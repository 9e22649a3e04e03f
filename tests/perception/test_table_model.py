"""The site's table model: a table unlike it is named, not refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from positioning.errors import CalibrationError
from positioning.perception.table import TableEstimate
from positioning.perception.table_model import DEFAULT_TABLE_MODEL, load_table_model, table_notes


def table_estimate(**changes) -> TableEstimate:
    """A 460 mm CT mattress top at z -150 mm, both edges seen (fields replaced by ``changes``)."""
    t = TableEstimate(
        normal=np.array([0.0, 0.0, 1.0]), offset_mm=150.0, top_z_mm=-150.0, x_min_mm=-230.0, x_max_mm=230.0,
        y_min_mm=-2400.0, y_max_mm=-600.0, y_min_seen=True, y_max_seen=True, inliers=1000, rms_mm=8.0,
        area_mm2=8e5, pixels_vu=np.zeros((0, 2), np.int32),
    )  # fmt: skip
    if "top_z_mm" in changes:
        changes["offset_mm"] = -changes["top_z_mm"]
    return dataclasses.replace(t, **changes)


def test_a_ct_table_has_no_notes_and_a_bed_is_unusual():
    assert table_notes(table_estimate()) == []
    bed = table_estimate(x_min_mm=-600.0, x_max_mm=600.0)
    notes = table_notes(bed)
    assert [n.code for n in notes] == ["TABLE_UNUSUAL"] and "1200 mm wide" in notes[0].message
    low = table_estimate(top_z_mm=-800.0)
    assert [n.code for n in table_notes(low)] == ["TABLE_UNUSUAL"]
    # a narrow width with a hidden edge is a lower bound: not called too narrow
    hidden = table_estimate(x_min_mm=-100.0, x_max_mm=200.0, x_min_seen=False)
    assert table_notes(hidden) == []
    assert [n.code for n in table_notes(dataclasses.replace(hidden, x_min_seen=True))] == ["TABLE_UNUSUAL"]


def test_room_file(tmp_path):
    room = tmp_path / "room.yaml"
    room.write_text("table:\n  name: bed\n  width_mm: [800, 1500]\n")
    model = load_table_model(room)
    assert model.name == "bed" and model.width_mm == (800.0, 1500.0)
    assert model.top_z_mm == DEFAULT_TABLE_MODEL.top_z_mm
    assert table_notes(table_estimate(x_min_mm=-600.0, x_max_mm=600.0), model) == []
    with pytest.raises(CalibrationError, match="not found"):
        load_table_model(tmp_path / "nope.yaml")
    room.write_text("table:\n  width_mm: [900, 100]\n")
    with pytest.raises(CalibrationError, match="malformed"):
        load_table_model(room)
