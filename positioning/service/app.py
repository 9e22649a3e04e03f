"""Wiring: a frame source, its camera hub, the audit store and the gRPC server, as ``positioning serve``
builds them (and as the tests and the demo do)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from positioning.camera.source import open_source
from positioning.service.audit import AuditStore, default_audit_path
from positioning.service.hub import CameraHub
from positioning.service.server import Server, ServerSettings

__all__ = ["AppSettings", "build_server"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppSettings:
    """What ``positioning serve`` is given.

    Attributes:
        source: ``--source`` (default: the simulated room).
        calibration: ``--calibration`` (default: the recording's or room's own).
        events: the simulated room's script (``SECONDS:KIND``).
        frames: frames per clip of the simulated room.
        real_time: play a recording at its recorded rate (the simulated room always does).
        loop: loop a recording (the simulated room always does).
        landmarks: landmark sources.
        room: the site's room file (its table model).
        audit: the audit database (default :func:`default_audit_path`; None with ``no_audit``).
        no_audit: keep no audit (tests, demos).
        protocol_dirs: extra protocol folders.
        preview_interval_s: shortest time between plan previews.
        server: listening settings.
    """

    source: str | None = None
    calibration: Path | None = None
    events: Sequence[str] = ()
    frames: int | None = None
    real_time: bool | None = None
    loop: bool | None = None
    landmarks: str = "fused"
    room: Path | None = None
    audit: Path | None = None
    no_audit: bool = False
    protocol_dirs: tuple[Path, ...] = ()
    preview_interval_s: float = 0.1
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)


def build_server(s: AppSettings) -> Server:
    """Open the source, start nothing yet: returns a :class:`Server` to :meth:`~Server.start`.

    Raises:
        RecordingNotFoundError, CorruptRecordingError, MissingStreamError, CalibrationError, ScenarioError:
            the source cannot be read; TlsError, TokenError: unusable security files; AuditError.
    """
    from positioning.perception.pipeline import site_settings
    from positioning.planning.plan import room_plan_settings

    # a bad room file fails before the camera opens
    perceiver_settings = site_settings(s.landmarks, s.room, live=True)
    audit = None if s.no_audit else AuditStore(s.audit or default_audit_path())
    opened = open_source(
        s.source,
        calibration=s.calibration,
        real_time=s.real_time,
        loop=s.loop,
        frames=s.frames,
        events=s.events,
    )
    try:
        source_name = str(opened.spec)
        hub = CameraHub(
            opened,
            perceiver_settings=perceiver_settings,
            plan_settings=room_plan_settings(s.room),
            preview_interval_s=s.preview_interval_s,
            concurrent_preview=True,
            on_session_started=None
            if audit is None
            else lambda session: audit.session_started(
                session, source=source_name, calibration_path=opened.calibration_path
            ),
            on_confirmed=None if audit is None else audit.confirmed,
            on_session_ended=None if audit is None else lambda session: audit.session_ended(session.id),
        )
        server = Server(hub, s.server, protocol_dirs=s.protocol_dirs, audit=audit)
    except BaseException:
        opened.close()
        if audit is not None:
            audit.close()
        raise
    return server
