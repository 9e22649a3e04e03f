"""The landmark-backend interface: names, the 2-D result type, the backend protocol and fusion.

A backend (MediaPipe BlazePose on the colour image today, a depth-only network later) turns one image into
:class:`Landmarks2D`: named pixel positions with a confidence each. Backends that read the same pixel grid
(colour aligned to depth, or depth itself) can be combined with :func:`fuse_landmarks`.

Convention (every function and class here):
    * Pixel coordinates ``(u, v)``: ``u`` = column (right), ``v`` = row (down), in pixels, with the centre
      of the top-left pixel at ``(0, 0)`` (so the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``).
      Arrays of points are ``(N, 2)`` float64 in ``(u, v)`` order.
    * Images are ``(H, W)`` / ``(H, W, 3)`` row-major numpy arrays; rotations are numpy's ``np.rot90``
      (``k`` quarter turns counter-clockwise as displayed).
    * Landmark names are the COCO-17 names, the patient's own left and right; extra anatomical landmarks
      in snake_case.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from positioning.errors import PositioningError

__all__ = [
    "NamedLandmarks",
    "COCO_LANDMARKS",
    "TRUNK_LANDMARKS",
    "LANDMARK_MODES",
    "DEFAULT_AGREE_PX",
    "Landmarks2D",
    "LandmarkBackend",
    "LandmarkModelError",
    "ModelNotFoundError",
    "fuse_landmarks",
    "uv_from_rot90",
]

#: Landmark sources a command can use (``--landmarks``): MediaPipe on the colour image, our depth-only
#: scene network, or both fused by confidence.
LANDMARK_MODES: tuple[str, ...] = ("mediapipe", "depth", "fused")

#: The 17 COCO keypoints, in COCO order; left/right are the patient's own.
COCO_LANDMARKS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: The trunk's four COCO keypoints (shoulders and hips).
TRUNK_LANDMARKS: tuple[str, ...] = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

#: Two backends' positions of one landmark "agree" when closer than this, in pixels (about 5 cm for a
#: D435 at 848x480 looking at a table 1.2-1.5 m away).
DEFAULT_AGREE_PX = 20.0


class LandmarkModelError(PositioningError):
    """A landmark backend's model cannot be loaded."""

    code = "LANDMARK_MODEL_ERROR"


class ModelNotFoundError(LandmarkModelError):
    """A landmark backend's model file is missing (it is built or downloaded at set-up time)."""

    code = "MODEL_NOT_FOUND"


class NamedLandmarks:
    """Name lookup shared by the 2-D and 3-D landmark sets (``names`` is a tuple of landmark names)."""

    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        """Position of ``name`` in :attr:`names`; raises ``KeyError`` if absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no landmark {name!r}; have {self.names}") from None


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Landmarks2D(NamedLandmarks):
    """Named 2-D landmarks of one person in one image.

    Convention: see the module docstring; ``uv_px`` is in the pixel grid of the image the backend read
    (for MediaPipe the colour image passed in; for a depth backend the depth image).

    Attributes:
        names: ``N`` landmark names, unique.
        uv_px: ``(N, 2)`` float64 ``(u, v)`` pixel positions (read-only). A landmark a backend could not
            place has NaN coordinates and confidence 0.
        confidence: ``(N,)`` float64 in [0, 1] (read-only): how likely the landmark is visible where given.
        backend: name of the backend (or backends, for fused results) that produced it.
        score: overall confidence in [0, 1] that this is a person; defaults to the mean confidence of the
            COCO landmarks present (of all landmarks if none is a COCO name).
        image_shape: ``(H, W)`` of the image read, or None when unknown.
    """

    names: tuple[str, ...]
    uv_px: np.ndarray
    confidence: np.ndarray
    backend: str
    score: float | None = None
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if len(set(names)) != len(names):
            raise ValueError(f"landmark names must be unique, got {names}")
        n = len(names)
        uv = np.array(self.uv_px, dtype=np.float64)  # a copy, so that freezing it never affects the caller
        if uv.shape != (n, 2):
            raise ValueError(f"uv_px must be ({n}, 2) for {n} names, got {uv.shape}")
        conf = np.array(self.confidence, dtype=np.float64)
        if conf.shape != (n,):
            raise ValueError(f"confidence must be ({n},) for {n} names, got {conf.shape}")
        if not np.all(np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
            raise ValueError(f"confidence must be finite and in [0, 1], got {conf.tolist()}")
        missing = ~np.all(np.isfinite(uv), axis=1)
        if np.any(conf[missing] > 0):
            bad = [names[i] for i in np.flatnonzero(missing & (conf > 0))]
            raise ValueError(f"landmarks without finite uv_px must have confidence 0: {bad}")
        uv[missing] = np.nan
        uv.setflags(write=False)
        conf.setflags(write=False)
        score = self.score
        if score is None:
            coco = [i for i, name in enumerate(names) if name in COCO_LANDMARKS] or list(range(n))
            score = float(conf[coco].mean()) if coco else 0.0
        score = float(score)
        if not (0.0 <= score <= 1.0):
            raise ValueError(f"score must be in [0, 1], got {score}")
        shape = self.image_shape
        if shape is not None:
            shape = (int(shape[0]), int(shape[1]))
            if shape[0] <= 0 or shape[1] <= 0:
                raise ValueError(f"image_shape must be a positive (H, W), got {shape}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "uv_px", uv)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "image_shape", shape)

    def uv(self, name: str) -> np.ndarray:
        """``(2,)`` pixel position ``(u, v)`` of one landmark (NaN if the backend could not place it)."""
        return self.uv_px[self.index(name)].copy()

    def subset(self, names: Sequence[str]) -> Landmarks2D:
        """The landmarks ``names`` in that order (a name not present gets NaN and confidence 0)."""
        names = tuple(names)
        uv = np.full((len(names), 2), np.nan)
        conf = np.zeros(len(names))
        for j, name in enumerate(names):
            if name in self.names:
                i = self.names.index(name)
                uv[j], conf[j] = self.uv_px[i], self.confidence[i]
        return Landmarks2D(
            names=names, uv_px=uv, confidence=conf, backend=self.backend, image_shape=self.image_shape
        )

    def to_dict(self) -> dict[str, tuple[float, float, float]]:
        """``{name: (u_px, v_px, confidence)}``."""
        return {
            name: (float(self.uv_px[i, 0]), float(self.uv_px[i, 1]), float(self.confidence[i]))
            for i, name in enumerate(self.names)
        }


@runtime_checkable
class LandmarkBackend(Protocol):
    """Anything that finds one person's landmarks in an RGB-D image.

    A backend loads its model once (in its constructor) and is then called per frame. It reads what it
    needs: the MediaPipe backend the colour image, a depth network ``depth_mm`` (and may be given
    ``color_rgb=None``). ``detect`` returns None when no person is found, never raises for that.

    Attributes:
        name: short backend name, recorded in :attr:`Landmarks2D.backend`.
    """

    name: str

    def detect(
        self, color_rgb: np.ndarray | None, *, depth_mm: np.ndarray | None = None
    ) -> Landmarks2D | None:
        """Landmarks of the most confident person, in the input image's pixel coordinates, or None.

        Args:
            color_rgb: ``(H, W, 3)`` uint8 RGB image (None for depth-only backends).
            depth_mm: ``(H, W)`` uint16 z-depth in millimetres, 0 = invalid, on the same pixel grid when
                both are given.
        """
        ...


def uv_from_rot90(uv_rot_px: np.ndarray, k: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Map pixel positions in ``np.rot90(image, k)`` back to ``image``.

    Convention: pixel centres at integer ``(u, v)`` (top-left pixel centre ``(0, 0)``) in both images;
    ``k`` counter-clockwise quarter turns, as ``np.rot90(image, k)`` with the default axes (0, 1).
    Exact: pixel ``rot[v', u']`` is ``image[v, u]`` with ``(u, v) = uv_from_rot90((u', v'), k, (H, W))``.

    Args:
        uv_rot_px: ``(..., 2)`` positions ``(u', v')`` in the rotated image.
        k: number of quarter turns (any integer; taken modulo 4).
        image_shape: ``(H, W)`` of the original (unrotated) image.

    Returns:
        ``(..., 2)`` float64 positions ``(u, v)`` in the original image.
    """
    uv = np.asarray(uv_rot_px, dtype=np.float64)
    if uv.shape[-1:] != (2,):
        raise ValueError(f"uv_rot_px must be (..., 2), got {uv.shape}")
    h, w = int(image_shape[0]), int(image_shape[1])
    ur, vr = uv[..., 0], uv[..., 1]
    k = int(k) % 4
    if k == 0:
        u, v = ur, vr
    elif k == 1:  # rot[i, j] = image[j, W-1-i]
        u, v = (w - 1) - vr, ur
    elif k == 2:  # rot[i, j] = image[H-1-i, W-1-j]
        u, v = (w - 1) - ur, (h - 1) - vr
    else:  # rot[i, j] = image[H-1-j, i]
        u, v = vr, (h - 1) - ur
    return np.stack([u, v], axis=-1)


def fuse_landmarks(results: Sequence[Landmarks2D], *, agree_px: float = DEFAULT_AGREE_PX) -> Landmarks2D:
    """Fuse several backends' landmarks of the same person, landmark by landmark.

    For each name: the most confident backend's position is the anchor; the backends whose positions lie
    within ``agree_px`` of it are averaged, weighted by confidence; the others are outvoted. When only the
    anchor agrees with itself, its position is kept. The fused confidence is the anchor's (the maximum).

    Convention: all results must be in the same pixel grid (see the module docstring); names are the
    union, in order of first appearance.

    Args:
        results: one or more :class:`Landmarks2D`.
        agree_px: agreement radius in pixels.

    Returns:
        The fused landmarks; ``backend`` is ``"+".join`` of the inputs' backends and ``score`` the maximum.

    Raises:
        ValueError: no results, a non-positive ``agree_px``, or results with different ``image_shape``.

    Example:
        >>> a = Landmarks2D(names=("nose",), uv_px=[[10.0, 20.0]], confidence=[0.9], backend="a")
        >>> b = Landmarks2D(names=("nose",), uv_px=[[13.0, 20.0]], confidence=[0.3], backend="b")
        >>> fuse_landmarks([a, b]).uv("nose").tolist()
        [10.75, 20.0]
    """
    results = list(results)
    if not results:
        raise ValueError("fuse_landmarks needs at least one Landmarks2D, got none")
    if not (math.isfinite(agree_px) and agree_px > 0):
        raise ValueError(f"agree_px must be a positive number of pixels, got {agree_px}")
    shapes = {r.image_shape for r in results if r.image_shape is not None}
    if len(shapes) > 1:
        raise ValueError(f"cannot fuse landmarks from different pixel grids: image shapes {sorted(shapes)}")
    names: list[str] = []
    for r in results:
        names.extend(n for n in r.names if n not in names)
    uv_out = np.full((len(names), 2), np.nan)
    conf_out = np.zeros(len(names))
    for j, name in enumerate(names):
        cands = [
            (r.uv_px[i], r.confidence[i])
            for r in results
            if name in r.names
            for i in [r.names.index(name)]
            if r.confidence[i] > 0 and np.all(np.isfinite(r.uv_px[i]))
        ]
        if not cands:
            continue
        uv = np.array([c[0] for c in cands])
        conf = np.array([c[1] for c in cands])
        anchor = int(np.argmax(conf))
        agree = np.linalg.norm(uv - uv[anchor], axis=1) <= agree_px
        uv_out[j] = (conf[agree, None] * uv[agree]).sum(axis=0) / conf[agree].sum()
        conf_out[j] = conf[anchor]
    backends: list[str] = []
    for r in results:
        backends.extend(b for b in r.backend.split("+") if b not in backends)
    return Landmarks2D(
        names=tuple(names),
        uv_px=uv_out,
        confidence=conf_out,
        backend="+".join(backends),
        score=max(float(r.score or 0.0) for r in results),
        image_shape=next(iter(shapes)) if shapes else None,
    )
