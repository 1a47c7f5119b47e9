"""The wait-room page as a browser renders it: screenshots, weight, accessibility, contrast, custom
templates, and a poll that recovers when something between the visitor and the proxy fails.

Screenshots go to tests/artifacts/ (not committed). With WAITROOM_UPDATE_DOCS=1 the test also writes
docs/concepts.md's docs/waitroom-desktop.png and docs/waitroom-phone.png.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import NewContext, Site
from tests.browser.helpers import (
    ARTIFACTS,
    COUNTER_PRE,
    DOCS,
    UPDATE_DOCS_ENV,
    WAIT_HEADING,
    Journal,
    contrast_ratio,
    is_poll,
    over,
    png_size,
    relative_luminance,
    room_config,
)
from tests.support import Mitmdump, wait_for

pytestmark = pytest.mark.e2e

PAGE_BUDGET = 16 * 1024
FULL_ROOM = {"new_sessions": 1, "window": "60s", "block_for": "60s"}


def fill(proxy: Mitmdump, new_context: NewContext) -> None:
    """One visitor takes the room's only place."""
    response = new_context().new_page().goto(f"{proxy.url}/")
    assert response is not None
    assert response.status == 200


def waiting_page(site: Site, new_context: NewContext, config: str, **options: Any) -> tuple[Mitmdump, Page]:
    """Start a proxy, let one visitor fill the room, and open the wait page as the next visitor."""
    proxy = site(config)
    fill(proxy, new_context)
    # A room with a short window may turn over before the next visitor arrives on a busy machine:
    # that visitor got the new window's place, and the next one waits (bounded).
    for _ in range(5):
        page = new_context(**options).new_page()
        response = page.goto(f"{proxy.url}/shop")
        assert response is not None
        if response.status != 200:
            break
    assert response.status == 503
    expect(page.locator("h1")).to_have_text(WAIT_HEADING)
    return proxy, page


SCREENS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_screenshots_of_the_wait_page(site: Site, new_context: NewContext, screen: str) -> None:
    options = SCREENS[screen]
    # retry_after 10s: the page shows its first state (no poll yet); reduced motion: a still bar.
    _, page = waiting_page(
        site,
        new_context,
        room_config(**FULL_ROOM, retry_after="10s"),
        color_scheme="light",
        reduced_motion="reduce",
        **options,
    )
    expect(page.locator("#status")).to_have_text("Waiting for a free place…")
    name = f"waitroom-{screen}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)
    size = (options["viewport"]["width"], options["viewport"]["height"])
    assert png_size(ARTIFACTS / name) == size
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / name, DOCS / name)
    documented = DOCS / name
    assert documented.is_file(), f"{documented} is missing: run the browser tests with {UPDATE_DOCS_ENV}=1"
    assert png_size(documented) == size, f"{documented} is stale: rerun with {UPDATE_DOCS_ENV}=1"


def test_the_page_is_light_and_asks_nothing_from_elsewhere(site: Site, new_context: NewContext) -> None:
    proxy = site(room_config(**FULL_ROOM, retry_after="1s"))
    fill(proxy, new_context)

    context = new_context()
    requests: list[str] = []
    context.on("request", lambda request: requests.append(f"{request.resource_type} {request.url}"))
    page = context.new_page()
    response = page.goto(f"{proxy.url}/shop")
    assert response is not None
    assert response.status == 503
    body = response.body()
    assert len(body) < PAGE_BUDGET, f"the wait page is {len(body)} bytes; the budget is {PAGE_BUDGET}"
    for _ in range(2):  # the page's own requests too
        with page.expect_response(lambda r: is_poll(r.request), timeout=5_000) as poll:
            pass
        assert poll.value.status == 503
    origin = urlsplit(proxy.url)
    for line in requests:
        kind, url = line.split(" ", 1)
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc), f"external request: {line}"
        assert kind in ("document", "fetch") or parts.path == "/favicon.ico", f"not self-contained: {line}"
    assert [line for line in requests if line.startswith("document ")] == [f"document {proxy.url}/shop"]


def test_accessibility_basics(site: Site, new_context: NewContext) -> None:
    _, page = waiting_page(site, new_context, room_config(**FULL_ROOM, retry_after="1s"))
    assert (page.locator("html").get_attribute("lang") or "").strip() == "en"
    assert page.title().strip()
    assert "shop" in page.title()
    assert page.locator("h1").count() == 1
    live = page.locator("[role=status], [aria-live]")
    assert live.count() == 1
    region = live.first
    assert region.get_attribute("role") == "status"
    assert region.get_attribute("aria-live") in ("polite", "assertive")
    assert page.locator(".bar").get_attribute("aria-hidden") == "true", "the animation is decoration"

    # What the page said before any poll is what the proxy served: read from the served page, not from
    # the live region, which a busy machine may already have updated by its first poll.
    served = page.request.get(page.url).text()
    first = re.search(r'<p id="status"[^>]*>(.*?)</p>', served, re.S)
    assert first is not None
    before = html.unescape(first.group(1)).strip()
    assert before
    with page.expect_response(lambda r: is_poll(r.request), timeout=5_000) as poll:
        pass
    assert poll.value.status == 503
    expect(region).not_to_have_text(before)  # what the poll found is announced
    assert region.inner_text().strip()


COLOURS = """() => {
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 1;
    const paint = canvas.getContext('2d', {willReadFrequently: true});
    const rgba = (css) => {  // any CSS colour syntax → [r, g, b, a], 0..255
        paint.clearRect(0, 0, 1, 1);
        paint.fillStyle = css;
        paint.fillRect(0, 0, 1, 1);
        return [...paint.getImageData(0, 0, 1, 1).data];
    };
    const card = document.querySelector('main');
    return {
        card: rgba(getComputedStyle(card).backgroundColor),
        text: [...card.querySelectorAll('h1, p, small, #status')].filter(e => e.checkVisibility()).map(e => ({
            what: e.id ? '#' + e.id : e.tagName.toLowerCase(),
            colour: rgba(getComputedStyle(e).color),
        })),
    };
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa(site: Site, new_context: NewContext, scheme: str) -> None:
    _, page = waiting_page(site, new_context, room_config(**FULL_ROOM), color_scheme=scheme)
    colours = page.evaluate(COLOURS)
    card = colours["card"]
    assert card[3] == 255, f"the card is not opaque: {card}"
    luminance = relative_luminance((card[0], card[1], card[2]))
    assert luminance > 0.5 if scheme == "light" else luminance < 0.1, f"{scheme} scheme not applied: {card}"
    checked = {item["what"] for item in colours["text"]}
    assert {"h1", "p", "#status", "#next", "small"} <= checked
    background = (float(card[0]), float(card[1]), float(card[2]))
    for item in colours["text"]:
        ratio = contrast_ratio(over(item["colour"], card), background)
        assert ratio >= 4.5, f"{scheme}: {item['what']} {item['colour']} on {card}: {ratio:.2f} < 4.5"


TEMPLATE = """<!DOCTYPE html>
<html lang="de">
<head><meta charset="utf-8"><title>Warteraum {{ room }}</title></head>
<body>
<h1 data-room="{{ room }}">Warteraum {{room}}</h1>
<p>Status <span id="code">{{ status }}</span>,
nächster Versuch in <span id="retry">{{ retry_after }}</span> s.</p>
<script type="application/json" id="data">{{ data }}</script>
<script>
window.waitroomData = JSON.parse(document.getElementById("data").textContent);
</script>
</body>
</html>
"""


def test_a_custom_template_renders_and_its_data_stays_data(
    site: Site, new_context: NewContext, tmp_path: Path
) -> None:
    # Room names are plain by config (letters, digits, `_`, `-`): the only markup is the template's.
    room = "Flash_Sale-2"
    (tmp_path / "custom.html").write_text(TEMPLATE, encoding="utf-8")
    config = room_config(
        name=room, **FULL_ROOM, retry_after="7s", extra="    status: 429\n    template: custom.html\n"
    )
    proxy = site(config)
    fill(proxy, new_context)

    page = new_context().new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    page.on(
        "console",  # Chromium logs the 429 document itself as a failed load: that one is expected
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    response = page.goto(f"{proxy.url}/checkout")
    assert response is not None
    assert response.status == 429
    assert response.headers["retry-after"] == "7"

    assert page.title() == f"Warteraum {room}"
    assert page.locator("html").get_attribute("lang") == "de"
    expect(page.locator("h1")).to_have_text(f"Warteraum {room}")
    assert page.locator("h1").get_attribute("data-room") == room
    expect(page.locator("#code")).to_have_text("429")
    expect(page.locator("#retry")).to_have_text("7")

    data = page.evaluate("window.waitroomData")
    assert data["status"] == "waiting"
    assert data["room"] == room
    assert data["retry_after"] == 7
    assert 0 < data["blocked_for"] <= 60
    raw = page.locator("#data").text_content() or ""
    assert json.loads(raw) == data
    # The data block was data: two scripts in the page, one ran, nothing else was added or failed.
    assert page.evaluate("document.scripts.length") == 2
    assert page.locator("body *").count() == 6  # h1, p, 2 spans, 2 scripts: nothing injected
    assert problems == []


def _failing(route: Route, how: str) -> None:
    if how == "network-error":
        route.abort("connectionrefused")
    else:  # what a gateway in front of the proxy answers during a rollout
        route.fulfill(status=503, content_type="text/plain", body="no healthy upstream")


@pytest.mark.parametrize("how", ["network-error", "gateway-503"])
def test_the_poll_recovers_from_an_outage_in_front_of_the_proxy(
    site: Site, new_context: NewContext, how: str
) -> None:
    # A 60 s window: nobody is let in before the outage is over and a place is opened (a reload),
    # however busy the machine (a 1 s window let the page in before the outage began).
    proxy, page = waiting_page(
        site, new_context, room_config(new_sessions=1, window="60s", block_for="1s", retry_after="1s")
    )
    journal = Journal(page)
    url = page.url

    # The outage takes the next two requests the page makes, whatever they are.
    failed: list[str] = []

    def outage(route: Route) -> None:
        if len(failed) < 2:
            failed.append(f"{route.request.resource_type} poll={is_poll(route.request)}")
            _failing(route, how)
        else:
            route.continue_()

    page.route("**/*", outage)
    expect(page.locator("#status")).to_contain_text("problem")  # said, not hidden
    for _ in range(150):  # the route's handler runs while Playwright waits, not while Python sleeps
        if len(failed) == 2:
            break
        page.wait_for_timeout(100)
    assert proxy.config_path is not None
    proxy.config_path.write_text(room_config(new_sessions=2, window="60s", block_for="1s", retry_after="1s"))
    wait_for(lambda: "waitroom: reloaded" in proxy.log_text(), 10, "the second place")
    expect(page.locator(COUNTER_PRE)).to_have_text('{"path": "/shop", "count": 0}', timeout=30_000)
    assert failed == ["fetch poll=True"] * 2, "the page stayed and asked again, it did not navigate away"
    assert journal.documents() == [(url, 200)], "the only navigation is the one that lets the visitor in"
    assert journal.polls()[-1] == (200, "admitted")
    assert urlsplit(url).netloc == urlsplit(proxy.url).netloc
