"""Fixtures of the planning tests (builders in ``planning_builders``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from planning_builders import make_state

from positioning.perception.state import PatientState


@pytest.fixture
def state_factory() -> Callable[..., PatientState]:
    """``state_factory(position="HFS", **kwargs)``: see :func:`planning_builders.make_state`."""
    return make_state
