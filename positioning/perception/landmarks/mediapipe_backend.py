"""MediaPipe BlazePose landmark backend for the colour image (Tasks API ``PoseLandmarker``).

BlazePose was trained on upright people; the camera looks down at a patient lying along the image's
vertical or horizontal axis, head either way. The backend therefore runs the model on the image turned
by quarter turns (``np.rot90``) so that the body's long axis is upright, keeps the most confident result
and maps its landmarks back to the original image exactly (:func:`~.base.uv_from_rot90`).

Convention: pixel coordinates as in :mod:`positioning.perception.landmarks.base` (``(u, v)``, top-left
pixel centre at ``(0, 0)``). MediaPipe's normalised landmark ``(x, y)`` spans the image's edges, ``[0, 1]``
= ``[-0.5, W - 0.5]`` in pixel-centre coordinates, so ``u = x * W - 0.5``. Left and right are the
patient's own (BlazePose's ``left_*`` is the person's left side).

Example:
    >>> backend = MediaPipePoseBackend()  # doctest: +SKIP
    >>> lm = backend.detect(frame.color_rgb)  # doctest: +SKIP
    >>> lm.uv("left_shoulder") if lm is not None else None  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any, Literal

import numpy as np

from positioning.native_log import quiet_native_stderr
from positioning.perception.landmarks.base import (
    COCO_LANDMARKS,
    LandmarkModelError,
    Landmarks2D,
    ModelNotFoundError,
    uv_from_rot90,
)
from positioning.perception.landmarks.model_build import default_task_path

__all__ = [
    "BLAZEPOSE_LANDMARKS",
    "EXTRA_LANDMARKS",
    "MODEL_PATH_ENV",
    "RotationPolicy",
    "MediaPipePoseBackend",
    "blazepose_to_landmarks",
    "default_model_path",
    "upright_rotation",
    "leg_to_torso_ratio",
    "DEFAULT_MIN_LEG_RATIO",
]

#: The 33 BlazePose landmarks in model order (mediapipe/modules/pose_landmark/pose_landmark_by_roi_cpu
#: .pbtxt and the Tasks ``PoseLandmark`` enum), in snake_case.
BLAZEPOSE_LANDMARKS: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
#: Landmarks reported after the COCO-17 when ``include_extra``: the feet, for feet-first scan ranges.
EXTRA_LANDMARKS: tuple[str, ...] = ("left_heel", "right_heel", "left_foot_index", "right_foot_index")
#: Environment variable that overrides the default model path.
MODEL_PATH_ENV = "POSITIONING_POSE_MODEL"

#: ``"auto"``: turn the image's long axis upright; once a person is found, turn again so that the body's
#: head points up (from the hip-to-shoulder axis) and keep that result; try the other turns only while
#: nothing confident and plausible is found (see :func:`leg_to_torso_ratio`). ``"all"``: all four quarter
#: turns, keep the most confident plausible one. ``"none"``: the image as given.
RotationPolicy = Literal["auto", "all", "none"]
_ROTATION_POLICIES = ("auto", "all", "none")
_BUILD_COMMAND = "python -m positioning.perception.landmarks.model_build"


def default_model_path() -> Path:
    """``$POSITIONING_POSE_MODEL`` if set, else ``<repo>/models/pose_landmarker_full.task``."""
    env = os.environ.get(MODEL_PATH_ENV)
    if env:
        return Path(env)
    return default_task_path("full")


def blazepose_to_landmarks(
    xy_norm: np.ndarray,
    visibility: np.ndarray,
    presence: np.ndarray,
    *,
    k: int,
    image_shape: tuple[int, int],
    names: tuple[str, ...] = COCO_LANDMARKS,
) -> tuple[np.ndarray, np.ndarray]:
    """Convert BlazePose output on ``np.rot90(image, k)`` to pixel positions in ``image``.

    Convention: ``xy_norm`` is MediaPipe's normalised ``(x, y)`` in the rotated image (``[0, 1]`` spans its
    edges); the result is ``(u, v)`` pixel-centre coordinates in the original ``(H, W)`` image.

    Args:
        xy_norm: ``(33, 2)`` normalised positions in the rotated image.
        visibility: ``(33,)`` visibility scores (sigmoid outputs in [0, 1]).
        presence: ``(33,)`` presence scores (sigmoid outputs in [0, 1]).
        k: quarter turns that were applied with ``np.rot90``.
        image_shape: ``(H, W)`` of the original image.
        names: output landmark names, a subset of :data:`BLAZEPOSE_LANDMARKS`.

    Returns:
        ``(uv_px, confidence)``: ``(len(names), 2)`` float64 and ``(len(names),)`` float64 with
        ``confidence = visibility * presence``.
    """
    xy = np.asarray(xy_norm, dtype=np.float64)
    if xy.shape != (len(BLAZEPOSE_LANDMARKS), 2):
        raise ValueError(f"xy_norm must be ({len(BLAZEPOSE_LANDMARKS)}, 2), got {xy.shape}")
    idx = [BLAZEPOSE_LANDMARKS.index(n) for n in names]
    h, w = int(image_shape[0]), int(image_shape[1])
    h_rot, w_rot = (h, w) if int(k) % 2 == 0 else (w, h)
    uv_rot = xy[idx] * np.array([w_rot, h_rot], dtype=np.float64) - 0.5
    conf = np.clip(np.asarray(visibility, np.float64) * np.asarray(presence, np.float64), 0.0, 1.0)[idx]
    return uv_from_rot90(uv_rot, k, (h, w)), conf


def upright_rotation(landmarks: Landmarks2D) -> int | None:
    """The quarter turns ``k`` for ``np.rot90`` that bring this body's head up.

    Convention: the body axis is mid-hip to mid-shoulder in the landmarks' pixel grid (v down); ``k`` is
    the number of counter-clockwise quarter turns (head pointing right -> 1, down -> 2, left -> 3).

    Returns:
        ``k`` in 0..3, or None when the shoulders or hips are missing.
    """
    needed = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
    if not all(n in landmarks for n in needed):
        return None
    pts = np.array([landmarks.uv(n) for n in needed])
    if not np.all(np.isfinite(pts)):
        return None
    du, dv = (pts[0] + pts[1]) / 2 - (pts[2] + pts[3]) / 2
    if du == 0 and dv == 0:
        return None
    angle_deg = np.degrees(np.arctan2(-dv, du))  # 90 = head up on screen
    return int(np.round((90.0 - angle_deg) / 90.0)) % 4


#: Smallest plausible :func:`leg_to_torso_ratio` (adults and children lying on the table: 1.3-2.0 from the
#: ceiling camera, down to 1.07 seen obliquely; BlazePose's upside-down readings of prone bodies: 0.17-1.14).
DEFAULT_MIN_LEG_RATIO = 1.2


def leg_to_torso_ratio(landmarks: Landmarks2D) -> float:
    """Length of the legs over the length of the trunk in the image: mean hip to mean knee plus mean knee
    to mean ankle, over mean hip to mean shoulder.

    BlazePose sometimes reads a prone body from above upside down: the face on the buttocks, the hips at
    the shoulders and the legs folded up onto the upper body (ratio 0.2-1.1, against 1.3-2.0 for a
    correct reading). A low ratio marks such a reading.

    Convention: pixel distances in the landmarks' own grid (any turn gives the same ratio).

    Returns:
        The ratio, or NaN when a shoulder, hip, knee or ankle has no position.
    """
    needed = ("shoulder", "hip", "knee", "ankle")
    if not all(f"{side}_{j}" in landmarks for side in ("left", "right") for j in needed):
        return float("nan")
    mid = {j: (landmarks.uv(f"left_{j}") + landmarks.uv(f"right_{j}")) / 2 for j in needed}
    torso = float(np.linalg.norm(mid["shoulder"] - mid["hip"]))
    legs = float(np.linalg.norm(mid["hip"] - mid["knee"]) + np.linalg.norm(mid["knee"] - mid["ankle"]))
    return legs / torso if torso > 0 else float("nan")


class MediaPipePoseBackend:
    """BlazePose (MediaPipe Tasks ``PoseLandmarker``, IMAGE mode) as a :class:`~.base.LandmarkBackend`.

    The model loads once, in the constructor; :meth:`detect` is thread-safe (calls are serialised).

    Args:
        model_path: a ``PoseLandmarker`` ``.task`` file: the one built by ``model_build`` (default,
            :func:`default_model_path`) or any official ``pose_landmarker_*.task``.
        min_detection_confidence: BlazePose person-detector threshold in [0, 1].
        min_presence_confidence: pose-presence threshold of the landmark model in [0, 1].
        rotation: how to turn the image upright, see :data:`RotationPolicy`.
        accept_score: in ``"auto"``, a result with :attr:`Landmarks2D.score` at least this (and plausible)
            is kept without trying further turns.
        min_leg_ratio: a result whose :func:`leg_to_torso_ratio` is below this is implausible (an
            upside-down reading): other turns are tried and a plausible result is preferred.
        include_extra: also report :data:`EXTRA_LANDMARKS` after the COCO-17.

    Raises:
        ModelNotFoundError: the model file does not exist (the message gives the set-up command).
        LandmarkModelError: MediaPipe cannot load the file.
        ValueError: a setting is out of range.
    """

    name: str = "mediapipe_pose"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        min_detection_confidence: float = 0.5,
        min_presence_confidence: float = 0.5,
        rotation: RotationPolicy = "auto",
        accept_score: float = 0.8,
        min_leg_ratio: float = DEFAULT_MIN_LEG_RATIO,
        include_extra: bool = True,
    ) -> None:
        for label, value in (
            ("min_detection_confidence", min_detection_confidence),
            ("min_presence_confidence", min_presence_confidence),
            ("accept_score", accept_score),
        ):
            if not (0.0 <= float(value) <= 1.0):
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        if rotation not in _ROTATION_POLICIES:
            raise ValueError(f"rotation must be one of {_ROTATION_POLICIES}, got {rotation!r}")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.rotation: RotationPolicy = rotation
        self.accept_score = float(accept_score)
        if not float(min_leg_ratio) >= 0.0:
            raise ValueError(f"min_leg_ratio must be >= 0, got {min_leg_ratio}")
        self.min_leg_ratio = float(min_leg_ratio)
        self.names: tuple[str, ...] = COCO_LANDMARKS + (EXTRA_LANDMARKS if include_extra else ())
        if not self.model_path.is_file():
            raise ModelNotFoundError(
                f"MediaPipe pose model not found: {self.model_path}. Build it once with "
                f"`{_BUILD_COMMAND}` (downloads PyPI's mediapipe==0.10.21 wheel, about 36 MB, and writes "
                f"models/pose_landmarker_full.task), or pass model_path= an official pose_landmarker_*.task "
                f"file (or set ${MODEL_PATH_ENV})."
            )
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_poses=1,
            min_pose_detection_confidence=float(min_detection_confidence),
            min_pose_presence_confidence=float(min_presence_confidence),
        )
        try:
            with quiet_native_stderr():  # LiteRT logs a dozen INFO/WARNING lines per model load
                self._landmarker: Any = vision.PoseLandmarker.create_from_options(options)
        except Exception as e:  # mediapipe raises RuntimeError/ValueError carrying the C++ status text
            raise LandmarkModelError(
                f"MediaPipe cannot load {self.model_path} as a PoseLandmarker model: {e}. Rebuild it with "
                f"`{_BUILD_COMMAND} --force`."
            ) from e
        self._lock = threading.Lock()
        # Close while the interpreter is intact; mediapipe's own __del__ fails at interpreter exit.
        self._finalizer = weakref.finalize(self, self._landmarker.close)

    def close(self) -> None:
        """Release the MediaPipe graph (idempotent)."""
        with quiet_native_stderr():
            self._finalizer()

    def __enter__(self) -> MediaPipePoseBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(
        self, color_rgb: np.ndarray | None, *, depth_mm: np.ndarray | None = None
    ) -> Landmarks2D | None:
        """Landmarks of the most confident person in the colour image, or None.

        Convention: see the module docstring; the result is in ``color_rgb``'s pixel grid whatever turns
        were tried.

        Args:
            color_rgb: ``(H, W, 3)`` uint8 RGB image.
            depth_mm: ignored (accepted for the :class:`~.base.LandmarkBackend` interface).

        Returns:
            COCO-17 (plus :data:`EXTRA_LANDMARKS`) landmarks with ``confidence = visibility * presence``
            and ``score`` the mean COCO confidence, or None when no person is found.

        Raises:
            ValueError: ``color_rgb`` is missing or not an ``(H, W, 3)`` uint8 array.
        """
        del depth_mm
        image = _check_rgb(color_rgb)
        if self.rotation == "none":
            return self.detect_rotated(image, 0)
        h, w = image.shape[:2]
        first = 0 if h >= w else 1  # long image axis upright
        order = [first, (first + 2) % 4, (first + 1) % 4, (first + 3) % 4]
        results: dict[int, Landmarks2D | None] = {}

        def run(k: int) -> None:
            if k not in results:
                results[k] = self.detect_rotated(image, k)

        if self.rotation == "all":
            for k in order:
                run(k)
            return _best(results, self.min_leg_ratio)
        candidates: list[Landmarks2D] = []
        for k in order:
            run(k)
            found = results[k]
            if found is None:
                continue
            # The body axis is known now: look again with the head up, as BlazePose was trained, and prefer
            # that view. Any turn of the same image then ends in the same upright pixels, so the result
            # does not depend on how the camera image happened to be oriented. An upside-down reading
            # (legs folded onto the body) is not taken over a plausible one, and not accepted: the
            # remaining turns are tried.
            k_up = upright_rotation(found)
            if k_up is not None and k_up != k:
                run(k_up)
                up = results[k_up]
                if up is not None and (
                    _plausible(up, self.min_leg_ratio) or not _plausible(found, self.min_leg_ratio)
                ):
                    found = up
            if found.score >= self.accept_score and _plausible(found, self.min_leg_ratio):
                return found
            candidates.append(found)
        return _best(dict(enumerate(candidates)), self.min_leg_ratio)

    def detect_rotated(self, color_rgb: np.ndarray, k: int) -> Landmarks2D | None:
        """One model run on ``np.rot90(color_rgb, k)``; landmarks mapped back to ``color_rgb``'s pixels.

        Args:
            color_rgb: ``(H, W, 3)`` uint8 RGB image.
            k: counter-clockwise quarter turns.

        Returns:
            The landmarks in ``color_rgb``'s pixel coordinates, or None when no person is found.
        """
        from mediapipe import Image, ImageFormat

        image = _check_rgb(color_rgb)
        rotated = np.ascontiguousarray(np.rot90(image, int(k) % 4))
        with self._lock:
            if not self._finalizer.alive:
                raise RuntimeError("MediaPipePoseBackend is closed")
            with quiet_native_stderr():
                result = self._landmarker.detect(Image(image_format=ImageFormat.SRGB, data=rotated))
        if not result.pose_landmarks:
            return None
        pose = result.pose_landmarks[0]
        xy = np.array([[lm.x, lm.y] for lm in pose], dtype=np.float64)
        vis = np.array([1.0 if lm.visibility is None else lm.visibility for lm in pose], dtype=np.float64)
        pres = np.array([1.0 if lm.presence is None else lm.presence for lm in pose], dtype=np.float64)
        uv, conf = blazepose_to_landmarks(xy, vis, pres, k=k, image_shape=image.shape[:2], names=self.names)
        return Landmarks2D(
            names=self.names,
            uv_px=uv,
            confidence=conf,
            backend=self.name,
            image_shape=(image.shape[0], image.shape[1]),
        )


def _plausible(landmarks: Landmarks2D, min_leg_ratio: float) -> bool:
    """False for an upside-down reading; True when it cannot be told (legs or trunk not placed)."""
    return not leg_to_torso_ratio(landmarks) < min_leg_ratio


def _best(results: dict[int, Landmarks2D | None], min_leg_ratio: float) -> Landmarks2D | None:
    """The most confident plausible result, else the most confident one."""
    found = [r for r in results.values() if r is not None]
    return max(found, key=lambda r: (_plausible(r, min_leg_ratio), r.score)) if found else None


def _check_rgb(color_rgb: np.ndarray | None) -> np.ndarray:
    if color_rgb is None:
        raise ValueError("MediaPipePoseBackend needs a colour image, got color_rgb=None")
    if not isinstance(color_rgb, np.ndarray) or color_rgb.dtype != np.uint8 or color_rgb.ndim != 3:
        raise ValueError(
            f"color_rgb must be an (H, W, 3) uint8 array, got {type(color_rgb).__name__} "
            f"{getattr(color_rgb, 'dtype', None)} {getattr(color_rgb, 'shape', None)}"
        )
    if color_rgb.shape[2] != 3 or color_rgb.shape[0] < 1 or color_rgb.shape[1] < 1:
        raise ValueError(f"color_rgb must be (H, W, 3) with H, W >= 1, got {color_rgb.shape}")
    return color_rgb
