"""What a site's table looks like, and the notes perception adds when the table it found does not.

The size and height of the surface a patient lies on are site data, not constants of the table finder
(which accepts anything from a narrow CT table top to a wide bed, see :mod:`positioning.perception.table`).
A room file's ``table:`` section names the site's table model; the defaults cover CT tables. A table
found outside the model still plans, with a ``TABLE_UNUSUAL`` warning that says what is unusual, so
that a wrong surface (a stretcher, a bed, a base) never passes silently.

Room file (YAML, e.g. ``calibration/default-room.yaml``)::

    table:
      name: CT table (generic)
      width_mm: [380, 620]          # the mattress top as the camera sees it
      top_z_mm: [-700, 100]         # the mattress top's height, scanner frame (isocenter at 0)

Convention: scanner frame (IEC 61217), mm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from positioning.errors import CalibrationError
from positioning.perception.status import PerceptionNote
from positioning.perception.table import TableEstimate

__all__ = ["TableModel", "DEFAULT_TABLE_MODEL", "load_table_model", "table_notes"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableModel:
    """The site's table.

    Attributes:
        name: what it is (for messages).
        width_mm: (least, most) width of the mattress top as the camera sees it.
        top_z_mm: (lowest, highest) z of the mattress top in the scanner frame.
    """

    name: str = "CT table (generic)"
    width_mm: tuple[float, float] = (380.0, 620.0)
    top_z_mm: tuple[float, float] = (-700.0, 100.0)

    def __post_init__(self) -> None:
        for f in ("width_mm", "top_z_mm"):
            lo, hi = getattr(self, f)
            if not lo < hi:
                raise ValueError(f"table model {f} must be (low, high) with low < high, got {(lo, hi)}")


DEFAULT_TABLE_MODEL = TableModel()


def load_table_model(path: str | Path) -> TableModel:
    """The ``table:`` section of a room file (defaults for what it leaves out).

    Raises:
        CalibrationError: the file is missing or malformed.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
        t = dict((doc or {}).get("table", {}) or {})
        kw = {k: tuple(float(v) for v in t[k]) for k in ("width_mm", "top_z_mm") if k in t}
        if "name" in t:
            kw["name"] = str(t["name"])  # type: ignore[assignment]
        return TableModel(**kw)  # type: ignore[arg-type]
    except FileNotFoundError as e:
        raise CalibrationError(f"room file not found: {p}") from e
    except (yaml.YAMLError, TypeError, ValueError, AttributeError) as e:
        raise CalibrationError(f"room file {p} has a malformed table section: {e}") from e


def table_notes(table: TableEstimate, model: TableModel = DEFAULT_TABLE_MODEL) -> list[PerceptionNote]:
    """``TABLE_UNUSUAL`` when the table found is wider or narrower, or higher or lower, than the site's
    table model (a width is only called too narrow when both edges were seen)."""
    out = []
    lo, hi = model.width_mm
    w = table.width_mm
    both_seen = table.x_min_seen and table.x_max_seen
    if w > hi or (both_seen and w < lo):
        out.append(
            PerceptionNote(
                code="TABLE_UNUSUAL",
                severity="warning",
                message=(
                    f"The surface the patient lies on is {w:.0f} mm wide, not like the room's {model.name} "
                    f"({lo:.0f}-{hi:.0f} mm): check that the right surface was taken for the table (a bed, a "
                    "stretcher or a wide mattress) and the room's table model."
                ),
                details={"width_mm": round(w, 1), "expected_mm": [lo, hi]},
            )
        )
    zlo, zhi = model.top_z_mm
    if not zlo <= table.top_z_mm <= zhi:
        out.append(
            PerceptionNote(
                code="TABLE_UNUSUAL",
                severity="warning",
                message=(
                    f"The table top is at z {table.top_z_mm:.0f} mm, outside the {model.name}'s range "
                    f"({zlo:.0f} to {zhi:.0f} mm): check the calibration and the room's table model."
                ),
                details={"top_z_mm": round(table.top_z_mm, 1), "expected_mm": [zlo, zhi]},
            )
        )
    return out
