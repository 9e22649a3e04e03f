"""``positioning bench tablet``: the tablet app in headless Chromium against a server on the simulated room.

Printed:

* page load: navigation start to the load event, and to the protocol picker filled from the service
  (the page is usable), median and p95 over ``--loads`` fresh loads;
* frame to picture: from the frame's arrival in the server to its overlay decoded on the page (median,
  p95), and frame to estimate shown (the words and the plan numbers), during ``--seconds`` of a session;
* pictures per second on the page.

Server and browser share a machine and its wall clock (the overlay carries the frame's arrival time in
Unix ms), so the figures are exact to the clock's resolution; on a real tablet they also include the
network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from positioning.evaluation.figures import median_p95
from positioning.perception.landmarks.base import LANDMARK_MODES

__all__ = ["benchmark_tablet", "main"]


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    return {**median_p95(values), "n": len(values)}


def benchmark_tablet(
    *, seconds: float = 20.0, loads: int = 5, landmarks: str = "fused", size: str = "1280x800"
) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring).

    Raises:
        BrowserError: no Chromium; PositioningError: the app is not built.
    """
    from playwright.sync_api import sync_playwright

    from positioning import resources
    from positioning.errors import PositioningError
    from positioning.evaluation.browser import launch_chromium, new_page
    from positioning.service.app import AppSettings, build_server
    from positioning.service.server import ServerSettings

    if not (resources.tablet_dist_dir() / "app.js").exists():
        raise PositioningError(
            f"the tablet app is not built in {resources.tablet_dist_dir()} (scripts/setup.sh)"
        )
    server = build_server(
        AppSettings(landmarks=landmarks, no_audit=True, server=ServerSettings(port=0, http_port=0))
    )
    server.start()
    out: dict[str, Any] = {"landmarks": landmarks, "seconds": seconds, "viewport": size}
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            load_ms, ready_ms = [], []
            for _ in range(loads):
                page = new_page(browser, size)
                page.goto(server.http_url)
                page.wait_for_function(
                    "window.tabletStats && window.tabletStats.readyMs !== null", timeout=30_000
                )
                nav = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                load_ms.append(float(nav))
                ready_ms.append(float(page.evaluate("window.tabletStats.readyMs")))
                page.context.close()
            page = new_page(browser, size)
            page.goto(server.http_url)
            page.wait_for_function(
                "window.tabletStats && window.tabletStats.readyMs !== null", timeout=30_000
            )
            page.click("button[data-protocol=chest]")
            page.click("#start-button")
            page.wait_for_function("window.tabletStats.picturesShown >= 3", timeout=120_000)
            page.evaluate(
                "(s => { s.pictureLatencyMs.length = 0; s.estimateLatencyMs.length = 0 })(window.tabletStats)"
            )
            shown0 = page.evaluate("window.tabletStats.picturesShown")
            t0 = time.monotonic()
            time.sleep(seconds)
            stats = page.evaluate("window.tabletStats")
            elapsed = time.monotonic() - t0
            page.click("#end-button")
            page.context.close()
            browser.close()
        out["page_load_ms"] = _stats(load_ms)
        out["page_ready_ms"] = _stats(ready_ms)
        out["frame_to_picture_ms"] = _stats(stats["pictureLatencyMs"])
        out["frame_to_estimate_ms"] = _stats(stats["estimateLatencyMs"])
        out["pictures_per_s"] = round((stats["picturesShown"] - shown0) / elapsed, 2)
        out["camera_fps"] = round(server.hub.device_status().fps, 1)
    finally:
        server.stop()
    return out


def format_results(r: dict[str, Any]) -> str:
    def f(k: str) -> str:
        s = r[k]
        return f"{s['median']} / {s['p95']} ms (median / p95, n={s['n']})"

    return "\n".join(
        [
            f"bench tablet: headless Chromium {r['viewport']}, simulated room, landmarks {r['landmarks']}",
            f"  page load (navigation to load event): {f('page_load_ms')}",
            f"  page ready (protocols from the service shown): {f('page_ready_ms')}",
            f"  frame to picture on the page: {f('frame_to_picture_ms')}",
            f"  frame to estimate on the page: {f('frame_to_estimate_ms')}",
            f"  pictures per second: {r['pictures_per_s']} (camera {r['camera_fps']} fps)",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="positioning bench tablet", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="of a live session (default 20)")
    parser.add_argument("--loads", type=int, default=5, help="fresh page loads timed (default 5)")
    parser.add_argument("--landmarks", default="fused", choices=LANDMARK_MODES)
    parser.add_argument("--size", default="1280x800", help="viewport (default 1280x800)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    try:
        r = benchmark_tablet(seconds=args.seconds, loads=args.loads, landmarks=args.landmarks, size=args.size)
    except ImportError:
        print("bench tablet: playwright is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    print(format_results(r))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
