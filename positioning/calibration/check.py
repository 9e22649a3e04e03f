"""The daily calibration check: does the table seen now sit where the calibration says it must?

Tables are centred on the gantry and their tops are horizontal, so in a correct calibration the table top
found in depth (:class:`~positioning.perception.pipeline.Perceiver`, the pipeline's own table) is level
(no tilt about x, no roll about y), runs along y (no yaw) and has its centre line at x = 0: any session
shows those four. With the console's readings it also shows vertical and longitudinal drift: at readings
``(H, L)`` the surface the camera sees lies at ``z = H - H0 - board thickness`` (the room's reference
readings put the calibration board's face, which lies on that surface, at the isocenter's height), and
its head end at ``y = L - L0`` (the board's top edge lies at the table's head end).

Tolerances are couch QA's: 2 mm and 0.5 deg (MPPG 9.a, TG-142; see ``../shared/REFERENCES.md``).

Convention: scanner frame (IEC 61217), mm and degrees; drift is seen minus expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from positioning.errors import CalibrationError
from positioning.frames import Calibration, RGBDFrame

__all__ = [
    "TOLERANCE_MM",
    "TOLERANCE_DEG",
    "DriftReport",
    "drift_from_table",
    "drift_from_board",
    "check_calibration",
]

TOLERANCE_MM = 2.0
TOLERANCE_DEG = 0.5
#: Height from the depth stream (the table-only check) is good to a few millimetres at 2 m, not to 2 mm.
DEPTH_VERTICAL_TOLERANCE_MM = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftReport:
    """How far the table seen now is from where the calibration puts it (NaN: not measurable here).

    Attributes:
        tilt_deg: rotation about x (the head end up: positive).
        roll_deg: rotation about y (the +x side down: positive).
        yaw_deg: the table's long axis against y (toward +x at the head end: positive).
        lateral_mm: the table's centre line against x = 0 (needs both long edges in view).
        vertical_mm, longitudinal_mm: against the console's readings (NaN without them).
        tolerance_mm, tolerance_deg: the pass/fail limits.
        vertical_tolerance_mm: the vertical one (looser when the height comes from depth alone).
        notes: what could not be measured, and why.
    """

    tilt_deg: float
    roll_deg: float
    yaw_deg: float
    lateral_mm: float
    vertical_mm: float = math.nan
    longitudinal_mm: float = math.nan
    tolerance_mm: float = TOLERANCE_MM
    tolerance_deg: float = TOLERANCE_DEG
    vertical_tolerance_mm: float = TOLERANCE_MM
    notes: tuple[str, ...] = ()
    source: str = "table"

    @property
    def failures(self) -> list[str]:
        out = []
        for name in ("tilt_deg", "roll_deg", "yaw_deg"):
            v = getattr(self, name)
            if math.isfinite(v) and abs(v) > self.tolerance_deg:
                out.append(f"{name.removesuffix('_deg')} {v:+.2f} deg (tolerance {self.tolerance_deg:g} deg)")
        for name in ("lateral_mm", "vertical_mm", "longitudinal_mm"):
            v = getattr(self, name)
            tol = self.vertical_tolerance_mm if name == "vertical_mm" else self.tolerance_mm
            if math.isfinite(v) and abs(v) > tol:
                out.append(f"{name.removesuffix('_mm')} {v:+.1f} mm (tolerance {tol:g} mm)")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = (round(v, 3) if math.isfinite(v) else None) if isinstance(v, float) else v
        d["notes"] = list(self.notes)
        return d | {"passed": self.passed, "failures": self.failures}

    def summary(self) -> str:
        def f(v: float, unit: str) -> str:
            return "-" if not math.isfinite(v) else f"{v:+.2f} {unit}"

        head = ("PASS" if self.passed else "FAIL") + f" (from the {self.source})"
        return (
            f"{head}: tilt {f(self.tilt_deg, 'deg')}, roll {f(self.roll_deg, 'deg')}, "
            f"yaw {f(self.yaw_deg, 'deg')}, "
            f"lateral {f(self.lateral_mm, 'mm')}, vertical {f(self.vertical_mm, 'mm')}, "
            f"longitudinal {f(self.longitudinal_mm, 'mm')} (tolerance {self.tolerance_mm:g} mm / "
            f"{self.tolerance_deg:g} deg)"
        )


def _plane_normal(p: np.ndarray, table: Any) -> np.ndarray:
    """The table top's normal: a plane through its points away from its edges (rounded mattress edges and
    drapes bend there), refitted twice without the points more than two sigmas off it."""
    margin = 0.2 * (table.x_max_mm - table.x_min_mm)
    y0, y1 = np.percentile(p[:, 1], [10, 90])
    core = p[(p[:, 0] > table.x_min_mm + margin) & (p[:, 0] < table.x_max_mm - margin)
             & (p[:, 1] > y0) & (p[:, 1] < y1)]  # fmt: skip
    pts = core if len(core) >= 100 else p
    n = np.array([0.0, 0.0, 1.0])
    for _ in range(3):
        c = pts.mean(0)
        n = np.linalg.svd(pts - c, full_matrices=False)[2][2]
        r = (pts - c) @ n
        keep = np.abs(r) <= 2.0 * max(float(np.std(r)), 1e-6)
        if keep.sum() < 50:
            break
        pts = pts[keep]
    return n if n[2] >= 0 else -n


def drift_from_table(
    table: Any,
    table_points_mm: np.ndarray,
    *,
    table_height_mm: float | None = None,
    table_position_mm: float | None = None,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
    board_thickness_mm: float = 5.0,
) -> DriftReport:
    """Drift from a table estimate (:class:`~positioning.perception.table.TableEstimate`) and its points."""
    notes: list[str] = []
    p = np.asarray(table_points_mm, np.float64)
    tilt = roll = yaw = lateral = math.nan
    if len(p) < 200:
        notes.append("too few table points to measure its pose")
    else:
        n = _plane_normal(p, table)
        tilt = math.degrees(math.atan2(-n[1], n[2]))  # normal leaning toward -y: the head end (+y) is up
        roll = math.degrees(math.atan2(n[0], n[2]))  # normal leaning toward +x: the +x side is down
        # the long edges: per 50 mm of y, the table's lowest and highest x; a line through each
        bins = np.floor(p[:, 1] / 50.0).astype(np.int64)
        ys, lo, hi = [], [], []
        for k in np.unique(bins):
            sel = p[bins == k]
            if len(sel) >= 20:
                ys.append(sel[:, 1].mean())
                lo.append(np.percentile(sel[:, 0], 1))
                hi.append(np.percentile(sel[:, 0], 99))
        if len(ys) >= 6 and max(ys) - min(ys) >= 400.0:
            y = np.asarray(ys)
            slopes, centre = [], []
            for edge, seen in ((np.asarray(lo), table.x_min_seen), (np.asarray(hi), table.x_max_seen)):
                if seen:
                    b1, b0 = np.polyfit(y, edge, 1)
                    slopes.append(b1)
                    centre.append(b0 + b1 * y.mean())
            if slopes:
                yaw = math.degrees(math.atan(float(np.mean(slopes))))
            if len(centre) == 2:
                lateral = 0.5 * (centre[0] + centre[1])
            else:
                notes.append("lateral: a long edge of the table is out of view")
        else:
            notes.append("yaw and lateral: too little of the table's length in view")
    vertical = longitudinal = math.nan
    if table_height_mm is not None:
        vertical = float(table.top_z_mm) - (table_height_mm - reference_height_mm - board_thickness_mm)
    if table_position_mm is not None:
        if table.y_max_seen:
            longitudinal = float(table.y_max_mm) - (table_position_mm - reference_longitudinal_mm)
        else:
            notes.append("longitudinal: the table's head end is out of view")
    return DriftReport(
        tilt_deg=tilt,
        roll_deg=roll,
        yaw_deg=yaw,
        lateral_mm=lateral,
        vertical_mm=vertical,
        longitudinal_mm=longitudinal,
        notes=tuple(notes),
    )


def check_calibration(
    frames: Sequence[RGBDFrame],
    calibration: Calibration,
    *,
    table_height_mm: float | None = None,
    table_position_mm: float | None = None,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
    board_thickness_mm: float = 5.0,
    exclude_xy_mm: tuple[float, float, float, float] | None = None,
    baseline_deg: tuple[float, float] = (0.0, 0.0),
) -> DriftReport:
    """The daily check on a recording's frames (the median of each frame's drift).

    ``exclude_xy_mm`` ``(x0, x1, y0, y1)``: table points there are left out (the board lying on it).
    ``baseline_deg`` ``(tilt, roll)``: the table plane's tilt and roll measured right after calibrating (the
    room file keeps them), subtracted: a depth camera seeing a plane at an angle tilts it by a few tenths of
    a degree of its own, the same every day, which is not drift.

    Raises:
        CalibrationError: the table was found in no frame.
    """
    from positioning.perception.pipeline import Perceiver, PerceiverSettings
    from positioning.perception.pointcloud import scanner_image

    perceiver = Perceiver(settings=PerceiverSettings(landmarks="depth", track=False))
    reports = []
    for f in frames:
        state = perceiver.perceive(f, calibration)
        t = state.table
        if t is None:
            continue
        img = scanner_image(f, calibration)
        vu = np.asarray(t.pixels_vu, np.int64).reshape(-1, 2)
        pts = img[vu[:, 0], vu[:, 1]] if len(vu) else np.zeros((0, 3))
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if exclude_xy_mm is not None:
            x0, x1, y0, y1 = exclude_xy_mm
            pts = pts[~((pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1))]
        reports.append(
            drift_from_table(
                t, pts, table_height_mm=table_height_mm, table_position_mm=table_position_mm,
                reference_height_mm=reference_height_mm, reference_longitudinal_mm=reference_longitudinal_mm,
                board_thickness_mm=board_thickness_mm,
            )
        )  # fmt: skip
    if not reports:
        raise CalibrationError("the table was not found in any frame: the check needs the table top in view")
    med = {
        name: float(np.nanmedian([getattr(r, name) for r in reports]))
        if any(math.isfinite(getattr(r, name)) for r in reports)
        else math.nan
        for name in ("tilt_deg", "roll_deg", "yaw_deg", "lateral_mm", "vertical_mm", "longitudinal_mm")
    }
    med["tilt_deg"] -= baseline_deg[0]
    med["roll_deg"] -= baseline_deg[1]
    notes = tuple(dict.fromkeys(n for r in reports for n in r.notes))
    return DriftReport(**med, notes=notes, vertical_tolerance_mm=DEPTH_VERTICAL_TOLERANCE_MM)


def drift_from_board(
    frames: Sequence[RGBDFrame],
    calibration: Calibration,
    board: Any,
    *,
    table_height_mm: float | None = None,
    table_position_mm: float | None = None,
    reference_height_mm: float = 0.0,
    reference_longitudinal_mm: float = 0.0,
) -> DriftReport | None:
    """Drift from the calibration board lying on the table as when calibrating (None: not in view).

    The board's pose from its corners (:func:`cv2.solvePnP`, the camera's intrinsics) through the
    calibration, against the pose the placement and the readings give it: along y, centred; at
    ``z = H - H0`` and with its origin at ``y = L - L0`` when the readings are given. Its position and its
    yaw are precise (colour geometry, free of the depth stream's own bias); its tilt and roll from one
    planar view are not (they are reported, and :func:`positioning.calibration.workflow.check_recording`
    takes them from the table's plane instead).
    """
    import cv2

    from positioning.calibration.board import board_to_scanner
    from positioning.calibration.charuco import detect_board

    try:
        view = detect_board(frames, board, table_height_mm=0.0, table_longitudinal_mm=0.0)
    except CalibrationError:
        return None
    k = frames[0].intrinsics
    km = np.array([[k.fx, 0.0, k.ppx], [0.0, k.fy, k.ppy], [0.0, 0.0, 1.0]])
    obj = board.corners_mm()[view.ids]
    ok, rvec, tvec = cv2.solvePnP(obj, view.image_px, km, np.zeros(5), flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    r, _ = cv2.Rodrigues(rvec)
    camera_from_board = np.eye(4)
    camera_from_board[:3, :3], camera_from_board[:3, 3] = r, tvec.ravel()
    seen = calibration.scanner_from_camera @ camera_from_board
    expected = board_to_scanner(
        board, table_height_mm or 0.0, table_position_mm or 0.0,
        reference_height_mm=reference_height_mm, reference_longitudinal_mm=reference_longitudinal_mm,
    )  # fmt: skip
    e = seen[:3, :3] @ expected[:3, :3].T
    w = np.degrees([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]]) / 2
    width, length = board.size_mm
    centre_b = np.array([width / 2, length / 2, 0.0, 1.0])
    d = (seen @ centre_b)[:3] - (expected @ centre_b)[:3]
    notes = []
    if table_height_mm is None:
        notes.append("vertical: no table height reading")
    if table_position_mm is None:
        notes.append("longitudinal: no table position reading")
    return DriftReport(
        tilt_deg=float(w[0]),
        roll_deg=float(w[1]),
        yaw_deg=float(-w[2]),
        lateral_mm=float(d[0]),
        vertical_mm=float(d[2]) if table_height_mm is not None else math.nan,
        longitudinal_mm=float(d[1]) if table_position_mm is not None else math.nan,
        notes=tuple(notes),
        source="board",
    )
