"""The HTTP port: gRPC-Web calls over a real localhost connection to a real server (the same servicer,
interceptors and status details as the gRPC port), the tablet app's files, TLS."""

from __future__ import annotations

import base64
import http.client
import ssl
import struct
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from positioning.service.grpcweb import frame_message, parse_frames, parse_timeout, trailer_block
from positioning.service.protos import load_stubs

pb2, _ = load_stubs()
SERVICE = "/positioning.v1.Positioning/"
GRPC_WEB = {"Content-Type": "application/grpc-web+proto"}
OPERATOR = "web-op-5d1c7e9a20b4"
VIEWER = "web-view-8a3f6b2c91e0"


def _post(port: int, method: str, msg, headers=None, *, tls: ssl.SSLContext | None = None):
    conn = (
        http.client.HTTPSConnection("localhost", port, context=tls, timeout=30)
        if tls
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    body = msg if isinstance(msg, bytes) else frame_message(msg.SerializeToString())
    conn.request("POST", SERVICE + method, body=body, headers={**GRPC_WEB, **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r, data


def _trailers(r, data: bytes) -> tuple[dict[str, str], list[bytes]]:
    """(trailers, messages) of a gRPC-Web answer (trailers-only answers carry them in the headers)."""
    if r.getheader("grpc-status") is not None:
        return {"grpc-status": r.getheader("grpc-status"), "grpc-message": r.getheader("grpc-message")}, []
    frames = parse_frames(data)
    messages = [p for f, p in frames if not f & 0x80]
    (trailer,) = [p for f, p in frames if f & 0x80]
    fields = dict(line.split(": ", 1) for line in trailer.decode().split("\r\n") if line)
    return fields, messages


@pytest.fixture(scope="module")
def web_tokens(write_tokens):
    return write_tokens(("rt.web", OPERATOR), ("watcher", VIEWER))


def test_frames_trailers_and_timeouts_round_trip():
    body = frame_message(b"abc") + frame_message(b"", trailer=True)
    assert parse_frames(body) == [(0, b"abc"), (0x80, b"")]
    with pytest.raises(ValueError, match="says 9 bytes"):
        parse_frames(struct.pack(">BI", 0, 9) + b"abc")
    with pytest.raises(ValueError, match="header"):
        parse_frames(b"\x00\x00")
    block = trailer_block(
        grpc.StatusCode.NOT_FOUND, "no session 'x' – ended", [("grpc-status-details-bin", b"\x01\xff")]
    )
    lines = block.decode().split("\r\n")
    assert lines[0] == "grpc-status: 5"
    assert lines[1] == "grpc-message: no session %27x%27 %E2%80%93 ended"
    assert lines[2] == "grpc-status-details-bin: " + base64.b64encode(b"\x01\xff").decode()
    assert (
        parse_timeout("250m") == pytest.approx(0.25)
        and parse_timeout("2S") == 2.0
        and parse_timeout(None) is None
    )
    with pytest.raises(ValueError, match="grpc-timeout"):
        parse_timeout("soon")


def test_calls_from_a_browser_reach_the_same_servicer_with_field_details(make_server):
    server = make_server(http_port=0)
    port = server.gateway.port
    r, data = _post(port, "ListProtocols", pb2.ListProtocolsRequest())
    assert r.status == 200 and r.getheader("Content-Type") == "application/grpc-web+proto"
    trailers, messages = _trailers(r, data)
    assert trailers["grpc-status"] == "0"
    names = [p.name for p in pb2.ListProtocolsResponse.FromString(messages[0]).protocols]
    assert "chest" in names

    r, data = _post(port, "StartSession", pb2.StartSessionRequest(protocol="spleen-deluxe"))
    trailers, _ = _trailers(r, data)
    assert trailers["grpc-status"] == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    status = status_pb2.Status.FromString(base64.b64decode(trailers["grpc-status-details-bin"]))
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad) and bad.field_violations[0].field == "protocol"

    r, data = _post(port, "GetSession", pb2.GetSessionRequest(session_id="nope"), {"grpc-timeout": "5S"})
    assert _trailers(r, data)[0]["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])


def test_tokens_and_roles_apply_on_the_http_port(make_server, web_tokens):
    server = make_server(http_port=0, tokens=web_tokens)
    port = server.gateway.port
    code = lambda r_data: _trailers(*r_data)[0]["grpc-status"]  # noqa: E731
    assert code(_post(port, "ListProtocols", pb2.ListProtocolsRequest())) == "16"  # UNAUTHENTICATED
    viewer = {"authorization": f"Bearer {VIEWER}"}
    assert code(_post(port, "ListProtocols", pb2.ListProtocolsRequest(), viewer)) == "0"
    assert code(_post(port, "StartSession", pb2.StartSessionRequest(protocol="chest"), viewer)) == "7"
    operator = {"authorization": f"Bearer {OPERATOR}"}
    r, data = _post(port, "StartSession", pb2.StartSessionRequest(protocol="chest"), operator)
    trailers, messages = _trailers(r, data)
    assert trailers["grpc-status"] == "0"
    assert pb2.SessionInfo.FromString(messages[0]).operator == "rt.web"


def test_bad_requests_get_specific_answers(make_server):
    server = make_server(http_port=0, max_message_bytes=1024)
    port = server.gateway.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", SERVICE + "ListProtocols", body=b"{}", headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 415 and b"grpc-web+proto" in r.read()
    conn.request("POST", SERVICE + "Nope", body=frame_message(b""), headers=GRPC_WEB)
    r = conn.getresponse()
    assert r.status == 404 and b"/positioning.v1.Positioning/Nope" in r.read()
    conn.close()
    r, _ = _post(port, "ListProtocols", b"\x00\x00\x00\x00\x09abc")
    assert r.getheader("grpc-status") == "3" and "malformed" in r.getheader("grpc-message")
    r, _ = _post(port, "ListProtocols", frame_message(b"x" * 4096))
    assert r.getheader("grpc-status") == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    r, _ = _post(port, "ListProtocols", pb2.ListProtocolsRequest(), {"grpc-timeout": "soon"})
    assert r.getheader("grpc-status") == "3" and "grpc-timeout" in r.getheader("grpc-message")


def _open_stream(port: int, session_id: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = frame_message(pb2.WatchEventsRequest(session_id=session_id).SerializeToString())
    conn.request("POST", SERVICE + "WatchEvents", body=body, headers=GRPC_WEB)
    return conn, conn.getresponse()


def test_a_browser_that_leaves_frees_its_stream_and_shutdown_ends_streams_unavailable(make_server):
    server = make_server(http_port=0)
    port = server.gateway.port
    r, data = _post(port, "StartSession", pb2.StartSessionRequest(protocol="chest"))
    sid = pb2.SessionInfo.FromString(_trailers(r, data)[1][0]).session_id

    conn, r = _open_stream(port, sid)
    assert r.status == 200
    deadline = time.monotonic() + 5
    while not server.gateway._streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(server.gateway._streams) == 1
    conn.close()  # the tab closes: the gateway cancels the call on the server
    deadline = time.monotonic() + 5
    while server.gateway._streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.gateway._streams

    conn, r = _open_stream(port, sid)
    threading.Timer(0.5, server.stop).start()
    data = r.read()  # ends when the server stops
    conn.close()
    trailers, _ = _trailers(r, data)
    assert trailers["grpc-status"] == str(grpc.StatusCode.UNAVAILABLE.value[0])


def test_the_app_is_served_with_a_strict_policy_and_nothing_outside_it(make_server, tmp_path):
    app = tmp_path / "dist"
    app.mkdir()
    (app / "index.html").write_text("<!doctype html><title>t</title>")
    (app / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    server = make_server(http_port=0, tablet_dir=app)
    conn = http.client.HTTPConnection("127.0.0.1", server.gateway.port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 200 and b"<title>t</title>" in r.read()
    assert "default-src 'self'" in r.getheader("Content-Security-Policy")
    conn.request("GET", "/app.js")
    r = conn.getresponse()
    r.read()
    assert r.getheader("Content-Type").startswith(("text/javascript", "application/javascript"))
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/nothing.js"):
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 404 and b"no" not in r.read().replace(b"not found", b""), path
    conn.close()


def test_a_page_on_another_domain_cannot_reach_the_port(make_server):
    # DNS rebinding: a page whose domain now resolves to this machine sends its own name as Host
    server = make_server(http_port=0, http_allowed_hosts=("ct3-positioning.hospital.example",))
    port = server.gateway.port
    for host, allowed in (
        ("evil.example", False),
        (f"evil.example:{port}", False),
        ("", False),
        (f"127.0.0.1:{port}", True),
        (f"[::1]:{port}", True),
        (f"localhost:{port}", True),
        ("CT3-Positioning.hospital.example.", True),
    ):
        r, data = _post(port, "ListProtocols", pb2.ListProtocolsRequest(), {"Host": host})
        assert (r.status == 200) is allowed, (host, r.status)
        if not allowed:
            assert r.status == 421 and b"--http-allowed-host" in data
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Host": "evil.example"})
    assert conn.getresponse().status == 421
    conn.close()


def test_odd_requests_are_refused_without_hanging_or_dropping(make_server, tmp_path):
    app = tmp_path / "dist"
    app.mkdir()
    (app / "index.html").write_text("<!doctype html>")
    server = make_server(http_port=0, tablet_dir=app)
    conn = http.client.HTTPConnection("127.0.0.1", server.gateway.port, timeout=10)
    conn.request("GET", "/a%00b")
    r = conn.getresponse()
    assert r.status == 404 and r.read() == b"not found\n"
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.gateway.port, timeout=10)
    conn.putrequest("POST", SERVICE + "ListProtocols")
    conn.putheader("Content-Type", "application/grpc-web+proto")
    conn.putheader("Content-Length", "-1")
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 411
    conn.close()


def test_a_gateway_never_started_stops_at_once():
    from positioning.service.grpcweb import GrpcWebGateway

    gw = GrpcWebGateway("unix:/nonexistent/grpc.sock", {}, port=0)
    t = threading.Thread(target=gw.stop)
    t.start()
    t.join(5)
    assert not t.is_alive()


def test_an_unbuilt_app_says_how_to_build_it(make_server, tmp_path):
    server = make_server(http_port=0, tablet_dir=tmp_path / "nothing")
    conn = http.client.HTTPConnection("127.0.0.1", server.gateway.port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 503 and b"scripts/setup.sh" in r.read()
    conn.close()


def test_the_http_port_speaks_tls_with_the_servers_certificate(make_server, certs):
    server = make_server(http_port=0, tls_cert=certs["server_pem"], tls_key=certs["server_key"])
    assert server.http_url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(certs["ca_pem"]))
    r, data = _post(server.gateway.port, "ListProtocols", pb2.ListProtocolsRequest(), tls=ctx)
    assert _trailers(r, data)[0]["grpc-status"] == "0"
    with pytest.raises(ssl.SSLError):
        _post(
            server.gateway.port, "ListProtocols", pb2.ListProtocolsRequest(), tls=ssl.create_default_context()
        )
