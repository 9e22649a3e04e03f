"""The tablet app in a real browser (Debian's headless Chromium driven by Playwright) against a real server
on the simulated room: its gRPC-Web port, tokens, a scripted patient move.

Screenshots at 1024x768 and 1280x800 in both orientations are written to ``$POSITIONING_ARTIFACTS``
(default ``out/test-artifacts``)/tablet/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from positioning import resources
from positioning.evaluation.browser import VIEWPORTS, chromium_path, launch_chromium, new_page
from positioning.service.client import Client
from positioning.sim.room_source import RoomEvent

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is a dev dependency (setup.sh)"
)
expect = playwright_api.expect

OPERATOR_TOKEN = "tablet-operator-0123456789"
VIEWER_TOKEN = "tablet-viewer-0123456789"
#: The simulated patient's shift is scripted far ahead and brought forward once the test has confirmed.
MOVE_AT_S = 3600.0

pytestmark = [
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (setup.sh)"),
    pytest.mark.skipif(
        not (resources.tablet_dist_dir() / "app.js").exists(), reason="the tablet app is not built (setup.sh)"
    ),
]


def artifacts_dir() -> Path:
    d = Path(os.environ.get("POSITIONING_ARTIFACTS", "out/test-artifacts")) / "tablet"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def tablet_tokens(write_tokens) -> Path:
    return write_tokens(("rt.tablet", OPERATOR_TOKEN), ("observer", VIEWER_TOKEN))


def _page(browser, size: str = "1280x800"):
    page = new_page(browser, size)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _sign_in(page, token: str) -> None:
    page.click("#sign-in")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def _mm(page, selector: str) -> float:
    return float(page.get_attribute(selector, "data-mm"))


def test_the_technologist_plans_confirms_and_sees_the_patient_move(
    make_server, browser, tablet_tokens, wait_for_plan
):
    server = make_server(
        events=(RoomEvent(MOVE_AT_S, "moved"),), landmarks="fused", tokens=tablet_tokens, http_port=0
    )
    page, errors = _page(browser, "1024x768")
    t0 = time.monotonic()
    page.goto(server.http_url)

    # with tokens, nothing is shown before signing in: the service's refusal, and what to do
    expect(page.locator("#action-error")).to_contain_text("Not signed in", timeout=20_000)

    # the protocol picker: every protocol the service knows, with its pictogram
    _sign_in(page, VIEWER_TOKEN)
    expect(page.locator("button.protocol")).to_have_count(9, timeout=20_000)
    assert page.locator("button.protocol svg .range").count() == 9

    # a viewer may watch but not start a session
    page.click("button[data-protocol=chest]")
    page.click("#start-button")
    expect(page.locator("#action-error")).to_contain_text("operator role")

    # an operator starts the session with the wrong expected position: a red check, no confirming
    _sign_in(page, OPERATOR_TOKEN)
    page.click("button[data-position=FFS]")
    page.click("#start-button")
    expect(page.locator("#checks .banner.error").first).to_be_visible(timeout=60_000)
    error_code = page.get_attribute("#checks .banner.error >> nth=0", "data-code")
    assert page.locator("#confirm-button").is_disabled()
    expect(page.locator("#confirm-why")).to_contain_text(error_code)
    page.screenshot(path=str(artifacts_dir() / "error-check-1024x768.png"))
    page.click("#end-button")
    expect(page.locator("#start")).to_be_visible()

    # the right position: the live view, the plan in words and numbers, confirm
    page.click("button[data-position='']")
    page.click("#start-button")
    page.wait_for_function("window.tabletStats.picturesShown > 0", timeout=30_000)
    with Client(server.address, token=OPERATOR_TOKEN) as client:
        sid = page.evaluate("sessionStorage.getItem('positioning.session')")
        wait_for_plan(client, sid)
        expect(page.locator("#confirm-button")).to_be_enabled(timeout=30_000)
        expect(page.locator("#patient-words")).to_contain_text("HFS")

        # the preview's numbers are the service's plan (to the frame-to-frame jitter of a still patient)
        service_plan = client.plan(sid)
        assert _mm(page, "#move-vertical") == pytest.approx(service_plan.table_offset.vertical_mm, abs=5.0)
        assert _mm(page, "#move-longitudinal") == pytest.approx(
            service_plan.table_offset.longitudinal_mm, abs=10.0
        )

        plans = client.confirmed_plans(timeout_s=60)
        page.click("#confirm-button")
        expect(page.locator("#plan")).to_have_attribute("data-state", "confirmed", timeout=10_000)
        confirmed = next(iter(plans))
        plans.cancel()
        # what the page shows is exactly what the console received
        t = confirmed.plan.table_offset
        assert _mm(page, "#move-vertical") == pytest.approx(t.vertical_mm, abs=0.05)
        assert _mm(page, "#move-longitudinal") == pytest.approx(t.longitudinal_mm, abs=0.05)
        assert _mm(page, "#move-lateral") == pytest.approx(t.lateral_patient_move_mm, abs=0.05)
        assert page.get_attribute("#plan", "data-frame") == str(confirmed.plan.frame_number)
        assert f"{abs(t.vertical_mm):.0f} mm" in page.inner_text("#move-vertical")
        assert ("Raise" if t.vertical_mm > 0 else "Lower") in page.inner_text("#move-vertical")
        assert confirmed.operator == "rt.tablet"

    # the patient shifts 25 mm: at once and prominently
    server.hub.opened.source.bring_forward("moved")
    moved = page.locator("#alerts .alert[data-kind=PATIENT_MOVED]")
    expect(moved).to_be_visible(timeout=60_000)
    expect(page.locator("#plan")).not_to_have_attribute("data-state", "confirmed")
    expect(moved).to_contain_text("since confirmation")
    for size, (w, h) in VIEWPORTS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.screenshot(path=str(artifacts_dir() / f"moved-{size}.png"))
        # nothing needs a horizontal scroll, and the confirm button is a touch-sized target
        assert page.evaluate("document.documentElement.scrollWidth") <= w
        box = page.locator("#confirm-button").bounding_box()
        assert box is not None and box["height"] >= 48

    # the server goes away: the page says it is retrying, and stays responsive
    page.set_viewport_size({"width": 1280, "height": 800})
    server.stop()
    expect(page.locator("#connection")).to_contain_text("retrying", timeout=15_000)
    page.click("#alerts .alert button[data-ack] >> nth=0")
    page.screenshot(path=str(artifacts_dir() / "unreachable-1280x800.png"))
    assert errors == [], errors
    assert time.monotonic() - t0 < 180
