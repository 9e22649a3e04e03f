"""Scan protocols as data: YAML files, shipped defaults in the repository's ``protocols/`` folder plus site
files given by path.

A protocol names the anatomy a scan must cover, as two landmark bounds with margins, and what the set-up
must look like. Example (``protocols/chest.yaml``)::

    name: chest
    description: "Chest: from the lung apex to 3-4 cm below the costophrenic angle, arms raised."
    body_region: chest
    superior: {landmark: lung_apex, margin_mm: 10}      # the range's superior end: 10 mm above the apex
    inferior: {landmark: costophrenic, margin_mm: 35}   # its inferior end: 35 mm below the recess
    expected_positions: [HFS, FFS]                      # the first is the default
    arms: [raised]                                      # allowed arm states (empty list: any)
    scan_direction: craniocaudal                        # or caudocranial
    isocenter_region: scan_range                        # or {superior: {...}, inferior: {...}}
    generic_length_mm: 400                              # the fixed-length range used without planning
    coverage_tolerance_mm: 10                           # a range may miss this much anatomy
    overscan_tolerance_mm: 20                           # ... and extend this far beyond the margins

Margins are measured outward from the landmark (superior for the superior bound, inferior for the
inferior bound); a negative margin ends the range inside the landmark. A site file may instead
``extends: chest`` and give only the keys it changes (``name`` then defaults to the file's stem).

Search order of :func:`load_protocol` for a name: the folders in ``search_dirs``, the folders in
``$POSITIONING_PROTOCOL_PATH`` (``os.pathsep``-separated), then the shipped defaults. A path (anything
ending in ``.yaml``/``.yml``) is loaded as it is.

Convention: margins and lengths in mm along the patient's body axis; landmark names from
:data:`positioning.planning.anatomy.PLANNING_LANDMARKS`; positions are DICOM codes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from positioning import resources
from positioning.conventions import ArmState, PatientPosition
from positioning.errors import ProtocolError
from positioning.planning.anatomy import LANDMARK_ORDER, PLANNING_LANDMARKS

__all__ = [
    "ScanDirection",
    "RangeBound",
    "Protocol",
    "protocol_dir",
    "protocol_search_path",
    "list_protocols",
    "load_protocol",
    "protocol_from_dict",
]

PROTOCOL_PATH_ENV = "POSITIONING_PROTOCOL_PATH"
#: Margins outside this interval are taken for a typo.
MARGIN_RANGE_MM = (-150.0, 300.0)


class ScanDirection(enum.StrEnum):
    """Which end of the range is scanned first."""

    CRANIOCAUDAL = "craniocaudal"  #: from the superior end toward the feet
    CAUDOCRANIAL = "caudocranial"  #: from the inferior end toward the head


@dataclasses.dataclass(frozen=True, kw_only=True)
class RangeBound:
    """One end of a range: a landmark and a margin beyond it.

    Attributes:
        landmark: a name from :data:`~positioning.planning.anatomy.PLANNING_LANDMARKS`.
        margin_mm: distance beyond the landmark, outward from the range (mm).
    """

    landmark: str
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.landmark not in LANDMARK_ORDER:
            raise ProtocolError(
                f"unknown landmark {self.landmark!r}; known landmarks: {', '.join(PLANNING_LANDMARKS)}"
            )
        lo, hi = MARGIN_RANGE_MM
        if not (math.isfinite(self.margin_mm) and lo <= self.margin_mm <= hi):
            raise ProtocolError(f"margin_mm must be in [{lo:.0f}, {hi:.0f}] mm, got {self.margin_mm}")

    def to_dict(self) -> dict[str, Any]:
        return {"landmark": self.landmark, "margin_mm": self.margin_mm}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Protocol:
    """A scan protocol (see the module docstring for the YAML form).

    Attributes:
        name: protocol name (the file's stem for shipped protocols).
        description: one line for people.
        body_region: free-text region name (``head``, ``chest``, ``trunk``, ``lower_extremity``, ...).
        superior, inferior: the range's two ends.
        expected_positions: accepted patient positions (the first is the default).
        arms: accepted arm states; empty means any.
        scan_direction: which end is scanned first.
        isocenter_region: ``(superior, inferior)`` bounds of the region whose centre is brought to the
            isocenter, or None for the scan range itself.
        generic_length_mm: length of the protocol's fixed, unplanned range (the overscan comparison).
        coverage_tolerance_mm: a range may stop this much short of a bound before it counts as not
            covering the anatomy.
        overscan_tolerance_mm: a range may extend this much beyond a bound before it counts as overscan.
        source: the file it was read from (None when built in code).
    """

    name: str
    description: str = ""
    body_region: str = ""
    superior: RangeBound
    inferior: RangeBound
    expected_positions: tuple[PatientPosition, ...]
    arms: tuple[ArmState, ...] = ()
    scan_direction: ScanDirection = ScanDirection.CRANIOCAUDAL
    isocenter_region: tuple[RangeBound, RangeBound] | None = None
    generic_length_mm: float
    coverage_tolerance_mm: float = 10.0
    overscan_tolerance_mm: float = 20.0
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ProtocolError(f"a protocol needs a non-empty name, got {self.name!r}")
        for lo, hi, what in (
            (self.superior, self.inferior, "scan range"),
            *([(*self.isocenter_region, "isocenter region")] if self.isocenter_region else []),
        ):
            if LANDMARK_ORDER[lo.landmark] >= LANDMARK_ORDER[hi.landmark]:
                raise ProtocolError(
                    f"protocol {self.name!r}: the {what}'s superior landmark {lo.landmark!r} must lie "
                    f"superior to its inferior landmark {hi.landmark!r}"
                )
        if not self.expected_positions:
            raise ProtocolError(f"protocol {self.name!r}: expected_positions must not be empty")
        if not (math.isfinite(self.generic_length_mm) and self.generic_length_mm > 0):
            raise ProtocolError(f"protocol {self.name!r}: generic_length_mm must be > 0")
        for tol in ("coverage_tolerance_mm", "overscan_tolerance_mm"):
            v = getattr(self, tol)
            if not (math.isfinite(v) and v >= 0):
                raise ProtocolError(f"protocol {self.name!r}: {tol} must be >= 0, got {v}")

    @property
    def landmarks(self) -> tuple[str, ...]:
        """Every landmark the protocol needs."""
        names = [self.superior.landmark, self.inferior.landmark]
        if self.isocenter_region:
            names += [b.landmark for b in self.isocenter_region]
        return tuple(dict.fromkeys(names))

    @property
    def default_position(self) -> PatientPosition:
        return self.expected_positions[0]

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping (round-trips through :func:`protocol_from_dict`)."""
        return {
            "name": self.name,
            "description": self.description,
            "body_region": self.body_region,
            "superior": self.superior.to_dict(),
            "inferior": self.inferior.to_dict(),
            "expected_positions": [str(p) for p in self.expected_positions],
            "arms": [str(a) for a in self.arms],
            "scan_direction": str(self.scan_direction),
            "isocenter_region": "scan_range"
            if self.isocenter_region is None
            else {
                "superior": self.isocenter_region[0].to_dict(),
                "inferior": self.isocenter_region[1].to_dict(),
            },
            "generic_length_mm": self.generic_length_mm,
            "coverage_tolerance_mm": self.coverage_tolerance_mm,
            "overscan_tolerance_mm": self.overscan_tolerance_mm,
        }


_KEYS = {
    "name", "description", "body_region", "superior", "inferior", "expected_positions", "arms",
    "scan_direction", "isocenter_region", "generic_length_mm", "coverage_tolerance_mm",
    "overscan_tolerance_mm",
}  # fmt: skip
_REQUIRED = ("superior", "inferior", "expected_positions", "generic_length_mm")


def _bound(value: Any, where: str) -> RangeBound:
    if not isinstance(value, Mapping) or "landmark" not in value:
        raise ProtocolError(f"{where} must be a mapping with a 'landmark' (and 'margin_mm'), got {value!r}")
    extra = set(value) - {"landmark", "margin_mm"}
    if extra:
        raise ProtocolError(f"{where} has unknown keys {sorted(extra)} (allowed: landmark, margin_mm)")
    try:
        margin = float(value.get("margin_mm", 0.0))
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"{where}.margin_mm must be a number, got {value.get('margin_mm')!r}") from e
    try:
        return RangeBound(landmark=str(value["landmark"]), margin_mm=margin)
    except ProtocolError as e:
        raise ProtocolError(f"{where}: {e}") from e


def _enum_list(value: Any, cls: type[enum.StrEnum], where: str) -> tuple[Any, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ProtocolError(f"{where} must be a list, got {value!r}")
    out = []
    for v in value:
        try:
            out.append(cls(str(v)))
        except ValueError:
            allowed = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
            raise ProtocolError(f"{where}: unknown value {v!r} (allowed: {allowed})") from None
    return tuple(out)


def _number(d: Mapping[str, Any], key: str, default: float | None, where: str) -> float:
    if key not in d:
        if default is None:
            raise ProtocolError(f"{where}: missing {key!r}")
        return default
    try:
        return float(d[key])
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"{where}: {key} must be a number, got {d[key]!r}") from e


def protocol_from_dict(data: Mapping[str, Any], *, source: Path | None = None) -> Protocol:
    """Build and validate a :class:`Protocol` from its YAML mapping.

    Raises:
        ProtocolError: unknown keys, missing keys, wrong types, unknown landmarks, positions or arm
            states, or bounds in the wrong order; the message names the protocol and the key.
    """
    where = f"protocol {data.get('name', '?')!r}" + (f" ({source})" if source else "")
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{where} must be a mapping, got {type(data).__name__}")
    unknown = set(data) - _KEYS
    if unknown:
        raise ProtocolError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
    missing = [k for k in ("name", *_REQUIRED) if k not in data]
    if missing:
        raise ProtocolError(f"{where}: missing keys {missing}")
    region = data.get("isocenter_region", "scan_range")
    if region in (None, "scan_range"):
        iso = None
    elif isinstance(region, Mapping) and set(region) == {"superior", "inferior"}:
        iso = (
            _bound(region["superior"], f"{where}: isocenter_region.superior"),
            _bound(region["inferior"], f"{where}: isocenter_region.inferior"),
        )
    else:
        raise ProtocolError(
            f"{where}: isocenter_region must be 'scan_range' or {{superior: ..., inferior: ...}}, "
            f"got {region!r}"
        )
    try:
        direction = ScanDirection(str(data.get("scan_direction", "craniocaudal")))
    except ValueError:
        raise ProtocolError(
            f"{where}: scan_direction must be craniocaudal or caudocranial, got {data['scan_direction']!r}"
        ) from None
    try:
        return Protocol(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            body_region=str(data.get("body_region", "")),
            superior=_bound(data["superior"], f"{where}: superior"),
            inferior=_bound(data["inferior"], f"{where}: inferior"),
            expected_positions=_enum_list(
                data["expected_positions"], PatientPosition, f"{where}: expected_positions"
            ),
            arms=_enum_list(data.get("arms") or [], ArmState, f"{where}: arms"),
            scan_direction=direction,
            isocenter_region=iso,
            generic_length_mm=_number(data, "generic_length_mm", None, where),
            coverage_tolerance_mm=_number(data, "coverage_tolerance_mm", 10.0, where),
            overscan_tolerance_mm=_number(data, "overscan_tolerance_mm", 20.0, where),
            source=source,
        )
    except ProtocolError as e:
        if str(e).startswith(where):
            raise
        raise ProtocolError(f"{where}: {e}") from e


def protocol_dir() -> Path:
    """The repository's ``protocols/`` folder (shipped defaults)."""
    return resources.protocols_dir()


def protocol_search_path(search_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Folders searched for protocol names, first match wins: ``search_dirs``,
    ``$POSITIONING_PROTOCOL_PATH``, then :func:`protocol_dir`."""
    env = os.environ.get(PROTOCOL_PATH_ENV, "")
    dirs = [Path(d) for d in search_dirs] + [Path(d) for d in env.split(os.pathsep) if d]
    return [*dirs, protocol_dir()]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ProtocolError(f"cannot read protocol file {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ProtocolError(f"protocol file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError(f"protocol file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _find_all(name: str, dirs: Sequence[Path]) -> list[Path]:
    out = []
    for d in dirs:
        for suffix in (".yaml", ".yml"):
            p = d / f"{name}{suffix}"
            if p.is_file():
                out.append(p)
    return out


def _find(name: str, dirs: Sequence[Path]) -> Path | None:
    found = _find_all(name, dirs)
    return found[0] if found else None


def _load_file(path: Path, dirs: Sequence[Path], seen: tuple[Path, ...] = ()) -> Protocol:
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is not None:
        chain = (*seen, path.resolve())
        bases = [p for p in _find_all(str(base_name), dirs) if p.resolve() not in chain]
        if not bases:
            raise ProtocolError(
                f"protocol file {path} extends unknown protocol {base_name!r} (or the extends chain "
                f"loops: {' -> '.join(str(p) for p in chain)})"
            )
        base = _load_file(bases[0], dirs, chain).to_dict()
        base["name"] = path.stem
        data = base | data
    data.setdefault("name", path.stem)
    return protocol_from_dict(data, source=path)


def load_protocol(name_or_path: str | Path, *, search_dirs: Iterable[str | Path] = ()) -> Protocol:
    """Load a protocol by name or by file path.

    Args:
        name_or_path: a protocol name (``chest``) or a YAML file path (site protocol or override).
        search_dirs: folders searched before ``$POSITIONING_PROTOCOL_PATH`` and the shipped defaults.

    Returns:
        The validated protocol.

    Raises:
        ProtocolError: unknown name (the message lists the known ones), unreadable or malformed file.

    Example:
        >>> load_protocol("chest").superior.landmark
        'lung_apex'
    """
    dirs = protocol_search_path(search_dirs)
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ProtocolError(f"protocol file not found: {p}")
        return _load_file(p, dirs)
    found = _find(str(name_or_path), dirs)
    if found is None:
        known = ", ".join(pr.name for pr in list_protocols(search_dirs=search_dirs))
        raise ProtocolError(f"unknown protocol {str(name_or_path)!r}; known protocols: {known}")
    return _load_file(found, dirs)


def list_protocols(*, search_dirs: Iterable[str | Path] = ()) -> list[Protocol]:
    """Every protocol on the search path (a name found in an earlier folder hides later ones), by name.

    Raises:
        ProtocolError: a protocol file on the path is malformed.
    """
    dirs = protocol_search_path(search_dirs)
    names: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            names.setdefault(p.stem, p)
    return sorted((_load_file(p, dirs) for p in names.values()), key=lambda pr: pr.name)
