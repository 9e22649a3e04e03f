"""Replaying a recording through the service's own path, once, as fast as it reads.

:func:`run_session` plays a :class:`~positioning.camera.source.FrameSource` (a recording, or the simulated
room once through) frame by frame through a :class:`~positioning.service.session.Session`: perception with
tracking on every frame, then the plan of the last frame. ``positioning perceive``, ``positioning plan``
and ``positioning evaluate`` all take this path, so a recording is judged as the service would see it.

Convention: scanner frame (IEC 61217), mm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from positioning.errors import PositioningError

__all__ = ["SessionRun", "run_session"]


@dataclasses.dataclass
class SessionRun:
    """What :func:`run_session` gave: an estimate per frame, the plan of the last one, the calibration."""

    estimates: list[Any]  # Estimate
    plan: Any | None  # Plan
    calibration: Any  # Calibration
    label: str
    calibration_path: Path | None = None  # the file it came from (said in reports)

    @property
    def states(self) -> list[Any]:
        return [e.state for e in self.estimates]

    @property
    def last_frame(self) -> Any:
        return self.estimates[-1].frame


def run_session(
    source: str | Path,
    request: Any,  # SessionRequest
    *,
    calibration: str | Path | None = None,
    max_frames: int | None = None,
    landmarks: str = "fused",
    room: str | None = None,
    plan_settings: Any | None = None,
) -> SessionRun:
    """Play ``source`` (a recording, or the simulated room once through) frame by frame through a
    :class:`~positioning.service.session.Session`, the service's own path: perception with tracking on
    every frame, then (with a protocol in ``request``) the plan of the last frame.

    The protocol is checked first, then the recording, then its calibration, so each fails with its own
    error.
    """
    from positioning.camera.source import open_source
    from positioning.perception.pipeline import site_settings
    from positioning.planning.protocol import load_protocol
    from positioning.service.session import Session

    if request.protocol is not None:
        load_protocol(request.protocol, search_dirs=request.protocol_dirs)
    from positioning.planning.plan import room_plan_settings

    settings = site_settings(landmarks, room)
    plan_settings = plan_settings if plan_settings is not None else room_plan_settings(room)
    with open_source(source, calibration=calibration, real_time=False, loop=False) as opened:
        with Session(
            request,
            opened.calibration,
            perceiver_settings=settings,
            plan_settings=plan_settings,
            preview_interval_s=None,
        ) as session:
            estimates = [session.process(frame) for frame in opened.source.frames(max_frames)]
            if not estimates:
                raise PositioningError(f"{opened.source.label} contains no frames")
            plan = session.plan() if request.protocol is not None else None
    return SessionRun(estimates, plan, opened.calibration, opened.source.label, opened.calibration_path)
