"""Annotated picture of what perception found: patient mask, landmarks with skeleton, table edges, status.

Convention: draws on the colour image aligned to depth (RGB uint8 ``(H, W, 3)``); landmark pixels are the
depth image's (pixel centres at integer coordinates).
"""

from __future__ import annotations

import cv2
import numpy as np

from positioning.perception.state import PatientState

__all__ = ["SKELETON", "draw_perception"]

#: COCO skeleton edges drawn between landmarks.
SKELETON: tuple[tuple[str, str], ...] = (
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"), ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
)  # fmt: skip

_LEFT, _RIGHT, _MID = (255, 80, 80), (80, 160, 255), (255, 220, 0)


def _color(name: str) -> tuple[int, int, int]:
    return _LEFT if name.startswith("left") else _RIGHT if name.startswith("right") else _MID


def draw_perception(color_rgb: np.ndarray, state: PatientState) -> np.ndarray:
    """The colour image with the patient mask tinted, the landmarks and skeleton, and a status line.

    Left landmarks are red, right ones blue (the patient's own sides).
    """
    img = color_rgb.copy()
    if state.patient_mask is not None and state.patient_mask.shape == img.shape[:2]:
        tint = np.array([0, 255, 120], np.float32)
        m = state.patient_mask
        img[m] = (0.75 * img[m] + 0.25 * tint).astype(np.uint8)
    uv = {
        n: p for n, p in state.landmarks_uv_px.items()
        if state.landmark_confidence.get(n, 0.0) > 0.2 and np.all(np.isfinite(p))
    }  # fmt: skip
    for a, b in SKELETON:
        if a in uv and b in uv:
            pa, pb = (tuple(round(x) for x in uv[n]) for n in (a, b))
            cv2.line(img, pa, pb, (255, 255, 255), 2, cv2.LINE_AA)
    for n, p in uv.items():
        cv2.circle(img, (round(p[0]), round(p[1])), 5, _color(n), -1, cv2.LINE_AA)
    text = f"{state.status.value}"
    if state.patient_position is not None:
        text += f"  {state.patient_position} ({state.position_confidence:.2f})"
    if state.arms is not None:
        text += f"  arms {state.arms} ({state.arms_confidence:.2f})"
    if state.moving:
        text += "  MOVING"
    cv2.putText(img, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return img
