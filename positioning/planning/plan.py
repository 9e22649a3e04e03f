"""The plan a technologist acts on: scan range, isocenter, table offsets, checks and dose, from one
:class:`~positioning.perception.state.PatientState` and a :class:`~positioning.planning.protocol.Protocol`.

Steps of :func:`make_plan` (each a pure function of its own module):

1. perception's status (no table, empty table, second person) becomes checks; without a patient the
   plan has no position, range or offsets, only the checks saying why;
2. landmark levels: the keypoint rules (:mod:`positioning.planning.anatomy`) fused with the level
   network's reading of the patient's height map (:mod:`positioning.planning.level_net`, when
   ``models/level_net.pt`` is present and :attr:`PlanSettings.use_level_net`), and the network's check
   that the body's shape agrees with the perceived head direction;
3. scan range from the protocol's bounds: the superior bound's landmark plus its margin toward the head,
   the inferior bound's minus its margin toward the feet (head toward +y head first, -y feet first);
   ``start_mm < end_mm`` along scanner y whatever the direction;
4. isocenter: the mean of the shape model's cross-section centroids over the protocol's isocenter region
   (the scan range unless the protocol says otherwise; :mod:`positioning.planning.isocenter`);
5. table offsets (below), checks (:mod:`positioning.planning.checks`), dose
   (:mod:`positioning.planning.dose`).

Table offsets (all relative to the table's position in the frame that was planned):

* ``vertical_mm``: table move up (positive) or down that brings the isocenter to z = 0, i.e.
  ``-isocenter.z_mm``, clamped so that the table top stays within :attr:`TableLimits.top_z_range_mm`;
  when the limit binds, ``vertical_residual_mm`` is the isocenter's z after the move and a
  ``TABLE_LIMIT`` check says so (``requested_vertical_mm`` keeps ``-isocenter.z_mm``).
* ``longitudinal_mm``: table travel along +y (into the gantry) that brings the scan's *first* slice to
  the scan plane (y = 0): ``-first_slice_mm``. The first slice is the superior end for craniocaudal
  scans, the inferior end for caudocranial ones. Both ends' travel must lie within
  :attr:`TableLimits.longitudinal_travel_mm`.
* ``lateral_patient_move_mm``: tables do not move sideways; the patient should be moved by
  ``-isocenter.x_mm`` along x (reported, and a ``LATERAL_OFF_CENTRE`` check beyond the tolerance).

When the console supplies the current longitudinal table position (``table_position_mm``, a reading that
increases as the table moves into the gantry), the range is also given in table coordinates: the
readings at which the first and the last slice are in the scan plane, ``table_position_mm - y``.

Convention: scanner frame (IEC 61217: +x lateral, to the right of an observer at the foot of the table
facing the gantry; +y into the gantry; +z up; origin at the isocenter), mm. DICOM patient positions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning.conventions import ArmState, PatientPosition
from positioning.perception.heightmap import height_map
from positioning.perception.state import PatientState
from positioning.perception.status import PerceptionStatus
from positioning.planning import checks as ck
from positioning.planning.anatomy import (
    PLANNING_LANDMARKS,
    AnatomyEstimate,
    LandmarkModel,
    estimate_levels,
    fuse_levels,
    keypoint_anchors,
    load_landmark_model,
)
from positioning.planning.dose import CenteringImpact, OverscanImpact, centering_impact, overscan_impact
from positioning.planning.isocenter import (
    IsocenterEstimate,
    IsocenterModel,
    SliceFeatures,
    body_coordinate,
    isocenter_over,
    load_isocenter_model,
    posture_group,
    predict_centroids,
    slice_features,
)
from positioning.planning.level_net import load_level_net
from positioning.planning.protocol import Protocol, RangeBound, ScanDirection

__all__ = [
    "TableLimits",
    "PlanSettings",
    "DEFAULT_PLAN_SETTINGS",
    "ScanRange",
    "TableOffset",
    "Plan",
    "bound_y_mm",
    "range_from_levels",
    "table_offsets",
    "MOTION_KEYPOINTS",
    "surface_signature",
    "surface_displacement",
    "make_plan",
    "plan_summary",
    "PLAN_SCHEMA",
]

PLAN_SCHEMA = "positioning.plan/1"
#: A change of the table's foot-end position smaller than this is estimation noise, not a table move.
TABLE_MOVE_MIN_MM = 30.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableLimits:
    """The table's travel (set them from the scanner's specification).

    Attributes:
        top_z_range_mm: allowed scanner z of the table top as the camera sees it (the mattress top),
            lowest and highest.
        longitudinal_travel_mm: allowed travel along +y from the table's current position (negative =
            out of the gantry), least and most.
    """

    top_z_range_mm: tuple[float, float] = (-450.0, -60.0)
    longitudinal_travel_mm: tuple[float, float] = (-200.0, 2500.0)

    def __post_init__(self) -> None:
        for name in ("top_z_range_mm", "longitudinal_travel_mm"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanSettings:
    """Settings of :func:`make_plan`.

    Attributes:
        table: table travel limits.
        checks: check thresholds (bore size, FOV, tolerances).
        isocenter_model_path: shape model file (None: ``models/isocenter_model.json``).
        landmark_model_path: landmark rules file (None: ``models/isocenter_landmarks.json``).
        use_level_net: fuse the level network's levels (read from the height map) with the keypoint
            rules' (:func:`~positioning.planning.anatomy.fuse_levels`); False: keypoint rules only.
        level_net_path: level network file (None: ``models/level_net.pt``; absent: keypoint rules only).
    """

    table: TableLimits = TableLimits()
    checks: ck.CheckSettings = ck.DEFAULT_CHECK_SETTINGS
    isocenter_model_path: Path | None = None
    landmark_model_path: Path | None = None
    use_level_net: bool = True
    level_net_path: Path | None = None


DEFAULT_PLAN_SETTINGS = PlanSettings()


def room_plan_settings(room: str | Path | None, *, bore_diameter_mm: float | None = None) -> PlanSettings:
    """Planning settings for a site's room file (its bore; None: the default room), the bore overridden by
    ``bore_diameter_mm`` when given."""
    from positioning.perception.room_model import load_room_model

    bore = bore_diameter_mm if bore_diameter_mm is not None else load_room_model(room).bore_diameter_mm
    return dataclasses.replace(
        DEFAULT_PLAN_SETTINGS, checks=dataclasses.replace(DEFAULT_PLAN_SETTINGS.checks, bore_diameter_mm=bore)
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanRange:
    """A scan range along scanner y.

    Attributes:
        start_mm, end_mm: ends, ``start_mm < end_mm`` (scanner y).
        first_slice_mm: the end scanned first (depends on the direction and the head direction).
        direction: craniocaudal or caudocranial.
        superior_sign: +1 head toward +y, -1 toward -y.
    """

    start_mm: float
    end_mm: float
    first_slice_mm: float
    direction: ScanDirection
    superior_sign: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_mm) and math.isfinite(self.end_mm) and self.start_mm < self.end_mm):
            raise ValueError(f"need start_mm < end_mm, got {self.start_mm}, {self.end_mm}")

    @property
    def length_mm(self) -> float:
        return self.end_mm - self.start_mm

    @property
    def last_slice_mm(self) -> float:
        return self.end_mm if self.first_slice_mm == self.start_mm else self.start_mm

    def to_json(self) -> dict[str, Any]:
        return {
            "start_mm": round(self.start_mm, 1),
            "end_mm": round(self.end_mm, 1),
            "length_mm": round(self.length_mm, 1),
            "first_slice_mm": round(self.first_slice_mm, 1),
            "direction": str(self.direction),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableOffset:
    """Table moves (see the module docstring for the definitions and signs).

    Attributes:
        vertical_mm: planned vertical move (positive = up), within the table's limits.
        requested_vertical_mm: ``-isocenter.z_mm`` (what centring needs).
        vertical_residual_mm: isocenter z after the planned move (0 unless a limit binds).
        longitudinal_mm: travel along +y that brings the first slice to the scan plane.
        lateral_patient_move_mm: move of the *patient* along x that centres them (``-isocenter.x_mm``).
        planned_top_z_mm: table-top z after the vertical move.
    """

    vertical_mm: float
    requested_vertical_mm: float
    vertical_residual_mm: float
    longitudinal_mm: float
    lateral_patient_move_mm: float
    planned_top_z_mm: float

    def to_json(self) -> dict[str, Any]:
        return {
            "vertical_mm": round(self.vertical_mm, 1),
            "longitudinal_mm": round(self.longitudinal_mm, 1),
            "requested_vertical_mm": round(self.requested_vertical_mm, 1),
            "vertical_residual_mm": round(self.vertical_residual_mm, 1),
            "lateral_patient_move_mm": round(self.lateral_patient_move_mm, 1),
            "planned_table_top_z_mm": round(self.planned_top_z_mm, 1),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What :func:`make_plan` concluded (see :meth:`to_json` for the wire form).

    Convention: scanner frame (IEC 61217), mm.

    Attributes:
        protocol: the protocol's name.
        status: perception's status.
        frame_number, timestamp_ms: the planned frame.
        patient_position, position_confidence: perceived position (None without a patient).
        arms, arms_confidence: perceived arm state.
        landmarks_mm: name -> ``(3,)``: the COCO keypoints and the estimated anatomical landmarks (whose
            x and z are the body's cross-section centre at their level).
        landmark_sigma_mm: anatomical landmark -> expected error of its level.
        isocenter: the isocenter estimate (None when it could not be planned).
        table_offset: the table moves (None when they could not be planned).
        scan_range: the range (None when it could not be planned).
        anatomical_range_mm: the range the protocol's landmarks give (differs from ``scan_range`` when a
            range was given to the planner).
        table_position_mm: the console's longitudinal table reading, if given.
        table_top_z_mm, table_x_range_mm: the table seen in the frame.
        checks: findings, most severe first.
        centering: dose and noise impact of the vertical mis-centering.
        overscan: planned range vs the protocol's generic range.
        surface: the body's surface signature (:func:`surface_signature`), compared by
            :func:`surface_displacement` when this plan is passed as ``confirmed``.
        models: the model files used.
    """

    protocol: str
    status: PerceptionStatus
    frame_number: int = 0
    timestamp_ms: float = 0.0
    patient_position: PatientPosition | None = None
    position_confidence: float = 0.0
    arms: ArmState | None = None
    arms_confidence: float = 0.0
    landmarks_mm: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    landmark_sigma_mm: Mapping[str, float] = dataclasses.field(default_factory=dict)
    isocenter: IsocenterEstimate | None = None
    table_offset: TableOffset | None = None
    scan_range: ScanRange | None = None
    anatomical_range_mm: tuple[float, float] | None = None
    table_position_mm: float | None = None
    table_top_z_mm: float | None = None
    table_x_range_mm: tuple[float, float] | None = None
    checks: tuple[ck.Check, ...] = ()
    centering: CenteringImpact | None = None
    overscan: OverscanImpact | None = None
    surface: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    models: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def has_patient(self) -> bool:
        return self.status.has_patient

    @property
    def ok(self) -> bool:
        """No error among the checks (and a range and isocenter were planned)."""
        return (
            self.scan_range is not None
            and self.isocenter is not None
            and all(c.severity is not ck.Severity.ERROR for c in self.checks)
        )

    def check_codes(self) -> list[str]:
        return [str(c.code) for c in self.checks]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-friendly data (the ``positioning plan --json`` contract, DESIGN.md)."""
        iso = self.isocenter
        rng = self.scan_range
        out: dict[str, Any] = {
            "schema": PLAN_SCHEMA,
            "protocol": self.protocol,
            "status": self.status.code,
            "frame_number": self.frame_number,
            "patient_position": None if self.patient_position is None else str(self.patient_position),
            "position_confidence": round(self.position_confidence, 3),
            "arms": None if self.arms is None else str(self.arms),
            "arms_confidence": round(self.arms_confidence, 3),
            "landmarks": {k: [round(float(c), 1) for c in v] for k, v in self.landmarks_mm.items()},
            "landmark_sigma_mm": {k: round(v, 1) for k, v in self.landmark_sigma_mm.items()},
            "isocenter": None
            if iso is None
            else {
                "x_mm": round(iso.x_mm, 1),
                "z_mm": round(iso.z_mm, 1),
                "y_mm": round(iso.y_center_mm, 1),
                "region_mm": [round(iso.y_range_mm[0], 1), round(iso.y_range_mm[1], 1)],
                "coverage": round(iso.coverage, 3),
            },
            "table_offset": None if self.table_offset is None else self.table_offset.to_json(),
            "scan_range": None if rng is None else rng.to_json(),
            "anatomical_range": None
            if self.anatomical_range_mm is None
            else {
                "start_mm": round(self.anatomical_range_mm[0], 1),
                "end_mm": round(self.anatomical_range_mm[1], 1),
            },
            "scan_range_table": None,
            "table": None
            if self.table_top_z_mm is None
            else {
                "top_z_mm": round(self.table_top_z_mm, 1),
                "x_range_mm": None
                if self.table_x_range_mm is None
                else [round(self.table_x_range_mm[0], 1), round(self.table_x_range_mm[1], 1)],
            },
            "checks": [c.to_json() for c in self.checks],
            "dose": None,
            "ok": self.ok,
            "models": dict(self.models),
        }
        if rng is not None and self.table_position_mm is not None:
            out["scan_range_table"] = {
                "table_position_mm": round(self.table_position_mm, 1),
                "first_slice_mm": round(self.table_position_mm - rng.first_slice_mm, 1),
                "last_slice_mm": round(self.table_position_mm - rng.last_slice_mm, 1),
            }
        if self.centering is not None or self.overscan is not None:
            from positioning.planning.dose import DOSE_MODEL_SOURCE

            out["dose"] = {
                "centering": None if self.centering is None else self.centering.to_json(),
                "overscan": None if self.overscan is None else self.overscan.to_json(),
                "model": DOSE_MODEL_SOURCE,
            }
        return out


# ------------------------------------------------------------------------------------------ pure functions


def bound_y_mm(level_y_mm: float, bound: RangeBound, superior_sign: int, *, superior: bool) -> float:
    """Scanner y of a range end: the landmark's level moved by the margin outward (toward the head for
    the superior bound, toward the feet for the inferior bound).

    Convention: scanner y, mm; ``superior_sign`` +1 when the head points toward +y.

    Example:
        >>> from positioning.planning.protocol import RangeBound
        >>> bound_y_mm(-900.0, RangeBound(landmark="lung_apex", margin_mm=10), +1, superior=True)
        -890.0
    """
    outward = superior_sign if superior else -superior_sign
    return level_y_mm + outward * bound.margin_mm


def range_from_levels(
    levels_y_mm: Mapping[str, float], superior: RangeBound, inferior: RangeBound, superior_sign: int
) -> tuple[float, float] | None:
    """``(start_mm, end_mm)`` (start < end) of the range between two bounds, or None when a landmark is
    missing or the bounds cross (implausible landmarks).

    Convention: scanner y, mm.
    """
    if superior.landmark not in levels_y_mm or inferior.landmark not in levels_y_mm or superior_sign == 0:
        return None
    a = bound_y_mm(levels_y_mm[superior.landmark], superior, superior_sign, superior=True)
    b = bound_y_mm(levels_y_mm[inferior.landmark], inferior, superior_sign, superior=False)
    if superior_sign * (a - b) <= 0:
        return None
    return (min(a, b), max(a, b))


def table_offsets(
    isocenter_x_mm: float,
    isocenter_z_mm: float,
    first_slice_mm: float,
    table_top_z_mm: float,
    limits: TableLimits = TableLimits(),
) -> TableOffset:
    """Table moves that centre the isocenter vertically and bring the first slice to the scan plane.

    Convention: scanner frame, mm; vertical positive = up, longitudinal positive = into the gantry (+y).

    Example:
        >>> t = table_offsets(0.0, -40.0, -900.0, -150.0)
        >>> (t.vertical_mm, t.longitudinal_mm)
        (40.0, 900.0)
    """
    requested = -isocenter_z_mm
    lo, hi = limits.top_z_range_mm
    planned_top = float(np.clip(table_top_z_mm + requested, lo, hi))
    applied = planned_top - table_top_z_mm
    # a table already outside its limits is not moved further out
    if (table_top_z_mm > hi and requested > 0) or (table_top_z_mm < lo and requested < 0):
        applied, planned_top = 0.0, table_top_z_mm
    return TableOffset(
        vertical_mm=applied,
        requested_vertical_mm=requested,
        vertical_residual_mm=isocenter_z_mm + applied,
        longitudinal_mm=-first_slice_mm,
        lateral_patient_move_mm=-isocenter_x_mm,
        planned_top_z_mm=planned_top,
    )


def _interp(y: float, ys: np.ndarray, vs: np.ndarray) -> float:
    ok = np.isfinite(vs)
    if not ok.any():
        return math.nan
    return float(np.interp(y, ys[ok], vs[ok]))


def _first_slice(lo: float, hi: float, sign: int, direction: ScanDirection) -> float:
    superior_end = hi if sign >= 0 else lo
    inferior_end = lo if sign >= 0 else hi
    return superior_end if direction is ScanDirection.CRANIOCAUDAL else inferior_end


#: Keypoints whose along-the-table motion :func:`surface_displacement` measures (trunk and legs).
MOTION_KEYPOINTS: tuple[str, ...] = (
    "left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)  # fmt: skip


def surface_signature(
    f: SliceFeatures,
    table_top_z_mm: float,
    table_y_ref_mm: float,
    keypoints_mm: Mapping[str, np.ndarray] | None = None,
    table_position_mm: float | None = None,
) -> dict[str, Any]:
    """What :func:`surface_displacement` compares: per valid slice its y, height above the table and
    lateral centre; the trunk and leg keypoints' y; the table's top z and foot-end y (NaN when not seen);
    the console's longitudinal table reading (NaN when not reported).

    Convention: scanner frame, mm.
    """
    v = f.valid & np.isfinite(f.envelope_x_mm)
    kp = keypoints_mm or {}
    return {
        "y_mm": f.y_mm[v].copy(),
        "height_mm": f.height_mm[v].copy(),
        "x_mm": f.envelope_x_mm[v].copy(),
        "keypoints_y_mm": {k: float(kp[k][1]) for k in MOTION_KEYPOINTS if k in kp},
        "table_top_z_mm": float(table_top_z_mm),
        "table_y_ref_mm": float(table_y_ref_mm),
        "table_position_mm": math.nan if table_position_mm is None else float(table_position_mm),
    }


def surface_displacement(reference: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, float]:
    """How far the body moved on the table between two signatures (:func:`surface_signature`).

    * sideways: median change of the slices' lateral centres (slices matched by y);
    * height: median change of the slices' height above the table (a table move does not count);
    * along the table: median change of the trunk and leg keypoints' y (at least 3 in common), minus the
      table's own move. The table's move is the console's: the change of its table reading when both
      signatures have one. Without it, the change of the table's seen foot end, when it moved more than
      :data:`TABLE_MOVE_MIN_MM` (smaller changes are the table estimate's noise) and only when taking it
      off makes the displacement smaller: the seen extent of a table can jump by a metre between frames
      (a strip of it chosen in one frame, all of it in the next), and such a jump is not the patient's
      motion. The surface alone cannot tell this reliably: a D435's height profile changes by 10-30 mm
      from frame to frame at the feet.

    Breathing (a few mm of anterior motion) changes none of them much.

    Convention: scanner frame, mm; absolute displacements in mm; a key is absent when it cannot be
    measured (fewer than 20 common slices, fewer than 3 common keypoints).
    """
    ya, ha, xa = (np.asarray(reference[k], np.float64) for k in ("y_mm", "height_mm", "x_mm"))
    yb, hb, xb = (np.asarray(current[k], np.float64) for k in ("y_mm", "height_mm", "x_mm"))
    out: dict[str, float] = {}
    if len(ya) >= 20 and len(yb) >= 20:
        inside = (ya >= yb[0]) & (ya <= yb[-1])
        if inside.sum() >= 20:
            out["sideways"] = abs(float(np.median(np.interp(ya[inside], yb, xb) - xa[inside])))
            out["height"] = abs(float(np.median(np.interp(ya[inside], yb, hb) - ha[inside])))
    ka, kb = reference.get("keypoints_y_mm", {}), current.get("keypoints_y_mm", {})
    common = [k for k in ka if k in kb]
    if len(common) >= 3:
        dy = float(np.median([kb[k] - ka[k] for k in common]))
        console_dy = float(current.get("table_position_mm", math.nan)) - float(
            reference.get("table_position_mm", math.nan)
        )
        if math.isfinite(console_dy):
            dy -= console_dy  # the reading increases into the gantry, as scanner y
        else:
            seen_dy = float(current["table_y_ref_mm"]) - float(reference["table_y_ref_mm"])
            if math.isfinite(seen_dy) and abs(seen_dy) > TABLE_MOVE_MIN_MM and abs(dy - seen_dy) < abs(dy):
                dy -= seen_dy
        out["along_the_table"] = abs(dy)
    return out


# ---------------------------------------------------------------------------------------------- make_plan


@dataclasses.dataclass(frozen=True)
class _SceneLevel:
    y_mm: float
    sigma_mm: float


#: The scene network's landmarks below this confidence are not used as levels.
SCENE_LEVEL_MIN_CONFIDENCE = 0.3


def scene_levels(state: PatientState) -> dict[str, _SceneLevel]:
    """The scene network's planning landmarks as levels along the table (a third source besides the
    keypoint rules and the level network): the landmark's y, with its held-out median error as sigma,
    widened as its confidence falls."""
    scene = state.scene
    if scene is None or not getattr(scene, "keypoint_sigma_mm", None):
        return {}
    out = {}
    for name in PLANNING_LANDMARKS:
        p = state.landmarks_mm.get(name)
        conf = scene.keypoint_confidence.get(name, 0.0)
        sigma = scene.keypoint_sigma_mm.get(name)
        if p is None or sigma is None or conf < SCENE_LEVEL_MIN_CONFIDENCE or not np.all(np.isfinite(p)):
            continue
        out[name] = _SceneLevel(y_mm=float(p[1]), sigma_mm=max(float(sigma), 5.0) / conf)
    return out


@dataclasses.dataclass(frozen=True)
class BodyEstimate:
    """What planning knows of the body, whatever is planned on it (a CT scan, a fluoroscopy set-up).

    Attributes:
        anatomy: the planning landmarks' levels (keypoint rules, fused with the level network and the
            scene network where they run).
        head_direction_p: the level network's probability that the head lies toward +y (None: not run).
        features: the body's slices along y (:func:`~positioning.planning.isocenter.slice_features`).
        centroid_x_mm, centroid_z_mm: ``(K,)`` each slice's predicted cross-section centroid.
        models: model name -> source, for the plan's record.
    """

    anatomy: AnatomyEstimate
    head_direction_p: float | None
    features: SliceFeatures
    centroid_x_mm: np.ndarray
    centroid_z_mm: np.ndarray
    models: dict[str, str]


def estimate_body(
    state: PatientState,
    keypoints: Mapping[str, np.ndarray],
    *,
    settings: PlanSettings = DEFAULT_PLAN_SETTINGS,
    isocenter_model: IsocenterModel | None = None,
    landmark_model: LandmarkModel | None = None,
) -> BodyEstimate:
    """The body model of a perceived patient (``state`` with a patient, table and profile): landmark
    levels, slices and their centroids. ``keypoints``: the confident, finite COCO keypoints.

    Convention: scanner frame (IEC 61217), mm.
    """
    assert state.table is not None and state.profile is not None
    s = settings
    iso_model = isocenter_model or load_isocenter_model(s.isocenter_model_path)
    lm_model = landmark_model or load_landmark_model(s.landmark_model_path)
    position, table = state.patient_position, state.table
    models: dict[str, str] = {}
    head_p = None
    anatomy: AnatomyEstimate = estimate_levels(
        state.landmarks_mm, state.landmark_confidence, position=position, model=lm_model
    )
    net = load_level_net(s.level_net_path) if s.use_level_net else None
    if net is not None and anatomy.superior_sign != 0:
        hmap = height_map(state.patient_points_mm, table, anatomy.superior_sign)
        arms = str(state.arms) if state.arms is not None else None
        net_out = net.predict(hmap, posture_group(position), arms)
        anatomy = fuse_levels(anatomy, net_out.levels)
        head_p = float(net_out.head_direction_p)
        models["level_net"] = net.source
    scene_lv = scene_levels(state)
    if scene_lv and anatomy.superior_sign != 0:
        anatomy = fuse_levels(anatomy, scene_lv)
        models["scene_net"] = "scene network landmarks"
    feats: SliceFeatures = slice_features(
        state.profile,
        state.patient_points_mm,
        table,
        support_dip_mm=state.support_dip_mm,
        covered_share=state.covered_share,
    )
    anchors, _ = keypoint_anchors(
        keypoints, state.landmark_confidence, min_confidence=lm_model.min_confidence
    )
    u = None
    if "shoulders" in anchors and "hips" in anchors:
        try:
            u = body_coordinate(feats.y_mm, anchors["shoulders"][1], anchors["hips"][1])
        except ValueError:
            u = None
    cx, cz = predict_centroids(feats, iso_model, group=posture_group(position), u=u)
    return BodyEstimate(anatomy, head_p, feats, cx, cz, models)


#: Perception findings that mean the outline measured may not be the patient's alone.
OUTLINE_DOUBT_CODES = frozenset({"SECOND_PERSON", "TABLE_UNUSUAL"})


def _outline_doubtful(found: list[ck.Check], state: PatientState) -> list[ck.Check]:
    """A collision read from an outline that may hold someone else (a person at the table) or another
    surface (an unusual table) is a warning to look, not an error that refuses the plan: on the full
    evaluation suite 17 of 18 collision errors were such false alarms (13 with staff at the table, 4 on
    beds)."""
    status = getattr(state.status, "value", state.status)
    doubt = status in OUTLINE_DOUBT_CODES or any(n.code in OUTLINE_DOUBT_CODES for n in state.notes)
    if not doubt:
        return found
    return [
        dataclasses.replace(
            c,
            severity=ck.Severity.WARNING,
            message=c.message + " The outline measured may include another person or surface: check by eye.",
        )
        if c.severity is ck.Severity.ERROR
        else c
        for c in found
    ]


def make_plan(
    state: PatientState,
    protocol: Protocol,
    *,
    settings: PlanSettings = DEFAULT_PLAN_SETTINGS,
    expected_position: PatientPosition | str | None = None,
    scan_range_mm: tuple[float, float] | None = None,
    table_position_mm: float | None = None,
    confirmed: Plan | None = None,
    isocenter_model: IsocenterModel | None = None,
    landmark_model: LandmarkModel | None = None,
) -> Plan:
    """Plan a scan for the perceived patient.

    Args:
        state: perception's output for the frame to plan (never truth).
        protocol: the scan protocol.
        settings: table limits, check thresholds, model files.
        expected_position: the position selected at the console (default: the protocol's accepted ones).
        scan_range_mm: a range set by the operator ``(start, end)`` along scanner y: planned instead of
            the anatomical one and checked against it (coverage, overscan).
        table_position_mm: the console's longitudinal table reading (increasing into the gantry); adds
            the range in table coordinates.
        confirmed: the plan confirmed earlier for this patient: raises ``PATIENT_MOVED`` when the
            body has moved on the table since (:func:`surface_displacement`; table moves do not count
            vertically, nor longitudinally when the table's foot end is seen).
        isocenter_model, landmark_model: models (default: loaded from ``settings``' paths).

    Returns:
        The plan; without a patient it has no position, range or offsets, and checks saying why.

    Raises:
        ValueError: ``scan_range_mm`` is not ``(start, end)`` with start < end.

    Example:
        >>> plan = make_plan(state, load_protocol("chest"))  # doctest: +SKIP
        >>> plan.to_json()["table_offset"]["vertical_mm"]  # doctest: +SKIP
    """
    if scan_range_mm is not None and not (
        len(scan_range_mm) == 2
        and all(map(math.isfinite, scan_range_mm))
        and scan_range_mm[0] < scan_range_mm[1]
    ):
        raise ValueError(f"scan_range_mm must be (start, end) with start < end, got {scan_range_mm}")
    s = settings
    cs = s.checks
    iso_model = isocenter_model or load_isocenter_model(s.isocenter_model_path)
    lm_model = landmark_model or load_landmark_model(s.landmark_model_path)
    models = {"isocenter": iso_model.source, "landmarks": lm_model.source}
    table = state.table
    base: dict[str, Any] = {
        "protocol": protocol.name,
        "status": state.status,
        "frame_number": state.frame_number,
        "timestamp_ms": state.timestamp_ms,
        "table_position_mm": table_position_mm,
        "table_top_z_mm": None if table is None else float(table.top_z_mm),
        "table_x_range_mm": None if table is None else (float(table.x_min_mm), float(table.x_max_mm)),
        "models": models,
    }
    has_landmarks = any(state.landmark_confidence.get(k, 0.0) > 0 for k in state.landmarks_mm)
    found = ck.check_perception(state.status, state.message, has_landmarks=has_landmarks, notes=state.notes)
    if not state.has_patient or table is None or state.profile is None:
        return Plan(**base, checks=ck.sort_checks(found))

    position = state.patient_position
    keypoints = {
        k: np.asarray(v, np.float64)
        for k, v in state.landmarks_mm.items()
        if state.landmark_confidence.get(k, 0.0) > 0 and np.all(np.isfinite(v))
    }
    plan_fields: dict[str, Any] = {
        "patient_position": position,
        "position_confidence": float(state.position_confidence),
        "arms": state.arms,
        "arms_confidence": float(state.arms_confidence),
    }
    expected = (
        (PatientPosition(str(expected_position)),) if expected_position else protocol.expected_positions
    )
    found += ck.check_orientation(position, state.position_confidence, expected, settings=cs)
    found += ck.check_arms(state.arms, state.arms_confidence, protocol.arms, protocol.name, settings=cs)
    found += ck.check_moved({}, state.moving, settings=cs)

    # 2. landmark levels, and the body's slices and centroids
    body = estimate_body(state, keypoints, settings=s, isocenter_model=iso_model, landmark_model=lm_model)
    models.update(body.models)
    if body.head_direction_p is not None:
        found += ck.check_head_direction(body.head_direction_p, position, settings=cs)
    anatomy = body.anatomy
    sign = anatomy.superior_sign
    levels = {k: v.y_mm for k, v in anatomy.levels.items()}
    sigma = {k: v.sigma_mm for k, v in anatomy.levels.items()}
    conf = {k: v.confidence for k, v in anatomy.levels.items()}
    found += ck.check_landmarks(protocol.landmarks, sigma, conf, anatomy.issues, settings=cs)

    # 3. scan range
    anatomical = range_from_levels(levels, protocol.superior, protocol.inferior, sign)
    planned = scan_range_mm if scan_range_mm is not None else anatomical
    if scan_range_mm is not None and anatomical is not None:
        found += ck.check_range_coverage(
            scan_range_mm,
            anatomical,
            sign,
            coverage_tolerance_mm=protocol.coverage_tolerance_mm,
            overscan_tolerance_mm=protocol.overscan_tolerance_mm,
            protocol_name=protocol.name,
        )

    # 4. isocenter
    feats, cx, cz = body.features, body.centroid_x_mm, body.centroid_z_mm
    region = planned
    if protocol.isocenter_region is not None and scan_range_mm is None:
        region = range_from_levels(levels, *protocol.isocenter_region, sign) or planned
    iso = None if region is None else isocenter_over(feats, cx, cz, *region)

    # landmarks: COCO keypoints and the anatomical levels at the body's centre
    landmarks: dict[str, np.ndarray] = dict(keypoints)
    for name, y in levels.items():
        landmarks[name] = np.array([_interp(y, feats.y_mm, cx), y, _interp(y, feats.y_mm, cz)])

    scan_range = offsets = centering = overscan = None
    if planned is not None:
        valid = feats.valid
        half = feats.slice_mm / 2
        seen = (
            (float(feats.y_mm[valid].min() - half), float(feats.y_mm[valid].max() + half))
            if valid.any()
            else (math.nan, math.nan)
        )
        if valid.any() or iso is None:
            found += ck.check_visible_range(*seen, *planned, isocenter_found=iso is not None, settings=cs)
        if not any(c.code == ck.CheckCode.LANDMARKS_UNCERTAIN for c in found):
            found += ck.check_view_context(state.view_cut_ends_mm, *planned, settings=cs)
    if planned is not None and iso is not None:
        lo, hi = planned
        first = _first_slice(lo, hi, sign, protocol.scan_direction)
        scan_range = ScanRange(
            start_mm=float(lo), end_mm=float(hi), first_slice_mm=float(first),
            direction=protocol.scan_direction, superior_sign=sign,
        )  # fmt: skip
        offsets = table_offsets(iso.x_mm, iso.z_mm, first, float(table.top_z_mm), s.table)
        prof_args = (feats.y_mm, feats.table_z_mm, feats.top_z_mm, feats.x_min_mm, feats.x_max_mm)
        found += ck.check_fov(*prof_args, lo, hi, offsets.vertical_mm, position, settings=cs)
        bore = ck.check_bore(*prof_args, lo - cs.gantry_half_depth_mm, offsets.vertical_mm, settings=cs)
        found += _outline_doubtful(bore, state)
        found += ck.check_table_vertical(
            offsets.requested_vertical_mm,
            offsets.vertical_mm,
            offsets.vertical_residual_mm,
            s.table.top_z_range_mm,
        )
        found += ck.check_table_travel((-lo, -hi), s.table.longitudinal_travel_mm)
        found += ck.check_lateral(iso.x_mm, position, settings=cs)
        centering = centering_impact(iso.z_mm, offsets.vertical_residual_mm)
        overscan = overscan_impact(scan_range.length_mm, protocol.generic_length_mm)

    signature = surface_signature(
        feats, table.top_z_mm, table.y_min_mm if table.y_min_seen else math.nan, keypoints, table_position_mm
    )
    if confirmed is not None and confirmed.surface:
        found += ck.check_moved(surface_displacement(confirmed.surface, signature), settings=cs)

    return Plan(
        **base,
        **plan_fields,
        landmarks_mm=landmarks,
        landmark_sigma_mm=sigma,
        isocenter=iso,
        table_offset=offsets,
        scan_range=scan_range,
        anatomical_range_mm=anatomical,
        checks=ck.sort_checks(found),
        centering=centering,
        overscan=overscan,
        surface=signature,
    )


def plan_summary(plan: Plan) -> str:
    """A short human-readable summary of a plan (a few lines for a console or a terminal)."""
    lines = [f"Protocol {plan.protocol}: " + ("ready" if plan.ok else "needs attention")]
    if not plan.has_patient:
        lines.append("No patient to plan for.")
    else:
        pos = "unknown" if plan.patient_position is None else str(plan.patient_position)
        arms = "unknown" if plan.arms is None else str(plan.arms)
        lines.append(
            f"Patient {pos} ({plan.position_confidence:.0%}), arms {arms} ({plan.arms_confidence:.0%})."
        )
    if plan.scan_range is not None and plan.table_offset is not None and plan.isocenter is not None:
        r, t, i = plan.scan_range, plan.table_offset, plan.isocenter
        lines.append(
            f"Scan range y {r.start_mm:.0f} to {r.end_mm:.0f} mm ({r.length_mm:.0f} mm, {r.direction}, "
            f"first slice at y {r.first_slice_mm:.0f} mm)."
        )
        lines.append(f"Isocenter x {i.x_mm:+.0f} mm, z {i.z_mm:+.0f} mm.")
        move = "raise" if t.vertical_mm >= 0 else "lower"
        lines.append(
            f"Table: {move} {abs(t.vertical_mm):.0f} mm, move in {t.longitudinal_mm:.0f} mm"
            + (
                f" (centre remains {t.vertical_residual_mm:+.0f} mm off)"
                if abs(t.vertical_residual_mm) >= 0.5
                else ""
            )
            + "."
        )
        if plan.centering is not None:
            c = plan.centering
            lines.append(
                f"Mis-centering now {c.current_offset_mm:+.0f} mm: surface dose "
                f"+{c.current_surface_dose.percent:.0f} %, noise +{c.current_noise.percent:.0f} % "
                f"(after the move: +{c.corrected_surface_dose.percent:.0f} %)."
            )
        if plan.overscan is not None and plan.overscan.overscan_avoided_mm > 0:
            o = plan.overscan
            lines.append(
                f"Planned range is {o.overscan_avoided_mm:.0f} mm shorter than the generic "
                f"{o.generic_length_mm:.0f} mm range ({o.dlp_saved_percent:.0f} % less DLP)."
            )
    for c in plan.checks:
        lines.append(f"[{str(c.severity).upper()}] {c.code}: {c.message}")
    return "\n".join(lines)
