"""Reading the simulator's ground-truth sidecar (``NAME.truth.json``) — evaluation code only.

The pipeline (perception, planning, service) never imports this module: truth is for judging results.

Convention: all positions are scanner-frame millimetres (IEC 61217).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning.errors import RecordingError
from positioning.sim.cross_section import CrossSections
from positioning.sim.session import TRUTH_SCHEMA, truth_path_for

__all__ = ["load_truth", "frame_cross_sections", "true_isocenter", "truth_level_y_mm", "truth_summary"]


def load_truth(recording_or_truth: str | Path) -> dict[str, Any]:
    """Load the truth document of a recording (``NAME.db3`` or ``NAME.truth.json``).

    Raises:
        RecordingError: no sidecar, not JSON, or an unknown schema.
    """
    p = Path(recording_or_truth)
    if not p.name.endswith(".truth.json"):
        p = truth_path_for(p)
    if not p.is_file():
        raise RecordingError(
            f"no ground-truth sidecar {p.name} beside the recording (real recordings have none)"
        )
    try:
        doc = json.loads(p.read_text())
    except ValueError as e:  # json.JSONDecodeError, or UnicodeDecodeError for a binary file
        raise RecordingError(f"truth file {p} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise RecordingError(f"truth file {p} must hold a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != TRUTH_SCHEMA:
        raise RecordingError(f"truth file {p} has schema {doc.get('schema')!r}, expected {TRUTH_SCHEMA!r}")
    return doc


def frame_cross_sections(doc: dict[str, Any], frame_index: int = 0) -> CrossSections | None:
    """The body cross-sections of one frame (None for an empty table)."""
    cs = doc["frames"][frame_index]["cross_sections"]
    return None if cs is None else CrossSections.from_dict(cs)


def true_isocenter(cs: CrossSections, start_mm: float, end_mm: float) -> tuple[float, float]:
    """True isocenter of a scan range: the mean of the cross-section centroids with start <= y <= end.

    Returns:
        ``(x_mm, z_mm)``.
    """
    lo, hi = min(start_mm, end_mm), max(start_mm, end_mm)
    sel = (cs.y_mm >= lo) & (cs.y_mm <= hi) & (cs.area_mm2 > 0)
    if not sel.any():
        raise ValueError(f"no body cross-section between y = {lo:.0f} and {hi:.0f} mm")
    return float(np.mean(cs.centroid_x_mm[sel])), float(np.mean(cs.centroid_z_mm[sel]))


def truth_level_y_mm(
    landmarks_mm: Mapping[str, np.ndarray], keypoints_mm: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """Truth levels (scanner y, mm) of the planning landmarks: the simulator's anatomical landmarks, and
    ``knee`` / ``ankle`` as the midpoints of the left and right truth joints."""
    out = {k: float(v[1]) for k, v in landmarks_mm.items()}
    for joint in ("knee", "ankle"):
        if f"left_{joint}" in keypoints_mm and f"right_{joint}" in keypoints_mm:
            out[joint] = float((keypoints_mm[f"left_{joint}"][1] + keypoints_mm[f"right_{joint}"][1]) / 2)
    return out


def truth_summary(doc: dict[str, Any]) -> list[str]:
    """Human-readable lines describing the truth of a simulated recording."""
    lines = [
        f"scenario {doc['scenario']} (seed {doc['seed']}), camera {doc['camera']['model']}, "
        f"tilt {doc['camera']['tilt_deg']:.1f} deg"
    ]
    p = doc.get("patient")
    if p is None:
        lines.append("patient: none (empty table)")
        return lines
    c = p["contact"]
    lines.append(
        f"patient: {p['patient_position']}, arms {p['arms']}, height {p['height_mm']:.0f} mm, "
        f"mass {p['mass_kg']:.1f} kg, BMI {p['bmi']:.1f}, lateral offset {p['lateral_offset_mm']:+.1f} mm"
    )
    lines.append(
        f"contact: mattress top z {c['mattress_top_z_mm']:.1f} mm, sink {c['sink_mm']:.1f} mm, "
        f"tissue flattening {c['flatten_mm']:.1f} mm"
    )
    f0 = doc["frames"][0]
    lm = f0["landmarks"]
    lines.append(
        "landmarks y (mm): "
        + ", ".join(
            f"{k} {lm[k][1]:.0f}"
            for k in ("skull_vertex", "jugular_notch", "xiphoid", "iliac_crest", "pubic_symphysis")
            if k in lm
        )
    )
    cs = frame_cross_sections(doc, 0)
    if cs is not None and "xiphoid" in lm and "jugular_notch" in lm:
        x, z = true_isocenter(cs, lm["xiphoid"][1], lm["jugular_notch"][1])
        lines.append(f"true isocenter over jugular notch..xiphoid: x {x:+.1f} mm, z {z:+.1f} mm")
    return lines
