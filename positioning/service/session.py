"""One patient's session: perception with its tracker, the plan preview, the confirmed plan and its events.

A :class:`Session` is plain Python (no grpc): the command line and the gRPC servicer both drive one. Frames
go in (:meth:`Session.process`); out come an :class:`Estimate` per frame (the patient state and, at most
every ``preview_interval_s``, a plan preview), the full plan on request (:meth:`Session.plan`), the
technologist's confirmation (:meth:`Session.confirm`, which locks the reference surface) and a log of
:class:`SessionEvent` s that is only ever appended to, so a reader that comes back late misses nothing
(:meth:`Session.events_since`, :meth:`Session.wait_events`).

Events (``kind``; each names what happened in the technologist's words):

=====================  ===================================================================================
``PATIENT_MOVED``      after confirmation, the body moved on the table beyond the plan's threshold (in
                       three consecutive plans: one frame's jitter is not a move)
``PATIENT_MOVING``     the patient is moving now (perception's motion flag turned on)
``SECOND_PERSON``      a second person came into view
``PLAN_INVALID``       after confirmation, the plan of the current frame has an error it did not have
``CAMERA_LOST``        no frame from the camera (:meth:`Session.camera_lost`)
``CAMERA_BACK``        frames again after a loss
=====================  ===================================================================================

An event is raised when its condition starts, not on every frame while it lasts.

Convention: lengths in mm in the scanner frame; ``time_ms`` of an event is the frame's timestamp (or, for
the camera, the monotonic clock in ms); ``confirmed_at`` is UTC.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import logging
import math
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning.errors import PositioningError
from positioning.frames import Calibration, RGBDFrame

_log = logging.getLogger(__name__)

__all__ = [
    "EVENT_KINDS",
    "MIN_CONFIRM_FRAMES",
    "MOVED_FRAMES",
    "SessionRequest",
    "Estimate",
    "SessionEvent",
    "ConfirmedPlan",
    "NothingToConfirmError",
    "Session",
]

EVENT_KINDS: tuple[str, ...] = (
    "PATIENT_MOVED",
    "PATIENT_MOVING",
    "SECOND_PERSON",
    "PLAN_INVALID",
    "CAMERA_LOST",
    "CAMERA_BACK",
)


#: Frames a session must have perceived before its plan can be confirmed: the tracker's smoothed
#: landmarks settle over the first frames, and a reference taken before that reads as a move later
#: (seen: 10.2 mm along the table on a still patient confirmed on its first plan).
MIN_CONFIRM_FRAMES = 5
#: Consecutive plans that must show PATIENT_MOVED before it is an event.
MOVED_FRAMES = 3
#: Checks that are events of their own, so not repeated as ``PLAN_INVALID``.
_OWN_EVENTS = frozenset({"PATIENT_MOVED", "PATIENT_MOVING", "SECOND_PERSON"})


class NothingToConfirmError(PositioningError):
    """A plan cannot be confirmed: no frame yet, no patient, or the plan has an error."""

    code = "NOTHING_TO_CONFIRM"


#: The calibration check at a session's start takes the median of this many frames that measured the
#: table's plane, trying over at most :data:`CALIBRATION_CHECK_ATTEMPTS` frames before it says it could not.
CALIBRATION_CHECK_FRAMES = 3
CALIBRATION_CHECK_ATTEMPTS = 30
#: Its tolerance: with a patient on the table only the mattress beside the body is seen, dented by it, and
#: its plane holds to about a degree (the daily check on the empty table holds 0.5 deg): a knocked camera
#: is caught at session start, a slow drift by the daily check.
SESSION_CHECK_TOLERANCE_DEG = 1.5


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionRequest:
    """What the technologist enters when a session starts.

    Attributes:
        protocol: the scan protocol's name or file (None: perception only, no plan).
        expected_position: the DICOM position selected at the console (``"HFS"``; None: the protocol's).
        patient_height_mm, patient_weight_kg: optional; recorded with the session (planning does not use
            them yet).
        table_position_mm: the console's longitudinal table reading, if known.
        operator: who started the session.
        protocol_dirs: extra folders searched for protocols.
    """

    protocol: str | None = None
    expected_position: str | None = None
    patient_height_mm: float | None = None
    patient_weight_kg: float | None = None
    table_position_mm: float | None = None
    operator: str = ""
    protocol_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        from positioning.conventions import PatientPosition

        for name in ("patient_height_mm", "patient_weight_kg", "table_position_mm"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.patient_height_mm is not None and not 300.0 <= self.patient_height_mm <= 2500.0:
            raise ValueError(f"patient_height_mm must be 300..2500 mm, got {self.patient_height_mm}")
        if self.patient_weight_kg is not None and not 0.5 <= self.patient_weight_kg <= 400.0:
            raise ValueError(f"patient_weight_kg must be 0.5..400 kg, got {self.patient_weight_kg}")
        if self.expected_position is not None:
            try:
                PatientPosition(self.expected_position)
            except ValueError:
                known = ", ".join(p.value for p in PatientPosition)
                raise ValueError(
                    f"expected_position must be a DICOM position ({known}), got {self.expected_position!r}"
                ) from None


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What one frame gave.

    Attributes:
        state: the patient as perceived (tracked).
        preview: the plan of this frame, when a preview was due (None otherwise, and without a protocol).
        frame: the frame itself (for overlays).
        processing_ms: perception and preview time of this frame.
        latency_ms: from the frame's arrival in this process to this estimate (NaN when the frame does
            not say when it arrived).
    """

    state: Any  # PatientState
    preview: Any | None  # Plan
    frame: RGBDFrame
    processing_ms: float
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class SessionEvent:
    """Something the technologist must know, in order (``index`` counts from 0 in the session).

    Attributes:
        index: position in the session's event log.
        kind: one of :data:`EVENT_KINDS`.
        message: one sentence for the technologist.
        time_ms: the frame's timestamp (camera events: the monotonic clock, ms).
        frame_number: the frame it was seen in (-1 for camera events).
        details: measured values (``displacement_mm`` for ``PATIENT_MOVED``, the check codes for
            ``PLAN_INVALID``).
    """

    index: int
    kind: str
    message: str
    time_ms: float
    frame_number: int = -1
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ConfirmedPlan:
    """The technologist's decision on a plan.

    Attributes:
        plan: the plan as confirmed (its surface is the reference for ``PATIENT_MOVED``).
        operator: who confirmed.
        confirmed_at: when (UTC).
        scan_range_mm: the range the technologist set instead of the suggested one, if edited.
        note: free text from the technologist.
    """

    plan: Any  # Plan
    operator: str
    confirmed_at: datetime.datetime
    scan_range_mm: tuple[float, float] | None = None
    note: str = ""


class Session:
    """One patient's session on one camera.

    Args:
        request: what the technologist entered.
        calibration: the camera-to-scanner calibration the frames are read with.
        perceiver: the perception pipeline (default: a new one with ``perceiver_settings``); the session
            owns its tracker and resets it at the start.
        perceiver_settings: settings for a new perceiver.
        plan_settings: planning settings (table limits, checks, model files).
        preview_interval_s: the plan previews' cadence: one is due every this many seconds on a fixed
            grid (a late frame takes its slot, the next stays on the grid), so two can come closer than
            this (None: no previews; :meth:`plan` still plans on request). A steady frame's preview
            (``PatientState.steady_since_ms``) is the latest one planned from a perception of the same
            still scene.
        session_id: the session's identity (default: a new UUID).
        concurrent_preview: a live stream's speed-up: previews are planned on a worker thread while the
            camera's thread goes on to the next frame; an estimate carries the preview finished since the
            one before, or a steady frame's repeated one when due (None otherwise), and motion since
            confirmation is judged on each preview as it finishes. Off (every preview planned on its own
            frame, before the estimate returns) for recordings and evaluation.
        calibration_baseline_deg: the room file's table-plane baseline ``(tilt, roll)``: the session checks
            the calibration on its first frames with a table (None: no check, as for a calibration not made
            by `positioning calibrate`).
        calibration_spread: the room file's :class:`~positioning.calibration.check.PlaneSpread` (the check's
            tilt and roll uncertainty; None: judged as measured).

    Raises:
        ProtocolError: the protocol does not exist or is invalid (before any frame is read).
        ValueError: a request field out of range.
    """

    def __init__(
        self,
        request: SessionRequest,
        calibration: Calibration,
        *,
        perceiver: Any | None = None,
        perceiver_settings: Any | None = None,
        plan_settings: Any | None = None,
        preview_interval_s: float | None = 0.1,
        session_id: str | None = None,
        concurrent_preview: bool = False,
        calibration_baseline_deg: tuple[float, float] | None = None,
        calibration_spread: Any = None,
    ) -> None:
        from positioning.perception.pipeline import Perceiver
        from positioning.planning.plan import DEFAULT_PLAN_SETTINGS
        from positioning.planning.protocol import load_protocol

        self.id = session_id or uuid.uuid4().hex
        self.request = request
        self.calibration = calibration
        self.protocol = (
            None
            if request.protocol is None
            else load_protocol(request.protocol, search_dirs=request.protocol_dirs)
        )
        self.plan_settings = plan_settings or DEFAULT_PLAN_SETTINGS
        self.preview_interval_s = preview_interval_s
        self._owns_perceiver = perceiver is None
        self.perceiver = perceiver if perceiver is not None else Perceiver(settings=perceiver_settings)
        self.perceiver.reset()
        self.table_position_mm = request.table_position_mm
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.latest: Estimate | None = None
        self.latest_preview: Any | None = None
        self.confirmed: ConfirmedPlan | None = None
        self.frames_processed = 0
        #: the calibration check on the first frame with a table (None: not run yet, or not asked for)
        self.calibration_check: Any | None = None
        self._calibration_baseline = calibration_baseline_deg
        self._calibration_spread = calibration_spread
        self._calibration_frames: list[Any] = []
        self._calibration_attempts = 0
        self._calibration_unmeasured = False
        # when the next preview is due (monotonic s): on a fixed cadence, so that frames arriving every
        # 33 ms give 10 previews a second at a 0.1 s interval, not one every fourth frame (7.5 a second)
        self._next_preview_s: float | None = None
        self._preview_pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="preview")
            if concurrent_preview
            else None
        )
        self._preview_running: concurrent.futures.Future | None = None
        self._preview_fresh: Any | None = None  # finished on the worker, not yet on an estimate
        # the frame whose perception the latest preview was planned from, and the confirmation it was against
        self._preview_of: tuple[float, ConfirmedPlan | None] | None = None
        self._judged: Any | None = None  # the latest preview judged against the confirmation
        # the confirmation and the judging of previews against it (the preview worker and confirm); never
        # held while waiting for _lock
        self._watch_lock = threading.Lock()
        self._events: list[SessionEvent] = []
        self._cond = threading.Condition()
        # one frame, plan or confirmation at a time: the camera's thread and the clients' threads share it
        self._lock = threading.RLock()
        self._active: set[str] = set()  # conditions now on (events fire when they start)
        self._moved_run = 0  # consecutive plans since confirmation with PATIENT_MOVED
        self._camera_lost = False
        self._closed = False

    # -- frames ------------------------------------------------------------------------------------
    def process(self, frame: RGBDFrame) -> Estimate:
        """Perceive one frame; plan a preview when one is due (or after confirmation, to watch for
        motion); log the events that start on it."""
        with self._lock:
            return self._process(frame)

    def _process(self, frame: RGBDFrame) -> Estimate:
        if self._closed:
            raise PositioningError(f"session {self.id} has ended")
        t0 = time.perf_counter()
        if self._camera_lost:
            self._camera_lost = False
            self._append("CAMERA_BACK", "The camera delivers frames again.", time.monotonic() * 1000.0)
        state = self.perceiver.perceive(frame, self.calibration)
        if (
            self._calibration_baseline is not None
            and self.calibration_check is None
            and state.table is not None
        ):
            # a steady frame's table was measured in an earlier frame: it counts as an attempt, not a measure
            self._check_calibration(
                frame, state, measure=getattr(state, "repeats_frame_number", None) is None
            )
        preview = None
        now = time.monotonic()
        due = self.protocol is not None and (
            self.confirmed is not None
            or (
                self.preview_interval_s is not None
                and (self._next_preview_s is None or now >= self._next_preview_s)
            )
        )
        # a steady frame: the latest preview, planned from a perception of the same still scene, is its
        # plan; a newer perception (a refresh) is planned as well when the planner is free
        repeated = self._repeated_preview(state) if due else None
        with self._cond:
            of = self._preview_of
        newer = repeated is None or (of is not None and of[0] < state.perceived_timestamp_ms)
        planned = False
        if due and newer and self._preview_pool is None:
            preview = self._make_plan(state, confirmed=self.confirmed)
            planned = True
            with self._cond:
                self.latest_preview = preview
                self._preview_of = (state.perceived_timestamp_ms, self.confirmed)
        elif due and newer and (self._preview_running is None or self._preview_running.done()):
            self._preview_running = self._preview_pool.submit(self._preview_job, state, self.confirmed)
            planned = True
        if due and (planned or repeated is not None):
            self._preview_taken(now)
        if self._preview_pool is not None:
            with self._cond:
                preview, self._preview_fresh = self._preview_fresh, None
        if preview is None and due:
            preview = repeated
        processing_ms = (time.perf_counter() - t0) * 1000.0
        latency_ms = (time.monotonic_ns() - frame.received_ns) / 1e6 if frame.received_ns else float("nan")
        estimate = Estimate(
            state=state, preview=preview, frame=frame, processing_ms=processing_ms, latency_ms=latency_ms
        )
        with self._cond:
            self.latest = estimate
            self.frames_processed += 1
        self._watch_state(state)
        if self._preview_pool is None:
            with self._watch_lock:
                self._watch_preview(state, preview)
        return estimate

    def _preview_taken(self, now: float) -> None:
        """Schedule the next preview one interval after this one's slot (after ``now`` when late by more
        than an interval: a stalled camera does not owe previews)."""
        if self.preview_interval_s is None:
            return
        slot = self._next_preview_s
        if slot is None or now - slot >= self.preview_interval_s:
            slot = now
        self._next_preview_s = slot + self.preview_interval_s

    def _repeated_preview(self, state: Any) -> Any | None:
        """The latest preview when ``state`` is a live stream's steady frame and that preview was planned,
        against the same confirmation, from a perception of the same still stretch
        (``PatientState.steady_since_ms``: the scene has not changed beyond the sensor's noise since);
        else None."""
        since = getattr(state, "steady_since_ms", None)
        with self._cond:
            of = self._preview_of
            # within the stretch: not before its start, nor after this perception (time went backwards)
            if since is None or of is None or not since <= of[0] <= state.perceived_timestamp_ms:
                return None
            return self.latest_preview if of[1] is self.confirmed else None

    def _preview_job(self, state: Any, confirmed: ConfirmedPlan | None) -> None:
        """A preview on the worker thread (``concurrent_preview``), against the confirmation of its frame."""
        try:
            preview = self._make_plan(state, confirmed=confirmed)
        except Exception:  # a preview that fails must not stop the next ones
            _log.exception("plan preview failed on frame %s", state.frame_number)
            return
        with self._watch_lock:
            if self.confirmed is not confirmed:
                return  # planned against a confirmation that has since changed: neither shown nor judged
            with self._cond:
                if self._closed:
                    return
                self.latest_preview = preview
                self._preview_of = (state.perceived_timestamp_ms, confirmed)
                self._preview_fresh = preview
            try:
                self._watch_preview(state, preview)
            except Exception:
                _log.exception("watching the preview of frame %s failed", state.frame_number)

    def camera_lost(self, reason: str) -> None:
        """The camera delivers no frames (logged once per loss)."""
        if not self._camera_lost:
            self._camera_lost = True
            self._append("CAMERA_LOST", f"No frame from the camera: {reason}", time.monotonic() * 1000.0)

    @property
    def camera_ok(self) -> bool:
        return not self._camera_lost

    # -- planning ----------------------------------------------------------------------------------
    def _check_calibration(self, frame: RGBDFrame, state: Any, *, measure: bool = True) -> None:
        """The daily check's table form on the session's first frames with a table (the median of
        :data:`CALIBRATION_CHECK_FRAMES`): the table plane's tilt
        and roll against the room file's baseline (the patient on the table hides what yaw and lateral
        drift need; `positioning calibrate check` on the empty table measures those). A failure is an
        event, and an error on every plan of the session (confirmation refused)."""
        from positioning.calibration.check import angle_uncertainties, drift_from_table, table_points_mm

        self._calibration_attempts += 1
        if measure:
            pts = table_points_mm(frame, self.calibration, state.table)
            report = drift_from_table(state.table, pts, plane_only=True)
            if np.isfinite(report.tilt_deg) and np.isfinite(report.roll_deg):
                self._calibration_frames.append(report)
        if len(self._calibration_frames) < CALIBRATION_CHECK_FRAMES:
            if self._calibration_attempts >= CALIBRATION_CHECK_ATTEMPTS and not self._calibration_unmeasured:
                self._calibration_unmeasured = True
                self._append(
                    "CALIBRATION_UNCHECKED",
                    "The calibration could not be checked in the session's first "
                    f"{self._calibration_attempts} frames (too little of the table is seen flat): run "
                    "`positioning calibrate check` on the empty table.",
                    frame.timestamp_ms,
                    int(frame.frame_number),
                )
            return
        tilt0, roll0 = self._calibration_baseline or (0.0, 0.0)

        def median(name: str) -> float:
            values = np.array([getattr(r, name) for r in self._calibration_frames], float)
            return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")

        angles = np.array([(r.tilt_deg, r.roll_deg) for r in self._calibration_frames], float)
        report = dataclasses.replace(
            self._calibration_frames[-1],
            tilt_deg=median("tilt_deg") - tilt0,
            roll_deg=median("roll_deg") - roll0,
            tolerance_deg=SESSION_CHECK_TOLERANCE_DEG,
            frames=len(self._calibration_frames),
            **angle_uncertainties(angles, self._calibration_spread),
        )
        self.calibration_check = report
        if report.status == "inconclusive":
            self._append(
                "CALIBRATION_UNCHECKED",
                "The calibration check could not decide ("
                + "; ".join(report.doubts)
                + "): run `positioning calibrate check` on the empty table, with the board.",
                frame.timestamp_ms,
                int(frame.frame_number),
            )
        elif report.status == "fail":
            self._append(
                "CALIBRATION_DRIFT",
                "The table is not where the calibration puts it ("
                + "; ".join(report.failures)
                + "): the camera may have moved. Plans are refused until it is checked "
                "(`positioning calibrate check`) or recalibrated.",
                frame.timestamp_ms,
                int(frame.frame_number),
            )

    def _make_plan(
        self,
        state: Any,
        scan_range_mm: tuple[float, float] | None = None,
        *,
        confirmed: ConfirmedPlan | None,
    ) -> Any:
        """Plan ``state``, comparing the body with ``confirmed``'s (motion; None: no comparison)."""
        from positioning.planning.plan import make_plan

        assert self.protocol is not None
        plan = make_plan(
            state,
            self.protocol,
            settings=self.plan_settings,
            expected_position=self.request.expected_position,
            scan_range_mm=scan_range_mm,
            table_position_mm=self.table_position_mm,
            confirmed=None if confirmed is None else confirmed.plan,
        )
        drift = self._drift_checks()
        return dataclasses.replace(plan, checks=(*drift, *plan.checks)) if drift else plan

    def _drift_checks(self) -> tuple[Any, ...]:
        """A ``CALIBRATION_DRIFT`` error when the session-start calibration check failed (none else)."""
        check = self.calibration_check
        if check is None or check.status != "fail":
            return ()
        from positioning.planning.checks import Check, Severity

        return (
            Check(
                code="CALIBRATION_DRIFT",
                severity=Severity.ERROR,
                message="The camera's calibration does not hold (" + "; ".join(check.failures) + "): run "
                "`positioning calibrate check` or recalibrate before planning.",
                details=check.to_json(),
            ),
        )

    def _latest_state(self) -> Any:
        if self.protocol is None:
            raise NothingToConfirmError("this session has no protocol: start it with one to plan")
        if self.latest is None:
            raise NothingToConfirmError("no frame has been perceived yet in this session")
        return self.latest.state

    def plan(self, scan_range_mm: tuple[float, float] | None = None) -> Any:
        """The full plan on the latest frame (with ``scan_range_mm``: the technologist's range, checked).

        Raises:
            NothingToConfirmError: no frame has been processed, or the session has no protocol.
        """
        with self._lock:
            return self._make_plan(self._latest_state(), scan_range_mm, confirmed=self.confirmed)

    def fluoro_plan(self, procedure: Any, *, expected_position: str | None = None) -> Any:
        """A fluoroscopy set-up (:func:`~positioning.planning.fluoro.make_fluoro_plan`) on the latest frame.

        Raises:
            NothingToConfirmError: no frame has been processed yet.
        """
        from positioning.planning.fluoro import make_fluoro_plan

        with self._lock:
            if self.latest is None:
                raise NothingToConfirmError("no frame has been perceived yet in this session")
            state = self.latest.state
        plan = make_fluoro_plan(
            state, procedure, settings=self.plan_settings, expected_position=expected_position
        )
        drift = self._drift_checks()
        return dataclasses.replace(plan, checks=(*drift, *plan.checks)) if drift else plan

    def report_table_position(self, table_position_mm: float) -> None:
        """The console's longitudinal table reading (mm, increasing into the gantry)."""
        v = float(table_position_mm)
        if not math.isfinite(v):
            raise ValueError(f"table_position_mm must be a finite number, got {table_position_mm!r}")
        with self._lock:
            if self.table_position_mm is not None and abs(v - self.table_position_mm) > 1.0:
                self.perceiver.forget_table()  # the table moved: find it afresh in the next frame
            self.table_position_mm = v

    def confirm(
        self,
        operator: str,
        *,
        scan_range_mm: tuple[float, float] | None = None,
        note: str = "",
        now: datetime.datetime | None = None,
    ) -> ConfirmedPlan:
        """Confirm the plan of the latest frame; its surface becomes the reference for ``PATIENT_MOVED``.

        Args:
            operator: who confirms (recorded).
            scan_range_mm: the range as the technologist set it, if edited.
            note: free text.
            now: the time of the decision (default: now, UTC).

        Raises:
            NothingToConfirmError: no frame, no patient, or the plan has an error check (named).
        """
        if not operator.strip():
            raise ValueError("operator must name who confirms")
        with self._lock:
            return self._confirm(operator, scan_range_mm, note, now)

    def _confirm(
        self,
        operator: str,
        scan_range_mm: tuple[float, float] | None,
        note: str,
        now: datetime.datetime | None,
    ) -> ConfirmedPlan:
        # planned afresh, not against an earlier confirmation
        plan = self._make_plan(self._latest_state(), scan_range_mm, confirmed=None)
        if not plan.has_patient:
            raise NothingToConfirmError(f"no patient to confirm: {plan.status.value}")
        if self.frames_processed < MIN_CONFIRM_FRAMES:
            raise NothingToConfirmError(
                f"perception is still settling ({self.frames_processed} of {MIN_CONFIRM_FRAMES} frames): "
                "confirm in a moment"
            )
        errors = [c for c in plan.checks if str(c.severity) == "error"]
        if errors:
            raise NothingToConfirmError(
                "the plan has errors: " + "; ".join(f"{c.code}: {c.message}" for c in errors)
            )
        decision = ConfirmedPlan(
            plan=plan,
            operator=operator,
            confirmed_at=now or datetime.datetime.now(datetime.UTC),
            scan_range_mm=scan_range_mm,
            note=note,
        )
        with self._watch_lock:  # no preview against the previous confirmation is published or judged after
            self.confirmed = decision
            self._active.discard("PATIENT_MOVED")
            self._active.discard("PLAN_INVALID")
            self._moved_run = 0
            with self._cond:
                self._preview_fresh = None
        return decision

    # -- events ------------------------------------------------------------------------------------
    def _append(
        self, kind: str, message: str, time_ms: float, frame_number: int = -1, **details: Any
    ) -> None:
        with self._cond:
            self._events.append(
                SessionEvent(len(self._events), kind, message, float(time_ms), frame_number, details)
            )
            self._cond.notify_all()

    def _rising(self, kind: str, on: bool) -> bool:
        """Whether condition ``kind`` starts now (and remember it)."""
        if on and kind not in self._active:
            self._active.add(kind)
            return True
        if not on:
            self._active.discard(kind)
        return False

    def _watch_state(self, state: Any) -> None:
        """Events of the perceived frame: motion now, a second person."""
        t, n = state.timestamp_ms, state.frame_number
        if self._rising("PATIENT_MOVING", bool(getattr(state, "moving", False))):
            self._append("PATIENT_MOVING", "The patient is moving.", t, n, motion_mm=float(state.motion_mm))
        second = state.status.value == "SECOND_PERSON" or any(
            str(note.code) == "SECOND_PERSON" for note in getattr(state, "notes", ())
        )
        if self._rising("SECOND_PERSON", second):
            self._append("SECOND_PERSON", "A second person is in the camera's view.", t, n)

    def _watch_preview(self, state: Any, preview: Any | None) -> None:
        """Events of a preview after confirmation: the patient moved, the plan no longer valid."""
        t, n = state.timestamp_ms, state.frame_number
        if self.confirmed is None or preview is None or preview is self._judged:
            return  # a preview repeated on a steady frame is not a new plan: judged once
        self._judged = preview
        moved = next((c for c in preview.checks if str(c.code) == "PATIENT_MOVED"), None)
        # a move is an event once it holds over MOVED_FRAMES consecutive plans: one frame's landmark
        # jitter (seen: 11.7 mm along the table on a still patient, depth-only landmarks) is not a move
        self._moved_run = self._moved_run + 1 if moved is not None else 0
        if self._rising("PATIENT_MOVED", self._moved_run >= MOVED_FRAMES):
            assert moved is not None
            self._append("PATIENT_MOVED", moved.message, t, n, **dict(moved.details))
        # a confirmed plan had no error, so every error now is new
        new_errors = sorted(
            str(c.code)
            for c in preview.checks
            if str(c.severity) == "error" and str(c.code) not in _OWN_EVENTS
        )
        if self._rising("PLAN_INVALID", bool(new_errors)):
            self._append(
                "PLAN_INVALID",
                "The confirmed plan is no longer valid: " + ", ".join(new_errors) + ".",
                t,
                n,
                checks=new_errors,
            )

    @property
    def events(self) -> list[SessionEvent]:
        """Every event so far, in order (a copy)."""
        with self._cond:
            return list(self._events)

    def events_since(self, index: int) -> list[SessionEvent]:
        """The events from ``index`` on (a reader keeps the next index it wants)."""
        with self._cond:
            return self._events[max(index, 0) :]

    def wait_events(self, index: int, timeout_s: float | None = None) -> list[SessionEvent]:
        """Wait until an event at or after ``index`` exists (or the timeout passes, or the session ends);
        returns the events from ``index`` on (possibly none)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) > index or self._closed, timeout=timeout_s)
            return self._events[max(index, 0) :]

    # -- life --------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the session (releases the perceiver when the session made it); safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._lock:  # after the frame in progress (it may be handing a worker a preview or landmarks)
            if self._preview_pool is not None:
                self._preview_pool.shutdown(wait=True, cancel_futures=True)
        if self._owns_perceiver:
            self.perceiver.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
