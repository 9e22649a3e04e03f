"""The simulated room as a live camera: cached recordings played back at camera rate, looped, with events.

A scenario session (:func:`~positioning.sim.scenario.sample_session`) is recorded once per *clip* into a
cache, as a genuine RealSense recording (:func:`~positioning.sim.session.record_session`), and played back
through pyrealsense2 (:class:`~positioning.camera.realsense.RealSenseSource`), the same path as a live
camera. A script of :class:`RoomEvent` switches clips at given times, so that motion and safety events can
be tested end to end:

======================  =================================================================================
event                   what the camera sees from then on
======================  =================================================================================
``still``               the patient as placed (breathing only): the first clip
``moved``               the same patient shifted on the table by ``shift_mm`` (scanner frame)
``left``                the empty table (the patient has left)
``second_person``       the patient, and a second person standing beside the table
``camera_lost``         nothing: every read fails as a stalled camera does, until the next event
======================  =================================================================================

Clips are cached by content under ``$POSITIONING_CACHE/rooms`` (the scenario's definition, seed, clip,
frame count and the simulator's source code together name the file), so a second start reuses them and a
change to the simulator records them afresh. Recording a clip of 30 frames takes about 10 s on 2 cores.

Convention: times in seconds from the first frame read, lengths in mm, scanner frame; frame timestamps
continue across loops and clip changes (:class:`~positioning.camera.source.ContinuousClock`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from positioning import resources
from positioning.camera.source import ContinuousClock, FrameReader
from positioning.errors import MissingStreamError, ScenarioError
from positioning.frames import Intrinsics, RGBDFrame

__all__ = [
    "DEFAULT_ROOM_SCENARIO",
    "EVENT_KINDS",
    "RoomEvent",
    "parse_events",
    "clip_spec",
    "cached_clip",
    "SimulatedRoomSource",
]

#: The simulated room's patient when no scenario is named (the demo's).
DEFAULT_ROOM_SCENARIO = "hfs-arms-up"
EVENT_KINDS: tuple[str, ...] = ("still", "moved", "left", "second_person", "camera_lost")
#: Frames per clip (one second at 30 fps; the clip loops).
DEFAULT_CLIP_FRAMES = 30
#: The shift of ``moved`` when the event names none: 25 mm sideways, 15 mm toward the feet.
DEFAULT_SHIFT_MM: tuple[float, float, float] = (25.0, -15.0, 0.0)
#: Where ``second_person`` stands: beside the table, at the patient's trunk (scanner x from the table's
#: centre, y).
SECOND_PERSON_AT_MM: tuple[float, float] = (650.0, -1200.0)


@dataclasses.dataclass(frozen=True)
class RoomEvent:
    """From ``at_s`` seconds on, the camera sees clip ``kind`` (see the module docstring).

    Attributes:
        at_s: seconds after the first frame.
        kind: one of :data:`EVENT_KINDS`.
        shift_mm: the patient's displacement for ``moved`` (default :data:`DEFAULT_SHIFT_MM`).
    """

    at_s: float
    kind: str
    shift_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ScenarioError(f"unknown room event {self.kind!r} (known: {', '.join(EVENT_KINDS)})")
        if not (self.at_s >= 0.0):
            raise ScenarioError(f"room event {self.kind!r}: time must be >= 0 s, got {self.at_s}")


def parse_events(items: Sequence[str]) -> tuple[RoomEvent, ...]:
    """Parse ``SECONDS:KIND`` strings (``"8:moved"``, ``"20:left"``) into events sorted by time.

    Raises:
        ScenarioError: a malformed item or an unknown kind.
    """
    events = []
    for item in items:
        at, sep, kind = item.partition(":")
        try:
            at_s = float(at)
        except ValueError:
            at_s = float("nan")
        if not sep or at_s != at_s:
            raise ScenarioError(f"room event {item!r}: expected SECONDS:KIND, e.g. 8:moved")
        events.append(RoomEvent(at_s, kind.strip()))
    return tuple(sorted(events, key=lambda e: e.at_s))


def clip_spec(scenario: str, seed: int, kind: str, shift_mm: Sequence[float] | None = None):  # -> SessionSpec
    """The session a clip shows: the scenario's session, changed as ``kind`` says (no ``camera_lost``)."""
    from positioning.sim.scenario import sample_session

    spec = sample_session(scenario, seed)
    if kind == "still":
        return dataclasses.replace(spec, shift_at_frame=None)
    if kind == "moved":
        shift = tuple(map(float, shift_mm if shift_mm is not None else DEFAULT_SHIFT_MM))
        return dataclasses.replace(spec, shift_at_frame=0, shift_mm=shift)
    if kind == "left":
        return dataclasses.replace(spec, phenotype=None, placement=None, shift_at_frame=None)
    if kind == "second_person":
        x, y = SECOND_PERSON_AT_MM
        return dataclasses.replace(
            spec, shift_at_frame=None, second_person=(spec.room.table_lateral_mm + x, y)
        )
    raise ScenarioError(f"no clip for room event {kind!r}")


def _simulator_digest() -> str:
    """A digest of the simulator's source code: a change to it names new cache entries."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _clip_key(scenario: str, seed: int, kind: str, shift_mm, frames: int, color: bool) -> str:
    from positioning.sim.scenario import load_scenario

    sc = load_scenario(scenario)
    doc = {
        "scenario": sc.data,
        "seed": seed,
        "kind": kind,
        "shift_mm": None if shift_mm is None else [float(v) for v in shift_mm],
        "frames": frames,
        "color": color,
        "simulator": _simulator_digest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_clip(
    scenario: str,
    seed: int = 0,
    kind: str = "still",
    *,
    shift_mm: Sequence[float] | None = None,
    frames: int = DEFAULT_CLIP_FRAMES,
    color: bool = True,
    directory: Path | None = None,
) -> Path:
    """The recording of one clip, recorded now if the cache does not hold it (written to a temporary
    folder and moved into place, so a crash never leaves half a clip in the cache).

    Returns:
        ``.../KEY.db3``, with ``KEY.truth.json`` and ``KEY.calibration.yaml`` beside it.
    """
    from positioning.sim.session import calibration_path_for, record_session, truth_path_for

    directory = directory or resources.cache_dir("rooms")
    key = _clip_key(scenario, seed, kind, shift_mm, frames, color)
    target = directory / f"{key}.db3"
    if target.is_file() and calibration_path_for(target).is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    spec = clip_spec(scenario, seed, kind, shift_mm)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".recording-") as tmp:
        rec = Path(tmp) / f"{key}.db3"
        record_session(spec, rec, frames=frames, color=color)
        # sidecars first, the recording last: a recording present means its sidecars are too
        for src, dst in (
            (truth_path_for(rec), truth_path_for(target)),
            (calibration_path_for(rec), calibration_path_for(target)),
            (rec, target),
        ):
            os.replace(src, dst)  # the temporary folder is inside the cache folder: same file system
    return target


class SimulatedRoomSource(FrameReader):
    """The simulated room as a :class:`~positioning.camera.source.FrameSource`.

    Args:
        scenario: the patient's scenario (default :data:`DEFAULT_ROOM_SCENARIO`).
        seed: its session seed.
        events: a script of clip changes (the ``still`` clip plays from 0 s unless an event at 0 s says
            otherwise).
        frames: frames per clip.
        real_time: play at the recorded 30 fps (a slow reader misses frames, as from a live camera);
            False delivers every frame as fast as it is read.
        loop: replay a clip when it ends; False ends the source after the last clip's frames.
        color: record colour too (False: a depth-only room, as where colour images are not allowed).
        timeout_s: a read during ``camera_lost`` fails after this long.
        cache: the clips' folder (default ``$POSITIONING_CACHE/rooms``).

    Raises:
        ScenarioError: an unknown scenario or event.
    """

    def __init__(
        self,
        scenario: str | None = None,
        seed: int = 0,
        *,
        events: Sequence[RoomEvent] = (),
        frames: int | None = None,
        real_time: bool = True,
        loop: bool = True,
        color: bool = True,
        timeout_s: float = 0.5,
        cache: Path | None = None,
    ) -> None:
        from positioning.sim.scenario import load_scenario
        from positioning.sim.session import calibration_path_for

        self.scenario = scenario or DEFAULT_ROOM_SCENARIO
        load_scenario(self.scenario)  # an unknown scenario fails here, before anything is recorded
        self.seed = int(seed)
        self.frames_per_clip = int(frames or DEFAULT_CLIP_FRAMES)
        script = sorted(events, key=lambda e: e.at_s)
        if not script or script[0].at_s > 0.0:
            script.insert(0, RoomEvent(0.0, "still"))
        self.events: tuple[RoomEvent, ...] = tuple(script)
        self._real_time = real_time
        self._loop = loop
        self._color = color
        self._timeout_s = timeout_s
        self._cache = cache
        self._clips: dict[tuple[str, tuple[float, ...] | None], Path] = {}
        shown = [e for e in self.events if e.kind != "camera_lost"] or [RoomEvent(0.0, "still")]
        first = self._clip(shown[0])  # the camera's identity and calibration come from a clip
        for event in shown[1:]:
            self._clip(event)
        self.calibration_path = calibration_path_for(first)
        self.label = f"simulated room ({self.scenario}, seed {self.seed})"
        self._current: int | None = None
        self._reader = None  # RealSenseSource of the current clip
        self._skipped_before = 0  # frames skipped by the readers of earlier clips
        self._clock = None
        self._t0: float | None = None
        self._closed = False
        from positioning.camera.realsense import RealSenseSource

        with RealSenseSource.from_file(first) as probe:
            self.depth_intrinsics: Intrinsics = probe.depth_intrinsics
            self.device_name: str = probe.device_name
            self.serial: str = probe.serial

    def _clip(self, event: RoomEvent) -> Path:
        shift = None if event.shift_mm is None else tuple(event.shift_mm)
        key = (event.kind, shift)
        if key not in self._clips:
            self._clips[key] = cached_clip(
                self.scenario,
                self.seed,
                event.kind,
                shift_mm=shift,
                frames=self.frames_per_clip,
                color=self._color,
                directory=self._cache,
            )
        return self._clips[key]

    @property
    def elapsed_s(self) -> float:
        """Seconds since the first read (0 before it)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    def bring_forward(self, kind: str) -> RoomEvent:
        """Make the next scripted event of ``kind`` happen now (tests and demos that must act before it:
        script it far ahead, then call this when ready). Its clip was recorded with the others.

        Raises:
            ScenarioError: no such event is still ahead.
        """
        now = self.elapsed_s
        ahead = [e for e in self.events if e.kind == kind and e.at_s > now]
        if not ahead:
            raise ScenarioError(f"no {kind!r} event is scripted after {now:.1f} s")
        event = ahead[0]
        moved = dataclasses.replace(event, at_s=now)
        self.events = tuple(sorted((moved if e is event else e for e in self.events), key=lambda e: e.at_s))
        return moved

    @property
    def frames_skipped(self) -> int:
        """Frames the camera delivered that the reader was too busy to read (real-time playback)."""
        return self._skipped_before + (0 if self._reader is None else self._reader.frames_skipped)

    def _event_index(self) -> int:
        now = self.elapsed_s
        return max(i for i, e in enumerate(self.events) if e.at_s <= now)

    def _switch(self, index: int) -> None:
        from positioning.camera.realsense import RealSenseSource

        if self._reader is not None:
            self._skipped_before += self._reader.frames_skipped
            self._reader.close()
            self._reader = None
        self._current = index
        event = self.events[index]
        if event.kind != "camera_lost":
            # the last clip of a non-looping room plays once; earlier clips loop until the next event
            last = index == len(self.events) - 1
            self._reader = RealSenseSource.from_file(
                self._clip(event), repeat=self._loop or not last, real_time=self._real_time
            )

    def read(self) -> RGBDFrame:
        """The next frame of the clip the script shows now.

        Raises:
            MissingStreamError: during ``camera_lost`` (after ``timeout_s``, as a stalled camera).
            StopIteration: the last clip of a non-looping room has ended.
            ValueError: the source is closed.
        """
        if self._closed:
            raise ValueError(f"{self.label} is closed")
        if self._t0 is None:
            self._t0 = time.monotonic()
            self._clock = ContinuousClock()
        index = self._event_index()
        if index != self._current:
            self._switch(index)
        if self._reader is None:  # camera lost
            time.sleep(self._timeout_s)
            raise MissingStreamError(f"{self.label}: no frame within {self._timeout_s:g} s (camera lost)")
        frame = self._reader.read()
        assert self._clock is not None
        return dataclasses.replace(frame, timestamp_ms=self._clock(frame.timestamp_ms))

    def close(self) -> None:
        """Stop playback; safe to call twice."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
            self._reader = None
