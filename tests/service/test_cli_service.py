"""The command line over the service: the demo story, the reference client and the audit listing."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from positioning.cli import main
from positioning.service.audit import AuditStore


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_the_demo_story_ends_with_the_patient_moved_event(tmp_path):
    code, out, err = run(
        "demo", "--out", tmp_path, "--frames", "3", "--move-at", "12", "--landmarks", "depth"
    )
    assert code == 0, out + err
    assert "tablet: plan confirmed" in out and "console: received the confirmed plan" in out
    assert "event: PATIENT_MOVED" in out and "server: stopped" in out
    assert (tmp_path / "plan-overlay.png").stat().st_size > 10_000
    code, listing, _ = run("sessions", "--audit", tmp_path / "audit.sqlite3", "list")
    assert code == 0 and "1 confirmed" in listing and "ended" in listing


def test_the_reference_client(make_server, tmp_path):
    address = make_server().address
    code, out, _ = run("client", "--address", address, "protocols")
    assert code == 0 and "chest" in out
    code, out, _ = run("client", "--address", address, "--json", "start", "--protocol", "chest")
    assert code == 0
    import json

    sid = json.loads(out)["session_id"]
    code, out, _ = run("client", "--address", address, "watch", sid, "--count", "2")
    assert code == 0 and out.count("frame ") == 2
    code, out, _ = run("client", "--address", address, "table", sid, "1234")
    assert code == 0 and "1234" in out
    code, out, _ = run("client", "--address", address, "overlay", sid, "--out", tmp_path / "o.png")
    assert code == 0 and (tmp_path / "o.png").is_file()
    code, out, err = run("client", "--address", address, "start", "--protocol", "nope")
    assert code == 2 and "INVALID_ARGUMENT" in err and "[field protocol]" in err
    code, out, _ = run("client", "--address", address, "end", sid)
    assert code == 0 and "active" not in out.replace("active: false", "")


def test_sessions_without_an_audit_says_so(tmp_path):
    code, _, err = run("sessions", "--audit", tmp_path / "none.sqlite3", "list")
    assert code == 2 and "no audit database" in err
    with AuditStore(tmp_path / "empty.sqlite3"):
        pass
    code, out, _ = run("sessions", "--audit", tmp_path / "empty.sqlite3", "export", "--format", "csv")
    assert code == 0 and out.startswith("session_id,")
