"""Tokens with roles, TLS and mutual TLS, over real channels."""

from __future__ import annotations

import grpc
import pytest

from positioning.service.auth import TokenError, TokenStore
from positioning.service.client import Client, ClientSettings
from positioning.service.server import TlsError

OPERATOR_TOKEN = "op-7f3a9c2e51d84b06"
VIEWER_TOKEN = "view-2b8e4d1f90ac3e57"


@pytest.fixture(scope="module")
def tokens_file(write_tokens):
    return write_tokens(("rt.jones", OPERATOR_TOKEN), ("console", VIEWER_TOKEN))


@pytest.fixture
def token_server(make_server, tokens_file):
    return make_server(tokens=tokens_file)


def _code(call) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return None


def test_tokens_and_roles(token_server):
    address = token_server.address
    with Client(address) as anonymous, Client(address, token="wrong-token-123456") as wrong:
        assert _code(anonymous.protocols) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(wrong.protocols) == grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.health() == "SERVING"  # health answers without a token
    with Client(address, token=VIEWER_TOKEN) as viewer, Client(address, token=OPERATOR_TOKEN) as operator:
        assert viewer.protocols() and viewer.device().camera_ok
        assert _code(lambda: viewer.start_session("chest")) == grpc.StatusCode.PERMISSION_DENIED
        session = operator.start_session("chest")
        assert session.operator == "rt.jones"  # the token names who acted
        sid = session.session_id
        assert _code(lambda: viewer.confirm(sid)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: viewer.report_table_position(sid, 10.0)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: viewer.end_session(sid)) == grpc.StatusCode.PERMISSION_DENIED
        assert viewer.session(sid).active  # watching is allowed
        operator.end_session(sid)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("tokens: []", "names no token"),
        ("tokens:\n  - {name: a, role: admin, token: 0123456789abcdef0}", "role"),
        ("tokens:\n  - {name: a, role: viewer, token: short}", "shorter than 16"),
        ("tokens:\n  - {name: a, role: viewer, token_sha256: xyz}", "not hex"),
        ("[1, 2", "not YAML"),
    ],
)
def test_bad_tokens_files_are_refused(tmp_path, text, match):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TokenError, match=match):
        TokenStore.load(path)


def test_tls_and_mutual_tls(make_server, certs):
    tls = make_server(tls_cert=certs["server_pem"], tls_key=certs["server_key"])
    port = tls.port
    with Client(ClientSettings(address=f"localhost:{port}", tls_ca=certs["ca_pem"])) as c:
        assert c.health() == "SERVING" and c.protocols()
    with Client(f"localhost:{port}", timeout_s=3) as plain:  # plain text against TLS: refused
        assert _code(plain.protocols) == grpc.StatusCode.UNAVAILABLE

    mtls = make_server(
        tls_cert=certs["server_pem"], tls_key=certs["server_key"], tls_client_ca=certs["ca_pem"]
    )
    address = f"localhost:{mtls.port}"
    with Client(
        ClientSettings(
            address=address,
            tls_ca=certs["ca_pem"],
            tls_cert=certs["client_pem"],
            tls_key=certs["client_key"],
        )
    ) as c:
        assert c.protocols()
    with Client(ClientSettings(address=address, tls_ca=certs["ca_pem"], timeout_s=3)) as no_cert:
        assert _code(no_cert.protocols) == grpc.StatusCode.UNAVAILABLE


def test_half_a_tls_configuration_is_refused(make_server, certs):
    with pytest.raises(TlsError, match="both"):
        make_server(tls_cert=certs["server_pem"])
    with pytest.raises(TlsError, match="needs --tls-cert"):
        make_server(tls_client_ca=certs["ca_pem"])
