"""Perception, wired: ``RGBDFrame`` + calibration -> :class:`~positioning.perception.state.PatientState`.

Stages (each a pure function in its own module; this class only holds settings, the loaded model and the
per-stream tracker):

1. table and patient: :func:`~positioning.perception.segmentation.segment_frame` (point cloud in the
   scanner frame, table plane, patient segment) and
   :func:`~positioning.perception.profile.surface_profile`;
2. 2-D landmarks on the colour image with every configured backend (MediaPipe's BlazePose by default),
   fused by confidence (:func:`~positioning.perception.landmarks.fuse_landmarks`);
3. lift to 3-D (:func:`~positioning.perception.lifting.lift_landmarks`), orientation and left/right
   consistency, depth offsets for that orientation, repair against the point cloud;
4. definition correction: BlazePose's keypoints sit systematically apart from the COCO joint centres
   along the body axes; a per-landmark shift in body axes, fitted offline on simulated patients
   (``models/landmark_correction.json``), moves them onto the COCO definition;
5. arm state; temporal tracking (smoothing, motion, steady categorical outputs) when ``track=True``.

Convention: scanner frame (IEC 61217), mm; landmark names COCO-17 (patient's own left and right).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from positioning import resources
from positioning.errors import PositioningError
from positioning.frames import Calibration, RGBDFrame
from positioning.perception.cover import DEFAULT_COVER_SETTINGS, CoverSettings, LegsHidden, legs_hidden
from positioning.perception.fusion import (
    decide_arms,
    decide_position,
    fuse_landmarks_3d,
    labels_for_position,
    scene_landmarks,
)
from positioning.perception.landmarks import LandmarkBackend, Landmarks2D, fuse_landmarks
from positioning.perception.landmarks.base import LANDMARK_MODES, TRUNK_LANDMARKS, ModelNotFoundError
from positioning.perception.lifting import (
    Landmarks3D,
    LiftSettings,
    depth_offsets_for,
    lift_landmarks,
    reoffset_landmarks,
)
from positioning.perception.orientation import (
    BODY_AXES,
    ArmState,
    ArmStateResult,
    OrientationResult,
    PatientPosition,
    estimate_arm_state,
    estimate_orientation,
    swap_left_right,
)
from positioning.perception.planview import plan_view
from positioning.perception.pointcloud import ScannerCloud, cloud_from_image, project_points, scanner_image
from positioning.perception.profile import slice_share, support_dip_mm, surface_profile
from positioning.perception.repair import repair_landmarks
from positioning.perception.scene_net import SceneNet, SceneOutput, load_scene_net
from positioning.perception.segmentation import (
    DEFAULT_SEGMENTATION_SETTINGS,
    PatientSegment,
    SegmentationSettings,
    segment_patient,
    view_cut_ends_mm,
)
from positioning.perception.state import PatientState
from positioning.perception.status import NoTableError, PerceptionNote, PerceptionStatus, error_for_status
from positioning.perception.steady import SteadySettings, depth_change, depth_sample
from positioning.perception.table import (
    DEFAULT_TABLE_SETTINGS,
    TableEstimate,
    TableSettings,
    find_table,
    table_on_support,
)
from positioning.perception.table_model import DEFAULT_TABLE_MODEL, TableModel, table_notes
from positioning.perception.temporal import PoseTracker

__all__ = [
    "PerceiverSettings",
    "LandmarkCorrection",
    "load_landmark_correction",
    "apply_landmark_correction",
    "body_axes",
    "lying_of",
    "Perceiver",
    "LANDMARK_MODES",
    "site_settings",
    "DEFAULT_CORRECTION_PATH",
]

DEFAULT_CORRECTION_PATH = resources.models_dir() / "landmark_correction.json"

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LandmarkCorrection:
    """Per-landmark shifts (mm) in the patient's body axes (superior, anterior, left), by pose group.

    Attributes:
        shifts_mm: group -> landmark name -> ``(3,)`` shift added along (superior, anterior, patient's
            left). Groups are ``"LYING:ARMS"`` (e.g. ``"supine:raised"``), ``"LYING:*"`` and ``"*"``; the
            most specific group that has the landmark is used.
        source: where the numbers come from (file and provenance).
    """

    shifts_mm: dict[str, dict[str, np.ndarray]]
    source: str = ""

    def shift(self, name: str, lying: str, arms: str | None) -> np.ndarray | None:
        for group in (f"{lying}:{arms}", f"{lying}:*", "*"):
            s = self.shifts_mm.get(group, {}).get(name)
            if s is not None:
                return s
        return None


def lying_of(position: PatientPosition | str) -> str:
    """``"supine"``, ``"prone"`` or ``"decubitus"`` of a DICOM position code (``PatientPosition.posture``).

    Raises:
        ValueError: not a DICOM position code.
    """
    return PatientPosition(str(position)).posture


def load_landmark_correction(path: str | Path | None = None) -> LandmarkCorrection:
    """Load the definition correction (no correction if the default file does not exist)."""
    p = Path(path) if path is not None else DEFAULT_CORRECTION_PATH
    if not p.is_file():
        if path is not None:
            raise PositioningError(f"landmark correction file not found: {p}")
        return LandmarkCorrection({}, source="none")
    try:
        doc = json.loads(p.read_text())
        shifts = {
            group: {k: np.asarray(v, dtype=np.float64).reshape(3) for k, v in names.items()}
            for group, names in doc["shifts_mm"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PositioningError(f"landmark correction file {p} is malformed: {e}") from e
    return LandmarkCorrection(shifts, source=str(p))


def body_axes(position: PatientPosition) -> np.ndarray:
    """``(3, 3)`` rows: the scanner-frame superior, anterior and left unit vectors of a position."""
    sup, post, left = (np.asarray(a, dtype=np.float64) for a in BODY_AXES[position])
    return np.stack([sup, -post, left])


def apply_landmark_correction(
    landmarks: Landmarks3D,
    position: PatientPosition | None,
    arms: ArmState | None,
    correction: LandmarkCorrection,
) -> Landmarks3D:
    """Shift each landmark by its correction expressed in the patient's body axes.

    Convention: the body axes (superior, anterior, left) are scanner-frame unit vectors of the patient
    position (``BODY_AXES``); shifts are mm.
    """
    if not correction.shifts_mm or position is None:
        return landmarks
    axes = body_axes(position)
    lying, arms_key = lying_of(position), None if arms is None else str(arms)
    points = landmarks.points_mm.copy()
    for i, name in enumerate(landmarks.names):
        shift = correction.shift(name, lying, arms_key)
        if shift is not None and np.all(np.isfinite(points[i])):
            points[i] = points[i] + shift @ axes
    return landmarks.replace(points_mm=points)


#: :meth:`SceneOutput.sampler`'s function: a grid at one frame's points.
_Sampler = Callable[..., np.ndarray]
#: What :meth:`Perceiver._mediapipe` returns.
_LandmarkResult = tuple[
    "Landmarks3D | None",
    "OrientationResult | None",
    "ArmStateResult | None",
    dict[str, str],
    "LegsHidden | None",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PerceiverSettings:
    """Settings of :class:`Perceiver`.

    Attributes:
        stride: segmentation sampling step (1 = every pixel).
        table_stride: table-fit (and plan-view) sampling step.
        track: smooth over frames (a live stream or a recording); False treats each frame alone.
        correction_path: landmark definition correction file (None: the shipped default).
        landmarks: which landmark sources decide the landmarks, the position and the arm state:
            ``"mediapipe"`` (BlazePose on the colour image, lifted to 3-D), ``"depth"`` (our scene
            network, from depth alone) or ``"fused"`` (both, by confidence). Without a colour stream
            ``"fused"`` is depth alone.
        scene_net_path: scene network file (None: ``models/scene_net.pt``). The scene network also
            chooses the table and cleans the patient's segment in every mode; without its file perception
            falls back to geometry alone (and ``"depth"`` is refused).
        table: table-finding settings (geometry).
        table_model: the site's table (a table unlike it is noted, ``TABLE_UNUSUAL``).
        segmentation: patient segmentation settings.
        cover: when the colour landmarks see the legs hidden (``PATIENT_COVERED``; used when the scene
            network withholds its blanket output or there is no scene network).
        table_height: where the table's height comes from with the scene network: ``"geometry"`` (the
            support's densest layer), ``"network"`` (the network's reading of the trough) or ``"blend"``.
        table_disagree_mm: geometry and the scene network placing the table's top further apart than
            this is named (``TABLE_UNCERTAIN``): the table's height is the isocenter's reference.
        hold_table_frames: with tracking, a table not found in a frame is the last one found for up to
            this many frames (named, ``TABLE_UNCERTAIN``); then ``NO_TABLE``.
        concurrent_landmarks: a live stream's speed-up: MediaPipe's landmarks (detection, lifting, repair)
            run on a worker thread beside the depth path, and a frame takes the newest finished result
            (of a frame at most ``landmarks_max_age_ms`` older; older, the frame waits for the run in
            progress). Off for recordings and evaluation, where every frame has its own landmarks.
        landmarks_max_age_ms: see ``concurrent_landmarks``.
        landmarks_min_interval_ms: with ``concurrent_landmarks``, a new MediaPipe run starts at most this
            often (frame time): the colour landmarks at about 6 per second leave the cores to the depth path,
            which gives every frame its own landmarks.
        track_table_frames: a live stream's speed-up: the table found in a frame is kept for up to this many
            frames (0: found in every frame) while the surface the scene network sees as the support still
            lies on its plane: the share of support points within ``max(6 mm, 3 rms) + sagitta`` of it no
            more than 0.15 below the share when it was found, and their number within a factor of two.
            Any failure, the count reached, :meth:`Perceiver.forget_table` (the console reported a table
            move) or a new patient finds it afresh.
        max_pixels: for large images, the strides grow (both by the same factor) until the segmented image
            has at most this many pixels (0: ``stride`` always). Not a live default: every second pixel of
            a D455's 1280x720 moved the planned isocenter by 15 mm sideways and 13 mm vertically on the
            ``tilted-d455`` room (the isocenter's slice features depend on the points' density).
        steady: a live stream's speed-up (None: off): a frame whose depth has not changed beyond the
            sensor's noise since the last frame perceived in full (:mod:`~positioning.perception.steady`)
            repeats that frame's state (``PatientState.repeats_frame_number``) instead of being perceived
            again; a frame that has changed is perceived in full at once (after a refresh in flight), and
            a still scene is perceived in full again on a worker thread when its last perception is
            ``steady.refresh_ms`` old (frame time) and half that has passed since the last refresh ended
            (the frames meanwhile repeat the state before it). A state is repeated only when it is
            settled (not moving, tracked motion below ``steady.settle_mm``). Needs ``track``.
        torch_threads: PyTorch's threads for the networks (process-wide; None: leave as loaded, 2). A
            live stream uses 1: the camera thread, the landmarks worker and the gRPC threads already share
            two cores, and two more threads per convolution only make them wait for each other.
    """

    stride: int = 1
    table_stride: int = 2
    track: bool = True
    correction_path: Path | None = None
    landmarks: str = "fused"
    scene_net_path: Path | None = None
    table: TableSettings = DEFAULT_TABLE_SETTINGS
    table_model: TableModel = DEFAULT_TABLE_MODEL
    segmentation: SegmentationSettings = DEFAULT_SEGMENTATION_SETTINGS
    cover: CoverSettings = DEFAULT_COVER_SETTINGS
    table_height: str = "geometry"
    table_disagree_mm: float = 12.0
    hold_table_frames: int = 5
    concurrent_landmarks: bool = False
    landmarks_max_age_ms: float = 400.0
    landmarks_min_interval_ms: float = 150.0
    track_table_frames: int = 0
    max_pixels: int = 0
    steady: SteadySettings | None = None
    torch_threads: int | None = None

    def baseline(self) -> PerceiverSettings:
        """These settings with every live speed-up off (``positioning bench pipeline --baseline``)."""
        return dataclasses.replace(
            self, concurrent_landmarks=False, track_table_frames=0, max_pixels=0, steady=None, torch_threads=2
        )

    def strides_for(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(stride, table_stride)`` for an image of ``shape`` (see ``max_pixels``)."""
        factor = 1
        if self.max_pixels > 0:
            h, w = shape
            while (h // (self.stride * factor)) * (w // (self.stride * factor)) > self.max_pixels:
                factor += 1
        return self.stride * factor, self.table_stride * factor

    def __post_init__(self) -> None:
        if self.landmarks_max_age_ms < self.landmarks_min_interval_ms:
            raise ValueError(
                f"landmarks_max_age_ms ({self.landmarks_max_age_ms}) must be at least "
                f"landmarks_min_interval_ms ({self.landmarks_min_interval_ms}): a frame could otherwise find "
                "no fresh result and no run due"
            )
        if self.table_height not in ("geometry", "network", "blend"):
            raise ValueError(f"table_height must be geometry, network or blend, got {self.table_height!r}")
        if self.landmarks not in LANDMARK_MODES:
            raise ValueError(f"landmarks must be one of {LANDMARK_MODES}, got {self.landmarks!r}")
        if self.table_stride % self.stride:
            raise ValueError(
                f"table_stride ({self.table_stride}) must be a multiple of stride ({self.stride})"
            )


def site_settings(
    landmarks: str = "fused", room: str | Path | None = None, *, live: bool = False
) -> PerceiverSettings:
    """Perceiver settings for a site: the landmark sources, and the room file's table model and gantry
    (None: the generic CT room of ``calibration/default-room.yaml``); ``live``: a camera stream's speed-ups
    on (``concurrent_landmarks``)."""
    from positioning.perception.room_model import load_room_model

    model = load_room_model(room)
    segmentation = dataclasses.replace(
        DEFAULT_SEGMENTATION_SETTINGS,
        gantry_front_y_mm=model.gantry_front_y_mm,
        bore_radius_mm=model.bore_diameter_mm / 2,
    )
    return PerceiverSettings(
        landmarks=landmarks,
        table_model=model.table,
        segmentation=segmentation,
        concurrent_landmarks=live,
        track_table_frames=15 if live else 0,
        steady=SteadySettings() if live else None,
        torch_threads=1 if live else None,
    )


class Perceiver:
    """Turns frames into :class:`PatientState` s.

    Args:
        backends: 2-D landmark backends (default: MediaPipe BlazePose, loaded once, when the landmark mode
            uses it).
        scene_net: the scene network (default: loaded from ``settings.scene_net_path`` or the shipped
            file; None when that file is missing and the mode does not need it).
        settings: see :class:`PerceiverSettings`.

    Raises:
        ModelNotFoundError: ``landmarks="depth"`` without a scene network file.

    Example:
        >>> with Perceiver() as perceiver:  # doctest: +SKIP
        ...     state = perceiver.perceive(frame, calibration)
    """

    def __init__(
        self,
        backends: Sequence[LandmarkBackend] | None = None,
        *,
        scene_net: SceneNet | None = None,
        settings: PerceiverSettings | None = None,
    ) -> None:
        self.settings = settings or PerceiverSettings()
        mode = self.settings.landmarks
        if scene_net is None:
            try:
                scene_net = load_scene_net(self.settings.scene_net_path)
            except ModelNotFoundError:
                if mode == "depth" or self.settings.scene_net_path is not None:
                    raise
        self.scene_net = scene_net
        if backends is None:
            backends = []
            if mode in ("mediapipe", "fused"):
                from positioning.perception.landmarks.mediapipe_backend import MediaPipePoseBackend

                backends = [MediaPipePoseBackend()]
        self.backends = list(backends)
        self.correction = load_landmark_correction(self.settings.correction_path)
        if self.settings.torch_threads is not None:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        self.tracker = PoseTracker()
        self._held_table: tuple[TableEstimate, int] | None = None  # (last table found, frames since)
        # concurrent landmarks: one worker, the run in progress and the newest finished result
        self._lm_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lm_running: tuple[float, concurrent.futures.Future] | None = None
        self._lm_newest: tuple[float, _LandmarkResult] | None = None
        self._lm_previous_frame: float | None = None
        # table tracking: (table, frames kept, support points and their share on it when found)
        self._tracked_table: tuple[TableEstimate, int, int, float] | None = None
        # steady frames: the state a still scene repeats, with its depth sample; full perceptions one at a
        # time (the camera's thread or the refresh worker); the generation changes with every reset and
        # table move
        self._steady: tuple[PatientState, np.ndarray] | None = None
        self._full_lock = threading.Lock()
        self._generation = 0
        #: stage timings (ms) of the latest frames perceived in full, on either thread (benchmarks: a
        #: refresh's perception is never an estimate of its own)
        self.full_timings_ms: collections.deque[dict[str, float]] = collections.deque(maxlen=512)
        self._refresh_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._refreshing: concurrent.futures.Future | None = None
        self._refreshed_at = 0.0  # monotonic s when the last refresh finished
        # frames perceived in full (a refresh overtaken by a newer one is dropped), and at the last reset
        self._full_count = 0
        self._full_count_at_reset = 0

    def __enter__(self) -> Perceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._refresh_pool is not None:
            self._refresh_pool.shutdown(wait=True, cancel_futures=True)
            self._refresh_pool = None
        if self._lm_pool is not None:
            self._lm_pool.shutdown(wait=True, cancel_futures=True)
            self._lm_pool = None
        for b in self.backends:
            close = getattr(b, "close", None)
            if close is not None:
                close()

    def reset(self) -> None:
        """Forget the stream (a new patient); waits for a refresh of the steady state in flight, whose
        tracker update is the previous patient's."""
        with self._full_lock:
            self._reset()

    def _reset(self) -> None:
        self.tracker.reset()
        self._held_table = None
        # a run in flight is of the previous patient: it finishes on the worker, its result is never used
        self._lm_running = None
        self._lm_newest = None
        self._lm_previous_frame = None
        self._tracked_table = None
        self._generation += 1  # a refresh in flight is of the previous patient: never repeated
        self._steady = None
        self._full_count_at_reset = self._full_count

    def forget_table(self) -> None:
        """Find the table afresh in the next frame (the console reported that the table moved): no frame
        repeats a perception from before (waits for a refresh in flight, whose table is the old one)."""
        with self._full_lock:
            self._tracked_table = None
            self._generation += 1
            self._steady = None

    @property
    def uses_scene(self) -> bool:
        """The scene network takes part in the landmarks, position and arms (not MediaPipe alone)."""
        return self.scene_net is not None and self.settings.landmarks in ("depth", "fused")

    def perceive(self, frame: RGBDFrame, calibration: Calibration) -> PatientState:
        """One frame -> :class:`PatientState` (never raises for a frame without a patient: see ``status``).

        With ``settings.steady`` (a live stream), a frame whose depth has not changed since the last frame
        perceived in full repeats that frame's state (see :class:`PerceiverSettings`)."""
        st = self.settings.steady
        if st is None or not self.settings.track:
            return self._perceive_counted(frame, calibration)
        t0 = time.perf_counter()
        sample = depth_sample(frame.depth_mm, st)
        kept = self._steady
        if kept is not None and kept[1].shape == sample.shape:
            state, reference = kept
            age_ms = float(frame.timestamp_ms) - float(state.timestamp_ms)
            change = depth_change(reference, sample, st)
            # a refresh that takes far longer than its period (a stalled worker) no longer covers for it
            if change.steady and 0.0 < age_ms < 4.0 * st.refresh_ms:
                # due by frame time, and never back to back when a perception takes longer than the
                # period: half a period's rest after the last refresh leaves the cores to changed frames
                rested = time.monotonic() - self._refreshed_at >= 0.5e-3 * st.refresh_ms
                if age_ms >= st.refresh_ms and rested:
                    self._refresh(frame, calibration, sample, since=state.steady_since_ms)
                ms = 1000.0 * (time.perf_counter() - t0)
                return dataclasses.replace(
                    state,
                    frame_number=frame.frame_number,
                    timestamp_ms=frame.timestamp_ms,
                    timings_ms={"steady": ms, "total": ms},
                    repeats_frame_number=state.frame_number,
                    repeats_timestamp_ms=state.timestamp_ms,
                )
        with self._full_lock:
            state = self._perceive_counted(frame, calibration)
            self._keep_steady(state, sample, since=None)
        return state

    def _perceive_counted(self, frame: RGBDFrame, calibration: Calibration) -> PatientState:
        """:meth:`_perceive_full`, counted and its stage timings kept (under ``_full_lock`` with steady
        frames: ``reset`` and ``forget_table`` take it too, so nothing of another patient or table slips
        in between)."""
        state = self._perceive_full(frame, calibration)
        self._full_count += 1
        self.full_timings_ms.append(dict(state.timings_ms))
        return state

    def _keep_steady(self, state: PatientState, sample: np.ndarray, *, since: float | None) -> None:
        """Keep ``state`` for the steady frames after it when it is settled (else perceive them in full);
        ``since``: the start of the still stretch a refresh continues (None: a new one starts here).
        Called under ``_full_lock``, right after ``state`` was perceived."""
        st = self.settings.steady
        assert st is not None
        settled = (
            state.status is not PerceptionStatus.NO_DEPTH
            and self._full_count - self._full_count_at_reset >= st.min_perceived
            and (
                not state.landmarks_mm
                or (not state.moving and np.isfinite(state.motion_mm) and state.motion_mm < st.settle_mm)
            )
        )
        since = state.timestamp_ms if since is None else since
        self._steady = (dataclasses.replace(state, steady_since_ms=since), sample) if settled else None

    def _refresh(
        self, frame: RGBDFrame, calibration: Calibration, sample: np.ndarray, *, since: float | None
    ) -> None:
        """Perceive ``frame`` in full on the refresh worker (unless one is in flight); its state becomes the
        one the next steady frames repeat."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        if self._refresh_pool is None:
            self._refresh_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="refresh")
        generation, count = self._generation, self._full_count

        def job() -> None:
            with self._full_lock:
                # a new patient, a table move or a newer frame perceived in full since: this frame is
                # older than what the tracker has seen
                if generation != self._generation or count != self._full_count:
                    return
                try:
                    state = self._perceive_counted(frame, calibration)
                except Exception:  # the next changed frame is perceived on the camera's thread and says
                    _log.exception("refreshing the steady state on frame %s failed", frame.frame_number)
                    self._steady = None
                    return
                finally:
                    self._refreshed_at = time.monotonic()
                self._keep_steady(state, sample, since=since)

        self._refreshing = self._refresh_pool.submit(job)

    def _perceive_full(self, frame: RGBDFrame, calibration: Calibration) -> PatientState:
        """:meth:`perceive` of one frame on its own (with the tracker and the live speed-ups)."""
        s = self.settings
        t = {"start": time.perf_counter()}
        base = {"frame_number": frame.frame_number, "timestamp_ms": frame.timestamp_ms}
        if frame.valid_fraction < s.segmentation.min_valid_fraction:
            err = error_for_status(
                PerceptionStatus.NO_DEPTH,
                f"({frame.valid_fraction:.1%} valid pixels < {s.segmentation.min_valid_fraction:.0%})",
            )
            return PatientState(status=PerceptionStatus.NO_DEPTH, message=str(err), **base)
        stride, table_stride = s.strides_for(frame.intrinsics.shape)
        image = scanner_image(frame, calibration, stride=stride)
        k = table_stride // stride
        cloud = cloud_from_image(image[::k, ::k], image_shape=frame.intrinsics.shape, stride=table_stride)
        scene = sample = support = None
        if self.scene_net is not None:
            scene = self.scene_net.predict(plan_view(cloud.points_mm, self.scene_net.plan_view))
            sample = scene.sampler(cloud.points_mm)
            support = sample(scene.prob("support")) > 0.5  # the cloud's points on what the patient lies on
        t["scene"] = time.perf_counter()
        held = None
        try:
            table = self._keep_table(cloud, support)
            if table is None:
                table = self._table(cloud, scene, sample, support)
                self._track_table(table, cloud, support)
        except PositioningError as e:
            status = PerceptionStatus(e.code) if e.code in PerceptionStatus.__members__ else None
            if status is None:
                raise
            held = self._hold_table(status)
            if held is None:
                return PatientState(status=status, message=str(e), scene=scene, **base)
            table = held
        if held is None and s.track:
            self._held_table = (table, 0)
        notes = list(table_notes(table, s.table_model))
        if held is not None:
            notes.append(
                PerceptionNote(
                    code="TABLE_UNCERTAIN",
                    severity="warning",
                    message=(
                        "The table was not found in this frame; the table found "
                        f"{self._held_table[1] if self._held_table else 0} frame(s) earlier is used: check "
                        "that nothing hides it and the overlay."
                    ),
                )
            )
        if (gap := _table_height_gap_mm(table, scene)) is not None and abs(gap) > s.table_disagree_mm:
            notes.append(
                PerceptionNote(
                    code="TABLE_UNCERTAIN",
                    severity="warning",
                    message=(
                        f"The table's height is uncertain: the scene network places its top {gap:+.0f} mm "
                        "from the surface geometry found (a curved cradle, a soft mattress or a noisy far "
                        "camera): the vertical isocenter may be off by as much; check the table height."
                    ),
                )
            )
        segment = segment_patient(
            image,
            table,
            image_shape=frame.intrinsics.shape,
            stride=stride,
            settings=s.segmentation,
            scene=scene,
        )
        t["segmentation"] = time.perf_counter()
        if not segment.status.has_patient:
            return PatientState(
                status=segment.status, message=segment.status.message, table=table, scene=scene,
                notes=tuple(notes), **base,
            )  # fmt: skip
        if not table.supports_patient:
            notes.append(
                PerceptionNote(
                    code="TABLE_UNCERTAIN",
                    severity="warning",
                    message="The table was chosen without seeing the patient rest on it: check the overlay.",
                )
            )
        profile = surface_profile(segment.points_mm, table)
        dip = support_dip_mm(cloud.points_mm, segment.points_mm, table)
        covered = None
        if scene is not None:
            under = scene.at(scene.prob("on_patient"), segment.points_mm) > 0.5
            covered = slice_share(profile, segment.points_mm, under)
        cut_ends = view_cut_ends_mm(segment, frame.depth_mm > 0)
        t["profile"] = time.perf_counter()

        if s.concurrent_landmarks and self.backends and s.landmarks != "depth":
            lm_mp, orientation, arm, repairs, legs = self._mediapipe_concurrent(
                frame, calibration, table, segment
            )
        else:
            lm_mp, orientation, arm, repairs, legs = self._mediapipe(frame, calibration, table, segment)
        t["landmarks_2d"] = time.perf_counter()
        lm_net = scene_landmarks(scene, table) if scene is not None and self.uses_scene else None
        net_pos = scene.position_prob if scene is not None and self.uses_scene else None
        geometric = None if orientation is None else (orientation.position, orientation.confidence)
        position, position_conf, note = decide_position(net_pos, geometric)
        if note is not None:
            notes.append(note)
        if lm_mp is not None and orientation is not None:
            lm_mp = labels_for_position(lm_mp, orientation.position, position)
        landmarks, disagree = fuse_landmarks_3d(lm_mp, lm_net)
        if len(set(disagree) & set(TRUNK_LANDMARKS)) >= 2:
            notes.append(
                PerceptionNote(
                    code="LANDMARKS_DISAGREE",
                    severity="warning",
                    message=(
                        "The colour image and the depth disagree about where the shoulders and hips are ("
                        + ", ".join(sorted(set(disagree) & set(TRUNK_LANDMARKS)))
                        + "): check the patient and the overlay."
                    ),
                )
            )
        net_arms = scene.arms_prob if scene is not None and self.uses_scene else None
        arms, arms_conf = decide_arms(net_arms, None if arm is None else (arm.state, arm.confidence))
        cover, cover_conf = (None, 0.0) if scene is None else scene.cover
        if cover not in (None, "none") and cover_conf >= 0.5:
            notes.append(
                PerceptionNote(
                    code="PATIENT_COVERED",
                    severity="warning",
                    message=(
                        f"A blanket covers the patient ({_COVER_TEXT.get(cover, cover)}): the body's outline "
                        "under it is estimated, so the isocenter and the range ends there are less certain."
                    ),
                    details={"cover": cover, "confidence": round(cover_conf, 3), "source": "scene network"},
                )
            )
        elif cover is None and legs is not None:
            # no blanket output from a scene network: the colour landmarks' visibility says
            cover, cover_conf = ("legs" if legs.hidden else "none"), legs.confidence
            if legs.hidden:
                notes.append(
                    PerceptionNote(
                        code="PATIENT_COVERED",
                        severity="warning",
                        message=(
                            "The patient's legs are hidden in the colour image (a blanket or sheet over "
                            "them, or someone in front of them): the body's outline there is estimated, so "
                            "the isocenter and range ends on the legs or pelvis are less certain. Check them "
                            "on the scout."
                        ),
                        details={
                            "cover": "legs",
                            "leg_visibility": round(legs.leg_visibility, 3),
                            "source": "colour landmarks",
                        },
                    )
                )
        t["landmarks_3d"] = time.perf_counter()

        moving, motion = False, float("nan")
        if landmarks is not None and s.track:
            tracked = self.tracker.update(
                landmarks,
                frame.timestamp_ms,
                position=position,
                position_confidence=position_conf,
                arms=arms,
                arms_confidence=arms_conf,
            )
            landmarks, moving, motion = tracked.landmarks, tracked.moving, tracked.motion_mm
            position, position_conf = tracked.position, tracked.position_confidence  # type: ignore[assignment]
            arms, arms_conf = tracked.arms, tracked.arms_confidence  # type: ignore[assignment]
        t["tracking"] = time.perf_counter()

        points, confidence, pixels = {}, {}, {}
        if landmarks is not None:
            # every landmark's pixel in the depth image (the scene network's have none of their own)
            missing = ~np.all(np.isfinite(landmarks.uv_px), axis=1)
            if np.any(missing):
                uv = landmarks.uv_px.copy()
                uv[missing] = project_points(landmarks.points_mm[missing], calibration, frame.intrinsics)
                landmarks = landmarks.replace(uv_px=uv)
            for i, n in enumerate(landmarks.names):
                points[n], confidence[n], pixels[n] = (
                    landmarks.points_mm[i],
                    float(landmarks.confidence[i]),
                    landmarks.uv_px[i],
                )
        stages = list(t)
        timings = {b: 1000.0 * (t[b] - t[a]) for a, b in itertools.pairwise(stages)}
        timings["total"] = 1000.0 * (t[stages[-1]] - t["start"])
        message = segment.status.message if landmarks is not None else "Patient found, but no body landmarks."
        return PatientState(
            status=segment.status,
            message=message,
            table=table,
            profile=profile,
            patient_points_mm=segment.points_mm,
            patient_mask=segment.mask,
            landmarks_mm=points,
            landmark_confidence=confidence,
            landmarks_uv_px=pixels,
            patient_position=position,
            position_confidence=float(position_conf),
            arms=arms,
            arms_confidence=float(arms_conf),
            moving=bool(moving),
            motion_mm=float(motion),
            repairs=repairs,
            timings_ms=timings,
            cover=cover,
            cover_confidence=float(cover_conf),
            landmark_backends="" if landmarks is None else landmarks.backend,
            notes=tuple(notes),
            support_dip_mm=dip,
            covered_share=covered,
            view_cut_ends_mm=cut_ends,
            scene=scene,
            **base,
        )

    def _hold_table(self, status: PerceptionStatus) -> TableEstimate | None:
        """With tracking, a table lost for a few frames (a staff member's arm, a blanket moved, depth
        noise) is the table found last, for at most ``settings.hold_table_frames`` frames; a table never
        found, or lost for longer, stays lost (None)."""
        if status is not PerceptionStatus.NO_TABLE or not self.settings.track or self._held_table is None:
            return None
        table, age = self._held_table
        if age >= self.settings.hold_table_frames:
            return None
        self._held_table = (table, age + 1)
        return table

    def _support_share(self, table: TableEstimate, support_mm: np.ndarray) -> float:
        """The share of support points on ``table``'s plane (see ``track_table_frames``)."""
        if len(support_mm) == 0:
            return 0.0
        h = support_mm @ np.asarray(table.normal, np.float64) + table.offset_mm
        tol = max(6.0, 3.0 * table.rms_mm) + abs(table.sagitta_mm)
        return float(np.mean(np.abs(h) < tol))

    def _track_table(self, table: TableEstimate, cloud: ScannerCloud, support: np.ndarray | None) -> None:
        if not self.settings.track_table_frames or support is None:
            return
        support_mm = cloud.points_mm[support]
        share = self._support_share(table, support_mm)
        if share < 0.6:
            return  # the support does not lie on this table (geometry alone chose it): no check could hold it
        self._tracked_table = (table, 0, len(support_mm), share)

    def _keep_table(self, cloud: ScannerCloud, support: np.ndarray | None) -> TableEstimate | None:
        """The tracked table when it still holds (see ``track_table_frames``), else None."""
        kept, self._tracked_table = self._tracked_table, None
        if kept is None or support is None:
            return None
        table, age, n0, share0 = kept
        if age + 1 >= self.settings.track_table_frames:
            return None
        support_mm = cloud.points_mm[support]
        n = len(support_mm)
        if n < max(200, n0 // 2) or n > 2 * n0:
            return None
        if self._support_share(table, support_mm) < share0 - 0.15:
            return None
        self._tracked_table = (table, age + 1, n0, share0)
        return table

    def _table(
        self,
        cloud: ScannerCloud,
        scene: SceneOutput | None,
        sample: _Sampler | None,
        support: np.ndarray | None,
    ) -> TableEstimate:
        """The table: on the surface the scene network sees the patient lying on (``support``, refined by
        geometry); geometry alone (:func:`find_table`) without the network or when its surface does not
        hold up. ``sample``, ``support``: the scene's sampler of the cloud's points and its support mask
        (None without the network)."""
        if scene is not None and sample is not None and support is not None:
            body = scene.prob("patient") + scene.prob("on_patient")
            resting = sample(body) > 0.5
            try:
                table = table_on_support(
                    cloud,
                    support,
                    self.settings.table,
                    note="the surface the scene network sees the patient on",
                    resting=resting,
                )
                return _table_height(table, scene, self.settings.table_height)
            except NoTableError as e:
                table = find_table(cloud, self.settings.table)
                why = f"geometry alone; the scene network's surface failed: {e}"
                return dataclasses.replace(table, considered=(why, *table.considered))
        return find_table(cloud, self.settings.table)

    def _mediapipe(
        self, frame: RGBDFrame, calibration: Calibration, table: TableEstimate, segment: PatientSegment
    ) -> _LandmarkResult:
        """MediaPipe's landmarks lifted to 3-D (orientation, left/right, depth offsets, repair, arm state,
        definition correction) and whether they see the legs hidden, or Nones without a colour image or a
        person in it."""
        if not self.backends or frame.color_rgb is None or self.settings.landmarks == "depth":
            return None, None, None, {}, None
        lm2 = self._detect(frame)
        if lm2 is None:
            return None, None, None, {}, None
        legs = legs_hidden(lm2, self.settings.cover)
        top = float(table.top_z_mm)
        landmarks = lift_landmarks(lm2, frame, calibration, table_top_z_mm=top, patient_mask=segment.mask)
        orientation = estimate_orientation(landmarks, patient_points_mm=segment.points_mm)
        if orientation.labels_swapped:
            landmarks = swap_left_right(landmarks)
        offsets = depth_offsets_for(orientation.position)
        landmarks = reoffset_landmarks(landmarks, calibration, offsets=offsets, table_top_z_mm=top)
        repaired = repair_landmarks(
            landmarks,
            frame,
            calibration,
            table_top_z_mm=top,
            patient_mask=segment.mask,
            patient_points_mm=segment.points_mm,
            lift_settings=LiftSettings(offsets=offsets),
        )
        landmarks = repaired.landmarks
        arm = estimate_arm_state(landmarks, orientation)
        landmarks = apply_landmark_correction(landmarks, orientation.position, arm.state, self.correction)
        return landmarks, orientation, arm, repaired.changed(), legs

    def _mediapipe_concurrent(
        self, frame: RGBDFrame, calibration: Calibration, table: TableEstimate, segment: PatientSegment
    ) -> _LandmarkResult:
        """:meth:`_mediapipe` on a worker thread: start a run on this frame when none is in progress, and
        take the newest finished result if it is of a frame at most ``landmarks_max_age_ms`` older (else
        wait for the run in progress: the first frame, or after a stall)."""
        if self._lm_pool is None:
            self._lm_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="landmarks")
        now = float(frame.timestamp_ms)

        def collect(wait: bool) -> None:
            if self._lm_running is None or not (wait or self._lm_running[1].done()):
                return
            started, future = self._lm_running
            self._lm_running = None
            self._lm_newest = (started, future.result())

        collect(wait=False)
        last = self._lm_newest[0] if self._lm_newest is not None else None
        due = last is None or not (0.0 <= now - last < self.settings.landmarks_min_interval_ms)
        if self._lm_running is None and due:
            future = self._lm_pool.submit(self._mediapipe, frame, calibration, table, segment)
            self._lm_running = (now, future)
        newest = self._lm_newest
        previous, self._lm_previous_frame = self._lm_previous_frame, now
        # fresh enough: within the age limit, or of the previous frame perceived (a slow stream)
        fresh = newest is not None and (
            0.0 <= now - newest[0] <= self.settings.landmarks_max_age_ms
            or (previous is not None and previous <= newest[0] <= now)
        )
        if not fresh:
            collect(wait=True)
            newest = self._lm_newest
        assert newest is not None
        return newest[1]

    def _detect(self, frame: RGBDFrame) -> Landmarks2D | None:
        results = [
            r for b in self.backends if (r := b.detect(frame.color_rgb, depth_mm=frame.depth_mm)) is not None
        ]
        if not results:
            return None
        return results[0] if len(results) == 1 else fuse_landmarks(results)


def _table_height_gap_mm(table: TableEstimate, scene: SceneOutput | None) -> float | None:
    """The scene network's table height minus the geometric one (None without the network's reading)."""
    if scene is None or not np.isfinite(scene.table_z_mm):
        return None
    return float(scene.table_z_mm - table.geometry_top_z_mm)


def _table_height(table: TableEstimate, scene: SceneOutput, how: str) -> TableEstimate:
    """The table's height from geometry (the densest layer of the support, moved to a curved cradle's
    trough), from the scene network's reading of the trough (which has seen rims, pillows, blankets and
    soft foam's dip in training), or their mean."""
    z = scene.table_z_mm
    if how == "geometry" or not np.isfinite(z):
        return table
    target = z if how == "network" else 0.5 * (z + table.top_z_mm)
    dz = target - table.top_z_mm
    source = "the scene network" if how == "network" else "geometry and the scene network"
    line = f"height from {source}: z {target:.0f} mm ({dz:+.0f} mm)"
    return dataclasses.replace(
        table,
        offset_mm=table.offset_mm - dz * table.normal[2],
        top_z_mm=target,
        height_shift_mm=table.height_shift_mm + dz,
        considered=(*table.considered, line),
    )


_COVER_TEXT = {"chest": "up to the chest", "legs": "the legs"}
