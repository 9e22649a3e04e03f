"""A site's fixed facts, read from its room file: the table model and the gantry.

The room file (``calibration/default-room.yaml`` for the simulated room; ``positioning calibrate`` writes
one per site, beside the camera's calibration) is the one home of what perception and planning must know
about the room: the table model (:mod:`positioning.perception.table_model`), and the gantry's bore and the
y of its front face, which segmentation uses to drop the gantry's housing and planning to check the
bore's clearance::

    gantry:
      bore_diameter_mm: 700        # 700 on most diagnostic CTs, 780-850 wide bore
      front_y_mm: -400             # the housing's front face (half the gantry's depth before the scan plane)

Convention: scanner frame (IEC 61217), mm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from positioning import resources
from positioning.errors import CalibrationError
from positioning.perception.table_model import DEFAULT_TABLE_MODEL, TableModel, load_table_model

__all__ = ["RoomModel", "DEFAULT_ROOM_MODEL", "default_room_path", "load_room_model"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoomModel:
    """The table model, the bore's diameter and the gantry's front face (mm)."""

    table: TableModel = DEFAULT_TABLE_MODEL
    bore_diameter_mm: float = 700.0
    gantry_front_y_mm: float = -400.0

    def __post_init__(self) -> None:
        if not 500.0 <= self.bore_diameter_mm <= 1000.0:
            raise ValueError(f"bore_diameter_mm must be 500-1000 mm, got {self.bore_diameter_mm}")


DEFAULT_ROOM_MODEL = RoomModel()


def default_room_path() -> Path:
    return resources.data_root() / "calibration" / "default-room.yaml"


def load_room_model(path: str | Path | None) -> RoomModel:
    """The room model of a room file (None: the defaults, as ``calibration/default-room.yaml``).

    Raises:
        CalibrationError: the file is missing or malformed.
    """
    if path is None:
        return DEFAULT_ROOM_MODEL
    p = Path(path)
    table = load_table_model(p)  # raises for a missing file or a malformed table section
    try:
        g = dict((yaml.safe_load(p.read_text()) or {}).get("gantry", {}) or {})
        return RoomModel(
            table=table,
            bore_diameter_mm=float(g.get("bore_diameter_mm", DEFAULT_ROOM_MODEL.bore_diameter_mm)),
            gantry_front_y_mm=float(g.get("front_y_mm", DEFAULT_ROOM_MODEL.gantry_front_y_mm)),
        )
    except (yaml.YAMLError, TypeError, ValueError, AttributeError) as e:
        raise CalibrationError(f"room file {p} has a malformed gantry section: {e}") from e
