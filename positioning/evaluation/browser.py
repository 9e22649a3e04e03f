"""Debian's Chromium, headless, driven by Playwright: for the tablet app's browser tests and its benchmark.

Playwright's own browser downloads are not used (no internet on these machines): Debian's ``chromium``
package is launched with flags that keep it from reaching out (background networking, component
updates, sync, QUIC) and without the sandbox (these machines run as root).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from positioning.errors import PositioningError

__all__ = ["CHROMIUM_ARGS", "VIEWPORTS", "BrowserError", "chromium_path", "launch_chromium", "new_page"]

CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: The tablet sizes the app is made for, both orientations.
VIEWPORTS: dict[str, tuple[int, int]] = {
    "1024x768": (1024, 768),
    "768x1024": (768, 1024),
    "1280x800": (1280, 800),
    "800x1280": (800, 1280),
}


class BrowserError(PositioningError):
    """No browser to drive."""

    code = "NO_BROWSER"


def chromium_path() -> Path | None:
    """Debian's Chromium, or None."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium from a started ``sync_playwright()``.

    Raises:
        BrowserError: Chromium is not installed.
    """
    path = chromium_path()
    if path is None:
        raise BrowserError("Debian's chromium is not installed (scripts/setup.sh installs it)")
    return playwright.chromium.launch(executable_path=str(path), args=list(CHROMIUM_ARGS))


def new_page(browser: Any, size: str = "1280x800") -> Any:
    """A touch-enabled page of one of :data:`VIEWPORTS`. Playwright's waits evaluate scripts, which the
    app's Content-Security-Policy forbids, so the policy is bypassed for the driver (not for the app)."""
    w, h = VIEWPORTS[size]
    context = browser.new_context(viewport={"width": w, "height": h}, bypass_csp=True, has_touch=True)
    return context.new_page()
