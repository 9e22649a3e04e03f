"""The gRPC server: the positioning service, the standard health service and server reflection.

``positioning serve`` with no arguments serves the simulated room on 127.0.0.1:50051. The server is
grpc's thread-pool server: each call or stream has a thread, and the camera's hub perceives on its own
thread, so a client never waits on perception beyond the frame in progress. At most ``max_streams`` calls
run at once; more are refused with RESOURCE_EXHAUSTED, as are messages larger than ``max_message_bytes``.

Health (``grpc.health.v1``): SERVING while the camera delivers frames, NOT_SERVING while it is lost and
from the start of a shutdown. Shutdown (SIGTERM or SIGINT): health goes NOT_SERVING, the streams end with
UNAVAILABLE, the sessions end (the audit records it), the process exits 0.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from positioning.errors import PositioningError
from positioning.service.auth import AuthInterceptor, TokenStore
from positioning.service.hub import CameraHub
from positioning.service.protos import load_stubs
from positioning.service.servicer import PositioningServicer

__all__ = ["SERVICE_NAME", "ServerSettings", "Server", "TlsError"]

pb2, pb2_grpc = load_stubs()
SERVICE_NAME = pb2.DESCRIPTOR.services_by_name["Positioning"].full_name


class TlsError(PositioningError):
    """The TLS files cannot be used."""

    code = "BAD_TLS"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How the server listens.

    Attributes:
        host: interface to listen on (loopback by default: nothing outside this machine can call).
        port: TCP port (0: any free port; :attr:`Server.port` says which).
        max_streams: calls and streams running at once (more: RESOURCE_EXHAUSTED).
        max_message_bytes: largest message received or sent.
        tls_cert, tls_key: the server's certificate and key (PEM) for TLS; None: plain text.
        tls_client_ca: with TLS, require client certificates signed by this CA (mutual TLS).
        tokens: the tokens file (None: no tokens; every caller may act).
        grace_s: how long calls in progress get at shutdown.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    max_streams: int = 64
    max_message_bytes: int = 8 * 1024 * 1024
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tokens: Path | None = None
    grace_s: float = 2.0


def _credentials(s: ServerSettings) -> grpc.ServerCredentials | None:
    if s.tls_cert is None and s.tls_key is None:
        if s.tls_client_ca is not None:
            raise TlsError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if s.tls_cert is None or s.tls_key is None:
        raise TlsError("TLS needs both --tls-cert and --tls-key")
    try:
        pair = (s.tls_key.read_bytes(), s.tls_cert.read_bytes())
        ca = s.tls_client_ca.read_bytes() if s.tls_client_ca is not None else None
    except OSError as e:
        raise TlsError(f"cannot read a TLS file: {e}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


class Server:
    """The service on one camera hub.

    Args:
        hub: the camera (started here if it is not yet).
        settings: see :class:`ServerSettings`.
        protocol_dirs: extra protocol folders.
        audit: an audit store to close at shutdown, after the sessions have ended (the hub writes to it).

    Raises:
        TlsError, TokenError: unusable TLS or tokens files.
        PositioningError: the port cannot be bound.
    """

    def __init__(
        self,
        hub: CameraHub,
        settings: ServerSettings | None = None,
        *,
        protocol_dirs: tuple = (),
        audit: Any | None = None,
    ):
        self.settings = s = settings or ServerSettings()
        self.hub = hub
        tokens = TokenStore.load(s.tokens) if s.tokens is not None else None
        credentials = _credentials(s)
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.max_streams + 4, thread_name_prefix="grpc"),
            interceptors=[AuthInterceptor(tokens)] if tokens is not None else [],
            options=options,
            maximum_concurrent_rpcs=s.max_streams,
        )
        self.servicer = PositioningServicer(hub, tokens=tokens, protocol_dirs=protocol_dirs)
        pb2_grpc.add_PositioningServicer_to_server(self.servicer, self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        address = f"{s.host}:{s.port}"
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as e:
            raise PositioningError(f"cannot listen on {address}: {e}") from None
        if self.port == 0:
            raise PositioningError(f"cannot listen on {address} (in use?)")
        self.address = f"{s.host}:{self.port}"
        self.tls = credentials is not None
        self.audit = audit
        self._stopped = threading.Event()

    def _health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _on_camera(self, ok: bool) -> None:
        if not self._stopped.is_set():  # shutdown keeps NOT_SERVING
            self._health(ok)

    def start(self) -> Server:
        self._health(self.hub.camera_ok)
        self.hub.add_camera_listener(self._on_camera)
        self.hub.start()
        self._server.start()
        return self

    def stop(self) -> None:
        """Health NOT_SERVING, streams end with UNAVAILABLE, sessions end, the camera is released."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health(False)
        self.hub.stop()  # streams see the hub stopping and end with UNAVAILABLE; sessions end
        self._server.stop(self.settings.grace_s).wait()
        if self.audit is not None:
            self.audit.close()

    def wait(self) -> None:
        self._server.wait_for_termination()

    def serve_forever(self) -> int:
        """Serve until SIGTERM or SIGINT; returns 0 after a clean shutdown."""
        done = threading.Event()

        def handle(signum: int, frame: Any) -> None:
            done.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)
        while not done.wait(0.5):
            pass
        self.stop()
        return 0

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
