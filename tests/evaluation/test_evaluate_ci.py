"""CI's accuracy gate: the quick suite through the real command, against its recorded floors."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_quick_suite_keeps_its_floors(tmp_path):
    """`positioning evaluate quick --check-floors` exits 0 only when every headline figure keeps its floor
    in sim/suites/quick.floors.yaml (the suite's recordings are cached by content after the first run)."""
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "positioning.cli", "evaluate", "quick", "--check-floors", "--jobs", "2",
         "--report", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "FAIL" not in proc.stdout and "floors (" in proc.stdout
    assert (out / "report.html").is_file() and (out / "results.json").is_file()
