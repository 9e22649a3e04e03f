"""Our scene network: what is where on the table, from depth alone (PyTorch).

It reads the plan view of the scene (:mod:`positioning.perception.planview`: the scanner-frame point
cloud seen from straight above, so the camera's placement hardly matters) and predicts, on a grid of
twice the plan view's cell (40 mm):

* a class per cell (:data:`CLASSES`): the surface the patient lies on (mattress, table top, head holder),
  the patient, what lies on them (a blanket, a pillow, a bolster), other people, other things (a base,
  a stretcher, a cart, the gantry), or nothing of interest (the floor);
* the body's footprint, including the parts under a blanket;
* the COCO-17 keypoints and the planning landmarks (:data:`KEYPOINTS`): a heat map each, read by
  soft-argmax into a plan-view position, a height above the table read from a height map at the same
  weights, and a confidence (the predicted probability that the position is within 40 mm);
* the patient position (DICOM code), the arm state and how far a blanket covers the body;
* the height of the surface the patient lies on, at the trough they rest in (a curved cradle's rims, a
  pillow or a blanket on the mattress, the dip of soft foam around the body all make the visible mattress
  a poor guide to it).

It is trained on the randomised world only (``python -m positioning.evaluation.scene_net_train``; data
and held-out figures in ``models/scene_net.md``); the model file is ``models/scene_net.pt``.

Convention: scanner frame (IEC 61217), mm. Output cell ``(i, j)`` covers plan-view cells
``(2i, 2j)..(2i+1, 2j+1)``; its centre is at plan-view cell coordinates ``(2i + 0.5, 2j + 0.5)``.
Landmark names are COCO-17 (the patient's own left and right) and snake_case anatomical landmarks.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning.conventions import ArmState, PatientPosition
from positioning.perception.landmarks.base import COCO_LANDMARKS, LandmarkModelError, ModelNotFoundError
from positioning.perception.planview import INPUT_CHANNELS, PlanView, PlanViewSettings

__all__ = [
    "CLASSES",
    "KEYPOINTS",
    "POSITIONS",
    "ARM_STATES",
    "COVERS",
    "SCENE_NET_SCHEMA",
    "SCENE_NET_SCHEMAS",
    "HEIGHT_SCALE_MM",
    "CONFIDENT_WITHIN_MM",
    "build_scene_net",
    "soft_argmax_2d",
    "SceneOutput",
    "SceneNet",
    "default_scene_net_path",
    "load_scene_net",
]

#: Cell classes, in output-channel order.
CLASSES: tuple[str, ...] = ("background", "support", "patient", "on_patient", "person", "other")
#: Landmarks the network places: COCO-17, then the planning landmarks on the midline.
KEYPOINTS: tuple[str, ...] = (
    *COCO_LANDMARKS,
    "skull_vertex", "chin", "jugular_notch", "lung_apex", "xiphoid", "costophrenic", "iliac_crest",
    "pubic_symphysis", "lesser_trochanter",
)  # fmt: skip
POSITIONS: tuple[str, ...] = tuple(str(p) for p in PatientPosition)
ARM_STATES: tuple[str, ...] = tuple(str(a) for a in ArmState)
COVERS: tuple[str, ...] = ("none", "legs", "chest")
SCENE_NET_SCHEMA = "positioning.perception.scene_net/2"
#: Model files this code reads: ``/1`` has no table-height head (its table height is NaN), ``/2`` has one.
SCENE_NET_SCHEMAS: tuple[str, ...] = ("positioning.perception.scene_net/1", SCENE_NET_SCHEMA)
#: Heights above the table are divided by this in the height maps.
HEIGHT_SCALE_MM = 300.0
#: A keypoint's confidence is trained as the probability that it lies within this of the truth.
CONFIDENT_WITHIN_MM = 40.0


def build_scene_net(
    n_keypoints: int = len(KEYPOINTS),
    widths: tuple[int, int, int, int] = (16, 32, 48, 64),
    table_head: bool = True,
) -> Any:
    """The network (a small U-Net over the plan view with a global head).

    Input ``(B, 4, rows, cols)`` (:data:`~positioning.perception.planview.INPUT_CHANNELS`); outputs a dict
    of ``cells`` ``(B, 7 + 3K, rows / 2, cols / 2)`` (class logits, footprint logit, K heat-map logits, K
    heights, K confidence logits) and ``globals`` ``(B, 8 + 3 + 3 [+ 1])`` (position, arms, cover logits,
    and with ``table_head`` the table height divided by the plan view's height scale).
    GroupNorm throughout, so that small batches and single frames behave alike.

    The table-height head reads the pooled features through a stop-gradient: trained jointly, its
    millimetre-scale loss took the shared features over (held-out position accuracy fell from 0.83 to
    0.27 in the one such run), so it is a probe of what the other tasks learned, never their teacher.
    """
    import torch
    from torch import nn
    from torch.nn import functional

    def gn(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(max(1, min(8, c // 4)), c)

    def cbr(ci: int, co: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(ci, co, 3, stride, padding=dilation, dilation=dilation, bias=False),
            gn(co),
            nn.ReLU(inplace=True),
        )

    a, b, c, d = widths
    n_cell = len(CLASSES) + 1 + 3 * n_keypoints
    n_glob = len(POSITIONS) + len(ARM_STATES) + len(COVERS)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(cbr(len(INPUT_CHANNELS), a, 2), cbr(a, a))
            self.e1 = nn.Sequential(cbr(a, b, 2), cbr(b, b))
            self.e2 = nn.Sequential(cbr(b, c, 2), cbr(c, c))
            self.e3 = nn.Sequential(cbr(c, d, 2), cbr(d, d, 1, 2))
            self.d2 = cbr(d + c, c)
            self.d1 = cbr(c + b, b)
            self.d0 = cbr(b + a, a)
            self.head = nn.Conv2d(a, n_cell, 1)
            self.glob = nn.Sequential(
                nn.Linear(2 * d + 2 * c, 64), nn.ReLU(inplace=True), nn.Linear(64, n_glob)
            )
            self.table = (
                nn.Sequential(nn.Linear(2 * d + 2 * c, 32), nn.ReLU(inplace=True), nn.Linear(32, 1))
                if table_head
                else None
            )

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            x0 = self.stem(x)
            x1 = self.e1(x0)
            x2 = self.e2(x1)
            x3 = self.e3(x2)
            y = self.d2(torch.cat([functional.interpolate(x3, size=x2.shape[-2:]), x2], 1))
            g = torch.cat([x3.mean((2, 3)), x3.amax((2, 3)), y.mean((2, 3)), y.amax((2, 3))], 1)
            y = self.d1(torch.cat([functional.interpolate(y, size=x1.shape[-2:]), x1], 1))
            y = self.d0(torch.cat([functional.interpolate(y, size=x0.shape[-2:]), x0], 1))
            glob = self.glob(g)
            if self.table is not None:
                glob = torch.cat([glob, self.table(g.detach())], 1)
            return {"cells": self.head(y), "globals": glob}

    return Net()


def soft_argmax_2d(logits: Any) -> tuple[Any, Any]:
    """Soft-argmax of ``(B, K, H, W)`` heat-map logits: ``(B, K, 2)`` expected ``(row, col)`` (cell-centre
    coordinates of the map) and the ``(B, K, H, W)`` weights."""
    import torch

    b, k, h, w = logits.shape
    weights = torch.softmax(logits.reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    rows = torch.arange(h, dtype=logits.dtype, device=logits.device)
    cols = torch.arange(w, dtype=logits.dtype, device=logits.device)
    r = (weights.sum(-1) * rows).sum(-1)
    c = (weights.sum(-2) * cols).sum(-1)
    return torch.stack([r, c], -1), weights


@dataclasses.dataclass(frozen=True, kw_only=True)
class SceneOutput:
    """What the scene network says about one plan view.

    Convention: scanner frame (IEC 61217), mm; grids are ``(rows / 2, cols / 2)`` output cells (see the
    module docstring), ``cell_mm`` wide.

    Attributes:
        class_prob: ``(n_classes, h, w)`` float32 class probabilities per cell (:data:`CLASSES`).
        top_z_mm: ``(h, w)`` float32 highest point seen in the cell (NaN: nothing seen).
        footprint_prob: ``(h, w)`` float32 probability that the body lies over the cell.
        origin_mm: ``(x0, y0)`` corner of output cell (0, 0).
        cell_mm: output cell size.
        keypoints_xy_mm: name -> ``(2,)`` scanner ``(x, y)``.
        keypoints_height_mm: name -> height above the table top.
        keypoint_confidence: name -> probability that the plan-view position is within 40 mm.
        keypoint_sigma_mm: name -> the landmark's expected error (its held-out median 3-D error, from
            the model file's card; empty when the file has none).
        position_prob: DICOM code -> probability.
        arms_prob: arm state -> probability.
        cover_prob: ``"none"``, ``"legs"``, ``"chest"`` -> probability.
        table_z_mm: z of the surface the patient lies on, at the trough (NaN: a network without it).
    """

    class_prob: np.ndarray
    top_z_mm: np.ndarray
    footprint_prob: np.ndarray
    origin_mm: tuple[float, float]
    cell_mm: float
    keypoints_xy_mm: dict[str, np.ndarray]
    keypoints_height_mm: dict[str, float]
    keypoint_confidence: dict[str, float]
    keypoint_sigma_mm: dict[str, float] = dataclasses.field(default_factory=dict)
    position_prob: dict[str, float] = dataclasses.field(default_factory=dict)
    arms_prob: dict[str, float] = dataclasses.field(default_factory=dict)
    cover_prob: dict[str, float] = dataclasses.field(default_factory=dict)
    table_z_mm: float = float("nan")

    def cell_of(self, x_mm: np.ndarray, y_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer output ``(row, col)`` of scanner ``(x, y)``."""
        r = np.floor((np.asarray(y_mm, np.float64) - self.origin_mm[1]) / self.cell_mm).astype(np.int64)
        c = np.floor((np.asarray(x_mm, np.float64) - self.origin_mm[0]) / self.cell_mm).astype(np.int64)
        return r, c

    def at(self, grid: np.ndarray, points_mm: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``grid`` (``(h, w)``) at the cells of ``(N, >=2)`` scanner points, ``fill`` outside."""
        return self.sampler(points_mm)(grid, fill)

    def sampler(self, points_mm: np.ndarray) -> Callable[..., np.ndarray]:
        """``sample(grid, fill=0.0)``: like :meth:`at` for many grids at the same points, the points'
        cells found once (a frame's 400k points: 2-3 ms a grid saved)."""
        h, w = self.footprint_prob.shape
        r, c = self.cell_of(points_mm[:, 0], points_mm[:, 1])
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        flat = r[ok] * w + c[ok]
        n = len(points_mm)

        def sample(grid: np.ndarray, fill: float = 0.0) -> np.ndarray:
            if grid.shape != (h, w):
                raise ValueError(f"a {grid.shape} grid is not this output's {(h, w)}")
            out = np.full(n, fill, dtype=np.float32)
            out[ok] = grid.reshape(-1)[flat]
            return out

        return sample

    def prob(self, name: str) -> np.ndarray:
        """``(h, w)`` probability of one class."""
        return self.class_prob[CLASSES.index(name)]

    @property
    def position(self) -> tuple[str, float]:
        """The most probable DICOM position and its probability."""
        k = max(self.position_prob, key=self.position_prob.__getitem__)
        return k, self.position_prob[k]

    @property
    def arms(self) -> tuple[str, float]:
        k = max(self.arms_prob, key=self.arms_prob.__getitem__)
        return k, self.arms_prob[k]

    @property
    def cover(self) -> tuple[str | None, float]:
        """The likeliest blanket class and its probability (``(None, 0.0)`` when the network's file
        withholds its cover output)."""
        if not self.cover_prob:
            return None, 0.0
        k = max(self.cover_prob, key=self.cover_prob.__getitem__)
        return k, self.cover_prob[k]


class SceneNet:
    """The trained scene network (weights loaded once; CPU, two threads).

    Args:
        state: the model file's contents (see :func:`load_scene_net`).
        source: where it came from (for reports).
    """

    def __init__(self, state: Mapping[str, Any], source: str = "") -> None:
        import torch

        schema = state.get("schema")
        if schema not in SCENE_NET_SCHEMAS:
            raise LandmarkModelError(
                f"scene network {source}: schema {schema!r}, expected one of {SCENE_NET_SCHEMAS!r}"
            )
        try:
            self.keypoints: tuple[str, ...] = tuple(state["keypoints"])
            self.plan_view = PlanViewSettings(**state["plan_view"])
            widths = tuple(state["widths"])
            self.net = build_scene_net(
                len(self.keypoints),
                widths,  # type: ignore[arg-type]
                table_head=schema == SCENE_NET_SCHEMA,
            )
            self.net.load_state_dict(state["weights"])
        except (KeyError, TypeError, RuntimeError) as e:
            raise LandmarkModelError(f"scene network {source} is malformed: {e}") from e
        self.net.eval()
        self.source = source
        self.card: dict[str, Any] = dict(state.get("card", {}))
        #: Outputs the model file withholds (its held-out figures show they carry no information):
        #: ``"cover"`` (no blanket class is reported) and ``"table_height"`` (the table's height is
        #: geometry's alone).
        self.withheld: frozenset[str] = frozenset(state.get("withheld", ()))
        unknown = self.withheld - {"cover", "table_height"}
        if unknown:
            raise LandmarkModelError(f"scene network {source}: unknown withheld outputs {sorted(unknown)}")
        self._torch = torch

    def predict(self, pv: PlanView) -> SceneOutput:
        """Run the network on one plan view (its grid must match the network's)."""
        from positioning.perception.planview import input_planes

        torch = self._torch
        if pv.shape != (self.plan_view.rows, self.plan_view.cols) or pv.cell_mm != self.plan_view.cell_mm:
            raise ValueError(
                f"plan view {pv.shape} at {pv.cell_mm} mm does not match the network's "
                f"({self.plan_view.rows}, {self.plan_view.cols}) at {self.plan_view.cell_mm} mm"
            )
        x = torch.from_numpy(input_planes(pv, self.plan_view))[None]
        with torch.inference_mode():
            out = self.net(x)
        decoded = decode(out["cells"][0], out["globals"][0], pv, self.keypoints, self.plan_view.z_scale_mm)
        withheld: dict[str, Any] = {}
        if "cover" in self.withheld:
            withheld["cover_prob"] = {}
        if "table_height" in self.withheld:
            withheld["table_z_mm"] = float("nan")
        return dataclasses.replace(decoded, keypoint_sigma_mm=self.keypoint_sigma_mm, **withheld)

    @property
    def keypoint_sigma_mm(self) -> dict[str, float]:
        """Each landmark's held-out median 3-D error (mm) from the card, where the card has it."""
        errors = self.card.get("held_out", {}).get("keypoints_mm", {})
        return {n: float(v["median"]) for n, v in errors.items() if "median" in v}


def decode(
    cells: Any, glob: Any, pv: PlanView, keypoints: tuple[str, ...], z_scale_mm: float = 500.0
) -> SceneOutput:
    """Turn one sample's raw outputs (torch tensors, no batch axis) into a :class:`SceneOutput`."""
    import torch

    n_cls, k = len(CLASSES), len(keypoints)
    cls = torch.softmax(cells[:n_cls], 0).numpy()
    foot = torch.sigmoid(cells[n_cls]).numpy()
    heat = cells[n_cls + 1 : n_cls + 1 + k]
    height = cells[n_cls + 1 + k : n_cls + 1 + 2 * k]
    conf = cells[n_cls + 1 + 2 * k : n_cls + 1 + 3 * k]
    rc, w = soft_argmax_2d(heat[None])
    rc, w = rc[0].numpy(), w[0]
    h_mm = (w * height).sum((-1, -2)).numpy() * HEIGHT_SCALE_MM
    c = torch.sigmoid((w * conf).sum((-1, -2))).numpy()
    cell = 2.0 * pv.cell_mm
    x = pv.origin_mm[0] + (rc[:, 1] + 0.5) * cell
    y = pv.origin_mm[1] + (rc[:, 0] + 0.5) * cell
    n_pos, n_arm = len(POSITIONS), len(ARM_STATES)
    pos = torch.softmax(glob[:n_pos], 0).numpy()
    arm = torch.softmax(glob[n_pos : n_pos + n_arm], 0).numpy()
    n_cov = len(COVERS)
    cov = torch.softmax(glob[n_pos + n_arm : n_pos + n_arm + n_cov], 0).numpy()
    has_z = len(glob) > n_pos + n_arm + n_cov
    table_z = float(glob[n_pos + n_arm + n_cov]) * z_scale_mm if has_z else float("nan")
    h, w = cls.shape[1:]
    top = pv.top_z_mm[: 2 * h, : 2 * w].reshape(h, 2, w, 2)
    top_z = np.fmax.reduce(np.fmax.reduce(top, axis=3), axis=1).astype(np.float32)  # NaN where none seen
    return SceneOutput(
        class_prob=cls.astype(np.float32),
        top_z_mm=top_z,
        footprint_prob=foot.astype(np.float32),
        origin_mm=pv.origin_mm,
        cell_mm=cell,
        keypoints_xy_mm={n: np.array([x[i], y[i]]) for i, n in enumerate(keypoints)},
        keypoints_height_mm={n: float(h_mm[i]) for i, n in enumerate(keypoints)},
        keypoint_confidence={n: float(c[i]) for i, n in enumerate(keypoints)},
        position_prob={n: float(pos[i]) for i, n in enumerate(POSITIONS)},
        arms_prob={n: float(arm[i]) for i, n in enumerate(ARM_STATES)},
        cover_prob={n: float(cov[i]) for i, n in enumerate(COVERS)},
        table_z_mm=table_z,
    )


def default_scene_net_path() -> Path:
    """``models/scene_net.pt`` in the repository."""
    from positioning.resources import models_dir

    return models_dir() / "scene_net.pt"


_CACHE: dict[str, SceneNet] = {}


def load_scene_net(path: str | Path | None = None) -> SceneNet:
    """Load the scene network (once per path).

    Raises:
        ModelNotFoundError: the file is missing.
        LandmarkModelError: the file is not a scene network.
    """
    import torch

    p = Path(path) if path is not None else default_scene_net_path()
    key = str(p.resolve())
    if key in _CACHE:
        return _CACHE[key]
    if not p.is_file():
        raise ModelNotFoundError(
            f"scene network not found: {p} (train it with python -m positioning.evaluation.scene_net_train)"
        )
    try:
        state = torch.load(io.BytesIO(p.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        raise LandmarkModelError(f"scene network {p} cannot be read: {e}") from e
    if not isinstance(state, dict):
        raise LandmarkModelError(f"scene network {p} holds {type(state).__name__}, not a model")
    torch.set_num_threads(2)
    net = SceneNet(state, source=str(p))
    _CACHE[key] = net
    return net
