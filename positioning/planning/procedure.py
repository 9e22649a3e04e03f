"""Fluoroscopy procedures as data (``protocols/fluoro/NAME.yaml``): the target region and the C-arm.

A procedure names where its target lies in the body, from the same planning landmarks the CT protocols
use, and the C-arm it is done with::

    name: ercp
    description: "ERCP / biliary: the right upper quadrant"
    body_region: abdomen
    expected_positions: [HFP, HFS]
    target:
      superior: {landmark: xiphoid, margin_mm: 30}     # as in CT protocols: beyond the landmark, outward
      inferior: {landmark: iliac_crest, margin_mm: -20}
      left_mm: [-140, 10]               # across the body from its midline, + toward the patient's LEFT
      posterior_fraction: [0.2, 0.75]   # front to back: 0 the anterior skin, 1 the posterior skin
      margin_mm: 15                     # added on every side of the box
    c_arm:
      source_to_image_mm: 1000          # SID
      source_to_isocenter_mm: 750       # SOD: the isocenter is magnified SID / SOD at the detector
      detector: {shape: rectangle, width_mm: 300, height_mm: 380}   # or {shape: circle, diameter_mm: 310}
      table_top_z_range_mm: [-450, -30] # the table top's reachable heights, C-arm frame z
      table_longitudinal_travel_mm: [-2000, 2000]   # table (or mobile C-arm) travel along the table
      table_lateral_travel_mm: [-150, 150]

The C-arm frame (the frame every fluoroscopy figure is in, mm): origin at the C-arm's isocenter (the
point the central ray passes through in every gantry angle), axes as the scanner frame of
``DESIGN.md`` with the table along y: +x lateral (to the right of an observer at the foot of the table),
+y along the table toward its head end, +z up. The room's calibration maps the camera to this frame. The
PA beam runs along +z (the source under the table, the detector above): detector axes u = +x, v = +y.
The lateral beam runs along +x (the source on the observer's left): detector axes u = +y, v = +z.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from positioning import resources
from positioning.conventions import PatientPosition
from positioning.errors import ProtocolError
from positioning.planning.protocol import RangeBound

__all__ = [
    "Detector",
    "CArm",
    "TargetSpec",
    "Procedure",
    "procedure_dir",
    "load_procedure",
    "list_procedures",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Detector:
    """The image receptor: a flat panel (rectangle, ``width_mm`` along u, ``height_mm`` along v) or an
    image intensifier (circle, ``width_mm == height_mm`` its diameter)."""

    shape: str
    width_mm: float
    height_mm: float

    def __post_init__(self) -> None:
        if self.shape not in ("rectangle", "circle"):
            raise ProtocolError(f"detector shape must be rectangle or circle, got {self.shape!r}")
        if not (50.0 <= self.width_mm <= 600.0 and 50.0 <= self.height_mm <= 600.0):
            raise ProtocolError(f"detector size must be 50-600 mm, got {self.width_mm} x {self.height_mm}")

    @property
    def area_mm2(self) -> float:
        """The uncollimated field's area at the detector."""
        if self.shape == "circle":
            return math.pi * self.width_mm * self.width_mm / 4
        return self.width_mm * self.height_mm

    def contains(self, u_mm: float, v_mm: float) -> bool:
        """Is the detector point ``(u, v)`` (from its centre) on the detector?"""
        if self.shape == "circle":
            return math.hypot(u_mm, v_mm) <= self.width_mm / 2 + 1e-9
        return abs(u_mm) <= self.width_mm / 2 + 1e-9 and abs(v_mm) <= self.height_mm / 2 + 1e-9


@dataclasses.dataclass(frozen=True, kw_only=True)
class CArm:
    """A C-arm's geometry and its table's reach (C-arm frame, mm).

    Attributes:
        source_to_image_mm: SID, focal spot to detector.
        source_to_isocenter_mm: SOD, focal spot to the isocenter.
        detector: the receptor.
        table_top_z_range_mm: the heights the table top can take.
        table_longitudinal_travel_mm, table_lateral_travel_mm: the moves the table can make from where it is.
    """

    source_to_image_mm: float
    source_to_isocenter_mm: float
    detector: Detector
    table_top_z_range_mm: tuple[float, float]
    table_longitudinal_travel_mm: tuple[float, float] = (-2000.0, 2000.0)
    table_lateral_travel_mm: tuple[float, float] = (-150.0, 150.0)

    def __post_init__(self) -> None:
        sid, sod = self.source_to_image_mm, self.source_to_isocenter_mm
        if not (300.0 <= sod < sid <= 1500.0):
            raise ProtocolError(
                f"need 300 <= source-to-isocenter < source-to-image <= 1500 mm, got {sod}, {sid}"
            )
        for name in ("table_top_z_range_mm", "table_longitudinal_travel_mm", "table_lateral_travel_mm"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ProtocolError(f"{name} must be [low, high] with low < high, got {[lo, hi]}")

    @property
    def magnification(self) -> float:
        """Magnification at the isocenter (SID / SOD)."""
        return self.source_to_image_mm / self.source_to_isocenter_mm


@dataclasses.dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """Where the target lies in the body.

    Attributes:
        superior, inferior: its ends along the body (planning landmarks with margins, as in CT protocols).
        left_mm: ``(a, b)`` across the body from its midline, + toward the patient's left.
        posterior_fraction: ``(a, b)`` from the anterior (0) to the posterior (1) skin.
        margin_mm: added on every side of the box.
    """

    superior: RangeBound
    inferior: RangeBound
    left_mm: tuple[float, float]
    posterior_fraction: tuple[float, float]
    margin_mm: float = 15.0

    def __post_init__(self) -> None:
        a, b = self.left_mm
        if not (-300.0 <= a < b <= 300.0):
            raise ProtocolError(f"left_mm must be [a, b] with -300 <= a < b <= 300, got {[a, b]}")
        f0, f1 = self.posterior_fraction
        if not (0.0 <= f0 < f1 <= 1.0):
            raise ProtocolError(f"posterior_fraction must be [a, b] with 0 <= a < b <= 1, got {[f0, f1]}")
        if not 0.0 <= self.margin_mm <= 100.0:
            raise ProtocolError(f"margin_mm must be 0-100 mm, got {self.margin_mm}")

    @property
    def landmarks(self) -> tuple[str, ...]:
        return (self.superior.landmark, self.inferior.landmark)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Procedure:
    """A fluoroscopy procedure: its target, the positions it is done in, its C-arm."""

    name: str
    description: str = ""
    body_region: str = ""
    expected_positions: tuple[PatientPosition, ...]
    target: TargetSpec
    c_arm: CArm
    source: Path | None = None


def procedure_dir() -> Path:
    """The repository's ``protocols/fluoro/`` folder."""
    return resources.protocols_dir() / "fluoro"


def _pair(v: Any, what: str) -> tuple[float, float]:
    if not isinstance(v, list | tuple) or len(v) != 2:
        raise ProtocolError(f"{what} must be a pair [low, high], got {v!r}")
    return float(v[0]), float(v[1])


def _bound(d: Any, what: str) -> RangeBound:
    if not isinstance(d, dict) or "landmark" not in d:
        raise ProtocolError(f"{what} must be {{landmark: NAME, margin_mm: MM}}, got {d!r}")
    return RangeBound(landmark=str(d["landmark"]), margin_mm=float(d.get("margin_mm", 0.0)))


def _parse(d: dict[str, Any], source: Path | None) -> Procedure:
    t, c = d["target"], d["c_arm"]
    det = c["detector"]
    if det.get("shape") == "circle":
        detector = Detector(
            shape="circle", width_mm=float(det["diameter_mm"]), height_mm=float(det["diameter_mm"])
        )
    else:
        detector = Detector(shape=str(det.get("shape", "rectangle")), width_mm=float(det["width_mm"]),
                            height_mm=float(det["height_mm"]))  # fmt: skip
    c_arm = CArm(
        source_to_image_mm=float(c["source_to_image_mm"]),
        source_to_isocenter_mm=float(c["source_to_isocenter_mm"]),
        detector=detector,
        table_top_z_range_mm=_pair(c["table_top_z_range_mm"], "table_top_z_range_mm"),
        table_longitudinal_travel_mm=_pair(c.get("table_longitudinal_travel_mm", [-2000, 2000]), "travel"),
        table_lateral_travel_mm=_pair(c.get("table_lateral_travel_mm", [-150, 150]), "lateral travel"),
    )
    target = TargetSpec(
        superior=_bound(t["superior"], "target.superior"),
        inferior=_bound(t["inferior"], "target.inferior"),
        left_mm=_pair(t["left_mm"], "target.left_mm"),
        posterior_fraction=_pair(t["posterior_fraction"], "target.posterior_fraction"),
        margin_mm=float(t.get("margin_mm", 15.0)),
    )
    positions = d.get("expected_positions")
    if not positions:
        raise ProtocolError("expected_positions must name at least one patient position")
    try:
        expected = tuple(PatientPosition(str(p)) for p in positions)
    except ValueError as e:
        raise ProtocolError(f"expected_positions: {e}") from e
    return Procedure(
        name=str(d["name"]),
        description=str(d.get("description", "")),
        body_region=str(d.get("body_region", "")),
        expected_positions=expected,
        target=target,
        c_arm=c_arm,
        source=source,
    )


def load_procedure(name_or_path: str | Path, *, search_dirs: Iterable[str | Path] = ()) -> Procedure:
    """Load a procedure by name (``protocols/fluoro/NAME.yaml``, or a site folder's) or from a YAML file.

    Raises:
        ProtocolError: unknown procedure, or a malformed file (the message names the file and the field).
    """
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        candidates = [Path(d) / f"{name_or_path}.yaml" for d in (*search_dirs, procedure_dir())]
        found = next((q for q in candidates if q.is_file()), None)
        if found is None:
            known = ", ".join(q.name for q in list_procedures(search_dirs=search_dirs))
            raise ProtocolError(f"unknown fluoroscopy procedure {str(name_or_path)!r}; known: {known}")
        p = found
    if not p.is_file():
        raise ProtocolError(f"no procedure file {p}")
    where = f"procedure file {p}"
    try:
        d = yaml.safe_load(p.read_text())
        if not isinstance(d, dict):
            raise ProtocolError("must hold a mapping")
        return _parse(d, p)
    except ProtocolError as e:
        raise ProtocolError(f"{where}: {e}") from e
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProtocolError(f"{where} is malformed: {type(e).__name__}: {e}") from e


def list_procedures(*, search_dirs: Iterable[str | Path] = ()) -> list[Procedure]:
    """Every procedure (site folders first; a site's procedure hides a shipped one of the same name)."""
    seen: dict[str, Procedure] = {}
    for d in (*search_dirs, procedure_dir()):
        for q in sorted(Path(d).glob("*.yaml")):
            proc = load_procedure(q)
            seen.setdefault(proc.name, proc)
    return sorted(seen.values(), key=lambda p: p.name)
