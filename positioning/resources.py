"""Where the project's data folders are: ``models/``, ``protocols/``, ``sim/`` and ``calibration/``.

They live at the repository root (data, not code; see DESIGN.md's layout). ``$POSITIONING_DATA`` points
at another root that holds them (an installed package whose data was copied elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "models_dir", "protocols_dir", "sim_dir", "calibration_dir"]


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
