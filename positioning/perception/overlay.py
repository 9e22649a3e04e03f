"""Annotated picture of what perception found: patient mask, landmarks with skeleton, table edges, status.

Convention: draws on the colour image aligned to depth (RGB uint8 ``(H, W, 3)``); landmark pixels are the
depth image's (pixel centres at integer coordinates).
"""

from __future__ import annotations

import cv2
import numpy as np

from positioning.frames import RGBDFrame
from positioning.perception.state import PatientState

__all__ = ["SKELETON", "display_image", "draw_perception", "draw_scene", "jpeg_bytes", "png_bytes"]

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


_CLASS_RGB = {
    "background": (30, 30, 30), "support": (150, 150, 150), "patient": (60, 200, 90),
    "on_patient": (80, 140, 230), "person": (230, 60, 60), "other": (230, 150, 40),
}  # fmt: skip


def draw_scene(state: PatientState, *, scale: int = 6) -> np.ndarray | None:
    """What the scene network sees, from straight above: each 40 mm cell in its class's colour (support
    grey, patient green, blanket or pillow blue, another person red, other things orange), the body's
    footprint outlined, the landmarks it places, and its position, arms and cover. Rows grow toward the
    gantry (+y up in the picture), columns toward +x. None without the scene network.
    """
    from positioning.perception.scene_net import CLASSES

    scene = state.scene
    if scene is None:
        return None
    cls = scene.class_prob.argmax(0)
    img = np.zeros((*cls.shape, 3), np.uint8)
    for i, name in enumerate(CLASSES):
        img[cls == i] = _CLASS_RGB[name]
    img = cv2.resize(img, (cls.shape[1] * scale, cls.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    foot = cv2.resize(
        (scene.footprint_prob > 0.5).astype(np.uint8),
        (img.shape[1], img.shape[0]),
        interpolation=cv2.INTER_NEAREST,
    )
    contours, _ = cv2.findContours(foot, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)

    def px(xy: np.ndarray) -> tuple[int, int]:
        c = (xy[0] - scene.origin_mm[0]) / scene.cell_mm * scale
        r = (xy[1] - scene.origin_mm[1]) / scene.cell_mm * scale
        return round(c), round(r)

    for n, xy in scene.keypoints_xy_mm.items():
        if scene.keypoint_confidence[n] > 0.3:
            cv2.circle(img, px(xy), max(2, scale // 2), _color(n), -1, cv2.LINE_AA)
    img = np.ascontiguousarray(img[::-1])  # +y up
    pos, pc = scene.position
    arms, ac = scene.arms
    cover, cc = scene.cover
    for k, text in enumerate((f"{pos} {pc:.2f}", f"arms {arms} {ac:.2f}", f"cover {cover} {cc:.2f}")):
        cv2.putText(
            img, text, (6, 18 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA
        )
    return img


def display_image(frame: RGBDFrame, *, depth_only: bool = False) -> np.ndarray:
    """What overlays are drawn on: the colour image, or a rendering of the depth when there is no colour
    (a depth-only recording, or ``depth_only`` where colour images of patients are not shown)."""
    if frame.color_rgb is not None and not depth_only:
        return frame.color_rgb
    d = frame.depth_mm.astype(np.float32)
    valid = d > 0
    if not np.any(valid):
        return np.zeros((*d.shape, 3), np.uint8)
    lo, hi = np.percentile(d[valid], [2, 98])
    g = np.clip((hi - d) / max(hi - lo, 1.0) * 255.0, 0, 255).astype(np.uint8)
    img = cv2.applyColorMap(g, cv2.COLORMAP_BONE)[..., ::-1].copy()
    img[~valid] = 0
    return img


def jpeg_bytes(rgb: np.ndarray, quality: int = 85) -> bytes:
    """An RGB image encoded as JPEG."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as JPEG")
    return buf.tobytes()


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB image encoded as PNG."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as PNG")
    return buf.tobytes()
