"""Level network: anatomical landmark levels read directly from the patient's height map (PyTorch).

The 2-D keypoint model places shoulders and hips from the colour image with 15-30 mm of error along the
body, and every level derived from them (:mod:`positioning.planning.anatomy`) inherits it. The body
surface itself shows where the neck narrows, where the shoulders widen, where the legs part; this small
convolutional network reads those cues from the body-canonical height map
(:mod:`positioning.perception.heightmap`) and predicts, for every landmark of
:data:`~positioning.planning.anatomy.PLANNING_LANDMARKS`, a probability distribution over the body axis;
the level is its mean (soft-argmax), which keeps the estimate sub-cell and translation-equivariant.

Architecture (about 0.2 M parameters, a few ms per frame on a CPU):

* input ``(8, 256, 72)``: height above the table / 300 mm, occupancy, posture group one-hot (supine,
  prone, decubitus) and arm state one-hot (sides, raised, chest) as constant planes;
* 2-D encoder: a stride-2 stem and three conv blocks with 2x2 pooling (to 16 x 5 cells of 160 mm);
* each scale collapsed across the body (mean and max over columns) into 1-D features along the body;
* 1-D decoder (U-Net style, with dilated convolutions at the coarsest scale for whole-body context)
  back to 128 bins of 20 mm; one logit row per landmark; soft-argmax -> level ``s`` (mm).

Trained on simulated patients only (:mod:`positioning.evaluation.level_net_train`); the model file
``models/level_net.pt`` carries the weights of an ensemble of such networks (trained from different
seeds; their predictions are averaged), the landmark order, the per-landmark residual sigma on
held-out sessions, and the training provenance (card: ``models/level_net.md``).

Convention: body-axis coordinate ``s`` (mm, toward the head) of the height map; :class:`LevelNetPredictor`
returns scanner y (IEC 61217, mm).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning import resources
from positioning.perception.heightmap import HeightMap

__all__ = [
    "POSTURES",
    "ARM_STATES",
    "IN_CHANNELS",
    "HEIGHT_SCALE_MM",
    "OUT_BINS",
    "build_level_net",
    "input_planes",
    "soft_argmax",
    "bin_centres_mm",
    "LevelPrediction",
    "LevelNetOutput",
    "LevelNetPredictor",
    "default_level_net_path",
    "load_level_net",
]

POSTURES: tuple[str, ...] = ("supine", "prone", "decubitus")
ARM_STATES: tuple[str, ...] = ("sides", "raised", "chest")
IN_CHANNELS = 2 + len(POSTURES) + len(ARM_STATES)
#: Heights are divided by this before entering the network.
HEIGHT_SCALE_MM = 300.0
#: Output bins along the body axis (each 2 map rows).
OUT_BINS = 128
LEVEL_NET_SCHEMA = "positioning.planning.level_net/2"


def input_planes(height_mm: np.ndarray, count: np.ndarray, posture: str, arms: str | None) -> np.ndarray:
    """The network input ``(IN_CHANNELS, rows, cols)`` float32 for one height map.

    Args:
        height_mm: ``(rows, cols)`` heights above the table (mm).
        count: ``(rows, cols)`` points per cell (occupancy = count > 0).
        posture: one of :data:`POSTURES`.
        arms: one of :data:`ARM_STATES`, or None (unknown: all arm planes 0).
    """
    if posture not in POSTURES:
        raise ValueError(f"posture must be one of {POSTURES}, got {posture!r}")
    if arms is not None and arms not in ARM_STATES:
        raise ValueError(f"arms must be one of {ARM_STATES} or None, got {arms!r}")
    rows, cols = height_mm.shape
    x = np.zeros((IN_CHANNELS, rows, cols), np.float32)
    x[0] = np.clip(height_mm, 0.0, 2 * HEIGHT_SCALE_MM) / HEIGHT_SCALE_MM
    x[1] = count > 0
    x[2 + POSTURES.index(posture)] = 1.0
    if arms is not None:
        x[2 + len(POSTURES) + ARM_STATES.index(arms)] = 1.0
    return x


def build_level_net(n_landmarks: int, width: int = 16) -> Any:
    """The network (a ``torch.nn.Module``) mapping ``(B, IN_CHANNELS, 256, 72)`` to
    ``(B, n_landmarks, OUT_BINS)`` level logits and ``(B,)`` head-direction logits (positive: the head
    is at the map's high rows, i.e. the superior direction the map was built with is right)."""
    import torch
    from torch import nn

    def _norm(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(4, c), c)

    def block2d(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
        )  # fmt: skip

    def block1d(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            _norm(cout),
            nn.ReLU(inplace=True),
        )

    w = width

    class LevelNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(IN_CHANNELS, w, 3, stride=2, padding=1, bias=False), _norm(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False), _norm(w), nn.ReLU(inplace=True),
            )  # fmt: skip
            self.enc2 = nn.Sequential(nn.MaxPool2d(2), block2d(w, 2 * w))
            self.enc3 = nn.Sequential(nn.MaxPool2d(2), block2d(2 * w, 4 * w))
            self.enc4 = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), block2d(4 * w, 4 * w))
            self.bottom = nn.Sequential(
                block1d(8 * w, 4 * w), block1d(4 * w, 4 * w, 2), block1d(4 * w, 4 * w, 4),
                block1d(4 * w, 4 * w, 8),
            )  # fmt: skip
            self.up3 = block1d(4 * w + 8 * w, 4 * w)
            self.up2 = block1d(4 * w + 4 * w, 2 * w)
            self.up1 = nn.Sequential(block1d(2 * w + 2 * w, 2 * w), block1d(2 * w, 2 * w))
            self.head = nn.Conv1d(2 * w, n_landmarks, 1)
            self.direction = nn.Linear(8 * w, 1)

        @staticmethod
        def collapse(f: torch.Tensor) -> torch.Tensor:
            return torch.cat([f.mean(dim=3), f.amax(dim=3)], dim=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f1 = self.stem(x)  # (128, 36)
            f2 = self.enc2(f1)  # (64, 18)
            f3 = self.enc3(f2)  # (32, 9)
            f4 = self.enc4(f3)  # (16, 5)
            y = self.bottom(self.collapse(f4))
            direction = self.direction(torch.cat([y.mean(dim=2), y.amax(dim=2)], dim=1))[:, 0]
            y = nn.functional.interpolate(y, size=f3.shape[2], mode="linear", align_corners=False)
            y = self.up3(torch.cat([y, self.collapse(f3)], dim=1))
            y = nn.functional.interpolate(y, size=f2.shape[2], mode="linear", align_corners=False)
            y = self.up2(torch.cat([y, self.collapse(f2)], dim=1))
            y = nn.functional.interpolate(y, size=f1.shape[2], mode="linear", align_corners=False)
            y = self.up1(torch.cat([y, self.collapse(f1)], dim=1))
            return self.head(y), direction

    return LevelNet()


def soft_argmax(logits: Any, centres: Any) -> tuple[Any, Any]:
    """Mean and standard deviation (torch tensors, ``(..., L)``) of the softmax distribution of
    ``(..., L, bins)`` logits over the bin centres ``(bins,)``."""
    import torch

    p = torch.softmax(logits, dim=-1)
    mean = (p * centres).sum(-1)
    var = (p * (centres - mean[..., None]) ** 2).sum(-1)
    return mean, var.clamp_min(0).sqrt()


def bin_centres_mm(rows: int, cell_mm: float, bins: int = OUT_BINS) -> np.ndarray:
    """``(bins,)`` body-axis coordinate of each output bin's centre (the map's ``s``)."""
    step = rows * cell_mm / bins
    return (np.arange(bins) + 0.5 - bins / 2) * step


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelPrediction:
    """One landmark level from the network.

    Attributes:
        y_mm: scanner y of the level.
        sigma_mm: expected error: the held-out residual sigma of this landmark, widened when the
            network's own distribution is wider than usual.
        spread_mm: standard deviation of the network's distribution (mm).
    """

    y_mm: float
    sigma_mm: float
    spread_mm: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevelNetOutput:
    """What the network says of one height map.

    Attributes:
        levels: landmark name -> :class:`LevelPrediction`.
        head_direction_p: probability, in [0, 1], that the head lies where the map was built to have it
            (the perceived head-first / feet-first is right); low values mean the body's shape says the
            head is at the other end.
    """

    levels: dict[str, LevelPrediction]
    head_direction_p: float


def default_level_net_path() -> Path:
    """``models/level_net.pt`` in the repository."""
    return resources.models_dir() / "level_net.pt"


class LevelNetPredictor:
    """Runs the trained level network on height maps (CPU; torch is imported on construction).

    Args:
        state: the model file's content (see :mod:`positioning.evaluation.level_net_train`).
        source: where it came from (for messages).
    """

    def __init__(self, state: Mapping[str, Any], source: str = "") -> None:
        import torch

        if state.get("schema") != LEVEL_NET_SCHEMA:
            raise ValueError(f"{source}: schema {state.get('schema')!r}, expected {LEVEL_NET_SCHEMA!r}")
        self.landmarks: tuple[str, ...] = tuple(state["landmarks"])
        self.width = int(state["width"])
        self.rows = int(state["rows"])
        self.cols = int(state["cols"])
        self.cell_mm = float(state["cell_mm"])
        self.sigma_mm: dict[str, dict[str, float]] = {
            g: {k: float(v) for k, v in d.items()} for g, d in state["sigma_mm"].items()
        }
        self.spread_ref_mm: dict[str, float] = {k: float(v) for k, v in state["spread_ref_mm"].items()}
        self.info: dict[str, Any] = dict(state.get("training", {}))
        self.source = source
        members = state["members"]
        if not members:
            raise ValueError(f"{source}: the model file has no network weights")
        self._nets = []
        for weights in members:
            net = build_level_net(len(self.landmarks), self.width)
            net.load_state_dict({k: v.float() for k, v in weights.items()})
            self._nets.append(net.eval())
        self._torch = torch
        self._centres = torch.from_numpy(bin_centres_mm(self.rows, self.cell_mm)).float()

    def predict_s(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Levels and spreads (``(B, L)`` mm each, map coordinate ``s``) and the probability that the
        head direction is right (``(B,)``) for ``(B, C, rows, cols)`` inputs: the mean over the
        ensemble's members."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(planes, np.float32))
        means, spreads, dirs = [], [], []
        with torch.inference_mode():
            for net in self._nets:
                logits, direction = net(x)
                mean, spread = soft_argmax(logits, self._centres)
                means.append(mean.numpy())
                spreads.append(spread.numpy())
                dirs.append(torch.sigmoid(direction).numpy())
        return (
            np.mean(means, axis=0).astype(np.float64),
            np.mean(spreads, axis=0).astype(np.float64),
            np.mean(dirs, axis=0).astype(np.float64),
        )

    def predict(self, hmap: HeightMap, posture: str, arms: str | None) -> LevelNetOutput:
        """Landmark levels (scanner y) for one height map (the mean of the map's and its left-right
        mirror's predictions), and how likely the map's head direction is right.

        Args:
            hmap: the patient's height map (same grid as the training maps).
            posture: posture group (:data:`POSTURES`).
            arms: arm state (:data:`ARM_STATES`) or None.

        Raises:
            ValueError: the map's grid differs from the network's.
        """
        if (hmap.rows, hmap.cols, hmap.cell_mm) != (self.rows, self.cols, self.cell_mm):
            raise ValueError(
                f"height map grid {hmap.rows}x{hmap.cols} @ {hmap.cell_mm} mm differs from the level "
                f"network's {self.rows}x{self.cols} @ {self.cell_mm} mm"
            )
        planes = input_planes(hmap.height_mm, hmap.count, posture, arms)
        # the map and its left-right mirror (levels do not depend on the side): average the two
        both, spreads, p_dir = self.predict_s(np.stack([planes, planes[..., ::-1]]))
        s, spread = both.mean(axis=0, keepdims=True), spreads.mean(axis=0, keepdims=True)
        sig = self.sigma_mm.get(posture) or self.sigma_mm["all"]
        out = {}
        for i, name in enumerate(self.landmarks):
            ref = self.spread_ref_mm.get(name, float(spread[0, i]))
            widen = max(1.0, float(spread[0, i]) / ref) if ref > 0 else 1.0
            out[name] = LevelPrediction(
                y_mm=float(hmap.y_of_s(s[0, i])),
                sigma_mm=float(sig.get(name, self.sigma_mm["all"][name])) * widen,
                spread_mm=float(spread[0, i]),
            )
        return LevelNetOutput(levels=out, head_direction_p=float(np.mean(p_dir)))


_CACHE: dict[str, LevelNetPredictor | None] = {}


def load_level_net(path: str | Path | None = None) -> LevelNetPredictor | None:
    """The trained level network (cached per path); None when the default file is absent.

    Raises:
        ValueError: the file is not a valid level-network file (a given ``path`` must exist).
    """
    p = Path(path) if path is not None else default_level_net_path()
    key = str(p)
    if key in _CACHE:
        return _CACHE[key]
    if not p.is_file():
        if path is not None:
            raise ValueError(f"level network file not found: {p}")
        _CACHE[key] = None
        return None
    import torch

    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        predictor = LevelNetPredictor(state, source=str(p))
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{p} is not a valid level network file: {e}") from e
    _CACHE[key] = predictor
    return predictor
