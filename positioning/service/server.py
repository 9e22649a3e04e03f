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
import os
import shutil
import signal
import ssl
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from positioning import resources
from positioning.errors import PositioningError
from positioning.service.auth import AuthInterceptor, TokenStore
from positioning.service.grpcweb import GrpcWebGateway
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
        http_port: the HTTP port for the tablet app and gRPC-Web (0: any free port; None: none). TLS and
            tokens apply there as on the gRPC port.
        http_host: its interface (None: ``host``).
        http_allowed_hosts: names browsers may reach the HTTP port by (besides IP addresses, ``localhost``
            and this machine's names): a request naming another host is refused (DNS rebinding).
        tablet_dir: the tablet app's built files (None: ``tablet/dist``).
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
    http_port: int | None = None
    http_host: str | None = None
    http_allowed_hosts: tuple[str, ...] = ()
    tablet_dir: Path | None = None


def _ssl_context(s: ServerSettings) -> ssl.SSLContext | None:
    """The HTTP port's TLS from the same files as the gRPC port's (checked there first)."""
    if s.tls_cert is None or s.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
        if s.tls_client_ca is not None:
            ctx.load_verify_locations(s.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot use the TLS files for the HTTP port: {e}") from None
    return ctx


def grpc_web_methods() -> dict[str, str]:
    """The calls the HTTP port serves: every unary and server-streaming call of the positioning service and
    the health service's (client-streaming calls cannot be made from a browser; there are none)."""
    methods: dict[str, str] = {}
    for service in (
        pb2.DESCRIPTOR.services_by_name["Positioning"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ):
        for m in service.methods:
            if not m.client_streaming:
                methods[f"/{service.full_name}/{m.name}"] = "server_stream" if m.server_streaming else "unary"
    return methods


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
        self.gateway: GrpcWebGateway | None = None
        self._private_dir: str | None = None
        if s.http_port is not None:
            self.gateway = self._gateway(s)
        self.http_url = None if self.gateway is None else self.gateway.url
        self.audit = audit
        self._stopped = threading.Event()

    def _gateway(self, s: ServerSettings) -> GrpcWebGateway:
        # The gateway calls this server over a Unix socket in a folder only this user may open: the same
        # interceptors and servicer as the TCP port; TLS, where used, is the HTTP port's own.
        self._private_dir = tempfile.mkdtemp(prefix="positioning-grpc-")
        os.chmod(self._private_dir, 0o700)
        target = f"unix:{self._private_dir}/grpc.sock"
        host = s.http_host or s.host
        try:
            if self._server.add_insecure_port(target) == 0:
                raise PositioningError(f"cannot listen on {target}")
            return GrpcWebGateway(
                target,
                grpc_web_methods(),
                host=host,
                port=s.http_port or 0,
                static_dir=s.tablet_dir or resources.tablet_dist_dir(),
                ssl_context=_ssl_context(s),
                max_message_bytes=s.max_message_bytes,
                allowed_hosts=(s.host, host, *s.http_allowed_hosts),
            )
        except OSError as e:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            raise PositioningError(f"cannot listen on {host}:{s.http_port} for the tablet app: {e}") from None
        except BaseException:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            raise

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
        if self.gateway is not None:
            self.gateway.start()
        return self

    def stop(self) -> None:
        """Health NOT_SERVING, streams end with UNAVAILABLE, sessions end, the camera is released."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health(False)
        self.hub.stop()  # streams see the hub stopping and end with UNAVAILABLE; sessions end
        if self.gateway is not None:
            self.gateway.stop()
        self._server.stop(self.settings.grace_s).wait()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
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
