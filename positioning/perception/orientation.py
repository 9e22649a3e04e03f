"""DICOM patient position (HFS, HFP, FFS, FFP, HFDL, HFDR, FFDL, FFDR) and arm state from 3-D landmarks.

The patient position is three decisions, each from geometric evidence that does not depend on the 2-D
backend's left/right labels:

1. **Head first or feet first**: the head group (nose, eyes, ears, shoulders) against the foot group
   (hips, knees, ankles) along scanner y.
2. **Lateral decubitus or not**: the nose lies well to one side of the body's centre line (shoulder and
   hip midpoints; with one shoulder or hip unseen, the seen one projected onto the axis across the other
   pair) in the horizontal plane; the shoulders and hips are close together horizontally (the
   shoulder line is vertical, not horizontal); optionally, the trunk is narrow for its length (from the
   patient's surface points).
3. **Supine or prone** (face up or down), five cues summed:

   * *head against hips* (landmarks): supine, the face is the top of the head and lies level with the
     hips' surface; prone, the back of the head is seen, far lower than the buttocks. Relative to the
     shoulder-hip distance, ``(z_head - z_hips) / torso`` (visible surface heights) was >= -0.061 on all
     64 simulated supine sessions and <= -0.215 on all 60 prone ones (seeds 100-101, 200-205 and
     300-303); the boundary is -0.15. The head's height is the higher of the face landmarks' surface and
     the surface profile's head (below): MediaPipe puts the face off the head at times (beyond the
     crown on no depth, prone; on the forearms crossed above the head, obese patients), always lower.
   * *the surface profile* (patient points, :func:`axial_profile`: the top of the body along its centre
     line): the head window's top against the hips' (prone: the buttocks are the highest point of the
     body, the back falls off toward a low head), boundary -0.18; and the lower trunk against the hips
     (prone: the lumbar hollow lies below the buttocks; supine: the abdomen is level with or above the
     pelvis), boundary -0.06. On 245 simulated sessions (seeds 500-719 and 800-871, MediaPipe) each
     cue alone overlapped by a few hundredths between supine and prone (obese supine patients, whose
     belly rises far above the pelvis, against prone patients who hold the head high); the sum
     separated every session whose skeleton was read the right way round.
   * two weak cues: the nose above the ears (where the face points; strong on joint positions, weak on
     lifted surface points, because prone the face is hidden and the nose pixel shows the back of the
     head), and the backend's own left/right labels (the chirality of left minus right against the head
     direction): MediaPipe gets them right for supine patients but swaps them for most prone patients
     with raised arms (it then believes it sees a face), so labels that say supine weigh little and
     labels that say prone weigh much.

The patient's left then follows from the geometry: ``left = superior x anterior`` (scanner frame). When
the labels' left points the other way, :attr:`OrientationResult.labels_swapped` is set and
:func:`swap_left_right` corrects the landmarks.

Arm state (:func:`estimate_arm_state`): ``raised`` when a wrist (else elbow) lies superior to the
shoulders by more than a fraction of the shoulder-hip distance; ``chest`` when it lies medial (near the
body's centre line) and on the anterior trunk surface; ``sides`` otherwise. When the two arms differ, the
state of the arm more in the way of a trunk scan wins (chest over sides over raised), with lower
confidence.

Order of use: lift with the default (supine) offsets; :func:`estimate_orientation` (it reads the visible
surface heights, which do not depend on the offsets); re-offset for the position
(:func:`~positioning.perception.lifting.reoffset_landmarks` with ``depth_offsets_for(position)``); swap
the labels if :attr:`OrientationResult.labels_swapped`; then :func:`estimate_arm_state` (in lateral
decubitus it needs the re-offset points: the hidden shoulder lies far below the visible one).

Limitations: the supine/prone rule and the arm thresholds were set on simulated bodies (``anny``, bald,
face straight up or down); a prone patient with the head turned to the side, or a supine one with a
thick pillow, may need new numbers; the surface profile assumes a level table and a body lying along it.
Prone with the hands "on the chest" (under the body) the hands are invisible and the arm state reads
``sides`` (a wrist seen on the back is not on the chest). MediaPipe swapped the labels on 24 of the 60
simulated prone sessions (arms raised, mostly). A skeleton read upside down (the face on the buttocks)
gives the wrong head direction and everything after it; the MediaPipe backend guards against it
(:func:`~positioning.perception.landmarks.mediapipe_backend.leg_to_torso_ratio`).

Convention: scanner frame (IEC 61217: +x lateral, +y into the gantry, +z up), mm. Head first = head toward
+y; supine = face up (+z). Body axes per position (S superior, P posterior, L the patient's left,
``L = P x S``) as in :data:`BODY_AXES`. Landmark names are COCO-17, the patient's own left and right.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from positioning.conventions import BODY_AXES, ArmState, PatientPosition
from positioning.perception.lifting import Landmarks3D

__all__ = [
    "PatientPosition",
    "ArmState",
    "BODY_AXES",
    "OrientationSettings",
    "OrientationResult",
    "ArmStateSettings",
    "ArmStateResult",
    "position_from_axes",
    "axial_profile",
    "estimate_orientation",
    "estimate_arm_state",
    "swap_left_right",
]


_HEAD = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
_UPPER = (*_HEAD, "left_shoulder", "right_shoulder")
_LOWER = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
_PAIRS = ("shoulder", "hip", "elbow", "wrist", "knee", "ankle", "eye", "ear")


def position_from_axes(head_first: bool, anterior: np.ndarray) -> PatientPosition:
    """The position code whose body axes best match a head direction and an anterior direction.

    Convention: scanner frame; ``anterior`` is a (roughly unit) vector, the direction the face points.

    Args:
        head_first: True when the head points toward +y.
        anterior: ``(3,)`` direction of the patient's front.

    Returns:
        The code among those with the given head direction whose anterior (``-posterior``) is closest.
    """
    a = np.asarray(anterior, dtype=np.float64)
    best, best_dot = None, -math.inf
    for code, (s, p, _l) in BODY_AXES.items():
        if (s[1] > 0) != bool(head_first):
            continue
        dot = float(-p @ a)
        if dot > best_dot:
            best, best_dot = code, dot
    assert best is not None
    return best


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrientationSettings:
    """Weights and scales of the orientation evidence (see the module docstring).

    Each cue is turned into a score ``clip((value - offset) / scale, -clip, clip)`` and the weighted
    scores are summed per decision; a decision's confidence is ``tanh(|sum|)``.

    Attributes:
        min_confidence: landmarks with confidence at or below this are ignored.
        head_first_scale_mm: y separation of the head and foot groups that counts as one unit.
        head_hip_offset: ``(z_head - z_hips) / torso`` at the supine/prone boundary.
        head_hip_scale: one unit of that ratio.
        face_scale_mm: ``z_nose - z_ears`` that counts as one unit toward supine.
        face_weight: weight of the nose-above-ears cue.
        labels_weight: weight of the backend's left/right labels when they imply supine (weak: MediaPipe
            believes it sees a face on most prone patients with raised arms).
        labels_prone_weight: their weight when they imply prone (strong: they never did for a supine
            patient).
        nose_lateral_offset_mm: nose distance from the body's centre line at the decubitus boundary.
        nose_lateral_scale_mm: one unit of it.
        pair_separation_offset: horizontal shoulder/hip separation over torso length at the boundary.
        pair_separation_scale: one unit of it.
        pair_separation_weight: weight of that cue (MediaPipe sometimes collapses a prone patient's
            shoulders, so it weighs less).
        shoulder_vertical_weight: weight of "the shoulder line is vertical".
        width_offset: trunk width over torso length at the decubitus boundary (patient points only).
        width_scale: one unit of it.
        clip: bound of each cue's score.
        labels_swap_threshold: the labels are called swapped when their normalised agreement with the
            geometric left is below minus this.
        profile_band_fraction: the surface profile cues read the patient points within this times
            ``torso`` of the body's centre line (the line through the hip midpoint along the body axis).
        profile_bin_fraction: profile bin length along the body axis, times ``torso``.
        profile_quantile: a bin's height is this percentile of its points' z (its top, robust to noise).
        profile_min_points: bins with fewer points are empty.
        head_window: the head's bins (multiples of ``torso`` superior of the hip midpoint; the true nose
            lies at 1.3-1.45).
        hips_window: the hips' bins.
        rise_window: the lower trunk's bins, compared with the hips' (prone: the lumbar hollow, lower
            than the buttocks; supine: the abdomen, level with or above the pelvis).
        cloud_head_hip_offset: ``(z_head - z_hips) / torso`` from the profile at the supine/prone
            boundary.
        cloud_head_hip_scale: one unit of it.
        rise_offset: ``(mean z of the lower trunk bins - mean z of the hip bins) / torso`` at the boundary.
        rise_scale: one unit of it.
    """

    min_confidence: float = 0.2
    head_first_scale_mm: float = 150.0
    head_hip_offset: float = -0.15
    head_hip_scale: float = 0.05
    face_scale_mm: float = 60.0
    face_weight: float = 0.25
    labels_weight: float = 0.25
    labels_prone_weight: float = 1.0
    nose_lateral_offset_mm: float = 60.0
    nose_lateral_scale_mm: float = 20.0
    pair_separation_offset: float = 0.25
    pair_separation_scale: float = 0.1
    pair_separation_weight: float = 0.5
    shoulder_vertical_weight: float = 0.5
    width_offset: float = 0.45
    width_scale: float = 0.08
    clip: float = 3.0
    labels_swap_threshold: float = 0.3
    profile_band_fraction: float = 0.12
    profile_bin_fraction: float = 0.05
    profile_quantile: float = 90.0
    profile_min_points: int = 5
    head_window: tuple[float, float] = (1.1, 1.7)
    hips_window: tuple[float, float] = (-0.15, 0.15)
    rise_window: tuple[float, float] = (0.15, 0.45)
    cloud_head_hip_offset: float = -0.18
    cloud_head_hip_scale: float = 0.05
    rise_offset: float = -0.06
    rise_scale: float = 0.03


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrientationResult:
    """The estimated patient position and why.

    Attributes:
        position: the DICOM code, or None when the landmarks do not allow a decision.
        confidence: in [0, 1], the product of the three decisions' confidences.
        head_first: the head points toward +y.
        decubitus: lying on a side.
        anterior: ``(3,)`` unit vector, where the patient's front points (scanner frame).
        superior: ``(3,)`` unit vector, where the head points.
        left: ``(3,)`` unit vector, the patient's left from the geometry (``superior x anterior``).
        labels_swapped: the backend's left/right labels contradict the geometry (correct them with
            :func:`swap_left_right`).
        evidence: named cue values and scores (mm, ratios and unit-less scores; NaN = not available).
    """

    position: PatientPosition | None
    confidence: float
    head_first: bool
    decubitus: bool
    anterior: np.ndarray
    superior: np.ndarray
    left: np.ndarray
    labels_swapped: bool
    evidence: dict[str, float]


def _score(value: float, offset: float, scale: float, clip: float) -> float:
    if not math.isfinite(value):
        return 0.0
    return float(np.clip((value - offset) / scale, -clip, clip))


class _Points:
    """Name lookups over a :class:`Landmarks3D` with a confidence threshold."""

    def __init__(self, landmarks: Landmarks3D, min_confidence: float) -> None:
        self.lm = landmarks
        ok = landmarks.valid(min_confidence)
        self.points = {n: landmarks.points_mm[i] for i, n in enumerate(landmarks.names) if ok[i]}
        surf = landmarks.surface_mm
        self.surface = {
            n: (surf[i] if np.all(np.isfinite(surf[i])) else landmarks.points_mm[i])
            for i, n in enumerate(landmarks.names)
            if ok[i]
        }

    def mean(self, names: tuple[str, ...], *, surface: bool = False) -> np.ndarray:
        src = self.surface if surface else self.points
        have = [src[n] for n in names if n in src]
        return np.mean(have, axis=0) if have else np.full(3, np.nan)

    def pair_delta(self, part: str) -> np.ndarray:
        a, b = self.points.get(f"left_{part}"), self.points.get(f"right_{part}")
        return a - b if a is not None and b is not None else np.full(3, np.nan)

    def trunk_midpoints(self, min_span_mm: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
        """Shoulder and hip midpoints (NaN where the pair is missing).

        With one shoulder (or one hip) missing, the one seen is no midpoint: it lies half a shoulder width
        to its side and would turn the body axis (by 10-15 degrees, moving the nose 100+ mm off the
        centre line). When the other pair is complete and lies across the body (horizontal span above
        ``min_span_mm``), the midpoint is the seen joint projected onto the perpendicular to that pair's
        line through its midpoint.
        """
        mids = {}
        for part in ("shoulder", "hip"):
            mids[part] = self.mean((f"left_{part}", f"right_{part}"))
        for part, other in (("shoulder", "hip"), ("hip", "shoulder")):
            seen = [self.points[n] for n in (f"left_{part}", f"right_{part}") if n in self.points]
            span = self.pair_delta(other)[:2]
            if len(seen) != 1 or not np.all(np.isfinite(span)) or np.linalg.norm(span) <= min_span_mm:
                continue
            axis = np.array([-span[1], span[0]]) / np.linalg.norm(span)  # horizontal, across the pair line
            base = mids[other]
            mid = seen[0].copy()
            mid[:2] = base[:2] + axis * float((seen[0] - base)[:2] @ axis)
            mids[part] = mid
        return mids["shoulder"], mids["hip"]


def axial_profile(
    points_mm: np.ndarray,
    origin_mm: np.ndarray,
    superior_xy: np.ndarray,
    torso_mm: float,
    *,
    band_fraction: float = 0.12,
    bin_fraction: float = 0.05,
    quantile: float = 90.0,
    min_points: int = 5,
    extent: tuple[float, float] = (-2.5, 2.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Height of the body's surface along its centre line: per bin along the body axis, a high
    percentile of the z of the patient points near the centre line.

    Convention: scanner frame (IEC 61217), mm. The centre line runs through ``origin_mm`` (x, y) along the
    horizontal unit vector ``superior_xy``; bin positions are in multiples of ``torso_mm`` from the origin
    (positive = superior). Only differences of the returned z matter (the table plane is not needed).

    Args:
        points_mm: ``(N, 3)`` patient surface points.
        origin_mm: ``(2,)`` or ``(3,)`` point on the centre line (its x and y are used).
        superior_xy: ``(2,)`` horizontal unit vector toward the head.
        torso_mm: length unit (the shoulder-hip distance), > 0.
        band_fraction: points within this times ``torso_mm`` of the centre line count.
        bin_fraction: bin length, times ``torso_mm``.
        quantile: percentile of z reported per bin.
        min_points: bins with fewer points are NaN.
        extent: first and last bin edge, times ``torso_mm``.

    Returns:
        ``(centres, z_mm)``: ``(K,)`` bin centres (multiples of ``torso_mm``) and ``(K,)`` heights (NaN
        where empty).

    Raises:
        ValueError: ``points_mm`` is not ``(N, 3)`` or ``torso_mm`` is not positive.
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_mm must be (N, 3), got {pts.shape}")
    if not torso_mm > 0:
        raise ValueError(f"torso_mm must be > 0, got {torso_mm}")
    e = np.asarray(superior_xy, dtype=np.float64)[:2]
    lateral = np.array([-e[1], e[0]])
    rel = pts[:, :2] - np.asarray(origin_mm, dtype=np.float64)[:2]
    along = rel @ e / torso_mm
    lo, hi = extent
    n_bins = round((hi - lo) / bin_fraction)
    keep = (
        (np.abs(rel @ lateral) < band_fraction * torso_mm)
        & (along >= lo)
        & (along < lo + n_bins * bin_fraction)
    )
    k = np.floor((along[keep] - lo) / bin_fraction).astype(np.int64)
    z = pts[keep, 2]
    centres = lo + (np.arange(n_bins) + 0.5) * bin_fraction
    heights = np.full(n_bins, np.nan)
    if len(k):
        order = np.lexsort((z, k))
        ks, zs = k[order], z[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        counts = np.diff(np.r_[starts, len(ks)])
        full = counts >= min_points
        starts, counts = starts[full], counts[full]
        # the linear-interpolation percentile of each bin's sorted z (numpy's default method)
        pos = starts + (counts - 1) * (quantile / 100.0)
        below = np.floor(pos).astype(np.int64)
        above = np.minimum(below + 1, starts + counts - 1)
        frac = pos - below
        heights[ks[starts]] = zs[below] * (1.0 - frac) + zs[above] * frac
    return centres, heights


def _window(centres: np.ndarray, heights: np.ndarray, window: tuple[float, float], how: str) -> float:
    """Max or mean of the profile's bins within ``window`` (NaN with fewer than two bins)."""
    sel = (centres >= window[0]) & (centres <= window[1]) & np.isfinite(heights)
    if np.count_nonzero(sel) < 2:
        return math.nan
    return float(np.max(heights[sel]) if how == "max" else np.mean(heights[sel]))


def estimate_orientation(
    landmarks: Landmarks3D,
    *,
    patient_points_mm: np.ndarray | None = None,
    settings: OrientationSettings = OrientationSettings(),
) -> OrientationResult:
    """DICOM patient position from 3-D landmarks (and optionally the patient's surface points).

    Convention: scanner frame (IEC 61217), mm; ``landmarks.surface_mm`` (the visible surface) is used for
    the height cues where finite, ``points_mm`` elsewhere. See the module docstring for the cues.

    Args:
        landmarks: lifted (or hand-made) landmarks with COCO-17 names.
        patient_points_mm: optional ``(N, 3)`` patient surface points (scanner frame), for the trunk-width
            cue of the decubitus decision and the surface profile cues of the supine/prone decision
            (without them those cues are 0 and the landmarks alone decide).
        settings: weights and scales.

    Returns:
        :class:`OrientationResult`; ``position`` is None (confidence 0) when the head or foot group, or
        the shoulders and hips together, are missing.

    Raises:
        ValueError: ``patient_points_mm`` is not ``(N, 3)``.

    Example:
        >>> result = estimate_orientation(lifted)  # doctest: +SKIP
        >>> result.position, round(result.confidence, 2)  # doctest: +SKIP
        (<PatientPosition.HFS: 'HFS'>, 0.97)
    """
    if patient_points_mm is not None:
        patient_points_mm = np.asarray(patient_points_mm, dtype=np.float64)
        if patient_points_mm.ndim != 2 or patient_points_mm.shape[1] != 3:
            raise ValueError(f"patient_points_mm must be (N, 3), got {patient_points_mm.shape}")
    s = settings
    pts = _Points(landmarks, s.min_confidence)
    ev: dict[str, float] = {}
    nan3 = np.full(3, np.nan)

    def fail(reason: str) -> OrientationResult:
        ev["failed_" + reason] = 1.0
        return OrientationResult(
            position=None, confidence=0.0, head_first=True, decubitus=False, anterior=nan3, superior=nan3,
            left=nan3, labels_swapped=False, evidence=ev,
        )  # fmt: skip

    # 1. head first or feet first ------------------------------------------------------------------------
    upper, lower = pts.mean(_UPPER), pts.mean(_LOWER)
    dy = float(upper[1] - lower[1])
    ev["head_minus_feet_y_mm"] = dy
    if not math.isfinite(dy):
        return fail("no_head_or_feet")
    head_first = dy > 0
    conf_hf = math.tanh(abs(dy) / s.head_first_scale_mm)

    # Body centre line in the horizontal plane (shoulder and hip midpoints, else the groups' means).
    sh_mid, hip_mid = pts.trunk_midpoints()
    have_joints = bool(np.all(np.isfinite(sh_mid)) and np.all(np.isfinite(hip_mid)))
    if not have_joints:
        sh_mid, hip_mid = upper, lower
    axis_xy = (sh_mid - hip_mid)[:2]
    torso_mm = float(np.linalg.norm(axis_xy))
    ev["torso_mm"] = torso_mm
    if not torso_mm > 1.0:
        return fail("no_torso")
    e_xy = axis_xy / torso_mm
    superior = np.array([e_xy[0], e_xy[1], 0.0])
    lateral = np.array([-e_xy[1], e_xy[0], 0.0])  # horizontal, perpendicular to the body axis

    # 2. decubitus or not ----------------------------------------------------------------------------------
    nose = pts.points.get("nose")
    head_pt = nose if nose is not None else pts.mean(_HEAD)
    nose_lat = float((head_pt - hip_mid) @ lateral) if np.all(np.isfinite(head_pt)) else math.nan
    ev["nose_lateral_mm"] = nose_lat
    seps = [abs(float(pts.pair_delta(p) @ lateral)) / torso_mm for p in ("shoulder", "hip")]
    seps = [v for v in seps if math.isfinite(v)]
    sep = float(np.mean(seps)) if seps else math.nan
    ev["pair_separation"] = sep
    dsh = pts.pair_delta("shoulder")
    vert = float(abs(dsh[2]) - abs(dsh @ lateral)) / torso_mm if np.all(np.isfinite(dsh)) else math.nan
    ev["shoulder_vertical"] = vert
    width = math.nan
    if patient_points_mm is not None and len(patient_points_mm) >= 20:
        rel = patient_points_mm[:, :2] - (sh_mid[:2] + hip_mid[:2]) / 2
        band = np.abs(rel @ e_xy) < 0.3 * torso_mm
        if np.count_nonzero(band) >= 20:
            lat = rel[band] @ lateral[:2]
            width = float(np.percentile(lat, 98) - np.percentile(lat, 2)) / torso_mm
    ev["trunk_width"] = width
    c = s.clip
    dec_scores = {
        "nose_lateral": _score(abs(nose_lat), s.nose_lateral_offset_mm, s.nose_lateral_scale_mm, c),
        "pair_separation": s.pair_separation_weight
        * -_score(sep, s.pair_separation_offset, s.pair_separation_scale, 2.0),
        "shoulder_vertical": s.shoulder_vertical_weight * _score(vert, 0.0, 0.3, c),
        "trunk_width": -_score(width, s.width_offset, s.width_scale, c),
    }
    for k, v in dec_scores.items():
        ev[f"decubitus_score_{k}"] = v
    dec_total = sum(dec_scores.values())
    ev["decubitus_score"] = dec_total
    decubitus = dec_total > 0
    conf_dec = math.tanh(abs(dec_total))

    # Labels' left (chirality of the backend's left/right).
    deltas = [pts.pair_delta(p) for p in _PAIRS]
    deltas = [d for d in deltas if np.all(np.isfinite(d))]
    left_labels = np.mean(deltas, axis=0) if deltas else nan3

    # 3. which side is anterior ----------------------------------------------------------------------------
    if not decubitus:
        head_lm_z = pts.mean(("nose", "left_eye", "right_eye"), surface=True)[2]
        if not math.isfinite(head_lm_z):
            head_lm_z = pts.mean(("left_ear", "right_ear"), surface=True)[2]
        hips_z = pts.mean(("left_hip", "right_hip"), surface=True)[2]
        # The surface profile along the centre line (patient points): the head's top, the hips' and the
        # lower trunk's (see the module docstring).
        cloud_head_z = cloud_hips_z = rise = math.nan
        if patient_points_mm is not None and have_joints:
            centres, heights = axial_profile(
                patient_points_mm, hip_mid, e_xy, torso_mm, band_fraction=s.profile_band_fraction,
                bin_fraction=s.profile_bin_fraction, quantile=s.profile_quantile,
                min_points=s.profile_min_points,
            )  # fmt: skip
            cloud_head_z = _window(centres, heights, s.head_window, "max")
            cloud_hips_z = _window(centres, heights, s.hips_window, "max")
            rise = (
                _window(centres, heights, s.rise_window, "mean")
                - _window(centres, heights, s.hips_window, "mean")
            ) / torso_mm
        # The face landmarks' surface can miss the head (put on the hands above it, or beyond the crown
        # on no depth); the head is at least as high as the profile's head window says.
        heads = [v for v in (head_lm_z, cloud_head_z) if math.isfinite(v)]
        head_z = max(heads) if heads else math.nan
        head_hip = (head_z - hips_z) / torso_mm
        cloud_head_hip = (cloud_head_z - cloud_hips_z) / torso_mm
        ears = pts.mean(("left_ear", "right_ear"))
        face = float(nose[2] - ears[2]) if nose is not None and np.all(np.isfinite(ears)) else math.nan
        lab = math.nan
        if np.all(np.isfinite(left_labels)) and np.linalg.norm(left_labels) > 1.0:
            # the anterior the labels imply: A = L x S (S from the hips toward the shoulders)
            lab = float(np.cross(left_labels, superior)[2] / np.linalg.norm(left_labels))
        ev["landmark_head_z_mm"] = float(head_lm_z)
        ev["cloud_head_z_mm"] = cloud_head_z
        ev["head_minus_hips_z_over_torso"] = float(head_hip)
        ev["cloud_head_minus_hips_z_over_torso"] = float(cloud_head_hip)
        ev["cloud_hip_rise_over_torso"] = float(rise)
        ev["nose_minus_ears_z_mm"] = face
        ev["labels_anterior_z"] = lab
        labels_weight = s.labels_weight if not lab < 0 else s.labels_prone_weight
        sup_scores = {
            "head_hip": _score(head_hip, s.head_hip_offset, s.head_hip_scale, c),
            "cloud_head_hip": _score(cloud_head_hip, s.cloud_head_hip_offset, s.cloud_head_hip_scale, c),
            "hip_rise": _score(rise, s.rise_offset, s.rise_scale, c),
            "face": s.face_weight * _score(face, 0.0, s.face_scale_mm, c),
            "labels": labels_weight * (0.0 if not math.isfinite(lab) else lab),
        }
        for k, v in sup_scores.items():
            ev[f"supine_score_{k}"] = v
        total = sum(sup_scores.values())
        ev["supine_score"] = total
        anterior = np.array([0.0, 0.0, 1.0 if total >= 0 else -1.0])
        conf_side = math.tanh(abs(total))
    else:
        lab = math.nan
        ev["labels_anterior_z"] = lab
        side = math.copysign(1.0, nose_lat) if math.isfinite(nose_lat) else 1.0
        anterior = side * lateral
        conf_side = math.tanh(abs(nose_lat) / s.nose_lateral_scale_mm) if math.isfinite(nose_lat) else 0.0
        ev["anterior_score"] = conf_side
    anterior = anterior / np.linalg.norm(anterior)
    position = position_from_axes(head_first, anterior)
    sup_axis, post_axis, left_axis = BODY_AXES[position]

    # Labels consistency: the backend's left against the geometric left.
    agree = math.nan
    if np.all(np.isfinite(left_labels)) and np.linalg.norm(left_labels) > 1.0:
        agree = float(left_labels @ left_axis / np.linalg.norm(left_labels))
    ev["labels_agreement"] = agree
    swapped = math.isfinite(agree) and agree < -s.labels_swap_threshold

    confidence = float(np.clip(conf_hf * conf_dec * conf_side, 0.0, 1.0))
    return OrientationResult(
        position=position,
        confidence=confidence,
        head_first=head_first,
        decubitus=decubitus,
        anterior=-post_axis.copy(),
        superior=sup_axis.copy(),
        left=left_axis.copy(),
        labels_swapped=bool(swapped),
        evidence=ev,
    )


def swap_left_right(landmarks: Landmarks3D) -> Landmarks3D:
    """The landmarks with every ``left_*`` and ``right_*`` pair exchanged (names keep their order).

    Use when :attr:`OrientationResult.labels_swapped` says the backend mixed up the patient's sides.
    """
    names = landmarks.names
    idx = list(range(len(names)))
    for i, n in enumerate(names):
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if n.startswith(a) and (b + n[len(a) :]) in names:
                idx[i] = names.index(b + n[len(a) :])
    return landmarks.replace(
        points_mm=landmarks.points_mm[idx],
        surface_mm=landmarks.surface_mm[idx],
        confidence=landmarks.confidence[idx],
        uv_px=landmarks.uv_px[idx],
    )


# ------------------------------------------------------------------------------------------- arm state


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArmStateSettings:
    """Thresholds of :func:`estimate_arm_state` (fractions of the shoulder-hip distance ``torso``).

    Attributes:
        min_confidence: landmarks at or below this confidence are ignored.
        raised_fraction: a wrist more than this times ``torso`` superior to the shoulder midpoint is
            raised (simulated raised wrists: 0.5-0.9, arms at the sides: -1.2 to -0.5).
        raised_elbow_fraction: the same for the elbow, used when the wrist is missing.
        medial_fraction: a wrist closer than this times ``torso`` to the body's centre line is medial
            (simulated hands on the chest: 0-0.14; arms at the sides: 0.24-0.5).
        chest_along_fractions: a medial wrist counts as on the chest between these multiples of
            ``torso`` along the body axis from the shoulders (simulated: -0.67 to -0.43).
        anterior_slack_mm: a chest wrist's surface lies no more than this below the trunk's (the mean
            of the shoulders' and hips' surfaces along the anterior axis); prone (anterior down) it must
            lie at least this far anterior of it (a visible wrist on the back is not on the chest).
        min_upper_arm_fraction: an arm without a wrist whose shoulder-elbow distance is below this times
            ``torso`` is implausible (the backend folded a lost arm onto the body) and ignored.
        min_forearm_fraction: an arm whose elbow-wrist distance is below this times ``torso`` is
            implausible.
        min_arm_fraction: an arm whose shoulder-elbow plus elbow-wrist distance is below this times
            ``torso`` is implausible. (The shoulder-elbow distance alone is no test when the wrist is
            seen: with raised arms MediaPipe often puts the shoulder up toward the elbow, down to 0.05
            ``torso`` from it, while the forearm stays at 0.33-0.88 and the sum at >= 0.5.)
        soft_mm: distance over which a test's margin maps to full confidence.
    """

    min_confidence: float = 0.2
    raised_fraction: float = 0.25
    raised_elbow_fraction: float = 0.05
    medial_fraction: float = 0.19
    chest_along_fractions: tuple[float, float] = (-0.95, -0.2)
    anterior_slack_mm: float = 30.0
    min_upper_arm_fraction: float = 0.15
    min_forearm_fraction: float = 0.18
    min_arm_fraction: float = 0.45
    soft_mm: float = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArmStateResult:
    """Arm state and why.

    Attributes:
        state: the overall :class:`ArmState`, or None when neither arm could be judged.
        confidence: in [0, 1].
        per_arm: ``{"left": ArmState | None, "right": ...}`` (the patient's sides as labelled).
        evidence: per arm: superior and medial distances (mm), anterior height (mm), and the scores.
    """

    state: ArmState | None
    confidence: float
    per_arm: dict[str, ArmState | None]
    evidence: dict[str, float]


_PRIORITY = {ArmState.CHEST: 2, ArmState.SIDES: 1, ArmState.RAISED: 0}


def estimate_arm_state(
    landmarks: Landmarks3D,
    orientation: OrientationResult,
    *,
    settings: ArmStateSettings = ArmStateSettings(),
) -> ArmStateResult:
    """Arm state (sides, raised, chest) from 3-D landmarks and the body axes of the patient position.

    Per arm, with ``w`` the wrist (the elbow when the wrist is missing), ``torso`` the shoulder-hip
    distance, the body axes of ``orientation`` (superior ``S``, anterior ``A``, lateral = the horizontal
    axis perpendicular to ``S`` and ``A``):

    * ``raised`` when ``(w - shoulder_mid) . S > raised_fraction * torso``;
    * ``chest`` when ``|(w - centre line) . lateral| < medial_fraction * torso``, ``w`` lies along ``S``
      between the hips and the shoulders, and the wrist's surface lies anterior of the trunk's
      (mean of the shoulders' and hips' surface along ``A``) minus ``anterior_slack_mm`` (prone: plus
      it; a wrist is needed: an elbow near the centre line is a lost arm, not a hand);
    * ``sides`` otherwise.

    An arm that is implausibly short (forearm below ``min_forearm_fraction``, upper arm plus forearm below
    ``min_arm_fraction``, or, without a wrist, upper arm below ``min_upper_arm_fraction`` times ``torso``:
    the backend folded a lost arm onto the body) is ignored.
    Each arm's confidence is ``tanh(margin / soft_mm) * sqrt(landmark confidence)``; with one arm only it
    is scaled by 0.7; when the arms differ, the arm more in the way of a trunk scan wins (chest over sides
    over raised) at half the smaller confidence.

    Convention: scanner frame (IEC 61217), mm. Pass landmarks re-offset for the position (see the module
    docstring) and with the labels corrected.

    Args:
        landmarks: 3-D landmarks (COCO-17 names).
        orientation: the patient position (its ``superior`` and ``anterior`` axes are used).
        settings: thresholds.

    Returns:
        :class:`ArmStateResult`; ``state`` is None when the shoulders and hips or both arms are missing.
    """
    s = settings
    pts = _Points(landmarks, s.min_confidence)
    ev: dict[str, float] = {}
    per_arm: dict[str, ArmState | None] = {"left": None, "right": None}
    sh_mid, hip_mid = pts.trunk_midpoints()
    if orientation.position is None or not (np.all(np.isfinite(sh_mid)) and np.all(np.isfinite(hip_mid))):
        return ArmStateResult(state=None, confidence=0.0, per_arm=per_arm, evidence=ev)
    sup, ant = orientation.superior, orientation.anterior
    lat = np.cross(sup, ant)
    torso = float(abs((sh_mid - hip_mid) @ sup))
    if not torso > 1.0:
        return ArmStateResult(state=None, confidence=0.0, per_arm=per_arm, evidence=ev)
    centre = (sh_mid + hip_mid) / 2
    trunk_ant = float(np.mean([pts.mean(g, surface=True) @ ant for g in (
        ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"))]))  # fmt: skip
    confs: dict[str, float] = {}
    for side in ("left", "right"):
        # limb lengths on the visible surface (independent of the surface-to-joint offsets)
        shoulder, elbow, wrist = (pts.surface.get(f"{side}_{j}") for j in ("shoulder", "elbow", "wrist"))
        upper_arm = (
            float(np.linalg.norm(shoulder - elbow)) / torso
            if shoulder is not None and elbow is not None
            else math.nan
        )
        forearm = (
            float(np.linalg.norm(elbow - wrist)) / torso
            if elbow is not None and wrist is not None
            else math.nan
        )
        ev[f"{side}_upper_arm_over_torso"] = upper_arm
        ev[f"{side}_forearm_over_torso"] = forearm
        folded = (
            forearm < s.min_forearm_fraction
            or upper_arm + forearm < s.min_arm_fraction
            or (math.isnan(forearm) and upper_arm < s.min_upper_arm_fraction)
        )
        if folded:
            ev[f"{side}_implausible_arm"] = 1.0  # a folded-up arm: the backend lost this arm
            continue
        joint = f"{side}_wrist" if wrist is not None else f"{side}_elbow"
        if joint not in pts.points:
            continue
        w, w_surf = pts.points[joint], pts.surface[joint]
        along = float((w - sh_mid) @ sup)
        medial = float(abs((w - centre) @ lat))
        anterior = float(w_surf @ ant - trunk_ant)
        raised_m = along - (s.raised_fraction if joint.endswith("wrist") else s.raised_elbow_fraction) * torso
        medial_m = s.medial_fraction * torso - medial
        lo, hi = s.chest_along_fractions
        between_m = min(along - lo * torso, hi * torso - along)
        # Face down the chest faces the table: a hand on it is under the body, and a medial wrist seen from
        # above lies on the back (or was misplaced there by the backend); it is on the chest only when
        # seen clearly anterior of (below) the trunk's surface.
        anterior_m = anterior + (s.anterior_slack_mm if ant[2] > -0.5 else -s.anterior_slack_mm)
        # Only a wrist can say "on the chest" (an elbow near the centre line is a lost arm, not a hand).
        chest_m = min(medial_m, between_m, anterior_m) if joint.endswith("wrist") else -math.inf
        ev.update({
            f"{side}_joint_is_wrist": float(joint.endswith("wrist")),
            f"{side}_superior_mm": along,
            f"{side}_medial_mm": medial,
            f"{side}_anterior_mm": anterior,
            f"{side}_raised_margin_mm": raised_m,
            f"{side}_chest_margin_mm": chest_m,
        })  # fmt: skip
        if raised_m > 0:
            state, margin = ArmState.RAISED, raised_m
        elif chest_m > 0:
            state, margin = ArmState.CHEST, chest_m
        else:
            state, margin = ArmState.SIDES, min(-raised_m, -chest_m, s.soft_mm)
        per_arm[side] = state
        confs[side] = math.tanh(margin / s.soft_mm) * pts.lm.conf(joint) ** 0.5
    states = [st for st in per_arm.values() if st is not None]
    if not states:
        return ArmStateResult(state=None, confidence=0.0, per_arm=per_arm, evidence=ev)
    if len(set(states)) == 1:
        state = states[0]
        conf = float(np.mean(list(confs.values())))
        if len(states) == 1:
            conf *= 0.7  # one arm seen
    else:
        state = max(states, key=lambda st: _PRIORITY[st])
        conf = 0.5 * min(confs.values())
    return ArmStateResult(
        state=state, confidence=float(np.clip(conf, 0.0, 1.0)), per_arm=per_arm, evidence=ev
    )
