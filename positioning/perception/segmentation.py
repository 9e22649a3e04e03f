"""The patient: the points above the table top and within its footprint, as one connected body.

Method, on the (strided) pixel grid of scanner-frame points:

1. Height of every pixel above the table plane; candidates are higher than a threshold that scales with
   the table's RMS residual (the depth noise at the table: about 20 mm at 1.8 m for a D435, so about
   35-40 mm) and lower than a person standing beside the table. The gantry housing (beyond its front
   face and outside the bore, from the scanner's geometry) is never a candidate.
2. Neighbouring candidates whose heights differ by more than ``max_jump_mm`` are not connected (a depth
   edge: an arm above the chest, a person leaning over the table; the camera looks down, so a depth edge
   is a height jump): the lower side of each edge is cut, and 4-connected components are labelled with
   OpenCV. Cut pixels next to the patient are given back at the end.
3. The patient is the component with most pixels over the table top; other components over the table
   that rise like a body part join it. Patient pixels outside the footprint (table edges plus margins,
   table ends plus margins) or too high for a lying patient are dropped: blankets over the edge,
   clutter, the arm of someone touching the patient.
4. Another large component at standing height outside the footprint (not the gantry), or a large part
   of the patient's component that was dropped at standing height, is a second person: status
   ``SECOND_PERSON``, the patient is still returned. Too little body over the table: ``EMPTY_TABLE``.

Known limits: a head rest or cushion on the mattress that is higher than the threshold and touches the
body is taken as patient (it cannot be told from a body part by height alone); thin parts lying flat
(hands on the head holder) lower than the threshold are missed.

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm; masks are ``(H, W)``
bool at the depth image's full resolution, pixel ``(v, u)`` = (row, column).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from positioning.frames import Calibration, RGBDFrame
from positioning.perception.pointcloud import cloud_from_image, scanner_image
from positioning.perception.scene_net import SceneOutput
from positioning.perception.status import NoDepthError, PerceptionStatus, error_for_status
from positioning.perception.table import TableEstimate, TableSettings, find_table

__all__ = [
    "SegmentationSettings",
    "PatientSegment",
    "segment_patient",
    "segment_frame",
    "view_cut_ends_mm",
    "DEFAULT_SEGMENTATION_SETTINGS",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentationSettings:
    """Settings of :func:`segment_patient` (mm, scanner frame).

    Attributes:
        noise_sigmas: a patient pixel is at least this many times the table's RMS residual (the depth
            noise at the table: about 20 mm at 1.8 m for a D435) above the table plane; the silhouette of
            a body seen from above is at its widest point, well above the mattress.
        min_height_range_mm: bounds of that threshold.
        max_patient_height_mm: nothing of a lying patient is higher above the table top.
        max_height_mm: highest point considered at all (people standing beside the table).
        max_jump_mm: neighbouring pixels (at full resolution) whose heights differ by more than this are
            not connected; scaled with the stride.
        lateral_margin_mm: the footprint extends this far beyond each table edge (arms over the edge).
        foot_margin_mm: ... beyond the table's -y end (feet over the end).
        head_margin_mm: ... beyond its +y end (hands above the head, into the bore).
        gantry_front_y_mm: y of the gantry's front face (scanner geometry: half the gantry depth before
            the isocenter); components mostly beyond it are the gantry, never a second person.
        bore_radius_mm: radius of the gantry bore (scanner geometry). Beyond the front face only points
            inside the bore (``sqrt(x^2 + z^2)`` below the radius) can be the patient.
        gantry_tolerance_mm: points this close to the gantry's surfaces count as gantry.
        min_patient_area_mm2: less body than this (plan view) over the table means an empty table.
        min_patient_rise_mm: ... as does a highest point lower than this above the table.
        part_min_area_mm2, part_min_rise_mm: a separate component over the table joins the patient if it
            is at least this large and rises at least this high (a hand cut off by a depth edge).
        person_min_area_mm2, person_min_rise_mm: a component outside the footprint at least this large
            and this high above the table top is a second person.
        area_grid_mm: plan-view raster cell used to measure areas.
        scene_footprint_prob: with the scene network, cells it sees the body over with at least this
            probability take the lower threshold ``scene_min_height_mm`` (or the table's RMS, if higher).
        scene_min_height_mm: see ``scene_footprint_prob``.
        person_min_above_table_mm, person_reach_mm: with the scene network, another person counts where
            they rise this far above the table top within this distance of its footprint.
        min_valid_fraction: less valid depth than this in the frame is ``NO_DEPTH`` (:func:`segment_frame`).
    """

    noise_sigmas: float = 2.0
    min_height_range_mm: tuple[float, float] = (20.0, 60.0)
    max_patient_height_mm: float = 650.0
    max_height_mm: float = 2500.0
    max_jump_mm: float = 40.0
    lateral_margin_mm: float = 150.0
    foot_margin_mm: float = 400.0
    head_margin_mm: float = 150.0
    gantry_front_y_mm: float = -400.0
    bore_radius_mm: float = 350.0
    gantry_tolerance_mm: float = 30.0
    min_patient_area_mm2: float = 20_000.0
    min_patient_rise_mm: float = 80.0
    part_min_area_mm2: float = 2_000.0
    part_min_rise_mm: float = 80.0
    person_min_area_mm2: float = 40_000.0
    person_min_rise_mm: float = 300.0
    area_grid_mm: float = 10.0
    scene_footprint_prob: float = 0.6
    scene_min_height_mm: float = 12.0
    person_min_above_table_mm: float = 150.0
    person_reach_mm: float = 600.0
    min_valid_fraction: float = 0.05

    def __post_init__(self) -> None:
        lo, hi = self.min_height_range_mm
        if not 0 < lo <= hi < self.max_patient_height_mm <= self.max_height_mm:
            raise ValueError(
                "need 0 < min_height_range_mm[0] <= [1] < max_patient_height_mm <= max_height_mm, got "
                f"{self.min_height_range_mm}, {self.max_patient_height_mm}, {self.max_height_mm}"
            )
        if self.max_jump_mm <= 0 or self.area_grid_mm <= 0:
            raise ValueError(
                f"max_jump_mm and area_grid_mm must be > 0, got {self.max_jump_mm}, {self.area_grid_mm}"
            )


DEFAULT_SEGMENTATION_SETTINGS = SegmentationSettings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatientSegment:
    """The patient's points in one frame.

    Convention: scanner frame (IEC 61217), mm; ``mask`` is ``(H, W)`` at full resolution (with a stride
    each sampled pixel marks its ``stride x stride`` block); ``pixels_vu`` are full-resolution (row,
    column) of the points.

    Attributes:
        status: OK, SECOND_PERSON (patient returned, with a warning) or EMPTY_TABLE (no points).
        points_mm: ``(N, 3)`` float64 patient points.
        pixels_vu: ``(N, 2)`` int32 their pixels.
        mask: ``(H, W)`` bool patient pixels.
        stride: sampling step the segmentation ran at.
        area_mm2: plan-view area of the patient.
        max_height_mm: highest patient point above the table top (0 when empty).
        min_height_mm: the height threshold used (from the table's noise).
        second_person_area_mm2: plan-view area of what was taken for a second person (0 when none).
        dropped_points: candidate points above the table not given to the patient (clutter outside the
            footprint, other people, noise specks).
    """

    status: PerceptionStatus
    points_mm: np.ndarray
    pixels_vu: np.ndarray
    mask: np.ndarray
    stride: int
    area_mm2: float
    max_height_mm: float
    min_height_mm: float
    second_person_area_mm2: float
    dropped_points: int

    def __len__(self) -> int:
        return len(self.points_mm)

    @property
    def has_patient(self) -> bool:
        return self.status.has_patient and len(self.points_mm) > 0

    @property
    def message(self) -> str:
        return self.status.message

    def raise_for_status(self) -> PatientSegment:
        """Raise :class:`~positioning.perception.status.EmptyTableError` when there is no patient; else
        return self (SECOND_PERSON is a warning and does not raise)."""
        err = error_for_status(self.status)
        if err is not None:
            raise err
        return self


def _plan_area_mm2(xy_mm: np.ndarray, grid_mm: float) -> float:
    """Plan-view area covered by points: the number of occupied ``grid_mm`` cells times the cell area."""
    if len(xy_mm) == 0:
        return 0.0
    c = np.floor(xy_mm / grid_mm).astype(np.int64)
    c -= c.min(axis=0)
    occ = np.zeros((int(c[:, 0].max()) + 1, int(c[:, 1].max()) + 1), bool)
    occ[c[:, 0], c[:, 1]] = True
    return float(np.count_nonzero(occ)) * grid_mm**2


def _edge_cuts(height: np.ndarray, cand: np.ndarray, max_jump_mm: float) -> np.ndarray:
    """Candidate pixels on the far (lower) side of a height jump to a 4-neighbouring candidate.

    With the camera above the table, a depth edge is a jump in height; the lower side is the occluded,
    farther one.
    """
    cut = np.zeros_like(cand)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        ta, tb = tuple(a), tuple(b)
        step = height[tb] - height[ta]  # > 0: b is higher
        both = cand[ta] & cand[tb]
        cut[ta] |= both & (step > max_jump_mm)
        cut[tb] |= both & (step < -max_jump_mm)
    return cut


def _upsample(mask: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    if stride == 1:
        return mask
    return np.repeat(np.repeat(mask, stride, axis=0), stride, axis=1)[: shape[0], : shape[1]]


def _check_grid(
    points_image: np.ndarray, image_shape: tuple[int, int] | None, stride: int
) -> tuple[int, int]:
    if not isinstance(points_image, np.ndarray) or points_image.ndim != 3 or points_image.shape[2] != 3:
        raise ValueError(
            f"points_image must be a (h, w, 3) array, got {getattr(points_image, 'shape', None)}"
        )
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    h, w = points_image.shape[:2]
    if image_shape is None:
        return (h * stride, w * stride)
    if ((image_shape[0] + stride - 1) // stride, (image_shape[1] + stride - 1) // stride) != (h, w):
        raise ValueError(f"points_image {(h, w)} does not match image_shape {image_shape} at stride {stride}")
    return (int(image_shape[0]), int(image_shape[1]))


def segment_patient(
    points_image: np.ndarray,
    table: TableEstimate,
    *,
    image_shape: tuple[int, int] | None = None,
    stride: int = 1,
    settings: SegmentationSettings = DEFAULT_SEGMENTATION_SETTINGS,
    scene: SceneOutput | None = None,
) -> PatientSegment:
    """Segment the patient lying on the table.

    With the scene network's view of the frame (``scene``), what it sees as another person, another thing
    (a stretcher, a cart, a base) or a cushion beside the body is not the patient; within the body's
    footprint a lower height threshold applies (arms and legs sunk into a soft mattress rise little above
    its free top); and another person is reported when the network sees one (not from height alone:
    a stand's legs or a bystander's feet beside the table are not a person at the table).

    Convention: scanner frame (IEC 61217), mm; ``points_image[i, j]`` is the point of pixel ``(i * stride,
    j * stride)`` (as :func:`~positioning.perception.pointcloud.scanner_image` returns it), NaN = no depth.

    Args:
        points_image: ``(h, w, 3)`` scanner-frame points on the pixel grid.
        table: the table top of the same frame (:func:`~positioning.perception.table.find_table`).
        image_shape: ``(H, W)`` of the full-resolution image (default ``(h * stride, w * stride)``).
        stride: the sampling step of ``points_image``.
        settings: thresholds.
        scene: the scene network's output for the frame, or None (geometry alone).

    Returns:
        The patient segment; its status is OK, SECOND_PERSON or EMPTY_TABLE (never raises for those:
        call :meth:`PatientSegment.raise_for_status` to turn EMPTY_TABLE into an error).

    Raises:
        ValueError: ``points_image`` is not ``(h, w, 3)`` or does not match ``image_shape`` / ``stride``.

    Example:
        >>> table, segment = segment_frame(frame, calibration)  # doctest: +SKIP
        >>> segment.status, segment.points_mm.shape  # doctest: +SKIP
        (<PerceptionStatus.OK: 'OK'>, (34492, 3))
    """
    image_shape = _check_grid(points_image, image_shape, stride)
    s = settings
    pts = points_image.astype(np.float32, copy=False)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    nx, ny, nz = (np.float32(c) for c in table.normal)
    height = x * nx + y * ny + z * nz + np.float32(table.offset_mm)  # NaN where no depth
    min_h = float(np.clip(s.noise_sigmas * table.rms_mm, *s.min_height_range_mm))
    with np.errstate(invalid="ignore"):
        cand = (height > min_h) & (height < s.max_height_mm)
        if scene is not None:
            sample = scene.sampler(pts[..., :2].reshape(-1, 2))
            shape2 = height.shape

            def cell(grid: np.ndarray) -> np.ndarray:
                return sample(grid).reshape(shape2)

            footprint = cell(scene.footprint_prob)
            body = footprint > s.scene_footprint_prob
            low = max(s.scene_min_height_mm, table.rms_mm)
            cand |= body & (height > low) & (height < s.max_patient_height_mm)
            other = (cell(scene.prob("person")) > 0.5) | (cell(scene.prob("other")) > 0.5)
            beside = footprint < 0.3
            # a cushion beside the body, or the raised rim of a curved mattress, is not the patient
            cushion = (cell(scene.prob("on_patient")) > 0.5) & beside
            rim = (cell(scene.prob("support")) > 0.6) & beside
            cand &= ~(other | cushion | rim)
        # the gantry housing: beyond its front face and outside the bore opening
        r_lim = np.float32(s.bore_radius_mm - s.gantry_tolerance_mm)
        cand &= ~((y > s.gantry_front_y_mm - s.gantry_tolerance_mm) & (x * x + z * z > r_lim * r_lim))
    cut = _edge_cuts(height, cand, s.max_jump_mm * stride)
    n_lab, labels = cv2.connectedComponents((cand & ~cut).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    # Work on the labelled pixels only, grouped by label.
    flat = np.flatnonzero(labels.ravel())
    lab = labels.ravel()[flat]
    order = np.argsort(lab, kind="stable")
    flat, lab = flat[order], lab[order]
    starts = np.searchsorted(lab, np.arange(n_lab + 1))
    xc, yc, hc = x.ravel()[flat], y.ravel()[flat], height.ravel()[flat]
    core = (xc >= table.x_min_mm) & (xc <= table.x_max_mm) & (yc >= table.y_min_mm) & (yc <= table.y_max_mm)
    footprint = (
        (xc >= table.x_min_mm - s.lateral_margin_mm)
        & (xc <= table.x_max_mm + s.lateral_margin_mm)
        & (yc >= table.y_min_mm - s.foot_margin_mm)
        & (yc <= table.y_max_mm + s.head_margin_mm)
    )
    count = np.diff(starts)
    core_count = (
        np.add.reduceat(core.astype(np.int64), starts[:-1]) if len(flat) else np.zeros(n_lab, np.int64)
    )
    core_count[count == 0] = 0
    min_px = max(4, 64 // (stride * stride))
    big = [int(lb) for lb in np.flatnonzero(count >= min_px) if lb > 0]

    keep = np.zeros(len(flat), bool)  # labelled pixels given to the patient
    person_area = 0.0
    if big and core_count[big].max() > 0:
        main = max(big, key=lambda lb: core_count[lb])
        keep[starts[main] : starts[main + 1]] = True
        for lb in big:
            if lb == main:
                continue
            g = slice(starts[lb], starts[lb + 1])
            rise = float(hc[g].max())
            inside = footprint[g]
            if inside.mean() >= 0.6 and s.part_min_rise_mm <= rise <= s.max_patient_height_mm:
                if _plan_area_mm2(np.stack([xc[g], yc[g]], 1), s.area_grid_mm) >= s.part_min_area_mm2:
                    keep[g] = True
                    continue
            if rise < s.person_min_rise_mm or np.median(yc[g]) > s.gantry_front_y_mm - 50.0:
                continue
            if inside.mean() <= 0.5:
                out = ~inside
                person_area = max(
                    person_area, _plan_area_mm2(np.stack([xc[g][out], yc[g][out]], 1), s.area_grid_mm)
                )
    # Patient pixels outside the footprint or too high are dropped; a lot of them at standing height is
    # someone touching the patient.
    stray = keep & (~footprint | (hc > s.max_patient_height_mm))
    if np.any(stray):
        tall = stray & (hc > s.person_min_rise_mm)
        if np.any(tall):
            person_area = max(person_area, _plan_area_mm2(np.stack([xc[tall], yc[tall]], 1), s.area_grid_mm))
        keep &= ~stray
    patient = np.zeros(cand.shape, bool)
    patient.ravel()[flat[keep]] = True
    if np.any(patient):
        # give back the pixels cut on the far side of a depth edge next to the patient
        grown = cv2.dilate(patient.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        with np.errstate(invalid="ignore"):
            patient |= grown & cut & (height <= s.max_patient_height_mm)
    p_pts = pts[patient].astype(np.float64)
    area = _plan_area_mm2(p_pts[:, :2], s.area_grid_mm)
    rise = float(height[patient].max()) if len(p_pts) else 0.0
    dropped = int(np.count_nonzero(cand)) - len(p_pts)
    if scene is not None:
        # another person is what the network sees as one, at the table and above its top (someone who
        # may touch or hide the patient; not a bystander's feet on the floor, nor a stand's legs)
        above = np.nan_to_num(scene.top_z_mm, nan=-np.inf) > table.top_z_mm + s.person_min_above_table_mm
        xs = scene.origin_mm[0] + (np.arange(above.shape[1]) + 0.5) * scene.cell_mm
        ys = scene.origin_mm[1] + (np.arange(above.shape[0]) + 0.5) * scene.cell_mm
        m = s.person_reach_mm
        near = ((ys >= table.y_min_mm - m) & (ys <= table.y_max_mm + m))[:, None] & (
            (xs >= table.x_min_mm - m) & (xs <= table.x_max_mm + m)
        )[None, :]
        person = (scene.prob("person") > 0.5) & above & near
        person_area = float(np.count_nonzero(person)) * scene.cell_mm**2
    if area < s.min_patient_area_mm2 or rise < s.min_patient_rise_mm:
        status = PerceptionStatus.EMPTY_TABLE
        patient[:] = False
        p_pts, area, rise = p_pts[:0], 0.0, 0.0
    elif person_area >= s.person_min_area_mm2:
        status = PerceptionStatus.SECOND_PERSON
    else:
        status = PerceptionStatus.OK
    vv, uu = np.nonzero(patient)
    pixels = np.stack([vv * stride, uu * stride], axis=1).astype(np.int32)
    mask = _upsample(patient, stride, image_shape)
    for arr in (p_pts, pixels, mask):
        arr.setflags(write=False)
    return PatientSegment(
        status=status,
        points_mm=p_pts,
        pixels_vu=pixels,
        mask=mask,
        stride=int(stride),
        area_mm2=area,
        max_height_mm=rise,
        min_height_mm=min_h,
        second_person_area_mm2=person_area if person_area >= s.person_min_area_mm2 else 0.0,
        dropped_points=dropped,
    )


def segment_frame(
    frame: RGBDFrame,
    calibration: Calibration,
    *,
    stride: int = 1,
    table_stride: int = 2,
    table_settings: TableSettings | None = None,
    settings: SegmentationSettings = DEFAULT_SEGMENTATION_SETTINGS,
) -> tuple[TableEstimate, PatientSegment]:
    """Table and patient of one frame: scanner points, :func:`find_table`, :func:`segment_patient`.

    Convention: scanner frame (IEC 61217), mm; see :func:`segment_patient`.

    Args:
        frame: the RGB-D frame.
        calibration: the room's camera-to-scanner calibration.
        stride: sampling step for the segmentation (1 = every pixel).
        table_stride: sampling step for the table fit (a multiple of ``stride``).
        table_settings: settings of :func:`find_table` (default: its defaults).
        settings: settings of :func:`segment_patient`.

    Returns:
        ``(table, segment)``; ``segment.status`` may be EMPTY_TABLE or SECOND_PERSON.

    Raises:
        NoDepthError: the frame has (almost) no valid depth.
        NoTableError: no table in view.
        ValueError: bad strides.
    """
    if table_stride % stride:
        raise ValueError(f"table_stride ({table_stride}) must be a multiple of stride ({stride})")
    if frame.valid_fraction < settings.min_valid_fraction:
        err = error_for_status(
            PerceptionStatus.NO_DEPTH,
            f"({frame.valid_fraction:.1%} valid pixels < {settings.min_valid_fraction:.0%})",
        )
        assert isinstance(err, NoDepthError)
        raise err
    image = scanner_image(frame, calibration, stride=stride)
    k = table_stride // stride
    cloud = cloud_from_image(image[::k, ::k], image_shape=frame.intrinsics.shape, stride=table_stride)
    table = find_table(cloud) if table_settings is None else find_table(cloud, table_settings)
    segment = segment_patient(
        image, table, image_shape=frame.intrinsics.shape, stride=stride, settings=settings
    )
    return table, segment


def view_cut_ends_mm(
    segment: PatientSegment,
    valid: np.ndarray,
    *,
    border_px: int = 4,
    end_band_mm: float = 150.0,
    min_points: int = 20,
    min_span_share: float = 0.5,
) -> tuple[float, ...]:
    """Where the body leaves the image at its ends along the table: the scanner ``y`` (mm) of each seen
    end of the body (the 0.5th / 99.5th percentile of its points' ``y``) where the border of the depth
    image's valid part crosses the body: in its last ``end_band_mm``, at least ``min_points`` points
    (fewer with a stride) lie within ``border_px`` pixels of that border, and they span at least
    ``min_span_share`` of the band's width across the table (a body whose side runs along the image's
    edge is not cut there). The valid part is ``valid`` (``(H, W)`` bool pixels with depth) less the
    pixels without depth connected to the image's edge, such as the band a stereo camera has at its left
    edge. The body goes on out of view at such an end, so what lies near it (a hip joint with the thighs
    cut off, a shoulder with the head unseen) is placed with part of the body unseen. Empty when the body
    is seen whole along the table. Not seen here: a body going on into the gantry's bore (the camera sees
    the housing in front of it), and a dark surface without depth joined to the image's edge counts as
    the edge.

    Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry), mm.
    """
    if not segment.has_patient:
        return ()
    x, y = segment.points_mm[:, 0], segment.points_mm[:, 1]
    v, u = segment.pixels_vu[:, 0], segment.pixels_vu[:, 1]
    # beyond the view: the image's edge and the pixels without depth connected to it (a stereo camera's
    # band at its left edge, whose width grows with nearness), not holes inside the image
    invalid = np.pad(~np.asarray(valid, bool), 1, constant_values=True).astype(np.uint8)
    _, labels = cv2.connectedComponents(invalid, connectivity=4)
    outside = (labels == labels[0, 0]).astype(np.uint8)  # the padding ring is the image's edge
    b = border_px + segment.stride
    near_outside = cv2.dilate(outside, np.ones((2 * b + 1, 2 * b + 1), np.uint8))[1:-1, 1:-1].astype(bool)
    h, w = near_outside.shape
    at_border = near_outside[np.clip(v, 0, h - 1), np.clip(u, 0, w - 1)]
    need = max(5, min_points // segment.stride**2)

    def width(sel: np.ndarray) -> float:
        q5, q95 = np.percentile(x[sel], [5.0, 95.0])
        return float(q95 - q5)

    lo, hi = (float(q) for q in np.percentile(y, [0.5, 99.5]))
    ends = []
    for end, band in ((lo, y < lo + end_band_mm), (hi, y > hi - end_band_mm)):
        cut = band & at_border
        if np.count_nonzero(cut) >= need and width(cut) >= min_span_share * width(band):
            ends.append(end)
    return tuple(ends)
