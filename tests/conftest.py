"""Shared fixtures: data files that live outside the repository, in the sibling ``shared/`` folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The repository's sibling folder with shared data; ``POSITIONING_SHARED_DIR`` overrides it.
DEFAULT_SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def shared_dir() -> Path:
    """The shared data folder: ``$POSITIONING_SHARED_DIR`` if set, else ``../shared`` beside the repo."""
    return Path(os.environ.get("POSITIONING_SHARED_DIR") or DEFAULT_SHARED_DIR)


@pytest.fixture(autouse=True)
def _no_site_calibration(monkeypatch):
    """Tests choose their calibrations: a site's ``$POSITIONING_CALIBRATION`` on the machine is not used."""
    monkeypatch.delenv("POSITIONING_CALIBRATION", raising=False)


@pytest.fixture
def torch_threads_restored():
    """PyTorch's thread count as it was before the test (live settings set it process-wide)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_d435_bag() -> Path:
    """A real Intel RealSense D435 recording (legacy ``.bag``: one depth + colour frameset, 640x480)."""
    path = shared_dir() / "data" / "d435_single_depth_color_640x480.bag"
    if not path.is_file():
        pytest.skip(
            f"real D435 recording not found at {path} (set POSITIONING_SHARED_DIR to the shared folder)"
        )
    return path


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    """Write the test now starting to ``$POSITIONING_TEST_TRACE`` (CI names the test a crash of the
    interpreter happened in: ``-q`` output shows only dots)."""
    trace = os.environ.get("POSITIONING_TEST_TRACE")
    if trace:
        Path(trace).write_text(nodeid + "\n")
