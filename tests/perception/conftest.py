"""Simulated frames for the perception tests, rendered once per test session.

The first anny load in a process takes about 5 s and each session's first frame about 0.3-1 s, so every
perception test module takes its frames from here. Truth (``FrameTruth``, the ``SessionSpec``) is for
checking results only: nothing under ``positioning.perception`` may read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from positioning.frames import Calibration, RGBDFrame
from positioning.sim.scenario import SessionSpec, sample_session
from positioning.sim.session import FrameTruth, SimulatedSession


@dataclasses.dataclass(frozen=True)
class SimFrame:
    """One simulated frame with what perception may use (frame, calibration) and the truth to check it."""

    frame: RGBDFrame
    calibration: Calibration
    truth: FrameTruth
    spec: SessionSpec


@pytest.fixture(scope="session")
def sim_frame() -> Callable[..., SimFrame]:
    """``sim_frame(scenario, seed=0, index=0)``: a simulated frame and its truth, cached per session."""
    cache: dict[tuple[str, int, int], SimFrame] = {}

    def _get(scenario: str, seed: int = 0, index: int = 0) -> SimFrame:
        key = (scenario, seed, index)
        if key not in cache:
            spec = sample_session(scenario, seed=seed)
            frame, truth = SimulatedSession(spec).frame(index)
            cache[key] = SimFrame(frame, spec.rig.calibration(), truth, spec)
        return cache[key]

    return _get
