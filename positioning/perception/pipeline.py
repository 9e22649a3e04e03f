"""Perception, wired: ``RGBDFrame`` + calibration -> :class:`~positioning.perception.state.PatientState`.

Stages (each a pure function in its own module; this class only holds settings, the loaded model and the
per-stream tracker):

1. table and patient: :func:`~positioning.perception.segmentation.segment_frame` (point cloud in the
   scanner frame, table plane, patient segment) and
   :func:`~positioning.perception.profile.surface_profile`;
2. 2-D landmarks on the colour image with every configured backend (MediaPipe's BlazePose by default),
   fused by confidence (:func:`~positioning.perception.landmarks.fuse_landmarks`);
3. lift to 3-D (:func:`~positioning.perception.lifting.lift_landmarks`), orientation and left/right
   consistency, depth offsets for that orientation, repair against the point cloud;
4. definition correction: BlazePose's keypoints sit systematically apart from the COCO joint centres
   along the body axes; a per-landmark shift in body axes, fitted offline on simulated patients
   (``models/landmark_correction.json``), moves them onto the COCO definition;
5. arm state; temporal tracking (smoothing, motion, steady categorical outputs) when ``track=True``.

Convention: scanner frame (IEC 61217), mm; landmark names COCO-17 (patient's own left and right).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from positioning.errors import PositioningError
from positioning.frames import Calibration, RGBDFrame
from positioning.perception.landmarks import LandmarkBackend, Landmarks2D, fuse_landmarks
from positioning.perception.lifting import (
    Landmarks3D,
    LiftSettings,
    depth_offsets_for,
    lift_landmarks,
    reoffset_landmarks,
)
from positioning.perception.orientation import (
    BODY_AXES,
    ArmState,
    PatientPosition,
    estimate_arm_state,
    estimate_orientation,
    swap_left_right,
)
from positioning.perception.profile import surface_profile
from positioning.perception.repair import repair_landmarks
from positioning.perception.segmentation import segment_frame
from positioning.perception.state import PatientState
from positioning.perception.status import PerceptionStatus
from positioning.perception.temporal import PoseTracker

__all__ = [
    "PerceiverSettings",
    "LandmarkCorrection",
    "load_landmark_correction",
    "apply_landmark_correction",
    "body_axes",
    "lying_of",
    "Perceiver",
    "DEFAULT_CORRECTION_PATH",
]

DEFAULT_CORRECTION_PATH = Path(__file__).resolve().parents[2] / "models" / "landmark_correction.json"


@dataclasses.dataclass(frozen=True)
class LandmarkCorrection:
    """Per-landmark shifts (mm) in the patient's body axes (superior, anterior, left), by pose group.

    Attributes:
        shifts_mm: group -> landmark name -> ``(3,)`` shift added along (superior, anterior, patient's
            left). Groups are ``"LYING:ARMS"`` (e.g. ``"supine:raised"``), ``"LYING:*"`` and ``"*"``; the
            most specific group that has the landmark is used.
        source: where the numbers come from (file and provenance).
    """

    shifts_mm: dict[str, dict[str, np.ndarray]]
    source: str = ""

    def shift(self, name: str, lying: str, arms: str | None) -> np.ndarray | None:
        for group in (f"{lying}:{arms}", f"{lying}:*", "*"):
            s = self.shifts_mm.get(group, {}).get(name)
            if s is not None:
                return s
        return None


def lying_of(position: PatientPosition | str) -> str:
    """``"supine"``, ``"prone"`` or ``"decubitus"`` of a DICOM position code."""
    code = str(position)
    return {"S": "supine", "P": "prone"}.get(code[2:], "decubitus")


def load_landmark_correction(path: str | Path | None = None) -> LandmarkCorrection:
    """Load the definition correction (no correction if the default file does not exist)."""
    p = Path(path) if path is not None else DEFAULT_CORRECTION_PATH
    if not p.is_file():
        if path is not None:
            raise PositioningError(f"landmark correction file not found: {p}")
        return LandmarkCorrection({}, source="none")
    try:
        doc = json.loads(p.read_text())
        shifts = {
            group: {k: np.asarray(v, dtype=np.float64).reshape(3) for k, v in names.items()}
            for group, names in doc["shifts_mm"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PositioningError(f"landmark correction file {p} is malformed: {e}") from e
    return LandmarkCorrection(shifts, source=str(p))


def body_axes(position: PatientPosition) -> np.ndarray:
    """``(3, 3)`` rows: the scanner-frame superior, anterior and left unit vectors of a position."""
    sup, post, left = (np.asarray(a, dtype=np.float64) for a in BODY_AXES[position])
    return np.stack([sup, -post, left])


def apply_landmark_correction(
    landmarks: Landmarks3D,
    position: PatientPosition | None,
    arms: ArmState | None,
    correction: LandmarkCorrection,
) -> Landmarks3D:
    """Shift each landmark by its correction expressed in the patient's body axes.

    Convention: the body axes (superior, anterior, left) are scanner-frame unit vectors of the patient
    position (``BODY_AXES``); shifts are mm.
    """
    if not correction.shifts_mm or position is None:
        return landmarks
    axes = body_axes(position)
    lying, arms_key = lying_of(position), None if arms is None else str(arms)
    points = landmarks.points_mm.copy()
    for i, name in enumerate(landmarks.names):
        shift = correction.shift(name, lying, arms_key)
        if shift is not None and np.all(np.isfinite(points[i])):
            points[i] = points[i] + shift @ axes
    return landmarks.replace(points_mm=points)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerceiverSettings:
    """Settings of :class:`Perceiver`.

    Attributes:
        stride: segmentation sampling step (1 = every pixel).
        table_stride: table-fit sampling step.
        track: smooth over frames (a live stream or a recording); False treats each frame alone.
        correction_path: landmark definition correction file (None: the shipped default).
    """

    stride: int = 1
    table_stride: int = 2
    track: bool = True
    correction_path: Path | None = None


class Perceiver:
    """Turns frames into :class:`PatientState` s.

    Args:
        backends: 2-D landmark backends (default: MediaPipe BlazePose, loaded once).
        settings: see :class:`PerceiverSettings`.

    Example:
        >>> with Perceiver() as perceiver:  # doctest: +SKIP
        ...     state = perceiver.perceive(frame, calibration)
    """

    def __init__(
        self, backends: Sequence[LandmarkBackend] | None = None, *, settings: PerceiverSettings | None = None
    ) -> None:
        self.settings = settings or PerceiverSettings()
        if backends is None:
            from positioning.perception.landmarks.mediapipe_backend import MediaPipePoseBackend

            backends = [MediaPipePoseBackend()]
        self.backends = list(backends)
        self.correction = load_landmark_correction(self.settings.correction_path)
        self.tracker = PoseTracker()

    def __enter__(self) -> Perceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for b in self.backends:
            close = getattr(b, "close", None)
            if close is not None:
                close()

    def reset(self) -> None:
        """Forget the stream (a new patient)."""
        self.tracker.reset()

    def perceive(self, frame: RGBDFrame, calibration: Calibration) -> PatientState:
        """One frame -> :class:`PatientState` (never raises for a frame without a patient: see ``status``)."""
        t = {"start": time.perf_counter()}
        base = {"frame_number": frame.frame_number, "timestamp_ms": frame.timestamp_ms}
        try:
            table, segment = segment_frame(
                frame, calibration, stride=self.settings.stride, table_stride=self.settings.table_stride
            )
        except PositioningError as e:
            status = PerceptionStatus(e.code) if e.code in PerceptionStatus.__members__ else None
            if status is None:
                raise
            return PatientState(status=status, message=str(e), **base)
        t["segmentation"] = time.perf_counter()
        if not segment.status.has_patient:
            return PatientState(status=segment.status, message=segment.status.message, table=table, **base)
        profile = surface_profile(segment.points_mm, table)
        t["profile"] = time.perf_counter()

        lm2 = self._detect(frame)
        t["landmarks_2d"] = time.perf_counter()
        landmarks: Landmarks3D | None = None
        orientation = arm = None
        repairs: dict[str, str] = {}
        if lm2 is not None:
            top = float(table.top_z_mm)
            landmarks = lift_landmarks(lm2, frame, calibration, table_top_z_mm=top, patient_mask=segment.mask)
            orientation = estimate_orientation(landmarks, patient_points_mm=segment.points_mm)
            if orientation.labels_swapped:
                landmarks = swap_left_right(landmarks)
            offsets = depth_offsets_for(orientation.position)
            landmarks = reoffset_landmarks(landmarks, calibration, offsets=offsets, table_top_z_mm=top)
            repaired = repair_landmarks(
                landmarks,
                frame,
                calibration,
                table_top_z_mm=top,
                patient_mask=segment.mask,
                patient_points_mm=segment.points_mm,
                lift_settings=LiftSettings(offsets=offsets),
            )
            landmarks, repairs = repaired.landmarks, repaired.changed()
            arm = estimate_arm_state(landmarks, orientation)
            landmarks = apply_landmark_correction(landmarks, orientation.position, arm.state, self.correction)
        t["landmarks_3d"] = time.perf_counter()

        position = None if orientation is None else orientation.position
        position_conf = 0.0 if orientation is None else orientation.confidence
        arms = None if arm is None else arm.state
        arms_conf = 0.0 if arm is None else arm.confidence
        moving, motion = False, float("nan")
        if landmarks is not None and self.settings.track:
            tracked = self.tracker.update(
                landmarks,
                frame.timestamp_ms,
                position=position,
                position_confidence=position_conf,
                arms=arms,
                arms_confidence=arms_conf,
            )
            landmarks, moving, motion = tracked.landmarks, tracked.moving, tracked.motion_mm
            position, position_conf = tracked.position, tracked.position_confidence  # type: ignore[assignment]
            arms, arms_conf = tracked.arms, tracked.arms_confidence  # type: ignore[assignment]
        t["tracking"] = time.perf_counter()

        points, confidence, pixels = {}, {}, {}
        if landmarks is not None:
            for i, n in enumerate(landmarks.names):
                points[n], confidence[n], pixels[n] = (
                    landmarks.points_mm[i],
                    float(landmarks.confidence[i]),
                    landmarks.uv_px[i],
                )
        stages = list(t)
        timings = {b: 1000.0 * (t[b] - t[a]) for a, b in itertools.pairwise(stages)}
        timings["total"] = 1000.0 * (t[stages[-1]] - t["start"])
        message = segment.status.message if lm2 is not None else "Patient found, but no body landmarks."
        return PatientState(
            status=segment.status,
            message=message,
            table=table,
            profile=profile,
            patient_points_mm=segment.points_mm,
            patient_mask=segment.mask,
            landmarks_mm=points,
            landmark_confidence=confidence,
            landmarks_uv_px=pixels,
            patient_position=position,
            position_confidence=float(position_conf),
            arms=arms,
            arms_confidence=float(arms_conf),
            moving=bool(moving),
            motion_mm=float(motion),
            repairs=repairs,
            timings_ms=timings,
            **base,
        )

    def _detect(self, frame: RGBDFrame) -> Landmarks2D | None:
        results = [
            r for b in self.backends if (r := b.detect(frame.color_rgb, depth_mm=frame.depth_mm)) is not None
        ]
        if not results:
            return None
        return results[0] if len(results) == 1 else fuse_landmarks(results)
