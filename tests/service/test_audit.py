"""The audit store: what it records, its migrations, a kill -9 mid-write, and the server that fills it;
``positioning serve`` shutting down on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from positioning.service.audit import SCHEMA_VERSION, AuditError, AuditStore
from positioning.service.client import Client

WRITER = r"""
import sys, types, datetime
from positioning.service.audit import AuditStore
from positioning.service.session import SessionRequest

audit = AuditStore(sys.argv[1])
doc = {"checks": [], "x": "y" * 20000}
plan = types.SimpleNamespace(models={}, table_position_mm=1000.0, to_json=lambda: doc)
for i in range(100000):
    s = types.SimpleNamespace(id=f"s{i:06d}", request=SessionRequest(protocol="chest", operator="t"),
                              started_at=datetime.datetime.now(datetime.UTC), protocol=None)
    audit.session_started(s, source="sim", calibration_path="none.yaml")
    audit.confirmed(s, types.SimpleNamespace(plan=plan, operator="t", scan_range_mm=None, note="",
                                             confirmed_at=datetime.datetime.now(datetime.UTC)))
    print(i, flush=True)  # both rows of session i are committed
"""


def test_a_killed_writer_loses_nothing_committed(tmp_path):
    db = tmp_path / "audit.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 30 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            committed = int(line.split()[0])
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of a later write
    proc.wait()
    assert committed >= 30
    with AuditStore(db) as audit:
        assert audit.integrity_ok()
        sessions = audit.sessions()
        assert len(sessions) >= committed + 1
        assert all(s["confirmations"] == 1 for s in sessions[-(committed + 1) :])


def test_migrations_and_refusals(tmp_path):
    db = tmp_path / "a.sqlite3"
    with AuditStore(db) as audit:
        assert audit.schema_version == SCHEMA_VERSION
    with AuditStore(db) as audit:  # opening again migrates nothing
        assert audit.schema_version == SCHEMA_VERSION and audit.sessions() == []
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(AuditError, match="schema version"):
        AuditStore(db)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(AuditError, match="not a usable audit database"):
        AuditStore(junk)


def test_the_server_records_sessions_and_confirmations(make_server, tmp_path, wait_for_plan):
    audit = AuditStore(tmp_path / "audit.sqlite3")
    server = make_server(audit=audit)
    with Client(server.address) as c:
        s = c.start_session("chest", operator="rt.jones", patient_height_mm=1750.0, table_position_mm=900.0)
        wait_for_plan(c, s.session_id)
        plan = c.plan(s.session_id)
        c.confirm(
            s.session_id,
            operator="rt.jones",
            # widened at both ends: confirmation plans on a later frame, whose anatomical range may differ
            # by the frame-to-frame jitter of depth-only landmarks (seen: 11 mm)
            scan_range_mm=(plan.scan_range.start_mm - 20, plan.scan_range.end_mm + 20),
            note="edited",
        )
        c.end_session(s.session_id)
    row = audit.session(s.session_id[:8])
    assert row["operator"] == "rt.jones" and row["patient_height_mm"] == 1750.0 and row["ended_at"]
    assert len(row["calibration_sha256"]) == 64 and row["software_version"]
    (conf,) = row["confirmations"]
    assert conf["operator"] == "rt.jones" and conf["range_edited"] == 1 and conf["note"] == "edited"
    assert conf["plan"]["protocol"] == "chest" and "scene_net.pt" in conf["models"]
    assert all(len(h) == 64 for h in conf["models"].values())
    exported = json.loads(audit.export("json"))
    assert exported[0]["id"] == s.session_id
    csv_text = audit.export("csv")
    assert csv_text.splitlines()[0].startswith("session_id,") and s.session_id in csv_text


def _serve(audit, room_cache) -> subprocess.Popen:
    """``positioning serve`` as a real process on a free port (it prints its address first)."""
    env = os.environ | {"POSITIONING_CACHE": str(room_cache.parent / "serve-cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "positioning.cli", "serve", "--port", "0", "--http-port", "0", "--frames", "3",
         "--landmarks", "depth", "--audit", str(audit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def test_serve_stops_cleanly_on_sigterm(tmp_path, room_cache):
    audit = tmp_path / "audit.sqlite3"
    proc = _serve(audit, room_cache)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving positioning.v1 on 127.0.0.1:"), line + proc.stderr.read()
        address = line.split()[3]
        with Client(address) as c:
            assert c.health() == "SERVING"
            s = c.start_session("chest", operator="rt.jones")
            events = c.events(s.session_id, timeout_s=60)
            proc.send_signal(signal.SIGTERM)
            with pytest.raises(Exception) as e:
                list(events)
            assert "UNAVAILABLE" in str(e.value) or "CANCELLED" in str(e.value)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with AuditStore(audit) as a:
        (row,) = a.sessions()
        assert row["ended_at"]  # the shutdown ended the session and closed the audit


def test_a_server_killed_mid_session_keeps_every_confirmed_plan(tmp_path, room_cache, wait_for_plan):
    audit = tmp_path / "audit.sqlite3"
    proc = _serve(audit, room_cache)
    confirmed: list[str] = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving"), line + proc.stderr.read()
        with Client(line.split()[3]) as c:
            for _ in range(3):
                s = c.start_session("chest", operator="rt.jones")
                wait_for_plan(c, s.session_id)
                c.confirm(s.session_id)
                confirmed.append(s.session_id)  # the server answered: the row is committed
                c.end_session(s.session_id)
            s = c.start_session("chest", operator="rt.jones")
            wait_for_plan(c, s.session_id)
            threading.Timer(0.05, lambda: os.kill(proc.pid, signal.SIGKILL)).start()
            try:  # killed before, during or after this confirmation's write
                c.confirm(s.session_id)
            except Exception:
                pass
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with AuditStore(audit) as a:
        assert a.integrity_ok()
        rows = {r["id"]: r for r in a.sessions()}
        assert all(rows[sid]["confirmations"] == 1 for sid in confirmed)
        assert s.session_id in rows  # started before the kill, never ended
