"""The reference client: what the tablet does (start a session, watch, plan, overlay, confirm, events) and
what the console does (report the table position, receive confirmed plans), over a real gRPC channel.

Example:
    >>> with Client("127.0.0.1:50051") as c:  # doctest: +SKIP
    ...     s = c.start_session("chest", operator="rt.jones")
    ...     plan = c.plan(s.session_id)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from positioning.service.protos import load_stubs

__all__ = ["ClientSettings", "Client", "describe_error"]

pb2, pb2_grpc = load_stubs()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """How to reach the server.

    Attributes:
        address: ``host:port``.
        token: bearer token (None: none sent).
        tls_ca: the CA that signed the server's certificate (PEM); None: plain text.
        tls_cert, tls_key: the client's certificate and key for mutual TLS.
        server_name: the name the server's certificate carries, if not the address's host.
        timeout_s: deadline of each unary call.
    """

    address: str = "127.0.0.1:50051"
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str | None = None
    timeout_s: float = 30.0


def describe_error(e: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call, with the fields a BadRequest names."""
    from grpc_status import rpc_status

    text = f"{e.code().name}: {e.details()}"
    status = rpc_status.from_call(e) if hasattr(e, "trailing_metadata") else None
    if status is not None:
        from google.rpc import error_details_pb2

        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                detail.Unpack(br)
                text += "".join(f" [field {v.field}]" for v in br.field_violations)
    return text


class Client:
    """A connection to the positioning service."""

    def __init__(self, address: str | ClientSettings = "127.0.0.1:50051", **kwargs: Any) -> None:
        s = address if isinstance(address, ClientSettings) else ClientSettings(address=address, **kwargs)
        self.settings = s
        if s.tls_ca is None:
            self.channel = grpc.insecure_channel(s.address)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=s.tls_ca.read_bytes(),
                private_key=s.tls_key.read_bytes() if s.tls_key else None,
                certificate_chain=s.tls_cert.read_bytes() if s.tls_cert else None,
            )
            options = [("grpc.ssl_target_name_override", s.server_name)] if s.server_name else []
            self.channel = grpc.secure_channel(s.address, creds, options=options)
        self.stub = pb2_grpc.PositioningStub(self.channel)
        self._metadata = (("authorization", f"Bearer {s.token}"),) if s.token else ()

    def _call(self, name: str, request: Any, timeout_s: float | None = None) -> Any:
        return getattr(self.stub, name)(
            request, metadata=self._metadata, timeout=timeout_s or self.settings.timeout_s
        )

    def _stream(self, name: str, request: Any, timeout_s: float | None) -> Iterator[Any]:
        return getattr(self.stub, name)(request, metadata=self._metadata, timeout=timeout_s)

    # -- the tablet ----------------------------------------------------------------------------------
    def protocols(self) -> list[Any]:
        return list(self._call("ListProtocols", pb2.ListProtocolsRequest()).protocols)

    def start_session(
        self,
        protocol: str,
        *,
        expected_position: str = "",
        patient_height_mm: float | None = None,
        patient_weight_kg: float | None = None,
        table_position_mm: float | None = None,
        operator: str = "",
    ) -> Any:
        req = pb2.StartSessionRequest(
            protocol=protocol, expected_position=expected_position, operator=operator
        )
        for name, v in (
            ("patient_height_mm", patient_height_mm),
            ("patient_weight_kg", patient_weight_kg),
            ("table_position_mm", table_position_mm),
        ):
            if v is not None:
                setattr(req, name, v)
        return self._call("StartSession", req)

    def session(self, session_id: str) -> Any:
        return self._call("GetSession", pb2.GetSessionRequest(session_id=session_id))

    def end_session(self, session_id: str) -> Any:
        return self._call("EndSession", pb2.EndSessionRequest(session_id=session_id))

    def watch(
        self, session_id: str, *, preview: bool = True, timeout_s: float | None = None
    ) -> Iterator[Any]:
        """Live estimates (each the latest one); cancel the iterator (``.cancel()``) to stop."""
        return self._stream(
            "WatchEstimates",
            pb2.WatchEstimatesRequest(session_id=session_id, include_preview=preview),
            timeout_s,
        )

    def plan(self, session_id: str, scan_range_mm: tuple[float, float] | None = None) -> Any:
        req = pb2.GetPlanRequest(session_id=session_id)
        if scan_range_mm is not None:
            req.scan_start_mm, req.scan_end_mm = scan_range_mm
        return self._call("GetPlan", req)

    def overlay(self, session_id: str, *, depth_only: bool = False, jpeg: bool = False) -> Any:
        return self._call(
            "GetOverlay", pb2.GetOverlayRequest(session_id=session_id, depth_only=depth_only, jpeg=jpeg)
        )

    def confirm(
        self,
        session_id: str,
        *,
        operator: str = "",
        scan_range_mm: tuple[float, float] | None = None,
        note: str = "",
    ) -> Any:
        req = pb2.ConfirmPlanRequest(session_id=session_id, operator=operator, note=note)
        if scan_range_mm is not None:
            req.scan_start_mm, req.scan_end_mm = scan_range_mm
        return self._call("ConfirmPlan", req)

    def events(
        self, session_id: str, *, from_index: int = 0, timeout_s: float | None = None
    ) -> Iterator[Any]:
        return self._stream(
            "WatchEvents", pb2.WatchEventsRequest(session_id=session_id, from_index=from_index), timeout_s
        )

    # -- the console ---------------------------------------------------------------------------------
    def report_table_position(self, session_id: str, table_position_mm: float) -> Any:
        return self._call(
            "ReportTablePosition",
            pb2.ReportTablePositionRequest(session_id=session_id, table_position_mm=table_position_mm),
        )

    def confirmed_plans(self, *, timeout_s: float | None = None) -> Iterator[Any]:
        return self._stream("WatchConfirmedPlans", pb2.WatchConfirmedPlansRequest(), timeout_s)

    def device(self) -> Any:
        return self._call("GetDeviceStatus", pb2.GetDeviceStatusRequest())

    def health(self, service: str = "") -> str:
        """The health service's answer: ``"SERVING"`` or ``"NOT_SERVING"``."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.settings.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
