"""Domain types to ``positioning.v1`` messages: the only place that knows both (no logic beyond copying)."""

from __future__ import annotations

import datetime
import json
import math
import time
from typing import Any

import numpy as np

from positioning.service.protos import load_stubs

__all__ = [
    "session_info",
    "patient_state",
    "plan_message",
    "estimate_message",
    "event_message",
    "confirmed_message",
    "device_status_message",
    "calibration_check_message",
    "timestamp",
]

pb2, _ = load_stubs()


def timestamp(t: datetime.datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(t.astimezone(datetime.UTC).replace(tzinfo=None))
    return ts


def _finite(v: Any) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def session_info(session: Any) -> Any:
    r = session.request
    msg = pb2.SessionInfo(
        session_id=session.id,
        protocol=session.protocol.name if session.protocol is not None else "",
        expected_position=r.expected_position or "",
        operator=r.operator,
        started_at=timestamp(session.started_at),
        active=not session.closed,
        frames_processed=session.frames_processed,
        confirmed=session.confirmed is not None,
    )
    for name, value in (
        ("patient_height_mm", r.patient_height_mm),
        ("patient_weight_kg", r.patient_weight_kg),
        ("table_position_mm", session.table_position_mm),
    ):
        if value is not None:
            setattr(msg, name, float(value))
    return msg


def _check(code: Any, severity: Any, message: str) -> Any:
    return pb2.Check(code=str(code), severity=str(severity), message=message)


def patient_state(state: Any) -> Any:
    msg = pb2.PatientState(
        status=state.status.value,
        message=state.message,
        patient_position="" if state.patient_position is None else str(state.patient_position),
        position_confidence=float(state.position_confidence),
        arms="" if state.arms is None else str(state.arms),
        arms_confidence=float(state.arms_confidence),
        moving=bool(state.moving),
        cover=state.cover or "",
        notes=[_check(n.code, n.severity, n.message) for n in state.notes],
    )
    if state.table is not None:
        msg.table_top_z_mm = float(state.table.top_z_mm)
    motion = _finite(state.motion_mm)
    if motion is not None:
        msg.motion_mm = motion
    for name, p in state.landmarks_mm.items():
        conf = float(state.landmark_confidence.get(name, 0.0))
        if conf > 0 and np.all(np.isfinite(p)):
            msg.landmarks.append(
                pb2.Landmark(
                    name=name,
                    position=pb2.PointMm(x_mm=float(p[0]), y_mm=float(p[1]), z_mm=float(p[2])),
                    confidence=conf,
                )
            )
    return msg


def plan_message(plan: Any) -> Any:
    doc = plan.to_json()
    msg = pb2.Plan(
        protocol=plan.protocol,
        status=plan.status.value,
        frame_number=int(plan.frame_number),
        patient_position="" if plan.patient_position is None else str(plan.patient_position),
        arms="" if plan.arms is None else str(plan.arms),
        checks=[_check(c.code, c.severity, c.message) for c in plan.checks],
        ok=plan.ok,
        plan_json=json.dumps(doc),
    )
    if plan.isocenter is not None:
        iso = plan.isocenter
        msg.isocenter.CopyFrom(pb2.PointMm(x_mm=iso.x_mm, y_mm=iso.y_center_mm, z_mm=iso.z_mm))
    if plan.table_offset is not None:
        t = plan.table_offset
        msg.table_offset.CopyFrom(
            pb2.TableOffset(
                vertical_mm=t.vertical_mm,
                longitudinal_mm=t.longitudinal_mm,
                lateral_patient_move_mm=t.lateral_patient_move_mm,
                vertical_residual_mm=t.vertical_residual_mm,
                lateral_patient_move_description=lateral_move_words(
                    t.lateral_patient_move_mm, plan.patient_position
                ),
            )
        )
    if plan.scan_range is not None:
        r = plan.scan_range
        rng = pb2.ScanRange(
            start_mm=r.start_mm,
            end_mm=r.end_mm,
            length_mm=r.length_mm,
            first_slice_mm=r.first_slice_mm,
            direction=str(r.direction),
        )
        table = doc.get("scan_range_table")
        if table:
            rng.first_slice_table_mm = table["first_slice_mm"]
            rng.last_slice_table_mm = table["last_slice_mm"]
        msg.scan_range.CopyFrom(rng)
    if plan.centering is not None:
        c = plan.centering
        msg.centering.CopyFrom(
            pb2.Centering(
                vertical_offset_mm=c.current_offset_mm,
                surface_dose_increase_percent=c.current_surface_dose.percent,
                noise_increase_percent=c.current_noise.percent,
            )
        )
    return msg


def unix_ms_of_monotonic_ns(received_ns: int) -> float:
    """A time on this machine's monotonic clock (ns) as ms since the Unix epoch on its wall clock (0.0 for
    an unknown time)."""
    if not received_ns:
        return 0.0
    return time.time() * 1000.0 - (time.monotonic_ns() - int(received_ns)) / 1e6


def lateral_move_words(dx_mm: float, position: Any) -> str:
    """A patient move along scanner x in words (``"none"`` within 1 mm)."""
    from positioning.planning.checks import describe_lateral

    if not math.isfinite(dx_mm) or abs(dx_mm) < 1.0:
        return "none"
    return describe_lateral(dx_mm, position)


def estimate_message(session_id: str, estimate: Any, *, preview: Any | None, camera_ok: bool) -> Any:
    """``preview``: the plan to send with the estimate (None: none)."""
    msg = pb2.Estimate(
        session_id=session_id,
        frame_number=int(estimate.frame.frame_number),
        frame_timestamp_ms=float(estimate.frame.timestamp_ms),
        latency_ms=_finite(estimate.latency_ms) or 0.0,
        state=patient_state(estimate.state),
        camera_ok=camera_ok,
        frame_received_monotonic_ns=int(estimate.frame.received_ns),
        frame_received_unix_ms=unix_ms_of_monotonic_ns(estimate.frame.received_ns),
    )
    repeats = getattr(estimate.state, "repeats_frame_number", None)
    if repeats is not None:
        msg.repeats_frame_number = int(repeats)
        msg.repeats_frame_timestamp_ms = float(estimate.state.repeats_timestamp_ms)
    if preview is not None:
        msg.preview.CopyFrom(plan_message(preview))
    return msg


def event_message(session_id: str, event: Any) -> Any:
    msg = pb2.Event(
        session_id=session_id,
        index=event.index,
        kind=event.kind,
        message=event.message,
        frame_number=event.frame_number,
        time_ms=event.time_ms,
    )
    if event.kind == "PATIENT_MOVED":
        for k, v in event.details.items():
            if isinstance(v, int | float) and math.isfinite(v):
                msg.displacement_mm[k] = float(v)
    return msg


def confirmed_message(session_id: str, decision: Any) -> Any:
    return pb2.ConfirmedPlan(
        session_id=session_id,
        plan=plan_message(decision.plan),
        operator=decision.operator,
        confirmed_at=timestamp(decision.confirmed_at),
        range_edited=decision.scan_range_mm is not None,
        note=decision.note,
    )


def device_status_message(status: Any) -> Any:
    return pb2.DeviceStatus(
        camera_model=status.camera_model,
        serial=status.serial,
        source=status.source,
        fps=status.fps,
        depth_fill_rate=status.depth_fill_rate,
        camera_ok=status.camera_ok,
        calibration_path=status.calibration_path,
        calibration_method=status.calibration_method,
        calibration_created=status.calibration_created,
        calibration_sha256=status.calibration_sha256,
        frames_delivered=status.frames_delivered,
        calibration_check=None
        if status.calibration_check is None
        else calibration_check_message(status.calibration_check),
    )


#: The daily check's figures carried as they are into ``CalibrationCheck`` (its ``summary`` is a method).
_CALIBRATION_CHECK_FIELDS: tuple[str, ...] = (
    "passed", "tilt_deg", "roll_deg", "yaw_deg", "lateral_mm", "failures", "status", "doubts",
    "tilt_uncertainty_deg", "roll_uncertainty_deg", "yaw_uncertainty_deg", "lateral_uncertainty_mm",
)  # fmt: skip


def calibration_check_message(check: Any) -> Any:
    """A session's calibration check (:class:`~positioning.calibration.check.DriftReport`) as its message."""
    return pb2.CalibrationCheck(
        **{name: getattr(check, name) for name in _CALIBRATION_CHECK_FIELDS}, summary=check.summary()
    )


def procedure_info(procedure: Any) -> Any:
    """A fluoroscopy :class:`~positioning.planning.procedure.Procedure` as its picker entry."""
    return pb2.ProcedureInfo(
        name=procedure.name,
        description=procedure.description,
        accepted_positions=[str(x) for x in procedure.expected_positions],
        body_region=procedure.body_region,
        superior_landmark=procedure.target.superior.landmark,
        inferior_landmark=procedure.target.inferior.landmark,
    )


def _field_message(field: Any) -> Any:
    return pb2.CollimatedField(
        beam=field.beam,
        width_mm=field.width_mm,
        height_mm=field.height_mm,
        area_saved_percent=field.area_saved_percent,
        magnification=field.magnification,
        covers_target=field.covers_target,
    )


def fluoro_plan_message(plan: Any) -> Any:
    """A :class:`~positioning.planning.fluoro.FluoroPlan` as its message."""
    msg = pb2.FluoroPlan(
        procedure=plan.procedure,
        status=plan.status.value,
        frame_number=int(plan.frame_number or 0),
        patient_position="" if plan.patient_position is None else str(plan.patient_position),
        arms="" if plan.arms is None else str(plan.arms),
        checks=[_check(c.code, c.severity, c.message) for c in plan.checks],
        ok=plan.ok,
        plan_json=json.dumps(plan.to_json()),
    )
    if plan.target is not None:
        c, z = plan.target.center_mm, plan.target.size_mm
        msg.target_center.CopyFrom(pb2.PointMm(x_mm=c[0], y_mm=c[1], z_mm=c[2]))
        msg.target_size.CopyFrom(pb2.SizeMm(x_mm=z[0], y_mm=z[1], z_mm=z[2]))
    if plan.table_offset is not None:
        t = plan.table_offset
        r = t.residual_mm
        msg.table_offset.CopyFrom(
            pb2.FluoroTableOffset(
                vertical_mm=t.vertical_mm,
                longitudinal_mm=t.longitudinal_mm,
                lateral_mm=t.lateral_mm,
                residual=pb2.PointMm(x_mm=r[0], y_mm=r[1], z_mm=r[2]),
            )
        )
    if "PA" in plan.fields:
        msg.field_pa.CopyFrom(_field_message(plan.fields["PA"]))
    if "lateral" in plan.fields:
        msg.field_lateral.CopyFrom(_field_message(plan.fields["lateral"]))
    return msg
