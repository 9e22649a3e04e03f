"""Train the level network (:mod:`positioning.planning.level_net`) on simulated height maps.

Evaluation code (reads simulator truth). Data: :mod:`positioning.evaluation.level_data` (generated and
cached first; sessions from seed 10000 up, disjoint from every benchmark). Sessions whose seed offset is
a multiple of ten are held out for validation; the residuals there give the per-landmark, per-posture
sigmas stored in the model file (what planning uses as the level's expected error).

Training: AdamW, one-cycle learning rate, Huber loss (10 mm) on the soft-argmax level plus a binary
cross-entropy on the head-direction output (a quarter of the maps turned 180 degrees: the wrong head
direction), augmentation by left-right mirroring and shifts along the body axis (+-80 mm). The shipped
model is an ensemble of two such networks trained from different seeds (``--members``), their outputs
averaged; on a 2-core CPU each takes about 17 min (40 epochs over 4860 maps).

Run ``python -m positioning.evaluation.level_net_train`` (``--help`` for options); writes
``models/level_net.pt`` and its card ``models/level_net.md``.

Convention: body-axis coordinate ``s`` of the height map (mm, toward the head).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from positioning import resources
from positioning.evaluation.level_data import FIRST_SEED, LEVEL_SCENARIOS, LevelSample, generate, load_dataset
from positioning.perception.heightmap import DEFAULT_HEIGHT_MAP_SETTINGS
from positioning.planning.level_net import (
    ARM_STATES,
    LEVEL_NET_SCHEMA,
    POSTURES,
    bin_centres_mm,
    build_level_net,
    input_planes,
    soft_argmax,
)

__all__ = ["split", "to_arrays", "train", "evaluate", "main"]

MODELS_DIR = resources.models_dir()
HUBER_MM = 10.0
#: Height-map cell size the data was made with (the pipeline's default grid).
CELL_MM = DEFAULT_HEIGHT_MAP_SETTINGS.cell_mm
MAX_SHIFT_ROWS = 8
#: Fraction of training maps turned 180 degrees (the wrong head direction) for the direction output.
TURN_FRACTION = 0.25
#: Weight of the head-direction loss (binary cross-entropy) against the level loss.
DIRECTION_WEIGHT = 0.2


def split(samples: Sequence[LevelSample]) -> tuple[list[LevelSample], list[LevelSample]]:
    """``(train, validation)``: validation = sessions whose seed offset is a multiple of 10."""
    val = [s for s in samples if (s.seed - FIRST_SEED) % 10 == 0]
    train = [s for s in samples if (s.seed - FIRST_SEED) % 10 != 0]
    return train, val


def to_arrays(samples: Sequence[LevelSample]) -> dict[str, np.ndarray]:
    """Stacked inputs and targets: ``maps`` (N, 2, rows, cols) float16 (height, occupancy),
    ``posture`` / ``arms`` (N,) indices, ``target`` (N, L) mm."""
    from positioning.planning.anatomy import posture_group

    maps = np.stack([np.stack([s.height_mm, s.count > 0]) for s in samples]).astype(np.float16)
    return {
        "maps": maps,
        "posture": np.array([POSTURES.index(posture_group(s.position)) for s in samples], np.int64),
        "arms": np.array([ARM_STATES.index(s.arms) for s in samples], np.int64),
        "target": np.stack([s.levels_s_mm for s in samples]).astype(np.float32),
    }


def _batch(
    arrays: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator | None, *, turned: bool = False
) -> tuple[Any, Any, Any]:
    """Network input, level targets and head-direction labels for rows ``idx``.

    With ``rng`` the maps are augmented (mirrored, shifted along the body, and a :data:`TURN_FRACTION` of
    them turned 180 degrees: direction label 0, levels not scored); ``turned`` turns every map (for
    validating the direction output).
    """
    import torch

    maps = arrays["maps"][idx].astype(np.float32)
    target = arrays["target"][idx].copy()
    turn = np.full(len(idx), turned)
    if rng is not None:
        flip = rng.random(len(idx)) < 0.5
        maps[flip] = maps[flip][..., ::-1]
        shifts = rng.integers(-MAX_SHIFT_ROWS, MAX_SHIFT_ROWS + 1, len(idx))
        for i, k in enumerate(shifts):
            if k:
                maps[i] = np.roll(maps[i], k, axis=1)
                if k > 0:
                    maps[i, :, :k] = 0
                else:
                    maps[i, :, k:] = 0
                target[i] += k * CELL_MM
        turn |= rng.random(len(idx)) < TURN_FRACTION
    maps[turn] = maps[turn][:, :, ::-1, ::-1]
    target[turn] = np.nan
    x = np.stack([
        input_planes(m[0], m[1], POSTURES[p], ARM_STATES[a])
        for m, p, a in zip(maps, arrays["posture"][idx], arrays["arms"][idx], strict=True)
    ])  # fmt: skip
    return torch.from_numpy(x), torch.from_numpy(target), torch.from_numpy((~turn).astype(np.float32))


def evaluate(
    net: Any, arrays: dict[str, np.ndarray], centres: Any, batch: int = 64, *, turned: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted levels and spreads ``(N, L)`` (mm) and head-direction probabilities ``(N,)`` of
    ``arrays`` (no augmentation; ``turned``: every map turned 180 degrees)."""
    import torch

    net.eval()
    preds, spreads, dirs = [], [], []
    with torch.inference_mode():
        for i in range(0, len(arrays["target"]), batch):
            x, _, _ = _batch(arrays, np.arange(i, min(i + batch, len(arrays["target"]))), None, turned=turned)
            logits, direction = net(x)
            m, s = soft_argmax(logits, centres)
            preds.append(m.numpy())
            spreads.append(s.numpy())
            dirs.append(torch.sigmoid(direction).numpy())
    return np.concatenate(preds), np.concatenate(spreads), np.concatenate(dirs)


def train(
    train_arrays: dict[str, np.ndarray],
    val_arrays: dict[str, np.ndarray] | None,
    *,
    epochs: int = 30,
    batch: int = 32,
    lr: float = 3e-3,
    width: int = 16,
    seed: int = 0,
    threads: int = 2,
    progress: bool = True,
) -> tuple[Any, list[dict[str, float]]]:
    """Train the network; returns ``(net, history)`` (per-epoch loss and validation median error)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    n, n_lm = train_arrays["target"].shape
    rows = train_arrays["maps"].shape[2]
    centres = torch.from_numpy(bin_centres_mm(rows, CELL_MM)).float()
    half = rows * 10.0 / 2 - 10.0
    net = build_level_net(n_lm, width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    bar = tqdm(total=steps, desc="level net", unit="step", file=sys.stderr, disable=not progress)
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            x, t, label = _batch(train_arrays, idx, rng)
            logits, direction = net(x)
            mean, _ = soft_argmax(logits, centres)
            valid = (t.abs() < half).float()  # NaN (turned maps) compares False
            err = torch.nan_to_num((mean - t) / HUBER_MM)
            loss = (torch.nn.functional.huber_loss(err, torch.zeros_like(err), reduction="none", delta=1.0)
                    * valid).sum() / valid.sum().clamp_min(1.0)  # fmt: skip
            loss = loss + DIRECTION_WEIGHT * torch.nn.functional.binary_cross_entropy_with_logits(
                direction, label
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            bar.update(1)
        rec = {"epoch": epoch + 1, "loss": total / n}
        if val_arrays is not None and (epoch % 5 == 4 or epoch == epochs - 1):
            pred, _, _ = evaluate(net, val_arrays, centres)
            rec["val_median_abs_mm"] = float(np.median(np.abs(pred - val_arrays["target"])))
            rec["val_p95_abs_mm"] = float(np.percentile(np.abs(pred - val_arrays["target"]), 95))
        bar.set_postfix({k: round(v, 2) for k, v in rec.items() if k != "epoch"})
        history.append(rec)
    bar.close()
    net.eval()
    return net, history


def _stats(e: np.ndarray) -> dict[str, float]:
    a = np.abs(e)
    return {
        "n": len(e),
        "median_abs_mm": round(float(np.median(a)), 2),
        "p95_abs_mm": round(float(np.percentile(a, 95)), 2),
        "bias_mm": round(float(np.median(e)), 2),
        "sigma_mm": round(float(1.4826 * np.median(np.abs(e - np.median(e)))), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m positioning.evaluation.level_net_train", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--sessions", type=int, default=450, help="sessions per scenario (generated if missing)"
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--members", type=int, default=2, help="networks in the ensemble")
    parser.add_argument("--seed", type=int, default=0, help="first member's initialisation/augmentation seed")
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="a level-network file whose members join the ensemble (trained with the same data and "
        "settings, seeds from --seed on); the rest are trained",
    )
    parser.add_argument("--no-generate", action="store_true", help="use only what is cached")
    parser.add_argument(
        "--world",
        action="store_true",
        help="train on the randomised world (sim/world.yaml; --sessions of it)",
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "level_net.pt")
    args = parser.parse_args(argv)
    import torch

    from positioning.planning.anatomy import PLANNING_LANDMARKS

    t0 = time.perf_counter()
    scenarios = ("world",) if args.world else LEVEL_SCENARIOS
    if not args.no_generate:
        generate(args.sessions, scenarios=scenarios)
    samples = load_dataset(args.sessions, scenarios=scenarios)
    tr, va = split(samples)
    print(f"{len(samples)} samples: {len(tr)} training, {len(va)} validation", file=sys.stderr)
    tra, vaa = to_arrays(tr), to_arrays(va)
    nets: list[Any] = []
    histories: list[Any] = []
    for path in args.reuse:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        for k, weights in enumerate(doc["members"]):
            net = build_level_net(len(PLANNING_LANDMARKS), int(doc["width"]))
            net.load_state_dict(weights)
            nets.append(net.eval())
            histories.append(doc["training"]["history"][k])
    while len(nets) < args.members:
        seed = args.seed + len(nets)
        net, history = train(tra, vaa, epochs=args.epochs, width=args.width, lr=args.lr, seed=seed)
        nets.append(net)
        histories.append(history)
    rows, cols = tra["maps"].shape[2:]
    centres = torch.from_numpy(bin_centres_mm(rows, CELL_MM)).float()
    outs = [evaluate(n, vaa, centres) for n in nets]
    pred, spread, p_right = (np.mean([o[i] for o in outs], axis=0) for i in range(3))
    p_turned = np.mean([evaluate(n, vaa, centres, turned=True)[2] for n in nets], axis=0)
    for k, o in enumerate(outs):
        e = np.abs(o[0] - vaa["target"])
        print(f"member {k}: median {np.median(e):.2f} mm, p95 {np.percentile(e, 95):.2f} mm", file=sys.stderr)
    err = pred - vaa["target"]
    report: dict[str, Any] = {"all": {}, "groups": {}}
    report["head_direction"] = {
        "right_maps_below_0.3": round(float(np.mean(p_right < 0.3)), 4),
        "right_maps_below_0.1": round(float(np.mean(p_right < 0.1)), 4),
        "turned_maps_above_0.1": round(float(np.mean(p_turned >= 0.1)), 4),
        "turned_maps_above_0.3": round(float(np.mean(p_turned >= 0.3)), 4),
    }
    sigma: dict[str, dict[str, float]] = {"all": {}}
    for j, name in enumerate(PLANNING_LANDMARKS):
        report["all"][name] = _stats(err[:, j])
        sigma["all"][name] = max(report["all"][name]["sigma_mm"], 1.0)
    for g, group in enumerate(POSTURES):
        sel = vaa["posture"] == g
        if sel.sum() < 10:
            continue
        sigma[group] = {}
        report["groups"][group] = {}
        for j, name in enumerate(PLANNING_LANDMARKS):
            report["groups"][group][name] = _stats(err[sel, j])
            sigma[group][name] = max(report["groups"][group][name]["sigma_mm"], 1.0)
    training = {
        "scenarios": list(scenarios),
        "seeds": [FIRST_SEED, FIRST_SEED + args.sessions - 1],
        "validation": "seed offset % 10 == 0",
        "samples_train": len(tr),
        "samples_validation": len(va),
        "epochs": args.epochs,
        "lr": args.lr,
        "members": len(nets),
        "seeds_init": list(range(args.seed, args.seed + len(nets))),
        "history": histories,
        "validation_report": report,
        "created": datetime.date.today().isoformat(),
        "created_by": " ".join(
            ["python -m positioning.evaluation.level_net_train", *(sys.argv[1:] if argv is None else argv)]
        ),
        "torch": str(torch.__version__),
    }
    state = {
        "schema": LEVEL_NET_SCHEMA,
        "landmarks": list(PLANNING_LANDMARKS),
        "width": args.width,
        "rows": int(rows),
        "cols": int(cols),
        "cell_mm": CELL_MM,
        "sigma_mm": sigma,
        "spread_ref_mm": {
            n: round(float(np.median(spread[:, j])), 2) for j, n in enumerate(PLANNING_LANDMARKS)
        },
        "training": training,
        "members": [{k: v.detach().clone() for k, v in n.state_dict().items()} for n in nets],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    _write_card(args.out.with_suffix(".md"), state)
    for name, st in report["all"].items():
        print(f"{name:18s} {st}")
    for group, rep in report["groups"].items():
        print(group, {k: (v["median_abs_mm"], v["p95_abs_mm"]) for k, v in rep.items()})
    print("head direction:", report["head_direction"])
    print(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _write_card(path: Path, state: dict[str, Any]) -> None:
    t = state["training"]
    lines = [
        "# Level network (`level_net.pt`)",
        "",
        "Predicts the levels along the body axis of the planning landmarks",
        f"({', '.join(state['landmarks'])}) from the patient's plan-view height map",
        "(`positioning.perception.heightmap`); architecture and input in `positioning.planning.level_net`.",
        "",
        "## Training",
        f"- Data: simulated patients only, scenarios {', '.join(t['scenarios'])}; seeds {t['seeds'][0]}-"
        f"{t['seeds'][1]} (disjoint from every benchmark), one frame per session through the pipeline's own",
        "  segmentation; targets are the simulator's truth landmarks (`positioning.sim.anatomy`) and the",
        "  midpoints of the truth knee and ankle joints.",
        f"- {t['samples_train']} training maps, {t['samples_validation']} validation maps "
        f"({t['validation']}); an ensemble of {t['members']} networks (seeds {t['seeds_init']}) averaged, "
        f"{t['epochs']} epochs each, torch {t['torch']}, {t['created']}.",
        f"- Reproduce: `{t['created_by']}` (data: `python -m positioning.evaluation.level_data`).",
        "",
        "## Validation (held-out sessions), error = predicted - truth, mm",
        "",
        "| landmark | median abs | p95 abs | bias | sigma |",
        "|---|---|---|---|---|",
    ]
    for name, st in t["validation_report"]["all"].items():
        lines.append(
            f"| {name} | {st['median_abs_mm']} | {st['p95_abs_mm']} | {st['bias_mm']} | {st['sigma_mm']} |"
        )
    for group, rep in t["validation_report"]["groups"].items():
        lines += [
            "",
            f"{group}: " + ", ".join(f"{k} {v['median_abs_mm']}/{v['p95_abs_mm']}" for k, v in rep.items()),
        ]
    hd = t["validation_report"].get("head_direction")
    if hd:
        lines += [
            "",
            "## Head direction",
            "The second output is the probability that the map's head direction (from the perceived",
            "position) is right. On the validation maps as built and turned 180 degrees:",
            f"- right maps below 0.3 (warning): {hd['right_maps_below_0.3']:.2%}; below 0.1 (error): "
            f"{hd['right_maps_below_0.1']:.2%}",
            f"- turned maps at or above 0.1 (error missed): {hd['turned_maps_above_0.1']:.2%}; "
            f"at or above 0.3: {hd['turned_maps_above_0.3']:.2%}",
        ]
    lines += [
        "",
        "## Limits",
        "- Trained on simulated bodies (anny) and the simulator's proportional landmark rules; to be",
        "  validated on real patients (CT scout images with a camera frame) before clinical use.",
        "- Assumes the patient position (head direction) and arm state from perception; a wrong head",
        "  direction gives wrong levels (planning checks the orientation separately).",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
