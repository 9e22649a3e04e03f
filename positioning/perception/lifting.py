"""Lift 2-D landmarks to 3-D: robust depth at each landmark, deprojection, the scanner frame, and a
per-landmark offset from the visible surface to the joint centre inside the body.

A 2-D pose model (MediaPipe BlazePose, COCO keypoints) places *joint centres* (shoulder, hip, knee, ...),
which lie inside the body, while the depth camera sees the body's *surface*. Lifting therefore runs in
three steps:

1. **Robust depth** (:func:`robust_depth_mm`): the valid depths in a small window around the landmark
   (optionally only those on a patient pixel mask) are split into clusters at depth gaps; the nearest
   cluster that holds enough of the window wins and its median is the surface depth. A landmark near the
   body's silhouette thus takes the body's depth, not the table's beyond it.
2. **Deprojection** (:func:`deproject_pixels`) of the sub-pixel landmark position at that z-depth, and the
   calibration's ``scanner_from_camera`` to the scanner frame: the *surface point*.
3. **Surface-to-joint offset** (:func:`joint_offsets_mm`, :func:`push_inward`): the point moves inward
   along the viewing ray (or straight down) until it has dropped ``delta`` mm in scanner z, with
   ``delta = clip(fraction * thickness, min_mm, max_mm)`` where ``thickness`` is the height of the surface
   point above the table top, when the table top is known, and ``delta = fixed_mm`` otherwise.

Offsets depend on the posture: prone, the face is hidden and the nose lies a head's depth below the
back of the head; in lateral decubitus the down-side landmarks lie far below the up-side surface. Lifting
runs before the posture is known and uses :data:`SUPINE_DEPTH_OFFSETS`; once the patient position is
known, :func:`reoffset_landmarks` with :func:`depth_offsets_for` recomputes the joint centres.

Calibration (never at run time): ``python tests/perception/test_lifting.py --calibrate`` simulates
sessions (seeds 200-205 x HFS, HFP, FFS, FFP x arms raised, sides, chest; seeds 200-202 x HFDL, HFDR,
FFDL, FFDR x raised, sides: 96 sessions, D435 at 848x480 about 1.85 m above the table), samples the depth
at each truth keypoint's projected pixel (so the fit describes the body, not the 2-D detector) on the
true patient pixels, and fits per landmark group and posture the ``(fraction, max_mm)`` that minimise the
mean of ``min(|delta - drop|, 60 mm)``, ``drop`` being the surface point's height above the truth
keypoint, or a constant when that fits better; ``fixed_mm`` is the median drop. The numbers and their
residuals are in :data:`_OFFSET_GROUPS`' block below.

Convention (every function here):
    * Millimetres. Depth is ``uint16`` z-depth in mm (distance along the optical axis, not ray length),
      0 = invalid.
    * Camera frame: RealSense depth optical frame (x right, y down, z forward). Pixel centres at integer
      coordinates, ``u = fx * x / z + ppx``, ``v = fy * y / z + ppy``; ``u`` column, ``v`` row; images
      ``(H, W)`` row-major. Landmark pixels are in the depth image's grid (colour aligned to depth).
    * Scanner frame: IEC 61217 fixed system (+x lateral, +y into the gantry, +z up; origin at isocenter),
      reached with ``Calibration.scanner_from_camera`` (camera -> scanner).
    * Landmark names: COCO-17, the patient's own left and right.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import numpy as np

from positioning.frames import Calibration, Intrinsics, RGBDFrame
from positioning.perception.landmarks.base import Landmarks2D, NamedLandmarks

__all__ = [
    "DepthOffset",
    "DEFAULT_DEPTH_OFFSETS",
    "SUPINE_DEPTH_OFFSETS",
    "PRONE_DEPTH_OFFSETS",
    "DECUBITUS_LEFT_DEPTH_OFFSETS",
    "DECUBITUS_RIGHT_DEPTH_OFFSETS",
    "GENERIC_DEPTH_OFFSET",
    "depth_offsets_for",
    "LiftSettings",
    "Landmarks3D",
    "nearest_cluster_median",
    "robust_depth_mm",
    "deproject_pixels",
    "joint_offsets_mm",
    "push_inward",
    "lift_points",
    "lift_landmarks",
    "reoffset_landmarks",
]

OffsetDirection = Literal["ray", "down"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DepthOffset:
    """How far a landmark's joint centre lies below the visible surface, in scanner z.

    Convention: ``delta = clip(fraction * thickness_mm, min_mm, max_mm)`` when the table-top height is
    known, ``thickness_mm`` being the surface point's height above the table top (scanner z, mm);
    ``delta = fixed_mm`` when it is not. The surface point then drops by ``delta`` mm in scanner z.

    Attributes:
        fraction: share of the local body thickness (surface to table top), in [0, 1].
        max_mm: upper bound of ``delta`` (mm) with a known table top (thin limbs on a thick trunk, e.g.
            hands on the chest, must not sink to the trunk's middle).
        fixed_mm: ``delta`` (mm) without a table top.
        min_mm: lower bound of ``delta`` (mm) with a known table top.
    """

    fraction: float
    max_mm: float
    fixed_mm: float
    min_mm: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.fraction <= 1.0):
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")
        if not (0.0 <= self.min_mm <= self.max_mm) or self.fixed_mm < 0:
            raise ValueError(
                f"need 0 <= min_mm <= max_mm and fixed_mm >= 0, got min_mm={self.min_mm}, "
                f"max_mm={self.max_mm}, fixed_mm={self.fixed_mm}"
            )

    def delta_mm(self, thickness_mm: np.ndarray | float | None) -> np.ndarray:
        """``delta`` in mm for one or more thicknesses (None or NaN: :attr:`fixed_mm`)."""
        if thickness_mm is None:
            return np.asarray(self.fixed_mm, dtype=np.float64)
        t = np.asarray(thickness_mm, dtype=np.float64)
        d = np.clip(self.fraction * np.maximum(t, 0.0), self.min_mm, self.max_mm)
        return np.where(np.isfinite(t), d, self.fixed_mm)


#: Offset of a landmark without an entry (heels, toes, anything extra): none, the surface point is kept.
GENERIC_DEPTH_OFFSET = DepthOffset(fraction=0.0, max_mm=0.0, fixed_mm=0.0)

_GROUPS = ("nose", "eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def _offset(fraction: float, max_mm: float, fixed_mm: float, min_mm: float = 0.0) -> DepthOffset:
    return DepthOffset(fraction=fraction, max_mm=max_mm, fixed_mm=fixed_mm, min_mm=min_mm)


#: Calibrated offset groups ``(fraction, max_mm, fixed_mm[, min_mm])`` per posture; the numbers are
#: pasted from ``python tests/perception/test_lifting.py --calibrate`` (see the module docstring), with
#: its residuals ``|delta - true drop|`` (median / p90, mm) in the comments.
# BEGIN CALIBRATED OFFSETS
_OFFSET_GROUPS: dict[str, dict[str, DepthOffset]] = {
    "supine": {
        "nose": _offset(0.00, 3.0, 3.0, 3.0),  # n=36, residual 13/21
        "eye": _offset(0.05, 15.0, 4.0),  # n=72, residual 9/20
        "ear": _offset(0.10, 20.0, 1.0),  # n=72, residual 22/47
        "shoulder": _offset(0.45, 90.0, 55.0),  # n=72, residual 12/25
        "elbow": _offset(0.30, 85.0, 42.0),  # n=72, residual 12/81
        "wrist": _offset(0.30, 35.0, 37.0),  # n=72, residual 17/94
        "hip": _offset(0.50, 110.0, 93.0),  # n=72, residual 5/17
        "knee": _offset(0.40, 75.0, 62.0),  # n=72, residual 9/14
        "ankle": _offset(0.45, 45.0, 37.0),  # n=72, residual 7/25
    },
    "prone": {
        "nose": _offset(0.00, 201.0, 201.0, 201.0),  # n=36, residual 14/46
        "eye": _offset(0.00, 149.0, 149.0, 149.0),  # n=72, residual 14/25
        "ear": _offset(0.75, 85.0, 26.0),  # n=72, residual 6/19
        "shoulder": _offset(0.50, 115.0, 82.0),  # n=72, residual 7/15
        "elbow": _offset(0.45, 45.0, 33.0),  # n=72, residual 12/31
        "wrist": _offset(0.90, 300.0, 219.0),  # n=72, residual 18/80
        "hip": _offset(0.40, 120.0, 113.0),  # n=72, residual 10/21
        "knee": _offset(0.25, 70.0, 57.0),  # n=72, residual 7/15
        "ankle": _offset(0.20, 60.0, 44.0),  # n=72, residual 8/21
    },
    "decubitus_up": {
        "nose": _offset(0.10, 25.0, 16.0),  # n=24, residual 13/31
        "eye": _offset(0.00, 4.0, 4.0, 4.0),  # n=24, residual 12/36
        "ear": _offset(0.05, 20.0, 22.0),  # n=24, residual 27/88
        "shoulder": _offset(0.00, 46.0, 46.0, 46.0),  # n=24, residual 9/15
        "elbow": _offset(0.10, 40.0, 38.0),  # n=24, residual 6/25
        "wrist": _offset(0.10, 25.0, 26.0),  # n=24, residual 11/30
        "hip": _offset(0.30, 120.0, 96.0),  # n=24, residual 9/26
        "knee": _offset(0.00, 58.0, 58.0, 58.0),  # n=24, residual 6/19
        "ankle": _offset(0.15, 50.0, 36.0),  # n=24, residual 8/26
    },
    "decubitus_down": {
        "nose": _offset(0.10, 25.0, 16.0),  # n=24, residual 13/31
        "eye": _offset(0.35, 100.0, 71.0),  # n=24, residual 13/29
        "ear": _offset(0.65, 265.0, 155.0),  # n=24, residual 14/26
        "shoulder": _offset(1.00, 400.0, 368.0),  # n=24, residual 18/28
        "elbow": _offset(0.75, 310.0, 356.0),  # n=24, residual 67/143
        "wrist": _offset(0.60, 225.0, 262.0),  # n=24, residual 73/172
        "hip": _offset(0.85, 320.0, 288.0),  # n=24, residual 3/6
        "knee": _offset(0.00, 265.0, 265.0, 265.0),  # n=24, residual 12/29
        "ankle": _offset(1.00, 255.0, 234.0),  # n=24, residual 7/48
    },
}
# END CALIBRATED OFFSETS


def _expand(left: dict[str, DepthOffset], right: dict[str, DepthOffset]) -> Mapping[str, DepthOffset]:
    out: dict[str, DepthOffset] = {}
    for g in _GROUPS:
        if g == "nose":
            out["nose"] = left["nose"]
        else:
            out[f"left_{g}"], out[f"right_{g}"] = left[g], right[g]
    return MappingProxyType(out)


#: Per-landmark offsets for a supine patient (the default: the posture is not known when lifting).
SUPINE_DEPTH_OFFSETS: Mapping[str, DepthOffset] = _expand(_OFFSET_GROUPS["supine"], _OFFSET_GROUPS["supine"])
#: Per-landmark offsets for a prone patient (the face is hidden: the nose lies a head's depth down).
PRONE_DEPTH_OFFSETS: Mapping[str, DepthOffset] = _expand(_OFFSET_GROUPS["prone"], _OFFSET_GROUPS["prone"])
#: Per-landmark offsets for a patient lying on the left side (left landmarks hidden, down).
DECUBITUS_LEFT_DEPTH_OFFSETS: Mapping[str, DepthOffset] = _expand(
    _OFFSET_GROUPS["decubitus_down"], _OFFSET_GROUPS["decubitus_up"]
)
#: Per-landmark offsets for a patient lying on the right side.
DECUBITUS_RIGHT_DEPTH_OFFSETS: Mapping[str, DepthOffset] = _expand(
    _OFFSET_GROUPS["decubitus_up"], _OFFSET_GROUPS["decubitus_down"]
)
#: The offsets :func:`lift_landmarks` uses unless told otherwise.
DEFAULT_DEPTH_OFFSETS: Mapping[str, DepthOffset] = SUPINE_DEPTH_OFFSETS


def depth_offsets_for(position: str | None) -> Mapping[str, DepthOffset]:
    """The calibrated offsets for a DICOM patient position code (supine ones for None or unknown codes).

    Args:
        position: ``"HFS"``, ``"HFP"``, ..., ``"FFDR"`` (a :class:`str` enum works), or None.

    Returns:
        :data:`SUPINE_DEPTH_OFFSETS`, :data:`PRONE_DEPTH_OFFSETS`, :data:`DECUBITUS_LEFT_DEPTH_OFFSETS` or
        :data:`DECUBITUS_RIGHT_DEPTH_OFFSETS`.
    """
    code = str(position or "")
    if code.endswith("DL"):
        return DECUBITUS_LEFT_DEPTH_OFFSETS
    if code.endswith("DR"):
        return DECUBITUS_RIGHT_DEPTH_OFFSETS
    if code.endswith("P"):
        return PRONE_DEPTH_OFFSETS
    return SUPINE_DEPTH_OFFSETS


@dataclasses.dataclass(frozen=True, kw_only=True)
class LiftSettings:
    """Settings of :func:`lift_landmarks`.

    Attributes:
        window_radius_px: half-size of the square depth window around a landmark (``2 r + 1`` pixels a
            side; 3 gives a window about 30 mm wide at 1.85 m with a D435 at 848x480).
        cluster_gap_mm: a depth gap larger than this splits the window's depths into clusters.
        min_cluster_fraction: the nearest cluster is taken when it holds at least this share of the
            window's valid depths (else the next one is tried).
        min_valid_px: fewest valid depths (and fewest in the chosen cluster) for a depth to be found.
        offsets: per-landmark :class:`DepthOffset`; landmarks without an entry use
            :data:`GENERIC_DEPTH_OFFSET`.
        offset_direction: ``"ray"`` moves the point along its viewing ray (the 2-D landmark is the
            projection of the joint, so the joint lies on that ray); ``"down"`` along scanner -z.
        min_ray_down_cos: with ``"ray"``, rays whose downward component (cosine to scanner -z) is below
            this fall back to ``"down"`` (a grazing ray would move the point sideways by a lot).
    """

    window_radius_px: int = 3
    cluster_gap_mm: float = 25.0
    min_cluster_fraction: float = 0.2
    min_valid_px: int = 3
    offsets: Mapping[str, DepthOffset] = dataclasses.field(default_factory=lambda: DEFAULT_DEPTH_OFFSETS)
    offset_direction: OffsetDirection = "ray"
    min_ray_down_cos: float = 0.5

    def __post_init__(self) -> None:
        if not (isinstance(self.window_radius_px, int | np.integer) and 0 <= self.window_radius_px <= 50):
            raise ValueError(f"window_radius_px must be an integer in [0, 50], got {self.window_radius_px!r}")
        if not (math.isfinite(self.cluster_gap_mm) and self.cluster_gap_mm > 0):
            raise ValueError(f"cluster_gap_mm must be positive, got {self.cluster_gap_mm}")
        if not (0.0 <= self.min_cluster_fraction <= 1.0):
            raise ValueError(f"min_cluster_fraction must be in [0, 1], got {self.min_cluster_fraction}")
        if self.min_valid_px < 1:
            raise ValueError(f"min_valid_px must be >= 1, got {self.min_valid_px}")
        if self.offset_direction not in ("ray", "down"):
            raise ValueError(f"offset_direction must be 'ray' or 'down', got {self.offset_direction!r}")
        if not (0.0 < self.min_ray_down_cos <= 1.0):
            raise ValueError(f"min_ray_down_cos must be in (0, 1], got {self.min_ray_down_cos}")

    def offset_for(self, name: str) -> DepthOffset:
        """The :class:`DepthOffset` of one landmark name."""
        return self.offsets.get(name, GENERIC_DEPTH_OFFSET)


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Landmarks3D(NamedLandmarks):
    """Named 3-D landmarks of one person, in the scanner frame.

    Convention: scanner frame (IEC 61217), mm. ``points_mm`` are joint-centre estimates (surface point
    pushed inward), ``surface_mm`` the visible surface points they came from; ``uv_px`` the depth-image
    pixels ``(u, v)`` that were sampled (pixel centres at integer coordinates). A landmark that could not
    be placed has NaN ``points_mm`` and ``surface_mm`` and confidence 0.

    Attributes:
        names: ``N`` unique landmark names (COCO-17 first when lifted from a COCO backend).
        points_mm: ``(N, 3)`` float64 joint-centre estimates (read-only).
        surface_mm: ``(N, 3)`` float64 visible surface points (read-only).
        confidence: ``(N,)`` float64 in [0, 1] (read-only).
        uv_px: ``(N, 2)`` float64 pixel positions sampled (read-only).
        backend: the 2-D backend's name.
        confidence_2d: ``(N,)`` the 2-D backend's confidence, kept where lifting failed (read-only;
            defaults to ``confidence``).
    """

    names: tuple[str, ...]
    points_mm: np.ndarray
    surface_mm: np.ndarray
    confidence: np.ndarray
    uv_px: np.ndarray
    backend: str = ""
    confidence_2d: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if len(set(names)) != len(names):
            raise ValueError(f"landmark names must be unique, got {names}")
        n = len(names)
        arrays = {}
        for field, width in (("points_mm", 3), ("surface_mm", 3), ("uv_px", 2)):
            a = np.array(getattr(self, field), dtype=np.float64)
            if a.shape != (n, width):
                raise ValueError(f"{field} must be ({n}, {width}) for {n} names, got {a.shape}")
            arrays[field] = a
        conf = np.array(self.confidence, dtype=np.float64)
        if conf.shape != (n,):
            raise ValueError(f"confidence must be ({n},) for {n} names, got {conf.shape}")
        if not np.all(np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
            raise ValueError(f"confidence must be finite and in [0, 1], got {conf.tolist()}")
        conf_2d = (
            conf.copy() if self.confidence_2d is None else np.array(self.confidence_2d, dtype=np.float64)
        )
        if conf_2d.shape != (n,) or not np.all((conf_2d >= 0) & (conf_2d <= 1)):
            raise ValueError(f"confidence_2d must be ({n},) in [0, 1], got {conf_2d.tolist()}")
        missing = ~np.all(np.isfinite(arrays["points_mm"]), axis=1)
        conf[missing] = 0.0
        arrays["points_mm"][missing] = np.nan
        for a in (*arrays.values(), conf, conf_2d):
            a.setflags(write=False)
        object.__setattr__(self, "names", names)
        for field, a in arrays.items():
            object.__setattr__(self, field, a)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "confidence_2d", conf_2d)

    def point(self, name: str) -> np.ndarray:
        """``(3,)`` joint-centre estimate of one landmark (scanner frame, mm; NaN if missing)."""
        return self.points_mm[self.index(name)].copy()

    def conf(self, name: str) -> float:
        """Confidence of one landmark (0 when absent)."""
        return float(self.confidence[self.names.index(name)]) if name in self.names else 0.0

    def valid(self, min_confidence: float = 0.0) -> np.ndarray:
        """``(N,)`` bool: finite point and confidence above ``min_confidence``."""
        return np.all(np.isfinite(self.points_mm), axis=1) & (self.confidence > min_confidence)

    def replace(self, **changes: object) -> Landmarks3D:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self, min_confidence: float = 0.0) -> dict[str, list[float]]:
        """``{name: [x_mm, y_mm, z_mm]}`` of the landmarks present with confidence above the threshold."""
        ok = self.valid(min_confidence)
        return {n: [float(c) for c in self.points_mm[i]] for i, n in enumerate(self.names) if ok[i]}


# ----------------------------------------------------------------------------------------- pure functions


def _check_depth(depth_mm: np.ndarray) -> None:
    if not isinstance(depth_mm, np.ndarray) or depth_mm.ndim != 2:
        raise ValueError(
            f"depth_mm must be a (H, W) array, got {type(depth_mm).__name__} "
            f"{getattr(depth_mm, 'shape', None)}"
        )
    if not (np.issubdtype(depth_mm.dtype, np.integer) or np.issubdtype(depth_mm.dtype, np.floating)):
        raise ValueError(f"depth_mm must be numeric (uint16 mm), got dtype {depth_mm.dtype}")


def _check_uv(uv_px: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv_px, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv_px must be (N, 2), got {uv.shape}")
    return uv


def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} != depth shape {shape}")
    return m.astype(bool, copy=False)


def nearest_cluster_median(
    depths_mm: np.ndarray, *, gap_mm: float, min_fraction: float, min_count: int
) -> float:
    """Median of the nearest depth cluster that holds enough samples, or NaN.

    Convention: depths in mm (z or any one-dimensional distance), all valid (> 0, finite).

    Args:
        depths_mm: ``(K,)`` valid depths.
        gap_mm: a gap larger than this between sorted depths starts a new cluster.
        min_fraction: a cluster qualifies when it holds at least this share of the samples...
        min_count: ...and at least this many.

    Returns:
        The median depth of the nearest qualifying cluster (NaN when there is none).
    """
    d = np.sort(np.asarray(depths_mm, dtype=np.float64))
    if len(d) < min_count:
        return math.nan
    cluster = np.concatenate([[0], np.cumsum(np.diff(d) > gap_mm)])
    need = max(min_count, min_fraction * len(d))
    for c in range(int(cluster[-1]) + 1):
        members = d[cluster == c]
        if len(members) >= need:
            return float(np.median(members))
    return math.nan


def robust_depth_mm(
    depth_mm: np.ndarray,
    uv_px: np.ndarray,
    *,
    radius_px: int = 3,
    mask: np.ndarray | None = None,
    gap_mm: float = 25.0,
    min_fraction: float = 0.2,
    min_valid: int = 3,
) -> np.ndarray:
    """Surface z-depth at sub-pixel positions: the nearest well-populated depth cluster in a window.

    Convention: ``depth_mm`` is ``(H, W)`` z-depth in mm, 0 (or NaN) invalid; ``uv_px`` ``(N, 2)`` pixel
    ``(u, v)`` with pixel centres at integer coordinates; the window is the ``(2 r + 1)^2`` pixels around
    the nearest pixel centre, clipped to the image.

    Args:
        depth_mm: the depth image.
        uv_px: ``(N, 2)`` positions; NaN rows give NaN.
        radius_px: window half-size in pixels.
        mask: optional ``(H, W)`` bool; only depths at True pixels are used (e.g. the patient's pixels).
        gap_mm: depth gap that separates clusters (body vs table behind it).
        min_fraction: share of the window's valid depths the chosen cluster must hold.
        min_valid: fewest valid depths needed.

    Returns:
        ``(N,)`` float64 z-depths in mm, NaN where no depth could be found (outside the image, all
        invalid, or too few samples).

    Raises:
        ValueError: bad shapes or dtypes.

    Example:
        >>> d = np.full((5, 5), 1500, np.uint16); d[:, 3:] = 1800
        >>> robust_depth_mm(d, np.array([[2.6, 2.0]]), radius_px=2).tolist()
        [1500.0]
    """
    _check_depth(depth_mm)
    uv = _check_uv(uv_px)
    m = _check_mask(mask, depth_mm.shape)
    h, w = depth_mm.shape
    r = int(radius_px)
    out = np.full(len(uv), np.nan)
    for i, (u, v) in enumerate(uv):
        if not (np.isfinite(u) and np.isfinite(v)):
            continue
        ui, vi = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
        if not (0 <= ui < w and 0 <= vi < h):
            continue
        v0, v1, u0, u1 = max(vi - r, 0), min(vi + r + 1, h), max(ui - r, 0), min(ui + r + 1, w)
        win = depth_mm[v0:v1, u0:u1].astype(np.float64)
        ok = np.isfinite(win) & (win > 0)
        if m is not None:
            ok &= m[v0:v1, u0:u1]
        out[i] = nearest_cluster_median(
            win[ok], gap_mm=gap_mm, min_fraction=min_fraction, min_count=min_valid
        )
    return out


def deproject_pixels(uv_px: np.ndarray, depth_z_mm: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Camera-frame points of sub-pixel positions at given z-depths.

    Convention: pixel centres at integer coordinates, ``x = (u - ppx) z / fx``, ``y = (v - ppy) z / fy``;
    ``z`` is the z-depth (along the optical axis, not ray length), mm; camera optical frame.

    Args:
        uv_px: ``(N, 2)`` pixel positions ``(u, v)``.
        depth_z_mm: ``(N,)`` z-depths in mm (NaN gives a NaN point).
        intrinsics: the depth stream's intrinsics.

    Returns:
        ``(N, 3)`` float64 camera-frame points in mm.

    Example:
        >>> k = Intrinsics(width=4, height=2, fx=2.0, fy=4.0, ppx=1.0, ppy=0.5)
        >>> deproject_pixels(np.array([[3.0, 0.0]]), np.array([1000.0]), k).tolist()
        [[1000.0, -125.0, 1000.0]]
    """
    return intrinsics.deproject(_check_uv(uv_px), depth_z_mm)


def joint_offsets_mm(
    names: Sequence[str],
    surface_z_mm: np.ndarray,
    *,
    table_top_z_mm: float | None = None,
    offsets: Mapping[str, DepthOffset] = DEFAULT_DEPTH_OFFSETS,
) -> np.ndarray:
    """Drop in scanner z (mm) from each landmark's surface point to its joint centre.

    Convention: scanner frame z (up), mm; see :class:`DepthOffset`.

    Args:
        names: landmark names.
        surface_z_mm: ``(N,)`` scanner z of the surface points.
        table_top_z_mm: scanner z of the table (mattress) top, or None.
        offsets: per-name offsets; names without one get :data:`GENERIC_DEPTH_OFFSET`.

    Returns:
        ``(N,)`` float64 drops, >= 0 (NaN where the surface z is NaN and a table top is given).
    """
    z = np.asarray(surface_z_mm, dtype=np.float64)
    if z.shape != (len(names),):
        raise ValueError(f"surface_z_mm must be ({len(names)},), got {z.shape}")
    thickness = None if table_top_z_mm is None else z - float(table_top_z_mm)
    out = np.empty(len(names))
    for i, name in enumerate(names):
        off = offsets.get(name, GENERIC_DEPTH_OFFSET)
        out[i] = off.delta_mm(None if thickness is None else thickness[i])
    return out


def push_inward(
    points_camera_mm: np.ndarray,
    drop_mm: np.ndarray,
    scanner_from_camera: np.ndarray,
    *,
    direction: OffsetDirection = "ray",
    min_ray_down_cos: float = 0.5,
) -> np.ndarray:
    """Move camera-frame points inward so that each drops ``drop_mm`` in scanner z; scanner-frame result.

    Convention: camera optical frame in, scanner frame (IEC 61217, z up) out, mm. ``"ray"`` moves along
    the ray from the camera centre through the point (further from the camera), by ``drop / cos`` where
    ``cos`` is the ray's downward cosine; rays with ``cos < min_ray_down_cos`` (and ``"down"``) move
    straight down in scanner -z.

    Args:
        points_camera_mm: ``(N, 3)`` surface points in the camera frame.
        drop_mm: ``(N,)`` drops in mm (>= 0).
        scanner_from_camera: ``(4, 4)`` camera -> scanner transform.
        direction: ``"ray"`` or ``"down"``.
        min_ray_down_cos: see above.

    Returns:
        ``(N, 3)`` float64 scanner-frame points.
    """
    p = np.asarray(points_camera_mm, dtype=np.float64)
    drop = np.asarray(drop_mm, dtype=np.float64)
    m = np.asarray(scanner_from_camera, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or drop.shape != (len(p),):
        raise ValueError(f"need (N, 3) points and (N,) drops, got {p.shape} and {drop.shape}")
    rot, t = m[:3, :3], m[:3, 3]
    surface = p @ rot.T + t
    down = np.array([0.0, 0.0, -1.0])
    if direction == "down":
        return surface + drop[:, None] * down
    with np.errstate(invalid="ignore", divide="ignore"):
        ray = p / np.linalg.norm(p, axis=1, keepdims=True)
        ray_s = ray @ rot.T
        cos = ray_s @ down
        grazing = ~(cos >= min_ray_down_cos)
        step = np.where(grazing, 0.0, drop / np.where(grazing, 1.0, cos))
    out = surface + step[:, None] * ray_s
    out[grazing] = surface[grazing] + drop[grazing, None] * down
    return out


def lift_points(
    names: Sequence[str],
    uv_px: np.ndarray,
    depth_mm: np.ndarray,
    intrinsics: Intrinsics,
    scanner_from_camera: np.ndarray,
    *,
    patient_mask: np.ndarray | None = None,
    table_top_z_mm: float | None = None,
    settings: LiftSettings = LiftSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Joint-centre and surface points (scanner frame) of named pixel positions.

    Convention: see the module docstring (z-depth, pixel centres at integers, scanner frame, mm).

    Args:
        names: ``N`` landmark names (select each one's :class:`DepthOffset`).
        uv_px: ``(N, 2)`` pixel positions in the depth image.
        depth_mm: ``(H, W)`` z-depth in mm, 0 = invalid.
        intrinsics: depth intrinsics, ``(height, width) == depth_mm.shape``.
        scanner_from_camera: ``(4, 4)`` camera -> scanner transform.
        patient_mask: optional ``(H, W)`` bool; depths are taken from these pixels only.
        table_top_z_mm: table (mattress) top in scanner z, or None (fixed offsets).
        settings: window, clustering and offsets.

    Returns:
        ``(points_mm, surface_mm)``, each ``(N, 3)`` float64 scanner-frame, NaN where no depth was found.
    """
    _check_depth(depth_mm)
    if depth_mm.shape != intrinsics.shape:
        raise ValueError(f"depth_mm shape {depth_mm.shape} != intrinsics (H, W) {intrinsics.shape}")
    uv = _check_uv(uv_px)
    if len(names) != len(uv):
        raise ValueError(f"{len(names)} names for {len(uv)} pixel positions")
    z = robust_depth_mm(
        depth_mm,
        uv,
        radius_px=settings.window_radius_px,
        mask=patient_mask,
        gap_mm=settings.cluster_gap_mm,
        min_fraction=settings.min_cluster_fraction,
        min_valid=settings.min_valid_px,
    )
    cam = deproject_pixels(uv, z, intrinsics)
    m = np.asarray(scanner_from_camera, dtype=np.float64)
    surface = cam @ m[:3, :3].T + m[:3, 3]
    drop = joint_offsets_mm(names, surface[:, 2], table_top_z_mm=table_top_z_mm, offsets=settings.offsets)
    points = push_inward(
        cam,
        np.nan_to_num(drop),
        m,
        direction=settings.offset_direction,
        min_ray_down_cos=settings.min_ray_down_cos,
    )
    return points, surface


def lift_landmarks(
    landmarks: Landmarks2D,
    frame: RGBDFrame,
    calibration: Calibration,
    *,
    patient_mask: np.ndarray | None = None,
    table_top_z_mm: float | None = None,
    settings: LiftSettings = LiftSettings(),
) -> Landmarks3D:
    """Lift 2-D landmarks (depth-image pixels) to 3-D joint-centre estimates in the scanner frame.

    Landmarks the backend did not place, or whose depth cannot be found, get NaN and confidence 0.

    Convention: ``landmarks`` are in the depth image's pixel grid (colour aligned to depth); output in the
    scanner frame (IEC 61217), mm; depth is z-depth. See the module docstring.

    Args:
        landmarks: 2-D landmarks from a backend.
        frame: the RGB-D frame (its depth and intrinsics are used).
        calibration: camera-to-scanner calibration.
        patient_mask: optional ``(H, W)`` bool patient pixels; depths only from there.
        table_top_z_mm: table (mattress) top in scanner z, or None for fixed offsets.
        settings: see :class:`LiftSettings`.

    Returns:
        :class:`Landmarks3D` with the same names, order and pixel positions.

    Raises:
        ValueError: the landmarks' image shape differs from the depth image's.

    Example:
        >>> lm3 = lift_landmarks(lm2, frame, calibration, table_top_z_mm=-150.0)  # doctest: +SKIP
        >>> lm3.point("left_hip")  # doctest: +SKIP
    """
    if landmarks.image_shape is not None and tuple(landmarks.image_shape) != frame.depth_mm.shape:
        raise ValueError(
            f"landmarks were found in a {landmarks.image_shape} image but the depth image is "
            f"{frame.depth_mm.shape}; lift needs colour aligned to depth"
        )
    points, surface = lift_points(
        landmarks.names,
        landmarks.uv_px,
        frame.depth_mm,
        frame.intrinsics,
        calibration.scanner_from_camera,
        patient_mask=patient_mask,
        table_top_z_mm=table_top_z_mm,
        settings=settings,
    )
    conf = np.where(np.all(np.isfinite(points), axis=1), landmarks.confidence, 0.0)
    return Landmarks3D(
        names=landmarks.names,
        points_mm=points,
        surface_mm=surface,
        confidence=conf,
        uv_px=landmarks.uv_px,
        backend=landmarks.backend,
        confidence_2d=landmarks.confidence,
    )


def reoffset_landmarks(
    landmarks: Landmarks3D,
    calibration: Calibration,
    *,
    offsets: Mapping[str, DepthOffset],
    table_top_z_mm: float | None = None,
    direction: OffsetDirection = "ray",
    min_ray_down_cos: float = 0.5,
) -> Landmarks3D:
    """Recompute the joint-centre estimates from the surface points with other offsets.

    Lifting runs before the patient position is known and uses the supine offsets; once the position is
    known (:mod:`positioning.perception.orientation`), call this with :func:`depth_offsets_for` of it.

    Convention: scanner frame (IEC 61217), mm; ``surface_mm`` is mapped back to the camera frame with
    ``calibration`` so that ``"ray"`` moves along the same viewing rays as :func:`lift_landmarks`.

    Args:
        landmarks: lifted landmarks (their ``surface_mm`` is kept).
        calibration: camera-to-scanner calibration.
        offsets: per-landmark offsets (e.g. ``depth_offsets_for("HFP")``).
        table_top_z_mm: table (mattress) top in scanner z, or None for fixed offsets.
        direction: ``"ray"`` or ``"down"``, as in :class:`LiftSettings`.
        min_ray_down_cos: as in :class:`LiftSettings`.

    Returns:
        A copy with new ``points_mm`` (NaN where the surface point is NaN).

    Example:
        >>> lm3 = reoffset_landmarks(lm3, calibration, offsets=depth_offsets_for("HFP"))  # doctest: +SKIP
    """
    surface = landmarks.surface_mm
    ok = np.all(np.isfinite(surface), axis=1)
    cam = calibration.to_camera(np.where(ok[:, None], surface, 0.0))
    drop = joint_offsets_mm(landmarks.names, surface[:, 2], table_top_z_mm=table_top_z_mm, offsets=offsets)
    points = push_inward(
        cam,
        np.nan_to_num(drop),
        calibration.scanner_from_camera,
        direction=direction,
        min_ray_down_cos=min_ray_down_cos,
    )
    points[~ok] = np.nan
    return landmarks.replace(points_mm=points)
