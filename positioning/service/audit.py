"""The audit store: every session and every confirmed plan, with what it was made from (SQLite).

SQLite in WAL mode with ``synchronous=FULL``: a write is durable once its transaction commits, and a
process killed in the middle of one (``kill -9``) leaves the database readable with every committed row
(WAL recovery on the next open). The schema is versioned (``PRAGMA user_version``) and migrated forward
on open; a database from a newer version is refused rather than guessed at.

What a confirmation records: the session's protocol, expected position, patient height and weight, the
table position, the calibration's file and SHA-256, the model files' SHA-256, the software version, who
confirmed and when, the range if the technologist set it, their note, and the plan as JSON.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from positioning import resources
from positioning.errors import PositioningError

__all__ = ["SCHEMA_VERSION", "AuditError", "AuditStore", "default_audit_path", "file_sha256", "model_hashes"]

SCHEMA_VERSION = 1
_MIGRATIONS: Sequence[str] = (
    # 0 -> 1
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        protocol TEXT,
        expected_position TEXT,
        patient_height_mm REAL,
        patient_weight_kg REAL,
        table_position_mm REAL,
        operator TEXT NOT NULL,
        source TEXT NOT NULL,
        calibration_path TEXT NOT NULL,
        calibration_sha256 TEXT NOT NULL,
        software_version TEXT NOT NULL
    );
    CREATE TABLE confirmations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id),
        confirmed_at TEXT NOT NULL,
        operator TEXT NOT NULL,
        range_edited INTEGER NOT NULL,
        scan_start_mm REAL,
        scan_end_mm REAL,
        note TEXT NOT NULL,
        table_position_mm REAL,
        models_json TEXT NOT NULL,
        plan_json TEXT NOT NULL
    );
    CREATE INDEX confirmations_session ON confirmations(session_id);
    """,
)


class AuditError(PositioningError):
    """The audit database cannot be used."""

    code = "AUDIT_ERROR"


def default_audit_path() -> Path:
    """``~/.local/share/positioning/audit.sqlite3`` (``--audit`` chooses another). Not under the cache:
    the cache holds what can be made again, the audit does not."""
    return Path.home() / ".local" / "share" / "positioning" / "audit.sqlite3"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes ("" when it does not exist)."""
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


_HASHES: dict[tuple[str, int, int], str] = {}


def model_hashes(directory: Path | None = None) -> dict[str, str]:
    """SHA-256 of every model file (``models/*.pt``, ``*.json``, ``*.task``), by file name; each file is
    read once per size and modification time."""
    directory = directory or resources.models_dir()
    out = {}
    for path in sorted(directory.glob("*")):
        if path.suffix not in (".pt", ".json", ".task") or not path.is_file():
            continue
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in _HASHES:
            _HASHES[key] = file_sha256(path)
        out[path.name] = _HASHES[key]
    return out


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("positioning")
    except PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class AuditStore:
    """An audit database (created and migrated on open).

    Args:
        path: the SQLite file.

    Raises:
        AuditError: not a database, or one from a newer version of this software.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise AuditError(f"{self.path}: not a usable audit database ({e})") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise AuditError(
                f"{self.path} has schema version {version}; this software knows up to {SCHEMA_VERSION}"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _MIGRATIONS[target - 1].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {target}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.execute(sql, params)
                self._db.execute("COMMIT")
                return int(cur.lastrowid or 0)
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- writing ---------------------------------------------------------------------------------------
    def session_started(self, session: Any, *, source: str, calibration_path: str | Path) -> None:
        r = session.request
        self._write(
            "INSERT INTO sessions (id, started_at, protocol, expected_position, patient_height_mm,"
            " patient_weight_kg, table_position_mm, operator, source, calibration_path, calibration_sha256,"
            " software_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session.id,
                session.started_at.isoformat(timespec="milliseconds"),
                None if session.protocol is None else session.protocol.name,
                r.expected_position,
                r.patient_height_mm,
                r.patient_weight_kg,
                r.table_position_mm,
                r.operator,
                source,
                str(calibration_path),
                file_sha256(calibration_path),
                _software_version(),
            ),
        )

    def session_ended(self, session_id: str) -> None:
        self._write("UPDATE sessions SET ended_at = ? WHERE id = ?", (_now(), session_id))

    def confirmed(self, session: Any, decision: Any) -> int:
        """Record a confirmation; returns its row id."""
        plan = decision.plan
        models = model_hashes()
        rng = decision.scan_range_mm
        return self._write(
            "INSERT INTO confirmations (session_id, confirmed_at, operator, range_edited, scan_start_mm,"
            " scan_end_mm, note, table_position_mm, models_json, plan_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session.id,
                decision.confirmed_at.isoformat(timespec="milliseconds"),
                decision.operator,
                int(rng is not None),
                None if rng is None else rng[0],
                None if rng is None else rng[1],
                decision.note,
                plan.table_position_mm,
                json.dumps(models, sort_keys=True),
                json.dumps(plan.to_json(), sort_keys=True),
            ),
        )

    # -- reading ---------------------------------------------------------------------------------------
    def sessions(self) -> list[dict[str, Any]]:
        """Every session, newest first, with its number of confirmations."""
        rows = self._db.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM confirmations c WHERE c.session_id = s.id) AS confirmations"
            " FROM sessions s ORDER BY s.started_at DESC"
        ).fetchall()
        return [dict(r) for r in rows]

    def session(self, session_id: str) -> dict[str, Any]:
        """One session with its confirmations (plans decoded).

        Raises:
            AuditError: no such session (a unique prefix of the id is enough).
        """
        rows = self._db.execute(
            "SELECT * FROM sessions WHERE id LIKE ? ORDER BY started_at", (session_id + "%",)
        ).fetchall()
        if len(rows) != 1:
            raise AuditError(
                f"no session {session_id!r} in {self.path}"
                if not rows
                else f"{len(rows)} sessions start with {session_id!r}: give more of the id"
            )
        out = dict(rows[0])
        out["confirmations"] = [
            dict(c) | {"models": json.loads(c["models_json"]), "plan": json.loads(c["plan_json"])}
            for c in self._db.execute(
                "SELECT * FROM confirmations WHERE session_id = ? ORDER BY id", (out["id"],)
            ).fetchall()
        ]
        for c in out["confirmations"]:
            del c["models_json"], c["plan_json"]
        return out

    def export(self, fmt: str = "json") -> str:
        """Every session and confirmation as JSON (nested) or CSV (one row per confirmation; a session
        without one has a row with empty confirmation fields)."""
        sessions = [self.session(s["id"]) for s in self.sessions()]
        if fmt == "json":
            return json.dumps(sessions, indent=2)
        if fmt != "csv":
            raise ValueError(f"format must be json or csv, got {fmt!r}")
        buf = io.StringIO()
        fields = [
            "session_id", "started_at", "ended_at", "protocol", "expected_position", "operator", "source",
            "calibration_sha256", "software_version", "confirmed_at", "confirmed_by", "range_edited",
            "vertical_mm", "longitudinal_mm", "scan_start_mm", "scan_end_mm", "checks",
        ]  # fmt: skip
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        for s in sessions:
            base = {k: s.get(k) for k in fields if k in s} | {"session_id": s["id"]}
            if not s["confirmations"]:
                writer.writerow(base)
            for c in s["confirmations"]:
                plan: Mapping[str, Any] = c["plan"]
                offset = plan.get("table_offset") or {}
                rng = plan.get("scan_range") or {}
                writer.writerow(
                    base
                    | {
                        "confirmed_at": c["confirmed_at"],
                        "confirmed_by": c["operator"],
                        "range_edited": c["range_edited"],
                        "vertical_mm": offset.get("vertical_mm"),
                        "longitudinal_mm": offset.get("longitudinal_mm"),
                        "scan_start_mm": rng.get("start_mm"),
                        "scan_end_mm": rng.get("end_mm"),
                        "checks": " ".join(ch["code"] for ch in plan.get("checks", [])),
                    }
                )
        return buf.getvalue()

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
