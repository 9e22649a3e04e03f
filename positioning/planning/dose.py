"""Dose and noise impact of vertical mis-centering and of the scan length, from published figures.

Models (all piecewise-linear interpolation of published points, with the last segment extended beyond
the last point and the result flagged ``extrapolated``):

* **Surface dose** vs vertical off-centre (32 cm body phantom, bowtie filter; Li et al., AJR 2007):
  +12-18 % at 30 mm and +41-49 % at 60 mm below the isocenter. The point estimate interpolates the
  midpoints (0 % at 0 mm, 15 % at 30 mm, 45 % at 60 mm); the low/high bounds interpolate the ends of the
  published ranges. The published figures are for patients *below* the isocenter (the common case,
  about twice as frequent as above); the same magnitude is applied above the isocenter, an assumption
  the output states.
* **Image noise** vs vertical off-centre: up to +22 % at 60 mm (REFERENCES.md, with the +41 % surface
  dose figure); interpolated linearly from 0 % at 0 mm.
* **Scan length**: the dose-length product is proportional to the irradiated length at fixed CTDIvol, so
  the dose avoided by a planned range instead of the protocol's generic fixed-length range is
  ``(generic - planned) / generic`` of the generic scan's DLP. (For reference: overscanning in 99 % of
  442 exams averaged 43 mm, 8.6-10.4 % of the dose.)

Convention: ``vertical_offset_mm`` is the isocenter's z in the scanner frame (IEC 61217, +z up): the
patient's centre relative to the scanner isocenter, negative = below (the table is too low). Lengths in
mm along scanner y.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = [
    "SURFACE_DOSE_POINTS",
    "NOISE_POINTS",
    "DoseFigure",
    "CenteringImpact",
    "OverscanImpact",
    "interpolate_figure",
    "surface_dose_increase",
    "noise_increase",
    "centering_impact",
    "overscan_impact",
    "DOSE_MODEL_SOURCE",
]

#: ``(|offset| mm, mid %, low %, high %)``: surface dose increase, Li et al. 2007.
SURFACE_DOSE_POINTS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    (30.0, 15.0, 12.0, 18.0),
    (60.0, 45.0, 41.0, 49.0),
)
#: ``(|offset| mm, %)``: image noise increase (up to 22 % at 60 mm).
NOISE_POINTS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (60.0, 22.0))
DOSE_MODEL_SOURCE = (
    "surface dose: Li et al., AJR 2007 (32 cm phantom: +12-18 % at 30 mm, +41-49 % at 60 mm below "
    "isocenter), piecewise-linear; noise: +22 % at 60 mm, linear; scan length: DLP proportional to length"
)


def interpolate_figure(x: float, xs: np.ndarray, ys: np.ndarray) -> tuple[float, bool]:
    """Piecewise-linear interpolation in ``(xs, ys)``, the last segment extended beyond ``xs[-1]``.

    Returns:
        ``(value, extrapolated)``.
    """
    if not math.isfinite(x):
        return math.nan, False
    if x <= xs[-1]:
        return float(np.interp(x, xs, ys)), False
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return float(ys[-1] + slope * (x - xs[-1])), True


@dataclasses.dataclass(frozen=True, kw_only=True)
class DoseFigure:
    """A relative increase with its published range.

    Attributes:
        percent: point estimate (%).
        low_percent, high_percent: the range the published figures allow (%).
        extrapolated: the offset lies beyond the published points.
    """

    percent: float
    low_percent: float
    high_percent: float
    extrapolated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": round(self.percent, 1),
            "range_percent": [round(self.low_percent, 1), round(self.high_percent, 1)],
            "extrapolated": self.extrapolated,
        }


def surface_dose_increase(vertical_offset_mm: float) -> DoseFigure:
    """Surface dose increase for a vertical off-centre (Li et al. 2007; same magnitude above and below).

    Convention: ``vertical_offset_mm`` = isocenter z (negative = patient below the isocenter).

    Example:
        >>> surface_dose_increase(-30.0).percent
        15.0
    """
    d = abs(float(vertical_offset_mm))
    pts = np.asarray(SURFACE_DOSE_POINTS)
    mid, ext = interpolate_figure(d, pts[:, 0], pts[:, 1])
    lo, _ = interpolate_figure(d, pts[:, 0], pts[:, 2])
    hi, _ = interpolate_figure(d, pts[:, 0], pts[:, 3])
    return DoseFigure(percent=mid, low_percent=lo, high_percent=hi, extrapolated=ext)


def noise_increase(vertical_offset_mm: float) -> DoseFigure:
    """Image noise increase for a vertical off-centre (+22 % at 60 mm, linear).

    Example:
        >>> round(noise_increase(-60.0).percent, 1)
        22.0
    """
    d = abs(float(vertical_offset_mm))
    pts = np.asarray(NOISE_POINTS)
    v, ext = interpolate_figure(d, pts[:, 0], pts[:, 1])
    return DoseFigure(percent=v, low_percent=0.0, high_percent=v, extrapolated=ext)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CenteringImpact:
    """Impact of the vertical mis-centering now and after the suggested table move.

    Attributes:
        current_offset_mm: isocenter z now (negative = below).
        corrected_offset_mm: isocenter z after the suggested move (non-zero when a table limit binds).
        current_surface_dose, corrected_surface_dose: surface dose increase vs a centred patient.
        current_noise, corrected_noise: noise increase vs a centred patient.
        surface_dose_saved_percent: relative surface dose saved by the move,
            ``1 - (1 + corrected) / (1 + current)``, in %.
        above_isocenter: the patient is above the isocenter (figures are for below: assumption).
    """

    current_offset_mm: float
    corrected_offset_mm: float
    current_surface_dose: DoseFigure
    corrected_surface_dose: DoseFigure
    current_noise: DoseFigure
    corrected_noise: DoseFigure
    surface_dose_saved_percent: float
    above_isocenter: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "current": {
                "vertical_offset_mm": round(self.current_offset_mm, 1),
                "surface_dose_increase": self.current_surface_dose.to_json(),
                "noise_increase": self.current_noise.to_json(),
            },
            "after_correction": {
                "vertical_offset_mm": round(self.corrected_offset_mm, 1),
                "surface_dose_increase": self.corrected_surface_dose.to_json(),
                "noise_increase": self.corrected_noise.to_json(),
            },
            "surface_dose_saved_percent": round(self.surface_dose_saved_percent, 1),
            "assumption": "figures measured below the isocenter; applied to offsets above it too"
            if self.above_isocenter
            else None,
        }


def centering_impact(current_offset_mm: float, corrected_offset_mm: float = 0.0) -> CenteringImpact:
    """Surface dose and noise impact of the mis-centering now and after the suggested move.

    Convention: offsets are the isocenter's z (scanner frame, mm; negative = patient below).
    """
    cur, cor = surface_dose_increase(current_offset_mm), surface_dose_increase(corrected_offset_mm)
    saved = 100.0 * (1.0 - (1.0 + cor.percent / 100.0) / (1.0 + cur.percent / 100.0))
    return CenteringImpact(
        current_offset_mm=float(current_offset_mm),
        corrected_offset_mm=float(corrected_offset_mm),
        current_surface_dose=cur,
        corrected_surface_dose=cor,
        current_noise=noise_increase(current_offset_mm),
        corrected_noise=noise_increase(corrected_offset_mm),
        surface_dose_saved_percent=saved,
        above_isocenter=current_offset_mm > 0.0 or corrected_offset_mm > 0.0,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OverscanImpact:
    """The planned range against the protocol's generic fixed-length range.

    Attributes:
        planned_length_mm: planned scan length.
        generic_length_mm: the protocol's generic length.
        overscan_avoided_mm: ``max(0, generic - planned)``.
        dlp_saved_percent: the DLP avoided, in % of the generic scan's (negative when the planned range
            is longer).
        generic_too_short_mm: ``max(0, planned - generic)``: anatomy the generic range would have missed.
    """

    planned_length_mm: float
    generic_length_mm: float
    overscan_avoided_mm: float
    dlp_saved_percent: float
    generic_too_short_mm: float

    def to_json(self) -> dict[str, Any]:
        return {
            "planned_length_mm": round(self.planned_length_mm, 1),
            "generic_length_mm": round(self.generic_length_mm, 1),
            "overscan_avoided_mm": round(self.overscan_avoided_mm, 1),
            "dlp_saved_percent": round(self.dlp_saved_percent, 1),
            "generic_too_short_mm": round(self.generic_too_short_mm, 1),
        }


def overscan_impact(planned_length_mm: float, generic_length_mm: float) -> OverscanImpact:
    """Length and DLP difference between the planned range and the protocol's generic range.

    Raises:
        ValueError: a length is not finite and positive.

    Example:
        >>> overscan_impact(340.0, 400.0).dlp_saved_percent
        15.0
    """
    if not (planned_length_mm > 0 and generic_length_mm > 0):
        raise ValueError(f"lengths must be > 0, got {planned_length_mm}, {generic_length_mm}")
    diff = generic_length_mm - planned_length_mm
    return OverscanImpact(
        planned_length_mm=float(planned_length_mm),
        generic_length_mm=float(generic_length_mm),
        overscan_avoided_mm=max(0.0, diff),
        dlp_saved_percent=100.0 * diff / generic_length_mm,
        generic_too_short_mm=max(0.0, -diff),
    )
