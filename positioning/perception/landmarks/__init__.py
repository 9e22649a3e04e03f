"""Body landmarks from the camera images: the backend interface, fusion and the MediaPipe backend.

``base`` defines the names, the :class:`Landmarks2D` result, the :class:`LandmarkBackend` protocol and
:func:`fuse_landmarks`; ``mediapipe_backend`` runs BlazePose on the colour image; ``model_build`` builds its
model bundle at set-up time (``python -m positioning.perception.landmarks.model_build``). Importing this
package does not import mediapipe; constructing :class:`MediaPipePoseBackend` does.
"""

from positioning.perception.landmarks.base import (
    COCO_LANDMARKS,
    DEFAULT_AGREE_PX,
    LandmarkBackend,
    LandmarkModelError,
    Landmarks2D,
    ModelNotFoundError,
    fuse_landmarks,
    uv_from_rot90,
)
from positioning.perception.landmarks.mediapipe_backend import (
    BLAZEPOSE_LANDMARKS,
    EXTRA_LANDMARKS,
    MediaPipePoseBackend,
    RotationPolicy,
    default_model_path,
)
from positioning.perception.landmarks.model_build import ModelBuildError, build_pose_landmarker_task

__all__ = [
    "BLAZEPOSE_LANDMARKS",
    "COCO_LANDMARKS",
    "DEFAULT_AGREE_PX",
    "EXTRA_LANDMARKS",
    "LandmarkBackend",
    "LandmarkModelError",
    "Landmarks2D",
    "MediaPipePoseBackend",
    "ModelBuildError",
    "ModelNotFoundError",
    "RotationPolicy",
    "build_pose_landmarker_task",
    "default_model_path",
    "fuse_landmarks",
    "uv_from_rot90",
]
