"""Has the scene changed since a frame was perceived? A live stream's test on the depth image alone.

A camera over a still patient delivers 30 frames a second that differ only by sensor noise; perceiving
each one again gives the same patient within that noise. :func:`depth_change` compares a frame's depth
with the depth of the frame last perceived in full, pixel by pixel on a strided grid: a pixel whose depth
moved by more than ``tolerance_mm_per_m2 * depth**2`` (depth in metres; at least ``tolerance_floor_mm``)
has changed, and the scene has changed when more than ``max_changed_share`` of the compared pixels have,
or when the share of pixels with depth moved by more than ``max_valid_change``.

Why pixels and not block means: the RealSense depth noise is spatially correlated (a block of 16x16 pixels
averages it down only from 18 to 14 mm at 1.7 m on the simulated D435), so block means hide a small shift
in the noise; a body's outline is a step of 100 mm or more, and the pixels it sweeps over change far
beyond the noise. Measured on the simulated room (``hfs-arms-up``, D435 at 848x480, every second pixel,
15 still frames against each other and against the same patient shifted): still pairs at most 64 changed
pixels of 101 760; shifted 6 mm sideways at least 158, 10 mm sideways 272, 25 mm sideways and 15 mm along
the table 961. A shift of 10 mm along the table alone changes too few pixels (58 to 82) to be told from
noise: such moves wait for the next full perception (``refresh_ms``). A noisier camera than the one
simulated only makes more frames perceived in full (slower, never wrong).

Convention: depth in mm (z-depth, as :class:`~positioning.frames.RGBDFrame`), 0 = no depth.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SteadySettings", "DepthChange", "depth_sample", "depth_change"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteadySettings:
    """When a live frame repeats the perception of an earlier one (``PerceiverSettings.steady``).

    Attributes:
        stride: every ``stride``-th pixel in both directions is compared.
        tolerance_mm_per_m2: a pixel has changed when its depth moved by more than this times its depth
            squared (m^2): about five standard deviations of the simulated sensors' noise (about 7 mm
            per m^2 between two frames).
        tolerance_floor_mm: ... and by at least this much.
        max_changed_share: the scene has changed when more than this share of the compared pixels (those
            with depth in both frames) has (0.0012: 122 pixels of the 101 760 compared at 848x480).
        max_valid_change: ... or when the share of pixels with depth changed by more than this (the view
            blocked, the exposure failing).
        refresh_ms: a frame is perceived in full at least this often, however still the scene: the
            tracker's smoothing keeps getting new measurements, and moves too small to see here are
            perceived within this time.
        settle_mm: a state is repeated only when the tracker does not see the patient moving and its
            motion over the tracker's window (``PatientState.motion_mm``) is below this: a tracker still
            converging after a move is not frozen. A still simulated patient's smoothed landmarks move by
            2.5 to 9.4 mm over the window (fused landmarks, ``hfs-arms-up``), so a tighter value would
            keep perceiving a still patient in full; the refreshes keep feeding the tracker anyway.
        min_perceived: frames perceived in full after a new patient (``Perceiver.reset``) before any is
            repeated: the tracker's smoothing settles over the first frames (a session confirms only
            after ``MIN_CONFIRM_FRAMES``, 5, of them).
    """

    stride: int = 2
    tolerance_mm_per_m2: float = 45.0
    tolerance_floor_mm: float = 40.0
    max_changed_share: float = 0.0012
    max_valid_change: float = 0.05
    refresh_ms: float = 250.0
    settle_mm: float = 10.0
    min_perceived: int = 5

    def __post_init__(self) -> None:
        if self.stride < 1 or self.tolerance_mm_per_m2 <= 0 or self.tolerance_floor_mm < 0:
            raise ValueError(
                f"need stride >= 1, tolerance_mm_per_m2 > 0, tolerance_floor_mm >= 0; got {self.stride}, "
                f"{self.tolerance_mm_per_m2}, {self.tolerance_floor_mm}"
            )
        if not (0.0 <= self.max_changed_share < 1.0 and 0.0 <= self.max_valid_change < 1.0):
            raise ValueError(
                "need 0 <= max_changed_share < 1 and 0 <= max_valid_change < 1; got "
                f"{self.max_changed_share}, {self.max_valid_change}"
            )
        if self.refresh_ms <= 0 or self.settle_mm <= 0:
            raise ValueError(
                f"need refresh_ms > 0 and settle_mm > 0; got {self.refresh_ms}, {self.settle_mm}"
            )


@dataclasses.dataclass(frozen=True)
class DepthChange:
    """How much a frame's depth differs from a reference frame's.

    Attributes:
        changed: compared pixels whose depth moved beyond the tolerance.
        compared: pixels with depth in both frames.
        valid_change: the share of pixels with depth in one frame and not the other.
        steady: neither ``changed`` nor ``valid_change`` beyond the settings' allowance.
    """

    changed: int
    compared: int
    valid_change: float
    steady: bool


def depth_sample(depth_mm: np.ndarray, settings: SteadySettings = SteadySettings()) -> np.ndarray:
    """The strided grid :func:`depth_change` compares: ``(H // stride, W // stride)`` float32 mm, 0 = none."""
    return np.asarray(depth_mm[:: settings.stride, :: settings.stride], dtype=np.float32)


def depth_change(
    reference: np.ndarray, current: np.ndarray, settings: SteadySettings = SteadySettings()
) -> DepthChange:
    """Compare two frames' :func:`depth_sample` grids (see the module's docstring).

    Raises:
        ValueError: the two grids differ in shape (images of different sizes).
    """
    if reference.shape != current.shape:
        raise ValueError(f"depth images of different sizes: {reference.shape} and {current.shape}")
    ref_ok, cur_ok = reference > 0, current > 0
    both = ref_ok & cur_ok
    tol = np.maximum(settings.tolerance_floor_mm, settings.tolerance_mm_per_m2 * (reference * 1e-3) ** 2)
    changed = int(np.count_nonzero(both & (np.abs(current - reference) > tol)))
    compared = int(np.count_nonzero(both))
    valid_change = float(np.count_nonzero(ref_ok != cur_ok)) / max(reference.size, 1)
    steady = (
        compared > 0
        and changed <= settings.max_changed_share * compared
        and valid_change <= settings.max_valid_change
    )
    return DepthChange(changed=changed, compared=compared, valid_change=valid_change, steady=steady)
