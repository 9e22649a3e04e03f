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
    "table_points_mm",
    "check_calibration",
    "PlaneSpread",
    "table_plane_angles",
    "median_standard_error",
    "angle_uncertainties",
]

TOLERANCE_MM = 2.0
TOLERANCE_DEG = 0.5
#: Positions from the depth stream and the mattress's outline (the table-only check) hold to a few
#: millimetres at 2 m, not to 2 mm: the board gives them to 2 mm.
DEPTH_TOLERANCE_MM = 5.0


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
        notes: what was not measured and why; source: what the figures come from.
        seen_top_z_mm: the table top's height as seen in depth.
        tilt_uncertainty_deg, roll_uncertainty_deg, yaw_uncertainty_deg, lateral_uncertainty_mm,
        vertical_uncertainty_mm: each figure's standard uncertainty (the scatter of its frames, as these
            frames show it or, for tilt and roll, as the room's calibration measured it, over the median's
            sqrt(n); for tilt and roll with the spread between table positions the room file keeps); a
            figure fails when it lies beyond its tolerance by more than
            twice it, and is in doubt when beyond by less (0: not known, judged as measured).
        frames: frames the figures are the median of.
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
    seen_top_z_mm: float = math.nan
    tilt_uncertainty_deg: float = 0.0
    roll_uncertainty_deg: float = 0.0
    yaw_uncertainty_deg: float = 0.0
    lateral_uncertainty_mm: float = 0.0
    vertical_uncertainty_mm: float = 0.0
    frames: int = 1

    def _judged(self) -> list[tuple[str, float, float, float, str]]:
        """``(name, value, uncertainty, tolerance, unit)`` of every figure measured."""
        out = []
        for name in ("tilt_deg", "roll_deg", "yaw_deg", "lateral_mm", "vertical_mm", "longitudinal_mm"):
            v = getattr(self, name)
            if not math.isfinite(v):
                continue
            stem, unit = name.rsplit("_", 1)
            u = getattr(self, f"{stem}_uncertainty_{unit}", 0.0)
            tol = (self.tolerance_deg if unit == "deg" else
                   self.vertical_tolerance_mm if stem == "vertical" else self.tolerance_mm)  # fmt: skip
            out.append((stem, v, u if math.isfinite(u) else 0.0, tol, unit))
        return out

    @staticmethod
    def _figure(v: float, u: float, unit: str) -> str:
        digits = 2 if unit == "deg" else 1
        return f"{v:+.{digits}f}" + (f" +- {u:.{digits}f}" if u > 0 else "") + f" {unit}"

    @property
    def failures(self) -> list[str]:
        """Figures beyond their tolerance, beyond doubt (by more than twice their uncertainty)."""
        return [
            f"{stem} {self._figure(v, u, unit)} (tolerance {tol:g} {unit})"
            for stem, v, u, tol, unit in self._judged()
            if abs(v) - 2.0 * u > tol
        ]

    @property
    def doubts(self) -> list[str]:
        """Figures beyond their tolerance by less than twice their uncertainty: neither passed nor failed
        (a longer recording, or the board, decides)."""
        seen_by = {"tilt": "the table's depth", "roll": "the table's depth", "vertical": "the table's depth",
                   "yaw": "the mattress's edges", "lateral": "the mattress's edges"}  # fmt: skip
        return [
            f"{stem} {self._figure(v, u, unit)}: {seen_by.get(stem, 'this check')} cannot tell it from the "
            f"{tol:g} {unit} tolerance here (record longer, or lay the board on the table)"
            for stem, v, u, tol, unit in self._judged()
            if tol < abs(v) <= tol + 2.0 * u
        ]

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"inconclusive"`` (no failure, but a figure in doubt)."""
        return "fail" if self.failures else "inconclusive" if self.doubts else "pass"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = (round(v, 3) if math.isfinite(v) else None) if isinstance(v, float) else v
        d["notes"] = list(self.notes)
        return d | {"passed": self.passed, "status": self.status, "failures": self.failures,
                    "doubts": self.doubts}  # fmt: skip

    def summary(self) -> str:
        shown = {stem: self._figure(v, u, unit) for stem, v, u, _tol, unit in self._judged()}
        head = self.status.upper() + f" (from the {self.source}, {self.frames} frames)"
        return (
            f"{head}: "
            + ", ".join(f"{stem} {shown.get(stem, '-')}"
                        for stem in ("tilt", "roll", "yaw", "lateral", "vertical", "longitudinal"))
            + f" (tolerance {self.tolerance_mm:g} mm / {self.tolerance_deg:g} deg)"
        )  # fmt: skip


def _well_spread(p: np.ndarray, mid_x: float) -> bool:
    """Points spread across the table as well as along it, on both sides of its centre line (one strip
    beside a patient leaves the roll undetermined)."""
    if len(p) < 100 or np.std(p[:, 0]) < 60.0 or np.std(p[:, 1]) < 60.0:
        return False
    return 0.25 <= float(np.mean(p[:, 0] < mid_x)) <= 0.75


def _plane_normal(p: np.ndarray, table: Any) -> np.ndarray | None:
    """The table top's normal: a plane through its points away from its edges (rounded mattress edges and
    drapes bend there) when those are spread enough, else through all of them (a patient lying on the
    middle), refitted twice without the points more than two sigmas off it; None when neither is spread
    across the table."""
    mid = 0.5 * (table.x_min_mm + table.x_max_mm)
    margin = 0.2 * (table.x_max_mm - table.x_min_mm)
    y0, y1 = np.percentile(p[:, 1], [10, 90])
    core = p[(p[:, 0] > table.x_min_mm + margin) & (p[:, 0] < table.x_max_mm - margin)
             & (p[:, 1] > y0) & (p[:, 1] < y1)]  # fmt: skip
    pts = next((c for c in (core, p) if _well_spread(c, mid)), None)
    if pts is None:
        return None
    n = np.array([0.0, 0.0, 1.0])
    for _ in range(3):
        c = pts.mean(0)
        n = np.linalg.svd(pts - c, full_matrices=False)[2][2]
        r = (pts - c) @ n
        keep = np.abs(r) <= 2.0 * max(float(np.std(r)), 1e-6)
        if keep.sum() < 50 or not _well_spread(pts[keep], mid):
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
    plane_only: bool = False,
) -> DriftReport:
    """Drift from a table estimate (:class:`~positioning.perception.table.TableEstimate`) and its points
    (``plane_only``: tilt and roll alone, as with a patient on the table hiding its edges' middle)."""
    notes: list[str] = []
    p = np.asarray(table_points_mm, np.float64)
    tilt = roll = yaw = lateral = math.nan
    n = _plane_normal(p, table) if len(p) >= 200 else None
    if len(p) < 200:
        notes.append("too few table points to measure its pose")
    elif n is None:
        notes.append("tilt and roll: too little of the table is seen flat on both sides")
    else:
        tilt = math.degrees(math.atan2(-n[1], n[2]))  # normal leaning toward -y: the head end (+y) is up
        roll = math.degrees(math.atan2(n[0], n[2]))  # normal leaning toward +x: the +x side is down
    if plane_only:
        notes.append("yaw and lateral: not measured with a patient on the table")
    elif len(p) >= 200:
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
        seen_top_z_mm=float(table.top_z_mm),
    )


def table_points_mm(frame: RGBDFrame, calibration: Calibration, table: Any) -> np.ndarray:
    """``(N, 3)`` scanner-frame points of the table top's inlier pixels in ``frame`` (finite ones)."""
    from positioning.perception.pointcloud import scanner_image

    img = scanner_image(frame, calibration)
    vu = np.asarray(table.pixels_vu, np.int64).reshape(-1, 2)
    pts = img[vu[:, 0], vu[:, 1]] if len(vu) else np.zeros((0, 3))
    return pts[np.all(np.isfinite(pts), axis=1)]


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
    spread: PlaneSpread | None = None,
) -> DriftReport:
    """The daily check on a recording's frames (the median of each frame's drift).

    ``exclude_xy_mm`` ``(x0, x1, y0, y1)``: table points there are left out (the board lying on it).
    ``baseline_deg`` ``(tilt, roll)``: the table plane's tilt and roll measured right after calibrating (the
    room file keeps them), subtracted: a depth camera seeing a plane at an angle tilts it by a few tenths of
    a degree of its own, the same every day, which is not drift.
    ``spread``: how much the table plane's tilt and roll scatter from frame to frame in this room, and
    between table positions (the room file keeps it, measured when calibrating): the report's tilt and roll
    uncertainties come from it and from these frames' own scatter (see :func:`angle_uncertainties`), so
    that a depth camera's noise in a far room is not read as drift (see :attr:`DriftReport.doubts`).

    Raises:
        CalibrationError: the table was found in no frame.
    """
    reports = _frame_reports(
        frames, calibration, exclude_xy_mm=exclude_xy_mm, table_height_mm=table_height_mm,
        table_position_mm=table_position_mm, reference_height_mm=reference_height_mm,
        reference_longitudinal_mm=reference_longitudinal_mm, board_thickness_mm=board_thickness_mm,
    )  # fmt: skip
    if not reports:
        raise CalibrationError("the table was not found in any frame: the check needs the table top in view")
    med = {
        name: float(np.nanmedian([getattr(r, name) for r in reports]))
        if any(math.isfinite(getattr(r, name)) for r in reports)
        else math.nan
        for name in ("tilt_deg", "roll_deg", "yaw_deg", "lateral_mm", "vertical_mm", "longitudinal_mm",
                     "seen_top_z_mm")
    }  # fmt: skip
    med["tilt_deg"] -= baseline_deg[0]
    med["roll_deg"] -= baseline_deg[1]
    uncertainty = angle_uncertainties(np.array([(r.tilt_deg, r.roll_deg) for r in reports], float), spread)
    for name in ("yaw_deg", "lateral_mm", "vertical_mm"):  # their frames' own scatter (3 frames or more)
        values = _finite([getattr(r, name) for r in reports])
        sd = _frames_sd(values)
        stem, unit = name.rsplit("_", 1)
        uncertainty[f"{stem}_uncertainty_{unit}"] = (
            median_standard_error(sd, len(values)) if math.isfinite(sd) else 0.0
        )
    notes = list(dict.fromkeys(n for r in reports for n in r.notes))
    if math.isfinite(med["longitudinal_mm"]):
        notes.append(
            f"longitudinal {med['longitudinal_mm']:+.1f} mm from the mattress's head end: not judged "
            "(a mattress ends short of its table; the board gives it)"
        )
        med["longitudinal_mm"] = math.nan
    return DriftReport(
        **med, **uncertainty, notes=tuple(notes), tolerance_mm=DEPTH_TOLERANCE_MM,
        vertical_tolerance_mm=DEPTH_TOLERANCE_MM, frames=len(reports),
    )  # fmt: skip


def _frame_reports(
    frames: Sequence[RGBDFrame],
    calibration: Calibration,
    *,
    exclude_xy_mm: tuple[float, float, float, float] | None = None,
    **drift: Any,
) -> list[DriftReport]:
    """One :func:`drift_from_table` per frame the table was found in (``drift``: its keyword arguments)."""
    from positioning.perception.pipeline import Perceiver, PerceiverSettings

    perceiver = Perceiver(settings=PerceiverSettings(landmarks="depth", track=False))
    reports = []
    for f in frames:
        t = perceiver.perceive(f, calibration).table
        if t is None:
            continue
        pts = table_points_mm(f, calibration, t)
        if exclude_xy_mm is not None:
            x0, x1, y0, y1 = exclude_xy_mm
            pts = pts[~((pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1))]
        reports.append(drift_from_table(t, pts, **drift))
    return reports


def _finite(values: Any) -> np.ndarray:
    v = np.asarray(values, float)
    return v[np.isfinite(v)]


def _frames_sd(values: np.ndarray) -> float:
    """The frames' own scatter (standard deviation) of finite ``values``; NaN with fewer than 3."""
    return float(np.std(values, ddof=1)) if len(values) >= 3 else math.nan


def angle_uncertainties(angles_deg: np.ndarray, spread: PlaneSpread | None) -> dict[str, float]:
    """``{"tilt_uncertainty_deg": .., "roll_uncertainty_deg": ..}`` of the median of ``(N, 2)`` per-frame
    (tilt, roll) against the baseline: their frames' scatter over the median's sqrt(n) (these frames' own
    with 3 or more, or the room's from ``spread``, the larger), and the spread between table positions
    (``spread``'s, not averaged down); 0 where neither is known."""
    out = {}
    for k, name in enumerate(("tilt", "roll")):
        values = _finite(np.asarray(angles_deg, float).reshape(-1, 2)[:, k])
        own = _frames_sd(values)
        prior = math.nan if spread is None else getattr(spread, f"{name}_frame_sd_deg")
        sd = max((v for v in (own, prior) if math.isfinite(v)), default=math.nan)
        between = 0.0 if spread is None else getattr(spread, f"{name}_position_sd_deg")
        out[f"{name}_uncertainty_deg"] = (
            math.hypot(median_standard_error(sd, len(values)), between)
            if math.isfinite(sd) and len(values)
            else 0.0
        )
    return out


def median_standard_error(sd: float, n: int) -> float:
    """The standard error of the median of ``n`` values scattered by ``sd`` (sqrt(pi/2) sd / sqrt(n))."""
    return math.sqrt(math.pi / 2.0) * sd / math.sqrt(max(n, 1))


@dataclasses.dataclass(frozen=True)
class PlaneSpread:
    """How the table plane's tilt and roll from depth scatter in a room (measured when calibrating).

    Two parts: the scatter from one frame to the next within a recording (averages down over a check's
    frames), and the spread between the calibration's table positions of each recording's median (does
    not: the depth's own tilt of the plane changes with where the table stands, so a check at another
    height or position differs from the baseline by about that much).

    Attributes:
        tilt_frame_sd_deg, roll_frame_sd_deg: the frames' scatter about their recording's median
            (standard deviation, pooled over the recordings).
        tilt_position_sd_deg, roll_position_sd_deg: the spread of the recordings' medians (standard
            deviation; 0 with a single recording).
        frames, recordings: what they were measured on.
    """

    tilt_frame_sd_deg: float
    roll_frame_sd_deg: float
    tilt_position_sd_deg: float
    roll_position_sd_deg: float
    frames: int
    recordings: int

    @classmethod
    def of(cls, angles_deg: Sequence[np.ndarray]) -> PlaneSpread:
        """From each recording's ``(N_k, 2)`` per-frame (tilt, roll) (3 frames at least in all)."""
        groups = [a[np.all(np.isfinite(a), axis=1)] for a in (np.asarray(g, float).reshape(-1, 2)
                                                             for g in angles_deg)]  # fmt: skip
        groups = [g for g in groups if len(g)]
        n = sum(len(g) for g in groups)
        if n < 3:
            raise CalibrationError(
                f"the table's plane was measured in {n} frames: its scatter needs 3 at least"
            )
        medians = np.array([np.median(g, axis=0) for g in groups])
        residuals = np.concatenate([g - np.median(g, axis=0) for g in groups])
        dof = max(n - len(groups), 1)
        frame_sd = np.sqrt((residuals**2).sum(axis=0) / dof)
        position_sd = np.std(medians, axis=0, ddof=1) if len(groups) > 1 else np.zeros(2)
        return cls(float(frame_sd[0]), float(frame_sd[1]), float(position_sd[0]), float(position_sd[1]),
                   n, len(groups))  # fmt: skip

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}


def table_plane_angles(frames: Sequence[RGBDFrame], calibration: Calibration) -> np.ndarray:
    """``(N, 2)`` per-frame (tilt, roll) of the table plane in depth (NaN where not measurable), as
    :func:`check_calibration` measures them."""
    reports = _frame_reports(frames, calibration, plane_only=True)
    return np.array([(r.tilt_deg, r.roll_deg) for r in reports], float).reshape(-1, 2)


def drift_from_board(
    frames: Sequence[RGBDFrame],
    calibration: Calibration,
    board: Any,
    *,
    face_z_mm: float,
    table_position_mm: float | None = None,
    reference_longitudinal_mm: float = 0.0,
) -> DriftReport | None:
    """In-plane drift from the calibration board lying on the table as when calibrating (None: not in view).

    Each corner's ray through the calibration meets the board's plane (``face_z_mm``: from the height
    reading, or from the table seen in depth); the corners found there are fitted to where the placement
    puts them (a rigid motion in the plane): yaw, lateral drift, and with the longitudinal reading the
    longitudinal drift. Colour geometry, so free of the depth stream's own bias; tilt, roll and height are
    not measured this way (a plane seen from 2 m fixes them poorly) and come from the table's depth.
    """
    from positioning.calibration.board import board_to_scanner
    from positioning.calibration.charuco import detect_board

    try:
        view = detect_board(frames, board, table_height_mm=0.0, table_longitudinal_mm=0.0)
    except CalibrationError:
        return None
    k = frames[0].intrinsics
    m = calibration.scanner_from_camera
    rays = np.stack([(view.image_px[:, 0] - k.ppx) / k.fx, (view.image_px[:, 1] - k.ppy) / k.fy,
                     np.ones(len(view.ids))], 1) @ m[:3, :3].T  # fmt: skip
    origin = m[:3, 3]
    t = (face_z_mm - origin[2]) / rays[:, 2]
    seen = origin[:2] + t[:, None] * rays[:, :2]
    expected_t = board_to_scanner(
        board, face_z_mm, table_position_mm if table_position_mm is not None else 0.0,
        reference_longitudinal_mm=reference_longitudinal_mm if table_position_mm is not None else 0.0,
    )  # fmt: skip
    expected = (board.corners_mm()[view.ids] @ expected_t[:3, :3].T + expected_t[:3, 3])[:, :2]
    # the rigid motion in the plane that takes the expected corners to the seen ones (Kabsch in 2-D)
    ce, cs = expected.mean(0), seen.mean(0)
    u, _, vt = np.linalg.svd((expected - ce).T @ (seen - cs))
    r = (u @ vt).T
    if np.linalg.det(r) < 0:  # a reflection is no motion of a board lying face up
        vt[-1] *= -1
        r = (u @ vt).T
    yaw = -math.degrees(math.atan2(r[1, 0], r[0, 0]))  # the head end turned toward +x: positive
    d = cs - ce
    notes = ["longitudinal: no table position reading"] if table_position_mm is None else []
    return DriftReport(
        tilt_deg=math.nan,
        roll_deg=math.nan,
        yaw_deg=yaw,
        lateral_mm=float(d[0]),
        longitudinal_mm=float(d[1]) if table_position_mm is not None else math.nan,
        notes=tuple(notes),
        source="board",
    )
