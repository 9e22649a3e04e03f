"""``PatientState``: what perception knows about the patient in one frame (the input of planning).

Convention: scanner frame (IEC 61217), millimetres. Landmark names are COCO-17 (the patient's own left
and right) plus snake_case extras.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from positioning.perception.orientation import ArmState, PatientPosition
from positioning.perception.profile import SurfaceProfile
from positioning.perception.status import PerceptionNote, PerceptionStatus
from positioning.perception.table import TableEstimate

__all__ = ["PatientState"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatientState:
    """The patient as perceived in one frame (after temporal filtering when a stream is tracked).

    Attributes:
        status: OK, SECOND_PERSON (patient found, with a warning) or why there is no patient
            (NO_DEPTH, NO_TABLE, EMPTY_TABLE).
        message: human-readable explanation of ``status``.
        frame_number: the source frame's number.
        timestamp_ms: the source frame's timestamp.
        table: the table estimate (None when no table was found).
        profile: the body surface profile along y (None without a patient).
        patient_points_mm: ``(N, 3)`` patient points, scanner frame (empty without a patient).
        patient_mask: ``(H, W)`` bool patient pixels (None without a patient).
        landmarks_mm: name -> ``(3,)`` scanner-frame position (joint centres estimated from the surface).
        landmark_confidence: name -> confidence in [0, 1] (0 = not usable).
        landmarks_uv_px: name -> ``(2,)`` pixel position in the depth image (for overlays).
        patient_position: DICOM code, or None when undecided.
        position_confidence: in [0, 1].
        arms: arm state, or None when undecided.
        arms_confidence: in [0, 1].
        moving: the patient is moving (motion above threshold).
        motion_mm: recent motion (NaN until known).
        repairs: name -> reason code of any landmark repaired or dropped (``issue:action``).
        timings_ms: stage name -> milliseconds spent on this frame.
        cover: how far a blanket covers the patient (``"none"``, ``"legs"``, ``"chest"``), or None when
            not judged. From the scene network's blanket output where it gives one, else from the colour
            landmarks (:mod:`~positioning.perception.cover`: ``"legs"`` when they see the legs hidden,
            ``"none"`` otherwise; None without colour).
        cover_confidence: in [0, 1].
        landmark_backends: which landmark sources were used (e.g. ``"mediapipe+scene_net"``).
        notes: what may make this result wrong (covered, unusual table, disagreeing sources).
        support_dip_mm: how far the surface dips just beside the body (mm below the table plane is
            negative; :func:`~positioning.perception.profile.support_dip_mm`), NaN when not measured.
        covered_share: ``(K,)`` per profile slice, the share of the patient's points the scene network
            sees under a blanket (None without the network).
        view_cut_ends_mm: the scanner ``y`` of each end of the body where it leaves the image (the body
            goes on out of view; :func:`~positioning.perception.segmentation.view_cut_ends_mm`); empty when
            the body is seen whole along the table.
        scene: the scene network's output (for overlays and checks), or None.
        repeats_frame_number: a live stream's steady frame: the frame whose perception this state repeats
            (its depth has not changed since beyond the sensor's noise; ``frame_number`` and
            ``timestamp_ms`` are this frame's); None: perceived from this frame.
        repeats_timestamp_ms: that frame's timestamp (frame numbers recur in a looped recording; the
            timestamps do not), None with ``repeats_frame_number``.
        steady_since_ms: a live stream's steady frame: the timestamp of the first frame of the still
            stretch it belongs to (each frame perceived in full since was steady against the one before,
            so any of their perceptions stands for this frame); None otherwise.
    """

    status: PerceptionStatus
    message: str
    frame_number: int = 0
    timestamp_ms: float = 0.0
    table: TableEstimate | None = None
    profile: SurfaceProfile | None = None
    patient_points_mm: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))
    patient_mask: np.ndarray | None = None
    landmarks_mm: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    landmark_confidence: dict[str, float] = dataclasses.field(default_factory=dict)
    landmarks_uv_px: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    patient_position: PatientPosition | None = None
    position_confidence: float = 0.0
    arms: ArmState | None = None
    arms_confidence: float = 0.0
    moving: bool = False
    motion_mm: float = float("nan")
    repairs: dict[str, str] = dataclasses.field(default_factory=dict)
    timings_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    cover: str | None = None
    cover_confidence: float = 0.0
    landmark_backends: str = ""
    notes: tuple[PerceptionNote, ...] = ()
    support_dip_mm: float = float("nan")
    covered_share: np.ndarray | None = None
    view_cut_ends_mm: tuple[float, ...] = ()
    scene: Any = None
    repeats_frame_number: int | None = None
    repeats_timestamp_ms: float | None = None
    steady_since_ms: float | None = None

    @property
    def perceived_timestamp_ms(self) -> float:
        """The timestamp of the frame this state was perceived from (a steady frame's repeated one)."""
        return self.timestamp_ms if self.repeats_timestamp_ms is None else self.repeats_timestamp_ms

    @property
    def has_patient(self) -> bool:
        return self.status.has_patient and self.profile is not None

    def landmark(self, name: str, min_confidence: float = 0.0) -> np.ndarray | None:
        """A landmark's position, or None when missing or below ``min_confidence``."""
        p = self.landmarks_mm.get(name)
        if p is None or not np.all(np.isfinite(p)):
            return None
        return p if self.landmark_confidence.get(name, 0.0) > min_confidence else None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (no arrays beyond landmarks)."""
        return {
            "status": self.status.value,
            "message": self.message,
            "frame_number": self.frame_number,
            "patient_position": None if self.patient_position is None else str(self.patient_position),
            "position_confidence": round(self.position_confidence, 3),
            "arms": None if self.arms is None else str(self.arms),
            "arms_confidence": round(self.arms_confidence, 3),
            "table_top_z_mm": None if self.table is None else round(float(self.table.top_z_mm), 1),
            "cover": self.cover,
            "cover_confidence": round(self.cover_confidence, 3),
            "landmark_backends": self.landmark_backends,
            "notes": [{"code": n.code, "severity": n.severity, "message": n.message} for n in self.notes],
            "moving": self.moving,
            "motion_mm": None if not np.isfinite(self.motion_mm) else round(float(self.motion_mm), 1),
            "landmarks": {
                k: [round(float(x), 1) for x in v]
                for k, v in self.landmarks_mm.items()
                if self.landmark_confidence.get(k, 0.0) > 0 and np.all(np.isfinite(v))
            },
        }
