"""The generated stubs match the proto, and the contract keeps its conventions."""

from __future__ import annotations

import itertools
import re

from positioning.service.protos import GENERATED_DIR, generate, load_stubs, proto_digest, proto_root

#: Numbers whose name carries no unit because they have none.
UNITLESS = {"position_confidence", "arms_confidence", "confidence", "fps", "depth_fill_rate", "magnification"}


def _proto_lines() -> list[str]:
    return (proto_root() / "positioning/v1/positioning.proto").read_text().splitlines()


def test_the_stubs_are_what_protoc_makes_of_the_proto(tmp_path):
    load_stubs()  # generates them when missing or stale
    fresh = generate(tmp_path / "gen")
    for name in ("positioning_pb2.py", "positioning_pb2.pyi", "positioning_pb2_grpc.py"):
        assert (GENERATED_DIR / name).read_text() == (fresh / name).read_text(), name
    assert (GENERATED_DIR / "PROTO_SHA256").read_text().strip() == proto_digest()
    assert "from . import positioning_pb2" in (fresh / "positioning_pb2_grpc.py").read_text()


def test_every_message_call_and_field_is_documented():
    lines = _proto_lines()
    assert "package positioning.v1;" in lines
    declaration = re.compile(
        r"(message|service) \w+|\s+rpc \w+|\s+(optional |repeated )?[\w.<>, ]+\s+\w+ = \d+;"
    )
    undocumented = [
        line.strip()
        for prev, line in itertools.pairwise(lines)
        if declaration.match(line) and not prev.strip().startswith("//")
    ]
    assert undocumented == []


def test_numbers_name_their_unit():
    for line in _proto_lines():
        m = re.match(r"\s*(?:optional |repeated )?(?:double|float)\s+(\w+)\s*=", line)
        if m:
            name = m.group(1)
            assert name in UNITLESS or re.search(r"_(mm|ms|kg|percent|deg)$", name), name
