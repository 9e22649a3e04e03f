"""Training samples for the scene network, built from cached world frames (truth is read here only).

Each sample is the network's input (the plan view of the frame's scanner-frame points, at the stride
perception uses) and its targets on the output grid: the class of the highest thing seen in each cell
(from the simulator's label image), the body's plan-view footprint, the 3-D landmarks as output-grid
positions and heights above the free mattress top, and the patient position, arm state and cover.
Samples are cached as ``.npz`` chunks under ``~/.cache/positioning/scene/v{DATA_VERSION}``.

Augmentations (:func:`augment`) act on the arrays: a mirror across the gantry's axis (left and right
swap: the body's names and the decubitus side), a half turn about the vertical (head first becomes feet
first), shifts of the grid along y and offsets of the heights.

Convention: scanner frame (IEC 61217), mm; output cell ``(i, j)`` as in
:mod:`positioning.perception.scene_net`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from positioning import resources
from positioning.perception.planview import (
    DEFAULT_PLAN_VIEW_SETTINGS,
    PlanViewSettings,
    input_planes,
    plan_view,
)
from positioning.perception.scene_net import (
    ARM_STATES,
    CLASSES,
    COVERS,
    HEIGHT_SCALE_MM,
    KEYPOINTS,
    POSITIONS,
)

__all__ = [
    "DATA_VERSION",
    "IGNORE",
    "PERCEPTION_STRIDE",
    "data_dir",
    "class_of_labels",
    "make_sample",
    "build",
    "load",
    "augment",
    "MIRROR_KEYPOINTS",
    "MIRROR_POSITIONS",
    "TURN_POSITIONS",
]

DATA_VERSION = 1
#: Class target of a cell nothing is seen in (not scored).
IGNORE = 255
#: Perception samples the depth image at this stride for geometry (see ``Perceiver``).
PERCEPTION_STRIDE = 2


def data_dir() -> Path:
    """``$POSITIONING_CACHE/scene/vN`` (default ``~/.cache/positioning/scene/vN``)."""
    return resources.cache_dir("scene") / f"v{DATA_VERSION}"


def class_of_labels(label: np.ndarray, z_mm: np.ndarray, mattress_top_z_mm: float) -> np.ndarray:
    """Scene-network class (index into :data:`CLASSES`) of points with simulator labels ``label``: the
    mattress, and table parts at its height (head holder, arm boards), are the support; the table's lower
    parts (its sides, the base) are other things."""
    from positioning.sim.room import Label

    out = np.zeros(label.shape, np.uint8)
    idx = {n: CLASSES.index(n) for n in CLASSES}
    out[label == Label.MATTRESS] = idx["support"]
    table = label == Label.TABLE
    out[table & (z_mm >= mattress_top_z_mm - 40.0)] = idx["support"]
    out[table & (z_mm < mattress_top_z_mm - 40.0)] = idx["other"]
    out[label == Label.PATIENT] = idx["patient"]
    out[np.isin(label, (Label.COVER, Label.HEAD_REST, Label.PILLOW))] = idx["on_patient"]
    out[label == Label.OTHER_PERSON] = idx["person"]
    out[np.isin(label, (Label.GANTRY, Label.CLUTTER))] = idx["other"]
    return out


def make_sample(
    scenario: str, seed: int, index: int = 0, settings: PlanViewSettings = DEFAULT_PLAN_VIEW_SETTINGS
) -> dict[str, np.ndarray]:
    """One training sample from a cached (or newly simulated) frame."""
    from positioning.evaluation.isocenter_fit import FOOTPRINT_CELL_MM, load_frames
    from positioning.perception.pointcloud import scanner_image
    from positioning.sim.scenario import sample_session

    sample = load_frames(scenario, seed, [index])[0]
    spec = sample_session(scenario, seed)
    s = PERCEPTION_STRIDE
    img = scanner_image(sample.frame, sample.calibration, stride=s)
    pts = img.reshape(-1, 3)
    ok = np.all(np.isfinite(pts), axis=1)
    pv = plan_view(pts[ok], settings)
    assert (
        sample.label is not None and sample.footprint is not None and sample.footprint_origin_mm is not None
    )
    labels = sample.label[::s, ::s].reshape(-1)[ok]
    p = pts[ok]
    cls = class_of_labels(labels, p[:, 2], sample.mattress_top_z_mm)
    # output grid: the class of the highest point in each cell
    rows, cols = settings.rows // 2, settings.cols // 2
    cell = 2 * settings.cell_mm
    r = np.floor((p[:, 1] - pv.origin_mm[1]) / cell).astype(np.int64)
    c = np.floor((p[:, 0] - pv.origin_mm[0]) / cell).astype(np.int64)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    flat = r[inside] * cols + c[inside]
    order = np.lexsort((p[inside, 2], flat))  # by cell, then height: the last of each cell is its top
    target = np.full(rows * cols, IGNORE, np.uint8)
    if len(flat):
        last = np.r_[flat[order][1:] != flat[order][:-1], True]
        target[flat[order][last]] = cls[inside][order][last]
    # footprint: output cells a quarter or more covered by the body
    foot = np.zeros((rows, cols), np.uint8)
    if sample.footprint.size:
        fr, fc = np.nonzero(sample.footprint)
        fx = sample.footprint_origin_mm[0] + fc * FOOTPRINT_CELL_MM
        fy = sample.footprint_origin_mm[1] + fr * FOOTPRINT_CELL_MM
        rr = np.floor((fy - pv.origin_mm[1]) / cell).astype(np.int64)
        cc = np.floor((fx - pv.origin_mm[0]) / cell).astype(np.int64)
        good = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
        n = np.bincount(rr[good] * cols + cc[good], minlength=rows * cols).reshape(rows, cols)
        foot = (n >= 0.25 * (cell / FOOTPRINT_CELL_MM) ** 2).astype(np.uint8)
    truth = {**sample.keypoints_mm, **sample.landmarks_mm}
    kp = np.full((len(KEYPOINTS), 3), np.nan, np.float32)
    for i, name in enumerate(KEYPOINTS):
        if name in truth:
            x, y, z = truth[name]
            kp[i] = (
                (y - pv.origin_mm[1]) / cell - 0.5,
                (x - pv.origin_mm[0]) / cell - 0.5,
                z - sample.mattress_top_z_mm,
            )
    position = -1 if sample.position is None else POSITIONS.index(sample.position)
    arms = -1 if sample.arms is None else ARM_STATES.index(sample.arms)
    cover = COVERS.index(spec.cover.kind) if spec.placement is not None else 0
    return {
        "seed": np.int32(seed),
        "inputs": input_planes(pv, settings).astype(np.float16),
        "classes": target.reshape(rows, cols),
        "footprint": foot,
        "keypoints": kp,
        "position": np.int8(position),
        "arms": np.int8(arms),
        "cover": np.int8(cover),
        "table_z_mm": np.float32(sample.mattress_top_z_mm),
        "origin_mm": np.asarray(pv.origin_mm, np.float32),
    }


def _chunk(args: tuple[str, list[int], str]) -> str:
    from positioning.native_log import quiet_native_stderr

    scenario, seeds, path = args
    if Path(path).is_file():
        return path
    with quiet_native_stderr():
        samples = [make_sample(scenario, s) for s in seeds]
    arrays = {k: np.stack([smp[k] for smp in samples]) for k in samples[0]}
    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def build(
    seeds: Sequence[int], *, scenario: str = "world", chunk: int = 250, jobs: int = 2, progress: bool = True
) -> list[Path]:
    """Build (or reuse) the cached chunks of the samples of ``seeds``; returns their paths."""
    import multiprocessing as mp

    from tqdm import tqdm

    d = data_dir()
    d.mkdir(parents=True, exist_ok=True)
    work = []
    for k in range(0, len(seeds), chunk):
        part = list(seeds[k : k + chunk])
        work.append((scenario, part, str(d / f"{scenario}_{part[0]}_{part[-1]}.npz")))
    bar = tqdm(total=len(work), desc="scene samples", unit="chunk", file=sys.stderr, disable=not progress)
    out = []
    if jobs <= 1:
        for w in work:
            out.append(Path(_chunk(w)))
            bar.update()
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            for path in pool.imap(_chunk, work):
                out.append(Path(path))
                bar.update()
    bar.close()
    return out


def load(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """Stack chunks into one dict of arrays."""
    parts = [dict(np.load(p)) for p in paths]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _partner(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


#: Keypoint index after a mirror across the gantry's axis (left and right swap).
MIRROR_KEYPOINTS: np.ndarray = np.array([KEYPOINTS.index(_partner(n)) for n in KEYPOINTS])
#: Position index after the mirror: the decubitus sides swap (supine and prone stay).
MIRROR_POSITIONS: np.ndarray = np.array(
    [POSITIONS.index(p.replace("DL", "D#").replace("DR", "DL").replace("D#", "DR")) for p in POSITIONS]
)
#: Position index after a half turn about the vertical: head first and feet first swap.
TURN_POSITIONS: np.ndarray = np.array(
    [POSITIONS.index(("FF" if p.startswith("HF") else "HF") + p[2:]) for p in POSITIONS]
)


@dataclasses.dataclass
class Batch:
    """One augmented batch (numpy)."""

    inputs: np.ndarray
    classes: np.ndarray
    footprint: np.ndarray
    keypoints: np.ndarray
    position: np.ndarray
    arms: np.ndarray
    cover: np.ndarray
    table_z: np.ndarray


def augment(
    data: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator, *, train: bool = True
) -> Batch:
    """Gather and augment samples ``idx`` (mirror, half turn, shift along y by whole output cells, height
    offset) when ``train``; else gather only."""
    x = data["inputs"][idx].astype(np.float32)
    cls = data["classes"][idx].copy()
    foot = data["footprint"][idx].copy()
    kp = data["keypoints"][idx].copy()
    pos = data["position"][idx].astype(np.int64)
    arms = data["arms"][idx].astype(np.int64)
    cover = data["cover"][idx].astype(np.int64)
    table_z = data["table_z_mm"][idx].astype(np.float32) / DEFAULT_PLAN_VIEW_SETTINGS.z_scale_mm
    if train:
        h, w = cls.shape[1:]
        for b in range(len(idx)):
            if rng.random() < 0.5:  # mirror across x = 0
                x[b] = x[b, :, :, ::-1]
                cls[b], foot[b] = cls[b, :, ::-1], foot[b, :, ::-1]
                kp[b] = kp[b, MIRROR_KEYPOINTS]
                kp[b, :, 1] = w - 1 - kp[b, :, 1]
                if pos[b] >= 0:
                    pos[b] = MIRROR_POSITIONS[pos[b]]
            if rng.random() < 0.5:  # half turn about the vertical through the grid's centre
                x[b] = x[b, :, ::-1, ::-1]
                cls[b], foot[b] = cls[b, ::-1, ::-1], foot[b, ::-1, ::-1]
                kp[b, :, 0] = h - 1 - kp[b, :, 0]
                kp[b, :, 1] = w - 1 - kp[b, :, 1]
                if pos[b] >= 0:
                    pos[b] = TURN_POSITIONS[pos[b]]
            k = int(rng.integers(-6, 7))  # shift along y by k output cells (2k plan-view cells)
            if k:
                x[b] = np.roll(x[b], 2 * k, axis=1)
                cls[b], foot[b] = np.roll(cls[b], k, axis=0), np.roll(foot[b], k, axis=0)
                sl = slice(0, 2 * k) if k > 0 else slice(2 * k, None)
                x[b, :, sl] = 0.0
                so = slice(0, k) if k > 0 else slice(k, None)
                cls[b, so], foot[b, so] = IGNORE, 0
                kp[b, :, 0] += k
            seen = x[b, 1] > 0
            dz = float(rng.uniform(-100.0, 100.0)) / DEFAULT_PLAN_VIEW_SETTINGS.z_scale_mm
            x[b, 0][seen] += dz
            table_z[b] += dz  # the table moves with the scene
    kp[:, :, 2] /= HEIGHT_SCALE_MM
    return Batch(
        np.ascontiguousarray(x), np.ascontiguousarray(cls), np.ascontiguousarray(foot), kp, pos, arms, cover,
        table_z,
    )  # fmt: skip
