"""Tests of positioning.perception.temporal: One Euro smoothing, gating, motion and categorical steadiness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from positioning.perception.lifting import Landmarks3D
from positioning.perception.temporal import (
    CategoricalSmoother,
    LandmarkSmoother,
    MotionDetector,
    MotionSettings,
    OneEuroFilter,
    OneEuroSettings,
    PoseTracker,
    TemporalSettings,
    cloud_motion_mm,
    landmark_motion_mm,
    smoothing_alpha,
)

FRAME_MS = 1000.0 / 30.0
NAMES = ("nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee")
BASE = np.array([
    [0.0, -600, 40], [180, -780, -20], [-180, -780, -20], [95, -1250, -40], [-95, -1250, -40],
    [100, -1700, -60], [-100, -1700, -60],
])  # fmt: skip


def _lm(points: np.ndarray, conf: float | np.ndarray = 0.9) -> Landmarks3D:
    conf = np.broadcast_to(np.asarray(conf, float), (len(NAMES),))
    surface = points + np.array([0.0, 0.0, 50.0])
    return Landmarks3D(names=NAMES, points_mm=points, surface_mm=surface, confidence=conf,
                       uv_px=np.zeros((len(NAMES), 2)), backend="t")  # fmt: skip


def _noisy_track(n: int, sigma_mm: float, seed: int = 0, step_at: int | None = None, step_mm=(0, 0, 0)):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        p = BASE + rng.normal(0.0, sigma_mm, BASE.shape)
        if step_at is not None and i >= step_at:
            p = p + np.asarray(step_mm, float)
        frames.append(_lm(p))
    return frames


def test_smoothing_alpha():
    assert smoothing_alpha(1.0, 1 / 30) == pytest.approx(1 / (1 + 30 / (2 * math.pi)))
    assert smoothing_alpha(1e9, 0.1) == pytest.approx(1.0)
    np.testing.assert_allclose(smoothing_alpha(np.array([1.0, 2.0]), 0.05), [smoothing_alpha(1.0, 0.05),
                               smoothing_alpha(2.0, 0.05)])  # fmt: skip


def test_one_euro_static_jitter_reduced_more_than_3x():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 5.0, (300, 3))
    f = OneEuroFilter()
    out = np.array([f(x[i], i * FRAME_MS) for i in range(len(x))])
    assert x[30:].std() / out[30:].std() > 3.0


def test_one_euro_follows_a_ramp_with_small_lag():
    t = np.arange(120) * FRAME_MS
    x = np.stack([t * 0.1, np.zeros_like(t), np.zeros_like(t)], axis=1)  # 100 mm/s
    f = OneEuroFilter()
    out = np.array([f(x[i], t[i]) for i in range(len(t))])
    lag = x[60:, 0] - out[60:, 0]
    assert 0 < lag.mean() < 15.0


def test_one_euro_restart_on_time_going_back_or_repeating():
    f = OneEuroFilter()
    f(np.array([0.0]), 0.0)
    f(np.array([10.0]), FRAME_MS)
    np.testing.assert_allclose(f(np.array([50.0]), 0.0), [50.0])  # time went back: restart
    np.testing.assert_allclose(f(np.array([70.0]), 0.0), [70.0])  # same time: restart at the value


@pytest.mark.parametrize("kw", [{"min_cutoff_hz": 0}, {"d_cutoff_hz": -1}, {"beta": -0.1}])
def test_one_euro_settings_invalid(kw):
    with pytest.raises(ValueError):
        OneEuroSettings(**kw)


@pytest.mark.parametrize("kw", [{"gate_mm": 0}, {"gate_frames": 0}, {"hold_ms": -1}])
def test_temporal_settings_invalid(kw):
    with pytest.raises(ValueError):
        TemporalSettings(**kw)


# ------------------------------------------------------------------------------------------ smoother


def test_landmark_smoother_static_jitter_reduced_more_than_3x():
    frames = _noisy_track(300, 5.0)
    sm = LandmarkSmoother()
    out = np.array([sm.update(lm, i * FRAME_MS).points_mm for i, lm in enumerate(frames)])
    raw = np.array([lm.points_mm for lm in frames])
    ratio = (raw[30:] - BASE).std() / (out[30:] - BASE).std()
    assert ratio > 3.0, ratio
    assert np.abs(out[30:].mean(axis=0) - BASE).max() < 2.0  # no bias


def test_landmark_smoother_follows_a_step_within_a_few_frames():
    step = (0.0, 100.0, 0.0)
    frames = _noisy_track(60, 5.0, step_at=30, step_mm=step)
    sm = LandmarkSmoother()
    out = [sm.update(lm, i * FRAME_MS).points_mm for i, lm in enumerate(frames)]
    target = BASE + step
    settled = next(i for i in range(30, 60) if np.abs(out[i] - target).max() < 15.0)
    assert settled - 30 <= TemporalSettings().gate_frames, settled - 30
    # and a step below the gate (40 mm) within a few frames more
    frames = _noisy_track(60, 5.0, step_at=30, step_mm=(40.0, 0.0, 0.0))
    sm = LandmarkSmoother()
    out = [sm.update(lm, i * FRAME_MS).points_mm for i, lm in enumerate(frames)]
    settled = next(
        i for i in range(30, 60) if np.median(np.abs(out[i] - (BASE + np.array([40, 0, 0])))) < 10.0
    )
    assert settled - 30 <= 8, settled - 30


def test_landmark_smoother_gates_a_one_frame_glitch():
    frames = _noisy_track(40, 3.0)
    glitch = frames[20].points_mm.copy()
    glitch[1] += [0.0, 0.0, 250.0]  # one frame: the left shoulder jumps 25 cm
    frames[20] = _lm(glitch)
    sm = LandmarkSmoother()
    out = [sm.update(lm, i * FRAME_MS) for i, lm in enumerate(frames)]
    assert abs(out[20].point("left_shoulder")[2] - BASE[1, 2]) < 10.0
    assert abs(out[21].point("left_shoulder")[2] - BASE[1, 2]) < 10.0


def test_landmark_smoother_holds_missing_landmarks_then_drops_them():
    sm = LandmarkSmoother(TemporalSettings(hold_ms=200.0))
    sm.update(_lm(BASE), 0.0)
    conf = np.full(len(NAMES), 0.9)
    conf[0] = 0.0
    held = sm.update(_lm(BASE, conf), 100.0)
    assert held.conf("nose") == pytest.approx(0.9 * 0.5)  # half the hold time gone
    np.testing.assert_allclose(held.point("nose"), BASE[0])
    gone = sm.update(_lm(BASE, conf), 300.0)
    assert gone.conf("nose") == 0.0 and np.isnan(gone.point("nose")).all()


def test_landmark_smoother_restarts_when_time_goes_back_and_repeats_same_time():
    sm = LandmarkSmoother()
    first = sm.update(_lm(BASE), 1000.0)
    again = sm.update(_lm(BASE + 30.0), 1000.0)
    assert again is first
    back = sm.update(_lm(BASE + 30.0), 0.0)
    np.testing.assert_allclose(back.points_mm, BASE + 30.0)


# -------------------------------------------------------------------------------------------- motion


def test_landmark_motion_detects_a_20mm_shift():
    a = _lm(BASE)
    b = _lm(BASE + np.array([20.0, 0.0, 0.0]))
    assert landmark_motion_mm(a, b) == pytest.approx(20.0)
    assert landmark_motion_mm(a, b, mode="median_vector") == pytest.approx(20.0)
    # noisy: the median vector is robust to noise and to one limb moving
    rng = np.random.default_rng(3)
    c = _lm(BASE + rng.normal(0, 5, BASE.shape))
    d = BASE + np.array([0.0, 20.0, 0.0]) + rng.normal(0, 5, BASE.shape)
    d[5] += [0.0, 0.0, 300.0]
    assert abs(landmark_motion_mm(c, _lm(d), mode="median_vector") - 20.0) < 6.0
    # missing landmarks
    conf = np.zeros(len(NAMES))
    conf[:2] = 0.9
    assert math.isnan(landmark_motion_mm(a, _lm(BASE, conf)))
    with pytest.raises(ValueError, match="mode"):
        landmark_motion_mm(a, b, mode="mean")  # type: ignore[arg-type]


def test_cloud_motion():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-200, 200, (500, 3))
    assert cloud_motion_mm(pts, pts + np.array([0.0, 0.0, 20.0])) == pytest.approx(20.0)
    assert math.isnan(cloud_motion_mm(pts[:10], pts[:10]))
    with pytest.raises(ValueError):
        cloud_motion_mm(pts[:, :2], pts)


def test_motion_detector_flags_a_20mm_shift_and_releases():
    frames = _noisy_track(90, 4.0, step_at=45, step_mm=(0.0, 20.0, 0.0))
    sm = LandmarkSmoother()
    det = MotionDetector(MotionSettings(threshold_mm=10.0))
    states = [det.update(sm.update(lm, i * FRAME_MS), i * FRAME_MS) for i, lm in enumerate(frames)]
    moving = np.array([s.moving for s in states])
    assert not moving[15:45].any(), "no motion before the shift"
    assert moving[45:60].any(), "the shift is detected"
    assert not moving[80:].any(), "and released once still"
    assert max(s.motion_mm for s in states[45:60]) > 10.0


@pytest.mark.parametrize(
    "kw", [{"threshold_mm": 0}, {"release_fraction": 0}, {"release_fraction": 1.5}, {"release_frames": 0},
           {"window_ms": -1}],
)  # fmt: skip
def test_motion_settings_invalid(kw):
    with pytest.raises(ValueError):
        MotionSettings(**kw)


# --------------------------------------------------------------------------------------- categorical


def test_categorical_majority_with_hysteresis():
    sm: CategoricalSmoother[str] = CategoricalSmoother(window=5, switch_fraction=0.7)
    seq = ["HFS", "HFS", "FFS", "HFS", "FFS", "HFS", "FFS", "HFS", "FFS", "FFS", "FFS", "FFS"]
    out = [sm.update(v)[0] for v in seq]
    assert out[:9] == ["HFS"] * 9  # alternating values never flip it
    assert out[-1] == "FFS"  # a lasting change does
    assert out.count("FFS") <= 3


def test_categorical_confidence_weighting_and_none():
    sm: CategoricalSmoother[str] = CategoricalSmoother(window=4)
    assert sm.update(None) == (None, 0.0)
    assert sm.update("raised", 0.9)[0] == "raised"
    sm.update("sides", 0.1)
    sm.update("sides", 0.1)
    value, support = sm.update("raised", 0.9)
    assert value == "raised" and support == pytest.approx(1.8 / 4)
    with pytest.raises(ValueError):
        CategoricalSmoother(switch_fraction=0.5)


def test_pose_tracker_end_to_end():
    tracker = PoseTracker()
    frames = _noisy_track(60, 4.0, step_at=40, step_mm=(0.0, 0.0, 30.0))
    codes = ["HFS"] * 60
    codes[10] = "HFP"  # one wrong frame
    outs = [tracker.update(lm, i * FRAME_MS, position=codes[i], position_confidence=0.9, arms="raised",
                           arms_confidence=0.8) for i, lm in enumerate(frames)]  # fmt: skip
    assert all(o.position == "HFS" for o in outs) and outs[-1].arms == "raised"
    assert 0.7 < outs[30].position_confidence <= 0.9 + 1e-9
    assert not any(o.moving for o in outs[15:40]) and any(o.moving for o in outs[40:55])
    tracker.reset()
    assert tracker.update(frames[0], 0.0).position is None
