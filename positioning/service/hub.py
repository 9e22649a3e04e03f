"""One camera, shared by every session and client (no grpc here).

A :class:`CameraHub` reads its :class:`~positioning.camera.source.FrameSource` on its own thread. Every
frame goes through the active session (perception, plan preview, events: one frame path for the command
line and the service alike); the result is published as the *latest* estimate, which each watcher picks
up at its own pace (a slow client skips estimates, it never stalls the camera or the others). Events and
confirmed plans are logs that are only appended to, so no reader ever misses one.

Perception runs on the camera's thread, one frame at a time, always on the newest frame: a source played
at camera rate skips the frames whose time passed while the previous one was being perceived, as a live
camera does.

One session is active per camera (one patient on the table); ended sessions stay readable (their
events, their confirmed plan) until the server stops.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from positioning.camera.source import OpenedSource
from positioning.errors import PositioningError
from positioning.service.audit import file_sha256
from positioning.service.session import ConfirmedPlan, Estimate, Session, SessionRequest

__all__ = [
    "UnknownSessionError",
    "SessionActiveError",
    "SessionEndedError",
    "CameraLostError",
    "DeviceStatus",
    "CameraHub",
]


_log = logging.getLogger(__name__)


class UnknownSessionError(PositioningError):
    """No session with that id."""

    code = "UNKNOWN_SESSION"


class SessionActiveError(PositioningError):
    """A session is already active on this camera."""

    code = "SESSION_ACTIVE"


class SessionEndedError(PositioningError):
    """The session has ended."""

    code = "SESSION_ENDED"


class CameraLostError(PositioningError):
    """The camera delivers no frames."""

    code = "CAMERA_LOST"


@dataclasses.dataclass(frozen=True)
class DeviceStatus:
    """The camera as the hub sees it.

    Attributes:
        camera_model, serial: as the device (or recording) reports them.
        source: what the hub reads (``--source`` form).
        fps: frames delivered per second over the last few seconds.
        depth_fill_rate: share of valid depth pixels in the latest frame.
        camera_ok: frames are arriving.
        calibration_path, calibration_method, calibration_created, calibration_sha256: the calibration's
            identity.
        frames_delivered: frames read since the hub started.
        last_error: why the camera was last lost ("" if never).
        calibration_check: the calibration check run when the newest session started (its table form:
            :class:`~positioning.calibration.check.DriftReport`), None before one ran.
    """

    camera_model: str
    serial: str
    source: str
    fps: float
    depth_fill_rate: float
    camera_ok: bool
    calibration_path: str
    calibration_method: str
    calibration_created: str
    calibration_sha256: str
    frames_delivered: int
    last_error: str = ""
    calibration_check: Any = None


class CameraHub:
    """Reads one camera and drives its sessions.

    Args:
        opened: the frame source with its calibration (the hub closes it on :meth:`stop`).
        perceiver_settings: settings of the one perceiver the sessions share (None: defaults).
        plan_settings: planning settings for every session.
        preview_interval_s: shortest time between plan previews.
        on_session_started, on_confirmed, on_session_ended: called after each (the audit store).
        retry_s: pause after a failed read before trying again.
        concurrent_preview: plan previews on a worker thread (see :class:`Session`): a live camera's
            speed-up.
    """

    def __init__(
        self,
        opened: OpenedSource,
        *,
        perceiver_settings: Any | None = None,
        plan_settings: Any | None = None,
        preview_interval_s: float = 0.1,
        on_session_started: Callable[[Session], None] | None = None,
        on_confirmed: Callable[[Session, ConfirmedPlan], None] | None = None,
        on_session_ended: Callable[[Session], None] | None = None,
        retry_s: float = 0.2,
        concurrent_preview: bool = False,
    ) -> None:
        from positioning.perception.pipeline import Perceiver

        self.concurrent_preview = concurrent_preview
        self.opened = opened
        self.perceiver = Perceiver(settings=perceiver_settings)
        self.plan_settings = plan_settings
        self.preview_interval_s = preview_interval_s
        self._camera_listeners: list[Callable[[bool], None]] = []
        self._estimate_listeners: list[Callable[[Estimate], None]] = []
        self._on_started = on_session_started
        self._on_confirmed = on_confirmed
        self._on_ended = on_session_ended
        self._retry_s = retry_s
        self._sessions: dict[str, Session] = {}
        self._active: Session | None = None
        self._cond = threading.Condition()
        self._version = 0  # bumps with every estimate (and on session/camera changes, to wake watchers)
        self._latest: Estimate | None = None
        self._confirmed: list[tuple[str, ConfirmedPlan]] = []
        self._camera_ok = True
        self._last_error = ""
        self._frames = 0
        self._arrivals: collections.deque[float] = collections.deque(maxlen=90)
        self._fill = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._calibration_sha256 = file_sha256(opened.calibration_path)

    # -- the camera's thread ---------------------------------------------------------------------------
    def start(self) -> CameraHub:
        """Start reading the camera (once; a second call does nothing)."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def add_camera_listener(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` / ``listener(False)`` whenever the camera comes back / is lost (the
        server's health service)."""
        self._camera_listeners.append(listener)

    def add_estimate_listener(self, listener: Callable[[Estimate], None]) -> None:
        """Call ``listener(estimate)`` on the camera's thread for every estimate published (benchmarks;
        keep it quick: the camera waits for it)."""
        self._estimate_listeners.append(listener)

    def _set_camera(self, ok: bool, error: str = "") -> None:
        changed = ok != self._camera_ok
        self._camera_ok = ok
        if error:
            self._last_error = error
        if changed:
            session = self._active
            if session is not None and not ok:  # CAMERA_BACK: the session's next perceived frame
                session.camera_lost(error)
            with self._cond:
                self._version += 1
                self._cond.notify_all()
            for listener in self._camera_listeners:
                listener(ok)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception as e:  # the camera's thread must not die silently
                _log.exception("camera thread: %s", e)
                self._set_camera(False, f"internal error reading the camera: {e!r}")
                self._stopping.wait(self._retry_s)

    def _step(self) -> None:
        """Read one frame; perceive it in the active session and publish the estimate."""
        source = self.opened.source
        try:
            frame = source.read()
        except StopIteration:
            self._set_camera(False, f"{source.label} has ended")
            self._stopping.wait(self._retry_s)
            return
        except PositioningError as e:
            self._set_camera(False, str(e))
            self._stopping.wait(self._retry_s)
            return
        now = time.monotonic()
        self._frames += 1
        self._arrivals.append(now)
        self._fill = float(frame.valid_fraction)
        if not self._camera_ok:
            self._set_camera(True)
        session = self._active
        if session is None or session.closed:
            return
        try:
            estimate = session.process(frame)
        except PositioningError:
            return  # the session ended while this frame was being perceived
        except Exception:  # a frame perception fails on must not stop the camera
            _log.exception("perception failed on frame %s", frame.frame_number)
            return
        with self._cond:
            if self._active is not session:  # a late frame of a session that has just ended
                return
            self._latest = estimate
            self._version += 1
            self._cond.notify_all()
        for listener in self._estimate_listeners:
            try:
                listener(estimate)
            except Exception:  # a listener's fault is not the camera's
                _log.exception("estimate listener %r failed", listener)

    def stop(self) -> None:
        """End every session, stop reading and release the camera; safe to call twice."""
        self._stopping.set()
        for session in list(self._sessions.values()):
            if not session.closed:
                self.end_session(session.id)
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.opened.close()
        self.perceiver.close()
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    # -- sessions --------------------------------------------------------------------------------------
    def start_session(self, request: SessionRequest) -> Session:
        """Start the camera's session.

        Raises:
            SessionActiveError: a session is active (end it first).
            ProtocolError, ValueError: the request is wrong.
        """
        from positioning.planning.protocol import load_protocol

        if request.protocol is not None:  # a wrong request says so before a busy camera does
            load_protocol(request.protocol, search_dirs=request.protocol_dirs)
        with self._cond:
            if self._active is not None and not self._active.closed:
                raise SessionActiveError(
                    f"session {self._active.id} is active on this camera; end it before starting another"
                )
            session = Session(
                request,
                self.opened.calibration,
                perceiver=self.perceiver,
                plan_settings=self.plan_settings,
                preview_interval_s=self.preview_interval_s,
                concurrent_preview=self.concurrent_preview,
                calibration_baseline_deg=self._calibration_baseline,
                calibration_spread=self._calibration_spread,
            )
            self._sessions[session.id] = session
            self._active = session
            self._latest = None
            self._version += 1
            self._cond.notify_all()
        if not self._camera_ok:
            session.camera_lost(self._last_error or "no frame from the camera")
        if self._on_started is not None:
            self._on_started(session)
        return session

    def session(self, session_id: str) -> Session:
        """The session ``session_id`` (active or ended).

        Raises:
            UnknownSessionError: no such session.
        """
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSessionError(f"no session {session_id!r} on this server") from None

    def active_session(self, session_id: str) -> Session:
        """The session, which must still be active.

        Raises:
            UnknownSessionError, SessionEndedError.
        """
        session = self.session(session_id)
        if session.closed:
            raise SessionEndedError(f"session {session_id} has ended")
        return session

    def end_session(self, session_id: str) -> Session:
        session = self.session(session_id)
        if not session.closed:
            session.close()
            with self._cond:
                if self._active is session:
                    self._active = None
                self._version += 1
                self._cond.notify_all()
            if self._on_ended is not None:
                self._on_ended(session)
        return session

    def confirm(self, session_id: str, operator: str, **kwargs: Any) -> ConfirmedPlan:
        """Confirm the session's plan (:meth:`Session.confirm`) and publish it to the console.

        Raises:
            UnknownSessionError, SessionEndedError, CameraLostError, NothingToConfirmError.
        """
        session = self.active_session(session_id)
        if not self._camera_ok:
            raise CameraLostError(f"the camera is lost ({self._last_error}): nothing current to confirm")
        decision = session.confirm(operator, **kwargs)
        with self._cond:
            self._confirmed.append((session.id, decision))
            self._version += 1
            self._cond.notify_all()
        if self._on_confirmed is not None:
            self._on_confirmed(session, decision)
        return decision

    # -- watching --------------------------------------------------------------------------------------
    @property
    def camera_ok(self) -> bool:
        return self._camera_ok

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_estimate(
        self, session_id: str, after_version: int, timeout_s: float
    ) -> tuple[int, Estimate | None]:
        """The newest estimate of the session once the hub's version passes ``after_version`` (or the
        timeout passes); returns ``(version, estimate or None)``."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > after_version or self.stopping, timeout=timeout_s)
            latest = self._latest if self._active is not None and self._active.id == session_id else None
            return self._version, latest

    def latest_estimate(self, session_id: str) -> Estimate | None:
        with self._cond:
            if self._active is not None and self._active.id == session_id:
                return self._latest
            return None

    def confirmed_since(self, index: int, timeout_s: float) -> list[tuple[str, ConfirmedPlan]]:
        """Confirmed plans from ``index`` on (waiting up to ``timeout_s`` for one)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._confirmed) > index or self.stopping, timeout=timeout_s)
            return self._confirmed[max(index, 0) :]

    @property
    def confirmed_count(self) -> int:
        with self._cond:
            return len(self._confirmed)

    @property
    def _calibration_baseline(self) -> tuple[float, float] | None:
        """The room file's table-plane baseline (tilt, roll); None for a calibration without one (not made
        by `positioning calibrate`: the sessions then run no calibration check)."""
        from positioning.calibration.workflow import room_reference

        return room_reference(self.opened.calibration_path)[3]

    @property
    def _calibration_spread(self) -> Any:
        """The room file's table-plane scatter (:class:`~positioning.calibration.check.PlaneSpread`; None
        without one)."""
        from positioning.calibration.workflow import room_plane_spread

        return room_plane_spread(self.opened.calibration_path)

    def _last_calibration_check(self) -> Any:
        """The calibration check of the newest session that ran one (None: none yet)."""
        for session in reversed(list(self._sessions.values())):
            if session.calibration_check is not None:
                return session.calibration_check
        return None

    def device_status(self) -> DeviceStatus:
        source, cal = self.opened.source, self.opened.calibration
        arrivals = list(self._arrivals)
        recent = [t for t in arrivals if t > time.monotonic() - 3.0]
        fps = (
            (len(recent) - 1) / (recent[-1] - recent[0])
            if len(recent) > 1 and recent[-1] > recent[0]
            else 0.0
        )
        return DeviceStatus(
            camera_model=source.device_name,
            serial=source.serial,
            source=str(self.opened.spec),
            fps=fps,
            depth_fill_rate=self._fill,
            camera_ok=self._camera_ok,
            calibration_path=str(self.opened.calibration_path),
            calibration_method=cal.method,
            calibration_created=cal.created,
            calibration_sha256=self._calibration_sha256,
            frames_delivered=self._frames,
            last_error=self._last_error,
            calibration_check=self._last_calibration_check(),
        )
