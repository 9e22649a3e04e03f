"""Train the scene network on the randomised world and write ``models/scene_net.pt`` and its card.

Data: :mod:`positioning.evaluation.scene_data` samples of world training seeds (10000 and up; the
robustness suite's seeds, 900000 and up, are never read here); a tenth of the seeds (by seed) is held
out for the card's figures. Training: AdamW with a one-cycle schedule; losses: cross-entropy of the cell
classes (ignoring unseen cells), binary cross-entropy of the footprint, cross-entropy of the keypoints'
heat maps against Gaussians at the truth, Huber on their read-out plan-view positions and heights (mm),
binary cross-entropy of their confidence against "within 40 mm", and cross-entropy of the position, arm
state and cover.

Run ``python -m positioning.evaluation.scene_net_train`` (``--count``, ``--epochs``; about an hour on a
2-core CPU for the defaults, after the frames are cached by ``positioning.evaluation.world_data``).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning.evaluation.scene_data import IGNORE, Batch, augment
from positioning.perception.planview import DEFAULT_PLAN_VIEW_SETTINGS
from positioning.perception.scene_net import (
    ARM_STATES,
    CLASSES,
    CONFIDENT_WITHIN_MM,
    COVERS,
    HEIGHT_SCALE_MM,
    KEYPOINTS,
    POSITIONS,
    SCENE_NET_SCHEMA,
    build_scene_net,
    soft_argmax_2d,
)

__all__ = [
    "WIDTHS", "CLASS_WEIGHTS", "split", "losses", "balanced_weights", "train", "evaluate", "time_inference",
    "main",
]  # fmt: skip

WIDTHS = (16, 32, 48, 64)
#: Cell-class weights: the support and the patient matter most, the floor least.
CLASS_WEIGHTS = (0.5, 2.0, 2.0, 1.5, 1.0, 1.0)
HUBER_MM = 20.0
#: Width of the target heat maps (output cells).
HEAT_SIGMA_CELLS = 1.0


def split(seeds: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out samples (every ``1 / val_fraction``-th seed is held out)."""
    step = max(2, round(1 / val_fraction))
    val = (seeds % step) == 0
    return np.flatnonzero(~val), np.flatnonzero(val)


def _tensors(b: Batch) -> dict[str, Any]:
    import torch

    return {
        "inputs": torch.from_numpy(b.inputs),
        "classes": torch.from_numpy(b.classes.astype(np.int64)),
        "footprint": torch.from_numpy(b.footprint.astype(np.float32)),
        "keypoints": torch.from_numpy(b.keypoints.astype(np.float32)),
        "position": torch.from_numpy(b.position),
        "arms": torch.from_numpy(b.arms),
        "cover": torch.from_numpy(b.cover),
        "table_z": torch.from_numpy(b.table_z),
    }


def _outputs(out: dict[str, Any], k: int) -> dict[str, Any]:
    cells, glob = out["cells"], out["globals"]
    n = len(CLASSES)
    heat = cells[:, n + 1 : n + 1 + k]
    rc, w = soft_argmax_2d(heat)
    height = (w * cells[:, n + 1 + k : n + 1 + 2 * k]).sum((-1, -2))
    conf = (w * cells[:, n + 1 + 2 * k : n + 1 + 3 * k]).sum((-1, -2))
    n_pos, n_arm, n_cov = len(POSITIONS), len(ARM_STATES), len(COVERS)
    return {
        "table_z": glob[:, n_pos + n_arm + n_cov],
        "heat": heat,
        "classes": cells[:, :n],
        "footprint": cells[:, n],
        "rc": rc,
        "height": height,
        "conf": conf,
        "position": glob[:, :n_pos],
        "arms": glob[:, n_pos : n_pos + n_arm],
        "cover": glob[:, n_pos + n_arm : n_pos + n_arm + n_cov],
    }


def losses(
    out: dict[str, Any], t: dict[str, Any], cell_mm: float, *, cover_weights: Any = None
) -> dict[str, Any]:
    """The training losses of one batch (a dict of scalar tensors, ``total`` their weighted sum).

    ``cover_weights`` (a tensor, one per cover class) balances the blanket classes (see
    :func:`balanced_weights`); without it every sample counts the same and the rare "up to the chest"
    class is drowned by "none".
    """
    import torch
    from torch.nn import functional

    o = _outputs(out, len(KEYPOINTS))
    weight = torch.tensor(CLASS_WEIGHTS, dtype=torch.float32)
    l_cls = functional.cross_entropy(o["classes"], t["classes"], weight=weight, ignore_index=IGNORE)
    l_foot = functional.binary_cross_entropy_with_logits(o["footprint"], t["footprint"])
    kp = t["keypoints"]
    valid = torch.isfinite(kp).all(-1)
    kp0 = torch.nan_to_num(kp)
    d_xy = (o["rc"] - kp0[..., :2]) * cell_mm
    err_xy = torch.sqrt((d_xy**2).sum(-1) + 1e-6)
    err_h = (o["height"] - kp0[..., 2]) * HEIGHT_SCALE_MM
    zero = torch.zeros_like(err_xy)
    if valid.any():
        # the heat maps against Gaussians at the truth (sigma one cell): strong gradients from the start,
        # which soft-argmax alone lacks; then the read-out position itself (Huber, mm)
        b, k, h, w = o["heat"].shape
        rows = torch.arange(h, dtype=torch.float32)[:, None]
        cols = torch.arange(w, dtype=torch.float32)[None, :]
        g = torch.exp(
            -0.5
            * ((rows - kp0[..., 0, None, None]) ** 2 + (cols - kp0[..., 1, None, None]) ** 2)
            / HEAT_SIGMA_CELLS**2
        )
        g = g / g.sum((-1, -2), keepdim=True).clamp_min(1e-12)
        logp = torch.log_softmax(o["heat"].reshape(b, k, h * w), -1).reshape(b, k, h, w)
        l_heat = -(g * logp).sum((-1, -2))[valid].mean()
        l_kp = functional.huber_loss(err_xy[valid], zero[valid], delta=HUBER_MM) / cell_mm
        l_h = functional.huber_loss(err_h[valid], zero[valid], delta=HUBER_MM) / cell_mm
        within = (torch.sqrt(err_xy**2 + err_h**2) < CONFIDENT_WITHIN_MM).float().detach()
        l_conf = functional.binary_cross_entropy_with_logits(o["conf"][valid], within[valid])
    else:
        l_kp = l_h = l_conf = l_heat = o["conf"].sum() * 0.0
    has = t["position"] >= 0
    l_pos = functional.cross_entropy(o["position"][has], t["position"][has]) if has.any() else l_kp * 0.0
    has_a = t["arms"] >= 0
    l_arms = functional.cross_entropy(o["arms"][has_a], t["arms"][has_a]) if has_a.any() else l_kp * 0.0
    l_cover = functional.cross_entropy(o["cover"], t["cover"], weight=cover_weights)
    dz_mm = (o["table_z"] - t["table_z"]) * DEFAULT_PLAN_VIEW_SETTINGS.z_scale_mm
    l_table = functional.huber_loss(dz_mm, torch.zeros_like(dz_mm), delta=10.0) / 10.0
    total = (
        l_cls
        + 0.5 * l_foot
        + 0.5 * l_heat
        + 0.2 * l_kp
        + 0.2 * l_h
        + 0.2 * l_conf
        + 0.5 * l_pos
        + 0.3 * l_arms
        + 0.3 * l_cover
        + 0.5 * l_table
    )
    return {
        "total": total, "classes": l_cls, "footprint": l_foot, "heat": l_heat, "keypoints": l_kp,
        "height": l_h, "confidence": l_conf, "position": l_pos, "arms": l_arms, "cover": l_cover,
        "table": l_table,
    }  # fmt: skip


def balanced_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Class weights inversely proportional to each class's frequency in ``labels`` (mean weight 1 per
    sample; a class with no sample gets weight 1)."""
    counts = np.bincount(labels[labels >= 0].astype(np.int64), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1.0) / n_classes, 1.0)
    return weights.astype(np.float32)


def train(
    data: dict[str, np.ndarray],
    train_idx: np.ndarray,
    *,
    epochs: int = 16,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Any, list[dict[str, float]]]:
    """Train a network on ``data[train_idx]``; returns it (eval mode) and the per-epoch mean losses."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    net = build_scene_net(len(KEYPOINTS), WIDTHS)
    steps_per_epoch = max(1, len(train_idx) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    cell = 2.0 * DEFAULT_PLAN_VIEW_SETTINGS.cell_mm
    table_params = [p for n, p in net.named_parameters() if n.startswith("table.")]
    param_groups = [[p for n, p in net.named_parameters() if not n.startswith("table.")], table_params]
    cover_weights = torch.from_numpy(balanced_weights(data["cover"][train_idx], len(COVERS)))
    history = []
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(train_idx)
        sums: dict[str, float] = {}
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr, disable=not progress
        )
        for step in bar:
            idx = order[step * batch_size : (step + 1) * batch_size]
            t = _tensors(augment(data, idx, rng, train=True))
            out = net(t["inputs"])
            ls = losses(out, t, cell, cover_weights=cover_weights)
            opt.zero_grad()
            ls["total"].backward()
            # clipped apart: the table head's millimetre-scale gradient (norm ~900 at the start, against
            # ~50 for the rest) would otherwise shrink every other gradient through a shared norm
            for group in param_groups:
                torch.nn.utils.clip_grad_norm_(group, 5.0)
            opt.step()
            sched.step()
            for k, v in ls.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{sums['total'] / (step + 1):.3f}")
        history.append({k: v / steps_per_epoch for k, v in sums.items()})
    net.eval()
    return net, history


def evaluate(net: Any, data: dict[str, np.ndarray], idx: np.ndarray, batch_size: int = 32) -> dict[str, Any]:
    """Held-out figures: per-keypoint 3-D error (median / p95 mm, where truth exists), class accuracy and
    intersection-over-union of the support and patient cells, position / arms / cover accuracy."""
    import torch

    cell = 2.0 * DEFAULT_PLAN_VIEW_SETTINGS.cell_mm
    errs = [[] for _ in KEYPOINTS]
    conf_all, within_all = [], []
    inter = np.zeros(len(CLASSES))
    union = np.zeros(len(CLASSES))
    correct = total = 0
    pos_ok, arm_ok, cov_ok, n_pos, n_arm, n_cov = 0, 0, 0, 0, 0, 0
    table_errs: list[float] = []
    cover_confusion = np.zeros((len(COVERS), len(COVERS)), dtype=np.int64)  # truth x predicted
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for k in range(0, len(idx), batch_size):
            b = augment(data, idx[k : k + batch_size], rng, train=False)
            t = _tensors(b)
            o = _outputs(net(t["inputs"]), len(KEYPOINTS))
            cls = o["classes"].argmax(1).numpy()
            seen = b.classes != IGNORE
            correct += int((cls[seen] == b.classes[seen]).sum())
            total += int(seen.sum())
            for c in range(len(CLASSES)):
                p, q = (cls == c) & seen, (b.classes == c) & seen
                inter[c] += (p & q).sum()
                union[c] += (p | q).sum()
            rc, h, conf = o["rc"].numpy(), o["height"].numpy(), torch.sigmoid(o["conf"]).numpy()
            for j in range(len(KEYPOINTS)):
                kp = b.keypoints[:, j]
                ok = np.all(np.isfinite(kp), axis=1)
                e = np.sqrt(
                    ((rc[ok, j] - kp[ok, :2]) ** 2).sum(-1) * cell**2
                    + ((h[ok, j] - kp[ok, 2]) * HEIGHT_SCALE_MM) ** 2
                )
                errs[j] += e.tolist()
                conf_all += conf[ok, j].tolist()
                within_all += (e < CONFIDENT_WITHIN_MM).tolist()
            has = b.position >= 0
            pos_ok += int((o["position"].argmax(1).numpy()[has] == b.position[has]).sum())
            n_pos += int(has.sum())
            has = b.arms >= 0
            arm_ok += int((o["arms"].argmax(1).numpy()[has] == b.arms[has]).sum())
            n_arm += int(has.sum())
            has = b.position >= 0
            cov_ok += int((o["cover"].argmax(1).numpy()[has] == b.cover[has]).sum())
            np.add.at(cover_confusion, (b.cover[has], o["cover"].argmax(1).numpy()[has]), 1)
            n_cov += int(has.sum())
            table_errs += (
                (o["table_z"].numpy() - b.table_z) * DEFAULT_PLAN_VIEW_SETTINGS.z_scale_mm
            ).tolist()
    conf_a, within_a = np.asarray(conf_all), np.asarray(within_all)
    calib = {}
    for lo, hi in ((0.0, 0.3), (0.3, 0.6), (0.6, 0.8), (0.8, 0.95), (0.95, 1.01)):
        sel = (conf_a >= lo) & (conf_a < hi)
        if sel.any():
            calib[f"{lo:.2f}-{min(hi, 1.0):.2f}"] = {
                "n": int(sel.sum()),
                "within_40mm": round(float(within_a[sel].mean()), 3),
            }
    return {
        "samples": len(idx),
        "keypoints_mm": {
            n: {"median": round(float(np.median(e)), 1), "p95": round(float(np.percentile(e, 95)), 1)}
            for n, e in zip(KEYPOINTS, errs, strict=True)
            if e
        },
        "class_accuracy": round(correct / max(total, 1), 4),
        "iou": {c: round(float(inter[i] / max(union[i], 1)), 3) for i, c in enumerate(CLASSES)},
        "position_accuracy": round(pos_ok / max(n_pos, 1), 4),
        "arms_accuracy": round(arm_ok / max(n_arm, 1), 4),
        "cover_accuracy": round(cov_ok / max(n_cov, 1), 4),
        "cover_recall": {
            c: round(float(cover_confusion[i, i] / max(cover_confusion[i].sum(), 1)), 3)
            for i, c in enumerate(COVERS)
        },
        "cover_confusion": cover_confusion.tolist(),
        "table_z_mm": {
            "median": round(float(np.median(np.abs(table_errs))), 1),
            "p95": round(float(np.percentile(np.abs(table_errs), 95)), 1),
            "bias": round(float(np.median(table_errs)), 1),
        },
        "confidence_calibration": calib,
    }


def time_inference(
    net: Any, data: dict[str, np.ndarray], idx: np.ndarray, runs: int = 60
) -> dict[str, float]:
    """Median and p95 milliseconds of one frame's forward pass (batch 1, CPU, this process's threads)."""
    import torch

    net.eval()
    times = []
    with torch.inference_mode():
        for k in range(runs + 5):
            x = torch.from_numpy(data["inputs"][idx[k % len(idx)]][None].astype(np.float32))
            t = time.perf_counter()
            net(x)
            if k >= 5:  # the first few warm the allocator up
                times.append(1000.0 * (time.perf_counter() - t))
    return {
        "median": round(float(np.median(times)), 1),
        "p95": round(float(np.percentile(times, 95)), 1),
        "threads": torch.get_num_threads(),
    }


def _write_card(path: Path, meta: dict[str, Any]) -> None:
    ev = meta["held_out"]
    lines = [
        "# Scene network (`scene_net.pt`)",
        "",
        "Our own PyTorch network that reads the scene from depth alone, on the plan view of the",
        "scanner-frame point cloud (`positioning/perception/planview.py`,",
        "`positioning/perception/scene_net.py`). It finds the surface the patient lies on, the patient, what",
        "lies on them (blankets, pillows), other people and other things; the body's footprint; the COCO-17",
        "keypoints and the planning landmarks with a confidence each; and the patient position, arm state",
        "and blanket cover.",
        "",
        "## Data",
        f"- {meta['train_samples']} training and {ev['samples']} held-out sessions of the randomised world",
        "  (`sim/world.yaml`, seeds from 10000; every tenth seed held out). The robustness suite's seeds",
        "  (from 900000) are never read in training.",
        "- Targets from the simulator's truth: the label image (class of the highest point per 40 mm cell),",
        "  the body mesh's plan-view footprint, the 3-D landmarks (heights above the free mattress top).",
        "- Augmentation: mirror across the gantry's axis (left/right and the decubitus side swap), half turn",
        "  (head first / feet first swap), shifts along y, height offsets of +-100 mm.",
        "",
        "## Training",
        f"- `{meta['command']}`: {meta['epochs']} epochs, batch {meta['batch_size']}, AdamW one-cycle"
        f" (max lr {meta['lr']}), {meta['seconds'] / 60:.0f} min on {meta['machine']}.",
        f"- {meta['parameters']} parameters; input {meta['input_shape']}; widths {list(WIDTHS)}.",
        f"- Inference (one frame, CPU, {meta['inference_ms']['threads']} threads): median"
        f" {meta['inference_ms']['median']} ms, p95 {meta['inference_ms']['p95']} ms (forward pass only;"
        " the plan view adds a few ms: `positioning bench perception` times the whole frame).",
        "",
        "## Held-out figures (world sessions the network did not train on)",
        f"- cell class accuracy {ev['class_accuracy']:.3f}; IoU: "
        + ", ".join(f"{k} {v:.2f}" for k, v in ev["iou"].items()),
        f"- position {ev['position_accuracy']:.3f}, arm state {ev['arms_accuracy']:.3f}, cover"
        f" {ev['cover_accuracy']:.3f} (recall "
        + ", ".join(f"{k} {v:.2f}" for k, v in ev["cover_recall"].items())
        + "; cover weighted by class in training)",
        f"- table height (the trough the patient rests in): median {ev['table_z_mm']['median']} mm, p95"
        f" {ev['table_z_mm']['p95']} mm, bias {ev['table_z_mm']['bias']} mm",
        "",
        "| landmark | 3-D error median mm | p95 mm |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {v['median']} | {v['p95']} |" for n, v in ev["keypoints_mm"].items()]
    lines += [
        "",
        "Confidence calibration (share within 40 mm per confidence band): "
        + ", ".join(f"{k}: {v['within_40mm']} (n {v['n']})" for k, v in ev["confidence_calibration"].items()),
        "",
        "## Known limits",
        "- Trained on simulated `anny` bodies in simulated rooms only; real bodies, real mattresses and real",
        "  blankets differ. Its figures must be checked on real recordings before clinical use; the pipeline",
        "  fuses it with MediaPipe and with geometry, and reports disagreement as a named check.",
        "- Heights are relative to the free mattress top, which perception measures; a mattress the body",
        "  sinks into deeply is harder (the back is never seen).",
        "- Plan-view grid of 3.5 m x 2.6 m centred on the scene: a patient or table outside it is not seen.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    from positioning.evaluation import scene_data
    from positioning.evaluation.world_data import train_seeds
    from positioning.resources import models_dir

    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.scene_net_train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=8000, help="world sessions (default 8000)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--jobs", type=int, default=2, help="processes building the samples")
    parser.add_argument("--out", type=Path, default=None, help="model file (default models/scene_net.pt)")
    parser.add_argument(
        "--withhold",
        nargs="*",
        default=[],
        choices=("cover", "table_height"),
        help="outputs the model file withholds (held-out figures without information); SceneNet honours it",
    )
    args = parser.parse_args(argv)
    import torch

    out = args.out or models_dir() / "scene_net.pt"
    t0 = time.perf_counter()
    paths = scene_data.build(train_seeds(args.count), jobs=args.jobs)
    data = scene_data.load(paths)
    tr, va = split(data["seed"])
    print(
        f"{len(tr)} training, {len(va)} held-out samples ({time.perf_counter() - t0:.0f} s to build/load)",
        file=sys.stderr,
    )
    t1 = time.perf_counter()
    net, history = train(data, tr, epochs=args.epochs, batch_size=args.batch, lr=args.lr)
    seconds = time.perf_counter() - t1
    ev = evaluate(net, data, va)
    inference_ms = time_inference(net, data, va)
    print(json.dumps(ev | {"inference_ms": inference_ms}, indent=1))
    meta = {
        "command": "python -m positioning.evaluation.scene_net_train " + " ".join(argv or sys.argv[1:]),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "train_samples": len(tr),
        "epochs": args.epochs,
        "batch_size": args.batch,
        "lr": args.lr,
        "seconds": seconds,
        "machine": "a 2-core CPU",
        "parameters": sum(p.numel() for p in net.parameters()),
        "input_shape": [4, DEFAULT_PLAN_VIEW_SETTINGS.rows, DEFAULT_PLAN_VIEW_SETTINGS.cols],
        "history": history,
        "held_out": ev,
        "inference_ms": inference_ms,
    }
    state = {
        "schema": SCENE_NET_SCHEMA,
        "keypoints": list(KEYPOINTS),
        "classes": list(CLASSES),
        "positions": list(POSITIONS),
        "arm_states": list(ARM_STATES),
        "covers": list(COVERS),
        "plan_view": {
            f: getattr(DEFAULT_PLAN_VIEW_SETTINGS, f)
            for f in (
                "cell_mm",
                "rows",
                "cols",
                "z_scale_mm",
                "spread_scale_mm",
                "centre_step_mm",
                "centre_range_mm",
            )
        },
        "widths": list(WIDTHS),
        "weights": net.state_dict(),
        "card": {k: v for k, v in meta.items() if k != "history"},
        "withheld": list(args.withhold),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    out.write_bytes(buf.getvalue())
    _write_card(out.with_suffix(".md"), meta)
    minutes = math.ceil((time.perf_counter() - t0) / 60)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card; {minutes} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
