"""Temporal filtering of a live stream: smooth landmarks, measure motion, steady categorical outputs.

* :class:`OneEuroFilter` (Casiez, Roussel and Vogel, "1 Euro Filter", CHI 2012): an exponential smoother
  whose cut-off frequency rises with the (filtered) speed, so there is little jitter at rest and little
  lag in motion. :class:`LandmarkSmoother` runs one per landmark, with **outlier gating**: a measurement
  farther than ``gate_mm`` from the filtered value is held back; if the jump persists for
  ``gate_frames`` frames it is taken as real (the filter snaps to it), so a step is followed within a
  few frames while a one-frame glitch is ignored. Landmarks that disappear are held for ``hold_ms`` with
  decaying confidence, then dropped.
* :func:`landmark_motion_mm`: how far the landmarks moved between two poses (median of the
  per-landmark displacements, or the norm of the median displacement vector: a rigid shift);
  :func:`cloud_motion_mm`: the shift of the patient points' median. :class:`MotionDetector` compares the
  smoothed pose with the one ``window_ms`` earlier and raises a ``moving`` flag with hysteresis.
* :class:`CategoricalSmoother`: confidence-weighted majority over a window with hysteresis, for the
  patient position code and the arm state.
* :class:`PoseTracker`: all of the above for one stream, one call per frame.

Convention: points in the scanner frame (IEC 61217), mm; time stamps in milliseconds from the frames
(:attr:`positioning.frames.RGBDFrame.timestamp_ms`), increasing; speeds in mm/s; frequencies in Hz.
A time stamp that goes backwards starts the stream afresh (a recording looped); a repeated one returns
the previous output.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Hashable
from typing import Generic, Literal, TypeVar

import numpy as np

from positioning.perception.lifting import Landmarks3D

__all__ = [
    "OneEuroSettings",
    "smoothing_alpha",
    "OneEuroFilter",
    "TemporalSettings",
    "LandmarkSmoother",
    "landmark_motion_mm",
    "cloud_motion_mm",
    "MotionSettings",
    "MotionState",
    "MotionDetector",
    "CategoricalSmoother",
    "TrackedPose",
    "PoseTracker",
]

T = TypeVar("T", bound=Hashable)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OneEuroSettings:
    """Parameters of the One Euro filter.

    Defaults: lifted MediaPipe landmarks on a still simulated patient jitter by about 2 / 6 / 12 mm (x / y /
    z, standard deviation, 30 frames/s, D435 at 1.85 m); on white noise of that size the defaults reduce
    the jitter 3.5-4.8x per axis, lag about 10 mm behind a 100 mm/s ramp and reach 75 % of a 40 mm step
    in 4 frames.

    Attributes:
        min_cutoff_hz: cut-off at rest (lower: less jitter, more lag).
        beta: cut-off increase per mm/s of speed (higher: less lag in motion), Hz per (mm/s).
        d_cutoff_hz: cut-off of the speed estimate.
    """

    min_cutoff_hz: float = 0.3
    beta: float = 0.003
    d_cutoff_hz: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff_hz > 0 and self.d_cutoff_hz > 0 and self.beta >= 0):
            raise ValueError(
                f"need min_cutoff_hz > 0, d_cutoff_hz > 0, beta >= 0; got {self.min_cutoff_hz}, "
                f"{self.d_cutoff_hz}, {self.beta}"
            )


def smoothing_alpha(cutoff_hz: float | np.ndarray, dt_s: float) -> float | np.ndarray:
    """Exponential smoothing factor of a first-order low-pass at ``cutoff_hz`` for a step of ``dt_s``.

    ``alpha = 1 / (1 + tau / dt)`` with ``tau = 1 / (2 pi cutoff)``.

    Example:
        >>> round(smoothing_alpha(1.0, 1 / 30), 3)
        0.173
    """
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, dtype=np.float64))
    out = 1.0 / (1.0 + tau / dt_s)
    return float(out) if np.ndim(out) == 0 else out


class OneEuroFilter:
    """A One Euro filter of a vector signal (the speed is the vector's norm).

    Args:
        settings: filter parameters.

    Example:
        >>> f = OneEuroFilter()
        >>> f(np.array([0.0, 0.0, 0.0]), 0.0).tolist()
        [0.0, 0.0, 0.0]
    """

    def __init__(self, settings: OneEuroSettings = OneEuroSettings()) -> None:
        self.settings = settings
        self.reset()

    def reset(self, value: np.ndarray | None = None, timestamp_ms: float | None = None) -> None:
        """Forget the past (or restart at ``value``)."""
        self.value: np.ndarray | None = None if value is None else np.array(value, dtype=np.float64)
        self.speed: np.ndarray | None = None if value is None else np.zeros_like(self.value)
        self.timestamp_ms: float | None = timestamp_ms

    def __call__(self, x: np.ndarray, timestamp_ms: float) -> np.ndarray:
        """Filter one sample; returns the filtered value (a copy).

        Convention: ``x`` in mm (any shape), ``timestamp_ms`` increasing; a sample with a time stamp not
        after the previous one restarts the filter at ``x``.
        """
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.timestamp_ms is None or not timestamp_ms > self.timestamp_ms:
            self.reset(x, timestamp_ms)
            return x.copy()
        s = self.settings
        dt_s = (timestamp_ms - self.timestamp_ms) / 1000.0
        assert self.speed is not None
        raw_speed = (x - self.value) / dt_s
        self.speed = self.speed + smoothing_alpha(s.d_cutoff_hz, dt_s) * (raw_speed - self.speed)
        cutoff = s.min_cutoff_hz + s.beta * float(np.linalg.norm(self.speed))
        self.value = self.value + smoothing_alpha(cutoff, dt_s) * (x - self.value)
        self.timestamp_ms = timestamp_ms
        return self.value.copy()


@dataclasses.dataclass(frozen=True, kw_only=True)
class TemporalSettings:
    """Settings of :class:`LandmarkSmoother`.

    Attributes:
        one_euro: the per-landmark filter.
        min_confidence: measurements at or below this confidence count as missing.
        gate_mm: a measurement farther than this from the filtered value is held back...
        gate_frames: ...unless the jump persists this many frames in a row (then the filter snaps to the
            mean of the held-back measurements).
        hold_ms: a missing landmark keeps its last value this long, its confidence decaying linearly.
    """

    one_euro: OneEuroSettings = OneEuroSettings()
    min_confidence: float = 0.2
    gate_mm: float = 60.0
    gate_frames: int = 3
    hold_ms: float = 500.0

    def __post_init__(self) -> None:
        if not (self.gate_mm > 0 and self.gate_frames >= 1 and self.hold_ms >= 0):
            raise ValueError(
                f"need gate_mm > 0, gate_frames >= 1, hold_ms >= 0; got {self.gate_mm}, "
                f"{self.gate_frames}, {self.hold_ms}"
            )


@dataclasses.dataclass
class _Track:
    points: OneEuroFilter
    surface: OneEuroFilter
    confidence: float = 0.0
    last_seen_ms: float = -math.inf
    pending: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)


class LandmarkSmoother:
    """One Euro filtering with outlier gating of a stream of :class:`Landmarks3D`.

    Args:
        settings: see :class:`TemporalSettings`.

    Example:
        >>> smoother = LandmarkSmoother()  # doctest: +SKIP
        >>> steady = smoother.update(lifted, frame.timestamp_ms)  # doctest: +SKIP
    """

    def __init__(self, settings: TemporalSettings = TemporalSettings()) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget every landmark."""
        self._tracks: dict[str, _Track] = {}
        self._last_ms: float | None = None
        self._last_out: Landmarks3D | None = None

    def update(self, landmarks: Landmarks3D, timestamp_ms: float) -> Landmarks3D:
        """Filter one frame's landmarks.

        Convention: scanner frame, mm; ``timestamp_ms`` from the frame.

        Args:
            landmarks: this frame's landmarks.
            timestamp_ms: the frame's time stamp.

        Returns:
            Smoothed landmarks with the same names and order; ``uv_px`` is this frame's. A landmark
            missing now but seen within ``hold_ms`` keeps its smoothed value with decaying confidence.
        """
        s = self.settings
        if self._last_ms is not None and timestamp_ms < self._last_ms:
            self.reset()
        if self._last_ms is not None and timestamp_ms == self._last_ms and self._last_out is not None:
            return self._last_out
        n = len(landmarks)
        points = np.full((n, 3), np.nan)
        surface = np.full((n, 3), np.nan)
        conf = np.zeros(n)
        valid = landmarks.valid(s.min_confidence)
        for i, name in enumerate(landmarks.names):
            track = self._tracks.get(name)
            if valid[i]:
                x, xs = landmarks.points_mm[i], landmarks.surface_mm[i]
                if not np.all(np.isfinite(xs)):
                    xs = x
                if track is None or track.points.value is None:
                    track = _Track(OneEuroFilter(s.one_euro), OneEuroFilter(s.one_euro))
                    self._tracks[name] = track
                    points[i], surface[i] = track.points(x, timestamp_ms), track.surface(xs, timestamp_ms)
                elif np.linalg.norm(x - track.points.value) > s.gate_mm:
                    track.pending.append((x, xs))
                    if len(track.pending) >= s.gate_frames:  # the jump is real: snap to it
                        p = np.mean([a for a, _ in track.pending], axis=0)
                        q = np.mean([b for _, b in track.pending], axis=0)
                        track.points.reset(p, timestamp_ms)
                        track.surface.reset(q, timestamp_ms)
                        track.pending.clear()
                    points[i], surface[i] = track.points.value, track.surface.value  # type: ignore[assignment]
                else:
                    track.pending.clear()
                    points[i], surface[i] = track.points(x, timestamp_ms), track.surface(xs, timestamp_ms)
                track.confidence = float(landmarks.confidence[i])
                track.last_seen_ms = timestamp_ms
                conf[i] = track.confidence
            elif track is not None and track.points.value is not None:
                age_ms = timestamp_ms - track.last_seen_ms
                if age_ms <= s.hold_ms:
                    points[i], surface[i] = track.points.value, track.surface.value  # type: ignore[assignment]
                    conf[i] = track.confidence * (1.0 - age_ms / s.hold_ms if s.hold_ms > 0 else 0.0)
                else:
                    del self._tracks[name]
        out = landmarks.replace(points_mm=points, surface_mm=surface, confidence=np.clip(conf, 0.0, 1.0))
        self._last_ms, self._last_out = timestamp_ms, out
        return out


# --------------------------------------------------------------------------------------------- motion

MotionMode = Literal["median_norm", "median_vector"]


def landmark_motion_mm(
    previous: Landmarks3D,
    current: Landmarks3D,
    *,
    min_confidence: float = 0.2,
    min_count: int = 3,
    mode: MotionMode = "median_norm",
) -> float:
    """How far the landmarks moved between two poses.

    Convention: scanner frame, mm; only landmarks present (confidence above ``min_confidence``) in both.

    Args:
        previous: the earlier pose.
        current: the later pose.
        min_confidence: confidence threshold.
        min_count: fewest common landmarks for an answer.
        mode: ``"median_norm"``: median of the per-landmark displacement lengths (any motion, including
            one limb); ``"median_vector"``: length of the component-wise median displacement (a rigid
            shift of the whole patient; robust to noise and to a few moving limbs).

    Returns:
        The motion in mm, NaN when fewer than ``min_count`` landmarks are common.

    Example:
        >>> moved = lm.replace(points_mm=lm.points_mm + [20.0, 0.0, 0.0])  # doctest: +SKIP
        >>> landmark_motion_mm(lm, moved)  # doctest: +SKIP
        20.0
    """
    if mode not in ("median_norm", "median_vector"):
        raise ValueError(f"mode must be 'median_norm' or 'median_vector', got {mode!r}")
    a_ok, b_ok = previous.valid(min_confidence), current.valid(min_confidence)
    pairs = [
        (previous.points_mm[i], current.points_mm[current.names.index(n)])
        for i, n in enumerate(previous.names)
        if a_ok[i] and n in current.names and b_ok[current.names.index(n)]
    ]
    if len(pairs) < max(min_count, 1):
        return math.nan
    d = np.array([b - a for a, b in pairs])
    if mode == "median_vector":
        return float(np.linalg.norm(np.median(d, axis=0)))
    return float(np.median(np.linalg.norm(d, axis=1)))


def cloud_motion_mm(
    previous_points_mm: np.ndarray, current_points_mm: np.ndarray, *, min_count: int = 50
) -> float:
    """Shift of the patient's surface: distance between the component-wise medians of two point clouds.

    Convention: scanner frame, mm; ``(N, 3)`` arrays (NaN rows ignored).

    Returns:
        The shift in mm, NaN when either cloud has fewer than ``min_count`` finite points.
    """
    a = np.asarray(previous_points_mm, dtype=np.float64)
    b = np.asarray(current_points_mm, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or b.ndim != 2 or b.shape[1] != 3:
        raise ValueError(f"point clouds must be (N, 3), got {a.shape} and {b.shape}")
    a = a[np.all(np.isfinite(a), axis=1)]
    b = b[np.all(np.isfinite(b), axis=1)]
    if len(a) < min_count or len(b) < min_count:
        return math.nan
    return float(np.linalg.norm(np.median(b, axis=0) - np.median(a, axis=0)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MotionSettings:
    """Settings of :class:`MotionDetector`.

    Attributes:
        threshold_mm: motion over the window above this raises ``moving``...
        release_fraction: ...and it is lowered once the motion stays below this times the threshold...
        release_frames: ...for this many frames in a row.
        window_ms: the pose is compared with the one this long before.
        mode: see :func:`landmark_motion_mm`.
        min_confidence: confidence threshold of the landmarks compared.
    """

    threshold_mm: float = 10.0
    release_fraction: float = 0.6
    release_frames: int = 5
    window_ms: float = 300.0
    mode: MotionMode = "median_norm"
    min_confidence: float = 0.2

    def __post_init__(self) -> None:
        if not (self.threshold_mm > 0 and 0 < self.release_fraction <= 1 and self.release_frames >= 1):
            raise ValueError(
                f"need threshold_mm > 0, 0 < release_fraction <= 1, release_frames >= 1; got "
                f"{self.threshold_mm}, {self.release_fraction}, {self.release_frames}"
            )
        if self.window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {self.window_ms}")


@dataclasses.dataclass(frozen=True)
class MotionState:
    """Result of :meth:`MotionDetector.update`.

    Attributes:
        moving: the patient is moving (with hysteresis).
        motion_mm: motion over the window (NaN until the window is filled or without common landmarks).
    """

    moving: bool
    motion_mm: float


class MotionDetector:
    """``moving`` flag from the motion of (smoothed) landmarks over a time window, with hysteresis.

    Args:
        settings: see :class:`MotionSettings`.
    """

    def __init__(self, settings: MotionSettings = MotionSettings()) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        """Forget the history."""
        self._history: collections.deque[tuple[float, Landmarks3D]] = collections.deque()
        self._moving = False
        self._quiet = 0
        self._last_ms: float | None = None

    def update(self, landmarks: Landmarks3D, timestamp_ms: float) -> MotionState:
        """Add one frame's (smoothed) landmarks; returns the motion state.

        Convention: scanner frame, mm; the reference pose is the newest one at least ``window_ms`` older
        (the oldest kept until the window is filled).
        """
        s = self.settings
        if self._last_ms is not None and timestamp_ms < self._last_ms:
            self.reset()
        self._last_ms = timestamp_ms
        hist = self._history
        while len(hist) >= 2 and timestamp_ms - hist[1][0] >= s.window_ms:
            hist.popleft()
        motion = math.nan
        if hist:
            motion = landmark_motion_mm(hist[0][1], landmarks, min_confidence=s.min_confidence, mode=s.mode)
        hist.append((timestamp_ms, landmarks))
        if math.isfinite(motion) and motion > s.threshold_mm:
            self._moving, self._quiet = True, 0
        elif self._moving and (not math.isfinite(motion) or motion < s.release_fraction * s.threshold_mm):
            self._quiet += 1
            if self._quiet >= s.release_frames:
                self._moving, self._quiet = False, 0
        else:
            self._quiet = 0
        return MotionState(moving=self._moving, motion_mm=motion)


# ------------------------------------------------------------------------------------------ categorical


class CategoricalSmoother(Generic[T]):
    """Confidence-weighted majority over the last frames, with hysteresis.

    Each update adds ``(value, confidence)``; the candidate is the value with the largest summed
    confidence in the window. The output switches to the candidate only when its share of the window's
    summed confidence reaches ``switch_fraction`` (so two values alternating never make it flicker);
    otherwise it stays. ``None`` values (no decision this frame) vote for nothing.

    Args:
        window: number of frames in the vote.
        switch_fraction: share needed to switch, in (0.5, 1].
        min_votes: fewest non-None votes in the window before any output.

    Example:
        >>> sm = CategoricalSmoother(window=5)
        >>> [sm.update(v)[0] for v in ["HFS", "HFS", "FFS", "HFS", "FFS", "FFS", "FFS"]]
        ['HFS', 'HFS', 'HFS', 'HFS', 'HFS', 'HFS', 'FFS']
    """

    def __init__(self, *, window: int = 15, switch_fraction: float = 0.7, min_votes: int = 1) -> None:
        if window < 1 or not (0.5 < switch_fraction <= 1.0) or min_votes < 1:
            raise ValueError(
                f"need window >= 1, 0.5 < switch_fraction <= 1, min_votes >= 1; got {window}, "
                f"{switch_fraction}, {min_votes}"
            )
        self.window, self.switch_fraction, self.min_votes = window, switch_fraction, min_votes
        self.reset()

    def reset(self) -> None:
        """Forget the history and the current value."""
        self._votes: collections.deque[tuple[T | None, float]] = collections.deque(maxlen=self.window)
        self.value: T | None = None

    def update(self, value: T | None, confidence: float = 1.0) -> tuple[T | None, float]:
        """Add one frame's value.

        Returns:
            ``(steady value, support)``: support is the summed confidence of the window's votes for the
            steady value over the number of frames in the window, in [0, 1] (0 before any output).
        """
        w = float(confidence) if value is not None and math.isfinite(confidence) else 0.0
        self._votes.append((value, max(w, 0.0)))
        tally: dict[T, float] = {}
        for v, c in self._votes:
            if v is not None:
                tally[v] = tally.get(v, 0.0) + c
        n_votes = sum(1 for v, _ in self._votes if v is not None)
        total = sum(tally.values())
        if not tally or n_votes < self.min_votes or total <= 0:
            return self.value, 0.0
        candidate = max(tally, key=lambda k: tally[k])
        if self.value is None or (
            candidate != self.value and tally[candidate] / total >= self.switch_fraction
        ):
            self.value = candidate
        support = tally.get(self.value, 0.0) / len(self._votes) if self.value is not None else 0.0
        return self.value, float(min(support, 1.0))


# --------------------------------------------------------------------------------------------- tracker


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackedPose:
    """One frame's steady output of :class:`PoseTracker`.

    Attributes:
        landmarks: smoothed landmarks.
        moving: the motion flag.
        motion_mm: motion over the detector's window (NaN while unknown).
        position: steady patient-position code (or None).
        position_confidence: its support over the vote window (see :meth:`CategoricalSmoother.update`).
        arms: steady arm state (or None).
        arms_confidence: its support over the vote window.
    """

    landmarks: Landmarks3D
    moving: bool
    motion_mm: float
    position: Hashable | None
    position_confidence: float
    arms: Hashable | None
    arms_confidence: float


class PoseTracker:
    """Smoothing, motion and steady categorical outputs for one stream (a thin wrapper).

    Args:
        temporal: landmark smoothing settings.
        motion: motion detector settings.
        window: categorical vote window (frames).
        switch_fraction: categorical switch share.
    """

    def __init__(
        self,
        *,
        temporal: TemporalSettings = TemporalSettings(),
        motion: MotionSettings = MotionSettings(),
        window: int = 15,
        switch_fraction: float = 0.7,
    ) -> None:
        self.smoother = LandmarkSmoother(temporal)
        self.motion = MotionDetector(motion)
        self.position: CategoricalSmoother[Hashable] = CategoricalSmoother(
            window=window, switch_fraction=switch_fraction
        )
        self.arms: CategoricalSmoother[Hashable] = CategoricalSmoother(
            window=window, switch_fraction=switch_fraction
        )

    def reset(self) -> None:
        """Start afresh (a new patient or stream)."""
        self.smoother.reset()
        self.motion.reset()
        self.position.reset()
        self.arms.reset()

    def update(
        self,
        landmarks: Landmarks3D,
        timestamp_ms: float,
        *,
        position: Hashable | None = None,
        position_confidence: float = 1.0,
        arms: Hashable | None = None,
        arms_confidence: float = 1.0,
    ) -> TrackedPose:
        """Add one frame; returns the steady state.

        Args:
            landmarks: this frame's lifted (and repaired) landmarks.
            timestamp_ms: the frame's time stamp.
            position: this frame's patient-position code (e.g. ``PatientPosition.HFS``) or None.
            position_confidence: its confidence.
            arms: this frame's arm state or None.
            arms_confidence: its confidence.
        """
        smooth = self.smoother.update(landmarks, timestamp_ms)
        state = self.motion.update(smooth, timestamp_ms)
        pos, pos_share = self.position.update(position, position_confidence)
        arm, arm_share = self.arms.update(arms, arms_confidence)
        return TrackedPose(
            landmarks=smooth,
            moving=state.moving,
            motion_mm=state.motion_mm,
            position=pos,
            position_confidence=pos_share,
            arms=arm,
            arms_confidence=arm_share,
        )
