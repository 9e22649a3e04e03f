"""Plan checks: what could make a scan fail or need repeating, with stable codes, a severity and a message a
technologist understands.

Every check is a pure function returning a list of :class:`Check` (empty when all is well). Codes are
stable strings (they reach the CLI's JSON and the console); perception's statuses keep their own codes
(``NO_DEPTH``, ``NO_TABLE``, ``EMPTY_TABLE``, ``SECOND_PERSON``).

========================  ========  ==========================================================================
code                      severity  meaning
========================  ========  ==========================================================================
NO_DEPTH, NO_TABLE,       error     perception found no patient (see ``PerceptionStatus``)
EMPTY_TABLE
SECOND_PERSON             warning   someone stands beside the table
NO_LANDMARKS              error     a patient is seen but no body landmarks
ORIENTATION_MISMATCH      error     the patient lies in another position than the protocol / console expects
ORIENTATION_UNCERTAIN     warning   the position could not be decided with confidence
                          error     ... or the body's shape says the head is at the other end
ARMS_IN_FIELD             error     the arms are where the protocol does not allow them (in the field)
ARMS_UNCERTAIN            warning   the arm state could not be decided with confidence
LANDMARKS_UNCERTAIN       error     the landmarks the range needs are missing or too uncertain to plan
                          warning   ... usable but less certain than usual, or placed near where the
                                    body leaves the camera's view
RANGE_NOT_VISIBLE         warning   part of the scan range lies outside what the camera sees of the body
                          error     ... none of it is seen, so there is no isocenter to plan
RANGE_UNDERCOVERAGE       error     a given scan range stops short of the anatomy the protocol requires
RANGE_OVERSCAN            warning   a given scan range extends beyond the protocol's margins
FOV_TRUNCATION            warning   the body extends beyond the scan field of view at the planned height
BORE_COLLISION            error     the body would touch the bore at the planned table height
                          warning   ... clearance below the configured margin
TABLE_LIMIT               warning   the table cannot reach the height that centres the patient (residual)
                          error     ... or cannot travel far enough to reach the scan range
LATERAL_OFF_CENTRE        warning   the patient lies off the table's centre line (move the patient)
PATIENT_MOVED             error     the patient moved since the plan was confirmed
PATIENT_MOVING            warning   the patient is moving now
========================  ========  ==========================================================================

Convention: scanner frame (IEC 61217: +x lateral, to the right of an observer at the foot of the table
facing the gantry; +y into the gantry; +z up), mm.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from positioning.conventions import BODY_AXES, ArmState, PatientPosition
from positioning.perception.status import PerceptionNote, PerceptionStatus

__all__ = [
    "Severity",
    "CheckCode",
    "Check",
    "CheckSettings",
    "DEFAULT_CHECK_SETTINGS",
    "POSITION_NAMES",
    "describe_lateral",
    "check_perception",
    "check_orientation",
    "check_arms",
    "check_head_direction",
    "sort_checks",
    "check_landmarks",
    "check_visible_range",
    "check_range_coverage",
    "check_fov",
    "check_bore",
    "check_table_vertical",
    "check_table_travel",
    "check_lateral",
    "check_moved",
    "worst_severity",
]


class Severity(enum.StrEnum):
    """How much a check matters: ``error`` blocks the plan, ``warning`` needs a look, ``info`` informs."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class CheckCode(enum.StrEnum):
    """Stable check codes (perception's status codes are used as they are)."""

    NO_LANDMARKS = "NO_LANDMARKS"
    ORIENTATION_MISMATCH = "ORIENTATION_MISMATCH"
    ORIENTATION_UNCERTAIN = "ORIENTATION_UNCERTAIN"
    ARMS_IN_FIELD = "ARMS_IN_FIELD"
    ARMS_UNCERTAIN = "ARMS_UNCERTAIN"
    LANDMARKS_UNCERTAIN = "LANDMARKS_UNCERTAIN"
    RANGE_NOT_VISIBLE = "RANGE_NOT_VISIBLE"
    RANGE_UNDERCOVERAGE = "RANGE_UNDERCOVERAGE"
    RANGE_OVERSCAN = "RANGE_OVERSCAN"
    FOV_TRUNCATION = "FOV_TRUNCATION"
    BORE_COLLISION = "BORE_COLLISION"
    TABLE_LIMIT = "TABLE_LIMIT"
    LATERAL_OFF_CENTRE = "LATERAL_OFF_CENTRE"
    PATIENT_MOVED = "PATIENT_MOVED"
    PATIENT_MOVING = "PATIENT_MOVING"


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


def sort_checks(items: list[Check]) -> tuple[Check, ...]:
    """Checks most severe first (errors, warnings, infos; stable within each)."""
    return tuple(sorted(items, key=lambda c: -_RANK[c.severity]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    """One finding.

    Attributes:
        code: stable code (:class:`CheckCode` value or a perception status code).
        severity: info, warning or error.
        message: one or two sentences for the technologist: what is wrong and what to do.
        details: measured values behind the message (JSON-friendly).
    """

    code: str
    severity: Severity
    message: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": str(self.code),
            "severity": str(self.severity),
            "message": self.message,
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


def worst_severity(checks: Sequence[Check]) -> Severity | None:
    """The most severe severity among ``checks`` (None when empty)."""
    return max((c.severity for c in checks), key=_RANK.__getitem__, default=None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckSettings:
    """Thresholds of the checks (mm unless named otherwise).

    Attributes:
        bore_diameter_mm: gantry bore (700 on most diagnostic CTs, 780-850 wide bore).
        bore_clearance_mm: closer to the bore than this is a warning.
        fov_diameter_mm: scan field of view (500 mm).
        gantry_half_depth_mm: the bore reaches this far before and beyond the scan plane along y.
        min_position_confidence: below this the position is uncertain (no mismatch error raised).
        min_arms_confidence: below this the arm state is uncertain.
        max_landmark_sigma_mm: an end landmark less certain than this is an error (plan not trusted).
        warn_landmark_sigma_mm: ... more uncertain than this is a warning.
        min_landmark_confidence: keypoint confidence below this is a warning.
        min_head_direction_p: the level network's probability that the perceived head direction is right
            (:class:`~positioning.planning.level_net.LevelNetOutput`) below this is an error ...
        warn_head_direction_p: ... below this a warning.
        min_visible_fraction: less of the range seen than this is a warning.
        min_view_context_mm: a scan range closer than this to where the body leaves the camera's image
            (:attr:`~positioning.perception.state.PatientState.view_cut_ends_mm`) is a warning: its
            landmarks are placed without the body beyond (the models place a hip joint from the legs
            too). 400 mm is about a thigh's length.
        lateral_tolerance_mm: a lateral off-centre above this is a warning.
        moved_threshold_mm: displacement since the confirmed plan (sideways, along the table) above
            this is an error.
        moved_height_threshold_mm: ... the same for the height above the table (noisier: the depth
            noise and breathing change it by up to about 9 mm between frames).
    """

    bore_diameter_mm: float = 700.0
    bore_clearance_mm: float = 20.0
    fov_diameter_mm: float = 500.0
    gantry_half_depth_mm: float = 400.0
    min_position_confidence: float = 0.5
    min_arms_confidence: float = 0.3
    max_landmark_sigma_mm: float = 40.0
    warn_landmark_sigma_mm: float = 25.0
    min_landmark_confidence: float = 0.5
    min_head_direction_p: float = 0.1
    warn_head_direction_p: float = 0.3
    min_visible_fraction: float = 0.9
    min_view_context_mm: float = 400.0
    lateral_tolerance_mm: float = 20.0
    moved_threshold_mm: float = 10.0
    moved_height_threshold_mm: float = 15.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{f.name} must be finite and >= 0, got {v}")
        if self.fov_diameter_mm > self.bore_diameter_mm:
            raise ValueError(
                f"fov_diameter_mm ({self.fov_diameter_mm}) cannot exceed bore_diameter_mm "
                f"({self.bore_diameter_mm})"
            )


DEFAULT_CHECK_SETTINGS = CheckSettings()

POSITION_NAMES: Mapping[str, str] = {
    "HFS": "head first, supine",
    "HFP": "head first, prone",
    "FFS": "feet first, supine",
    "FFP": "feet first, prone",
    "HFDL": "head first, lying on the left side",
    "HFDR": "head first, lying on the right side",
    "FFDL": "feet first, lying on the left side",
    "FFDR": "feet first, lying on the right side",
}


def _pos_text(p: PatientPosition | str) -> str:
    return f"{p} ({POSITION_NAMES.get(str(p), str(p))})"


def describe_lateral(dx_mm: float, position: PatientPosition | str | None) -> str:
    """A scanner-x displacement in words: ``"35 mm toward the patient's left (to the right as seen from the
    foot of the table)"``.

    Convention: ``dx_mm`` along scanner +x (to the right of an observer at the foot of the table facing
    the gantry); the patient's sides from the DICOM position's body axes.
    """
    d = abs(dx_mm)
    seen = "right" if dx_mm > 0 else "left"
    text = f"{d:.0f} mm to the {seen} as seen from the foot of the table"
    if position is None:
        return text
    _sup, post, left = BODY_AXES[PatientPosition(str(position))]
    s = math.copysign(1.0, dx_mm)
    if abs(left[0]) > 0.5:
        side = "left" if s * left[0] > 0 else "right"
        return f"{d:.0f} mm toward the patient's {side} ({seen} as seen from the foot of the table)"
    side = "back" if s * post[0] > 0 else "front"
    return f"{d:.0f} mm toward the patient's {side} ({seen} as seen from the foot of the table)"


# ------------------------------------------------------------------------------------------------ checks


def check_perception(
    status: PerceptionStatus,
    message: str = "",
    *,
    has_landmarks: bool = True,
    notes: Sequence[PerceptionNote] = (),
) -> list[Check]:
    """Perception's status and notes as checks (nothing for OK without notes)."""
    out = [
        Check(code=n.code, severity=Severity(n.severity), message=n.message, details=dict(n.details))
        for n in notes
    ]
    if status is not PerceptionStatus.OK:
        out.append(
            Check(
                code=status.code,
                severity=Severity(status.severity),
                message=message or status.message,
            )
        )
    if status.has_patient and not has_landmarks:
        out.append(
            Check(
                code=CheckCode.NO_LANDMARKS,
                severity=Severity.ERROR,
                message="A patient is on the table but no body landmarks were found: check that the "
                "patient is fully in the camera's view and not covered by a blanket, then plan again.",
            )
        )
    return out


def check_orientation(
    position: PatientPosition | None,
    confidence: float,
    expected: Sequence[PatientPosition],
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """The perceived patient position against the accepted ones (the protocol's, or the console's).

    Args:
        position: perceived position (None: undecided).
        confidence: its confidence.
        expected: accepted positions (the first is named in messages).
        settings: thresholds.
    """
    want = " or ".join(_pos_text(p) for p in expected)
    if position is None:
        return [
            Check(
                code=CheckCode.ORIENTATION_UNCERTAIN,
                severity=Severity.WARNING,
                message=f"The patient's position could not be recognised. Confirm it is {want} "
                "before scanning.",
            )
        ]
    details = {
        "perceived": str(position),
        "expected": [str(p) for p in expected],
        "confidence": round(confidence, 2),
    }
    if position in expected:
        if confidence < settings.min_position_confidence:
            return [
                Check(
                    code=CheckCode.ORIENTATION_UNCERTAIN,
                    severity=Severity.WARNING,
                    message=f"The patient appears to lie {_pos_text(position)}, but the camera is not sure "
                    f"(confidence {confidence:.0%}). Confirm the position at the console.",
                    details=details,
                )
            ]
        return []
    if confidence < settings.min_position_confidence:
        return [
            Check(
                code=CheckCode.ORIENTATION_UNCERTAIN,
                severity=Severity.WARNING,
                message=f"The patient may lie {_pos_text(position)} (confidence {confidence:.0%}) while "
                f"{want} is expected. Check the patient's position and the one selected at the console.",
                details=details,
            )
        ]
    return [
        Check(
            code=CheckCode.ORIENTATION_MISMATCH,
            severity=Severity.ERROR,
            message=f"The patient lies {_pos_text(position)}, but {want} is expected. Re-position the "
            "patient, or select the matching position at the console (a wrong position flips the "
            "images' orientation).",
            details=details,
        )
    ]


_ARM_TEXT = {
    ArmState.SIDES: "along the body",
    ArmState.RAISED: "raised above the head",
    ArmState.CHEST: "resting on the chest",
}
_ARM_ADVICE = {
    ArmState.SIDES: "place them along the body",
    ArmState.RAISED: "raise both arms above the head",
    ArmState.CHEST: "rest the hands on the chest",
}


def check_head_direction(
    head_direction_p: float,
    position: PatientPosition | str | None,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Does the body's shape agree with the perceived head direction (head first / feet first)?

    A wrong head direction puts every landmark on the wrong side of the body's middle, so the whole
    range is wrong; the level network reads the direction from the height map independently of the
    keypoints.

    Args:
        head_direction_p: probability that the perceived head direction is right, in [0, 1].
        position: the perceived position (named in the message).
        settings: thresholds.
    """
    if not math.isfinite(head_direction_p) or head_direction_p >= settings.warn_head_direction_p:
        return []
    error = head_direction_p < settings.min_head_direction_p
    other = "feet first" if str(position or "HF").startswith("HF") else "head first"
    seen = _pos_text(position) if position is not None else "the perceived position"
    return [
        Check(
            code=CheckCode.ORIENTATION_UNCERTAIN,
            severity=Severity.ERROR if error else Severity.WARNING,
            message=f"The body's shape suggests the patient lies {other}, not as perceived ({seen}). "
            "Confirm head first / feet first before planning; the scan range would be placed at the wrong "
            "end of the body.",
            details={
                "perceived": None if position is None else str(position),
                "head_direction_p": round(head_direction_p, 3),
            },
        )
    ]


def check_arms(
    arms: ArmState | None,
    confidence: float,
    allowed: Sequence[ArmState],
    protocol_name: str,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """The arm state against the protocol's allowed states (empty: any)."""
    if not allowed:
        return []
    advice = " or ".join(_ARM_ADVICE[a] for a in allowed)
    if arms is None:
        return [
            Check(
                code=CheckCode.ARMS_UNCERTAIN,
                severity=Severity.WARNING,
                message=f"The arms could not be seen clearly. For a {protocol_name} scan, {advice}.",
            )
        ]
    details = {
        "perceived": str(arms),
        "allowed": [str(a) for a in allowed],
        "confidence": round(confidence, 2),
    }
    if arms in allowed:
        return []
    if confidence < settings.min_arms_confidence:
        return [
            Check(
                code=CheckCode.ARMS_UNCERTAIN,
                severity=Severity.WARNING,
                message=f"The arms may be {_ARM_TEXT[arms]} (not sure). For a {protocol_name} scan, "
                f"{advice}.",
                details=details,
            )
        ]
    return [
        Check(
            code=CheckCode.ARMS_IN_FIELD,
            severity=Severity.ERROR,
            message=f"The arms are {_ARM_TEXT[arms]}: they lie in the field of this {protocol_name} scan "
            f"(streak artefacts and higher dose). Please {advice}.",
            details=details,
        )
    ]


def check_landmarks(
    needed: Sequence[str],
    sigma_mm: Mapping[str, float],
    confidence: Mapping[str, float],
    issues: Sequence[str] = (),
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Are the landmarks the protocol needs known well enough to plan?

    Args:
        needed: landmark names the range (and isocenter region) need.
        sigma_mm: landmark -> expected error (absent = not estimated).
        confidence: landmark -> confidence.
        issues: reasons reported by the landmark estimation.
        settings: thresholds.
    """
    missing = [n for n in needed if n not in sigma_mm]
    too_wide = {
        n: sigma_mm[n] for n in needed if n in sigma_mm and sigma_mm[n] > settings.max_landmark_sigma_mm
    }
    if missing or too_wide:
        what = ", ".join(n.replace("_", " ") for n in [*missing, *too_wide])
        why = "; ".join(issues) if issues else "keypoints missing"
        return [
            Check(
                code=CheckCode.LANDMARKS_UNCERTAIN,
                severity=Severity.ERROR,
                message=f"Cannot place the scan range reliably: {what} could not be located ({why}). "
                "Make sure the whole patient is visible, uncovered and still, or set the range from the "
                "scout.",
                details={"missing": missing, "sigma_mm": {k: round(v, 1) for k, v in too_wide.items()}},
            )
        ]
    soft = {
        n: round(sigma_mm[n], 1)
        for n in needed
        if sigma_mm[n] > settings.warn_landmark_sigma_mm
        or confidence.get(n, 0.0) < settings.min_landmark_confidence
    }
    if soft:
        return [
            Check(
                code=CheckCode.LANDMARKS_UNCERTAIN,
                severity=Severity.WARNING,
                message="The scan range's landmarks are less certain than usual ("
                + ", ".join(n.replace("_", " ") for n in soft)
                + "). Check the range on the scout before scanning.",
                details={"sigma_mm": soft},
            )
        ]
    return []


def check_visible_range(
    seen_lo_mm: float,
    seen_hi_mm: float,
    lo_mm: float,
    hi_mm: float,
    *,
    isocenter_found: bool = True,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Does the camera see the body over the whole scan range?

    Convention: scanner y, mm; ``seen_*`` is the y extent of the profile's valid slices (NaN: none).
    ``isocenter_found`` False (no valid slice inside the range): an error, since nothing can be planned.
    """
    length = max(hi_mm - lo_mm, 1e-9)
    overlap = max(0.0, min(hi_mm, seen_hi_mm) - max(lo_mm, seen_lo_mm))
    seen = math.isfinite(seen_lo_mm) and math.isfinite(seen_hi_mm)
    frac = overlap / length if seen else 0.0
    if not isocenter_found:
        return [
            Check(
                code=CheckCode.RANGE_NOT_VISIBLE,
                severity=Severity.ERROR,
                message=f"The camera sees no body surface it can use between y {lo_mm:.0f} and "
                f"{hi_mm:.0f} mm (out of view, or covered): no isocenter or table offset can be planned. "
                "Uncover or reposition the patient, or plan on the scout.",
                details={"visible_fraction": round(frac, 3), "range_mm": [round(lo_mm, 1), round(hi_mm, 1)]},
            )
        ]
    if frac >= settings.min_visible_fraction:
        return []
    return [
        Check(
            code=CheckCode.RANGE_NOT_VISIBLE,
            severity=Severity.WARNING,
            message=f"Only {frac:.0%} of the scan range is seen by the camera (the body is out of view or "
            "covered there): the range end and isocenter there are extrapolated. Check them on the scout.",
            details={
                "visible_fraction": round(frac, 3),
                "seen_mm": [round(seen_lo_mm, 1), round(seen_hi_mm, 1)],
            },
        )
    ]


def check_view_context(
    cut_ends_mm: Sequence[float],
    lo_mm: float,
    hi_mm: float,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Is the body around the scan range in the camera's view? Landmarks are placed from the body's shape
    and proportions (the level network reads the whole height map, a hip joint is placed from the legs
    too): near where the body leaves the image they lose that context, and the range end there may be off
    by several centimetres while the sources still agree.

    Convention: scanner y, mm; ``cut_ends_mm`` are where the body leaves the image at its ends.
    """

    def distance(c: float) -> float:
        return 0.0 if lo_mm <= c <= hi_mm else min(abs(c - lo_mm), abs(c - hi_mm))

    near = [c for c in cut_ends_mm if math.isfinite(c) and distance(c) < settings.min_view_context_mm]
    if not near:
        return []
    cut = min(near, key=distance)
    return [
        Check(
            code=CheckCode.LANDMARKS_UNCERTAIN,
            severity=Severity.WARNING,
            message=f"The body leaves the camera's view at y {cut:.0f} mm, {distance(cut):.0f} mm from the "
            "scan range: its landmarks there are placed with part of the body unseen. Check the range on "
            "the scout.",
            details={"view_cut_y_mm": round(cut, 1), "distance_mm": round(distance(cut), 1)},
        )
    ]


def check_range_coverage(
    given: tuple[float, float],
    anatomical: tuple[float, float],
    superior_sign: int,
    *,
    coverage_tolerance_mm: float,
    overscan_tolerance_mm: float,
    protocol_name: str,
) -> list[Check]:
    """A given (e.g. operator-set) scan range against the anatomical range the protocol requires.

    Convention: ranges ``(start_mm, end_mm)`` along scanner y with start < end; ``superior_sign`` +1 head
    toward +y.
    """
    g_lo, g_hi = given
    a_lo, a_hi = anatomical
    short = {"low": g_lo - a_lo, "high": a_hi - g_hi}  # > 0: anatomy missed at that end
    over = {"low": a_lo - g_lo, "high": g_hi - a_hi}  # > 0: extends beyond the margin

    def end_name(which: str) -> str:
        superior_end = "high" if superior_sign >= 0 else "low"
        return "head end" if which == superior_end else "foot end"

    out = []
    missed = {k: v for k, v in short.items() if v > coverage_tolerance_mm}
    if missed:
        out.append(
            Check(
                code=CheckCode.RANGE_UNDERCOVERAGE,
                severity=Severity.ERROR,
                message="The scan range misses anatomy the "
                + protocol_name
                + " protocol requires: "
                + ", ".join(f"{v:.0f} mm at the {end_name(k)}" for k, v in missed.items())
                + ". Extend the range.",
                details={
                    f"missed_{end_name(k).replace(' ', '_')}_mm": round(v, 1) for k, v in missed.items()
                },
            )
        )
    extra = {k: v for k, v in over.items() if v > overscan_tolerance_mm}
    if extra:
        out.append(
            Check(
                code=CheckCode.RANGE_OVERSCAN,
                severity=Severity.WARNING,
                message="The scan range extends beyond what the "
                + protocol_name
                + " protocol needs: "
                + ", ".join(f"{v:.0f} mm at the {end_name(k)}" for k, v in extra.items())
                + " (extra dose). Shorten the range.",
                details={f"extra_{end_name(k).replace(' ', '_')}_mm": round(v, 1) for k, v in extra.items()},
            )
        )
    return out


def _contour(
    y_mm: np.ndarray,
    table_z_mm: np.ndarray,
    top_z_mm: np.ndarray,
    x_min_mm: np.ndarray,
    x_max_mm: np.ndarray,
    dz_mm: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of each slice's outline worth testing against a circle: the top (at the lateral extreme's
    centre), and the lateral extremes at 40 % of the height (where a lying body is widest), and the top
    corners (lateral extremes at 75 % of the height, pulled 20 % of the half-width inward)."""
    h = top_z_mm - table_z_mm
    mid = (x_min_mm + x_max_mm) / 2
    half = (x_max_mm - x_min_mm) / 2
    xs = [mid, x_min_mm, x_max_mm, mid - 0.8 * half, mid + 0.8 * half]
    zs = [top_z_mm, table_z_mm + 0.4 * h, table_z_mm + 0.4 * h, table_z_mm + 0.75 * h, table_z_mm + 0.75 * h]
    x = np.stack(xs, axis=1)
    z = np.stack(zs, axis=1) + dz_mm
    y = np.repeat(y_mm[:, None], x.shape[1], axis=1)
    return x, y, z


def check_fov(
    y_mm: np.ndarray,
    table_z_mm: np.ndarray,
    top_z_mm: np.ndarray,
    x_min_mm: np.ndarray,
    x_max_mm: np.ndarray,
    lo_mm: float,
    hi_mm: float,
    vertical_move_mm: float,
    position: PatientPosition | None = None,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Does the body fit in the scan field of view over the scan range after the planned table move?

    Convention: scanner frame, mm; per-slice arrays ``(K,)`` as in the surface profile;
    ``vertical_move_mm`` is the table's planned vertical move (positive = up).
    """
    sel = (y_mm >= lo_mm) & (y_mm <= hi_mm) & np.isfinite(top_z_mm) & np.isfinite(x_min_mm)
    if not sel.any():
        return []
    x, _y, z = _contour(
        y_mm[sel], table_z_mm[sel], top_z_mm[sel], x_min_mm[sel], x_max_mm[sel], vertical_move_mm
    )
    r = np.hypot(x, z)
    r_fov = settings.fov_diameter_mm / 2
    worst = float(np.nanmax(r))
    if worst <= r_fov:
        return []
    k, j = np.unravel_index(int(np.nanargmax(r)), r.shape)
    width = float(np.nanmax(x_max_mm[sel] - x_min_mm[sel]))
    off = float(np.nanmedian((x_min_mm[sel] + x_max_mm[sel]) / 2))
    details = {
        "outside_mm": round(worst - r_fov, 1),
        "at_y_mm": round(float(y_mm[sel][k]), 1),
        "max_width_mm": round(width, 1),
        "fov_diameter_mm": settings.fov_diameter_mm,
    }
    if width > settings.fov_diameter_mm:
        msg = (
            f"The body is {width:.0f} mm wide, more than the {settings.fov_diameter_mm / 10:.0f} cm "
            "scan field of view: the edges will be truncated. Use the extended field-of-view reconstruction."
        )
    elif abs(off) > 10 and np.sign(x[k, j] - off) == np.sign(off):
        msg = (
            f"The body extends {worst - r_fov:.0f} mm beyond the {settings.fov_diameter_mm / 10:.0f} cm scan "
            f"field of view (truncation artefacts). Move the patient {describe_lateral(-off, position)}."
        )
    else:
        msg = (
            f"The body extends {worst - r_fov:.0f} mm beyond the {settings.fov_diameter_mm / 10:.0f} cm scan "
            "field of view at the planned table height (truncation artefacts). Use the extended "
            "field-of-view reconstruction or re-centre the patient."
        )
    return [Check(code=CheckCode.FOV_TRUNCATION, severity=Severity.WARNING, message=msg, details=details)]


def check_bore(
    y_mm: np.ndarray,
    table_z_mm: np.ndarray,
    top_z_mm: np.ndarray,
    x_min_mm: np.ndarray,
    x_max_mm: np.ndarray,
    first_y_in_bore_mm: float,
    vertical_move_mm: float,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Collision risk: the body's outline against the bore circle at the planned table height, over every
    slice that enters the bore during the scan.

    The table moves the patient along +y (into the gantry) until the scan's far end reaches the scan
    plane, so every body slice at ``y >= first_y_in_bore_mm`` (the scan range's lower y end minus
    :attr:`CheckSettings.gantry_half_depth_mm`) passes through the bore.

    Convention: scanner frame, mm; ``vertical_move_mm`` positive = table up.
    """
    sel = (y_mm >= first_y_in_bore_mm) & np.isfinite(top_z_mm) & np.isfinite(x_min_mm)
    if not sel.any():
        return []
    x, _y, z = _contour(
        y_mm[sel], table_z_mm[sel], top_z_mm[sel], x_min_mm[sel], x_max_mm[sel], vertical_move_mm
    )
    r = np.hypot(x, z)
    radius = settings.bore_diameter_mm / 2
    worst = float(np.nanmax(r))
    k, _j = np.unravel_index(int(np.nanargmax(r)), r.shape)
    clearance = radius - worst
    details = {
        "clearance_mm": round(clearance, 1),
        "at_y_mm": round(float(y_mm[sel][k]), 1),
        "bore_diameter_mm": settings.bore_diameter_mm,
    }
    if clearance < 0:
        return [
            Check(
                code=CheckCode.BORE_COLLISION,
                severity=Severity.ERROR,
                message=f"Collision risk: at the planned table height the patient reaches "
                f"{-clearance:.0f} mm beyond the {settings.bore_diameter_mm / 10:.0f} cm bore. Lower the "
                "table or re-position the patient (arms, lateral position) before moving into the gantry.",
                details=details,
            )
        ]
    if clearance < settings.bore_clearance_mm:
        return [
            Check(
                code=CheckCode.BORE_COLLISION,
                severity=Severity.WARNING,
                message=f"Tight fit: only {clearance:.0f} mm between the patient and the "
                f"{settings.bore_diameter_mm / 10:.0f} cm bore at the planned table height. Watch the "
                "patient while the table moves in.",
                details=details,
            )
        ]
    return []


def check_table_vertical(
    requested_mm: float, applied_mm: float, residual_mm: float, limits_z_mm: tuple[float, float]
) -> list[Check]:
    """The vertical move was clamped to the table's travel: report the remaining off-centre.

    Convention: moves positive = up; ``residual_mm`` = isocenter z after the applied move.
    """
    if abs(requested_mm - applied_mm) < 0.5:
        return []
    where = "highest" if requested_mm > applied_mm else "lowest"
    side = "below" if residual_mm < 0 else "above"
    return [
        Check(
            code=CheckCode.TABLE_LIMIT,
            severity=Severity.WARNING,
            message=f"The table cannot move far enough: at its {where} position the patient's centre stays "
            f"{abs(residual_mm):.0f} mm {side} the isocenter (higher surface dose and noise).",
            details={
                "requested_vertical_mm": round(requested_mm, 1),
                "applied_vertical_mm": round(applied_mm, 1),
                "residual_mm": round(residual_mm, 1),
                "table_top_z_range_mm": [float(v) for v in limits_z_mm],
            },
        )
    ]


def check_table_travel(travel_needed_mm: tuple[float, float], limits_mm: tuple[float, float]) -> list[Check]:
    """Can the table travel far enough to bring both ends of the scan range to the scan plane?

    Convention: travel positive = into the gantry (+y), relative to the current table position.
    """
    lo, hi = limits_mm
    bad = [t for t in travel_needed_mm if not lo <= t <= hi]
    if not bad:
        return []
    return [
        Check(
            code=CheckCode.TABLE_LIMIT,
            severity=Severity.ERROR,
            message=f"The scan range needs {max(bad, key=abs):.0f} mm of table travel, beyond the table's "
            f"{lo:.0f} to {hi:.0f} mm: the range cannot be scanned as placed. Move the patient along the "
            "table (toward the gantry) or shorten the range.",
            details={
                "travel_needed_mm": [round(t, 1) for t in travel_needed_mm],
                "travel_limits_mm": [lo, hi],
            },
        )
    ]


def check_lateral(
    isocenter_x_mm: float,
    position: PatientPosition | None,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Lateral off-centre: tables do not move sideways, so the fix is to move the patient."""
    if not math.isfinite(isocenter_x_mm) or abs(isocenter_x_mm) <= settings.lateral_tolerance_mm:
        return []
    return [
        Check(
            code=CheckCode.LATERAL_OFF_CENTRE,
            severity=Severity.WARNING,
            message=f"The patient lies {abs(isocenter_x_mm):.0f} mm off the table's centre line. Move "
            f"the patient {describe_lateral(-isocenter_x_mm, position)}.",
            details={
                "isocenter_x_mm": round(isocenter_x_mm, 1),
                "patient_move_x_mm": round(-isocenter_x_mm, 1),
            },
        )
    ]


def check_moved(
    displacement_mm: Mapping[str, float],
    moving: bool = False,
    *,
    settings: CheckSettings = DEFAULT_CHECK_SETTINGS,
) -> list[Check]:
    """Has the patient moved since the plan was confirmed? Is the patient moving now?

    Args:
        displacement_mm: what changed since the confirmed plan (``{"sideways": 3.1,
            "along_the_table": 12.0, "height": 2.0}``), absolute values in mm; empty when there is no
            confirmed plan.
        moving: perception reports motion now.
        settings: thresholds.
    """
    out = []

    def limit(key: str) -> float:
        return settings.moved_height_threshold_mm if key == "height" else settings.moved_threshold_mm

    over = {k: abs(v) for k, v in displacement_mm.items() if abs(v) > limit(k)}
    if over:
        worst_key = max(over, key=lambda k: over[k])
        out.append(
            Check(
                code=CheckCode.PATIENT_MOVED,
                severity=Severity.ERROR,
                message=f"The patient has moved since the plan was confirmed ({over[worst_key]:.0f} mm, "
                f"{worst_key.replace('_', ' ')}). Check the position and confirm the new plan.",
                details={k: round(v, 1) for k, v in displacement_mm.items()},
            )
        )
    if moving:
        out.append(
            Check(
                code=CheckCode.PATIENT_MOVING,
                severity=Severity.WARNING,
                message="The patient is moving. Ask the patient to lie still; the plan will settle.",
            )
        )
    return out
