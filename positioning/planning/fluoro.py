"""Fluoroscopy set-up from the patient model: the target region, the table position, the collimated field.

The same perceived patient the CT plan uses (landmark levels, body slices and their centroids,
:func:`~positioning.planning.plan.estimate_body`) gives a procedure's target region
(:class:`~positioning.planning.procedure.TargetSpec`: along the body between two planning landmarks,
across it from the midline, front to back as fractions of its thickness), then:

* the table moves (vertical, longitudinal, lateral) that put the target's centre at the C-arm's
  isocenter, clamped to the table's reach, with the residual where the centre then lies;
* the box grows by the estimate's own uncertainty (two sigmas of its landmarks' levels along the body,
  :data:`BODY_UNCERTAINTY_MM` across it and front to back), so that the field holds the true target;
* for a PA beam (along +z) and a lateral beam (along +x), the collimated field at the detector that just
  covers the target box as the diverging beam projects it (magnification from the source distances), and
  its area against the uncollimated field: the share saved is a dose-area-product proxy (Bang et al.,
  ERCP, Am J Gastroenterol 2020: exposing only the target's region cuts dose to neighbouring tissue);
* checks with stable codes (:class:`FluoroCode`) besides perception's and the orientation and landmark
  checks: the target beyond the reachable field, the table height out of the C-arm's range, the arms in a
  lateral beam's path, another person close to the table (scatter falls with the square of distance),
  a target larger than the detector.

Convention: the C-arm frame (``procedure.py``): origin at the C-arm isocenter, +x lateral (to the right of
an observer at the foot of the table), +y along the table toward its head end, +z up, mm; the room's
calibration maps the camera to it. PA beam: source at ``(0, 0, -SOD)``, detector plane ``z = SID - SOD``,
detector axes u = +x, v = +y. Lateral beam: source at ``(-SOD, 0, 0)``, detector plane ``x = SID - SOD``,
u = +y, v = +z. Table moves: positive = up, toward +y, toward +x.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from positioning.conventions import BODY_AXES, ArmState, PatientPosition
from positioning.perception.state import PatientState
from positioning.planning import checks as ck
from positioning.planning.plan import DEFAULT_PLAN_SETTINGS, PlanSettings, estimate_body, range_from_levels
from positioning.planning.procedure import CArm, Procedure, TargetSpec

__all__ = [
    "FLUORO_SCHEMA",
    "FluoroCode",
    "BodySlices",
    "TargetBox",
    "Field",
    "FluoroTableOffset",
    "FluoroPlan",
    "target_box",
    "table_moves",
    "project",
    "collimated_field",
    "make_fluoro_plan",
]

FLUORO_SCHEMA = "positioning.fluoro_plan/1"
#: A residual beyond this after the table's clamped moves is reported (mm).
RESIDUAL_TOLERANCE_MM = 10.0
#: Arm keypoints this close (along y) to the target's range lie in a lateral beam's path.
ARM_BEAM_MARGIN_MM = 50.0
#: The target box grows by this many sigmas of its landmarks' levels along y, and by
#: :data:`BODY_UNCERTAINTY_MM` across and front to back (the body model's own error), so that the field
#: covers the true target despite the estimate's error.
LEVEL_SIGMAS = 2.0
BODY_UNCERTAINTY_MM = 10.0


class FluoroCode(enum.StrEnum):
    """Stable check codes of a fluoroscopy plan (besides perception's and the shared CT ones)."""

    TARGET_NOT_FOUND = "TARGET_NOT_FOUND"
    TARGET_OUT_OF_REACH = "TARGET_OUT_OF_REACH"
    TARGET_LARGER_THAN_FIELD = "TARGET_LARGER_THAN_FIELD"
    TABLE_HEIGHT_RANGE = "TABLE_HEIGHT_RANGE"
    ARMS_IN_LATERAL_BEAM = "ARMS_IN_LATERAL_BEAM"
    PERSON_NEAR_BEAM = "PERSON_NEAR_BEAM"


@dataclasses.dataclass(frozen=True)
class BodySlices:
    """The body slice by slice along y (``(K,)`` each, NaN where unknown), C-arm frame, mm: the
    cross-section centroid and the extents along x and z."""

    y_mm: np.ndarray
    centroid_x_mm: np.ndarray
    centroid_z_mm: np.ndarray
    x_min_mm: np.ndarray
    x_max_mm: np.ndarray
    z_min_mm: np.ndarray
    z_max_mm: np.ndarray


@dataclasses.dataclass(frozen=True)
class TargetBox:
    """An axis-aligned box, C-arm frame, mm (``lo`` < ``hi`` on each axis); ``uncertainty_mm``: how much
    of it, per axis and side, is there for the estimate's own error (beyond the procedure's margin)."""

    lo_mm: np.ndarray
    hi_mm: np.ndarray
    uncertainty_mm: np.ndarray | None = None

    @property
    def center_mm(self) -> np.ndarray:
        return (self.lo_mm + self.hi_mm) / 2

    @property
    def size_mm(self) -> np.ndarray:
        return self.hi_mm - self.lo_mm

    def corners(self, shift_mm: np.ndarray | None = None) -> np.ndarray:
        """``(8, 3)`` corners, moved by ``shift_mm``."""
        c = np.array([[a, b, d] for a in (0, 1) for b in (0, 1) for d in (0, 1)], np.float64)
        pts = self.lo_mm + c * self.size_mm
        return pts if shift_mm is None else pts + shift_mm

    def grid(self, n: int = 5, shift_mm: np.ndarray | None = None) -> np.ndarray:
        """``(n^3, 3)`` points filling the box (for coverage), moved by ``shift_mm``."""
        t = np.linspace(0.0, 1.0, n)
        g = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)
        pts = self.lo_mm + g * self.size_mm
        return pts if shift_mm is None else pts + shift_mm

    def to_json(self) -> dict[str, Any]:
        r = lambda a: [round(float(v), 1) for v in a]  # noqa: E731
        out = {"center_mm": r(self.center_mm), "size_mm": r(self.size_mm), "min_mm": r(self.lo_mm),
               "max_mm": r(self.hi_mm)}  # fmt: skip
        if self.uncertainty_mm is not None:
            out["uncertainty_margin_mm"] = r(self.uncertainty_mm)
        return out


def _axis(v: np.ndarray) -> tuple[int, float]:
    i = int(np.argmax(np.abs(v)))
    return i, float(np.sign(v[i]))


def target_box(
    spec: TargetSpec,
    levels_y_mm: Mapping[str, float],
    superior_sign: int,
    position: PatientPosition | str,
    body: BodySlices,
) -> TargetBox | None:
    """The target region of ``spec`` on a body (perceived, or the truth's: the same definition).

    Along y between the spec's landmarks; across the body (the patient's left axis of ``position``,
    :data:`~positioning.conventions.BODY_AXES`) from the mean cross-section centroid; front to back (the
    posterior axis) as fractions of the body's extent along it; plus the margin on every side. Means are
    over the slices inside the y range.

    Returns:
        The box, or None when a landmark is missing or no slice with a centroid lies in the range.
    """
    rng = range_from_levels(levels_y_mm, spec.superior, spec.inferior, superior_sign)
    if rng is None:
        return None
    y0, y1 = rng
    sel = (
        (body.y_mm >= y0)
        & (body.y_mm <= y1)
        & np.isfinite(body.centroid_x_mm)
        & np.isfinite(body.centroid_z_mm)
    )
    if not sel.any():
        return None
    centre = np.array([np.mean(body.centroid_x_mm[sel]), 0.0, np.mean(body.centroid_z_mm[sel])])
    extent = {
        0: (np.nanmean(body.x_min_mm[sel]), np.nanmean(body.x_max_mm[sel])),
        2: (np.nanmean(body.z_min_mm[sel]), np.nanmean(body.z_max_mm[sel])),
    }
    _sup, post, left = BODY_AXES[PatientPosition(str(position))]
    lo = np.array([np.nan, y0, np.nan])
    hi = np.array([np.nan, y1, np.nan])
    i, s = _axis(left)
    a, b = centre[i] + s * spec.left_mm[0], centre[i] + s * spec.left_mm[1]
    lo[i], hi[i] = min(a, b), max(a, b)
    j, t = _axis(post)
    e0, e1 = extent[j]
    if not (math.isfinite(e0) and math.isfinite(e1)):
        return None
    front, back = (e0, e1) if t > 0 else (e1, e0)
    f0, f1 = (front + f * (back - front) for f in spec.posterior_fraction)
    lo[j], hi[j] = min(f0, f1), max(f0, f1)
    m = spec.margin_mm
    return TargetBox(lo - m, hi + m)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FluoroTableOffset:
    """Table moves that bring the target's centre to the isocenter, clamped to the table's reach.

    Attributes:
        vertical_mm, longitudinal_mm, lateral_mm: the moves (up, toward +y, toward +x).
        requested_mm: ``(3,)`` the unclamped moves (x, y, z).
        residual_mm: ``(3,)`` where the target's centre lies after the moves (0 = at isocenter).
        table_top_z_mm: the table top's height after the move.
    """

    vertical_mm: float
    longitudinal_mm: float
    lateral_mm: float
    requested_mm: np.ndarray
    residual_mm: np.ndarray
    table_top_z_mm: float

    @property
    def move_mm(self) -> np.ndarray:
        return np.array([self.lateral_mm, self.longitudinal_mm, self.vertical_mm])

    def to_json(self) -> dict[str, Any]:
        return {
            "vertical_mm": round(self.vertical_mm, 1),
            "longitudinal_mm": round(self.longitudinal_mm, 1),
            "lateral_mm": round(self.lateral_mm, 1),
            "requested_mm": [round(float(v), 1) for v in self.requested_mm],
            "residual_mm": [round(float(v), 1) for v in self.residual_mm],
            "planned_table_top_z_mm": round(self.table_top_z_mm, 1),
        }


def table_moves(center_mm: np.ndarray, table_top_z_mm: float, c_arm: CArm) -> FluoroTableOffset:
    """The moves that bring ``center_mm`` to the isocenter, each clamped to the table's reach."""
    req = -np.asarray(center_mm, np.float64)
    lat = float(np.clip(req[0], *c_arm.table_lateral_travel_mm))
    lon = float(np.clip(req[1], *c_arm.table_longitudinal_travel_mm))
    z_lo, z_hi = c_arm.table_top_z_range_mm
    vert = float(np.clip(req[2], z_lo - table_top_z_mm, z_hi - table_top_z_mm))
    move = np.array([lat, lon, vert])
    return FluoroTableOffset(
        vertical_mm=vert,
        longitudinal_mm=lon,
        lateral_mm=lat,
        requested_mm=req,
        residual_mm=np.asarray(center_mm, np.float64) + move,
        table_top_z_mm=table_top_z_mm + vert,
    )


def project(points_mm: np.ndarray, c_arm: CArm, beam: str) -> np.ndarray:
    """Detector coordinates ``(N, 2)`` (u, v; mm from the detector's centre) of points in the C-arm frame
    (after the table's move), through the diverging beam (``beam``: ``"PA"`` or ``"lateral"``)."""
    p = np.atleast_2d(np.asarray(points_mm, np.float64))
    sid, sod = c_arm.source_to_image_mm, c_arm.source_to_isocenter_mm
    if beam == "PA":
        k = sid / (p[:, 2] + sod)
        return np.stack([p[:, 0] * k, p[:, 1] * k], 1)
    if beam == "lateral":
        k = sid / (p[:, 0] + sod)
        return np.stack([p[:, 1] * k, p[:, 2] * k], 1)
    raise ValueError(f"beam must be PA or lateral, got {beam!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Field:
    """A collimated field at the detector (mm): the rectangle ``[u0, u1] x [v0, v1]``.

    Attributes:
        beam: ``PA`` or ``lateral``.
        u_mm, v_mm: its edges along the detector axes (after clipping to the detector).
        covers_target: the target's projection fits on the detector (nothing clipped).
        magnification: at the target's centre (source-to-image over source-to-centre distance).
        area_saved_percent: its area against the uncollimated field, saved (a dose-area-product proxy).
    """

    beam: str
    u_mm: tuple[float, float]
    v_mm: tuple[float, float]
    covers_target: bool
    magnification: float
    area_saved_percent: float

    @property
    def width_mm(self) -> float:
        return self.u_mm[1] - self.u_mm[0]

    @property
    def height_mm(self) -> float:
        return self.v_mm[1] - self.v_mm[0]

    def contains(self, uv_mm: np.ndarray) -> np.ndarray:
        uv = np.atleast_2d(uv_mm)
        eps = 1e-6
        return (
            (uv[:, 0] >= self.u_mm[0] - eps)
            & (uv[:, 0] <= self.u_mm[1] + eps)
            & (uv[:, 1] >= self.v_mm[0] - eps)
            & (uv[:, 1] <= self.v_mm[1] + eps)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "beam": self.beam,
            "width_mm": round(self.width_mm, 1),
            "height_mm": round(self.height_mm, 1),
            "u_mm": [round(v, 1) for v in self.u_mm],
            "v_mm": [round(v, 1) for v in self.v_mm],
            "covers_target": self.covers_target,
            "magnification": round(self.magnification, 3),
            "area_saved_percent": round(self.area_saved_percent, 1),
        }


def collimated_field(box: TargetBox, move_mm: np.ndarray, c_arm: CArm, beam: str) -> Field:
    """The smallest rectangle at the detector that holds the projection of the target box after the
    table's move, clipped to the detector (a rectangular panel turned so that its long side lies along the
    projection's long side)."""
    uv = project(box.corners(move_mm), c_arm, beam)
    u0, v0 = uv.min(0)
    u1, v1 = uv.max(0)
    det = c_arm.detector
    if (u1 - u0 > v1 - v0) != (det.width_mm > det.height_mm):  # a rectangular panel turns to the target
        det = dataclasses.replace(det, width_mm=det.height_mm, height_mm=det.width_mm)
    hw, hh = det.width_mm / 2, det.height_mm / 2
    fits = bool(u0 >= -hw and u1 <= hw and v0 >= -hh and v1 <= hh)
    if fits and det.shape == "circle":
        fits = all(det.contains(float(u), float(v)) for u in (u0, u1) for v in (v0, v1))
    cu0, cu1 = float(np.clip(u0, -hw, hw)), float(np.clip(u1, -hw, hw))
    cv0, cv1 = float(np.clip(v0, -hh, hh)), float(np.clip(v1, -hh, hh))
    area = max(0.0, cu1 - cu0) * max(0.0, cv1 - cv0)
    centre = box.center_mm + move_mm
    depth = centre[2] if beam == "PA" else centre[0]
    return Field(
        beam=beam,
        u_mm=(cu0, cu1),
        v_mm=(cv0, cv1),
        covers_target=fits,
        magnification=c_arm.source_to_image_mm / (depth + c_arm.source_to_isocenter_mm),
        area_saved_percent=100.0 * max(0.0, 1.0 - area / det.area_mm2),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class FluoroPlan:
    """A fluoroscopy set-up for the perceived patient (see the module docstring).

    Attributes:
        procedure: its name.
        status: perception's status.
        frame_number: the frame planned on.
        patient_position, arms: as perceived (None without a patient).
        target: the target box (None: not found; a check says why).
        table_offset: the table moves.
        fields: ``{"PA": Field, "lateral": Field}``.
        checks: findings, errors first.
    """

    procedure: str
    status: Any
    frame_number: int | None = None
    patient_position: PatientPosition | None = None
    arms: ArmState | None = None
    target: TargetBox | None = None
    table_offset: FluoroTableOffset | None = None
    fields: Mapping[str, Field] = dataclasses.field(default_factory=dict)
    checks: tuple[ck.Check, ...] = ()

    @property
    def ok(self) -> bool:
        return self.target is not None and not any(c.severity == ck.Severity.ERROR for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": FLUORO_SCHEMA,
            "frame": "C-arm: origin at the isocenter, +x lateral, +y toward the table's head end, +z up (mm)",
            "procedure": self.procedure,
            "status": str(getattr(self.status, "value", self.status)),
            "frame_number": self.frame_number,
            "patient_position": None if self.patient_position is None else str(self.patient_position),
            "arms": None if self.arms is None else str(self.arms),
            "target": None if self.target is None else self.target.to_json(),
            "table_offset": None if self.table_offset is None else self.table_offset.to_json(),
            "field": None if "PA" not in self.fields else self.fields["PA"].to_json(),
            "field_lateral": None if "lateral" not in self.fields else self.fields["lateral"].to_json(),
            "checks": [c.to_json() for c in self.checks],
            "ok": self.ok,
        }


def _check(code: FluoroCode, severity: ck.Severity, message: str, **details: Any) -> ck.Check:
    return ck.Check(code=str(code), severity=severity, message=message, details=details)


def _arms_in_lateral_beam(state: PatientState, box: TargetBox) -> list[ck.Check]:
    if state.arms not in (ArmState.SIDES, ArmState.CHEST):
        return []
    y0, y1 = box.lo_mm[1] - ARM_BEAM_MARGIN_MM, box.hi_mm[1] + ARM_BEAM_MARGIN_MM
    hits = sorted(
        n
        for n in ("left_elbow", "right_elbow", "left_wrist", "right_wrist")
        if state.landmark_confidence.get(n, 0.0) > 0 and y0 <= float(state.landmarks_mm[n][1]) <= y1
    )
    if not hits:
        return []
    return [
        _check(
            FluoroCode.ARMS_IN_LATERAL_BEAM,
            ck.Severity.WARNING,
            f"The arms lie beside the target ({', '.join(h.replace('_', ' ') for h in hits)}): a lateral "
            "beam passes through them (more dose, a worse image). Raise the arms for lateral views.",
            arm_keypoints=hits,
        )
    ]


def make_fluoro_plan(
    state: PatientState,
    procedure: Procedure,
    *,
    settings: PlanSettings = DEFAULT_PLAN_SETTINGS,
    expected_position: PatientPosition | str | None = None,
) -> FluoroPlan:
    """Plan a fluoroscopy set-up for the perceived patient (never truth): target, table moves, fields.

    Args:
        state: perception's output for the frame to plan on.
        procedure: the procedure.
        settings: model files and check thresholds (shared with CT planning).
        expected_position: the position entered for the procedure (default: the procedure's accepted).
    """
    cs = settings.checks
    base: dict[str, Any] = {
        "procedure": procedure.name,
        "status": state.status,
        "frame_number": state.frame_number,
    }
    has_landmarks = any(state.landmark_confidence.get(k, 0.0) > 0 for k in state.landmarks_mm)
    found = ck.check_perception(state.status, state.message, has_landmarks=has_landmarks, notes=state.notes)
    if not state.has_patient or state.table is None or state.profile is None:
        return FluoroPlan(**base, checks=ck.sort_checks(found))
    position = state.patient_position
    base.update(patient_position=position, arms=state.arms)
    expected = (
        (PatientPosition(str(expected_position)),) if expected_position else procedure.expected_positions
    )
    found += ck.check_orientation(position, state.position_confidence, expected, settings=cs)
    if getattr(state.status, "value", state.status) == "SECOND_PERSON":
        found.append(
            _check(
                FluoroCode.PERSON_NEAR_BEAM,
                ck.Severity.WARNING,
                "Someone stands at the table: step back from the primary beam before exposing (scatter "
                "falls with the square of the distance), or wear shielding.",
            )
        )
    if position is None:
        found.append(
            _check(FluoroCode.TARGET_NOT_FOUND, ck.Severity.ERROR,
                   "The patient's position is unknown, so the target cannot be placed in the body.")
        )  # fmt: skip
        return FluoroPlan(**base, checks=ck.sort_checks(found))
    keypoints = {
        k: np.asarray(v, np.float64)
        for k, v in state.landmarks_mm.items()
        if state.landmark_confidence.get(k, 0.0) > 0 and np.all(np.isfinite(v))
    }
    body = estimate_body(state, keypoints, settings=settings)
    anatomy = body.anatomy
    sigma = {k: v.sigma_mm for k, v in anatomy.levels.items()}
    conf = {k: v.confidence for k, v in anatomy.levels.items()}
    found += ck.check_landmarks(procedure.target.landmarks, sigma, conf, anatomy.issues, settings=cs)
    f = body.features
    slices = BodySlices(
        y_mm=f.y_mm,
        centroid_x_mm=body.centroid_x_mm,
        centroid_z_mm=body.centroid_z_mm,
        x_min_mm=f.x_min_mm,
        x_max_mm=f.x_max_mm,
        z_min_mm=2.0 * body.centroid_z_mm
        - f.top_z_mm,  # the back, as far below the centroid as the top is above
        z_max_mm=f.top_z_mm,
    )
    levels = {k: v.y_mm for k, v in anatomy.levels.items()}
    box = target_box(procedure.target, levels, anatomy.superior_sign, position, slices)
    if box is not None:
        spec = procedure.target
        level_sigma = max(sigma.get(spec.superior.landmark, 0.0), sigma.get(spec.inferior.landmark, 0.0))
        grow = np.array([BODY_UNCERTAINTY_MM, LEVEL_SIGMAS * level_sigma, BODY_UNCERTAINTY_MM])
        box = TargetBox(box.lo_mm - grow, box.hi_mm + grow, uncertainty_mm=grow)
    if box is None:
        found.append(
            _check(
                FluoroCode.TARGET_NOT_FOUND,
                ck.Severity.ERROR,
                f"The target ({procedure.target.superior.landmark.replace('_', ' ')} to "
                f"{procedure.target.inferior.landmark.replace('_', ' ')}) could not be placed: its landmarks "
                "or the body there are not seen. Check the patient and the overlay.",
            )
        )
        return FluoroPlan(**base, checks=ck.sort_checks(found))
    c_arm = procedure.c_arm
    offset = table_moves(box.center_mm, float(state.table.top_z_mm), c_arm)
    fields = {beam: collimated_field(box, offset.move_mm, c_arm, beam) for beam in ("PA", "lateral")}
    found += _reach_checks(box, offset, fields, c_arm)
    found += _arms_in_lateral_beam(state, box)
    return FluoroPlan(**base, target=box, table_offset=offset, fields=fields, checks=ck.sort_checks(found))


def _reach_checks(
    box: TargetBox, offset: FluoroTableOffset, fields: Mapping[str, Field], c_arm: CArm
) -> list[ck.Check]:
    found: list[ck.Check] = []
    dz = float(offset.requested_mm[2] - offset.vertical_mm)
    if abs(dz) > RESIDUAL_TOLERANCE_MM:
        lo, hi = c_arm.table_top_z_range_mm
        found.append(
            _check(
                FluoroCode.TABLE_HEIGHT_RANGE,
                ck.Severity.WARNING,
                f"The table cannot reach the height that puts the target at the isocenter (its top {lo:.0f} "
                f"to {hi:.0f} mm): the target stays {offset.residual_mm[2]:+.0f} mm off vertically, so "
                "the image is magnified differently and the C-arm's rotation moves the target.",
                residual_mm=round(float(offset.residual_mm[2]), 1),
            )
        )
    off_plane = np.abs(offset.residual_mm[:2])
    if np.any(off_plane > RESIDUAL_TOLERANCE_MM):
        found.append(
            _check(
                FluoroCode.TARGET_OUT_OF_REACH,
                ck.Severity.WARNING,
                "The table cannot bring the target's centre to the isocenter: it stays "
                f"{off_plane[0]:.0f} mm lateral and {off_plane[1]:.0f} mm longitudinal from it, so the "
                "C-arm's rotation moves the target in the image. Move the patient or the C-arm.",
                residual_mm=[round(float(v), 1) for v in offset.residual_mm],
            )
        )
    for beam, field in fields.items():
        if field.covers_target:
            continue
        # would it fit if the table could bring it to the isocenter? then the table's reach is the problem
        centred = collimated_field(box, -box.center_mm, c_arm, beam)
        if centred.covers_target:
            found.append(
                _check(
                    FluoroCode.TARGET_OUT_OF_REACH,
                    ck.Severity.ERROR,
                    f"The table cannot move far enough: part of the target falls outside the {beam} field "
                    f"(its centre stays {offset.residual_mm[0]:+.0f}, {offset.residual_mm[1]:+.0f}, "
                    f"{offset.residual_mm[2]:+.0f} mm from the isocenter). Move the patient or the C-arm.",
                    beam=beam,
                )
            )
        else:
            found.append(
                _check(
                    FluoroCode.TARGET_LARGER_THAN_FIELD,
                    ck.Severity.WARNING,
                    f"The target is larger than the detector in the {beam} view "
                    f"({field.width_mm:.0f} x {field.height_mm:.0f} mm shown): it needs more than one "
                    "field, or a larger detector.",
                    beam=beam,
                )
            )
    return found
