"""Draw a fluoroscopy plan on the camera's colour image: the target box and the PA field's footprint.

The target box (C-arm frame) is drawn as its twelve edges; the collimated PA field as its footprint in
the plane of the target's centre, where the patient lies now (the field's rectangle at the detector,
scaled back by the magnification there and moved back by the table's planned move), tinted; the target's
centre as a cross. Everything is projected with the calibration and the depth intrinsics, as
:func:`positioning.planning.overlay.draw_plan` does.

Convention: C-arm frame (see :mod:`positioning.planning.procedure`), mm; RGB uint8 ``(H, W, 3)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from positioning.frames import Calibration, Intrinsics
from positioning.perception.pointcloud import project_points
from positioning.planning.fluoro import FluoroPlan
from positioning.planning.overlay import _ok, _pt, canvas
from positioning.planning.procedure import CArm

__all__ = ["field_footprint_mm", "draw_fluoro_plan"]

_TARGET = (255, 80, 200)
_FIELD = (80, 255, 120)
_TEXT = (255, 255, 255)
_EDGES = ((0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7))


def field_footprint_mm(plan: FluoroPlan, c_arm: CArm) -> np.ndarray | None:
    """``(4, 3)`` corners of the PA field's footprint in the plane of the target's centre, where the
    patient lies now (before the table's move); None without a plan."""
    field = plan.fields.get("PA")
    if field is None or plan.target is None or plan.table_offset is None:
        return None
    move = plan.table_offset.move_mm
    z = float(plan.target.center_mm[2] + move[2])  # the target's centre height after the move
    k = (z + c_arm.source_to_isocenter_mm) / c_arm.source_to_image_mm  # detector -> that plane
    (u0, u1), (v0, v1) = field.u_mm, field.v_mm
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]]) * k
    pts = np.column_stack([corners, np.full(4, z)])
    return pts - move  # back to where the patient lies now


def draw_fluoro_plan(
    color_rgb: np.ndarray, plan: FluoroPlan, c_arm: CArm, calibration: Calibration, intrinsics: Intrinsics
) -> np.ndarray:
    """The colour image with the fluoroscopy plan drawn on it (a copy).

    Raises:
        ValueError: the image is not ``(H, W, 3)`` uint8 of the intrinsics' size.
    """
    img = canvas(color_rgb, intrinsics)
    foot = field_footprint_mm(plan, c_arm)
    if foot is not None:
        uv = project_points(foot, calibration, intrinsics)
        if all(_ok(p) for p in uv):
            tint = img.copy()
            cv2.fillPoly(tint, [np.round(uv).astype(np.int32)], _FIELD)
            img = cv2.addWeighted(tint, 0.22, img, 0.78, 0)
            cv2.polylines(img, [np.round(uv).astype(np.int32)], True, _FIELD, 2, cv2.LINE_AA)
            field = plan.fields["PA"]
            label = (
                f"PA field {field.width_mm:.0f}x{field.height_mm:.0f} mm, "
                f"-{field.area_saved_percent:.0f}% area"
            )
            cv2.putText(img, label, _pt(uv[2] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, _FIELD, 1, cv2.LINE_AA)
    if plan.target is not None:
        uv = project_points(plan.target.corners(), calibration, intrinsics)
        for a, b in _EDGES:
            if _ok(uv[a]) and _ok(uv[b]):
                cv2.line(img, _pt(uv[a]), _pt(uv[b]), _TARGET, 1, cv2.LINE_AA)
        c = project_points(plan.target.center_mm[None, :], calibration, intrinsics)[0]
        if _ok(c):
            cv2.drawMarker(img, _pt(c), _TARGET, cv2.MARKER_CROSS, 16, 2, cv2.LINE_AA)
    errors = [c for c in plan.checks if str(c.severity) == "error"] or list(plan.checks)
    status = f"{plan.procedure}: " + ("ready" if plan.ok else (errors[0].code if errors else "no plan"))
    cv2.putText(img, status, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, status, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, _TEXT, 1, cv2.LINE_AA)
    return img
