"""Accuracy floors: the figures a suite must keep (``sim/suites/NAME.floors.yaml``), checked in CI.

A floors file names headline figures (:func:`positioning.evaluation.summary.headline`) with a bound each,
``max`` for errors and counts of failures, ``min`` for accuracies and shares::

    landmarks: fused            # the backends the floors were measured with
    floors:
      iso_z_median_mm: {max: 6.0}
      position_accuracy: {min: 0.9}

``positioning evaluate quick --check-floors`` fails (exit 1) when a figure is worse than its bound, or
not measured at all. Floors are raised as the project improves and never lowered silently:
:func:`tightened` (``--update-floors``) only ever moves a bound toward the measured figure, keeping a
margin for run-to-run noise; loosening one is an edit of the file, reviewed with its reason.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from positioning.errors import ScenarioError

__all__ = ["Floor", "FloorResult", "load_floors", "check_floors", "tightened", "write_floors", "floors_path"]

#: Margins kept when floors are tightened: errors may grow by 25 % + 1 mm (counts by 1), shares fall 5 points.
ERROR_MARGIN = (1.25, 1.0)
SHARE_MARGIN = 0.05


@dataclasses.dataclass(frozen=True)
class Floor:
    """One bound: ``figure`` must be ``<= value`` (``kind == "max"``) or ``>= value`` (``"min"``)."""

    figure: str
    kind: str
    value: float


@dataclasses.dataclass(frozen=True)
class FloorResult:
    floor: Floor
    measured: float

    @property
    def passed(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        if self.floor.kind == "max":
            return self.measured <= self.floor.value
        return self.measured >= self.floor.value

    def line(self) -> str:
        op = "<=" if self.floor.kind == "max" else ">="
        got = "not measured" if not math.isfinite(self.measured) else f"{self.measured:g}"
        verdict = "ok  " if self.passed else "FAIL"
        return f"{verdict} {self.floor.figure}: {got} (floor {op} {self.floor.value:g})"


def floors_path(suite_path: Path) -> Path:
    """``sim/suites/NAME.floors.yaml`` beside ``NAME.yaml``."""
    return suite_path.with_name(f"{suite_path.stem}.floors.yaml")


def load_floors(path: Path) -> tuple[list[Floor], dict[str, Any]]:
    """The floors of a file, and the file's other settings (``landmarks``).

    Raises:
        ScenarioError: missing or malformed file.
    """
    if not path.is_file():
        raise ScenarioError(f"no floors file {path}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        floors = []
        for figure, bound in (doc.get("floors") or {}).items():
            if not isinstance(bound, dict) or len(bound) != 1 or next(iter(bound)) not in ("min", "max"):
                raise ValueError(f"{figure}: a bound is {{max: V}} or {{min: V}}, got {bound!r}")
            kind, value = next(iter(bound.items()))
            floors.append(Floor(str(figure), str(kind), float(value)))
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as e:
        raise ScenarioError(f"floors file {path} is malformed: {e}") from e
    if not floors:
        raise ScenarioError(f"floors file {path} names no floors")
    return floors, {k: v for k, v in doc.items() if k != "floors"}


def check_floors(floors: list[Floor], headline: Mapping[str, Any]) -> list[FloorResult]:
    """Each floor against the measured headline (a figure the headline lacks counts as not measured)."""
    out = []
    for f in floors:
        v = headline.get(f.figure)
        out.append(FloorResult(f, math.nan if v is None else float(v)))
    return out


def tightened(floor: Floor, measured: float) -> Floor:
    """The floor moved toward ``measured`` with a margin, never loosened (NaN leaves it as it is)."""
    if not math.isfinite(measured):
        return floor
    if floor.kind == "max":
        scale, add = ERROR_MARGIN
        proposal = measured * scale + add
        return dataclasses.replace(floor, value=round(min(floor.value, proposal), 1))
    proposal = measured - SHARE_MARGIN if measured <= 1.0 else math.floor(measured)
    return dataclasses.replace(floor, value=round(max(floor.value, proposal), 3))


def write_floors(path: Path, floors: list[Floor], settings: Mapping[str, Any], header: str) -> None:
    """Write a floors file (``header``: comment lines kept at its top)."""
    body = {**settings, "floors": {f.figure: {f.kind: f.value} for f in floors}}
    path.write_text(header.rstrip() + "\n" + yaml.safe_dump(body, sort_keys=False))
