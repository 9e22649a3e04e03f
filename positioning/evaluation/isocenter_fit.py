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
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning.frames import Calibration, RGBDFrame

__all__ = [
    "TRAIN_SCENARIOS",
    "TRAIN_SEEDS",
    "SimSample",
    "cache_dir",
    "load_sample",
    "load_samples",
    "main",
]

#: Scenarios the models are fitted on (every posture, arm state and body type the simulator makes).
TRAIN_SCENARIOS: tuple[str, ...] = (
    "hfs-arms-up", "hfs-arms-down", "hfs-hands-chest", "ffs-arms-up", "hfp-arms-up", "ffp-arms-down",
    "decubitus", "obese", "child", "off-centre", "tilted-d455", "mixed",
)  # fmt: skip
#: Training seeds (the benchmark uses 2000 and up; perception's calibrations used 0-400).
TRAIN_SEEDS: tuple[int, ...] = tuple(range(1000, 1020))
CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where simulated samples are cached (``$POSITIONING_CACHE/planning``, else
    ``~/.cache/positioning/planning``)."""
    root = os.environ.get("POSITIONING_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "positioning"
    return base / "planning"


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


def _simulate(scenario: str, seed: int, index: int) -> dict[str, Any]:
    from positioning.sim.scenario import sample_session
    from positioning.sim.session import SimulatedSession

    spec = sample_session(scenario, seed)
    session = SimulatedSession(spec)
    frame, truth = session.frame(index)
    cs = truth.cross_sections
    nan = np.zeros(0)
    kp_names = sorted(truth.keypoints_mm)
    lm_names = sorted(truth.landmarks_mm)
    placed = session.placed
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
    }


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
    )


def load_sample(scenario: str, seed: int, index: int = 0, *, directory: Path | None = None) -> SimSample:
    """A simulated frame with its truth, from the cache (simulated and cached on first use).

    Args:
        scenario: scenario name.
        seed: scenario seed.
        index: frame index.
        directory: cache folder (default :func:`cache_dir`).
    """
    directory = directory or cache_dir()
    path = directory / f"{scenario}_{seed}_{index}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as d:
            if int(d["version"]) == CACHE_VERSION:
                return _from_npz(d)
    data = _simulate(scenario, seed, index)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(path)
    with np.load(path, allow_pickle=False) as d:
        return _from_npz(d)


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


def main(argv: Sequence[str] | None = None) -> int:  # replaced below when the fits exist
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    load_samples([(sc, s) for s in TRAIN_SEEDS for sc in TRAIN_SCENARIOS], desc="training samples")
    print(f"cached in {time.perf_counter() - t0:.0f} s under {cache_dir()}")
    return 0


_unused: tuple[Callable[..., Any], ...] = ()

if __name__ == "__main__":
    raise SystemExit(main())
