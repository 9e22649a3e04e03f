"""The tablet app's own unit tests (node:test on its pure modules) and its type check, run from pytest so
that CI runs them with everything else."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from positioning import resources

TABLET = resources.data_root() / "tablet"

pytestmark = pytest.mark.skipif(
    shutil.which("npm") is None or not (TABLET / "node_modules").is_dir(),
    reason="the tablet app's npm packages are not installed (scripts/setup.sh)",
)


@pytest.mark.parametrize("script", ["test", "typecheck"])
def test_the_tablet_app(script):
    if script == "typecheck" and not (TABLET / "src" / "gen").is_dir():
        pytest.skip("the TypeScript client is not generated (scripts/setup.sh)")
    r = subprocess.run(["npm", "run", "-s", script], cwd=TABLET, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
