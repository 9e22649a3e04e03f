"""Check lifted landmarks against the point cloud and repair or drop the ones that are not on the body.

A 2-D landmark near the body's silhouette (a wrist beside the hip, an ear, a heel) can land on the table
or off the body once lifted. Nothing of that is passed on silently: each landmark gets a
:class:`LandmarkRepair` with an issue and an action.

Checks, in order (:func:`find_issues`): not detected by the backend; no depth; on the table (its surface
point lies less than ``table_margin_mm`` above the table top, when the table top is known); off the body
(its pixel is outside the patient mask, when one is given); far from the body (its surface point lies
more than ``max_distance_mm`` from the nearest patient point, when points are given).

Repairs, in order (:func:`repair_landmarks`):

1. **Re-sample** (:func:`walk_to_body`): walk from the landmark's pixel toward the body centre in 1-pixel
   steps (the patient mask's centroid, else the mean pixel of the landmarks without issues) and lift again
   at the first pixel that passes the checks; at most ``search_px`` pixels. Confidence is multiplied by
   ``resample_confidence_factor``.
2. **Mirror** (:func:`mirror_points`): reflect the left/right partner across the body's mid-sagittal
   plane (its normal the mean left-minus-right direction of the other complete pairs among
   ``mirror_names``, through their mean midpoint), for the names in ``mirror_names`` (eyes, ears,
   shoulders and hips by default: limbs are not symmetric). Run it after any left/right label
   correction. Confidence is the partner's times ``mirror_confidence_factor``.
3. **Drop**: NaN and confidence 0.

Convention: scanner frame (IEC 61217, mm) for points; depth-image pixels ``(u, v)`` with pixel centres
at integer coordinates; masks ``(H, W)`` bool, row-major; depth is z-depth in mm.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable

import numpy as np

from positioning.frames import Calibration, RGBDFrame
from positioning.perception.lifting import Landmarks3D, LiftSettings, lift_points

__all__ = [
    "LandmarkIssue",
    "RepairAction",
    "LandmarkRepair",
    "RepairSettings",
    "RepairResult",
    "find_issues",
    "nearest_distance_mm",
    "walk_to_body",
    "mirror_points",
    "repair_landmarks",
]


class LandmarkIssue(enum.StrEnum):
    """What was wrong with a lifted landmark."""

    NONE = "ok"
    NOT_DETECTED = "not_detected"  #: the 2-D backend did not place it (NaN or confidence 0)
    NO_DEPTH = "no_depth"  #: no valid depth around its pixel (outside the image, holes)
    ON_TABLE = "on_table"  #: its surface point lies on the table top
    OFF_BODY = "off_body"  #: its pixel is outside the patient mask
    FAR_FROM_BODY = "far_from_body"  #: its surface point is far from every patient point


class RepairAction(enum.StrEnum):
    """What was done about it."""

    KEPT = "kept"  #: no issue, passed on unchanged
    RESAMPLED = "resampled"  #: lifted again at the nearest body pixel toward the body centre
    MIRRORED = "mirrored"  #: reflected from its left/right partner across the mid-sagittal plane
    DROPPED = "dropped"  #: NaN, confidence 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LandmarkRepair:
    """The check result and repair of one landmark.

    Attributes:
        name: landmark name.
        issue: what was wrong (:attr:`LandmarkIssue.NONE` if nothing).
        action: what was done.
        moved_px: how far a re-sampled landmark's pixel moved (0 otherwise).
    """

    name: str
    issue: LandmarkIssue
    action: RepairAction
    moved_px: float = 0.0

    @property
    def code(self) -> str:
        """``"issue:action"``, e.g. ``"on_table:resampled"``; ``"ok:kept"`` for a good landmark."""
        return f"{self.issue}:{self.action}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepairSettings:
    """Settings of :func:`repair_landmarks`.

    Attributes:
        table_margin_mm: a surface point less than this above the table top is on the table (about
            twice the depth noise at 1.8 m after the window median; thin wrists lie 30-50 mm up).
        max_distance_mm: a surface point farther than this from the nearest patient point is off the body.
        search_px: how far to walk toward the body centre when re-sampling, pixels.
        resample: try re-sampling.
        mirror: try mirroring.
        mirror_names: landmarks that may be mirrored from their partner.
        resample_confidence_factor: confidence multiplier of a re-sampled landmark.
        mirror_confidence_factor: confidence multiplier (of the partner's) of a mirrored landmark.
        min_confidence: landmarks at or below this confidence count as not detected.
    """

    table_margin_mm: float = 15.0
    max_distance_mm: float = 30.0
    search_px: int = 30
    resample: bool = True
    mirror: bool = True
    mirror_names: tuple[str, ...] = (
        "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_hip",
        "right_hip",
    )  # fmt: skip
    resample_confidence_factor: float = 0.7
    mirror_confidence_factor: float = 0.5
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not (self.table_margin_mm >= 0 and self.max_distance_mm > 0):
            raise ValueError(
                f"need table_margin_mm >= 0 and max_distance_mm > 0, got {self.table_margin_mm}, "
                f"{self.max_distance_mm}"
            )
        if self.search_px < 0:
            raise ValueError(f"search_px must be >= 0, got {self.search_px}")
        for label, v in (
            ("resample_confidence_factor", self.resample_confidence_factor),
            ("mirror_confidence_factor", self.mirror_confidence_factor),
        ):
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{label} must be in [0, 1], got {v}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepairResult:
    """Repaired landmarks and what happened to each.

    Attributes:
        landmarks: the repaired :class:`Landmarks3D` (same names and order as the input).
        repairs: one :class:`LandmarkRepair` per landmark, in the same order.
    """

    landmarks: Landmarks3D
    repairs: tuple[LandmarkRepair, ...]

    def reasons(self) -> dict[str, str]:
        """``{name: "issue:action"}`` for every landmark."""
        return {r.name: r.code for r in self.repairs}

    def changed(self) -> dict[str, str]:
        """Only the landmarks that were not kept as they were."""
        return {r.name: r.code for r in self.repairs if r.action is not RepairAction.KEPT}


# ---------------------------------------------------------------------------------------- pure functions


def nearest_distance_mm(query_mm: np.ndarray, points_mm: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """Distance from each query point to its nearest point of a cloud (brute force, chunked).

    Convention: any one frame for both arrays, mm.

    Args:
        query_mm: ``(M, 3)`` query points (NaN rows give NaN).
        points_mm: ``(N, 3)`` cloud (N may be 0: all distances are infinite).
        chunk: cloud points per block (bounds memory).

    Returns:
        ``(M,)`` float64 distances in mm.
    """
    q = np.asarray(query_mm, dtype=np.float64)
    p = np.asarray(points_mm, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3 or p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"need (M, 3) queries and (N, 3) points, got {q.shape} and {p.shape}")
    best = np.full(len(q), np.inf)
    for start in range(0, len(p), chunk):
        block = p[start : start + chunk]
        d2 = ((q[:, None, :] - block[None, :, :]) ** 2).sum(axis=2)
        best = np.minimum(best, np.sqrt(d2.min(axis=1)))
    best[~np.all(np.isfinite(q), axis=1)] = np.nan
    return best


def find_issues(
    landmarks: Landmarks3D,
    *,
    patient_mask: np.ndarray | None = None,
    patient_points_mm: np.ndarray | None = None,
    table_top_z_mm: float | None = None,
    settings: RepairSettings = RepairSettings(),
) -> list[LandmarkIssue]:
    """The first issue of each landmark (see the module docstring for the order of the checks).

    Convention: scanner frame (mm); ``patient_mask`` indexes the depth image at ``landmarks.uv_px``
    rounded to the nearest pixel centre.

    Args:
        landmarks: lifted landmarks.
        patient_mask: optional ``(H, W)`` bool patient pixels.
        patient_points_mm: optional ``(N, 3)`` patient surface points (scanner frame).
        table_top_z_mm: table (mattress) top in scanner z, or None.
        settings: thresholds.

    Returns:
        One :class:`LandmarkIssue` per landmark.
    """
    s = settings
    n = len(landmarks)
    issues = [LandmarkIssue.NONE] * n
    uv, surf = landmarks.uv_px, landmarks.surface_mm
    conf_2d = landmarks.confidence_2d
    assert conf_2d is not None
    dist = (
        nearest_distance_mm(surf, patient_points_mm)
        if patient_points_mm is not None and len(patient_points_mm)
        else np.full(n, np.nan)
    )
    mask = None if patient_mask is None else np.asarray(patient_mask, dtype=bool)
    for i in range(n):
        if not np.all(np.isfinite(uv[i])) or conf_2d[i] <= s.min_confidence:
            issues[i] = LandmarkIssue.NOT_DETECTED
        elif not np.all(np.isfinite(surf[i])) or not np.all(np.isfinite(landmarks.points_mm[i])):
            issues[i] = LandmarkIssue.NO_DEPTH
        elif table_top_z_mm is not None and surf[i, 2] - table_top_z_mm < s.table_margin_mm:
            issues[i] = LandmarkIssue.ON_TABLE
        elif mask is not None and not _mask_at(mask, uv[i]):
            issues[i] = LandmarkIssue.OFF_BODY
        elif patient_points_mm is not None and not dist[i] <= s.max_distance_mm:
            issues[i] = LandmarkIssue.FAR_FROM_BODY
    return issues


def _mask_at(mask: np.ndarray, uv: np.ndarray) -> bool:
    u, v = int(np.floor(uv[0] + 0.5)), int(np.floor(uv[1] + 0.5))
    return 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and bool(mask[v, u])


def walk_to_body(
    uv_px: np.ndarray,
    centre_uv_px: np.ndarray,
    accept: Callable[[np.ndarray], bool],
    *,
    search_px: int,
) -> np.ndarray | None:
    """The first pixel along the straight line from ``uv_px`` toward ``centre_uv_px`` that ``accept`` takes.

    Convention: pixel ``(u, v)``, pixel centres at integer coordinates; 1-pixel steps, starting one step
    from ``uv_px``, at most ``search_px`` steps (never past the centre).

    Args:
        uv_px: ``(2,)`` start.
        centre_uv_px: ``(2,)`` body centre.
        accept: ``accept(uv) -> bool``.
        search_px: largest number of steps.

    Returns:
        The accepted ``(2,)`` position, or None.
    """
    start = np.asarray(uv_px, dtype=np.float64)
    d = np.asarray(centre_uv_px, dtype=np.float64) - start
    length = float(np.linalg.norm(d))
    if not length > 0:
        return None
    step = d / length
    for k in range(1, int(min(search_px, math.floor(length))) + 1):
        uv = start + k * step
        if accept(uv):
            return uv
    return None


def mirror_points(points_mm: np.ndarray, plane_point_mm: np.ndarray, plane_normal: np.ndarray) -> np.ndarray:
    """Reflect points across a plane.

    Convention: any one frame, mm; ``plane_normal`` need not be unit length.

    Args:
        points_mm: ``(..., 3)`` points.
        plane_point_mm: ``(3,)`` a point of the plane.
        plane_normal: ``(3,)`` its normal.

    Returns:
        ``(..., 3)`` reflected points.

    Example:
        >>> mirror_points(np.array([3.0, 1.0, 2.0]), np.zeros(3), np.array([2.0, 0.0, 0.0])).tolist()
        [-3.0, 1.0, 2.0]
    """
    n = np.asarray(plane_normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    p = np.asarray(points_mm, dtype=np.float64)
    return p - 2.0 * ((p - np.asarray(plane_point_mm, dtype=np.float64)) @ n)[..., None] * n


def _partner(name: str) -> str | None:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a) :]
    return None


def repair_landmarks(
    landmarks: Landmarks3D,
    frame: RGBDFrame,
    calibration: Calibration,
    *,
    patient_mask: np.ndarray | None = None,
    patient_points_mm: np.ndarray | None = None,
    table_top_z_mm: float | None = None,
    settings: RepairSettings = RepairSettings(),
    lift_settings: LiftSettings = LiftSettings(),  # noqa: B008 - frozen, never mutated
) -> RepairResult:
    """Check lifted landmarks and re-sample, mirror or drop the ones not on the body.

    Convention: see the module docstring (scanner frame mm, depth-image pixels, z-depth).

    Args:
        landmarks: lifted landmarks (from :func:`~positioning.perception.lifting.lift_landmarks`).
        frame: the RGB-D frame they were lifted from.
        calibration: camera-to-scanner calibration.
        patient_mask: optional ``(H, W)`` bool patient pixels (also restricts re-sampled depths).
        patient_points_mm: optional ``(N, 3)`` patient surface points, scanner frame.
        table_top_z_mm: table (mattress) top in scanner z, or None.
        settings: checks and repairs.
        lift_settings: the settings the landmarks were lifted with (used to lift re-sampled pixels).

    Returns:
        :class:`RepairResult`: every landmark with an issue is re-sampled, mirrored or dropped.

    Raises:
        ValueError: a mask of the wrong shape, or points not ``(N, 3)``.

    Example:
        >>> result = repair_landmarks(lifted, frame, calibration, table_top_z_mm=-150.0)  # doctest: +SKIP
        >>> result.changed()  # doctest: +SKIP
        {'left_wrist': 'on_table:resampled'}
    """
    s = settings
    if patient_mask is not None:
        patient_mask = np.asarray(patient_mask, dtype=bool)
        if patient_mask.shape != frame.depth_mm.shape:
            raise ValueError(f"patient_mask shape {patient_mask.shape} != depth shape {frame.depth_mm.shape}")
    if patient_points_mm is not None:
        patient_points_mm = np.asarray(patient_points_mm, dtype=np.float64)
        if patient_points_mm.ndim != 2 or patient_points_mm.shape[1] != 3:
            raise ValueError(f"patient_points_mm must be (N, 3), got {patient_points_mm.shape}")
    check = dict(
        patient_mask=patient_mask, patient_points_mm=patient_points_mm, table_top_z_mm=table_top_z_mm
    )
    issues = find_issues(landmarks, settings=s, **check)  # type: ignore[arg-type]
    names = landmarks.names
    points = landmarks.points_mm.copy()
    surface = landmarks.surface_mm.copy()
    conf = landmarks.confidence.copy()
    conf_2d = landmarks.confidence_2d
    assert conf_2d is not None
    uv = landmarks.uv_px.copy()
    actions = [RepairAction.KEPT if iss is LandmarkIssue.NONE else RepairAction.DROPPED for iss in issues]
    moved = [0.0] * len(names)
    good = [i for i, iss in enumerate(issues) if iss is LandmarkIssue.NONE]

    # Body centre in the image.
    centre = None
    if patient_mask is not None and patient_mask.any():
        vv, uu = np.nonzero(patient_mask)
        centre = np.array([uu.mean(), vv.mean()])
    elif good:
        w = conf[good]
        centre = (uv[good] * w[:, None]).sum(axis=0) / max(w.sum(), 1e-9)

    def lift_one(name: str, at_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, q = lift_points(
            [name], at_uv[None, :], frame.depth_mm, frame.intrinsics, calibration.scanner_from_camera,
            patient_mask=patient_mask, table_top_z_mm=table_top_z_mm, settings=lift_settings,
        )  # fmt: skip
        return p[0], q[0]

    # 1. re-sample toward the body centre
    if s.resample and centre is not None:
        for i, iss in enumerate(issues):
            if iss in (LandmarkIssue.NONE, LandmarkIssue.NOT_DETECTED):
                continue
            found: dict[str, np.ndarray] = {}

            def accept(at_uv: np.ndarray, i: int = i, found: dict[str, np.ndarray] = found) -> bool:
                if patient_mask is not None and not _mask_at(patient_mask, at_uv):
                    return False
                p, q = lift_one(names[i], at_uv)
                probe = Landmarks3D(
                    names=(names[i],), points_mm=p[None], surface_mm=q[None], confidence=[1.0],
                    uv_px=at_uv[None],
                )  # fmt: skip
                if find_issues(probe, settings=s, **check)[0] is not LandmarkIssue.NONE:  # type: ignore[arg-type]
                    return False
                found["p"], found["q"] = p, q
                return True

            at = walk_to_body(uv[i], centre, accept, search_px=s.search_px)
            if at is not None:
                moved[i] = float(np.linalg.norm(at - uv[i]))
                points[i], surface[i], uv[i] = found["p"], found["q"], at
                conf[i] = conf_2d[i] * s.resample_confidence_factor
                actions[i] = RepairAction.RESAMPLED

    # 2. mirror from the partner
    ok = [a in (RepairAction.KEPT, RepairAction.RESAMPLED) for a in actions]
    # the mid-sagittal plane comes from the symmetric (mirrorable) pairs only, not from the limbs
    pairs = [
        (i, names.index(p))
        for i, n in enumerate(names)
        if n.startswith("left_") and n in s.mirror_names and (p := _partner(n)) is not None and p in names
    ]
    if s.mirror:
        for i, name in enumerate(names):
            if ok[i] or name not in s.mirror_names:
                continue
            partner = _partner(name)
            if partner is None or partner not in names or not ok[names.index(partner)]:
                continue
            j = names.index(partner)
            normals, mids = [], []
            for a, b in pairs:
                if {a, b} & {i, j} or not (ok[a] and ok[b]):
                    continue
                d = points[a] - points[b]
                if np.linalg.norm(d) > 1.0:
                    normals.append(d / np.linalg.norm(d))
                    mids.append((points[a] + points[b]) / 2)
            if not normals:
                continue
            normal = np.mean(normals, axis=0)
            if not np.linalg.norm(normal) > 0.3:
                continue
            centre_mm = np.mean(mids, axis=0)
            points[i] = mirror_points(points[j], centre_mm, normal)
            surface[i] = mirror_points(surface[j], centre_mm, normal)
            uv[i] = np.nan
            conf[i] = conf[j] * s.mirror_confidence_factor
            actions[i] = RepairAction.MIRRORED

    # 3. drop the rest
    for i, a in enumerate(actions):
        if a is RepairAction.DROPPED:
            points[i] = surface[i] = np.nan
            conf[i] = 0.0
    repaired = landmarks.replace(points_mm=points, surface_mm=surface, confidence=conf, uv_px=uv)
    repairs = tuple(
        LandmarkRepair(name=n, issue=issues[i], action=actions[i], moved_px=moved[i])
        for i, n in enumerate(names)
    )
    return RepairResult(landmarks=repaired, repairs=repairs)
