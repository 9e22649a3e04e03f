"""gRPC-Web for browsers: the tablet app and a gRPC-Web endpoint on one HTTP port.

Browsers cannot speak gRPC (HTTP/2 trailers); they speak gRPC-Web (the same messages, the status in a
final frame of the body). This gateway takes gRPC-Web calls (``POST /positioning.v1.Positioning/Method``,
``application/grpc-web+proto``) and makes the same call on the positioning server itself, over a private
Unix socket the server listens on for it (a folder only this process's user may open). So a call from the
browser goes through the very interceptors (tokens and roles), servicer, stream limit, deadlines and
status details (``grpc-status-details-bin``: ``google.rpc.BadRequest``) as a call on the native port;
nothing is implemented twice. The same port serves the tablet app's bundle (``tablet/dist``).

Why not sonora (a WSGI/ASGI gRPC-Web implementation): it calls servicers with its own context, which
runs no grpc interceptors (public/sonora#13, open), takes ``abort_with_status`` differently from grpc
(#55, open: our BadRequest details would be lost) and fails an error after the first message of a stream
(#69); it would also need an ASGI server. The framing done here is the whole of the gRPC-Web protocol
for binary unary and server-streaming calls (the only kinds the contract has), about a hundred lines.

HTTP/1.1 with chunked responses (every browser streams them with ``fetch``); TLS and mutual TLS with the
same files as the gRPC port. Same origin only: no CORS headers are sent, so no other site's page can call
the service from a browser; and the ``Host`` header must be an IP address or a name the server knows as
its own (``--http-allowed-host``), so that a page whose domain is re-pointed at this machine (DNS
rebinding) is refused. Static files carry a Content-Security-Policy that allows nothing from another
origin. Connections idle for ``IDLE_TIMEOUT_S`` close, and TCP keep-alive finds a tablet that left the
Wi-Fi without closing (its streams are cancelled, their slots freed) within about half a minute.

A browser keeps at most six HTTP/1.1 connections per server; the tablet app holds two streams (estimates,
events), so more than two tabs of one browser on one server starve each other's calls.
"""

from __future__ import annotations

import base64
import http.server
import ipaddress
import logging
import mimetypes
import re
import select
import socket
import ssl
import struct
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc

__all__ = ["GrpcWebGateway", "frame_message", "parse_frames", "trailer_block", "parse_timeout"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "application/grpc-web+proto"
_HEADER = struct.Struct(">BI")  # flags, length
_TRAILER_FLAG = 0x80
#: Request headers passed on to the server as metadata.
_FORWARDED = ("authorization",)
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
#: An idle keep-alive connection, or a request that stalls mid-way, closes after this long.
IDLE_TIMEOUT_S = 30.0
#: TCP keep-alive on accepted connections: idle 10 s, then 5 probes 4 s apart.
_KEEPALIVE = (10, 4, 5)
_NOT_BUILT = (
    "<!doctype html><meta charset=utf-8><title>Tablet app not built</title>"
    "<h1>The tablet app is not built</h1><p>Run <code>bash scripts/setup.sh</code> (it builds "
    "<code>tablet/</code> with Node.js and npm), then reload. The gRPC-Web endpoint on this port works "
    "without it.</p>"
)


def frame_message(payload: bytes, *, trailer: bool = False) -> bytes:
    """One gRPC-Web frame: flags (0x80 for trailers), big-endian length, payload."""
    return _HEADER.pack(_TRAILER_FLAG if trailer else 0, len(payload)) + payload


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    """The frames of a gRPC-Web body as ``(flags, payload)``.

    Raises:
        ValueError: the body is not a sequence of whole frames.
    """
    frames, i = [], 0
    while i < len(body):
        if len(body) - i < _HEADER.size:
            raise ValueError(f"a frame header needs {_HEADER.size} bytes, {len(body) - i} left")
        flags, n = _HEADER.unpack_from(body, i)
        i += _HEADER.size
        if n > len(body) - i:
            raise ValueError(f"a frame says {n} bytes, {len(body) - i} follow")
        frames.append((flags, body[i : i + n]))
        i += n
    return frames


def trailer_block(code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, Any]] = ()) -> bytes:
    """The trailers as gRPC-Web sends them in its last frame: ``name: value`` lines (CRLF), the status message
    percent-encoded, binary (``-bin``) values in base64."""
    lines = [f"grpc-status: {code.value[0]}"]
    if message:
        lines.append(f"grpc-message: {urllib.parse.quote(message, safe=' !#$&()*+,-./:;=?@[]^_{|}~')}")
    for key, value in metadata:
        key = key.lower()
        if key in ("grpc-status", "grpc-message"):
            continue
        if key.endswith("-bin"):
            raw = value if isinstance(value, bytes) else str(value).encode()
            value = base64.b64encode(raw).decode("ascii")
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def parse_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (e.g. ``"10S"``, ``"250m"``) in seconds; None when absent.

    Raises:
        ValueError: not ``DIGITS UNIT``.
    """
    if not value:
        return None
    m = re.fullmatch(r"(\d{1,8})([HMSmun])", value.strip())
    if m is None:
        raise ValueError(f"grpc-timeout {value!r} is not DIGITS followed by one of H M S m u n")
    return int(m.group(1)) * _TIMEOUT_UNITS[m.group(2)]


class _ClientGoneError(Exception):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "positioning"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    gateway: GrpcWebGateway  # set on the subclass made per gateway

    def setup(self) -> None:
        super().setup()
        _keepalive(self.connection)

    def _refuse(self) -> bool:
        """Answer and return True when this request must not be served: the server is stopping, or the Host
        header names a host that is not this server (DNS rebinding)."""
        if self.gateway.stopping.is_set():
            self.close_connection = True
            self._send_bytes(503, "text/plain; charset=utf-8", b"the server is shutting down\n")
            return True
        host = self.headers.get("Host", "")
        if not self.gateway.host_allowed(host):
            self.close_connection = True
            self._send_bytes(
                421,
                "text/plain; charset=utf-8",
                f"Host {host!r} is not this server's (--http-allowed-host adds a name)\n".encode(),
            )
            return True
        return False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------------------------------ static

    def do_GET(self) -> None:
        self._static(head=False)

    def do_HEAD(self) -> None:
        self._static(head=True)

    def _static(self, *, head: bool) -> None:
        if self._refuse():
            return
        path = urllib.parse.urlsplit(self.path).path
        root = self.gateway.static_dir
        if path in ("", "/"):
            path = "/index.html"
        if root is None or not (root / "index.html").is_file():
            if path == "/index.html":
                self._send_bytes(503, "text/html; charset=utf-8", _NOT_BUILT.encode(), head=head)
            else:
                self._send_bytes(404, "text/plain; charset=utf-8", b"not found\n", head=head)
            return
        try:
            target = (root / urllib.parse.unquote(path, errors="strict").lstrip("/")).resolve()
            found = target.is_relative_to(root.resolve()) and target.is_file()
        except (ValueError, OSError):  # a NUL byte, undecodable or overlong names
            found = False
        if not found:
            self._send_bytes(404, "text/plain; charset=utf-8", b"not found\n", head=head)
            return
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        self._send_bytes(200, kind, target.read_bytes(), head=head)

    def _send_bytes(self, code: int, kind: str, body: bytes, *, head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # ---------------------------------------------------------------------------------------- gRPC-Web

    def do_POST(self) -> None:
        if self._refuse():
            return
        path = urllib.parse.urlsplit(self.path).path
        kind = self.gateway.methods.get(path)
        if kind is None:
            self._drain()
            self._send_bytes(404, "text/plain; charset=utf-8", f"no gRPC-Web method {path}\n".encode())
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in ("application/grpc-web", _CONTENT_TYPE):
            self._drain()
            self._send_bytes(
                415,
                "text/plain; charset=utf-8",
                f"Content-Type {content_type or '(none)'} is not application/grpc-web+proto "
                "(grpc-web-text is not served)\n".encode(),
            )
            return
        length = self._content_length()
        if length is None:
            self._send_bytes(411, "text/plain; charset=utf-8", b"a gRPC-Web request needs Content-Length\n")
            self.close_connection = True
            return
        limit = self.gateway.max_message_bytes + _HEADER.size
        if length > limit:
            self.close_connection = True
            if length <= 4 * limit:  # read it, so that the browser sees the answer rather than a reset
                self.rfile.read(length)
            self._status_only(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request of {length} bytes exceeds the limit of {limit}"
            )
            return
        body = self.rfile.read(length)
        try:
            frames = parse_frames(body)
            timeout_s = parse_timeout(self.headers.get("grpc-timeout"))
        except ValueError as e:
            self._status_only(grpc.StatusCode.INVALID_ARGUMENT, f"malformed gRPC-Web request: {e}")
            return
        data = [p for flags, p in frames if not flags & _TRAILER_FLAG]
        if len(data) != 1:
            self._status_only(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"malformed gRPC-Web request: one message expected, {len(data)} sent",
            )
            return
        metadata = tuple((k, self.headers[k]) for k in _FORWARDED if self.headers.get(k))
        self._call(path, kind, data[0], metadata, timeout_s)

    def _content_length(self, missing: int | None = None) -> int | None:
        """The request's ``Content-Length``: ``missing`` when absent, None when not a count of bytes."""
        raw = self.headers.get("Content-Length")
        if raw is None:
            return missing
        try:
            n = int(raw)
        except ValueError:
            return None
        return n if n >= 0 else None

    def _drain(self) -> None:
        n = self._content_length(missing=0)
        if n is None:
            self.close_connection = True
            return
        if n > 0:
            self.rfile.read(min(n, 1 << 20))
            if n > 1 << 20:
                self.close_connection = True

    def _status_only(self, code: grpc.StatusCode, message: str) -> None:
        """A trailers-only answer: the status in the headers (a call that failed before any message)."""
        self.send_response(200)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Content-Length", "0")
        self.send_header("grpc-status", str(code.value[0]))
        self.send_header("grpc-message", urllib.parse.quote(message, safe=" "))
        self.end_headers()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", _CONTENT_TYPE)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        try:
            self.end_headers()
            self.wfile.flush()
        except (OSError, ValueError) as e:
            raise _ClientGoneError() from e

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (OSError, ValueError) as e:
            raise _ClientGoneError() from e

    def _end_stream(self, code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, Any]]) -> None:
        self._chunk(frame_message(trailer_block(code, message, metadata), trailer=True))
        self._chunk(b"")

    def _call(
        self,
        path: str,
        kind: str,
        request: bytes,
        metadata: tuple[tuple[str, str], ...],
        timeout_s: float | None,
    ) -> None:
        gw = self.gateway
        if kind == "unary":
            try:
                response, call = gw.channel.unary_unary(path).with_call(
                    request, metadata=metadata, timeout=timeout_s
                )
            except grpc.RpcError as e:
                try:
                    self._rpc_failed(e, started=False)
                except _ClientGoneError:
                    self.close_connection = True
                return
            try:
                self._start_stream()
                self._chunk(frame_message(response))
                self._end_stream(grpc.StatusCode.OK, "", call.trailing_metadata() or ())
            except _ClientGoneError:
                self.close_connection = True
            return
        stream = gw.channel.unary_stream(path)(request, metadata=metadata, timeout=timeout_s)
        gw.track(stream)
        watcher = threading.Thread(target=_cancel_when_closed, args=(self.connection, stream), daemon=True)
        try:
            self._start_stream()
            watcher.start()
            for message in stream:
                self._chunk(frame_message(message))
            self._end_stream(grpc.StatusCode.OK, "", stream.trailing_metadata() or ())
        except grpc.RpcError as e:
            try:
                self._rpc_failed(e, started=True)  # the headers went before the first message
            except _ClientGoneError:
                self.close_connection = True
        except _ClientGoneError:
            stream.cancel()
            self.close_connection = True
        finally:
            gw.untrack(stream)

    def _rpc_failed(self, e: grpc.RpcError, *, started: bool) -> None:
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = (e.details() if hasattr(e, "details") else "") or ""
        trailing = (e.trailing_metadata() if hasattr(e, "trailing_metadata") else None) or ()
        if code == grpc.StatusCode.CANCELLED and self.gateway.stopping.is_set():
            code, details = grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
        if not started:
            self._start_stream()
        self._end_stream(code, details, trailing)


def _keepalive(conn: socket.socket) -> None:
    """TCP keep-alive on an accepted connection, so that a peer that vanished is noticed."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = _KEEPALIVE
        for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
            if hasattr(socket, name):
                conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


def _cancel_when_closed(conn: socket.socket, stream: Any) -> None:
    """Cancel a stream once its browser has closed the connection, or TCP keep-alive found it gone (a
    browser sends nothing more on a connection while a response is in progress, so readable means closed;
    a client that pipelines a request is left to the writes)."""
    poller = select.poll()  # no limit on descriptor numbers, unlike select.select
    try:
        poller.register(conn, select.POLLIN | select.POLLERR | select.POLLHUP)
    except (OSError, ValueError):
        return
    while stream.is_active():
        try:
            events = poller.poll(500)
            if not events:
                continue
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                stream.cancel()
                return
            if not conn.recv(1, socket.MSG_PEEK):
                stream.cancel()
            return
        except ssl.SSLWantReadError:
            return  # TLS bytes without application data: leave it to the writes
        except (OSError, ValueError):
            stream.cancel()
            return


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that goes away or a failed TLS handshake: not the server's fault, no traceback; anything
        # else is a bug worth its traceback in the log.
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, OSError | ssl.SSLError):
            log.debug("connection from %s ended: %s", client_address, error)
        else:
            log.exception("gRPC-Web: error serving %s", client_address)


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class GrpcWebGateway:
    """The HTTP port: the tablet app and gRPC-Web, forwarded to the server's private Unix socket.

    Args:
        target: the gRPC server to call (``unix:/path``).
        methods: ``{"/package.Service/Method": "unary" | "server_stream"}``: the calls served.
        host, port: where to listen (port 0: any free port; :attr:`port` says which).
        static_dir: the app's files (``index.html`` and its bundle); None or unbuilt: a page that says how
            to build it.
        ssl_context: TLS (and, with a CA to verify, mutual TLS); None: plain HTTP.
        max_message_bytes: the largest request message.
        allowed_hosts: host names a browser may call this server by, besides IP addresses, ``localhost``
            and this machine's own names.
    """

    def __init__(
        self,
        target: str,
        methods: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        static_dir: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.methods = dict(methods)
        self.allowed_hosts = {h.lower().rstrip(".") for h in allowed_hosts} | {
            "localhost",
            socket.gethostname().lower(),
            socket.getfqdn().lower(),
        }
        self._started = False
        self.static_dir = static_dir
        self.max_message_bytes = max_message_bytes
        self.stopping = threading.Event()
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._streams: set[Any] = set()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"gateway": self})
        try:
            server_class = _HttpServer6 if ipaddress.ip_address(host).version == 6 else _HttpServer
        except ValueError:
            server_class = _HttpServer
        self._httpd = server_class((host, port), handler)
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self.tls = ssl_context is not None
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if self.tls else 'http'}://{shown}:{self.port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="grpc-web", daemon=True)

    def host_allowed(self, host_header: str) -> bool:
        """Whether a request's ``Host`` names this server: an IP address (which no DNS can re-point), or
        one of :attr:`allowed_hosts`."""
        host = host_header.strip().lower()
        if host.startswith("["):
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        if not host:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host.rstrip(".") in self.allowed_hosts

    def track(self, stream: Any) -> None:
        with self._lock:
            self._streams.add(stream)

    def untrack(self, stream: Any) -> None:
        with self._lock:
            self._streams.discard(stream)

    def start(self) -> GrpcWebGateway:
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end the streams in progress (UNAVAILABLE), close the channel."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._started:
            self._httpd.shutdown()  # waits for serve_forever: only when it ran
        with self._lock:
            streams = list(self._streams)
        for s in streams:
            s.cancel()
        self._httpd.server_close()
        self.channel.close()
