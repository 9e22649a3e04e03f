"""Bearer tokens with two roles: a viewer may watch, an operator may also start sessions and confirm plans.

The tokens file (``positioning serve --tokens FILE``) is YAML::

    tokens:
      - {name: rt.jones, role: operator, token: "..."}   # or token_sha256: the token's SHA-256, hex
      - {name: console, role: viewer, token_sha256: "5e884898..."}

Clients send ``authorization: Bearer TOKEN`` metadata. A token is compared with every known one in
constant time (``hmac.compare_digest`` over SHA-256 digests), so neither a token's length nor its first
wrong character shows in the time an answer takes. The health and reflection services answer without a
token, so that load balancers and tools can find the service.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import yaml

from positioning.errors import PositioningError

__all__ = [
    "ROLES",
    "OPERATOR_METHODS",
    "Identity",
    "TokenError",
    "TokenStore",
    "AuthInterceptor",
]

ROLES: tuple[str, ...] = ("viewer", "operator")
_SERVICE = "/positioning.v1.Positioning/"
#: Calls that change what happens to the patient: the operator role only.
OPERATOR_METHODS: frozenset[str] = frozenset(
    _SERVICE + m for m in ("StartSession", "EndSession", "ConfirmPlan", "ReportTablePosition")
)
#: Services that answer without a token.
_OPEN_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenError(PositioningError):
    """The tokens file cannot be used."""

    code = "BAD_TOKENS"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who called: the token's name and role (``"anonymous"`` operator when the server uses no tokens)."""

    name: str
    role: str

    @property
    def operator(self) -> bool:
        return self.role == "operator"


ANONYMOUS = Identity("anonymous", "operator")


class TokenStore:
    """Known tokens (as SHA-256 digests only) with their names and roles."""

    def __init__(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """``entries``: ``(name, role, sha256 hex of the token)``."""
        self._entries: list[tuple[bytes, Identity]] = []
        for name, role, digest in entries:
            if role not in ROLES:
                raise TokenError(f"token {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}")
            try:
                raw = bytes.fromhex(digest)
            except ValueError:
                raise TokenError(f"token {name!r}: token_sha256 is not hex") from None
            if len(raw) != 32:
                raise TokenError(f"token {name!r}: token_sha256 must be 64 hex digits")
            self._entries.append((raw, Identity(name, role)))
        if not self._entries:
            raise TokenError("the tokens file names no token")

    @classmethod
    def load(cls, path: str | Path) -> TokenStore:
        """Read a tokens file (see the module docstring).

        Raises:
            TokenError: missing, malformed, an unknown role, or a token shorter than 16 characters.
        """
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise TokenError(f"tokens file not found: {path}") from None
        except yaml.YAMLError as e:
            raise TokenError(f"{path}: not YAML: {e}") from None
        items = doc.get("tokens") if isinstance(doc, Mapping) else None
        if not isinstance(items, list):
            raise TokenError(f"{path}: expected a 'tokens:' list")
        entries = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or "name" not in item or "role" not in item:
                raise TokenError(f"{path}: token {i} needs name, role and token (or token_sha256)")
            if "token" in item:
                token = str(item["token"])
                if len(token) < 16:
                    raise TokenError(f"{path}: token {item['name']!r} is shorter than 16 characters")
                digest = hashlib.sha256(token.encode()).hexdigest()
            elif "token_sha256" in item:
                digest = str(item["token_sha256"])
            else:
                raise TokenError(f"{path}: token {item['name']!r} has neither token nor token_sha256")
            entries.append((str(item["name"]), str(item["role"]), digest))
        return cls(entries)

    def identify(self, token: str) -> Identity | None:
        """The identity of ``token``, or None; every known token is compared, in constant time."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, identity in self._entries:
            if hmac.compare_digest(known, digest):
                found = identity
        return found


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            v = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = v.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def identity_of(store: TokenStore | None, metadata: Iterable[tuple[str, Any]] | None) -> Identity | None:
    """Who the metadata says called (None: no valid token); without a store everyone is an operator."""
    if store is None:
        return ANONYMOUS
    token = _bearer(metadata)
    return None if not token else store.identify(token)


def _abort_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            abort, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            abort, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            abort, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        abort, handler.request_deserializer, handler.response_serializer
    )


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a valid token (UNAUTHENTICATED) and operator calls from viewers
    (PERMISSION_DENIED)."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        if not token:
            return _abort_handler(
                handler, grpc.StatusCode.UNAUTHENTICATED, "no bearer token (authorization: Bearer TOKEN)"
            )
        identity = self.store.identify(token)
        if identity is None:
            return _abort_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if method in OPERATOR_METHODS and not identity.operator:
            return _abort_handler(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.rsplit('/', 1)[-1]} needs the operator role; {identity.name} is a {identity.role}",
            )
        return handler
