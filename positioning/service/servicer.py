"""The ``positioning.v1.Positioning`` servicer: checks a request, calls the hub, converts the answer.

Thin on purpose (grpc's route_guide example): validation that names the field, one call into
:class:`~positioning.service.hub.CameraHub` or its :class:`~positioning.service.session.Session`, and
:mod:`positioning.service.convert`. Domain errors become status codes here, in :func:`_status_for`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from positioning.conventions import PatientPosition
from positioning.errors import PositioningError, ProtocolError
from positioning.service import convert
from positioning.service.auth import TokenStore, identity_of
from positioning.service.hub import (
    CameraHub,
    CameraLostError,
    SessionActiveError,
    SessionEndedError,
    UnknownSessionError,
)
from positioning.service.protos import load_stubs
from positioning.service.session import NothingToConfirmError, SessionRequest

__all__ = ["PositioningServicer", "WAIT_S"]

pb2, pb2_grpc = load_stubs()

#: How often a waiting stream looks whether its client is still there or the server is stopping.
WAIT_S = 0.25


class _AbortError(Exception):
    """Raised by validation; carries the status for :func:`_abort`."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def _abort(context: grpc.ServicerContext, e: _AbortError) -> None:
    if e.field is None:
        context.abort(e.code, e.message)
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=e.field, description=e.message)
            ]
        )
    )
    status = status_pb2.Status(code=getattr(code_pb2, e.code.name), message=e.message, details=[detail])
    context.abort_with_status(rpc_status.to_status(status))


def _status_for(error: Exception) -> _AbortError:
    """The status code a domain error means."""
    if isinstance(error, _AbortError):
        return error
    if isinstance(error, UnknownSessionError):
        return _AbortError(grpc.StatusCode.NOT_FOUND, str(error), "session_id")
    if isinstance(error, SessionActiveError | SessionEndedError | NothingToConfirmError):
        return _AbortError(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    if isinstance(error, CameraLostError):
        return _AbortError(grpc.StatusCode.UNAVAILABLE, str(error))
    if isinstance(error, ProtocolError):
        return _AbortError(grpc.StatusCode.INVALID_ARGUMENT, str(error), "protocol")
    if isinstance(error, ValueError):
        field = str(error).split(" ", 1)[0]
        return _AbortError(
            grpc.StatusCode.INVALID_ARGUMENT, str(error), field if field.isidentifier() else None
        )
    if isinstance(error, PositioningError):
        return _AbortError(grpc.StatusCode.FAILED_PRECONDITION, f"{error.code}: {error}")
    return _AbortError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")


def _unary(method: Any) -> Any:
    """Domain errors of a unary call become its status."""

    @functools.wraps(method)
    def wrapper(self: PositioningServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as e:
            _abort(context, _status_for(e))

    return wrapper


def _streaming(method: Any) -> Any:
    """Domain errors of a stream become its status."""

    @functools.wraps(method)
    def wrapper(self: PositioningServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as e:
            _abort(context, _status_for(e))

    return wrapper


def _session_id(request: Any) -> str:
    if not request.session_id:
        raise _AbortError(grpc.StatusCode.INVALID_ARGUMENT, "session_id is required", "session_id")
    return request.session_id


def _range(request: Any) -> tuple[float, float] | None:
    has_start, has_end = request.HasField("scan_start_mm"), request.HasField("scan_end_mm")
    if has_start != has_end:
        missing = "scan_end_mm" if has_start else "scan_start_mm"
        raise _AbortError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{missing} is required with the other end", missing
        )
    if not has_start:
        return None
    start, end = request.scan_start_mm, request.scan_end_mm
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise _AbortError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"scan_start_mm must be finite and below scan_end_mm (got {start}, {end})",
            "scan_start_mm",
        )
    return start, end


def _optional(request: Any, name: str) -> float | None:
    return getattr(request, name) if request.HasField(name) else None


class PositioningServicer(pb2_grpc.PositioningServicer):
    """The service's calls on one camera hub.

    Args:
        hub: the camera and its sessions.
        tokens: the token store (None: no tokens; everyone is an operator named by the request).
        protocol_dirs: extra protocol folders.
    """

    def __init__(
        self, hub: CameraHub, *, tokens: TokenStore | None = None, protocol_dirs: tuple = ()
    ) -> None:
        self.hub = hub
        self.tokens = tokens
        self.protocol_dirs = tuple(protocol_dirs)

    def _who(self, context: grpc.ServicerContext, given: str) -> str:
        """Who is acting: the request's name; with tokens, the token's name (and the request's, if it
        names someone else)."""
        name = given.strip()
        identity = identity_of(self.tokens, context.invocation_metadata())
        if self.tokens is None or identity is None:
            return name or "anonymous"
        return identity.name if name in ("", identity.name) else f"{name} (token {identity.name})"

    def _raise_if_shutting_down(self) -> None:
        """A stream that ends because the server stops ends with UNAVAILABLE (otherwise: normally)."""
        if self.hub.stopping:
            raise _AbortError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    def _require_camera(self) -> None:
        if not self.hub.camera_ok:
            raise CameraLostError(f"the camera is lost: {self.hub.device_status().last_error}")

    @_unary
    def ListProtocols(self, request: Any, context: grpc.ServicerContext) -> Any:
        from positioning.planning.protocol import list_protocols

        return pb2.ListProtocolsResponse(
            protocols=[
                pb2.ProtocolInfo(
                    name=p.name,
                    description=p.description,
                    accepted_positions=[str(x) for x in p.expected_positions],
                    body_region=p.body_region,
                    superior_landmark=p.superior.landmark,
                    inferior_landmark=p.inferior.landmark,
                )
                for p in list_protocols(search_dirs=self.protocol_dirs)
            ]
        )

    @_unary
    def StartSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.protocol:
            raise _AbortError(
                grpc.StatusCode.INVALID_ARGUMENT, "protocol is required (ListProtocols)", "protocol"
            )
        session = self.hub.start_session(
            SessionRequest(
                protocol=request.protocol,
                expected_position=request.expected_position or None,
                patient_height_mm=_optional(request, "patient_height_mm"),
                patient_weight_kg=_optional(request, "patient_weight_kg"),
                table_position_mm=_optional(request, "table_position_mm"),
                operator=self._who(context, request.operator),
                protocol_dirs=self.protocol_dirs,
            )
        )
        return convert.session_info(session)

    @_unary
    def GetSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.session_info(self.hub.session(_session_id(request)))

    @_unary
    def EndSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.session_info(self.hub.end_session(_session_id(request)))

    @_streaming
    def WatchEstimates(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        session = self.hub.active_session(_session_id(request))
        version, sent, sent_preview = 0, None, None
        while context.is_active():
            if self.hub.stopping or session.closed:
                self._raise_if_shutting_down()
                return
            self._require_camera()
            version, estimate = self.hub.wait_estimate(session.id, version, WAIT_S)
            if estimate is None or estimate is sent:
                continue
            preview = session.latest_preview if request.include_preview else None
            if preview is sent_preview:
                preview = None  # sent already
            else:
                sent_preview = preview
            sent = estimate
            yield convert.estimate_message(
                session.id, estimate, preview=preview, camera_ok=self.hub.camera_ok
            )

    @_unary
    def GetPlan(self, request: Any, context: grpc.ServicerContext) -> Any:
        session = self.hub.active_session(_session_id(request))
        scan_range = _range(request)
        self._require_camera()
        return convert.plan_message(session.plan(scan_range))

    @_unary
    def ListProcedures(self, request: Any, context: grpc.ServicerContext) -> Any:
        from positioning.planning.procedure import list_procedures

        return pb2.ListProceduresResponse(procedures=[convert.procedure_info(p) for p in list_procedures()])

    @_unary
    def GetFluoroPlan(self, request: Any, context: grpc.ServicerContext) -> Any:
        from positioning.planning.procedure import load_procedure

        session = self.hub.active_session(_session_id(request))
        if not request.procedure:
            raise _AbortError(
                grpc.StatusCode.INVALID_ARGUMENT, "procedure is required (ListProcedures)", "procedure"
            )
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", request.procedure):
            raise _AbortError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"procedure must be a procedure's name (ListProcedures), got {request.procedure!r}",
                "procedure",
            )
        try:
            procedure = load_procedure(request.procedure)
        except ProtocolError as e:
            raise _AbortError(grpc.StatusCode.INVALID_ARGUMENT, str(e), "procedure") from e
        if request.expected_position and request.expected_position not in PatientPosition.__members__:
            raise _AbortError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "expected_position must be a DICOM patient position "
                f"({', '.join(PatientPosition.__members__)}), got {request.expected_position!r}",
                "expected_position",
            )
        self._require_camera()
        plan = session.fluoro_plan(procedure, expected_position=request.expected_position or None)
        return convert.fluoro_plan_message(plan)

    @_unary
    def GetOverlay(self, request: Any, context: grpc.ServicerContext) -> Any:
        from positioning.perception.overlay import display_image, jpeg_bytes, png_bytes
        from positioning.planning.overlay import draw_plan

        session = self.hub.active_session(_session_id(request))
        self._require_camera()
        estimate = self.hub.latest_estimate(session.id)
        if estimate is None:
            raise NothingToConfirmError("no frame has been perceived yet in this session")
        frame = estimate.frame
        plan = estimate.preview or session.latest_preview or session.plan()
        image = draw_plan(
            display_image(frame, depth_only=request.depth_only), plan, session.calibration, frame.intrinsics
        )
        encoded = {"jpeg": jpeg_bytes(image)} if request.jpeg else {"png": png_bytes(image)}
        return pb2.Overlay(
            **encoded,
            frame_number=int(frame.frame_number),
            width_px=int(image.shape[1]),
            height_px=int(image.shape[0]),
            frame_received_unix_ms=convert.unix_ms_of_monotonic_ns(frame.received_ns),
        )

    @_unary
    def ReportTablePosition(self, request: Any, context: grpc.ServicerContext) -> Any:
        session = self.hub.active_session(_session_id(request))
        session.report_table_position(request.table_position_mm)
        return convert.session_info(session)

    @_unary
    def ConfirmPlan(self, request: Any, context: grpc.ServicerContext) -> Any:
        session_id = _session_id(request)
        scan_range = _range(request)
        decision = self.hub.confirm(
            session_id, self._who(context, request.operator), scan_range_mm=scan_range, note=request.note
        )
        return convert.confirmed_message(session_id, decision)

    @_streaming
    def WatchEvents(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        session = self.hub.session(_session_id(request))
        if request.from_index < 0:
            raise _AbortError(grpc.StatusCode.INVALID_ARGUMENT, "from_index must be >= 0", "from_index")
        index = request.from_index
        while context.is_active():
            self._raise_if_shutting_down()
            for event in session.wait_events(index, WAIT_S):
                yield convert.event_message(session.id, event)
                index = event.index + 1
            if session.closed and not session.events_since(index):
                self._raise_if_shutting_down()  # ended by the shutdown, not by a client
                return

    @_streaming
    def WatchConfirmedPlans(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        index = max(self.hub.confirmed_count - 1, 0)
        while context.is_active():
            self._raise_if_shutting_down()
            for session_id, decision in self.hub.confirmed_since(index, WAIT_S):
                yield convert.confirmed_message(session_id, decision)
                index += 1

    @_unary
    def GetDeviceStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.device_status_message(self.hub.device_status())
