"""Where the project's data folders are: ``models/``, ``protocols/``, ``sim/`` and ``calibration/``, and
where generated data is cached.

They live at the repository root (data, not code; see DESIGN.md's layout). ``$POSITIONING_DATA`` points
at another root that holds them (an installed package whose data was copied elsewhere). Generated data
(simulated frames, training samples, the simulated room's recording) is cached under
``$POSITIONING_CACHE`` (default ``~/.cache/positioning``): it can always be made again.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "models_dir", "protocols_dir", "sim_dir", "calibration_dir", "cache_dir"]


def data_root() -> Path:
    """The folder holding ``models/``, ``protocols/``, ``sim/`` and ``calibration/``."""
    env = os.environ.get("POSITIONING_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    """Model files and their cards."""
    return data_root() / "models"


def protocols_dir() -> Path:
    """Scan protocols (YAML)."""
    return data_root() / "protocols"


def sim_dir() -> Path:
    """Scenario and suite definitions (YAML)."""
    return data_root() / "sim"


def calibration_dir() -> Path:
    """Room files and calibration boards."""
    return data_root() / "calibration"


def tablet_dist_dir() -> Path:
    """The tablet app's built bundle (``tablet/dist``, written by ``npm run build`` in set-up)."""
    return data_root() / "tablet" / "dist"


def cache_dir(name: str = "") -> Path:
    """The cache folder ``name`` under ``$POSITIONING_CACHE`` (default ``~/.cache/positioning``); not
    created here."""
    root = os.environ.get("POSITIONING_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "positioning"
    return base / name if name else base
