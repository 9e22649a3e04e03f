"""Servers on the simulated room for the service tests: real gRPC servers on a free localhost port, real
perception, clips recorded once into a temporary cache."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from positioning.camera.source import OpenedSource, SourceSpec
from positioning.frames import Calibration
from positioning.perception.pipeline import PerceiverSettings
from positioning.perception.steady import SteadySettings
from positioning.service.client import Client
from positioning.service.hub import CameraHub
from positioning.service.server import Server, ServerSettings
from positioning.sim.room_source import RoomEvent, SimulatedRoomSource

SCENARIO = "hfs-arms-up"
FRAMES = 3


@pytest.fixture(scope="session")
def room_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rooms")


def _make(
    room_cache: Path,
    events: tuple[RoomEvent, ...] = (),
    *,
    audit=None,
    landmarks: str = "depth",
    live: bool = False,
    **settings,
) -> Server:
    room = SimulatedRoomSource(SCENARIO, frames=FRAMES, events=events, cache=room_cache, timeout_s=0.1)
    opened = OpenedSource(
        source=room,
        calibration=Calibration.load(room.calibration_path),
        calibration_path=room.calibration_path,
        spec=SourceSpec(kind="sim", scenario=SCENARIO),
    )
    hub = CameraHub(
        opened,
        # live: the camera's speed-ups of positioning serve (concurrent landmarks and previews, the tracked
        # table, steady frames; not its one PyTorch thread, which is process-wide)
        perceiver_settings=PerceiverSettings(
            landmarks=landmarks,
            concurrent_landmarks=live,
            track_table_frames=15 if live else 0,
            steady=SteadySettings() if live else None,
        ),
        preview_interval_s=0.0,
        concurrent_preview=live,
        on_session_started=None
        if audit is None
        else lambda s: audit.session_started(s, source="sim", calibration_path=room.calibration_path),
        on_confirmed=None if audit is None else audit.confirmed,
        on_session_ended=None if audit is None else lambda s: audit.session_ended(s.id),
    )
    return Server(hub, ServerSettings(port=0, **settings)).start()


@pytest.fixture
def make_server(room_cache) -> Iterator[Callable[..., Server]]:
    """``make_server(events=(), audit=None, landmarks="depth", live=False, **server_settings)``: a started
    server (depth-only landmarks by default: faster), stopped after the test
    (a server with an active session perceives every frame: left running, it would slow the others)."""
    servers: list[Server] = []

    def make(
        events: tuple[RoomEvent, ...] = (),
        *,
        audit=None,
        landmarks: str = "depth",
        live: bool = False,
        **settings,
    ) -> Server:
        server = _make(room_cache, events, audit=audit, landmarks=landmarks, live=live, **settings)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(room_cache) -> Iterator[Server]:
    """One plain server shared by the tests that end their sessions."""
    s = _make(room_cache)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def write_tokens(tmp_path_factory) -> Callable[..., Path]:
    """``write_tokens((operator_name, token), (viewer_name, token))``: a tokens file for ``serve --tokens``
    (the viewer's token stored as its SHA-256, the operator's as itself: both forms are read)."""

    def write(operator: tuple[str, str], viewer: tuple[str, str]) -> Path:
        import hashlib

        path = tmp_path_factory.mktemp("tokens") / "tokens.yaml"
        viewer_sha = hashlib.sha256(viewer[1].encode()).hexdigest()
        path.write_text(
            "tokens:\n"
            f"  - {{name: {operator[0]}, role: operator, token: {operator[1]}}}\n"
            f"  - {{name: {viewer[0]}, role: viewer, token_sha256: {viewer_sha}}}\n"
        )
        return path

    return write


@pytest.fixture(scope="session")
def wait_for_plan() -> Callable[..., object]:
    """``wait_for_plan(client, session_id)``: the first estimate with a confirmable plan preview."""
    return _wait_for_plan


def _wait_for_plan(client: Client, session_id: str, timeout_s: float = 60.0):
    """The first estimate that carries a plan preview that can be confirmed."""
    stream = client.watch(session_id, timeout_s=timeout_s)
    seen = 0
    try:
        for est in stream:
            seen += 1  # each estimate is of another frame: after 5, the session may confirm
            if est.HasField("preview") and est.preview.ok and seen >= 5:
                return est
    finally:
        stream.cancel()
    raise AssertionError("no confirmable plan preview")


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=positioning test CA")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("client", "rt.jones")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}")  # fmt: skip
        extra = ["-extfile", "san.cnf"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *extra)  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}
