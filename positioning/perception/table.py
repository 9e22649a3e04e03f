"""The table top the patient lies on: a horizontal plane, its footprint, and why it was chosen.

Method:

1. The scanner-frame points in a broad height band (which excludes the floor of a CT room) are
   histogrammed by height; each of the strongest peaks proposes a slab of points.
2. A seeded RANSAC (MSAC) fits a roughly horizontal plane to the slab, and trimmed least squares from it
   iterates to a fixed point (so the result hardly depends on RANSAC's random start).
3. The plane's inliers fall into plan-view regions; regions that overlap laterally are one surface (a
   table top split by a patient lying across its full width), regions beside each other are separate
   surfaces (a stretcher parked alongside, the strips of a base wider than the top). Per surface, trimmed
   least squares within its region and about two noise sigmas iterates to a fixed point again, so neither
   the patient lying on it nor other surfaces at its height pull the plane (a thin line across it at its
   height, the gantry's front face, is opened away first).
4. Lateral edges: per y-slice the outermost inliers; candidates are the positions several slices agree
   on (the patient hides an edge, often over many slices, moving it inward; a limb over the edge moves
   it outward). The edge is the outermost candidate where the top continues inward (densely, or as a
   strip between the edge and a patient lying close to it), nothing much lower is seen just inward
   (else it is a limb beside the table) and what is seen outward lies far below (the floor); it is moved
   out by half a sample spacing. An edge the patient lies over everywhere is not seen: it is reported
   where the table top is last seen (a lower bound) and flagged. Ends: the extreme inliers along y.
5. A surface must be able to be a table top: tilt, width, length, area, at least one lateral edge seen,
   no lower surface seen through its footprint (the top is opaque; a broad chest or belly seen from above
   has the mattress beside it and between the legs below it), and a drop beside its seen edges (which a
   patch of body surface or a wall lacks).
6. *Support* chooses among the surfaces that pass: the table is the surface the patient lies on, the
   highest one with a body-like object resting on it (an object that lies mostly over it, meets it low
   down, as a body's flank or a blanket's hem does, and is not itself mostly a higher table-like surface).
   Not the lowest nor the widest: a base below the top, wider than it, carries the top, whose edge stands
   far above the base; a stretcher alongside carries nobody. With nobody on any surface (an empty table)
   the largest surface is the table. None: :class:`~positioning.perception.status.NoTableError` with every
   candidate's reason. :attr:`TableEstimate.considered` says which surfaces were considered and why one
   was chosen.

Size and height limits here are broad (a CT table top, a wide mattress on a low stand); what a site's own
table looks like is site data, checked against the result by :mod:`positioning.perception.table_model`.

What is seen is the mattress top (and a head holder level with it), not the carbon table top under it.
The RANSAC is seeded and single-threaded, so a frame always gives the same table (Open3D's
``segment_plane``, used before, is multi-threaded and returned different starting planes on the same
cloud, from which the refinement reached different tables).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up, origin at the isocenter), mm.
The plane is ``normal . p + offset_mm = 0`` with a unit ``normal`` pointing up (+z side), so
``normal . p + offset_mm`` is the signed height above the table top.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from positioning.perception.pointcloud import ScannerCloud
from positioning.perception.status import NoTableError, PerceptionStatus

__all__ = ["TableSettings", "TableEstimate", "find_table", "fit_plane_lsq", "DEFAULT_TABLE_SETTINGS"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableSettings:
    """Settings of :func:`find_table` (mm and degrees, scanner frame).

    Attributes:
        z_band_mm: heights (scanner z) where a table top may be: from a low bed (the floor of a CT room
            lies about 1000 mm below the isocenter) to a table raised above the isocenter.
        level: the table top is horizontal in the scanner frame (the calibration makes it so; only its
            height is fitted). False fits its tilt too (a calibration check measures it that way).
        max_tilt_deg: largest angle between the plane normal and +z when the tilt is fitted (a plane
            tilted more mixes layers and is levelled).
        histogram_bin_mm: bin width of the height histogram that proposes candidate planes.
        max_candidates: how many histogram peaks to try.
        max_surfaces_per_plane: how many plan-view surfaces of one plane to consider (largest first).
        candidate_window_mm: half-height of the slab around a peak handed to RANSAC.
        ransac_threshold_mm: RANSAC inlier distance (about 1.5 sigma of the depth noise at 1.8 m, D435).
        ransac_iterations: RANSAC iterations per candidate.
        ransac_max_points: the slab is thinned to at most this many points before RANSAC (speed).
        refine_iterations: most rounds of trimmed least squares.
        refine_sigmas: least-squares refinement keeps residuals within this many robust sigmas.
        refine_min_threshold_mm, refine_max_threshold_mm: bounds of that inlier threshold.
        grid_mm: plan-view raster cell for the footprint's connected region.
        region_min_length_mm: raster cells of the region must lie in a run at least this long along y
            (the table top runs along y; the gantry's front face crossing the table height does not).
        edge_slice_mm: slice length along y for the lateral edges.
        edge_min_slices, edge_min_support: an edge position needs this many slices, and this share of the
            best-supported position's slices, agreeing on it (within 7.5 mm).
        edge_inner_band_mm: an edge has table top this far inward of it (from, to) in the slices that
            agree on it (and a drop outward, see ``drop_strip_mm`` and ``drop_mm``).
        edge_inner_coverage: ... covering at least this share of the band's expected samples.
        edge_island_band_mm, edge_island_depth_mm: an edge candidate with a surface more than
            ``edge_island_depth_mm`` below the plane in view within ``edge_island_band_mm`` inward of it (the
            table's side, the floor) is an island beside the table (a limb over the edge), not its edge.
        edge_straight_min_slices: an edge candidate this many slices agree on, with the drop outward, is
            an edge even where only a thin strip of table top is seen inward of it (a patient close by);
            with nothing at all seen outward (the table's shadow), an edge needs this many slices.
        cover_mm: a surface this far above the plane outward of an edge candidate covers it (the patient
            lying over the edge): the edge is hidden there.
        edge_hidden_min_slices: a hidden edge is the outermost covered candidate that, with those beyond
            it, gathers at least this many slices (and half of the best-supported one's).
        end_rank: the ``end_rank``-th most extreme inlier along y is the end (robust to a few strays).
        width_range_mm: widths a supporting surface may have at all (a narrow CT top to a wide bed; the
            site's own table model is checked separately).
        min_length_mm: shortest plausible visible table length.
        min_area_mm2: smallest plausible visible table-top area (plan view).
        drop_strip_mm: the strips beside each lateral edge (from, to; mm outward) checked for a drop.
        drop_mm: how far below the plane a point beside the edge must be to count as a drop.
        drop_slice_mm: slice length along y for the drop test.
        min_drop_fraction: a table top needs at least this share of its y-slices to have a drop beside
            a seen edge (the floor; arms, legs, a person beside the table or the gantry cover the rest),
            among the slices where the camera sees anything beside the seen edges.
        see_through_inset_mm: (lateral, longitudinal) inset of the footprint for the see-through test.
        see_through_depth_mm: (from, to) depth below the plane of a surface seen through the footprint.
        max_see_through: largest share of the inset footprint's plan-view cells whose lowest point lies
            that deep (the table top is opaque; a body surface has the mattress beside it).
        stack_gap_mm: of two candidates that pass over the same footprint, one at least this much lower
            is the table and the other a body surface on it.
        border_px: an end whose inliers come this close to the image border may be cut by the view.
        seed: seed of the RANSAC sampling (numpy; the result is bit-reproducible).
        load_grid_mm: plan-view cell of the support test.
        load_rise_mm: heights above a surface (from, to) where an object resting on it is looked for (a
            patient lying on it, on the back or the side, is lower than a person leaning over it).
        load_max_jump_mm: neighbouring plan-view cells whose heights differ by more than this belong to
            different objects.
        load_min_area_mm2: smallest plan-view area of a body-like object (a small child lying down).
        load_min_height_mm: ... and its least rise above the surface.
        load_inside_fraction: share of the object that must lie over the surface's footprint.
        load_hull_margin_mm: (lateral, longitudinal) margin of that footprint (arms and blankets over the
            edges, feet beyond the end).
        contact_max_mm: an object's cell next to the surface meets it when it lies at most this high above
            it (a body's flank meets the mattress; a table top's edge stands far above its base).
        contact_min_share, contact_min_cells: an object rests on a surface when at least this share of
            its cells next to the surface (a quarter: a body's flank rises steeply from its lowest line),
            and this many, meet it.
        min_sagitta_mm: a curved top is taken for one when it rises at least this much over
            ``cradle_half_width_mm`` from its trough (fitted within ``cradle_reach_mm`` of its axis).
        cradle_reach_mm, cradle_half_width_mm: see ``min_sagitta_mm``.
        max_rest_height_mm: what the scene network sees lying on the support counts toward the top's
            lateral extent up to this height above it (:func:`table_on_support`).
        support_max_see_through: a surface a patient rests on has at most this share of its footprint
            showing a lower surface (a leaning person's back, a blanket's top show much more).
    """

    z_band_mm: tuple[float, float] = (-900.0, 250.0)
    level: bool = True
    max_tilt_deg: float = 3.0
    histogram_bin_mm: float = 10.0
    max_candidates: int = 6
    max_surfaces_per_plane: int = 3
    candidate_window_mm: float = 70.0
    ransac_threshold_mm: float = 30.0
    ransac_iterations: int = 100
    ransac_max_points: int = 2000
    refine_iterations: int = 20
    refine_sigmas: float = 2.0
    refine_min_threshold_mm: float = 15.0
    refine_max_threshold_mm: float = 45.0
    grid_mm: float = 20.0
    region_min_length_mm: float = 100.0
    edge_slice_mm: float = 20.0
    edge_min_slices: int = 5
    edge_min_support: float = 0.2
    edge_inner_band_mm: tuple[float, float] = (5.0, 35.0)
    edge_inner_coverage: float = 0.4
    edge_island_band_mm: float = 150.0
    edge_island_depth_mm: float = 50.0
    cover_mm: float = 30.0
    edge_hidden_min_slices: int = 10
    edge_straight_min_slices: int = 10
    see_through_inset_mm: tuple[float, float] = (30.0, 200.0)
    see_through_depth_mm: tuple[float, float] = (80.0, 450.0)
    max_see_through: float = 0.1
    stack_gap_mm: float = 50.0
    end_rank: int = 10
    width_range_mm: tuple[float, float] = (250.0, 2000.0)
    min_length_mm: float = 400.0
    min_area_mm2: float = 100_000.0
    drop_strip_mm: tuple[float, float] = (40.0, 140.0)
    drop_mm: float = 100.0
    drop_slice_mm: float = 50.0
    min_drop_fraction: float = 0.3
    border_px: int = 3
    seed: int = 0
    load_grid_mm: float = 20.0
    load_rise_mm: tuple[float, float] = (40.0, 650.0)
    load_max_jump_mm: float = 150.0
    load_min_area_mm2: float = 100_000.0
    load_min_height_mm: float = 60.0
    load_inside_fraction: float = 0.6
    load_hull_margin_mm: tuple[float, float] = (150.0, 400.0)
    contact_max_mm: float = 120.0
    contact_min_share: float = 0.25
    min_sagitta_mm: float = 6.0
    cradle_reach_mm: float = 320.0
    cradle_half_width_mm: float = 230.0
    max_rest_height_mm: float = 600.0
    contact_min_cells: int = 5
    support_max_see_through: float = 0.3

    def __post_init__(self) -> None:
        lo, hi = self.z_band_mm
        if not lo < hi:
            raise ValueError(f"z_band_mm must be (low, high) with low < high, got {self.z_band_mm}")
        if not 0 < self.max_tilt_deg < 90:
            raise ValueError(f"max_tilt_deg must be in (0, 90), got {self.max_tilt_deg}")
        if not self.width_range_mm[0] < self.width_range_mm[1]:
            raise ValueError(f"width_range_mm must be (min, max), got {self.width_range_mm}")
        if not 0 <= self.see_through_depth_mm[0] < self.see_through_depth_mm[1]:
            raise ValueError(
                f"see_through_depth_mm must be (from, to), 0 <= from < to, got {self.see_through_depth_mm}"
            )


DEFAULT_TABLE_SETTINGS = TableSettings()
_NO_TABLE = PerceptionStatus.NO_TABLE.message


@dataclasses.dataclass(frozen=True, kw_only=True)
class TableEstimate:
    """The table top found in one frame.

    Convention: scanner frame, mm; ``normal . p + offset_mm`` is the signed height of ``p`` above the table
    top (``normal`` unit, pointing up). Extents are of the visible top surface (mattress and head holder).

    Attributes:
        normal: ``(3,)`` unit plane normal, ``normal[2] > 0``.
        offset_mm: plane offset.
        top_z_mm: z of the plane at the footprint centre.
        x_min_mm, x_max_mm: lateral edges.
        y_min_mm, y_max_mm: longitudinal extent seen (foot-side end, gantry-side end).
        y_min_seen, y_max_seen: False when that end touches the image border (the table goes on out of
            view). An end hidden behind the gantry is not detected and reads True.
        x_min_seen, x_max_seen: False when that lateral edge is hidden under the patient (lying over it,
            off-centre or broad); the edge is then where the table top is last seen, a lower bound of
            the table's extent on that side (the true edge is at least that far out).
        inliers: number of plane inliers in the footprint region.
        rms_mm: RMS residual of those inliers about the plane (trimmed at about two sigma, so about 0.9
            times the depth noise sigma at the table).
        area_mm2: plan-view area of the visible top.
        pixels_vu: ``(inliers, 2)`` pixels (row, column) of the inliers, to draw the table on the image.
        supports_patient: a body-like object rests on it (False: chosen as the largest surface).
        considered: one line per surface considered (and per candidate rejected), saying why it was or
            was not chosen.
        sagitta_mm: how far a curved top rises from its centre line to its edges (0: flat); the plane is
            the centre line's.
        height_shift_mm: how far the top was moved from the geometric height (densest layer, cradle
            trough) by the scene network's reading of it (0: geometry alone).
    """

    normal: np.ndarray
    offset_mm: float
    top_z_mm: float
    x_min_mm: float
    x_max_mm: float
    y_min_mm: float
    y_max_mm: float
    y_min_seen: bool
    y_max_seen: bool
    x_min_seen: bool = True
    x_max_seen: bool = True
    inliers: int
    rms_mm: float
    area_mm2: float
    pixels_vu: np.ndarray
    supports_patient: bool = False
    considered: tuple[str, ...] = ()
    sagitta_mm: float = 0.0
    height_shift_mm: float = 0.0

    @property
    def geometry_top_z_mm(self) -> float:
        """The top's height from geometry alone (before any shift by the scene network)."""
        return self.top_z_mm - self.height_shift_mm

    @property
    def tilt_deg(self) -> float:
        """Angle between the plane normal and +z."""
        return float(np.degrees(np.arccos(np.clip(self.normal[2], -1.0, 1.0))))

    @property
    def width_mm(self) -> float:
        return self.x_max_mm - self.x_min_mm

    @property
    def centre_x_mm(self) -> float:
        return 0.5 * (self.x_min_mm + self.x_max_mm)

    def height_above_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed height of ``(..., 3)`` scanner-frame points above the table plane (mm)."""
        return np.asarray(points_mm, np.float64) @ self.normal + self.offset_mm

    def z_at(self, x_mm: np.ndarray | float, y_mm: np.ndarray | float) -> np.ndarray:
        """z of the table plane at scanner ``(x, y)`` (mm)."""
        n = self.normal
        return -(self.offset_mm + n[0] * np.asarray(x_mm) + n[1] * np.asarray(y_mm)) / n[2]


def fit_plane_lsq(points_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane ``z = a x + b y + c`` through points of a near-horizontal surface.

    Convention: any frame, mm; returns ``(normal, offset)`` with ``normal . p + offset = 0`` on the plane
    and the unit normal's z component positive.

    Args:
        points_mm: ``(N, 3)`` points, ``N >= 3``, not all collinear in x-y.

    Returns:
        ``(normal (3,), offset_mm)``.
    """
    p = np.asarray(points_mm, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
        raise ValueError(f"need (N >= 3, 3) points, got {p.shape}")
    c = p.mean(axis=0)
    q = p - c
    a = q[:, :2]
    coef, *_ = np.linalg.lstsq(a.T @ a, a.T @ q[:, 2], rcond=None)
    n = np.array([-coef[0], -coef[1], 1.0])
    n /= np.linalg.norm(n)
    return n, float(-n @ c)


def _ransac_plane(points_mm: np.ndarray, s: TableSettings) -> tuple[np.ndarray, float] | None:
    """MSAC plane (truncated squared residuals) among ``s.ransac_iterations`` planes through random point
    triples, only those within ``s.max_tilt_deg`` of horizontal; ``(normal, offset)`` with the normal
    pointing up, or None when no triple gives such a plane.

    Seeded with ``s.seed`` and single-threaded, so bit-reproducible (Open3D's multi-threaded
    ``segment_plane`` is not: on one cloud it returned planes 0.5 deg and 4 deg off, and the refinement
    below converged to two different tables from them)."""
    rng = np.random.default_rng(s.seed)
    p = np.asarray(points_mm, np.float64)
    tri = p[rng.integers(0, len(p), size=(s.ransac_iterations, 3))]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-6
    n[ok] /= norm[ok, None]
    n[n[:, 2] < 0] *= -1.0
    ok &= n[:, 2] >= np.cos(np.radians(s.max_tilt_deg))
    if not np.any(ok):
        return None
    n = n[ok]
    d = -np.einsum("ij,ij->i", n, tri[ok, 0])
    thr = s.ransac_threshold_mm
    cost = np.minimum(np.abs(p @ n.T + d), thr) ** 2
    best = int(np.argmin(cost.sum(axis=0)))
    return n[best], float(d[best])


def _densest_layer_mm(residual_mm: np.ndarray, half_window_mm: float, bin_mm: float = 4.0) -> float:
    """The most densely populated residual within +-``half_window_mm`` (the mode of a smoothed
    histogram): the surface's own layer, not a pillow, bolster or blanket lying on part of it."""
    r = residual_mm[np.abs(residual_mm) < half_window_mm]
    if len(r) == 0:
        return 0.0
    edges = np.arange(-half_window_mm, half_window_mm + bin_mm, bin_mm)
    hist, _ = np.histogram(r, bins=edges)
    kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    smooth = np.convolve(hist.astype(np.float64), kernel / kernel.sum(), mode="same")
    return float(0.5 * (edges[:-1] + edges[1:])[int(np.argmax(smooth))])


def _level_fit(
    points_mm: np.ndarray, n: np.ndarray, d: float, s: TableSettings
) -> tuple[np.ndarray, float, float] | None:
    """Refine a plane onto the densest layer of ``points_mm`` near it: the plane is moved to the mode of
    the residuals, the inlier band set from the noise about that mode, and the plane fitted again to a
    fixed point. With ``settings.level`` the plane is horizontal (only its height is fitted: the
    calibration makes the table horizontal, and a tilt fitted to a narrow, noisy strip of mattress beside
    a pillow or an arm board is mostly error); otherwise least squares, and a plane tilted beyond
    ``max_tilt_deg`` (a mixture of layers) is replaced by the horizontal one through the inliers' median.
    Returns ``(normal, offset, threshold)`` or None (too few points)."""
    thr = s.refine_max_threshold_mm
    prev = None
    for _ in range(s.refine_iterations):
        r = points_mm @ n + d
        mode = _densest_layer_mm(r, s.refine_max_threshold_mm)
        near = np.abs(r - mode) < s.refine_max_threshold_mm
        if np.count_nonzero(near) < 50:
            return None
        dev = r[near] - mode
        sigma = 1.4826 * float(np.median(np.abs(dev - np.median(dev))))
        thr = float(
            np.round(np.clip(s.refine_sigmas * sigma, s.refine_min_threshold_mm, s.refine_max_threshold_mm))
        )
        inl = np.abs(r - mode) < thr
        if inl.sum() < 50:
            return None
        if prev is not None and np.array_equal(inl, prev):
            break
        if s.level:
            n, d = np.array([0.0, 0.0, 1.0]), -float(np.median(points_mm[inl, 2]))
        else:
            n, d = fit_plane_lsq(points_mm[inl])
            if np.degrees(np.arccos(np.clip(n[2], -1, 1))) > s.max_tilt_deg:
                n, d = np.array([0.0, 0.0, 1.0]), -float(np.median(points_mm[inl, 2]))
        prev = inl
    return n, d, thr


def _height_peaks(z_mm: np.ndarray, s: TableSettings) -> list[float]:
    """Heights of the strongest peaks of the smoothed height histogram, strongest first."""
    lo, hi = s.z_band_mm
    edges = np.arange(lo, hi + s.histogram_bin_mm, s.histogram_bin_mm)
    hist, _ = np.histogram(z_mm, bins=edges)
    kernel = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    smooth = np.convolve(hist.astype(np.float64), kernel / kernel.sum())[2:-2]
    centres = 0.5 * (edges[:-1] + edges[1:])
    is_peak = np.r_[False, (smooth[1:-1] >= smooth[:-2]) & (smooth[1:-1] > smooth[2:]), False]
    order = np.argsort(-smooth[is_peak], kind="stable")
    peaks = centres[is_peak][order]
    strength = smooth[is_peak][order]
    out: list[float] = []
    for z, w in zip(peaks, strength, strict=True):
        if w < 0.1 * strength[0]:
            break
        if all(abs(z - q) >= s.candidate_window_mm for q in out):
            out.append(float(z))
        if len(out) == s.max_candidates:
            break
    return out


def _plan_regions(
    xy_mm: np.ndarray,
    grid_mm: float,
    min_length_mm: float = 0.0,
    blocked: tuple[_Raster, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label points by 8-connected plan-view region (raster of ``grid_mm`` cells, 3x3 closing, then an
    opening along y that keeps only runs at least ``min_length_mm`` long: the table top, even a narrow
    strip of it beside the patient, runs along y; a surface crossing the table height (the gantry's front
    face, a person's legs) leaves a thin line across it, which would join regions and widen them).
    ``blocked`` (a raster and its ``(rows, cols)`` bool cells) marks where the closing may not bridge:
    where the floor or a base is seen between two surfaces at one height.

    Returns ``(labels (N,) int, areas_mm2 (n_labels,))``, label 0 unused (points of removed cells).
    """
    cell = np.floor(xy_mm / grid_mm).astype(np.int64)
    origin = cell.min(axis=0)
    cell -= origin
    shape = (int(cell[:, 1].max()) + 1, int(cell[:, 0].max()) + 1)
    occ = np.zeros(shape, np.uint8)
    occ[cell[:, 1], cell[:, 0]] = 1
    closed = cv2.morphologyEx(occ, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    if blocked is not None:
        raster, cells = blocked
        cx = (origin[0] + np.arange(shape[1]) + 0.5) * grid_mm
        cy = (origin[1] + np.arange(shape[0]) + 0.5) * grid_mm
        c = np.clip(
            np.floor((cx - raster.origin[0]) / raster.grid_mm).astype(np.int64), 0, raster.shape[1] - 1
        )
        r = np.clip(
            np.floor((cy - raster.origin[1]) / raster.grid_mm).astype(np.int64), 0, raster.shape[0] - 1
        )
        closed &= ~cells[np.ix_(r, c)] | occ.astype(bool)
    occ = closed.astype(np.uint8)
    run = round(min_length_mm / grid_mm)
    if run > 1:  # rows of ``occ`` are y
        occ = cv2.morphologyEx(
            occ, cv2.MORPH_OPEN, np.ones((run, 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
    _, labels, stats, _ = cv2.connectedComponentsWithStats(occ, connectivity=8)
    return labels[cell[:, 1], cell[:, 0]], stats[:, cv2.CC_STAT_AREA].astype(np.float64) * grid_mm**2


def _region_groups(
    xy_mm: np.ndarray, scene: _Raster | None, top_h: np.ndarray | None, s: TableSettings
) -> list[tuple[np.ndarray, float]]:
    """The plan-view surfaces among one plane's inliers, largest first: ``[(point mask, area mm^2)]``.

    Regions of the plane are one surface when nothing far below the plane is seen between them: pieces of
    one table top left between the legs, beside the head or at the foot of a patient lying across its full
    width (the patient, above the plane, lies between them), or its head and foot ends (which overlap
    laterally). Regions with a drop between them (the floor, or a base seen in the gap) are separate
    surfaces: a stretcher parked alongside at the same height, the strips of a base wider than the top.
    A surface is at most ``width_range_mm[1]`` wide; each region only contributes its points within the
    surface's lateral extent, so a thin line of other surfaces crossing the plane (the gantry's front face)
    neither widens a surface nor keeps a piece of it out.

    Args:
        xy_mm: ``(N, 2)`` plan-view positions of the plane's inliers.
        scene: the scene's plan-view raster (None: only lateral overlap joins regions).
        top_h: ``scene.shape`` highest point per cell above the plane (-inf where nothing is seen).
        s: settings.
    """
    blocked = None if scene is None or top_h is None else (scene, top_h < -s.drop_mm)
    labels, areas = _plan_regions(xy_mm, s.grid_mm, s.region_min_length_mm, blocked)
    areas[0] = 0.0
    areas[np.bincount(labels, minlength=len(areas)) < 3] = 0.0  # regions the closing made, with no points
    if areas.max() <= 0.0:
        return []
    left = [int(lb) for lb in np.argsort(-areas, kind="stable") if areas[lb] >= 0.05 * areas.max()]
    x, y = xy_mm[:, 0], xy_mm[:, 1]
    tol = 3 * s.grid_mm
    groups = []
    while left:
        first = left.pop(0)
        main = labels == first
        lo, hi = np.quantile(x[main], [0.02, 0.98])
        keep = main & (x >= lo - tol) & (x <= hi + tol)
        area = areas[first]
        changed = True
        while changed:  # regions joined can connect others
            changed, rest = False, []
            for lab in left:
                sel = labels == lab
                q0, q1 = np.quantile(x[sel], [0.02, 0.98])
                lo_new = max(min(lo, q0), hi - s.width_range_mm[1])
                hi_new = min(max(hi, q1), lo + s.width_range_mm[1])
                inside = sel & (x >= lo_new - tol) & (x <= hi_new + tol)
                overlap = min(hi, q1) - max(lo, q0) > 0.5 * min(q1 - q0, hi - lo)
                joined = overlap or (
                    scene is not None
                    and top_h is not None
                    and not _drop_between(keep, sel, x, y, scene, top_h, s)
                )
                if joined and np.count_nonzero(inside) >= 0.5 * np.count_nonzero(sel):
                    keep |= inside
                    lo, hi = lo_new, hi_new
                    area += areas[lab] * np.count_nonzero(inside) / np.count_nonzero(sel)
                    changed = True
                else:
                    rest.append(lab)
            left = rest
        if area >= 0.25 * s.min_area_mm2:
            groups.append((keep, float(area)))
    return groups


def _drop_between(
    a: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    scene: _Raster,
    top_h: np.ndarray,
    s: TableSettings,
) -> bool:
    """Whether the scene drops far below the plane between two regions (masks over ``x``, ``y``) that lie
    side by side: in the rows (cells along y) both occupy, the cells between them whose highest point is
    more than ``drop_mm`` below the plane, among those seen at all. No shared rows: a drop (they are
    not side by side)."""
    g = scene.grid_mm
    ra = np.floor((y[a] - scene.origin[1]) / g).astype(np.int64)
    rb = np.floor((y[b] - scene.origin[1]) / g).astype(np.int64)
    ca = np.floor((x[a] - scene.origin[0]) / g).astype(np.int64)
    cb = np.floor((x[b] - scene.origin[0]) / g).astype(np.int64)
    rows = np.intersect1d(ra, rb)
    if len(rows) == 0:
        return True
    n_rows = scene.shape[0]
    a_min = np.full(n_rows, np.iinfo(np.int64).max)
    a_max = np.full(n_rows, -1)
    b_min, b_max = a_min.copy(), a_max.copy()
    np.minimum.at(a_min, ra, ca)
    np.maximum.at(a_max, ra, ca)
    np.minimum.at(b_min, rb, cb)
    np.maximum.at(b_max, rb, cb)
    low = high = 0
    for r in rows:
        c0, c1 = (a_max[r] + 1, b_min[r]) if a_max[r] < b_min[r] else (b_max[r] + 1, a_min[r])
        if c1 <= c0:
            continue
        h = top_h[r, max(c0, 0) : min(c1, scene.shape[1])]
        h = h[np.isfinite(h)]
        low += int(np.count_nonzero(h < -s.drop_mm))
        high += int(np.count_nonzero(h >= -s.drop_mm))
    return low > 0.3 * (low + high)


def _edge(
    values_mm: np.ndarray,
    slices: np.ndarray,
    outward: float,
    top_xk: tuple[np.ndarray, np.ndarray],
    scene_xkh: tuple[np.ndarray, np.ndarray, np.ndarray],
    spacing_mm: float,
    s: TableSettings,
    bin_mm: float = 5.0,
) -> tuple[float, bool]:
    """One lateral edge from the per-slice edge positions ``values_mm`` of ``slices``: ``(x_mm, seen)``.

    Candidates are the positions several slices agree on (modes of the per-slice values). The patient
    hides an edge, often over many slices, which moves it inward; a limb beside the table moves it
    outward. The edge is the outermost candidate that looks like one: in the slices that vote for it the
    table top continues inward of it (``top_xk``: table-top inliers' x and slice) and what the camera sees
    outward of it lies far below the plane (``scene_xkh``: all points' x, slice and height above the
    plane); where it sees nothing outward (the table's own shadow on the floor seen from an off-axis
    camera) nothing contradicts it, if ``edge_straight_min_slices`` agree on it; and nothing much lower
    is seen just inward of it (else it is an island beside the table: a limb over the edge). Tried in
    turn, outermost first:

    1. the table top continues densely inward (``edge_inner_coverage``), among the well-supported
       candidates (``edge_min_support``): a limb's flank at table height covers little;
    2. among all candidates not inward of the best-supported one, a thin strip of table top (two
       samples per slice in the inner band) or a straight edge (``edge_straight_min_slices`` agreeing):
       the mattress left visible between the edge and a patient lying close to it;
    3. the edge is hidden (``seen`` False): no candidate has the drop outward, and the patient lies over
       the edge (a surface ``cover_mm`` above the table outward of the candidate in most of its slices).
       The edge is at least as far out as the table top is seen, so the estimate is a lower bound: a
       robust outermost, the outermost such candidate that, with those beyond it, gathers
       ``edge_hidden_min_slices`` and half the best one's slices (a limb hanging over the edge or the
       bore beside the head holder can look like a strip of table in a few slices);
    4. none of those: the best-supported candidate, not seen.
    """
    v = np.asarray(values_mm, np.float64) * outward  # outward = +1: x_max side, -1: x_min side
    if len(v) < 3:
        return float(np.median(v)) * outward, False
    lo = v.min()
    hist = np.bincount(np.floor((v - lo) / bin_mm).astype(np.int64)).astype(np.float64)
    support = np.convolve(hist, [1.0, 1.0, 1.0])[1:-1]  # same length as hist, also for 1 or 2 bins
    peak = np.r_[support[:1] > 0, support[1:] >= support[:-1]] & np.r_[support[:-1] > support[1:], True]
    need = max(s.edge_min_slices, s.edge_min_support * support.max())
    candidates = np.flatnonzero(peak & (support >= s.edge_min_slices))[::-1]  # outermost first
    # only what lies near the candidate edges matters below
    reach = max(s.edge_inner_band_mm[1], s.drop_strip_mm[1]) + 10.0
    top_x, top_k = top_xk[0] * outward, top_xk[1]
    near = top_x > v.min() - reach
    top_x, top_k = top_x[near], top_k[near]
    scene_x, scene_k, scene_h = scene_xkh[0] * outward, scene_xkh[1], scene_xkh[2]
    near = (scene_x > v.min() - s.edge_island_band_mm) & (scene_x < v.max() + reach)
    scene_x, scene_k, scene_h = scene_x[near], scene_k[near], scene_h[near]
    k0 = int(min(slices.min(), top_k.min(initial=slices.min()), scene_k.min(initial=slices.min())))
    k1 = int(max(slices.max(), top_k.max(initial=slices.max()), scene_k.max(initial=slices.max())))
    inner_lo, inner_hi = s.edge_inner_band_mm
    # a slice's share of a densely covered inner band (a limb's flank at table height covers little)
    expected = (inner_hi - inner_lo) / max(spacing_mm, 1.0) * s.edge_slice_mm / max(spacing_mm, 1.0)
    min_count = max(2, int(np.ceil(s.edge_inner_coverage * expected)))
    tests = []  # (edge, votes, strong support, dense, thin, drops, covered, island), outermost first
    for c in candidates:
        centre = lo + (c + 0.5) * bin_mm
        vote = np.abs(v - centre) <= 1.5 * bin_mm
        edge = float(np.median(v[vote]))
        voting = np.zeros(k1 - k0 + 1, bool)
        voting[slices[vote] - k0] = True
        inner = voting[top_k - k0] & (top_x > edge - inner_hi) & (top_x < edge - inner_lo)
        per_slice = np.bincount(top_k[inner] - k0, minlength=k1 - k0 + 1)[voting]
        beyond = (
            voting[scene_k - k0]
            & (scene_x > edge + s.drop_strip_mm[0])
            & (scene_x < edge + s.drop_strip_mm[1])
        )
        h = scene_h[beyond]
        n_votes = np.count_nonzero(vote)
        # nothing seen beyond (the table's own shadow on the floor, the view's end) contradicts nothing,
        # if many slices agree on the edge (the bore beside the head holder is at table height in a few)
        drops = np.mean(h < -s.drop_mm) >= 0.5 if len(h) else n_votes >= s.edge_straight_min_slices
        covered = len(h) > 0 and np.mean(h > s.cover_mm) >= 0.5
        # lower surfaces just inside it (the table's side, the floor): an island beside the table (a limb
        # hanging over the edge), not the table's edge
        inside = voting[scene_k - k0] & (scene_x > edge - s.edge_island_band_mm) & (scene_x < edge - inner_lo)
        island = np.any(inside) and np.mean(scene_h[inside] < -s.edge_island_depth_mm) > 0.15
        dense, thin = np.mean(per_slice >= min_count), np.mean(per_slice >= 2)
        tests.append((edge, n_votes, support[c] >= need, dense, thin, drops, covered, island))
    for edge, _, strong, dense, _, drops, _, island in tests:
        if strong and dense >= 0.5 and drops and not island:
            return edge * outward, True
    # (not inward of the best-supported candidate: that may have something standing beside it)
    best = lo + (int(np.argmax(support)) + 0.5) * bin_mm
    for edge, n_votes, _, _, thin, drops, _, island in tests:
        if edge < best - 2 * bin_mm:
            break
        if (thin >= 0.5 or n_votes >= s.edge_straight_min_slices) and drops and not island:
            return edge * outward, True
    # hidden: a lower bound, the robust outermost of the covered candidates
    hidden = [
        (edge, n_votes)
        for edge, n_votes, _, _, thin, _, covered, island in tests
        if thin >= 0.5 and covered and not island
    ]
    if hidden:
        need_votes = max(s.edge_hidden_min_slices, 0.5 * max(n for _, n in hidden))
        votes = 0
        for edge, n_votes in hidden:
            votes += n_votes
            if votes >= need_votes:
                return edge * outward, False
    return float(np.median(v[np.abs(v - best) <= 1.5 * bin_mm])) * outward, False


def _lateral_edges(
    top_mm: np.ndarray, scene_mm: np.ndarray, n: np.ndarray, d: float, spacing_mm: float, s: TableSettings
) -> tuple[float, float, bool, bool]:
    """Lateral edges of the table top from its inliers ``top_mm``, checked against the whole scene: per
    y-slice the 2nd-most-extreme x on each side, then :func:`_edge` over the slices.
    Returns ``(x_min, x_max, x_min_seen, x_max_seen)``."""
    k = np.floor(top_mm[:, 1] / s.edge_slice_mm).astype(np.int64)
    order = np.lexsort((top_mm[:, 0], k))
    ks, xs = k[order], top_mm[order, 0]
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    ends = np.r_[starts[1:], len(ks)]
    full = (ends - starts) >= 4
    if not np.any(full):
        return float(xs.min()), float(xs.max()), False, False
    slices = ks[starts[full]]  # sorted
    reach = max(s.edge_inner_band_mm[1], s.drop_strip_mm[1]) + 10.0
    sx, sy = scene_mm[:, 0], scene_mm[:, 1]
    near = (sy >= top_mm[:, 1].min()) & (sy <= top_mm[:, 1].max())
    near &= (sx >= top_mm[:, 0].min() - reach) & (sx <= top_mm[:, 0].max() + reach)
    scene = scene_mm[near]
    scene_xkh = (scene[:, 0], np.floor(scene[:, 1] / s.edge_slice_mm).astype(np.int64), scene @ n + d)
    top_xk = (top_mm[:, 0], k)
    x_min, min_seen = _edge(xs[starts[full] + 1], slices, -1.0, top_xk, scene_xkh, spacing_mm, s)
    x_max, max_seen = _edge(xs[ends[full] - 2], slices, 1.0, top_xk, scene_xkh, spacing_mm, s)
    return x_min, x_max, min_seen, max_seen


def _sample_spacing_mm(points_mm: np.ndarray, pixels_vu: np.ndarray, stride: int) -> float:
    """Median distance between points of horizontally adjacent sampled pixels (row-major clouds)."""
    if len(points_mm) < 2:
        return 0.0
    adjacent = (pixels_vu[1:, 0] == pixels_vu[:-1, 0]) & (pixels_vu[1:, 1] - pixels_vu[:-1, 1] == stride)
    if not np.any(adjacent):
        return 0.0
    step = points_mm[1:][adjacent] - points_mm[:-1][adjacent]
    return float(np.median(np.linalg.norm(step[:, :2], axis=1)))


def _near_border(pixels_vu: np.ndarray, image_shape: tuple[int, int], border_px: int) -> bool:
    h, w = image_shape
    v, u = pixels_vu[:, 0], pixels_vu[:, 1]
    return bool(np.any((v < border_px) | (u < border_px) | (v >= h - border_px) | (u >= w - border_px)))


def _drop_fraction(
    cloud: ScannerCloud,
    n: np.ndarray,
    d: float,
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    seen: tuple[bool, bool],
    s: TableSettings,
) -> float:
    """Share of the y-slices along the table where the strip just outside either lateral edge mostly
    lies far below the plane (a table top has a drop to the floor beside it; a patch of body surface
    does not), among the slices where the camera sees anything in those strips (the table's own shadow
    on the floor hides one side from an off-axis camera). Each side is judged on its own, since the
    patient may lie over one edge and hide its drop; an edge hidden under the patient (``seen``: x_min,
    x_max) is not judged at all. Counted per slice, so that a big vertical surface in a few slices (the
    gantry face) weighs little."""
    p = cloud.points_mm
    inner, outer = s.drop_strip_mm
    x, y = p[:, 0], p[:, 1]
    n_slices = int(np.floor((y_max - y_min) / s.drop_slice_mm)) + 1
    drops = np.zeros(n_slices, bool)
    looked = np.zeros(n_slices, bool)
    along = (y >= y_min) & (y <= y_max)
    for strip, judged in (
        (along & (x < x_min - inner) & (x > x_min - outer), seen[0]),
        (along & (x > x_max + inner) & (x < x_max + outer), seen[1]),
    ):
        if not judged:
            continue
        q = p[strip]
        k = np.floor((q[:, 1] - y_min) / s.drop_slice_mm).astype(np.int64)
        below = np.bincount(k, weights=(q @ n + d < -s.drop_mm).astype(np.float64), minlength=n_slices)
        total = np.bincount(k, minlength=n_slices)
        drops |= (total > 0) & (below > 0.5 * total)
        looked |= total > 0
    return float(np.count_nonzero(drops) / max(np.count_nonzero(looked), 1))


def _see_through(
    cloud: ScannerCloud,
    n: np.ndarray,
    d: float,
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    s: TableSettings,
) -> float:
    """Share of the plan-view cells inside the footprint (inset by ``see_through_inset_mm``: lateral,
    longitudinal) whose lowest point lies ``see_through_depth_mm`` below the plane. The table top is
    opaque, so nothing is seen under it; a body surface (a broad chest or belly can look like a table top
    from above) has the mattress beside it and between the legs below it. The longitudinal inset leaves
    out the head end, where the bore is seen beside the narrower head holder."""
    p = cloud.points_mm
    dx, dy = s.see_through_inset_mm
    x, y = p[:, 0], p[:, 1]
    inside = (x > x_min + dx) & (x < x_max - dx) & (y > y_min + dy) & (y < y_max - dy)
    if not np.any(inside):
        return 0.0
    q = p[inside]
    h = q @ n + d
    cell = np.floor(q[:, :2] / s.grid_mm).astype(np.int64)
    cell -= cell.min(axis=0)
    key = cell[:, 0] * (int(cell[:, 1].max()) + 1) + cell[:, 1]
    cells, inverse = np.unique(key, return_inverse=True)
    lowest = np.full(len(cells), np.inf)
    np.minimum.at(lowest, inverse, h)
    lo, hi = s.see_through_depth_mm
    return float(np.mean((lowest < -lo) & (lowest > -hi)))


def _fit_near(band: ScannerCloud, z0: float, s: TableSettings) -> tuple[np.ndarray, float] | str:
    """A roughly horizontal plane through the points near height ``z0``: seeded RANSAC, then trimmed
    least squares with RANSAC's threshold to a fixed point (so the result hardly depends on RANSAC's
    random start). ``(normal, offset)``, or why not."""
    pts = band.points_mm
    slab = np.flatnonzero(np.abs(pts[:, 2] - z0) < s.candidate_window_mm)
    if len(slab) < 50:
        return f"z {z0:.0f} mm: only {len(slab)} points"
    step = max(1, len(slab) // s.ransac_max_points)
    plane = _ransac_plane(pts[slab[::step]], s)
    if plane is None:
        return f"z {z0:.0f} mm: no plane within {s.max_tilt_deg:.0f} deg of horizontal"
    fit = _level_fit(pts[slab[::step]], *plane, s)
    if fit is None:
        return f"z {z0:.0f} mm: too few inliers"
    return fit[0], fit[1]


def _describe(
    band: ScannerCloud,
    cloud: ScannerCloud,
    n: np.ndarray,
    d: float,
    region: np.ndarray,
    z0: float,
    scene: tuple[_Raster, np.ndarray],
    s: TableSettings,
) -> tuple[TableEstimate | None, str, str, float, float]:
    """Refine the plane within one plan-view surface (``region``: mask over ``band``), measure its edges
    and extents and check that it can be a table top: ``(estimate, "", edges, see_through, drop)`` or
    ``(None, why not, "", 0, 0)``; ``see_through`` is :func:`_see_through`'s share, ``drop``
    :func:`_drop_fraction`'s. ``edges`` is empty when the
    surface looks like a table top from its edges (one seen, a drop beside them), else why not: a surface
    with a patient on it needs no edges (a blanket or the patient may hide them, a curved cradle rises at
    them)."""
    pts = band.points_mm
    # the densest layer within the region (the mattress, not a pillow or blanket on it), its noise level
    # fixing the inlier threshold
    in_region = np.flatnonzero(region)
    q = pts[in_region]
    fit = _level_fit(q, n, d, s)
    if fit is None:
        return None, f"z {z0:.0f} mm: too few inliers", "", 0.0, 0.0
    n, d, thr = fit
    tilt = float(np.degrees(np.arccos(np.clip(n[2], -1, 1))))
    if tilt > s.max_tilt_deg:
        return None, f"z {z0:.0f} mm: refined plane tilted {tilt:.0f} deg", "", 0.0, 0.0
    inl = in_region[np.abs(q @ n + d) < thr]
    groups = _region_groups(pts[inl, :2], *scene, s)
    if not groups:
        return None, f"z {z0:.0f} mm: too few inliers", "", 0.0, 0.0
    keep, area = groups[0]
    idx = inl[keep]
    p = pts[idx]
    if len(p) < 3 * s.end_rank:
        return None, f"z {z0:.0f} mm: too few inliers", "", 0.0, 0.0
    # Edges from the points on or above the plane (the carbon top and the mattress sides are lower).
    res = p @ n + d
    upper = p[res > -0.5 * thr]
    spacing = _sample_spacing_mm(p, band.pixels_vu[idx], band.stride)
    x_min, x_max, min_seen, max_seen = _lateral_edges(
        upper if len(upper) > 10 else p, cloud.points_mm, n, d, spacing, s
    )
    # The outermost sample lies on average half a sample spacing inside the true edge.
    x_min, x_max = x_min - 0.5 * spacing, x_max + 0.5 * spacing
    ys = np.sort(p[:, 1])
    k = min(s.end_rank, len(ys) - 1)
    y_min, y_max = float(ys[k]), float(ys[-1 - k])
    cx, cy = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
    top_z = float(-(d + n[0] * cx + n[1] * cy) / n[2])
    where = f"z {top_z:.0f} mm ({x_max - x_min:.0f} x {y_max - y_min:.0f} mm at x {cx:+.0f})"
    width, length = x_max - x_min, y_max - y_min
    if not s.width_range_mm[0] <= width <= s.width_range_mm[1]:
        return None, f"{where}: width {width:.0f} mm outside {s.width_range_mm}", "", 0.0, 0.0
    if length < s.min_length_mm:
        return None, f"{where}: visible length {length:.0f} mm < {s.min_length_mm:.0f} mm", "", 0.0, 0.0
    if area < s.min_area_mm2:
        return (
            None,
            f"{where}: visible area {area / 1e6:.2f} m^2 < {s.min_area_mm2 / 1e6:.2f} m^2",
            "",
            0.0,
            0.0,
        )
    through = _see_through(cloud, n, d, x_min, x_max, y_min, y_max, s)
    edges = ""
    drop = 0.0
    if not (min_seen or max_seen):
        edges = "neither lateral edge seen (no drop beside it)"
    else:
        drop = _drop_fraction(cloud, n, d, x_min, x_max, y_min, y_max, (min_seen, max_seen), s)
        if drop < s.min_drop_fraction:
            edges = (
                f"no drop beside the edges (in {drop:.0%} of the slices where the camera sees beside them)"
            )
    px = band.pixels_vu[idx]
    margin = 2.0 * s.grid_mm
    seen_lo = not _near_border(px[p[:, 1] < y_min + margin], band.image_shape, s.border_px * band.stride)
    seen_hi = not _near_border(px[p[:, 1] > y_max - margin], band.image_shape, s.border_px * band.stride)
    normal = n.copy()
    normal.setflags(write=False)
    px = px.copy()
    px.setflags(write=False)
    est = TableEstimate(
        normal=normal,
        offset_mm=float(d),
        top_z_mm=top_z,
        x_min_mm=x_min,
        x_max_mm=x_max,
        x_min_seen=min_seen,
        x_max_seen=max_seen,
        y_min_mm=y_min,
        y_max_mm=y_max,
        y_min_seen=seen_lo,
        y_max_seen=seen_hi,
        inliers=len(idx),
        rms_mm=float(np.sqrt(np.mean(res**2))),
        area_mm2=area,
        pixels_vu=px,
    )
    return est, "", edges, through, drop


def _cells_of(xy_mm: np.ndarray, region_xy_mm: np.ndarray, grid_mm: float) -> np.ndarray:
    """Which of ``xy_mm`` fall in a plan-view cell occupied by ``region_xy_mm`` (or an 8-neighbour)."""
    origin = region_xy_mm.min(axis=0) - 2 * grid_mm
    rc = np.floor((region_xy_mm - origin) / grid_mm).astype(np.int64)
    shape = (int(rc[:, 1].max()) + 3, int(rc[:, 0].max()) + 3)
    occ = np.zeros(shape, np.uint8)
    occ[rc[:, 1], rc[:, 0]] = 1
    occ = cv2.dilate(occ, np.ones((3, 3), np.uint8))
    c = np.floor((xy_mm - origin) / grid_mm).astype(np.int64)
    ok = (c[:, 0] >= 0) & (c[:, 1] >= 0) & (c[:, 0] < shape[1]) & (c[:, 1] < shape[0])
    out = np.zeros(len(xy_mm), bool)
    out[ok] = occ[c[ok, 1], c[ok, 0]].astype(bool)
    return out


def _overlap(a: TableEstimate, b: TableEstimate) -> tuple[float, float, float, float] | None:
    """The plan-view rectangle where two footprints overlap, ``(x0, x1, y0, y1)``, or None."""
    x0, x1 = max(a.x_min_mm, b.x_min_mm), min(a.x_max_mm, b.x_max_mm)
    y0, y1 = max(a.y_min_mm, b.y_min_mm), min(a.y_max_mm, b.y_max_mm)
    return (x0, x1, y0, y1) if x1 > x0 and y1 > y0 else None


def _same_surface(a: TableEstimate, b: TableEstimate, threshold_mm: float) -> bool:
    """Whether two estimates are one surface found twice (from two height peaks): their planes meet over
    most of the smaller footprint."""
    box = _overlap(a, b)
    if box is None:
        return False
    shared = (box[1] - box[0]) * (box[3] - box[2])
    smaller = min(e.width_mm * (e.y_max_mm - e.y_min_mm) for e in (a, b))
    if shared < 0.5 * smaller:
        return False
    x = np.array([box[0], box[1], box[0], box[1]])
    y = np.array([box[2], box[2], box[3], box[3]])
    dz = a.z_at(x, y) - b.z_at(x, y)
    return bool(np.min(np.abs(dz)) < threshold_mm or dz.min() < 0.0 < dz.max())


@dataclasses.dataclass(frozen=True)
class _Raster:
    """The scene on a plan-view grid: cell index of every point, and the grid's size."""

    cell: np.ndarray  # (N,) flat cell index
    shape: tuple[int, int]  # (rows along y, cols along x)
    origin: np.ndarray  # (x, y) of cell (0, 0)
    grid_mm: float

    @classmethod
    def of(cls, xy_mm: np.ndarray, grid_mm: float) -> _Raster:
        origin = xy_mm.min(axis=0) - grid_mm
        c = np.floor((xy_mm - origin) / grid_mm).astype(np.int64)
        shape = (int(c[:, 1].max()) + 2, int(c[:, 0].max()) + 2)
        return cls(c[:, 1] * shape[1] + c[:, 0], shape, origin, grid_mm)

    def cells(self, mask: np.ndarray) -> np.ndarray:
        """``(rows, cols)`` bool: cells holding at least one point of ``mask``."""
        out = np.zeros(self.shape[0] * self.shape[1], bool)
        out[self.cell[mask]] = True
        return out.reshape(self.shape)

    def max_of(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(rows, cols)`` largest of ``values`` per cell over ``mask`` (-inf where none)."""
        out = np.full(self.shape[0] * self.shape[1], -np.inf)
        np.maximum.at(out, self.cell[mask], values[mask])
        return out.reshape(self.shape)

    def box(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        """``(rows, cols)`` bool: cells whose centres lie in the plan-view box."""
        xs = self.origin[0] + (np.arange(self.shape[1]) + 0.5) * self.grid_mm
        ys = self.origin[1] + (np.arange(self.shape[0]) + 0.5) * self.grid_mm
        return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


@dataclasses.dataclass(frozen=True)
class _Load:
    """What rests on a surface: the body-like object on it (its plan-view cells), or why there is none."""

    loaded: bool
    why: str
    cells: np.ndarray | None = None


def _load(cloud: ScannerCloud, raster: _Raster, est: TableEstimate, s: TableSettings) -> _Load:
    """Whether something body-like rests on ``est``: a connected plan-view object rising above it that lies
    mostly within its footprint and meets it low down (its cells next to the surface are low: a body's
    flank, a blanket's hem; not the edge of a table top standing on a base)."""
    h = est.height_above_mm(cloud.points_mm)
    lo, hi = s.load_rise_mm
    rising = (h > lo) & (h < hi)
    above = raster.cells(rising)
    top = raster.max_of(h, rising)
    # objects are separated where the height jumps (a person leaning over the patient, the gantry's
    # front face behind the head): cells beside such a jump are cut out before labelling
    finite = np.where(above, top, np.nan).astype(np.float32)
    k = np.ones((3, 3), np.uint8)
    local_max = cv2.dilate(np.nan_to_num(finite, nan=-1e6), k)
    local_min = -cv2.dilate(np.nan_to_num(-finite, nan=-1e6), k)
    above &= (local_max - local_min) <= s.load_max_jump_mm
    surface = raster.cells(np.abs(h) < max(2.0 * est.rms_mm, 15.0))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    mx, my = s.load_hull_margin_mm
    hull = raster.box(est.x_min_mm - mx, est.x_max_mm + mx, est.y_min_mm - my, est.y_max_mm + my)
    next_to = cv2.dilate(surface.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    cell_area = raster.grid_mm**2
    first_why = "nothing rests on it"
    for lab in np.argsort(-stats[:, cv2.CC_STAT_AREA]):
        if lab == 0:
            continue
        area = float(stats[lab, cv2.CC_STAT_AREA]) * cell_area
        if area < s.load_min_area_mm2:
            break
        comp = labels == lab
        inside = float(np.mean(hull[comp]))
        rise = float(top[comp].max())
        contact = top[comp & next_to]
        low = int(np.count_nonzero(contact <= s.contact_max_mm))
        meets = float(np.mean(contact <= s.contact_max_mm)) if len(contact) else 0.0
        if inside < s.load_inside_fraction:
            why = f"the object on it lies mostly beside it ({inside:.0%} over it)"
        elif rise < s.load_min_height_mm:
            why = f"the object on it rises only {rise:.0f} mm"
        elif meets < s.contact_min_share or low < s.contact_min_cells:
            why = (
                f"the object above does not rest on it (it meets it low down along {meets:.0%} of where they "
                "touch: a table top on its base, or someone leaning over it)"
            )
        else:
            return _Load(True, f"an object of {area / 1e6:.2f} m^2 rising {rise:.0f} mm rests on it", comp)
        if first_why == "nothing rests on it":
            first_why = why
    return _Load(False, first_why)


def _part_of(est: TableEstimate, raster: _Raster, cells: np.ndarray, share: float = 0.5) -> bool:
    """Whether ``est``'s footprint lies mostly within ``cells`` (what rests on a lower surface)."""
    box = raster.box(est.x_min_mm, est.x_max_mm, est.y_min_mm, est.y_max_mm)
    return bool(np.any(box)) and float(np.mean(cells[box])) >= share


def find_table(cloud: ScannerCloud, settings: TableSettings = DEFAULT_TABLE_SETTINGS) -> TableEstimate:
    """Find the table top the patient lies on in a scanner-frame cloud.

    Every roughly horizontal surface big enough to be a table top is a candidate (a table top, a base
    below it, a stretcher alongside, a bed). The table is the one that *supports* the patient: the highest
    candidate with a body-like object resting on it (see :func:`_load`); with nobody on any candidate (an
    empty table), the largest candidate. Which surfaces were considered, and why one was chosen, is in
    :attr:`TableEstimate.considered`.

    Convention: scanner frame (IEC 61217), mm; see the module docstring for the plane convention. Works on
    any :class:`ScannerCloud` (full resolution, strided or voxel-downsampled); ``stride=2`` is plenty.

    Args:
        cloud: scanner-frame points of one frame (e.g. from
            :func:`~positioning.perception.pointcloud.scanner_points`).
        settings: thresholds (defaults suit a ceiling D415 / D435 / D455 over a CT table or a bed).

    Returns:
        The table estimate.

    Raises:
        NoTableError: no roughly horizontal, table-sized surface in the height band (with the reasons).
        TypeError: ``cloud`` is not a :class:`ScannerCloud`.

    Example:
        >>> table = find_table(scanner_points(frame, calibration, stride=2))  # doctest: +SKIP
        >>> table.top_z_mm, table.x_min_mm, table.x_max_mm  # doctest: +SKIP
    """
    if not isinstance(cloud, ScannerCloud):
        raise TypeError(f"cloud must be a ScannerCloud, got {type(cloud).__name__}")
    s = settings
    lo, hi = s.z_band_mm
    z = cloud.points_mm[:, 2]
    band = cloud.subset((z >= lo - s.candidate_window_mm) & (z <= hi + s.candidate_window_mm))
    if len(band) < 100:
        raise NoTableError(
            f"{_NO_TABLE} Only {len(band)} points at table height (z in [{lo:.0f}, {hi:.0f}] mm) out of "
            f"{len(cloud)}."
        )
    cands, reasons = _candidates(band, cloud, s)
    if not cands:
        raise NoTableError(f"{_NO_TABLE} Candidates rejected: " + ("; ".join(reasons) or "none found") + ".")
    chosen, verdict = _choose(cands, s)
    if chosen is None:
        raise NoTableError(
            f"{_NO_TABLE} Candidates rejected: "
            + "; ".join(
                reasons
                + [
                    f"z {c.est.top_z_mm:.0f} mm: "
                    + "; ".join(w for w in (c.why_not, c.load.why, c.edges) if w)
                    for c in cands
                ]
            )
            + "."
        )
    found, loads = [c.est for c in cands], [c.load for c in cands]
    edges = [c.edges for c in cands]
    lines = []
    for k, (est, ld) in enumerate(zip(found, loads, strict=True)):
        length = est.y_max_mm - est.y_min_mm
        what = f"z {est.top_z_mm:.0f} mm, {est.width_mm:.0f} x {length:.0f} mm at x {est.centre_x_mm:+.0f}"
        why = "; ".join(w for w in (cands[k].why_not, ld.why, edges[k]) if w)
        if k == chosen:
            lines.append(f"{what}: {verdict} ({why})")
        elif ld.loaded:
            lines.append(f"{what}: not chosen, below the chosen one ({why})")
        else:
            lines.append(f"{what}: not chosen ({why})")
    lines += [f"rejected: {r}" for r in reasons]
    return dataclasses.replace(found[chosen], considered=tuple(lines), supports_patient=loads[chosen].loaded)


@dataclasses.dataclass(frozen=True)
class _Candidate:
    """A surface that may be the table: its estimate and the evidence for and against it.

    Attributes:
        est: the surface.
        edges: why its edges do not look like a table top's ("" when they do).
        see_through: share of its footprint where a lower surface is seen (a body surface has some).
        load: what rests on it.
        drop: share of its slices with a drop beside a seen edge.
        why_not: set when it is ruled out as the table.
    """

    est: TableEstimate
    edges: str
    see_through: float
    load: _Load
    drop: float = 0.0
    why_not: str = ""


def _candidates(
    band: ScannerCloud, cloud: ScannerCloud, s: TableSettings
) -> tuple[list[_Candidate], list[str]]:
    """Every surface that passes the geometric tests, highest first, with its evidence; and the reasons
    of those that do not."""
    lo, hi = s.z_band_mm
    in_band = band.points_mm[:, 2]
    reasons: list[str] = []
    found: list[tuple[TableEstimate, str, float]] = []
    raster = _Raster.of(cloud.points_mm[:, :2], s.load_grid_mm)
    everything = np.ones(len(cloud), bool)
    for z0 in _height_peaks(in_band[(in_band >= lo) & (in_band <= hi)], s):  # strongest first
        fit = _fit_near(band, z0, s)
        if isinstance(fit, str):
            reasons.append(fit)
            continue
        n, d = fit
        pts = band.points_mm
        scene = (raster, raster.max_of(cloud.points_mm @ n + d, everything))
        idx = np.flatnonzero(np.abs(pts @ n + d) < s.ransac_threshold_mm)
        for keep, _ in _region_groups(pts[idx, :2], *scene, s)[: s.max_surfaces_per_plane]:
            region = _cells_of(pts[:, :2], pts[idx[keep], :2], s.grid_mm)
            est, why, edge_why, through, drop = _describe(band, cloud, n, d, region, z0, scene, s)
            if est is None:
                reasons.append(why)
            elif not any(_same_surface(est, f[0], s.ransac_threshold_mm) for f in found):
                found.append((est, edge_why, through, drop))
    found.sort(key=lambda f: -f[0].top_z_mm)  # highest first
    cands = [_Candidate(est, e, t, _load(cloud, raster, est, s), drop=dr) for est, e, t, dr in found]
    return _mark_body_surfaces(cands, raster, s), reasons


def _mark_body_surfaces(cands: list[_Candidate], raster: _Raster, s: TableSettings) -> list[_Candidate]:
    """Rule out surfaces that are part of what rests on another: a loaded surface lying within the object
    on a lower loaded surface is either a body surface (a broad belly, the top of a blanket) or the
    table top standing on its base. The one that looks less like a table top by its edges and see-through
    is ruled out."""
    out = list(cands)
    for k, hi_c in enumerate(cands):
        for j in range(k + 1, len(cands)):
            lo_c = cands[j]
            if not (hi_c.load.loaded and lo_c.load.loaded and lo_c.load.cells is not None):
                continue
            if not _part_of(hi_c.est, raster, lo_c.load.cells):
                continue
            if _table_likeness(hi_c, s) > _table_likeness(lo_c, s):
                out[j] = dataclasses.replace(out[j], why_not="a higher table top rests on it (its base)")
            else:
                out[k] = dataclasses.replace(out[k], why_not="it is part of what rests on a lower surface")
    return out


def _table_likeness(c: _Candidate, s: TableSettings) -> float:
    """How much a surface looks like a table top by itself: edges seen with a drop beside them, nothing
    seen through it, a long visible extent."""
    score = 0.0 if c.edges else 1.0
    score += 1.0 if c.see_through <= s.max_see_through else 0.0
    score += min((c.est.y_max_mm - c.est.y_min_mm) / 1500.0, 1.0)
    return score


def _choose(cands: list[_Candidate], s: TableSettings) -> tuple[int | None, str]:
    """The table among the candidates (highest first): the highest loaded one not ruled out, with a lateral
    edge seen and little seen through it; with none, the largest one that looks like a table top by its
    edges and see-through."""
    for k, c in enumerate(cands):
        # a blanket or the patient may hide one edge and the drop beside it in many slices, not everything
        seen = (c.est.x_min_seen or c.est.x_max_seen) and not c.edges.startswith(
            "no drop beside the edges (in 0%"
        )
        if c.load.loaded and seen and not c.why_not and c.see_through <= s.support_max_see_through:
            return k, "chosen: the highest surface the patient rests on"
    table_like = [k for k, c in enumerate(cands) if not c.edges and c.see_through <= s.max_see_through]
    if not table_like:
        return None, ""
    return max(
        table_like, key=lambda k: cands[k].est.area_mm2
    ), "chosen: the largest table-like candidate (nothing rests on any)"


def table_on_support(
    cloud: ScannerCloud,
    support: np.ndarray,
    settings: TableSettings = DEFAULT_TABLE_SETTINGS,
    *,
    note: str = "",
    resting: np.ndarray | None = None,
) -> TableEstimate:
    """The table top among given points: the scene network's *support* (the cells it sees as the surface
    the patient lies on), refined and measured like any candidate (the densest horizontal layer, its
    plan-view region, edges and extents).

    A patient lying across most of the top, seen by a camera off to one side, may leave a single strip of
    mattress in view, narrower than any table: with ``resting`` (what the network sees lying on the
    surface: the patient, a blanket), the top's lateral extent takes in what rests on it before its width
    is checked (the height always comes from the support alone); a strip narrower than a table is only
    kept when a body is seen resting on it (the load test), so a shelf or a wall's ledge stays no table.

    Convention: scanner frame (IEC 61217), mm.

    Args:
        cloud: scanner-frame points of one frame.
        support: ``(len(cloud),)`` bool, the points on the support.
        settings: thresholds.
        note: a line for :attr:`TableEstimate.considered` (why these points).
        resting: ``(len(cloud),)`` bool, points lying on the support (None: the support alone).

    Raises:
        NoTableError: too few support points, or they do not form a table-sized horizontal surface.
    """
    s = settings
    support = np.asarray(support, bool)
    if support.shape != (len(cloud),):
        raise ValueError(f"support must be ({len(cloud)},) bool, got {support.shape}")
    if np.count_nonzero(support) < 100:
        raise NoTableError(f"{_NO_TABLE} The scene network sees no surface the patient lies on.")
    pts = cloud.points_mm
    z0 = float(np.median(pts[support, 2]))
    raster = _Raster.of(pts[:, :2], s.load_grid_mm)
    n, d = np.array([0.0, 0.0, 1.0]), -z0
    scene = (raster, raster.max_of(pts @ n + d, np.ones(len(cloud), bool)))
    s_fit = s if resting is None else dataclasses.replace(s, width_range_mm=(0.0, s.width_range_mm[1]))
    est, why, edges, through, _ = _describe(cloud, cloud, n, d, support, z0, scene, s_fit)
    if est is None:
        raise NoTableError(f"{_NO_TABLE} The surface the scene network sees the patient on fails: {why}.")
    widened, seen_width_mm = "", est.width_mm
    if resting is not None:
        est, widened = _widen_by_resting(est, pts[np.asarray(resting, bool)], s)
        if not s.width_range_mm[0] <= est.width_mm <= s.width_range_mm[1]:
            raise NoTableError(
                f"{_NO_TABLE} The surface the scene network sees the patient on fails: z "
                f"{est.top_z_mm:.0f} mm: width {est.width_mm:.0f} mm outside {s.width_range_mm}"
                f"{' (' + widened + ')' if widened else ''}."
            )
    load = _load(cloud, raster, est, s)
    if seen_width_mm < s.width_range_mm[0] and not load.loaded:
        raise NoTableError(
            f"{_NO_TABLE} The surface the scene network sees the patient on fails: z {est.top_z_mm:.0f} mm: "
            "a strip narrower than a table, and no body is seen resting on it."
        )
    est = _centre_line(est, pts[support], s)
    lines = [
        f"z {est.top_z_mm:.0f} mm, {est.width_mm:.0f} x {est.y_max_mm - est.y_min_mm:.0f} mm: chosen ({note})"
    ]
    lines += (
        [f"curved: its edges rise {est.sagitta_mm:.0f} mm above its centre line"] if est.sagitta_mm else []
    )
    lines += [widened] if widened else []
    lines += [f"edges: {edges}"] if edges else []
    lines += [f"{through:.0%} of its footprint shows a lower surface"] if through > s.max_see_through else []
    return dataclasses.replace(est, considered=tuple(lines), supports_patient=load.loaded)


def _widen_by_resting(
    est: TableEstimate, resting_mm: np.ndarray, s: TableSettings
) -> tuple[TableEstimate, str]:
    """The top's lateral extent taken out to what lies on it (within its visible length, at most
    ``max_rest_height_mm`` above it; 1st to 99th percentile in x), and a line saying so (empty: unchanged).
    A side moved out was not seen as an edge."""
    if len(resting_mm) == 0:
        return est, ""
    h = est.height_above_mm(resting_mm)
    y = resting_mm[:, 1]
    on = (h > -s.refine_max_threshold_mm) & (h < s.max_rest_height_mm)
    on &= (y >= est.y_min_mm) & (y <= est.y_max_mm)
    if np.count_nonzero(on) < 50:
        return est, ""
    lo, hi = np.percentile(resting_mm[on, 0], [1.0, 99.0])
    x_min, x_max = min(est.x_min_mm, float(lo)), max(est.x_max_mm, float(hi))
    if x_min == est.x_min_mm and x_max == est.x_max_mm:
        return est, ""
    line = (
        f"extent widened from {est.width_mm:.0f} to {x_max - x_min:.0f} mm by the patient lying on it "
        "(a strip of the top in view)"
    )
    return (
        dataclasses.replace(
            est,
            x_min_mm=x_min,
            x_max_mm=x_max,
            x_min_seen=est.x_min_seen and x_min == est.x_min_mm,
            x_max_seen=est.x_max_seen and x_max == est.x_max_mm,
        ),
        line,
    )


def _centre_line(est: TableEstimate, points_mm: np.ndarray, s: TableSettings) -> TableEstimate:
    """A curved cradle: the mattress rises toward its lateral edges, so the visible mattress beside a
    patient lies above the trough the patient rests in. A quadratic ``h = A + B x + C x^2`` is fitted
    (Huber) to the surface's points near its plane within ``cradle_reach_mm`` of the table's axis (the
    gantry's axis, x = 0, where a calibrated table is centred, unless the table was found elsewhere); when
    it rises at least ``min_sagitta_mm`` over ``cradle_half_width_mm`` the plane moves down to the trough
    (the curve's lowest point, kept within 100 mm of the axis) and :attr:`TableEstimate.sagitta_mm` records
    the rise."""
    axis = 0.0 if abs(est.centre_x_mm) < 150.0 else est.centre_x_mm
    h = est.height_above_mm(points_mm)
    x = points_mm[:, 0] - axis
    near = (np.abs(h) < s.refine_max_threshold_mm + 20.0) & (np.abs(x) < s.cradle_reach_mm)
    if np.count_nonzero(near) < 200:
        return est
    x, h = x[near] / s.cradle_half_width_mm, h[near]
    a_mat = np.c_[np.ones_like(x), x, x * x]
    w = np.ones_like(h)
    coef = np.zeros(3)
    for _ in range(6):  # iteratively reweighted least squares (Huber, 10 mm)
        coef, *_ = np.linalg.lstsq(a_mat * w[:, None], h * w, rcond=None)
        r = h - a_mat @ coef
        w = np.sqrt(np.minimum(1.0, 10.0 / np.maximum(np.abs(r), 1e-9)))
    big_a, big_b, sag = (float(c) for c in coef)
    if sag < s.min_sagitta_mm:
        return est
    vertex = float(
        np.clip(-big_b / (2.0 * sag), -100.0 / s.cradle_half_width_mm, 100.0 / s.cradle_half_width_mm)
    )
    a = big_a + big_b * vertex + sag * vertex * vertex
    if a >= 0.0:  # the trough is not below the plane found: nothing to correct
        return est
    # heights are normal . p + offset: the centre line lies a above the plane, so the offset drops by a
    return dataclasses.replace(
        est, offset_mm=float(est.offset_mm - a), top_z_mm=est.top_z_mm + a, sagitta_mm=sag
    )
