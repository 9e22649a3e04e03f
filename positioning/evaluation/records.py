"""What one evaluated recording gives: the plan, and with truth its errors, as plain JSON-able data.

A :class:`CaseRecord` is what a worker (a Dask task) sends back and what ``results.json`` holds, one per
recording; every figure of the evaluation report is computed from a list of them
(:mod:`positioning.evaluation.summary`). Recordings without truth (a real camera session) have
``truth = None`` and ``errors = None``: the report shows their plan, checks and overlay only. A case that
made no plan keeps its ``failure`` and is counted, never dropped.

Convention: scanner frame (IEC 61217), mm; errors are estimate minus truth.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["CaseTruth", "CaseErrors", "CaseRecord", "json_safe"]


def json_safe(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, floats rounded to 0.01, recursively."""
    if isinstance(v, float):
        return round(v, 2) if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseTruth:
    """What the simulator's truth says about the case (evaluation only).

    Attributes:
        position, arms: the true patient position (DICOM code) and arm state (None: empty table).
        height_mm, mass_kg, bmi: body size (NaN: empty table).
        age_years: approximate age from the body model's age parameter (NaN: empty table).
        sex: ``male`` / ``female`` (the body model's gender parameter below / above 0.5).
        iso_z_mm, iso_x_mm: the true isocenter over the true scan range (NaN: not defined).
        iso_z_plan_range_mm: the true vertical isocenter over the plan's own range (NaN: no plan).
        start_mm, end_mm: the true scan range (the protocol applied to the truth landmarks).
        table_top_z_mm: the free mattress top.
        factors: factor name -> level, for the breakdowns (age group, BMI class, sex, position, arms,
            camera, camera height, camera tilt, noise level, cover, staff, lighting, ...).
    """

    position: str | None
    arms: str | None
    height_mm: float
    mass_kg: float
    bmi: float
    age_years: float
    sex: str | None
    iso_z_mm: float
    iso_x_mm: float
    iso_z_plan_range_mm: float
    start_mm: float
    end_mm: float
    table_top_z_mm: float
    factors: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseTruth:
        kw = dict(d)
        for f in dataclasses.fields(cls):
            if f.type == "float":
                kw[f.name] = _nan(kw.get(f.name))
        return cls(**kw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseErrors:
    """A plan's errors against truth (NaN where not measurable).

    Attributes:
        iso_z_mm, iso_x_mm: isocenter error over the plan's own range (vertical, lateral).
        table_vertical_mm: the suggested vertical table move minus the true one (over the true range).
        table_longitudinal_mm: the suggested longitudinal move minus the true one (first slice).
        start_mm, end_mm: scan-range ends minus the true ones.
        table_top_mm: the table top found minus the free mattress top.
        keypoints_mm: COCO-17 name -> 3-D distance to the truth keypoint (perceived landmarks only).
        levels_mm: planning landmark name -> its level (scanner y) minus the truth level.
        position_right, arms_right: perceived position / arm state equal the truth (False: none found).
        large_error: vertical isocenter more than 15 mm off, or a range end more than 30 mm off.
        flagged: a check says the result may be wrong (a reliability check, warning or error).
    """

    iso_z_mm: float
    iso_x_mm: float
    table_vertical_mm: float
    table_longitudinal_mm: float
    start_mm: float
    end_mm: float
    table_top_mm: float
    keypoints_mm: dict[str, float]
    levels_mm: dict[str, float]
    position_right: bool
    arms_right: bool
    large_error: bool
    flagged: bool

    @property
    def silent_failure(self) -> bool:
        return self.large_error and not self.flagged

    def to_json(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self)) | {"silent_failure": self.silent_failure}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseErrors:
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if f.type == "float":
                kw[f.name] = _nan(kw[f.name])
        kw["keypoints_mm"] = {k: _nan(v) for k, v in kw["keypoints_mm"].items()}
        kw["levels_mm"] = {k: _nan(v) for k, v in kw["levels_mm"].items()}
        return cls(**kw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseRecord:
    """One evaluated recording.

    Attributes:
        name: the case's name (``SCENARIO@SEED`` for a suite session, the file stem for a folder's).
        recording: the recording's path (on the machine that ran it).
        protocol: the protocol planned; body_region: its body region (``chest``, ``abdomen``, ...).
        console_position: the patient position the console entered (None: the protocol's).
        landmarks: the landmark backends (``mediapipe``, ``depth``, ``fused``).
        plan: the plan's JSON (the ``positioning plan --json`` document; None when no plan was made).
        failure: why no plan was made (None when one was): the error's message.
        checks: the plan's checks as ``{code, severity, message}``.
        check_labels: check code -> whether truth says it should fire (codes truth can judge).
        truth: the truth (None: a recording without truth).
        errors: the plan's errors (None: no truth, or no plan).
        overlay_jpeg: the last frame with the plan drawn (JPEG bytes; not in JSON, written beside it).
        frames: frames perceived.
        seconds: wall time of the case on its worker.
        worker: where it ran.
    """

    name: str
    recording: str
    protocol: str
    body_region: str
    console_position: str | None
    landmarks: str
    plan: dict[str, Any] | None
    failure: str | None
    checks: list[dict[str, str]]
    check_labels: dict[str, bool]
    truth: CaseTruth | None
    errors: CaseErrors | None
    frames: int
    seconds: float
    worker: str
    overlay_jpeg: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def has_truth(self) -> bool:
        return self.truth is not None

    @property
    def planned(self) -> bool:
        """A plan with a scan range and an isocenter was made."""
        p = self.plan
        return p is not None and p.get("scan_range") is not None and p.get("isocenter") is not None

    @property
    def fired(self) -> dict[str, str]:
        """Check code -> its worst severity."""
        rank = {"info": 0, "warning": 1, "error": 2}
        out: dict[str, str] = {}
        for c in self.checks:
            if rank[c["severity"]] >= rank.get(out.get(c["code"], "info"), 0):
                out[c["code"]] = c["severity"]
        return out

    def to_json(self, overlay_path: str | None = None) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("truth", "errors", "overlay_jpeg")
        }
        d = json_safe(d)
        d["truth"] = None if self.truth is None else self.truth.to_json()
        d["errors"] = None if self.errors is None else self.errors.to_json()
        d["overlay"] = overlay_path
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseRecord:
        kw = {f.name: d.get(f.name) for f in dataclasses.fields(cls) if f.name != "overlay_jpeg"}
        kw["truth"] = None if d.get("truth") is None else CaseTruth.from_json(d["truth"])
        kw["errors"] = None if d.get("errors") is None else CaseErrors.from_json(d["errors"])
        kw["seconds"] = float(d["seconds"])
        return cls(**kw)
