"""Protocols as data: the shipped files, site overrides, and a table of malformed protocols."""

from __future__ import annotations

from pathlib import Path

import pytest

from positioning.errors import ProtocolError
from positioning.perception.orientation import ArmState, PatientPosition
from positioning.planning.protocol import (
    Protocol,
    ScanDirection,
    list_protocols,
    load_protocol,
    protocol_dir,
    protocol_from_dict,
)

REQUIRED = {
    "head", "neck", "chest", "abdomen", "pelvis", "abdomen-pelvis", "chest-abdomen-pelvis", "lower-extremity",
}  # fmt: skip

VALID = {
    "name": "site-chest",
    "superior": {"landmark": "lung_apex", "margin_mm": 10},
    "inferior": {"landmark": "costophrenic", "margin_mm": 35},
    "expected_positions": ["HFS"],
    "arms": ["raised"],
    "generic_length_mm": 400,
}


def test_shipped_protocols_load_and_cover_the_required_set() -> None:
    protocols = {p.name: p for p in list_protocols()}
    assert REQUIRED <= set(protocols)
    for p in protocols.values():
        assert isinstance(p, Protocol)
        assert p.source is not None and p.source.parent == protocol_dir()
        assert p.generic_length_mm > 0


def test_chest_follows_the_references() -> None:
    p = load_protocol("chest")
    assert (p.superior.landmark, p.inferior.landmark) == ("lung_apex", "costophrenic")
    assert 30 <= p.inferior.margin_mm <= 40  # 3-4 cm below the costophrenic angle
    assert p.arms == (ArmState.RAISED,)
    assert p.expected_positions[0] is PatientPosition.HFS
    assert p.scan_direction is ScanDirection.CRANIOCAUDAL


def test_pelvis_margins_follow_the_references() -> None:
    p = load_protocol("pelvis")
    assert (p.superior.landmark, p.superior.margin_mm) == ("iliac_crest", 25)
    assert (p.inferior.landmark, p.inferior.margin_mm) == ("lesser_trochanter", 25)


def test_trunk_protocols_require_raised_arms() -> None:
    for name in ("chest", "abdomen", "abdomen-pelvis", "chest-abdomen-pelvis"):
        assert load_protocol(name).arms == (ArmState.RAISED,)


def test_round_trip_through_dict() -> None:
    p = load_protocol("lower-extremity")
    q = protocol_from_dict(p.to_dict())
    assert q.to_dict() == p.to_dict()


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match=r"unknown protocol 'thorax'.*chest"):
        load_protocol("thorax")


def test_missing_file_path() -> None:
    with pytest.raises(ProtocolError, match="not found"):
        load_protocol("/nonexistent/site.yaml")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": "red"}, "unknown keys"),
        ({"superior": None}, "must be a mapping"),
        ({"superior": {"landmark": "navel"}}, "unknown landmark 'navel'"),
        ({"superior": {"landmark": "lung_apex", "margin_mm": "ten"}}, "margin_mm must be a number"),
        ({"superior": {"landmark": "lung_apex", "margin_mm": 900}}, r"margin_mm must be in"),
        ({"superior": {"landmark": "lung_apex", "side": "left"}}, "unknown keys"),
        (
            {"superior": {"landmark": "iliac_crest"}, "inferior": {"landmark": "lung_apex"}},
            "must lie superior",
        ),
        ({"expected_positions": ["SUPINE"]}, "unknown value 'SUPINE'"),
        ({"expected_positions": []}, "must not be empty"),
        ({"arms": ["waving"]}, "unknown value 'waving'"),
        ({"scan_direction": "sideways"}, "scan_direction"),
        ({"generic_length_mm": -5}, "generic_length_mm must be > 0"),
        ({"generic_length_mm": "long"}, "must be a number"),
        ({"overscan_tolerance_mm": -1}, "overscan_tolerance_mm must be >= 0"),
        ({"isocenter_region": "legs"}, "isocenter_region"),
    ],
)
def test_malformed_protocols_fail_clearly(change: dict, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        protocol_from_dict(VALID | change)


@pytest.mark.parametrize("key", ["superior", "inferior", "expected_positions", "generic_length_mm"])
def test_missing_required_key(key: str) -> None:
    data = dict(VALID)
    del data[key]
    with pytest.raises(ProtocolError, match=f"missing keys.*{key}"):
        protocol_from_dict(data)


def test_site_file_by_path(tmp_path: Path) -> None:
    f = tmp_path / "site-chest.yaml"
    f.write_text(
        "extends: chest\ninferior: {landmark: costophrenic, margin_mm: 40}\nexpected_positions: [FFS]\n"
    )
    p = load_protocol(f)
    assert p.name == "site-chest"
    assert p.inferior.margin_mm == 40
    assert p.expected_positions == (PatientPosition.FFS,)
    assert p.superior == load_protocol("chest").superior  # inherited


def test_site_dir_overrides_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "chest.yaml").write_text("extends: chest\noverscan_tolerance_mm: 5\n")
    monkeypatch.setenv("POSITIONING_PROTOCOL_PATH", str(tmp_path))
    p = load_protocol("chest")
    assert p.overscan_tolerance_mm == 5
    assert p.source == tmp_path / "chest.yaml"
    assert load_protocol("chest", search_dirs=[]).overscan_tolerance_mm == 5


def test_isocenter_region_and_extends_cycle(tmp_path: Path) -> None:
    p = protocol_from_dict(
        VALID
        | {
            "isocenter_region": {
                "superior": {"landmark": "jugular_notch"},
                "inferior": {"landmark": "xiphoid"},
            }
        }
    )
    assert p.isocenter_region is not None and p.isocenter_region[0].landmark == "jugular_notch"
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ProtocolError, match="extends"):
        load_protocol("a", search_dirs=[tmp_path])


def test_bad_yaml(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(f)
    f.write_text("- a list\n")
    with pytest.raises(ProtocolError, match="must hold a mapping"):
        load_protocol(f)
