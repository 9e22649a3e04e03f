"""Frame sources: the one interface every consumer reads frames through, and how ``--source`` picks one.

Three sources yield :class:`~positioning.frames.RGBDFrame` through the same pyrealsense2 reader
(:class:`~positioning.camera.realsense.RealSenseSource`):

* ``realsense`` (or ``realsense:SERIAL``): a live camera;
* a path to a recording (``.db3`` / ``.bag``): played as fast as it is read, or at its recorded rate, and
  optionally looped;
* ``sim`` (the default; ``sim:SCENARIO`` or ``sim:SCENARIO@SEED``): the simulated room, a scenario recorded
  once into a cache and played back at camera rate, looped, with scripted events
  (:mod:`positioning.sim.room_source`).

The perception pipeline, the command line and the service all read a :class:`FrameSource`; nothing else
opens a camera or a file.

Convention: ``timestamp_ms`` of the frames a source yields increases strictly, also across the loops of a
looped recording (each loop continues the clock), so that trackers and motion filters see time go forward.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, Self, runtime_checkable

from positioning.errors import CalibrationError, PositioningError
from positioning.frames import Calibration, Intrinsics, RGBDFrame

__all__ = [
    "DEFAULT_SOURCE",
    "FrameSource",
    "FrameReader",
    "SourceSpec",
    "OpenedSource",
    "ContinuousClock",
    "parse_source",
    "open_source",
]

#: ``--source`` when none is given: the simulated room.
DEFAULT_SOURCE = "sim"


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields RGB-D frames: a context manager whose :meth:`read` returns the next frame.

    Attributes:
        label: names the source in messages (``"recording scene.db3"``).
        device_name: the camera's name as it reports it.
        serial: the camera's serial number ("" when unknown).
        depth_intrinsics: the depth stream's intrinsics.
    """

    label: str
    device_name: str
    serial: str
    depth_intrinsics: Intrinsics

    def read(self) -> RGBDFrame:
        """The next frame; raises ``StopIteration`` at the end of a finite source."""
        ...

    def frames(self, max_frames: int | None = None) -> Iterator[RGBDFrame]:
        """Frames until the source ends or ``max_frames`` have been yielded."""
        ...

    def close(self) -> None:
        """Release the camera or file; safe to call twice."""
        ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(self, *exc: object) -> None: ...


class FrameReader:
    """What every frame source shares once it has :meth:`read` and :meth:`close`: iteration, ``frames``,
    and the context manager."""

    def read(self) -> RGBDFrame:  # pragma: no cover - subclasses read
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - subclasses close
        raise NotImplementedError

    def frames(self, max_frames: int | None = None) -> Iterator[RGBDFrame]:
        """Yield frames until the source ends or ``max_frames`` have been yielded.

        Args:
            max_frames: stop after this many frames; None reads to the end (forever for a live camera or a
                looped source).
        """
        count = 0
        while max_frames is None or count < max_frames:
            try:
                frame = self.read()
            except StopIteration:
                return
            yield frame
            count += 1

    def __iter__(self) -> Iterator[RGBDFrame]:
        return self

    def __next__(self) -> RGBDFrame:
        return self.read()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContinuousClock:
    """Makes frame timestamps increase across loops and clip changes: a timestamp that does not move
    forward continues from the previous one by one frame period (``period_ms``, or the last step seen).

    Example:
        >>> clock = ContinuousClock(period_ms=33.3)
        >>> [round(clock(t), 1) for t in (0.0, 33.3, 66.6, 0.0, 33.3)]
        [0.0, 33.3, 66.6, 99.9, 133.2]
    """

    def __init__(self, period_ms: float = 1000.0 / 30.0) -> None:
        self.period_ms = float(period_ms)
        self._offset_ms = 0.0
        self._last_raw: float | None = None
        self._last_out: float | None = None

    def __call__(self, timestamp_ms: float) -> float:
        if self._last_raw is not None and self._last_out is not None:
            step = timestamp_ms - self._last_raw
            if step > 0:
                self.period_ms = step if step < 10 * self.period_ms else self.period_ms
            else:  # the recording started again, or another clip began
                self._offset_ms = self._last_out + self.period_ms - timestamp_ms
        out = timestamp_ms + self._offset_ms
        self._last_raw, self._last_out = timestamp_ms, out
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A parsed ``--source``.

    Attributes:
        kind: ``"sim"``, ``"realsense"`` or ``"recording"``.
        path: the recording (kind ``recording``).
        serial: the camera's serial number, None for the first one found (kind ``realsense``).
        scenario: the simulated room's scenario, None for its default (kind ``sim``).
        seed: the simulated room's session seed.
    """

    kind: str
    path: Path | None = None
    serial: str | None = None
    scenario: str | None = None
    seed: int = 0

    def __str__(self) -> str:
        if self.kind == "recording":
            return str(self.path)
        if self.kind == "realsense":
            return "realsense" + (f":{self.serial}" if self.serial else "")
        return "sim" + (f":{self.scenario}@{self.seed}" if self.scenario else "")


def parse_source(text: str | Path | None) -> SourceSpec:
    """Parse ``--source``: ``sim[:SCENARIO[@SEED]]``, ``realsense[:SERIAL]`` or a recording's path.

    Raises:
        PositioningError: an empty source, or a seed that is not an integer.
    """
    raw = DEFAULT_SOURCE if text is None else str(text).strip()
    if not raw:
        raise PositioningError("--source is empty: give sim, realsense[:SERIAL] or a recording's path")
    head, _, rest = raw.partition(":")
    if head == "sim":
        name, _, seed = rest.partition("@")
        try:
            return SourceSpec(kind="sim", scenario=name or None, seed=int(seed) if seed else 0)
        except ValueError:
            raise PositioningError(f"--source {raw}: the seed after '@' must be an integer") from None
    if head == "realsense":
        return SourceSpec(kind="realsense", serial=rest or None)
    return SourceSpec(kind="recording", path=Path(raw))


@dataclasses.dataclass
class OpenedSource:
    """An open frame source with the camera-to-scanner calibration its frames are read with.

    Attributes:
        source: the frames.
        calibration: where the camera is in the scanner frame.
        calibration_path: the file the calibration came from.
        spec: what was asked for.
    """

    source: FrameSource
    calibration: Calibration
    calibration_path: Path
    spec: SourceSpec

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> OpenedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The site's room file (`positioning calibrate`'s output), used by a camera or a recording without a
#: ``--calibration`` and without a calibration sidecar of its own.
SITE_CALIBRATION_ENV = "POSITIONING_CALIBRATION"


def site_calibration_path() -> Path | None:
    """The site's room file named by ``$POSITIONING_CALIBRATION`` (None when unset)."""
    value = os.environ.get(SITE_CALIBRATION_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _calibration(
    path: Path | None, *, default: Path | None, what: str, site: bool = True
) -> tuple[Calibration, Path]:
    """``--calibration``, else the source's own (a recording's sidecar), else the site's room file."""
    chosen = path if path is not None else default
    site_path = site_calibration_path() if site and path is None else None
    if site_path is not None and (chosen is None or not chosen.is_file()):
        if not site_path.is_file():
            raise CalibrationError(
                f"no calibration for {what}: ${SITE_CALIBRATION_ENV} names {site_path}, which does not exist"
            )
        chosen = site_path
    if chosen is None:
        raise CalibrationError(
            f"no calibration for {what}: pass --calibration FILE (the camera-to-scanner transform) or set "
            f"${SITE_CALIBRATION_ENV} to the site's room file"
        )
    if not chosen.is_file():
        hint = (
            ""
            if path is not None
            else " (pass --calibration FILE or set $POSITIONING_CALIBRATION to the site's room file; a "
            "simulator recording has NAME.calibration.yaml beside it)"
        )
        raise CalibrationError(f"no calibration: {chosen} does not exist{hint}")
    return Calibration.load(chosen), chosen


def open_source(
    spec: SourceSpec | str | Path | None = None,
    *,
    calibration: str | Path | None = None,
    real_time: bool | None = None,
    loop: bool | None = None,
    frames: int | None = None,
    events: Sequence[str] = (),
) -> OpenedSource:
    """Open the frame source ``spec`` names, with its calibration.

    Args:
        spec: a :class:`SourceSpec` or ``--source`` text (default: the simulated room).
        calibration: the camera-to-scanner calibration file; default: the recording's
            ``NAME.calibration.yaml`` sidecar, else the site's room file (``$POSITIONING_CALIBRATION``;
            the only default for a live camera). The simulated room uses its own unless given one.
        real_time: play a recording at its recorded rate (default: as fast as it is read; the simulated
            room always plays at camera rate unless this is False).
        loop: start a recording again at its end (default: no; the simulated room always loops unless this
            is False).
        frames: frames per clip of the simulated room (default: its own).
        events: the simulated room's script, ``SECONDS:KIND`` each (``"8:moved"``; see
            :mod:`positioning.sim.room_source`); refused for other sources.

    Raises:
        RecordingNotFoundError, CorruptRecordingError, MissingStreamError: the recording or camera cannot
            be read (the recording is checked before its calibration).
        CalibrationError: no calibration file.
    """
    from positioning.camera.realsense import RealSenseSource
    from positioning.sim.session import calibration_path_for

    if not isinstance(spec, SourceSpec):
        spec = parse_source(spec)
    cal_arg = Path(calibration) if calibration is not None else None
    if events and spec.kind != "sim":
        raise PositioningError(f"room events ({', '.join(events)}) are scripted in the simulated room only")
    if spec.kind == "recording":
        assert spec.path is not None
        source: FrameSource = RealSenseSource.from_file(
            spec.path, repeat=bool(loop), real_time=bool(real_time)
        )
        try:
            cal, cal_path = _calibration(
                cal_arg, default=calibration_path_for(spec.path), what=f"recording {spec.path}"
            )
        except BaseException:
            source.close()
            raise
        return OpenedSource(source=source, calibration=cal, calibration_path=cal_path, spec=spec)
    if spec.kind == "realsense":
        cal, cal_path = _calibration(cal_arg, default=None, what="a live camera")
        source = RealSenseSource.live(serial=spec.serial)
        return OpenedSource(source=source, calibration=cal, calibration_path=cal_path, spec=spec)
    from positioning.sim.room_source import SimulatedRoomSource, parse_events

    room = SimulatedRoomSource(
        scenario=spec.scenario,
        seed=spec.seed,
        events=parse_events(events),
        frames=frames,
        real_time=True if real_time is None else real_time,
        loop=True if loop is None else loop,
    )
    try:
        cal, cal_path = _calibration(cal_arg, default=room.calibration_path, what=room.label, site=False)
    except BaseException:
        room.close()
        raise
    return OpenedSource(source=room, calibration=cal, calibration_path=cal_path, spec=spec)
