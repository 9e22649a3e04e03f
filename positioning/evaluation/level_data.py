"""Training data for the level network: simulated height maps with their truth landmark levels.

Evaluation code (reads simulator truth). Each sample is one simulated frame pushed through the same
perception functions the pipeline runs (``segment_frame`` -> patient points and table ->
:func:`~positioning.perception.heightmap.height_map`), paired with the truth levels of
:data:`~positioning.planning.anatomy.PLANNING_LANDMARKS` in the map's body-axis coordinate ``s``.

Sessions: :data:`LEVEL_SCENARIOS` x seeds from :data:`FIRST_SEED` (10000 and up: disjoint from the
benchmark's 2000-2099 and the other fits' 500-559 and 1000-1019). The frame index is ``seed % 10`` (a
different breathing phase and noise draw per session). Samples are cached as ``.npz`` under
:func:`data_dir` (``$POSITIONING_CACHE/levelnet`` or ``~/.cache/positioning/levelnet``); generating is
parallel over processes.

Run ``python -m positioning.evaluation.level_data --sessions 450`` (sessions per scenario; about 20 min
on 2 cores for the 5400 maps the shipped model was trained on).

Convention: scanner frame (IEC 61217), mm; ``s`` toward the head (see
:mod:`positioning.perception.heightmap`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from positioning import resources
from positioning.evaluation.isocenter_fit import TRAIN_SCENARIOS

__all__ = [
    "LEVEL_SCENARIOS",
    "FIRST_SEED",
    "DATA_VERSION",
    "LevelSample",
    "data_dir",
    "make_sample",
    "load_dataset",
    "generate",
    "main",
]

#: Scenarios sampled: the planning fits' (every posture, arm state, body type and camera the simulator
#: makes).
LEVEL_SCENARIOS: tuple[str, ...] = TRAIN_SCENARIOS
FIRST_SEED = 10000
DATA_VERSION = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelSample:
    """One training sample.

    Attributes:
        scenario, seed, index: the simulated frame.
        height_mm: ``(rows, cols)`` height map (see :class:`~positioning.perception.heightmap.HeightMap`).
        count: ``(rows, cols)`` points per cell.
        position: truth DICOM position; arms: truth arm state.
        levels_s_mm: ``(L,)`` truth levels in the map's ``s`` (order of ``PLANNING_LANDMARKS``).
    """

    scenario: str
    seed: int
    index: int
    height_mm: np.ndarray
    count: np.ndarray
    position: str
    arms: str
    levels_s_mm: np.ndarray


def data_dir() -> Path:
    """``$POSITIONING_CACHE/levelnet`` (default ``~/.cache/positioning/levelnet``)."""
    return resources.cache_dir("levelnet")


def _path(directory: Path, scenario: str, seed: int) -> Path:
    return directory / f"v{DATA_VERSION}" / f"{scenario}_{seed}.npz"


_PERCEIVER: list = []


def _segment(frame, calibration):  # -> (table, patient points) or None
    """The table and patient points as the pipeline finds them (the scene network's table and
    segmentation when its model file exists, geometry alone otherwise)."""
    from positioning.errors import PositioningError
    from positioning.perception.scene_net import default_scene_net_path

    if not default_scene_net_path().is_file():
        from positioning.perception.segmentation import segment_frame

        try:
            table, seg = segment_frame(frame, calibration)
        except PositioningError:
            return None
        return (table, seg.points_mm) if seg.has_patient else None
    from positioning.perception.pipeline import Perceiver, PerceiverSettings

    if not _PERCEIVER:
        _PERCEIVER.append(Perceiver(backends=[], settings=PerceiverSettings(track=False, landmarks="depth")))
    state = _PERCEIVER[0].perceive(frame, calibration)
    return (state.table, state.patient_points_mm) if state.has_patient else None


def make_sample(scenario: str, seed: int) -> dict[str, np.ndarray] | None:
    """Simulate (or read the cached) frame and build its sample arrays (None when perception finds no
    patient). The world's sessions use their cached frame 0; the older scenarios frame ``seed % 10``."""
    from positioning.evaluation.isocenter_fit import load_frames
    from positioning.evaluation.truth import truth_level_y_mm
    from positioning.native_log import quiet_native_stderr
    from positioning.perception.heightmap import height_map
    from positioning.planning.anatomy import PLANNING_LANDMARKS

    index = 0 if scenario == "world" else seed % 10
    with quiet_native_stderr():
        sample = load_frames(scenario, seed, [index])[0]
        if sample.position is None:
            return None
        found = _segment(sample.frame, sample.calibration)
    if found is None:
        return None
    table, points = found
    position = sample.position
    sign = 1 if position.startswith("HF") else -1
    hm = height_map(points, table, sign)
    levels = truth_level_y_mm(sample.landmarks_mm, sample.keypoints_mm)
    return {
        "version": np.int32(DATA_VERSION),
        "scenario": np.str_(scenario),
        "seed": np.int32(seed),
        "index": np.int32(index),
        "height_mm": hm.height_mm.astype(np.float16),
        "count": np.minimum(hm.count, 65535).astype(np.uint16),
        "position": np.str_(position),
        "arms": np.str_(str(sample.arms)),
        "levels_s_mm": np.array([float(hm.s_of_y(levels[n])) for n in PLANNING_LANDMARKS], np.float32),
    }


def _generate_one(args: tuple[str, int, str]) -> bool:
    scenario, seed, directory = args
    path = _path(Path(directory), scenario, seed)
    if path.is_file():
        return True
    doc = make_sample(scenario, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    if doc is None:
        doc = {"version": np.int32(DATA_VERSION), "empty": np.int32(1)}
    np.savez_compressed(tmp, **doc)
    tmp.replace(path)
    return "empty" not in doc


def generate(
    sessions_per_scenario: int,
    *,
    scenarios: Sequence[str] = LEVEL_SCENARIOS,
    first_seed: int = FIRST_SEED,
    workers: int | None = None,
    directory: Path | None = None,
    progress: bool = True,
) -> int:
    """Fill the cache; returns the number of usable samples."""
    from tqdm import tqdm

    directory = directory or data_dir()
    jobs = [(sc, first_seed + k, str(directory)) for k in range(sessions_per_scenario) for sc in scenarios]
    workers = workers or max(1, os.cpu_count() or 1)
    ok = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for good in tqdm(
            pool.map(_generate_one, jobs, chunksize=4),
            total=len(jobs),
            desc="level samples",
            file=sys.stderr,
            disable=not progress,
        ):
            ok += int(good)
    return ok


def load_dataset(
    sessions_per_scenario: int,
    *,
    scenarios: Sequence[str] = LEVEL_SCENARIOS,
    first_seed: int = FIRST_SEED,
    directory: Path | None = None,
) -> list[LevelSample]:
    """The cached samples (missing ones are skipped; run :func:`generate` first)."""
    directory = directory or data_dir()
    out = []
    for k in range(sessions_per_scenario):
        for sc in scenarios:
            path = _path(directory, sc, first_seed + k)
            if not path.is_file():
                continue
            with np.load(path, allow_pickle=False) as d:
                if "empty" in d or int(d["version"]) != DATA_VERSION:
                    continue
                out.append(
                    LevelSample(
                        scenario=str(d["scenario"]),
                        seed=int(d["seed"]),
                        index=int(d["index"]),
                        height_mm=d["height_mm"].astype(np.float32),
                        count=d["count"].astype(np.int32),
                        position=str(d["position"]),
                        arms=str(d["arms"]),
                        levels_s_mm=d["levels_s_mm"].astype(np.float64),
                    )
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.level_data", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sessions", type=int, default=450, help="sessions per scenario")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--world", action="store_true", help="sessions of the randomised world (sim/world.yaml)"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    scenarios = ("world",) if args.world else LEVEL_SCENARIOS
    n = generate(args.sessions, scenarios=scenarios, first_seed=args.first_seed, workers=args.workers)
    print(f"{n} samples under {data_dir()} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
