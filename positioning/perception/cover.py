"""Is something lying over the patient's legs? Judged from the colour image's landmarks.

A blanket or sheet hides the body's outline: under it the isocenter and a range end on the legs or the
pelvis rest on a surface the camera does not see. BlazePose gives each landmark a *visibility*, trained on
real photographs to say how likely the point is in view and not occluded. Over a bare or gowned patient
the knees and ankles are seen plainly (visibility near 1); under a blanket the model still places them but
marks them as hidden. That is the cue used here, because it comes from a model trained on real images and
does not depend on how our simulator drapes its blankets. (The scene network's blanket output is withheld:
its held-out recall was at chance, ``models/scene_net.md``.)

A blanket hides both legs; one leg hiding the other (a patient on their side, crossed legs) hides only
one, so each leg is scored by its knee and ankle and the better-seen leg decides. The judgement says
"the legs are hidden", not which cloth or how far up: a person standing in front of the legs hides them
too, and the message says so. It is made only where the legs' landmarks lie inside
the image and the trunk itself is seen plainly (a poor detection altogether, in a dim room, is not a
blanket), and never without a colour image.

Thresholds were chosen on the randomised world's training sessions (seeds 10004-10403, frame 0, 378 with
a patient; never the robustness or evaluation suites): the better-seen leg below 0.65 named 39 % of the
blankets with 1.5 % false alarms (the mean of all four below 0.6: 47 % and 5.6 %, 10 % on patients lying on
their side). See :data:`DEFAULT_COVER_SETTINGS`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from positioning.perception.landmarks.base import TRUNK_LANDMARKS, Landmarks2D

__all__ = ["CoverSettings", "LegsHidden", "DEFAULT_COVER_SETTINGS", "legs_hidden"]

LEGS: tuple[str, ...] = ("left_knee", "right_knee", "left_ankle", "right_ankle")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoverSettings:
    """Settings of :func:`legs_hidden`.

    Attributes:
        max_leg_visibility: the legs are hidden when the better-seen leg's mean confidence (visibility x
            presence) of its knee and ankle in view is below this.
        min_trunk_visibility: judge only when the shoulders' and hips' mean confidence is at least this.
        min_legs_in_view: judge only when at least this many knees and ankles lie inside the image.
        border_px: a landmark closer than this to the image border (or beyond it) is not in view.
    """

    max_leg_visibility: float = 0.65
    min_trunk_visibility: float = 0.8
    min_legs_in_view: int = 2
    border_px: float = 8.0

    def __post_init__(self) -> None:
        if not (0.0 < self.max_leg_visibility <= 1.0 and 0.0 <= self.min_trunk_visibility <= 1.0):
            raise ValueError(
                "max_leg_visibility must be in (0, 1] and min_trunk_visibility in [0, 1], got "
                f"{self.max_leg_visibility}, {self.min_trunk_visibility}"
            )
        if not 1 <= self.min_legs_in_view <= len(LEGS) or self.border_px < 0:
            raise ValueError(
                f"min_legs_in_view must be in [1, {len(LEGS)}] and border_px >= 0, got "
                f"{self.min_legs_in_view}, {self.border_px}"
            )


DEFAULT_COVER_SETTINGS = CoverSettings()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LegsHidden:
    """The judgement of one frame.

    Attributes:
        hidden: the legs' landmarks are seen as hidden (something lies over or in front of them).
        leg_visibility: the better-seen leg's mean confidence (of its knee and ankle in view).
        trunk_visibility: mean confidence of the shoulders and hips.
        legs_in_view: the knees and ankles that lie inside the image.
        confidence: how sure the judgement is, in [0, 1] (how far the legs' visibility lies from the
            threshold, on the side judged).
    """

    hidden: bool
    leg_visibility: float
    trunk_visibility: float
    legs_in_view: tuple[str, ...]
    confidence: float


def _in_view(uv_px: np.ndarray, shape: tuple[int, int] | None, border_px: float) -> bool:
    if not np.all(np.isfinite(uv_px)):
        return False
    if shape is None:
        return True
    h, w = shape
    u, v = float(uv_px[0]), float(uv_px[1])
    return border_px <= u <= w - 1 - border_px and border_px <= v <= h - 1 - border_px


def legs_hidden(
    landmarks: Landmarks2D, settings: CoverSettings = DEFAULT_COVER_SETTINGS
) -> LegsHidden | None:
    """Are the patient's legs hidden under (or behind) something, by the colour landmarks' visibility?

    Args:
        landmarks: one person's 2-D landmarks from a backend that reports visibility (MediaPipe).
        settings: thresholds.

    Returns:
        The judgement, or None where it cannot be made: too few knees and ankles inside the image, or the
        trunk itself not seen plainly.
    """
    s = settings
    names = landmarks.names
    if not all(n in names for n in TRUNK_LANDMARKS):
        return None
    conf = {n: float(c) for n, c in zip(names, landmarks.confidence, strict=True)}
    trunk = float(np.mean([conf[n] for n in TRUNK_LANDMARKS]))
    if trunk < s.min_trunk_visibility:
        return None
    shape = landmarks.image_shape
    seen = tuple(
        n for n in LEGS if n in names and _in_view(landmarks.uv_px[names.index(n)], shape, s.border_px)
    )
    if len(seen) < s.min_legs_in_view:
        return None
    sides = [[conf[n] for n in seen if n.startswith(side)] for side in ("left_", "right_")]
    legs = max(float(np.mean(v)) for v in sides if v)
    hidden = legs < s.max_leg_visibility
    t = s.max_leg_visibility
    margin = (t - legs) / t if hidden else (legs - t) / max(1.0 - t, 1e-9)
    return LegsHidden(
        hidden=hidden,
        leg_visibility=legs,
        trunk_visibility=trunk,
        legs_in_view=seen,
        confidence=float(np.clip(0.5 + 0.5 * margin, 0.0, 1.0)),
    )
