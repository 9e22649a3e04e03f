"""The whole story on the embedded default (``positioning demo``): a server on the simulated room, a
tablet and a console as reference clients over a real local gRPC channel.

The tablet starts a session, watches until the plan preview is ready, fetches the plan and its overlay,
and confirms; the console receives the confirmed plan; the simulated patient then moves on the table (a
scripted room event), and the tablet receives ``PATIENT_MOVED``. The server stops at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from positioning.service.app import AppSettings, build_server
from positioning.service.client import Client
from positioning.service.server import ServerSettings
from positioning.service.session import MIN_CONFIRM_FRAMES

__all__ = ["format_plan", "run_story"]


def format_plan(plan: Any) -> str:
    """The plan message in the words a technologist acts on."""
    doc = json.loads(plan.plan_json)
    lines = [f"Protocol {plan.protocol}: {'ready' if plan.ok else 'NOT ready'}"]
    if plan.patient_position:
        lines.append(f"Patient {plan.patient_position}, arms {plan.arms}.")
    if plan.HasField("scan_range"):
        r = plan.scan_range
        where = (
            f"; table {r.first_slice_table_mm:.0f} -> {r.last_slice_table_mm:.0f} mm"
            if r.HasField("first_slice_table_mm")
            else ""
        )
        lines.append(f"Scan range y {r.start_mm:+.0f} to {r.end_mm:+.0f} mm ({r.length_mm:.0f} mm{where}).")
    if plan.HasField("table_offset"):
        t = plan.table_offset
        up = "raise" if t.vertical_mm >= 0 else "lower"
        lines.append(
            f"Table: {up} {abs(t.vertical_mm):.0f} mm, move in {t.longitudinal_mm:.0f} mm; "
            f"patient sideways {t.lateral_patient_move_mm:+.0f} mm."
        )
    if plan.HasField("centering"):
        c = plan.centering
        lines.append(
            f"Mis-centering now {c.vertical_offset_mm:+.0f} mm: surface dose "
            f"+{c.surface_dose_increase_percent:.0f} %, noise +{c.noise_increase_percent:.0f} %."
        )
    for check in plan.checks:
        lines.append(f"  [{check.severity.upper()}] {check.code}: {check.message}")
    if not doc.get("checks"):
        lines.append("  no checks raised")
    return "\n".join(lines)


def run_story(
    out_dir: str | Path = "out",
    *,
    scenario: str | None = None,
    protocol: str = "chest",
    move_at_s: float = 15.0,
    frames: int = 15,
    landmarks: str = "fused",
    timeout_s: float = 120.0,
    say: Callable[[str], None] = print,
) -> int:
    """Run the story; returns 0 when the event arrived, 1 otherwise."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    say(f"server: recording the simulated room's clips (cached after the first run), {frames} frames each")
    server = build_server(
        AppSettings(
            source=None if scenario is None else f"sim:{scenario}",
            events=(f"{move_at_s:g}:moved",),
            frames=frames,
            landmarks=landmarks,
            audit=out_dir / "audit.sqlite3",
            server=ServerSettings(port=0, http_port=0),
        )
    )
    server.start()
    say(f"server: serving the simulated room on {server.address} ({time.monotonic() - t0:.0f} s)")
    if server.http_url is not None:
        say(
            f"tablet app: {server.http_url} while the demo runs "
            "(`positioning serve` keeps it open at http://127.0.0.1:8080/)"
        )
    code = 1
    try:
        with Client(server.address) as tablet, Client(server.address) as console:
            say(f"health: {tablet.health()}")
            d = tablet.device()
            say(
                f"camera: {d.camera_model} serial {d.serial}, calibration {d.calibration_method} "
                f"{d.calibration_sha256[:12]}"
            )
            names = [p.name for p in tablet.protocols()]
            say(f"protocols: {', '.join(names)}")
            session = tablet.start_session(protocol, operator="rt.demo", table_position_mm=1200.0)
            sid = session.session_id
            say(f"tablet: session {sid[:8]} started ({protocol}, table at 1200 mm)")
            received: list[Any] = []
            console_stream = console.confirmed_plans()

            def listen() -> None:
                try:
                    received.append(next(iter(console_stream)))
                except (grpc.RpcError, StopIteration):
                    pass

            listener = threading.Thread(target=listen, daemon=True)
            listener.start()
            stream = tablet.watch(sid)
            seen = 0
            for est in stream:
                s = est.state
                say(
                    f"tablet: frame {est.frame_number} {s.status} {s.patient_position or '-'} arms "
                    f"{s.arms or '-'} ({est.latency_ms:.0f} ms after the frame)"
                )
                seen += 1
                if est.HasField("preview") and est.preview.ok and seen >= MIN_CONFIRM_FRAMES:
                    break
                if time.monotonic() - t0 > timeout_s:
                    say("tablet: no plan ready in time")
                    return 1
            stream.cancel()
            plan = tablet.plan(sid)
            say("plan:\n" + format_plan(plan))
            overlay = tablet.overlay(sid)
            path = out_dir / "plan-overlay.png"
            path.write_bytes(overlay.png)
            say(f"overlay: {path} ({overlay.width_px}x{overlay.height_px})")
            confirmed = tablet.confirm(sid, operator="rt.demo", note="demo")
            say(f"tablet: plan confirmed by {confirmed.operator}")
            listener.join(timeout=10.0)
            if received:
                say(f"console: received the confirmed plan of session {received[0].session_id[:8]}")
            console_stream.cancel()
            elapsed = (
                server.hub.opened.source.elapsed_s if hasattr(server.hub.opened.source, "elapsed_s") else 0
            )
            if elapsed >= move_at_s:
                say(
                    f"note: confirmed after the scripted move ({elapsed:.0f} s > {move_at_s:g} s): "
                    "no move follows"
                )
            say(f"room: the patient will shift 25 mm sideways at {move_at_s:g} s")
            for event in tablet.events(sid, timeout_s=timeout_s):
                say(f"event: {event.kind}: {event.message}")
                if event.kind == "PATIENT_MOVED":
                    code = 0
                    break
            tablet.end_session(sid)
            say(f"tablet: session ended; audit in {out_dir / 'audit.sqlite3'}")
    finally:
        server.stop()
        say(f"server: stopped ({time.monotonic() - t0:.0f} s in all)")
    return code
