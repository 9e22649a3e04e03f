"""The steady-frame test (a live stream's frame that repeats the last perception): still frames of a
simulated patient are steady, the same patient shifted is not, nor a person leaning in or a blocked view."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from positioning.perception.steady import SteadySettings, depth_change, depth_sample
from positioning.sim.scenario import sample_session
from positioning.sim.session import SimulatedSession


def _sample(frame) -> np.ndarray:
    return depth_sample(frame.depth_mm)


def test_still_frames_are_steady_and_a_patient_shifted_10_mm_sideways_is_not(sim_frame):
    still = [_sample(sim_frame("hfs-arms-up", 0, i).frame) for i in range(4)]
    spec = sample_session("hfs-arms-up", seed=0)
    shifted = SimulatedSession(dataclasses.replace(spec, shift_at_frame=0, shift_mm=(10.0, 0.0, 0.0)))
    moved = [_sample(shifted.frame(i)[0]) for i in (1, 2)]
    for i in range(4):
        for j in range(i + 1, 4):
            change = depth_change(still[i], still[j])
            assert change.steady, (i, j, change)
    for m in moved:
        for s in still[:2]:
            change = depth_change(s, m)
            assert not change.steady, change
            assert change.changed > 2 * SteadySettings().max_changed_share * change.compared  # not marginal


def _noisy_plane(rng: np.random.Generator, depth_mm: float = 1500.0) -> np.ndarray:
    return np.clip(rng.normal(depth_mm, 8.0, (480, 848)), 1, None).astype(np.uint16)


def test_a_person_leaning_in_and_a_blocked_view_are_changes():
    rng = np.random.default_rng(0)
    a, b = _noisy_plane(rng), _noisy_plane(rng)
    assert depth_change(depth_sample(a), depth_sample(b)).steady
    leaning = b.copy()
    leaning[100:220, 300:420] = 900  # an arm and shoulder 600 mm above the surface
    change = depth_change(depth_sample(a), depth_sample(leaning))
    assert not change.steady and change.changed == 60 * 60
    blocked = b.copy()
    blocked[:, :300] = 0  # the view blocked on one side: no depth there
    change = depth_change(depth_sample(a), depth_sample(blocked))
    assert not change.steady and change.valid_change == pytest.approx(150 / 424, abs=1e-3)
    assert not depth_change(depth_sample(a), np.zeros_like(depth_sample(a))).steady  # no depth at all


def test_the_tolerance_grows_with_the_square_of_the_depth():
    settings = SteadySettings()
    near = np.full((240, 424), 1000.0, np.float32)
    far = np.full((240, 424), 3000.0, np.float32)
    # 50 mm: beyond the tolerance at 1 m (45 mm), within it at 3 m (405 mm)
    assert not depth_change(near, near + 50.0, settings).steady
    assert depth_change(far, far + 50.0, settings).steady


def test_images_of_different_sizes_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        depth_change(np.ones((240, 424), np.float32), np.ones((360, 640), np.float32))
    with pytest.raises(ValueError, match="stride"):
        SteadySettings(stride=0)
    with pytest.raises(ValueError, match="max_changed_share"):
        SteadySettings(max_changed_share=1.5)
    with pytest.raises(ValueError, match="refresh_ms"):
        SteadySettings(refresh_ms=0.0)
