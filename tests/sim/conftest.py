"""Shared simulator fixtures: the anny body model and a few placed bodies, built once per test session.

Loading anny takes about 5 s per process and each placement about 0.2-1 s, so every test module that
needs a body takes it from here instead of building its own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from positioning.sim.body import ArmPose, BodyModel, Phenotype, body_model
from positioning.sim.placement import PatientPosition, PlacedBody, PlacementParams, place_body


@pytest.fixture(scope="session")
def model() -> BodyModel:
    """The process-wide anny body model (loaded once)."""
    return body_model()


@pytest.fixture(scope="session")
def place_cached(model: BodyModel) -> Callable[..., PlacedBody]:
    """``place_cached(position, arms, phenotype=None, **params)``: :func:`place_body`, cached per session.

    ``params`` are :class:`PlacementParams` fields; ``phenotype`` defaults to the average adult.
    """
    cache: dict[tuple, PlacedBody] = {}

    def _place(
        position: str = "HFS", arms: str = "sides", phenotype: Phenotype | None = None, **params: float
    ) -> PlacedBody:
        phenotype = phenotype or Phenotype()
        key = (position, arms, phenotype, tuple(sorted(params.items())))
        if key not in cache:
            cache[key] = place_body(
                phenotype,
                PlacementParams(position=PatientPosition(position), arms=ArmPose(arms), **params),
                model=model,
            )
        return cache[key]

    return _place
