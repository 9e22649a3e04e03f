"""The isocenter: the centre of the patient's body cross-sections over a scan range, from what the ceiling
camera sees (the upper surface, the table top) and a cross-section shape model fitted on simulated bodies.

A body lying on the table is not an ellipse centred at half its visible height: the back flattens on the
mattress, the mattress gives way under it (more for heavier patients), the lumbar spine arches off the
table, the sides bulge beyond the part of the body seen from above. A naive estimate (table top plus
half the visible height) was off by a median of 6-9 mm vertically (REFERENCES.md). The model here
predicts, per 10 mm profile slice, the height of the true cross-section centroid above the table top:

    centroid_z - table_z = sum_j B_j(u) * (c_j0 + c_j1 e + c_j2 h + c_j3 A / w + c_j4 H_T + c_j5 W_T + c_j6 D
                                           + c_j7 C)

with, for the slice,

* ``h``: the anterior surface height above the table (:attr:`SurfaceProfile.height_mm`),
* ``w``: its width (:attr:`SurfaceProfile.width_mm`),
* ``A``: the area under the visible upper envelope (the points' median height in 10 mm lateral cells,
  integrated across the slice), ``e``: that envelope's own centroid height (``int e(x)^2 / 2 / A``),

for the patient, ``H_T`` and ``W_T``: the median ``h`` and ``w`` over the trunk (between the hip and the
shoulder keypoints; they stand in for body habitus and hence mattress sink and tissue flattening),
``D``: how far the mattress dips just beside the body (soft foam pulled down around a sinking body; the
one visible trace of how deep the unseen back lies; :func:`~positioning.perception.profile.support_dip_mm`),
``C``: the share of the slice seen under a blanket (the blanket's top is not the body's), and
``B_j(u)`` piecewise-linear "hat" functions of the slice's position along the body
``u = (s - s_hips) / (s_shoulders - s_hips)`` (0 at the hips, 1 at the shoulders, ``s`` along the
superior axis), knots at :data:`KNOTS`. Coefficients are fitted separately for supine, prone and
lateral decubitus patients (Huber loss, 10 mm), plus a position-free fallback (``u`` unknown) with the
features ``1, e, h, A / w``. They live in ``models/isocenter_model.json``; the model card
``models/isocenter_model.md`` gives the training data and residuals; ``python -m
positioning.evaluation.isocenter_fit`` refits them.

Laterally the isocenter is the envelope-area-weighted mean over the range of the slices' envelope
centroids (on the training sessions: median 1.9-2.1 mm, p95 7-8 mm over chest, abdomen and pelvis
ranges, against 12-15 mm p95 for the centre of the lateral extent, which an arm beside the body pulls).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up, origin at the isocenter), mm.
Profile slice ``k`` covers ``y_mm[k] +- slice_mm / 2``. A scan range ``(lo, hi)`` uses the slices whose
centres lie in ``[lo, hi]``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from positioning import resources
from positioning.perception.profile import SurfaceProfile, freeze_slice_arrays
from positioning.perception.table import TableEstimate
from positioning.planning.anatomy import POSTURE_GROUPS, posture_group

__all__ = [
    "KNOTS",
    "REGION_FEATURES",
    "GLOBAL_FEATURES",
    "SliceFeatures",
    "IsocenterModel",
    "IsocenterEstimate",
    "default_isocenter_model_path",
    "load_isocenter_model",
    "posture_group",
    "slice_features",
    "body_coordinate",
    "hat_basis",
    "design_matrix",
    "predict_centroids",
    "isocenter_over",
    "naive_isocenter_z",
]

#: Knots of the hat basis in body coordinates ``u`` (0 = hips, 1 = shoulders).
KNOTS: tuple[float, ...] = (-2.5, -1.5, -0.75, -0.35, -0.1, 0.1, 0.3, 0.5, 0.75, 1.0, 1.25, 1.75, 2.5)
#: Per-knot features of the full model.
REGION_FEATURES: tuple[str, ...] = (
    "1", "envelope_z", "height", "area_over_width", "trunk_height", "trunk_width", "support_dip", "covered",
)  # fmt: skip
#: Features of the position-free fallback.
GLOBAL_FEATURES: tuple[str, ...] = ("1", "envelope_z", "height", "area_over_width")
ISOCENTER_SCHEMA = "positioning.planning.isocenter/3"
#: Slices lower than this above the table are noise, not body.
MIN_SLICE_HEIGHT_MM = 20.0
#: Lateral cell of the envelope (mm).
ENVELOPE_CELL_MM = 10.0
#: Trunk region (in ``u``) for the habitus features.
TRUNK_U = (0.0, 1.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SliceFeatures:
    """What the shape model reads, per profile slice.

    Convention: scanner frame (IEC 61217), mm; arrays ``(K,)`` aligned with the profile's slices; NaN
    where a slice is empty or lower than :data:`MIN_SLICE_HEIGHT_MM`.

    Attributes:
        y_mm: slice centres.
        slice_mm: slice length.
        table_z_mm: table plane z at the slice's midline.
        height_mm: anterior surface height above the table (profile ``height_mm``).
        width_mm: lateral extent.
        midline_x_mm: centre of the lateral extent.
        envelope_area_mm2: area under the visible upper envelope.
        envelope_z_mm: centroid height of that area above the table.
        envelope_x_mm: its lateral centroid (the lateral centroid estimate of the slice).
        top_z_mm: z of the anterior surface (profile ``top_z_mm``).
        x_min_mm, x_max_mm: lateral extent.
        support_dip_mm: how far the table dips just beside the body (one value for the patient;
            :func:`~positioning.perception.profile.support_dip_mm`; 0 when not measured).
        covered: ``(K,)`` share of the slice's points seen under a blanket (0 when not known).
    """

    y_mm: np.ndarray
    slice_mm: float
    table_z_mm: np.ndarray
    height_mm: np.ndarray
    width_mm: np.ndarray
    midline_x_mm: np.ndarray
    envelope_area_mm2: np.ndarray
    envelope_z_mm: np.ndarray
    envelope_x_mm: np.ndarray
    top_z_mm: np.ndarray
    x_min_mm: np.ndarray
    x_max_mm: np.ndarray
    support_dip_mm: float = 0.0
    covered: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.covered is None:
            object.__setattr__(self, "covered", np.zeros(len(self.y_mm)))
        freeze_slice_arrays(self)

    def __len__(self) -> int:
        return len(self.y_mm)

    @property
    def valid(self) -> np.ndarray:
        """``(K,)`` bool: slices with every feature."""
        return (
            np.isfinite(self.height_mm)
            & np.isfinite(self.width_mm)
            & np.isfinite(self.envelope_z_mm)
            & np.isfinite(self.table_z_mm)
        )


def slice_features(
    profile: SurfaceProfile,
    points_mm: np.ndarray | None = None,
    table: TableEstimate | None = None,
    *,
    support_dip_mm: float = float("nan"),
    covered_share: np.ndarray | None = None,
) -> SliceFeatures:
    """Per-slice features of the shape model from a surface profile and the patient's points.

    The envelope: per slice, the points are binned into :data:`ENVELOPE_CELL_MM` lateral cells; a cell's
    height is the median height of its points above the table plane (at least 3 points); ``A`` sums
    height x cell width, ``e`` is ``sum(height^2 / 2) / sum(height)``. Without points (or table) the
    envelope is approximated from the profile alone (a half-ellipse of the slice's height and width:
    ``A = pi h w / 4``, ``e = 4 h / (3 pi)``).

    Convention: scanner frame (IEC 61217), mm; slices as in ``profile``.

    Args:
        profile: the surface profile.
        points_mm: ``(N, 3)`` patient points of the same frame (scanner frame).
        table: the table estimate of the same frame.
        support_dip_mm: how far the table dips beside the body (NaN when not measured: taken as 0).
        covered_share: ``(K,)`` per slice, the share of its points under a blanket (None: 0).

    Returns:
        The features (see :class:`SliceFeatures`).

    Raises:
        ValueError: ``points_mm`` is not ``(N, 3)``.
    """
    k_n = len(profile)
    h = np.asarray(profile.height_mm, np.float64).copy()
    w = np.asarray(profile.width_mm, np.float64).copy()
    low = ~(h >= MIN_SLICE_HEIGHT_MM)
    h[low] = np.nan
    w[low] = np.nan
    area = np.full(k_n, np.nan)
    env_z = np.full(k_n, np.nan)
    env_x = np.full(k_n, np.nan)
    if points_mm is not None and table is not None and len(points_mm) and k_n:
        p = np.asarray(points_mm, np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points_mm must be (N, 3), got {p.shape}")
        y0 = profile.y_mm[0] - profile.slice_mm / 2
        k = np.floor((p[:, 1] - y0) / profile.slice_mm).astype(np.int64)
        inside = (k >= 0) & (k < k_n) & np.all(np.isfinite(p), axis=1)
        p, k = p[inside], k[inside]
        cell = ENVELOPE_CELL_MM
        xi = np.floor(p[:, 0] / cell).astype(np.int64)
        x0 = int(xi.min(initial=0))
        n_x = int(xi.max(initial=0)) - x0 + 1
        key = k * n_x + (xi - x0)
        order = np.lexsort((p[:, 2], key))
        key_s, z_s = key[order], p[order, 2]
        uniq, start, count = np.unique(key_s, return_index=True, return_counts=True)
        med = z_s[start + count // 2]
        good = count >= 3
        kk = uniq[good] // n_x
        x_sum_cell = np.bincount(np.searchsorted(uniq, key), weights=p[:, 0], minlength=len(uniq))
        xx = (x_sum_cell / count)[good]  # mean x of the cell's points (no half-cell bias)
        e = np.clip(med[good] - table.z_at(xx, profile.y_mm[kk]), 0.0, None)
        a_sum = np.bincount(kk, e * cell, minlength=k_n)
        m_sum = np.bincount(kk, e * e / 2 * cell, minlength=k_n)
        x_sum = np.bincount(kk, xx * e * cell, minlength=k_n)
        with np.errstate(invalid="ignore", divide="ignore"):
            area = np.where(a_sum > 0, a_sum, np.nan)
            env_z = m_sum / area
            env_x = x_sum / area
    else:
        area = math.pi * h * w / 4
        env_z = 4 * h / (3 * math.pi)
        env_x = np.asarray(profile.midline_x_mm, np.float64).copy()
    area[low] = np.nan
    env_z[low] = np.nan
    return SliceFeatures(
        y_mm=np.asarray(profile.y_mm, np.float64).copy(),
        slice_mm=float(profile.slice_mm),
        table_z_mm=np.asarray(profile.table_z_mm, np.float64).copy(),
        height_mm=h,
        width_mm=w,
        midline_x_mm=np.asarray(profile.midline_x_mm, np.float64).copy(),
        envelope_area_mm2=area,
        envelope_z_mm=env_z,
        envelope_x_mm=env_x,
        top_z_mm=np.asarray(profile.top_z_mm, np.float64).copy(),
        x_min_mm=np.asarray(profile.x_min_mm, np.float64).copy(),
        x_max_mm=np.asarray(profile.x_max_mm, np.float64).copy(),
        support_dip_mm=float(support_dip_mm) if math.isfinite(support_dip_mm) else 0.0,
        covered=np.zeros(k_n)
        if covered_share is None
        else np.nan_to_num(np.asarray(covered_share, np.float64)),
    )


def body_coordinate(y_mm: np.ndarray, shoulders_y_mm: float, hips_y_mm: float) -> np.ndarray:
    """``u = (y - y_hips) / (y_shoulders - y_hips)``: 0 at the hips, 1 at the shoulders (any head direction).

    Convention: scanner y, mm; ``u`` is dimensionless, > 1 toward the head, < 0 toward the feet.
    """
    d = shoulders_y_mm - hips_y_mm
    if not (math.isfinite(d) and abs(d) > 1.0):
        raise ValueError(f"shoulders and hips must be apart along y, got {shoulders_y_mm}, {hips_y_mm}")
    return (np.asarray(y_mm, np.float64) - hips_y_mm) / d


def hat_basis(u: np.ndarray, knots: tuple[float, ...] = KNOTS) -> np.ndarray:
    """``(K, len(knots))`` piecewise-linear hat functions of ``u`` (clamped at the end knots; rows sum
    to 1)."""
    kn = np.asarray(knots, np.float64)
    uc = np.clip(np.asarray(u, np.float64), kn[0], kn[-1])
    i = np.clip(np.searchsorted(kn, uc) - 1, 0, len(kn) - 2)
    t = (uc - kn[i]) / (kn[i + 1] - kn[i])
    b = np.zeros((len(uc), len(kn)))
    b[np.arange(len(uc)), i] = 1 - t
    b[np.arange(len(uc)), i + 1] = t
    return b


def _trunk_habitus(f: SliceFeatures, u: np.ndarray) -> tuple[float, float]:
    sel = f.valid & (u >= TRUNK_U[0]) & (u <= TRUNK_U[1])
    if sel.sum() < 3:
        sel = f.valid
    if not sel.any():
        return math.nan, math.nan
    return float(np.median(f.height_mm[sel])), float(np.median(f.width_mm[sel]))


def design_matrix(f: SliceFeatures, u: np.ndarray | None) -> np.ndarray:
    """The model's design matrix: ``(K, len(KNOTS) * len(REGION_FEATURES))`` with ``u``, or
    ``(K, len(GLOBAL_FEATURES))`` without (rows of invalid slices are NaN)."""
    one = np.ones(len(f))
    a_over_w = f.envelope_area_mm2 / f.width_mm
    base = [one, f.envelope_z_mm, f.height_mm, a_over_w]
    if u is None:
        return np.column_stack(base)
    ht, wt = _trunk_habitus(f, u)
    cols = [*base, np.full(len(f), ht), np.full(len(f), wt), np.full(len(f), f.support_dip_mm), f.covered]
    b = hat_basis(u)
    return np.column_stack([b[:, j] * c for j in range(b.shape[1]) for c in cols])


@dataclasses.dataclass(frozen=True, kw_only=True)
class IsocenterModel:
    """Coefficients of the cross-section shape model (see the module docstring).

    Attributes:
        region: posture group -> ``(len(KNOTS) * len(REGION_FEATURES),)`` coefficients (knot-major).
        fallback: posture group -> ``(len(GLOBAL_FEATURES),)`` coefficients.
        source: the model file, or ``"built-in"``.
        info: training metadata and residuals from the file.
    """

    region: Mapping[str, np.ndarray]
    fallback: Mapping[str, np.ndarray]
    source: str = "built-in"
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n_r, n_g = len(KNOTS) * len(REGION_FEATURES), len(GLOBAL_FEATURES)
        for g in POSTURE_GROUPS:
            if g not in self.region or g not in self.fallback:
                raise ValueError(f"isocenter model lacks the posture group {g!r}")
            if np.shape(self.region[g]) != (n_r,) or np.shape(self.fallback[g]) != (n_g,):
                raise ValueError(
                    f"isocenter model group {g!r}: need {n_r} region and {n_g} fallback coefficients, got "
                    f"{np.shape(self.region[g])} and {np.shape(self.fallback[g])}"
                )

    def to_json(self) -> dict[str, Any]:
        """The model file's coefficient part."""
        return {
            "knots": list(KNOTS),
            "region_features": list(REGION_FEATURES),
            "global_features": list(GLOBAL_FEATURES),
            "region": {g: [round(float(c), 8) for c in v] for g, v in self.region.items()},
            "fallback": {g: [round(float(c), 8) for c in v] for g, v in self.fallback.items()},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], *, source: str = "") -> IsocenterModel:
        if doc.get("schema") != ISOCENTER_SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r}, expected {ISOCENTER_SCHEMA!r}")
        if tuple(doc["knots"]) != KNOTS or tuple(doc["region_features"]) != REGION_FEATURES:
            raise ValueError("knots or features differ from this code's; refit the model")
        return cls(
            region={g: np.asarray(v, np.float64) for g, v in doc["region"].items()},
            fallback={g: np.asarray(v, np.float64) for g, v in doc["fallback"].items()},
            source=source,
            info=dict(doc.get("training", {})),
        )

    @classmethod
    def half_ellipse(cls) -> IsocenterModel:
        """A physics-only stand-in (no fit): the centroid at 45 % of the visible height, everywhere."""
        region = np.zeros((len(KNOTS), len(REGION_FEATURES)))
        region[:, 2] = 0.45
        fallback = np.zeros(len(GLOBAL_FEATURES))
        fallback[2] = 0.45
        return cls(
            region={g: region.ravel().copy() for g in POSTURE_GROUPS},
            fallback={g: fallback.copy() for g in POSTURE_GROUPS},
        )


def default_isocenter_model_path() -> Path:
    """``models/isocenter_model.json`` in the repository."""
    return resources.models_dir() / "isocenter_model.json"


_MODEL_CACHE: dict[str, IsocenterModel] = {}


def load_isocenter_model(path: str | Path | None = None) -> IsocenterModel:
    """Load the fitted shape model (cached per path); :meth:`IsocenterModel.half_ellipse` when the default
    file is absent.

    Raises:
        ValueError: the file is not a valid model (a given ``path`` must exist).
    """
    p = Path(path) if path is not None else default_isocenter_model_path()
    key = str(p)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    if not p.is_file():
        if path is not None:
            raise ValueError(f"isocenter model file not found: {p}")
        return IsocenterModel.half_ellipse()
    try:
        model = IsocenterModel.from_json(json.loads(p.read_text()), source=str(p))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p} is not a valid isocenter model: {e}") from e
    _MODEL_CACHE[key] = model
    return model


def predict_centroids(
    f: SliceFeatures,
    model: IsocenterModel,
    *,
    group: str = "supine",
    u: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice cross-section centroid estimates.

    Convention: scanner frame (IEC 61217), mm.

    Args:
        f: slice features.
        model: the shape model.
        group: posture group (:func:`posture_group`).
        u: ``(K,)`` body coordinates of the slices (:func:`body_coordinate`), or None for the fallback.

    Returns:
        ``(x_mm, z_mm)``, each ``(K,)``, NaN where a slice is invalid.
    """
    if group not in POSTURE_GROUPS:
        raise ValueError(f"group must be one of {POSTURE_GROUPS}, got {group!r}")
    x = design_matrix(f, u)
    coef = model.fallback[group] if u is None else model.region[group]
    above = x @ coef
    valid = f.valid
    z = np.where(valid, f.table_z_mm + above, np.nan)
    cx = np.where(valid, f.envelope_x_mm, np.nan)
    return cx, z


@dataclasses.dataclass(frozen=True, kw_only=True)
class IsocenterEstimate:
    """The isocenter of a region.

    Attributes:
        x_mm, z_mm: the mean slice centroid (scanner frame).
        y_center_mm: the region's centre along y.
        y_range_mm: ``(lo, hi)`` of the region.
        slices: slices averaged.
        coverage: share of the region's length covered by valid slices (0-1).
        naive_z_mm: table top plus half the anterior height, averaged the same way (the baseline).
    """

    x_mm: float
    z_mm: float
    y_center_mm: float
    y_range_mm: tuple[float, float]
    slices: int
    coverage: float
    naive_z_mm: float


def isocenter_over(
    f: SliceFeatures, x_mm: np.ndarray, z_mm: np.ndarray, lo_mm: float, hi_mm: float
) -> IsocenterEstimate | None:
    """Mean of the slice centroids whose centres lie in ``[lo_mm, hi_mm]`` (z: plain mean, as the
    isocenter is defined; x: weighted by the slices' envelope areas, which keeps thin slices, an arm
    beside the body, from pulling it).

    Convention: scanner frame (IEC 61217), mm.

    Returns:
        The estimate, or None when no valid slice lies in the range.
    """
    lo, hi = min(lo_mm, hi_mm), max(lo_mm, hi_mm)
    sel = (f.y_mm >= lo) & (f.y_mm <= hi) & np.isfinite(z_mm) & np.isfinite(x_mm)
    if not sel.any():
        return None
    n_expected = max(1.0, (hi - lo) / f.slice_mm)
    naive = f.table_z_mm[sel] + f.height_mm[sel] / 2
    w = np.nan_to_num(f.envelope_area_mm2[sel], nan=0.0)
    x = float(np.average(x_mm[sel], weights=w)) if w.sum() > 0 else float(np.mean(x_mm[sel]))
    return IsocenterEstimate(
        x_mm=x,
        z_mm=float(np.mean(z_mm[sel])),
        y_center_mm=0.5 * (lo + hi),
        y_range_mm=(lo, hi),
        slices=int(sel.sum()),
        coverage=float(min(1.0, sel.sum() / n_expected)),
        naive_z_mm=float(np.mean(naive)),
    )


def naive_isocenter_z(f: SliceFeatures, lo_mm: float, hi_mm: float) -> float:
    """The naive baseline: table top plus half the anterior surface height, averaged over the range
    (NaN when no slice lies in it)."""
    est = isocenter_over(f, f.midline_x_mm, f.table_z_mm + f.height_mm / 2, lo_mm, hi_mm)
    return math.nan if est is None else est.z_mm
