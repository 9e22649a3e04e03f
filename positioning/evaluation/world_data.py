"""Training data from the randomised world: simulate and cache many sessions' frames in parallel.

Every model fitted on the world (the scene network, the isocenter shape model, the level network, the
landmark definition correction) reads the same cached frames
(:func:`positioning.evaluation.isocenter_fit.load_frames`: depth, colour, the label image, the body's
plan-view footprint and the truth), so they are simulated once.

Seeds: :data:`TRAIN_SEEDS` (10000-59999 of ``sim/world.yaml``) are for fitting; the robustness suite
(``sim/suites/robustness.yaml``) measures on seeds from 900000, which nothing here ever touches.

Run ``python -m positioning.evaluation.world_data --count 8000`` (about 1.2 s per session per core).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["WORLD", "TRAIN_SEEDS", "FIRST_TRAIN_SEED", "train_seeds", "generate", "main"]

WORLD = "world"
FIRST_TRAIN_SEED = 10000
#: World seeds models may be fitted on (the robustness suite starts at 900000).
TRAIN_SEEDS = range(FIRST_TRAIN_SEED, 60000)


def train_seeds(count: int, first: int = FIRST_TRAIN_SEED) -> list[int]:
    """The first ``count`` training seeds from ``first`` (checked against :data:`TRAIN_SEEDS`)."""
    seeds = list(range(first, first + count))
    if seeds and (seeds[0] not in TRAIN_SEEDS or seeds[-1] not in TRAIN_SEEDS):
        raise ValueError(f"training seeds must lie in {TRAIN_SEEDS}, got {seeds[0]}..{seeds[-1]}")
    return seeds


def _one(args: tuple[str, int, int]) -> bool:
    from positioning.evaluation.isocenter_fit import load_frames
    from positioning.native_log import quiet_native_stderr

    scenario, seed, index = args
    with quiet_native_stderr():
        load_frames(scenario, seed, [index])
    return True


def generate(
    seeds: Sequence[int], *, scenario: str = WORLD, index: int = 0, jobs: int = 2, progress: bool = True
) -> None:
    """Simulate and cache frame ``index`` of every seed (cached ones are skipped quickly)."""
    import multiprocessing as mp

    from tqdm import tqdm

    work = [(scenario, s, index) for s in seeds]
    bar = tqdm(
        total=len(work), desc=f"{scenario} frames", unit="session", file=sys.stderr, disable=not progress
    )
    if jobs <= 1:
        for w in work:
            _one(w)
            bar.update()
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            for _ in pool.imap_unordered(_one, work, chunksize=4):
                bar.update()
    bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.world_data", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--first", type=int, default=FIRST_TRAIN_SEED, help="first seed (default 10000)")
    parser.add_argument("--count", type=int, default=8000, help="number of sessions (default 8000)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    generate(train_seeds(args.count, args.first), jobs=args.jobs)
    print(f"{args.count} sessions cached in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
