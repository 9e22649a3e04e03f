"""Offline fits for planning (evaluation code: reads simulator truth), cached simulated samples.

Two models are fitted here on simulated patients and written to ``models/``:

* the **isocenter shape model** (``models/isocenter_model.json``): per profile slice, the height of the
  true body cross-section centroid above the table top from what the ceiling camera sees (anterior
  surface height ``h``, width ``w``); see :mod:`positioning.planning.isocenter`;
* the **landmark proportions** (``models/isocenter_landmarks.json``): levels of the anatomical
  landmarks (lung apex, xiphoid, iliac crest, ...) along the body axis from the COCO keypoints; see
  :mod:`positioning.planning.anatomy`.

Training data: :data:`TRAIN_SCENARIOS` x :data:`TRAIN_SEEDS` (seeds disjoint from the benchmark's,
:data:`positioning.evaluation.bench_plan.EVAL_SEEDS`). Features are computed with the same functions the
pipeline uses (``segment_frame`` + ``surface_profile`` for the profile; the perception pipeline's
:class:`~positioning.perception.pipeline.Perceiver` for the keypoints when it is available, else the
truth keypoints), targets from the simulator's truth. Simulated frames are cached as ``.npz`` files
under :func:`cache_dir` (``$POSITIONING_CACHE/planning`` or ``~/.cache/positioning/planning``), so a
refit costs seconds.

Run ``python -m positioning.evaluation.isocenter_fit`` to reproduce the model files
(``--help`` for options).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning import resources
from positioning.frames import Calibration, RGBDFrame

__all__ = [
    "TRAIN_SCENARIOS",
    "TRAIN_SEEDS",
    "SimSample",
    "cache_dir",
    "load_sample",
    "load_frames",
    "load_samples",
    "Observation",
    "observe",
    "close_perceiver",
    "perceiver_available",
    "huber_fit",
    "isocenter_rows",
    "fit_isocenter_model",
    "fit_landmark_model",
    "main",
]

#: Scenarios the models are fitted on (every posture, arm state and body type the simulator makes).
TRAIN_SCENARIOS: tuple[str, ...] = (
    "hfs-arms-up", "hfs-arms-down", "hfs-hands-chest", "ffs-arms-up", "hfp-arms-up", "ffp-arms-down",
    "decubitus", "obese", "child", "off-centre", "tilted-d455", "mixed",
)  # fmt: skip
#: Training seeds (the benchmark uses 2000 and up; perception's calibrations used 0-400).
TRAIN_SEEDS: tuple[int, ...] = tuple(range(1000, 1020))
CACHE_VERSION = 3


def cache_dir() -> Path:
    """Where simulated samples are cached (``$POSITIONING_CACHE/planning``, else
    ``~/.cache/positioning/planning``)."""
    return resources.cache_dir("planning")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimSample:
    """One simulated frame with the truth that planning fits and benchmarks need.

    Convention: scanner frame (IEC 61217), mm.

    Attributes:
        scenario, seed, index: which session and frame.
        frame: the noisy RGB-D frame (what perception sees).
        calibration: the rig's true calibration.
        position, arms: the simulated patient position and arm pose (None for an empty table).
        camera: camera model name.
        keypoints_mm: truth COCO-17 name -> ``(3,)``.
        landmarks_mm: truth anatomical landmark name -> ``(3,)``.
        cs_y_mm, cs_area_mm2, cs_x_mm, cs_z_mm: truth cross-sections (every 5 mm) and their centroids.
        cs_x_min_mm, cs_x_max_mm, cs_z_min_mm, cs_z_max_mm: their extents.
        mattress_top_z_mm: the free mattress top (truth table height).
        bmi: the patient's body-mass index (NaN for an empty table).
        label: ``(H, W)`` uint8 :class:`~positioning.sim.room.Label` of each pixel (the ideal render).
        footprint: the body's plan-view footprint (see :func:`_footprint`), empty without a patient.
        footprint_origin_mm: ``(x, y)`` of its cell (0, 0).
    """

    scenario: str
    seed: int
    index: int
    frame: RGBDFrame
    calibration: Calibration
    position: str | None
    arms: str | None
    camera: str
    keypoints_mm: dict[str, np.ndarray]
    landmarks_mm: dict[str, np.ndarray]
    cs_y_mm: np.ndarray
    cs_area_mm2: np.ndarray
    cs_x_mm: np.ndarray
    cs_z_mm: np.ndarray
    cs_x_min_mm: np.ndarray
    cs_x_max_mm: np.ndarray
    cs_z_min_mm: np.ndarray
    cs_z_max_mm: np.ndarray
    mattress_top_z_mm: float
    bmi: float
    label: np.ndarray | None = None
    footprint: np.ndarray | None = None
    footprint_origin_mm: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.scenario}_{self.seed}_{self.index}"

    def cross_sections(self) -> Any:
        """The truth as :class:`positioning.sim.cross_section.CrossSections`."""
        from positioning.sim.cross_section import CrossSections

        return CrossSections(
            self.cs_y_mm, self.cs_area_mm2, self.cs_x_mm, self.cs_z_mm, self.cs_x_min_mm,
            self.cs_x_max_mm, self.cs_z_min_mm, self.cs_z_max_mm,
        )  # fmt: skip


def _simulate(scenario: str, seed: int, index: int, session: Any = None) -> dict[str, Any]:
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    if session is None:
        session = SimulatedSession(sample_session(scenario, seed))
    spec = session.spec
    frame, truth = session.frame(index)
    cs = truth.cross_sections
    nan = np.zeros(0)
    kp_names = sorted(truth.keypoints_mm)
    lm_names = sorted(truth.landmarks_mm)
    placed = session.placed
    footprint, footprint_origin = np.zeros((0, 0), np.uint8), np.zeros(2)
    if placed is not None:
        footprint, footprint_origin = _footprint(session.patient_vertices(index), placed.faces)
    return {
        "version": CACHE_VERSION,
        "scenario": scenario,
        "seed": seed,
        "index": index,
        "depth_mm": frame.depth_mm,
        "color_rgb": frame.color_rgb,
        "intrinsics": json.dumps(frame.intrinsics.to_dict()),
        "frame_number": frame.frame_number,
        "timestamp_ms": frame.timestamp_ms,
        "device_name": frame.device_name,
        "serial": frame.serial,
        "scanner_from_camera": spec.rig.scanner_from_camera,
        "position": "" if spec.placement is None else str(spec.placement.position),
        "arms": "" if spec.placement is None else str(spec.placement.arms),
        "camera": spec.rig.model,
        "kp_names": np.array(kp_names),
        "kp_mm": np.array([truth.keypoints_mm[k] for k in kp_names]).reshape(-1, 3),
        "lm_names": np.array(lm_names),
        "lm_mm": np.array([truth.landmarks_mm[k] for k in lm_names]).reshape(-1, 3),
        "cs_y_mm": nan if cs is None else cs.y_mm,
        "cs_area_mm2": nan if cs is None else cs.area_mm2,
        "cs_x_mm": nan if cs is None else cs.centroid_x_mm,
        "cs_z_mm": nan if cs is None else cs.centroid_z_mm,
        "cs_x_min_mm": nan if cs is None else cs.x_min_mm,
        "cs_x_max_mm": nan if cs is None else cs.x_max_mm,
        "cs_z_min_mm": nan if cs is None else cs.z_min_mm,
        "cs_z_max_mm": nan if cs is None else cs.z_max_mm,
        "mattress_top_z_mm": spec.room.mattress_top_z_mm,
        "bmi": float("nan") if placed is None else placed.body.bmi,
        "label": truth.label,
        "footprint": footprint,
        "footprint_origin_mm": footprint_origin,
    }


#: Cell of the stored plan-view body footprint (mm).
FOOTPRINT_CELL_MM = 10.0


def _footprint(vertices_mm: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The body's plan-view footprint: ``(rows along y, cols along x)`` uint8 cells of
    :data:`FOOTPRINT_CELL_MM` that a vertical line through the body crosses, and the ``(x, y)`` of cell
    (0, 0)'s centre."""
    from positioning.sim.cover import surface_heights

    c = FOOTPRINT_CELL_MM
    lo = np.floor(vertices_mm[:, :2].min(axis=0) / c) * c - c
    hi = vertices_mm[:, :2].max(axis=0) + c
    xs, ys = np.arange(lo[0], hi[0], c), np.arange(lo[1], hi[1], c)
    z = surface_heights(vertices_mm, faces, xs, ys)
    return np.isfinite(z).astype(np.uint8), lo


def _from_npz(d: Any) -> SimSample:
    from positioning.frames import Intrinsics

    intr = Intrinsics.from_dict(json.loads(str(d["intrinsics"])))
    frame = RGBDFrame(
        depth_mm=d["depth_mm"],
        intrinsics=intr,
        color_rgb=d["color_rgb"],
        color_intrinsics=intr,
        color_aligned=True,
        frame_number=int(d["frame_number"]),
        timestamp_ms=float(d["timestamp_ms"]),
        received_ns=0,
        device_name=str(d["device_name"]),
        serial=str(d["serial"]),
    )
    return SimSample(
        scenario=str(d["scenario"]),
        seed=int(d["seed"]),
        index=int(d["index"]),
        frame=frame,
        calibration=Calibration(scanner_from_camera=d["scanner_from_camera"], method="simulated"),
        position=str(d["position"]) or None,
        arms=str(d["arms"]) or None,
        camera=str(d["camera"]),
        keypoints_mm={str(k): d["kp_mm"][i] for i, k in enumerate(d["kp_names"])},
        landmarks_mm={str(k): d["lm_mm"][i] for i, k in enumerate(d["lm_names"])},
        cs_y_mm=d["cs_y_mm"],
        cs_area_mm2=d["cs_area_mm2"],
        cs_x_mm=d["cs_x_mm"],
        cs_z_mm=d["cs_z_mm"],
        cs_x_min_mm=d["cs_x_min_mm"],
        cs_x_max_mm=d["cs_x_max_mm"],
        cs_z_min_mm=d["cs_z_min_mm"],
        cs_z_max_mm=d["cs_z_max_mm"],
        mattress_top_z_mm=float(d["mattress_top_z_mm"]),
        bmi=float(d["bmi"]),
        label=d["label"],
        footprint=d["footprint"],
        footprint_origin_mm=d["footprint_origin_mm"],
    )


@functools.cache
def scenario_digest(scenario: str) -> str:
    """A short digest of a scenario file's text: cached frames are keyed by content, so editing a
    scenario never serves frames simulated from its old text."""
    from positioning.sim.scenario import load_scenario

    sc = load_scenario(scenario)
    text = sc.path.read_bytes() if sc.path is not None else repr(sc.data).encode()
    return hashlib.sha256(text).hexdigest()[:10]


def _sample_path(directory: Path, scenario: str, seed: int, index: int) -> Path:
    return directory / f"{scenario}-{scenario_digest(scenario)}_{seed}_{index}.npz"


def _read(path: Path) -> SimSample | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as d:
        if int(d["version"]) != CACHE_VERSION:
            return None
        return _from_npz(d)


def load_frames(
    scenario: str, seed: int, indices: Sequence[int], *, directory: Path | None = None
) -> list[SimSample]:
    """Several frames of one simulated session with their truth, from the cache (the missing ones are
    simulated with one :class:`~positioning.sim.session.SimulatedSession` and cached).

    Args:
        scenario: scenario name.
        seed: scenario seed.
        indices: frame indices.
        directory: cache folder (default :func:`cache_dir`).
    """
    directory = directory or cache_dir()
    out: dict[int, SimSample] = {}
    session = None
    for index in indices:
        path = _sample_path(directory, scenario, seed, index)
        got = _read(path)
        if got is None:
            if session is None:
                from positioning.sim.scenario import sample_session
                from positioning.sim.session import SimulatedSession

                session = SimulatedSession(sample_session(scenario, seed))
            directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez_compressed(tmp, **_simulate(scenario, seed, index, session))
            tmp.replace(path)
            got = _read(path)
            assert got is not None
        out[index] = got
    return [out[i] for i in indices]


def load_sample(scenario: str, seed: int, index: int = 0, *, directory: Path | None = None) -> SimSample:
    """A simulated frame with its truth, from the cache (simulated and cached on first use).

    Args:
        scenario: scenario name.
        seed: scenario seed.
        index: frame index.
        directory: cache folder (default :func:`cache_dir`).
    """
    return load_frames(scenario, seed, [index], directory=directory)[0]


def load_samples(
    pairs: Iterable[tuple[str, int]], *, index: int = 0, progress: bool = True, desc: str = "samples"
) -> list[SimSample]:
    """:func:`load_sample` over ``(scenario, seed)`` pairs, with a tqdm bar on stderr."""
    from tqdm import tqdm

    pairs = list(pairs)
    return [
        load_sample(sc, seed, index)
        for sc, seed in tqdm(pairs, desc=desc, file=sys.stderr, disable=not progress)
    ]


# ------------------------------------------------------------------------------------------------ keypoints


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What planning sees of one sample: perception's table, profile and points, and COCO keypoints.

    Attributes:
        sample: the sample (truth included, for targets only).
        table: the table estimate (None when perception found none).
        profile: the surface profile (None without a patient).
        points_mm: ``(N, 3)`` patient points.
        keypoints_mm, keypoint_confidence: COCO keypoints and confidences from ``keypoint_source``.
        position: the patient position used to pick the posture group (the truth's when fitting).
        keypoint_source: ``"perceiver"`` or ``"truth"``.
    """

    sample: SimSample
    table: Any
    profile: Any
    points_mm: np.ndarray
    keypoints_mm: dict[str, np.ndarray]
    keypoint_confidence: dict[str, float]
    position: str | None
    keypoint_source: str
    support_dip_mm: float = float("nan")
    covered_share: np.ndarray | None = None


def perceiver_available() -> bool:
    """Whether :class:`positioning.perception.pipeline.Perceiver` can be imported."""
    try:
        from positioning.perception.pipeline import Perceiver  # noqa: F401
    except ImportError:
        return False
    return True


_PERCEIVER: list[Any] = []


def observe(sample: SimSample, *, keypoint_source: str = "auto") -> Observation:
    """Run perception over one cached frame, as the pipeline does (one frame, no tracking).

    The table, patient points and profile are the :class:`~positioning.perception.pipeline.Perceiver`'s
    (the scene network's table and segmentation when its model file exists); the keypoints are its
    landmarks when ``keypoint_source`` is ``"perceiver"`` (or ``"auto"``), else the truth keypoints.

    Convention: scanner frame (IEC 61217), mm.
    """
    from positioning.perception.pipeline import Perceiver, PerceiverSettings

    source = keypoint_source
    if source == "auto":
        source = "perceiver" if perceiver_available() else "truth"
    if not _PERCEIVER:
        landmarks = "fused" if perceiver_available() else "depth"
        _PERCEIVER.append(Perceiver(settings=PerceiverSettings(track=False, landmarks=landmarks)))
    state = _PERCEIVER[0].perceive(sample.frame, sample.calibration)
    if source == "perceiver":
        kps = {k: np.asarray(v, np.float64) for k, v in state.landmarks_mm.items()}
        conf = dict(state.landmark_confidence)
    else:
        kps = dict(sample.keypoints_mm)
        conf = dict.fromkeys(kps, 1.0)
    return Observation(
        sample=sample,
        table=state.table,
        profile=state.profile,
        points_mm=state.patient_points_mm,
        keypoints_mm=kps,
        keypoint_confidence=conf,
        position=sample.position,
        keypoint_source=source,
        support_dip_mm=state.support_dip_mm,
        covered_share=state.covered_share,
    )


def close_perceiver() -> None:
    """Release the shared perceiver (MediaPipe) used by :func:`observe`."""
    while _PERCEIVER:
        _PERCEIVER.pop().close()


# ------------------------------------------------------------------------------------------------- fitting


def huber_fit(
    x: np.ndarray, y: np.ndarray, *, delta: float = 10.0, ridge: float = 1e-2, iters: int = 30
) -> np.ndarray:
    """Huber-loss linear regression by iteratively reweighted least squares (small ridge for rank safety).

    Args:
        x: ``(N, P)`` design matrix.
        y: ``(N,)`` targets.
        delta: residuals beyond this count linearly (target units).
        ridge: Tikhonov term added to the normal equations.
        iters: IRLS iterations.

    Returns:
        ``(P,)`` coefficients.
    """
    w = np.ones(len(y))
    c = np.zeros(x.shape[1])
    for _ in range(iters):
        xw = x * w[:, None]
        c = np.linalg.solve(x.T @ xw + ridge * np.eye(x.shape[1]), xw.T @ y)
        r = np.abs(y - x @ c)
        w = np.where(r <= delta, 1.0, delta / np.maximum(r, 1e-9))
    return c


def _stats(e: np.ndarray) -> dict[str, float]:
    a = np.abs(np.asarray(e, np.float64))
    if len(a) == 0:
        return {"n": 0}
    return {
        "n": len(a),
        "bias_mm": round(float(np.median(e)), 2),
        "median_abs_mm": round(float(np.median(a)), 2),
        "p95_abs_mm": round(float(np.percentile(a, 95)), 2),
    }


#: Body-coordinate ranges (u: 0 hips, 1 shoulders) used to report range-level residuals.
REPORT_RANGES: dict[str, tuple[float, float]] = {
    "head": (1.3, 1.9), "chest": (0.5, 1.1), "abdomen": (0.15, 0.7), "pelvis": (-0.3, 0.3),
    "legs": (-2.2, -0.6),
}  # fmt: skip
MAX_TABLE_ERROR_MM = 10.0
#: A posture group needs this many samples for its own landmark rules.
MIN_GROUP_SAMPLES = 15


@dataclasses.dataclass
class _IsoRows:
    group: list[str] = dataclasses.field(default_factory=list)
    session: list[int] = dataclasses.field(default_factory=list)
    x_region: list[np.ndarray] = dataclasses.field(default_factory=list)
    x_global: list[np.ndarray] = dataclasses.field(default_factory=list)
    u: list[np.ndarray] = dataclasses.field(default_factory=list)
    target: list[np.ndarray] = dataclasses.field(default_factory=list)


def isocenter_rows(
    observations: Sequence[Observation],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Training rows of the shape model, per posture group.

    Targets: the truth cross-section centroid height (mean of the 5 mm truth sections inside the profile
    slice) above perception's table plane at the slice. Samples whose table top is more than
    :data:`MAX_TABLE_ERROR_MM` off the truth mattress top are left out (a wrong table is a perception
    failure the checks report, not a body shape).

    Returns:
        ``(rows, counts)``: group -> ``{"Xr", "Xg", "u", "y", "session"}`` arrays; counts of samples used
        and skipped for each reason.
    """
    from positioning.planning.anatomy import keypoint_anchors
    from positioning.planning.isocenter import body_coordinate, design_matrix, posture_group, slice_features

    counts = {"used": 0, "no_patient": 0, "table_error": 0, "no_keypoints": 0}
    acc: dict[str, _IsoRows] = {}
    for i, ob in enumerate(observations):
        s = ob.sample
        if ob.profile is None or ob.table is None or s.position is None:
            counts["no_patient"] += 1
            continue
        if abs(ob.table.top_z_mm - s.mattress_top_z_mm) > MAX_TABLE_ERROR_MM:
            counts["table_error"] += 1
            continue
        anchors, _ = keypoint_anchors(ob.keypoints_mm, ob.keypoint_confidence)
        if "shoulders" not in anchors or "hips" not in anchors:
            counts["no_keypoints"] += 1
            continue
        try:
            u = body_coordinate(np.asarray(ob.profile.y_mm), anchors["shoulders"][1], anchors["hips"][1])
        except ValueError:
            counts["no_keypoints"] += 1
            continue
        f = slice_features(
            ob.profile,
            ob.points_mm,
            ob.table,
            support_dip_mm=ob.support_dip_mm,
            covered_share=ob.covered_share,
        )
        half = f.slice_mm / 2
        cy, area = s.cs_y_mm, s.cs_area_mm2
        target = np.full(len(f), np.nan)
        for k in np.nonzero(f.valid)[0]:
            sel = (cy >= f.y_mm[k] - half) & (cy < f.y_mm[k] + half) & (area > 0)
            if sel.any():
                target[k] = float(np.mean(s.cs_z_mm[sel])) - f.table_z_mm[k]
        xr, xg = design_matrix(f, u), design_matrix(f, None)
        ok = np.isfinite(target) & np.all(np.isfinite(xr), axis=1) & np.all(np.isfinite(xg), axis=1)
        g = posture_group(s.position)
        r = acc.setdefault(g, _IsoRows())
        r.session.append(np.full(int(ok.sum()), i))
        r.x_region.append(xr[ok])
        r.x_global.append(xg[ok])
        r.u.append(u[ok])
        r.target.append(target[ok])
        counts["used"] += 1
    rows = {
        g: {
            "Xr": np.concatenate(r.x_region),
            "Xg": np.concatenate(r.x_global),
            "u": np.concatenate(r.u),
            "y": np.concatenate(r.target),
            "session": np.concatenate(r.session),
        }
        for g, r in acc.items()
    }
    return rows, counts


def _range_residuals(res: np.ndarray, u: np.ndarray, session: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for name, (lo, hi) in REPORT_RANGES.items():
        per = []
        for sid in np.unique(session):
            m = (session == sid) & (u >= lo) & (u < hi)
            if m.sum() >= 5:
                per.append(float(np.mean(res[m])))
        out[name] = _stats(np.asarray(per))
    return out


def fit_isocenter_model(observations: Sequence[Observation], *, folds: int = 5) -> tuple[Any, dict[str, Any]]:
    """Fit the shape model of :mod:`positioning.planning.isocenter` per posture group.

    Returns:
        ``(model, report)``: the :class:`~positioning.planning.isocenter.IsocenterModel` and residuals
        (in-sample and ``folds``-fold cross-validated by session; per slice and averaged over the
        :data:`REPORT_RANGES` of each session).
    """
    from positioning.planning.isocenter import IsocenterModel

    rows, counts = isocenter_rows(observations)
    region, fallback, report = {}, {}, {"samples": counts, "groups": {}}
    for g in ("supine", "prone", "decubitus"):
        if g not in rows:
            raise ValueError(f"no training rows for posture group {g!r}")
        r = rows[g]
        region[g] = huber_fit(r["Xr"], r["y"])
        fallback[g] = huber_fit(r["Xg"], r["y"])
        sessions = np.unique(r["session"])
        cv = np.full(len(r["y"]), np.nan)
        cv_g = np.full(len(r["y"]), np.nan)
        for k in range(folds):
            test = np.isin(r["session"], sessions[k::folds])
            cv[test] = r["y"][test] - r["Xr"][test] @ huber_fit(r["Xr"][~test], r["y"][~test])
            cv_g[test] = r["y"][test] - r["Xg"][test] @ huber_fit(r["Xg"][~test], r["y"][~test])
        fit_res = r["y"] - r["Xr"] @ region[g]
        report["groups"][g] = {
            "sessions": len(sessions),
            "slices": len(r["y"]),
            "slice_residual_fit": _stats(fit_res),
            "slice_residual_cv": _stats(cv),
            "range_residual_cv": _range_residuals(cv, r["u"], r["session"]),
            "fallback_slice_residual_cv": _stats(cv_g),
            "fallback_range_residual_cv": _range_residuals(cv_g, r["u"], r["session"]),
        }
    return IsocenterModel(region=region, fallback=fallback), report


def fit_landmark_model(observations: Sequence[Observation], *, folds: int = 5) -> tuple[Any, dict[str, Any]]:
    """Fit the landmark rules of :mod:`positioning.planning.anatomy` (anchors fixed as in its priors).

    For each landmark, ``s(truth) - s(anchor) = fraction * T + offset`` by Huber regression over the
    samples whose torso length is plausible; ``sigma_mm`` is 1.4826 x the median absolute residual.
    Targets: the simulator's anatomical landmarks, and the midpoints of the truth knee / ankle keypoints
    for ``knee`` / ``ankle``.

    Returns:
        ``(model, report)`` with in-sample and cross-validated residuals per landmark.
    """
    from positioning.planning.anatomy import (
        PLANNING_LANDMARKS,
        POSTURE_GROUPS,
        PRIOR_RULES,
        TORSO_RANGE_MM,
        LandmarkModel,
        LandmarkRule,
        keypoint_anchors,
        posture_group,
        superior_sign,
    )

    data: dict[str, list[tuple[float, float, int, str]]] = {n: [] for n in PLANNING_LANDMARKS}
    used = 0
    for i, ob in enumerate(observations):
        s = ob.sample
        if s.position is None:
            continue
        anchors, _ = keypoint_anchors(ob.keypoints_mm, ob.keypoint_confidence)
        sign = superior_sign(s.position)
        if "shoulders" not in anchors or "hips" not in anchors:
            continue
        torso = sign * (anchors["shoulders"][1] - anchors["hips"][1])
        if not TORSO_RANGE_MM[0] <= torso <= TORSO_RANGE_MM[1]:
            continue
        used += 1
        truth = dict(s.landmarks_mm)
        for joint in ("knee", "ankle"):
            truth[joint] = (s.keypoints_mm[f"left_{joint}"] + s.keypoints_mm[f"right_{joint}"]) / 2
        for name in PLANNING_LANDMARKS:
            anchor = PRIOR_RULES[name].anchor
            if anchor in anchors and name in truth:
                data[name].append(
                    (torso, sign * (truth[name][1] - anchors[anchor][1]), i, posture_group(s.position))
                )

    def fit_one(rows: list[tuple[float, float, int, str]], name: str) -> tuple[LandmarkRule, dict[str, Any]]:
        d = np.asarray([r[:3] for r in rows], np.float64).reshape(-1, 3)
        x = np.column_stack([d[:, 0], np.ones(len(d))])
        c = huber_fit(x, d[:, 1], ridge=1e-6)
        res = d[:, 1] - x @ c
        sessions = np.unique(d[:, 2])
        cv = np.full(len(d), np.nan)
        for k in range(folds):
            test = np.isin(d[:, 2], sessions[k::folds])
            cv[test] = d[test, 1] - x[test] @ huber_fit(x[~test], d[~test, 1], ridge=1e-6)
        sigma = 1.4826 * float(np.median(np.abs(res - np.median(res))))
        rule = LandmarkRule(
            anchor=PRIOR_RULES[name].anchor,
            fraction=round(float(c[0]), 5),
            offset_mm=round(float(c[1]), 2),
            sigma_mm=round(sigma, 2),
        )
        return rule, {"fit": _stats(res), "cv": _stats(cv)}

    rules: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {"samples_used": used, "landmarks": {}, "groups": {}}
    for name in PLANNING_LANDMARKS:
        rules[name], report["landmarks"][name] = fit_one(data[name], name)
        for g in POSTURE_GROUPS:
            rows = [r for r in data[name] if r[3] == g]
            if len(rows) >= MIN_GROUP_SAMPLES:
                groups.setdefault(g, {})[name], rep = fit_one(rows, name)
                report["groups"].setdefault(g, {})[name] = rep
    return LandmarkModel(rules=rules, group_rules=groups, source="fit"), report


# ---------------------------------------------------------------------------------------------------- main


def _write_card(path: Path, iso_doc: dict[str, Any], lm_doc: dict[str, Any]) -> None:
    t = iso_doc["training"]
    lines = [
        "# Isocenter shape model and landmark proportions",
        "",
        "Files: `isocenter_model.json` (cross-section shape model, `positioning.planning.isocenter`) and",
        "`isocenter_landmarks.json` (landmark levels from COCO keypoints, `positioning.planning.anatomy`).",
        "Reproduce both with `python -m positioning.evaluation.isocenter_fit` (simulated frames are cached",
        "under `~/.cache/positioning/planning`; first run about 5 min on one core).",
        "",
        "## Training data",
        f"- Scenarios: {', '.join(t['scenarios'])}.",
        f"- Seeds: {t['seeds'][0]}-{t['seeds'][-1]} per scenario (frame {t['frame_index']}); the planning "
        "benchmark uses seeds 2000 and up, so training and evaluation never share a patient.",
        f"- Keypoints: {t['keypoint_source']} (COCO-17). Table, patient points and surface profile: "
        "`segment_frame` + `surface_profile`, as in the pipeline.",
        f"- Samples: {json.dumps(t['isocenter']['samples'])} (samples whose perceived table top is more than "
        f"{MAX_TABLE_ERROR_MM:.0f} mm off the truth are left out of the shape fit).",
        "",
        "## Shape model",
        "Per profile slice (10 mm), the true cross-section centroid height above the perceived table top,",
        "regressed (Huber, 10 mm) on hat functions of the body coordinate u (0 hips, 1 shoulders; knots",
        f"{list(iso_doc['knots'])}) times the features {list(iso_doc['region_features'])}; one set per",
        "posture group; a fallback without u uses the features",
        f"{list(iso_doc['global_features'])}. Targets are the simulator's exact mesh cross-sections (arms",
        "and legs included), so the model learns mattress sink, tissue flattening, the lumbar arch and the",
        "bulge of the sides as the simulator's contact model makes them.",
        "",
        "Residuals (truth minus model, mm). `slice`: per 10 mm slice; ranges: per session, the mean over the",
        "slices of a body region (what a plan's isocenter averages). CV = 5-fold by session.",
        "",
        "| group | sessions | slice fit med/p95 | slice CV med/p95 | "
        + " | ".join(f"{r} CV med/p95" for r in REPORT_RANGES)
        + " |",
        "|---|---|---|---|" + "---|" * len(REPORT_RANGES),
    ]
    for g, rep in t["isocenter"]["groups"].items():
        cells = [
            g,
            str(rep["sessions"]),
            f"{rep['slice_residual_fit']['median_abs_mm']}/{rep['slice_residual_fit']['p95_abs_mm']}",
            f"{rep['slice_residual_cv']['median_abs_mm']}/{rep['slice_residual_cv']['p95_abs_mm']}",
        ]
        for r in REPORT_RANGES:
            st = rep["range_residual_cv"][r]
            cells.append(f"{st.get('median_abs_mm', '-')}/{st.get('p95_abs_mm', '-')}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Fallback (no keypoints) cross-validated range residuals, median/p95 mm: "
        + "; ".join(
            f"{g}: "
            + ", ".join(
                f"{r} {rep['fallback_range_residual_cv'][r].get('median_abs_mm', '-')}/"
                f"{rep['fallback_range_residual_cv'][r].get('p95_abs_mm', '-')}"
                for r in REPORT_RANGES
            )
            for g, rep in t["isocenter"]["groups"].items()
        ),
        "",
        "## Landmark proportions",
        "`s(landmark) = s(anchor) + fraction * T + offset_mm` along the superior axis, T = mid-shoulder to",
        "mid-hip distance. Residuals: truth minus rule (mm), in-sample and 5-fold CV by session.",
        "",
        "| landmark | anchor | fraction | offset mm | sigma mm | fit med/p95 | CV med/p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rule in lm_doc["rules"].items():
        rep = lm_doc["training"]["report"]["landmarks"][name]
        lines.append(
            f"| {name} | {rule['anchor']} | {rule['fraction']:+.4f} | {rule['offset_mm']:+.1f} | "
            f"{rule['sigma_mm']:.1f} | {rep['fit']['median_abs_mm']}/{rep['fit']['p95_abs_mm']} | "
            f"{rep['cv']['median_abs_mm']}/{rep['cv']['p95_abs_mm']} |"
        )
    groups = lm_doc["training"]["report"].get("groups", {})
    if groups:
        lines += [
            "",
            "Per posture group (own rules, used when the position is known): CV median/p95 mm.",
            "",
            "| landmark | " + " | ".join(groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for name in lm_doc["rules"]:
            cells = []
            for g in groups:
                rep = groups[g].get(name)
                cells.append(
                    "-" if rep is None else f"{rep['cv']['median_abs_mm']}/{rep['cv']['p95_abs_mm']}"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Limits",
        "- Fitted on simulated `anny` bodies with the simulator's contact model; real mattresses, clothing,",
        "  blankets and body shapes will differ. Refit (or at least re-check the residuals) on measured",
        "  data (CT scans with a camera frame) before clinical use.",
        "- The landmark levels inherit the simulator's landmark definitions (`positioning.sim.anatomy`),",
        "  which are themselves proportional rules.",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Generate (or read cached) training samples, fit both models, write them and the model card."""
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.isocenter_fit", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, default=len(TRAIN_SEEDS), help="seeds per scenario")
    parser.add_argument(
        "--keypoints", choices=("auto", "perceiver", "truth"), default="auto", help="keypoint source"
    )
    parser.add_argument("--out-dir", type=Path, default=resources.models_dir())
    parser.add_argument("--generate-only", action="store_true", help="only fill the sample cache")
    parser.add_argument(
        "--world",
        type=int,
        default=0,
        metavar="N",
        help="fit on N sessions of the randomised world (training seeds from 10000) instead of the scenarios",
    )
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from positioning.evaluation.world_data import WORLD, train_seeds

    t0 = time.perf_counter()
    if args.world:
        seeds = train_seeds(args.world)
        scenarios: tuple[str, ...] = (WORLD,)
    else:
        seeds = list(TRAIN_SEEDS[: args.seeds])
        scenarios = TRAIN_SCENARIOS
    samples = load_samples([(sc, s) for s in seeds for sc in scenarios], desc="training samples")
    samples = [s for s in samples if s.position is not None]
    if args.generate_only:
        print(f"{len(samples)} samples cached in {time.perf_counter() - t0:.0f} s under {cache_dir()}")
        return 0
    obs = [
        observe(s, keypoint_source=args.keypoints) for s in tqdm(samples, desc="perception", file=sys.stderr)
    ]
    source = obs[0].keypoint_source if obs else args.keypoints
    close_perceiver()
    iso_model, iso_report = fit_isocenter_model(obs)
    lm_model, lm_report = fit_landmark_model(obs)
    training = {
        "scenarios": list(scenarios),
        "seeds": [seeds[0], seeds[-1]] if args.world else list(seeds),
        "frame_index": 0,
        "keypoint_source": source,
        "created_by": "python -m positioning.evaluation.isocenter_fit",
    }
    from positioning.planning.anatomy import LANDMARK_SCHEMA
    from positioning.planning.isocenter import ISOCENTER_SCHEMA

    iso_doc = {
        "schema": ISOCENTER_SCHEMA,
        **iso_model.to_json(),
        "training": training | {"isocenter": iso_report},
    }
    lm_doc = {
        "schema": LANDMARK_SCHEMA,
        "min_confidence": lm_model.min_confidence,
        "rules": lm_model.to_json(),
        "group_rules": lm_model.groups_to_json(),
        "training": training | {"report": lm_report},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "isocenter_model.json").write_text(json.dumps(iso_doc, indent=1))
    (args.out_dir / "isocenter_landmarks.json").write_text(json.dumps(lm_doc, indent=1))
    iso_doc["training"] = training | {"isocenter": iso_report}
    _write_card(args.out_dir / "isocenter_model.md", iso_doc, lm_doc)
    for g, rep in iso_report["groups"].items():
        print(
            f"{g:9s} slices CV {rep['slice_residual_cv']}; ranges CV "
            + ", ".join(
                f"{r} {v.get('median_abs_mm')}/{v.get('p95_abs_mm')}"
                for r, v in rep["range_residual_cv"].items()
            )
        )
    for name, rule in lm_model.rules.items():
        print(
            f"{name:18s} {rule.anchor:9s} f {rule.fraction:+.4f} c {rule.offset_mm:+7.1f} "
            f"sigma {rule.sigma_mm:5.1f} "
            f"CV {lm_report['landmarks'][name]['cv']}"
        )
    print(
        f"wrote {args.out_dir}/isocenter_model.json, isocenter_landmarks.json, isocenter_model.md "
        f"({time.perf_counter() - t0:.0f} s, keypoints: {source})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
