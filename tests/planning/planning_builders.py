"""Builders of hand-made patient states for the planning tests (no simulator, no perception): a body
as an elliptic cylinder lying on a flat table, its upper surface sampled as perception would see it,
COCO keypoints placed for the requested position.

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm.
"""

from __future__ import annotations

import numpy as np

from positioning.perception.orientation import ArmState, PatientPosition
from positioning.perception.profile import surface_profile
from positioning.perception.state import PatientState
from positioning.perception.status import PerceptionStatus
from positioning.perception.table import TableEstimate


def make_table(top_z_mm: float = -150.0, *, x_half_mm: float = 240.0) -> TableEstimate:
    """A flat table top at ``top_z_mm`` from y = -2700 to -450 mm."""
    return TableEstimate(
        normal=np.array([0.0, 0.0, 1.0]),
        offset_mm=-top_z_mm,
        top_z_mm=top_z_mm,
        x_min_mm=-x_half_mm,
        x_max_mm=x_half_mm,
        y_min_mm=-2700.0,
        y_max_mm=-450.0,
        y_min_seen=True,
        y_max_seen=True,
        inliers=1000,
        rms_mm=5.0,
        area_mm2=1.0e6,
        pixels_vu=np.zeros((0, 2), np.int32),
    )


def body_points(
    *,
    table_top_z_mm: float,
    y_range_mm: tuple[float, float],
    centre_x_mm: float = 0.0,
    half_width_mm: float = 170.0,
    height_mm: float = 220.0,
    step_mm: float = 5.0,
) -> np.ndarray:
    """Upper-surface points of an elliptic half-cylinder on the table: z = top + h sqrt(1 - x^2 / a^2)."""
    xs = np.arange(-half_width_mm, half_width_mm + 1e-9, step_mm)
    ys = np.arange(y_range_mm[0], y_range_mm[1], step_mm)
    gx, gy = np.meshgrid(xs, ys)
    gz = table_top_z_mm + height_mm * np.sqrt(np.clip(1 - (gx / half_width_mm) ** 2, 0, 1))
    keep = gz - table_top_z_mm > 40.0  # perception's segmentation threshold
    return np.column_stack([gx[keep] + centre_x_mm, gy[keep], gz[keep]])


def keypoints_for(
    position: str,
    *,
    y_shoulders_mm: float = -900.0,
    torso_mm: float = 500.0,
    centre_x_mm: float = 0.0,
    z_mm: float = -50.0,
) -> dict[str, np.ndarray]:
    """COCO keypoints of a patient whose shoulders are at ``y_shoulders_mm`` (head toward +y head first)."""
    s = 1.0 if position.startswith("HF") else -1.0
    levels = {
        "nose": 230.0, "left_eye": 245.0, "right_eye": 245.0, "left_ear": 225.0, "right_ear": 225.0,
        "left_shoulder": 0.0, "right_shoulder": 0.0, "left_elbow": -280.0, "right_elbow": -280.0,
        "left_wrist": -520.0, "right_wrist": -520.0, "left_hip": -torso_mm, "right_hip": -torso_mm,
        "left_knee": -torso_mm - 430.0, "right_knee": -torso_mm - 430.0,
        "left_ankle": -torso_mm - 830.0, "right_ankle": -torso_mm - 830.0,
    }  # fmt: skip
    out = {}
    for name, d in levels.items():
        x = centre_x_mm + (120.0 if name.startswith("left") else -120.0 if name.startswith("right") else 0.0)
        out[name] = np.array([x, y_shoulders_mm + s * d, z_mm])
    return out


def make_state(
    position: str | None = "HFS",
    *,
    table_top_z_mm: float = -150.0,
    centre_x_mm: float = 0.0,
    half_width_mm: float = 170.0,
    height_mm: float = 220.0,
    y_shoulders_mm: float = -900.0,
    torso_mm: float = 500.0,
    arms: ArmState | None = ArmState.RAISED,
    position_confidence: float = 0.95,
    arms_confidence: float = 0.9,
    moving: bool = False,
    status: PerceptionStatus = PerceptionStatus.OK,
    drop: tuple[str, ...] = (),
) -> PatientState:
    """A perceived patient: elliptic-cylinder body from the feet to the head, keypoints, position, arms."""
    table = make_table(table_top_z_mm)
    s = 1.0 if (position or "HFS").startswith("HF") else -1.0
    head_end = y_shoulders_mm + s * 300.0
    foot_end = y_shoulders_mm - s * (torso_mm + 900.0)
    lo, hi = min(head_end, foot_end), max(head_end, foot_end)
    pts = body_points(
        table_top_z_mm=table_top_z_mm, y_range_mm=(lo, hi), centre_x_mm=centre_x_mm,
        half_width_mm=half_width_mm, height_mm=height_mm,
    )  # fmt: skip
    prof = surface_profile(pts, table)
    kps = keypoints_for(
        position or "HFS", y_shoulders_mm=y_shoulders_mm, torso_mm=torso_mm, centre_x_mm=centre_x_mm
    )
    for d in drop:
        kps.pop(d, None)
    return PatientState(
        status=status,
        message=status.message,
        table=table,
        profile=prof,
        patient_points_mm=pts,
        landmarks_mm=kps,
        landmark_confidence=dict.fromkeys(kps, 0.95),
        patient_position=None if position is None else PatientPosition(position),
        position_confidence=position_confidence,
        arms=arms,
        arms_confidence=arms_confidence,
        moving=moving,
    )
