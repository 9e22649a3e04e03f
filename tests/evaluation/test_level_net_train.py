"""Level-network training on a synthetic task: the code learns (loss falls, levels approach the truth)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from positioning.evaluation.level_data import FIRST_SEED, LevelSample
from positioning.evaluation.level_net_train import evaluate, split, to_arrays, train
from positioning.planning.anatomy import PLANNING_LANDMARKS


def _samples(n: int, rng: np.random.Generator) -> list[LevelSample]:
    """Rectangles of random length; every landmark's level is the rectangle's top edge."""
    out = []
    for k in range(n):
        top = int(rng.integers(150, 220))
        h = np.zeros((256, 72), np.float32)
        h[40:top, 26:46] = 180.0
        s_top = (top - 128) * 10.0
        out.append(
            LevelSample(
                scenario="synthetic", seed=FIRST_SEED + k, index=0, height_mm=h,
                count=(h > 0).astype(np.int32),
                position="HFS" if k % 2 else "FFP", arms="raised",
                levels_s_mm=np.full(len(PLANNING_LANDMARKS), s_top),
            )
        )  # fmt: skip
    return out


def test_training_learns_a_synthetic_level() -> None:
    import torch

    from positioning.planning.level_net import bin_centres_mm

    rng = np.random.default_rng(0)
    samples = _samples(80, rng)
    tr, va = split(samples)
    assert len(va) == 8 and all((s.seed - FIRST_SEED) % 10 == 0 for s in va)
    tra, vaa = to_arrays(tr), to_arrays(va)
    assert tra["maps"].shape == (72, 2, 256, 72) and set(tra["posture"]) == {0, 1}
    centres = torch.from_numpy(bin_centres_mm(256, 10.0)).float()
    net, history = train(tra, vaa, epochs=12, batch=8, lr=3e-3, width=4, progress=False, threads=1)
    assert len(history) == 12 and history[-1]["loss"] < history[0]["loss"]
    pred, spread, p_dir = evaluate(net, vaa, centres)
    assert pred.shape == spread.shape == (8, len(PLANNING_LANDMARKS)) and p_dir.shape == (8,)
    assert np.all((p_dir >= 0) & (p_dir <= 1))
    err = np.abs(pred - vaa["target"])
    spread_of_truth = np.abs(vaa["target"] - vaa["target"].mean()).mean()
    assert np.median(err) < 0.5 * spread_of_truth  # better than guessing the mean
