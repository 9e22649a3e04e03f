"""Tests of the noise calibration report (positioning.evaluation.noise_calibration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from positioning.errors import CorruptRecordingError, RecordingNotFoundError
from positioning.evaluation import noise_calibration as nc


def test_default_reference_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSITIONING_SHARED_DIR", str(tmp_path))
    assert nc.default_reference_path() == tmp_path / "data" / nc.REFERENCE_BAG_NAME
    monkeypatch.delenv("POSITIONING_SHARED_DIR")
    repo_root = Path(nc.__file__).resolve().parents[2]
    assert nc.default_reference_path() == repo_root.parent / "shared" / "data" / nc.REFERENCE_BAG_NAME


def test_missing_and_corrupt_recordings(tmp_path: Path) -> None:
    with pytest.raises(RecordingNotFoundError, match="not found"):
        nc.load_reference_depth(tmp_path / "nope.bag")
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a rosbag" * 100)
    with pytest.raises(CorruptRecordingError, match="cannot play"):
        nc.load_reference_depth(junk)


def test_main_reports_error_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nc.main([str(tmp_path / "nope.bag")]) == 2
    assert "not found" in capsys.readouterr().err


def test_reference_surface_fills_holes_on_the_background_side() -> None:
    depth = np.full((40, 60), 2000, np.uint16)
    depth[:, 30:] = 1000  # near surface on the right
    depth[:, 24:30] = 0  # its occlusion shadow
    depth[10, 10] = 0
    surface = nc.reference_surface(depth, smooth_px=3.0, min_area_px=50)
    assert np.isfinite(surface).all()
    np.testing.assert_allclose(surface[:, 24:30], 2000.0, atol=1.0)  # the shadow is background
    np.testing.assert_allclose(surface[:, 31:], 1000.0, atol=1.0)
    assert surface[10, 10] == pytest.approx(2000.0, abs=1.0)


def test_reference_surface_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint16"):
        nc.reference_surface(np.ones((4, 4)))
    with pytest.raises(ValueError, match="no valid pixel"):
        nc.reference_surface(np.zeros((4, 4), np.uint16))


def test_main_prints_side_by_side_table(real_d435_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert nc.main([str(real_d435_bag)]) == 0
    out = capsys.readouterr().out
    assert "real" in out and "simulated" in out
    for name in ("valid_fraction", "hole_count", "noise_sigma_at_1m_mm", "correlation_length_px"):
        assert name in out
