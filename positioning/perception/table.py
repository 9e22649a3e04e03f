"""The scanner table top: a horizontal plane at table height and its footprint.

Method:

1. The scanner-frame points in a plausible height band (which excludes the floor) are histogrammed by
   height; each of the strongest peaks proposes a slab of points.
2. A seeded RANSAC (MSAC) fits a roughly horizontal plane to the slab.
3. Trimmed least squares from the RANSAC plane iterates to a fixed point (so the result hardly depends on
   RANSAC's random start); that plane fixes the table's plan-view region (the largest connected region
   of inliers on a raster, plus pieces split off by a patient lying across the full width; a thin line
   across the table at its height, the gantry's front face, is opened away first so that it neither
   joins nor widens them) and the noise level; trimmed least squares within that region and about two
   noise sigmas iterates to a fixed point again, so neither the patient lying on the table nor other
   surfaces at its height pull the plane.
4. Lateral edges: per y-slice the outermost inliers; candidates are the positions several slices agree
   on (the patient hides an edge, often over many slices, moving it inward; a limb over the edge moves
   it outward). The edge is the outermost candidate where the top continues inward (densely, or as a
   strip between the edge and a patient lying close to it), nothing much lower is seen just inward
   (else it is a limb beside the table) and what is seen outward lies far below (the floor); it is moved
   out by half a sample spacing. An edge the patient lies over everywhere is not seen: it is reported
   where the table top is last seen (a lower bound) and flagged. Ends: the extreme inliers along y.
5. The candidate must look like a table: tilt, width, length, area, at least one lateral edge seen, no
   lower surface seen through its footprint (the table top is opaque; a broad chest or belly seen from
   above has the mattress beside it and between the legs below it), and a drop to the floor beside its
   seen edges (which a patch of body surface or a wall lacks). The strongest candidate that passes
   wins, unless another one passes under it over the same footprint (then that is the table, the
   higher one a body surface); none: :class:`~positioning.perception.status.NoTableError` with every
   candidate's reason.

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
        z_band_mm: heights (scanner z) where a table top may be; excludes the floor (about -1000 mm) and
            anything above the isocenter region.
        max_tilt_deg: largest angle between the plane normal and +z.
        histogram_bin_mm: bin width of the height histogram that proposes candidate planes.
        max_candidates: how many histogram peaks to try.
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
        width_range_mm: plausible table (mattress) widths.
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
    """

    z_band_mm: tuple[float, float] = (-450.0, 100.0)
    max_tilt_deg: float = 10.0
    histogram_bin_mm: float = 10.0
    max_candidates: int = 3
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
    width_range_mm: tuple[float, float] = (300.0, 900.0)
    min_length_mm: float = 400.0
    min_area_mm2: float = 100_000.0
    drop_strip_mm: tuple[float, float] = (40.0, 140.0)
    drop_mm: float = 300.0
    drop_slice_mm: float = 50.0
    min_drop_fraction: float = 0.3
    border_px: int = 3
    seed: int = 0

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
    xy_mm: np.ndarray, grid_mm: float, min_length_mm: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Label points by 8-connected plan-view region (raster of ``grid_mm`` cells, 3x3 closing, then an
    opening along y that keeps only runs at least ``min_length_mm`` long: the table top, even a narrow
    strip of it beside the patient, runs along y; a surface crossing the table height (the gantry's front
    face, a person's legs) leaves a thin line across it, which would join regions and widen them).

    Returns ``(labels (N,) int, areas_mm2 (n_labels,))``, label 0 unused (points of removed cells).
    """
    cell = np.floor(xy_mm / grid_mm).astype(np.int64)
    cell -= cell.min(axis=0)
    shape = (int(cell[:, 1].max()) + 1, int(cell[:, 0].max()) + 1)
    occ = np.zeros(shape, np.uint8)
    occ[cell[:, 1], cell[:, 0]] = 1
    occ = cv2.morphologyEx(occ, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    run = round(min_length_mm / grid_mm)
    if run > 1:  # rows of ``occ`` are y
        occ = cv2.morphologyEx(
            occ, cv2.MORPH_OPEN, np.ones((run, 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
        )
    _, labels, stats, _ = cv2.connectedComponentsWithStats(occ, connectivity=8)
    return labels[cell[:, 1], cell[:, 0]], stats[:, cv2.CC_STAT_AREA].astype(np.float64) * grid_mm**2


def _table_region(xy_mm: np.ndarray, s: TableSettings) -> tuple[np.ndarray, float]:
    """The table's plan-view regions: the largest one, then, largest first, every other that overlaps the
    union laterally (pieces of the mattress top left between the legs, beside the head or at the foot of
    a patient lying across the full width). Each region only contributes its points within the union's
    lateral extent, so a thin line of other surfaces crossing the table height (the gantry's front face)
    neither widens the table nor keeps a piece of it out. Returns (point mask, area mm^2)."""
    labels, areas = _plan_regions(xy_mm, s.grid_mm, s.region_min_length_mm)
    areas[0] = 0.0
    order = [int(lb) for lb in np.argsort(-areas, kind="stable") if areas[lb] >= 0.05 * areas.max()]
    x = xy_mm[:, 0]
    tol = 3 * s.grid_mm
    main = labels == order[0]
    lo, hi = np.quantile(x[main], [0.02, 0.98])
    keep = main & (x >= lo - tol) & (x <= hi + tol)
    area = areas[order[0]]
    for lab in order[1:]:
        sel = labels == lab
        q0, q1 = np.quantile(x[sel], [0.02, 0.98])
        lo_new, hi_new = (
            max(min(lo, q0), hi - s.width_range_mm[1]),
            min(max(hi, q1), lo + s.width_range_mm[1]),
        )
        inside = sel & (x >= lo_new - tol) & (x <= hi_new + tol)
        if np.count_nonzero(inside) >= 0.5 * np.count_nonzero(sel):
            keep |= inside
            lo, hi = lo_new, hi_new
            area += areas[lab] * np.count_nonzero(inside) / np.count_nonzero(sel)
    return keep, float(area)


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


def _candidate(
    band: ScannerCloud, cloud: ScannerCloud, z0: float, s: TableSettings
) -> tuple[TableEstimate | None, str]:
    """Fit, refine and validate the plane near height ``z0``; (estimate, "") or (None, why not)."""
    pts = band.points_mm
    slab = np.flatnonzero(np.abs(pts[:, 2] - z0) < s.candidate_window_mm)
    if len(slab) < 50:
        return None, f"z {z0:.0f} mm: only {len(slab)} points"
    step = max(1, len(slab) // s.ransac_max_points)
    plane = _ransac_plane(pts[slab[::step]], s)
    if plane is None:
        return None, f"z {z0:.0f} mm: no plane within {s.max_tilt_deg:.0f} deg of horizontal"
    n, d = plane
    # Least-squares refinement: trimmed least squares with RANSAC's threshold until the inlier set stops
    # changing (a fixed point, so the result hardly depends on RANSAC's random start); that plane fixes
    # the table's plan-view region (so other surfaces at the same height do not pull on the plane) and
    # the noise level; then trimmed least squares again, within the region and a noise-scaled threshold.
    thr = s.ransac_threshold_mm
    slab_pts = pts[slab[::step]]
    prev = None
    for _ in range(s.refine_iterations):
        inl = np.abs(slab_pts @ n + d) < thr
        if inl.sum() < 50:
            return None, f"z {z0:.0f} mm: too few inliers"
        if prev is not None and np.array_equal(inl, prev):
            break
        n, d = fit_plane_lsq(slab_pts[inl])
        prev = inl
    idx = np.flatnonzero(np.abs(pts @ n + d) < thr)
    keep, _ = _table_region(pts[idx, :2], s)
    region = _cells_of(pts[:, :2], pts[idx[keep], :2], s.grid_mm)
    r = pts[region] @ n + d
    r = r[np.abs(r) < thr]
    sigma = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    thr = float(
        np.round(np.clip(s.refine_sigmas * sigma, s.refine_min_threshold_mm, s.refine_max_threshold_mm))
    )
    in_region = np.flatnonzero(region)
    q = pts[in_region]
    prev = None
    for _ in range(s.refine_iterations):
        inl = np.abs(q @ n + d) < thr
        if inl.sum() < 50:
            return None, f"z {z0:.0f} mm: too few inliers"
        if prev is not None and np.array_equal(inl, prev):
            break
        n, d = fit_plane_lsq(q[inl])
        prev = inl
    tilt = float(np.degrees(np.arccos(np.clip(n[2], -1, 1))))
    if tilt > s.max_tilt_deg:
        return None, f"z {z0:.0f} mm: refined plane tilted {tilt:.0f} deg"
    inl = in_region[np.abs(q @ n + d) < thr]
    keep, area = _table_region(pts[inl, :2], s)
    idx = inl[keep]
    p = pts[idx]
    if len(p) < 3 * s.end_rank:
        return None, f"z {z0:.0f} mm: too few inliers"
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
    width, length = x_max - x_min, y_max - y_min
    if not s.width_range_mm[0] <= width <= s.width_range_mm[1]:
        return None, f"z {z0:.0f} mm: width {width:.0f} mm outside {s.width_range_mm}"
    if length < s.min_length_mm:
        return None, f"z {z0:.0f} mm: visible length {length:.0f} mm < {s.min_length_mm:.0f} mm"
    if area < s.min_area_mm2:
        return None, f"z {z0:.0f} mm: visible area {area / 1e6:.2f} m^2 < {s.min_area_mm2 / 1e6:.2f} m^2"
    through = _see_through(cloud, n, d, x_min, x_max, y_min, y_max, s)
    if through > s.max_see_through:
        return (
            None,
            f"z {z0:.0f} mm: a lower surface is seen through it in {through:.0%} of its footprint (a body "
            "surface)",
        )
    if not (min_seen or max_seen):
        return None, f"z {z0:.0f} mm: neither lateral edge seen (no drop to the floor beside it)"
    drop = _drop_fraction(cloud, n, d, x_min, x_max, y_min, y_max, (min_seen, max_seen), s)
    if drop < s.min_drop_fraction:
        return (
            None,
            f"z {z0:.0f} mm: no drop beside the edges (in {drop:.0%} of the slices where the camera sees "
            "beside them)",
        )
    px = band.pixels_vu[idx]
    margin = 2.0 * s.grid_mm
    seen_lo = not _near_border(px[p[:, 1] < y_min + margin], band.image_shape, s.border_px * band.stride)
    seen_hi = not _near_border(px[p[:, 1] > y_max - margin], band.image_shape, s.border_px * band.stride)
    cx, cy = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
    top_z = float(-(d + n[0] * cx + n[1] * cy) / n[2])
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
    return est, ""


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


def _crosses(a: TableEstimate, b: TableEstimate, threshold_mm: float) -> bool:
    """Whether two planes meet (come within ``threshold_mm``) over their footprints' overlap."""
    box = _overlap(a, b)
    if box is None:
        return False
    x = np.array([box[0], box[1], box[0], box[1]])
    y = np.array([box[2], box[2], box[3], box[3]])
    dz = a.z_at(x, y) - b.z_at(x, y)
    return bool(np.min(np.abs(dz)) < threshold_mm or dz.min() < 0.0 < dz.max())


def _table_of(found: list[TableEstimate], s: TableSettings) -> TableEstimate:
    """The table among the candidates that passed (strongest first).

    Two that meet over their footprints are one surface seen twice, the one with fewer inliers tilted
    through it and something else (the foot end of the table top and the bore below it); it is dropped.
    Of the rest, a candidate ``stack_gap_mm`` or more below the strongest and over half of the same
    footprint is the table, the higher one a body surface lying on it (a broad belly can pass every
    other test); the patient lies on the table, never under it.
    """
    alive = [True] * len(found)
    for i, a in enumerate(found):
        for j in range(i + 1, len(found)):
            if alive[i] and alive[j] and _crosses(a, found[j], s.ransac_threshold_mm):
                alive[j if found[j].inliers < a.inliers else i] = False
    kept = [est for est, ok in zip(found, alive, strict=True) if ok]
    best = kept[0]
    for est in sorted(kept[1:], key=lambda e: e.top_z_mm):
        box = _overlap(est, best)
        if est.top_z_mm < best.top_z_mm - s.stack_gap_mm and box is not None:
            shared = (box[1] - box[0]) * (box[3] - box[2])
            smaller = min(e.width_mm * (e.y_max_mm - e.y_min_mm) for e in (est, best))
            if shared >= 0.5 * smaller:
                best = est
    return best


def find_table(cloud: ScannerCloud, settings: TableSettings = DEFAULT_TABLE_SETTINGS) -> TableEstimate:
    """Find the table top in a scanner-frame cloud.

    Convention: scanner frame (IEC 61217), mm; see the module docstring for the plane convention. Works on
    any :class:`ScannerCloud` (full resolution, strided or voxel-downsampled); ``stride=2`` is plenty.

    Args:
        cloud: scanner-frame points of one frame (e.g. from
            :func:`~positioning.perception.pointcloud.scanner_points`).
        settings: thresholds (defaults suit a ceiling D435 / D455 over a CT table).

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
    lo, hi = settings.z_band_mm
    z = cloud.points_mm[:, 2]
    band = cloud.subset((z >= lo - settings.candidate_window_mm) & (z <= hi + settings.candidate_window_mm))
    if len(band) < 100:
        raise NoTableError(
            f"{_NO_TABLE} Only {len(band)} points at table height (z in [{lo:.0f}, {hi:.0f}] mm) out of "
            f"{len(cloud)}."
        )
    in_band = band.points_mm[:, 2]
    peaks = _height_peaks(in_band[(in_band >= lo) & (in_band <= hi)], settings)
    reasons = []
    found: list[TableEstimate] = []
    for z0 in peaks:  # strongest first
        if found and z0 > found[0].top_z_mm - settings.stack_gap_mm:
            continue  # once a table is found, only a surface under it can be the table instead
        est, why = _candidate(band, cloud, z0, settings)
        if est is not None:
            found.append(est)
        else:
            reasons.append(why)
    if found:
        return _table_of(found, settings)
    raise NoTableError(f"{_NO_TABLE} Candidates rejected: " + ("; ".join(reasons) or "none found") + ".")
