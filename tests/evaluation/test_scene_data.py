"""Scene-network samples: label classes, and augmentations that keep inputs and targets consistent."""

from __future__ import annotations

import numpy as np
import pytest

from positioning.evaluation.scene_data import (
    IGNORE,
    MIRROR_KEYPOINTS,
    MIRROR_POSITIONS,
    TURN_POSITIONS,
    augment,
    class_of_labels,
)
from positioning.perception.scene_net import CLASSES, KEYPOINTS, POSITIONS
from positioning.sim.room import Label


def test_label_classes():
    labels = np.array([Label.MATTRESS, Label.TABLE, Label.TABLE, Label.PATIENT, Label.COVER, Label.HEAD_REST,
                       Label.OTHER_PERSON, Label.GANTRY, Label.CLUTTER, Label.FLOOR], np.uint8)  # fmt: skip
    z = np.array([-150, -152, -400, -50, -60, -90, 300, 0, -150, -1000], float)
    got = [CLASSES[c] for c in class_of_labels(labels, z, -150.0)]
    assert got == ["support", "support", "other", "patient", "on_patient", "on_patient", "person", "other",
                   "other", "background"]  # fmt: skip


def test_mirror_and_turn_tables():
    assert KEYPOINTS[MIRROR_KEYPOINTS[KEYPOINTS.index("left_wrist")]] == "right_wrist"
    assert KEYPOINTS[MIRROR_KEYPOINTS[KEYPOINTS.index("xiphoid")]] == "xiphoid"
    pos = {p: POSITIONS[MIRROR_POSITIONS[i]] for i, p in enumerate(POSITIONS)}
    assert pos["HFDL"] == "HFDR" and pos["FFDR"] == "FFDL" and pos["HFS"] == "HFS" and pos["FFP"] == "FFP"
    turn = {p: POSITIONS[TURN_POSITIONS[i]] for i, p in enumerate(POSITIONS)}
    assert turn["HFS"] == "FFS" and turn["FFDL"] == "HFDL" and turn["HFP"] == "FFP"


def _data(n=1):
    rows, cols = 32, 16
    inputs = np.zeros((n, 4, 2 * rows, 2 * cols), np.float16)
    inputs[:, 1, 33, 4] = 1.0  # one cell seen
    inputs[:, 0, 33, 4] = -0.3
    classes = np.full((n, rows, cols), IGNORE, np.uint8)
    classes[:, 16, 2] = CLASSES.index("patient")
    foot = np.zeros((n, rows, cols), np.uint8)
    foot[:, 16, 2] = 1
    kp = np.full((n, len(KEYPOINTS), 3), np.nan, np.float32)
    kp[:, KEYPOINTS.index("left_hip")] = (16.0, 2.0, 90.0)
    return {
        "inputs": inputs, "classes": classes, "footprint": foot, "keypoints": kp,
        "position": np.array([POSITIONS.index("HFDL")] * n, np.int8), "arms": np.zeros(n, np.int8),
        "cover": np.zeros(n, np.int8), "table_z_mm": np.full(n, -150.0, np.float32),
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_augmentations_move_inputs_and_targets_together(seed):
    data = _data()
    b = augment(data, np.array([0]), np.random.default_rng(seed))
    seen = np.argwhere(b.inputs[0, 1] > 0)
    cls = np.argwhere(b.classes[0] == CLASSES.index("patient"))
    assert len(seen) == 1 and len(cls) == 1
    # the seen plan-view cell stays inside the output cell that carries the class, the footprint and the hip
    assert tuple(seen[0] // 2) == tuple(cls[0]) and b.footprint[0][tuple(cls[0])] == 1
    names = ("left_hip", "right_hip")
    hip = next(
        b.keypoints[0, KEYPOINTS.index(n)]
        for n in names
        if np.isfinite(b.keypoints[0, KEYPOINTS.index(n)]).all()
    )
    np.testing.assert_allclose(hip[:2], cls[0], atol=1e-5)
    assert hip[2] == pytest.approx(90.0 / 300.0)  # heights above the table are not shifted
    # the table moves with the scene's heights
    seen_z = b.inputs[0, 0][tuple(seen[0])] * 500.0
    assert b.table_z[0] * 500.0 - seen_z == pytest.approx(-150.0 - (-0.3 * 500.0), abs=0.2)
    mirrored = np.isfinite(b.keypoints[0, KEYPOINTS.index("right_hip")]).all()
    assert POSITIONS[b.position[0]] in (("HFDR", "FFDR") if mirrored else ("HFDL", "FFDL"))


def test_training_runs_end_to_end_on_a_tiny_set_and_reports_held_out_figures(tmp_path):
    """A few steps on synthetic samples: the loss is finite, the held-out report has every figure the
    card prints, and the card and the inference timing are written."""
    from positioning.evaluation.scene_net_train import _write_card, evaluate, split, time_inference, train

    data = _data(4)
    data["seed"] = np.array([10000, 10001, 10002, 10003], np.int32)
    tr, va = split(data["seed"], val_fraction=0.5)
    assert set(data["seed"][va]) == {10000, 10002}
    net, history = train(data, tr, epochs=2, batch_size=2, progress=False)
    assert len(history) == 2 and all(np.isfinite(h["total"]) for h in history)
    ev = evaluate(net, data, va)
    assert ev["samples"] == 2 and 0.0 <= ev["class_accuracy"] <= 1.0
    assert np.isfinite(ev["table_z_mm"]["median"])
    ms = time_inference(net, data, va, runs=3)
    assert ms["median"] > 0.0 and ms["p95"] >= ms["median"]
    meta = {
        "train_samples": len(tr), "command": "test", "epochs": 2, "batch_size": 2, "lr": 3e-3, "seconds": 1.0,
        "machine": "test", "parameters": 1, "input_shape": [4, 64, 32], "held_out": ev, "inference_ms": ms,
    }  # fmt: skip
    _write_card(tmp_path / "card.md", meta)
    text = (tmp_path / "card.md").read_text()
    assert "table height" in text and "Inference" in text and "left_hip" in text
