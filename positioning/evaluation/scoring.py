"""Scoring a plan against a recording's ground truth (evaluation only: the pipeline never imports this).

Pure functions over the plan's JSON (the ``positioning plan --json`` document) and the truth sidecar
(``NAME.truth.json``), so any saved plan can be scored the same way:

* :func:`case_truth`: what truth says (position, arms, body size, the true isocenter over the true scan
  range and over the plan's, the factor levels for the breakdowns);
* :func:`case_errors`: the plan's errors (isocenter, table offsets, range ends, table top, COCO keypoints
  in 3-D, planning landmark levels, position and arm state, large error and whether a check flagged it);
* :func:`check_labels`: which checks truth says should fire, for their precision and recall.

Definitions follow the published studies (``../shared/REFERENCES.md``): the true isocenter is the mean
of the body's cross-section centroids (planes of constant y) over a scan range; the true scan range is the
protocol applied to the simulator's anatomical landmarks.

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from positioning.evaluation.records import CaseErrors, CaseTruth
from positioning.evaluation.truth import frame_cross_sections, true_isocenter, truth_level_y_mm
from positioning.planning.checks import DEFAULT_CHECK_SETTINGS, CheckSettings
from positioning.planning.plan import range_from_levels
from positioning.planning.protocol import Protocol
from positioning.sim.cross_section import CrossSections

__all__ = [
    "RELIABILITY_CODES",
    "SILENT_ISO_MM",
    "SILENT_RANGE_MM",
    "truth_frame_index",
    "age_years",
    "factor_levels",
    "case_truth",
    "case_errors",
    "check_labels",
    "outline_radius_mm",
]

#: Checks that say a plan's numbers may be wrong (as opposed to checks about the set-up itself, such as
#: arms in the field or a patient off-centre, which a correct plan raises too).
RELIABILITY_CODES: frozenset[str] = frozenset({
    "NO_DEPTH", "NO_TABLE", "EMPTY_TABLE", "SECOND_PERSON", "NO_LANDMARKS", "LANDMARKS_UNCERTAIN",
    "ORIENTATION_MISMATCH", "ORIENTATION_UNCERTAIN", "ORIENTATION_DISAGREE", "LANDMARKS_DISAGREE",
    "RANGE_NOT_VISIBLE", "PATIENT_MOVING", "PATIENT_MOVED", "PATIENT_COVERED", "TABLE_UNUSUAL",
    "TABLE_UNCERTAIN", "ISOCENTER_UNCERTAIN",
})  # fmt: skip
#: A plan is a large error when its vertical isocenter or a range end is off by more than these.
SILENT_ISO_MM = 15.0
SILENT_RANGE_MM = 30.0
SHOULDERS_HIPS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


def truth_frame_index(doc: Mapping[str, Any], frame_number: int | None) -> int:
    """The index in ``doc["frames"]`` of the frame the plan was made on (the last one when unknown)."""
    frames = doc["frames"]
    if frame_number is not None:
        for i, f in enumerate(frames):
            if int(f["frame_number"]) == int(frame_number):
                return i
    return len(frames) - 1


def age_years(age_param: float) -> float:
    """Approximate age of the body model's ``age`` parameter (anny: 0.25 about 6 years, 0.5 a young
    adult of about 25, 1.0 about 90; piecewise linear between, 0 a newborn)."""
    pts_param, pts_years = (0.0, 0.25, 0.5, 1.0), (0.0, 6.0, 25.0, 90.0)
    return float(np.interp(age_param, pts_param, pts_years))


def _bin(value: float, edges: tuple[float, ...], names: tuple[str, ...]) -> str:
    for edge, name in zip(edges, names, strict=False):
        if value < edge:
            return name
    return names[-1]


def _depth_noise_mm(doc: Mapping[str, Any]) -> float:
    """Expected per-pixel depth noise (1 sigma, before any smoothing) at the table top: the stereo rule
    z^2 * subpixel / (fx * baseline), from the sensor's baseline, resolution and distance. The breakdown's
    noise levels bin it: low < 12 mm (a D415 or a near D435 at 1280x720), high > 20 mm (848x480 at
    1.8 m and beyond)."""
    cam = doc["camera"]
    noise = cam.get("noise", {})
    z = float(doc.get("world", {}).get("camera_height_above_table_mm", math.nan))
    fx = float(cam["intrinsics"]["fx"])
    return (
        z * z * float(noise.get("subpixel_px", math.nan)) / (fx * float(noise.get("baseline_mm", math.nan)))
    )


def factor_levels(doc: Mapping[str, Any]) -> dict[str, str]:
    """The breakdown factors of a recording, from its truth: phenotype (age group, BMI class, sex), pose
    (position, arms), camera (sensor, height above the table, tilt, expected depth noise) and the room
    (cover, staff, lighting, table kind) where the truth records them."""
    f: dict[str, str] = {}
    cam = doc["camera"]
    f["camera"] = str(cam["model"])
    world = doc.get("world") or {}
    h = world.get("camera_height_above_table_mm")
    if h is not None:
        f["camera height"] = _bin(float(h), (1600.0, 2000.0), ("1.2-1.6 m", "1.6-2.0 m", "2.0-2.5 m"))
    f["camera tilt"] = _bin(
        float(cam.get("tilt_deg", 0.0)), (10.0, 20.0), ("0-10 deg", "10-20 deg", "20-35 deg")
    )
    sigma = _depth_noise_mm(doc)
    if math.isfinite(sigma):
        f["noise level"] = _bin(sigma, (12.0, 20.0), ("low (<12 mm)", "medium (12-20 mm)", "high (>20 mm)"))
    room = doc.get("room") or {}
    if room:
        f["table"] = (
            "bed"
            if not room.get("has_gantry", True)
            else ("ct-curved" if float(room.get("cradle_sagitta_mm", 0.0)) > 0 else "ct-flat")
        )
    cover = (world.get("cover") or {}).get("kind")
    if cover is not None:
        f["cover"] = str(cover)
    staff = world.get("staff")
    if staff is not None:
        f["staff"] = "+".join(str(m.get("pose", "?")) for m in staff) or "none"
    if "lighting" in world:
        lighting = world["lighting"]
        if lighting is None:  # the default room's light
            f["lighting"] = "normal"
        else:
            level = float(np.mean(lighting["key_rgb"]) + np.mean(lighting["ambient_rgb"]))
            f["lighting"] = _bin(level, (0.4, 1.0), ("dim", "normal", "bright"))
    p = doc.get("patient")
    if p is None:
        f["position"] = "empty table"
        return f
    f["position"] = str(p["patient_position"])
    f["arms"] = str(p["arms"])
    ph = p.get("phenotype") or {}
    if "age" in ph:
        f["age group"] = _bin(
            age_years(float(ph["age"])), (18.0, 65.0), ("child (<18 y)", "adult", "elderly (65+ y)")
        )
    if "gender" in ph:
        f["sex"] = "male" if float(ph["gender"]) < 0.5 else "female"
    bmi = float(p.get("bmi", math.nan))
    if math.isfinite(bmi):
        f["BMI class"] = _bin(
            bmi, (18.5, 25.0, 30.0), ("underweight (<18.5)", "normal", "overweight", "obese (30+)")
        )
    offset = abs(float(p.get("lateral_offset_mm", 0.0)))
    f["lateral placement"] = _bin(offset, (20.0, 40.0), ("centred (<20 mm)", "20-40 mm off", "40+ mm off"))
    return f


def _landmarks(frame: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    kp = {k: np.asarray(v, float) for k, v in frame["keypoints"].items()}
    lm = {k: np.asarray(v, float) for k, v in frame["landmarks"].items()}
    return kp, lm


def _true_range(
    frame: Mapping[str, Any], position: str | None, protocol: Protocol
) -> tuple[float, float] | None:
    if position is None:
        return None
    kp, lm = _landmarks(frame)
    sign = 1 if position.startswith("HF") else -1
    try:
        return range_from_levels(truth_level_y_mm(lm, kp), protocol.superior, protocol.inferior, sign)
    except (KeyError, ValueError):
        return None


def _iso(cs: CrossSections | None, lo: float, hi: float) -> tuple[float, float]:
    if cs is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan, math.nan
    try:
        return true_isocenter(cs, lo, hi)
    except ValueError:
        return math.nan, math.nan


def case_truth(doc: Mapping[str, Any], protocol: Protocol, plan: Mapping[str, Any] | None) -> CaseTruth:
    """What truth says about a case (on the frame the plan was made on)."""
    index = truth_frame_index(doc, None if plan is None else plan.get("frame_number"))
    frame = doc["frames"][index]
    p = doc.get("patient")
    position = None if p is None else str(p["patient_position"])
    rng = _true_range(frame, position, protocol)
    cs = frame_cross_sections(doc, index)
    iso_x, iso_z = _iso(cs, *(rng if rng is not None else (math.nan, math.nan)))
    plan_rng = None if plan is None else plan.get("scan_range")
    _, iso_z_plan = _iso(cs, *(
        (float(plan_rng["start_mm"]), float(plan_rng["end_mm"])) if plan_rng else (math.nan, math.nan)
    ))  # fmt: skip
    ph = (p or {}).get("phenotype") or {}
    return CaseTruth(
        position=position,
        arms=None if p is None else str(p["arms"]),
        height_mm=math.nan if p is None else float(p["height_mm"]),
        mass_kg=math.nan if p is None else float(p["mass_kg"]),
        bmi=math.nan if p is None else float(p["bmi"]),
        age_years=age_years(float(ph["age"])) if "age" in ph else math.nan,
        sex=None if "gender" not in ph else ("male" if float(ph["gender"]) < 0.5 else "female"),
        iso_z_mm=iso_z,
        iso_x_mm=iso_x,
        iso_z_plan_range_mm=iso_z_plan,
        start_mm=math.nan if rng is None else rng[0],
        end_mm=math.nan if rng is None else rng[1],
        table_top_z_mm=float(doc["room"]["mattress_top_z_mm"]),
        factors=factor_levels(doc),
    )


def case_errors(doc: Mapping[str, Any], truth: CaseTruth, plan: Mapping[str, Any]) -> CaseErrors:
    """A plan's errors against truth (``truth`` from :func:`case_truth` on the same plan)."""
    nan = math.nan
    index = truth_frame_index(doc, plan.get("frame_number"))
    frame = doc["frames"][index]
    cs = frame_cross_sections(doc, index)
    iso_z = iso_x = start = end = t_vert = t_long = nan
    rng, iso, off = plan.get("scan_range"), plan.get("isocenter"), plan.get("table_offset")
    if rng is not None and iso is not None:
        tx, tz = _iso(cs, float(rng["start_mm"]), float(rng["end_mm"]))
        iso_z, iso_x = float(iso["z_mm"]) - tz, float(iso["x_mm"]) - tx
        start, end = float(rng["start_mm"]) - truth.start_mm, float(rng["end_mm"]) - truth.end_mm
        if off is not None:
            vertical = float(off.get("requested_vertical_mm", off["vertical_mm"]))
            t_vert = vertical - (-truth.iso_z_mm)
            # the longitudinal move brings the first slice to the scan plane: -first_slice
            first_is_start = (
                abs(float(rng["first_slice_mm"]) - float(rng["start_mm"])) < 1e-6
                if ("first_slice_mm" in rng)
                else True
            )
            true_first = truth.start_mm if first_is_start else truth.end_mm
            t_long = float(off["longitudinal_mm"]) - (-true_first)
    table = plan.get("table")
    table_top = nan if table is None else float(table["top_z_mm"]) - truth.table_top_z_mm
    kp_true, lm_true = _landmarks(frame)
    perceived = {k: np.asarray(v, float) for k, v in (plan.get("landmarks") or {}).items()}
    keypoints = {
        n: float(np.linalg.norm(perceived[n] - kp_true[n]))
        for n in kp_true
        if n in perceived and n in kp_true
    }
    levels_true = truth_level_y_mm(lm_true, kp_true)
    levels = {n: float(perceived[n][1]) - y for n, y in levels_true.items() if n in perceived}
    ends = [abs(e) for e in (start, end) if math.isfinite(e)]
    large = math.isfinite(iso_z) and (abs(iso_z) > SILENT_ISO_MM or any(e > SILENT_RANGE_MM for e in ends))
    flagged = any(
        c["code"] in RELIABILITY_CODES and c["severity"] in ("warning", "error")
        for c in plan.get("checks", [])
    )
    return CaseErrors(
        iso_z_mm=iso_z,
        iso_x_mm=iso_x,
        table_vertical_mm=t_vert,
        table_longitudinal_mm=t_long,
        start_mm=start,
        end_mm=end,
        table_top_mm=table_top,
        keypoints_mm=keypoints,
        levels_mm=levels,
        position_right=truth.position is not None and plan.get("patient_position") == truth.position,
        arms_right=truth.arms is not None and plan.get("arms") == truth.arms,
        large_error=bool(large),
        flagged=flagged,
    )


def outline_radius_mm(cs: CrossSections, lo: float, hi: float, dz: float) -> float:
    """Largest distance from the isocenter axis of the cross-sections' outline points between ``lo`` and
    ``hi`` after a vertical move ``dz`` (lateral extremes at the centroid height, top at its x)."""
    sel = (cs.y_mm >= lo) & (cs.y_mm <= hi) & (cs.area_mm2 > 0)
    if not sel.any():
        return math.nan
    cz = cs.centroid_z_mm[sel] + dz
    r = np.concatenate([
        np.hypot(cs.x_min_mm[sel], cz),
        np.hypot(cs.x_max_mm[sel], cz),
        np.hypot(cs.centroid_x_mm[sel], cs.z_max_mm[sel] + dz),
    ])  # fmt: skip
    return float(np.nanmax(r))


def check_labels(
    doc: Mapping[str, Any],
    protocol: Protocol,
    console_position: str | None,
    plan: Mapping[str, Any] | None,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> dict[str, bool]:
    """Which checks should fire, by truth (only the codes truth can judge for this case).

    ``EMPTY_TABLE`` (nobody on the table), ``SECOND_PERSON`` (anyone besides the patient in the room's
    view: staff or a second person), ``ORIENTATION_MISMATCH`` (the console's position is not the true
    one, or the true one is not among the protocol's when the console entered none), ``ARMS_IN_FIELD``
    (the protocol accepts arm states and the true one is not among them), ``PATIENT_COVERED`` (a
    blanket), and with a plan ``LATERAL_OFF_CENTRE``, ``FOV_TRUNCATION`` and ``BORE_COLLISION`` (the
    true clearance below the check's margin) from the true cross-sections at the plan's table move.
    """
    p = doc.get("patient")
    labels: dict[str, bool] = {"EMPTY_TABLE": p is None}
    world = doc.get("world") or {}
    staff = world.get("staff") or []
    labels["SECOND_PERSON"] = bool(staff) or doc.get("second_person") is not None
    if p is None:
        return labels
    position = str(p["patient_position"])
    expected = (console_position,) if console_position else tuple(map(str, protocol.expected_positions))
    labels["ORIENTATION_MISMATCH"] = position not in expected
    if protocol.arms:
        labels["ARMS_IN_FIELD"] = str(p["arms"]) not in tuple(map(str, protocol.arms))
    cover = (world.get("cover") or {}).get("kind")
    if cover is not None:
        labels["PATIENT_COVERED"] = cover != "none"
    if plan is None or plan.get("scan_range") is None or plan.get("table_offset") is None:
        return labels
    frame_i = truth_frame_index(doc, plan.get("frame_number"))
    cs = frame_cross_sections(doc, frame_i)
    if cs is None:
        return labels
    rng, off = plan["scan_range"], plan["table_offset"]
    lo, hi = float(rng["start_mm"]), float(rng["end_mm"])
    tx, _ = _iso(cs, lo, hi)
    if math.isfinite(tx):
        labels["LATERAL_OFF_CENTRE"] = abs(tx) > settings.lateral_tolerance_mm
    dz = float(off["vertical_mm"])
    r_fov = outline_radius_mm(cs, lo, hi, dz)
    if math.isfinite(r_fov):
        labels["FOV_TRUNCATION"] = r_fov > settings.fov_diameter_mm / 2
    r_bore = outline_radius_mm(cs, lo - settings.gantry_half_depth_mm, math.inf, dz)
    if math.isfinite(r_bore):
        # the check warns below its clearance margin and says collision beyond the bore: it should
        # fire (either) when the true clearance is below the margin
        labels["BORE_COLLISION"] = r_bore > settings.bore_diameter_mm / 2 - settings.bore_clearance_mm
    return labels
