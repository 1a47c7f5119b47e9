"""The visitor's journey in a real browser: headless Chromium in front of a real mitmdump.

Each test starts its own mitmdump (the wait room, then the request counter) with a small room, and
each visitor is a fresh browser context with its own cookies. Every wait is for an event (an answer,
a selector, a text) and bounded; none is a sleep.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import NewContext, Site
from tests.browser.helpers import COUNTER_PRE, WAIT_HEADING, Journal, counter_json, room_config
from tests.support import wait_for

pytestmark = pytest.mark.e2e

ADMIT_TIMEOUT_MS = 25_000
"""Bound on a waiting page letting its visitor in by itself (a few retry_after at most)."""


def visit(new_context: NewContext, url: str, status: int, **options: object) -> Page:
    """A new visitor opens `url` and gets `status`."""
    page = new_context(**options).new_page()
    response = page.goto(url)
    assert response is not None
    assert response.status == status, f"{url}: {response.status}"
    return page


def session_cookie(page: Page, room: str = "shop") -> dict[str, object]:
    cookies = [c for c in page.context.cookies() if c["name"] == f"waitroom_{room}"]
    assert len(cookies) == 1, page.context.cookies()
    return dict(cookies[0])


def test_first_visitors_get_straight_in_and_keep_their_session(site: Site, new_context: NewContext) -> None:
    proxy = site(room_config(new_sessions=2, window="60s", block_for="60s"))
    first = [visit(new_context, f"{proxy.url}/shop/item", 200) for _ in range(2)]
    cookies = []
    for page in first:
        assert counter_json(page) == {"path": "/shop/item", "count": 0}
        cookie = session_cookie(page)
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Lax"
        cookies.append(cookie["value"])

    # Two admissions filled the window: the next visitor waits.
    late = visit(new_context, f"{proxy.url}/shop/item", 503)
    expect(late.locator("h1")).to_have_text(WAIT_HEADING)

    # The first two go on as if nothing happened: navigations, and a PUT from the page's own script.
    for page, value in zip(first, cookies, strict=True):
        for path in ("/shop/cart", "/", "/shop/item?again=1"):
            response = page.goto(f"{proxy.url}{path}")
            assert response is not None
            assert response.status == 200, path
        assert page.evaluate("fetch('/shop/cart', {method: 'PUT'}).then(r => r.status)") == 200
        assert session_cookie(page)["value"] == value, "the same session throughout"
    first[0].goto(f"{proxy.url}/shop/cart")
    assert counter_json(first[0]) == {"path": "/shop/cart", "count": 2}
    first[1].goto(f"{proxy.url}/")
    assert counter_json(first[1]) == {"total": 2}

    # All the while the room was blocked: a new visitor still waits.
    visit(new_context, f"{proxy.url}/", 503)


def test_the_next_visitor_waits_on_the_page_and_gets_in_by_itself(
    site: Site, new_context: NewContext
) -> None:
    # A window no machine outlasts: the visitor gets in when the operator adds a place, not when a
    # short window happens to pass (the next visit once came after it on a busy machine).
    proxy = site(room_config(new_sessions=2, window="60s", block_for="2s", retry_after="1s"))
    for _ in range(2):
        visit(new_context, f"{proxy.url}/", 200)

    page = new_context().new_page()
    journal = Journal(page)
    url = f"{proxy.url}/shop/item?colour=red"
    response = page.goto(url)
    assert response is not None
    assert response.status == 503
    assert response.headers["retry-after"] == "1"
    assert page.url == url, "the wait page is served in place: no redirect"

    # What is happening, and when the next try is.
    expect(page.locator("h1")).to_have_text(WAIT_HEADING)
    assert page.locator("#status").inner_text().strip()
    expect(page.locator("#next")).to_contain_text("Next try in")
    delay = int(page.locator("html").get_attribute("data-next-retry") or "-1")
    assert 700 <= delay <= 1300, delay
    shown = re.fullmatch(r"Next try in (\d+) seconds?\.", page.locator("#next").inner_text())
    assert shown is not None
    assert 0 <= int(shown.group(1)) <= 2  # ceil(1.3 × retry_after)

    # The page polls and waits; then a third place (a reload of the config), and once the block
    # the visitor started has passed, the page's own poll lets it in and it loads the same URL.
    page.wait_for_event("response", lambda r: r.request.headers.get("waitroom-poll") == "1", timeout=10_000)
    assert proxy.config_path is not None
    proxy.config_path.write_text(room_config(new_sessions=3, window="60s", block_for="2s", retry_after="1s"))
    wait_for(lambda: "waitroom: reloaded" in proxy.log_text(), 10, "the third place")
    expect(page.locator(COUNTER_PRE)).to_have_text(
        '{"path": "/shop/item", "count": 0}', timeout=ADMIT_TIMEOUT_MS
    )
    assert page.url == url
    assert journal.documents() == [(url, 503), (url, 200)]
    polls = journal.polls()
    assert polls[-1] == (200, "admitted"), polls
    assert polls[0] == (503, "waiting"), "the first poll falls inside the block it started"
    assert set(polls[:-1]) == {(503, "waiting")}
    assert session_cookie(page)["value"]


def test_without_javascript_the_noscript_refresh_gets_the_visitor_in(
    site: Site, new_context: NewContext
) -> None:
    # retry_after 3s: the refresh comes 3 s after the page, time enough to look at the page first.
    # A window no machine outlasts: the visitor gets in when the operator adds a place (the page
    # once came more than a 1 s window after the first visit, and went straight in).
    proxy = site(room_config(new_sessions=1, window="60s", block_for="1s", retry_after="3s"))
    visit(new_context, f"{proxy.url}/", 200)

    page = new_context(java_script_enabled=False).new_page()
    journal = Journal(page)
    url = f"{proxy.url}/shop/item"
    response = page.goto(url)
    assert response is not None
    assert response.status == 503
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in response.text()
    shown = page.evaluate(
        """() => ({
            heading: document.querySelector('h1').textContent,
            planned: document.documentElement.getAttribute('data-next-retry'),
            note: [...document.querySelectorAll('noscript p')].filter(p => p.checkVisibility())
                                                              .map(p => p.textContent),
        })"""
    )
    assert shown == {
        "heading": WAIT_HEADING,
        "planned": None,  # the page's script did not run
        "note": ["This page refreshes itself every 3 seconds."],
    }

    assert proxy.config_path is not None
    proxy.config_path.write_text(room_config(new_sessions=2, window="60s", block_for="1s", retry_after="3s"))
    wait_for(lambda: "waitroom: reloaded" in proxy.log_text(), 10, "the second place")

    expect(page.locator(COUNTER_PRE)).to_have_text(
        '{"path": "/shop/item", "count": 0}', timeout=ADMIT_TIMEOUT_MS
    )
    documents = journal.documents()
    assert documents[0] == (url, 503)
    assert documents[-1] == (url, 200)
    assert {u for u, _ in documents} == {url}, "the refresh reloads the same address"
    assert journal.polls() == [], "without JavaScript the page never polls"


def test_a_visitor_whose_cookie_is_removed_is_new_again(site: Site, new_context: NewContext) -> None:
    proxy = site(room_config(new_sessions=1, window="60s", block_for="60s"))
    url = f"{proxy.url}/shop/item"
    page = visit(new_context, url, 200)
    saved = page.context.cookies()
    visit(new_context, url, 503)  # the room is full now
    assert page.reload() is not None
    assert counter_json(page) == {"path": "/shop/item", "count": 0}

    page.context.clear_cookies()
    response = page.goto(url)
    assert response is not None
    assert response.status == 503
    expect(page.locator("h1")).to_have_text(WAIT_HEADING)
    assert page.context.cookies() == []

    # The cookie alone was the session: given back, it lets the same visitor in again.
    page.context.add_cookies(saved)  # type: ignore[arg-type]
    response = page.goto(url)
    assert response is not None
    assert response.status == 200


def test_many_waiting_visitors_are_spread_out_by_the_jitter(site: Site, new_context: NewContext) -> None:
    proxy = site(room_config(new_sessions=1, window="60s", block_for="60s", retry_after="2s"))
    visit(new_context, f"{proxy.url}/", 200)

    pages: list[Page] = []
    planned: list[int] = []
    for _ in range(8):
        page = visit(new_context, f"{proxy.url}/shop", 503)
        pages.append(page)
        # The first plan, which the page keeps: data-next-retry changes with every poll, and on a
        # loaded machine the page may have polled once before this line runs.
        planned.append(int(page.locator("html").get_attribute("data-first-retry") or "-1"))
    assert all(1400 <= d <= 2600 for d in planned), planned  # retry_after 2s ± 30 %
    assert len(set(planned)) > 1, planned
    # Without jitter the eight plans would be one; with it, eight independent draws over 1200 ms
    # fall within 100 ms of each other once in 4.8 million runs (within 300 ms: once in 2,900, which
    # a fresh-clone run met).
    assert max(planned) - min(planned) > 100, planned

    # And each page really asks when it says: its first poll, counted from when the page arrived
    # (its script runs after that, while the page is parsed: so never earlier than planned).
    first_poll = """() => {
        const polls = performance.getEntriesByType('resource').filter(e => e.initiatorType === 'fetch');
        const arrived = performance.getEntriesByType('navigation')[0].responseEnd;
        return polls.length ? polls[0].startTime - arrived : null;
    }"""
    waited = []
    for page in pages:
        handle = page.wait_for_function(first_poll, timeout=10_000)
        waited.append(handle.json_value())
    for plan, actual in zip(planned, waited, strict=True):
        assert plan - 20 <= actual <= plan + 600, (planned, waited)
    assert max(waited) - min(waited) > 300, waited


@pytest.mark.parametrize("room", ["shop", "A" * 63], ids=["short-name", "longest-allowed-name"])
def test_the_wait_page_fits_a_phone_without_horizontal_scroll(
    site: Site, new_context: NewContext, room: str
) -> None:
    proxy = site(room_config(name=room, new_sessions=1, window="60s", block_for="60s"))
    visit(new_context, f"{proxy.url}/", 200)
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    page = visit(new_context, f"{proxy.url}/", 503, device_scale_factor=2, **phone)
    expect(page.locator("h1")).to_have_text(WAIT_HEADING)
    expect(page.get_by_text(f"Waiting room: {room}")).to_be_visible()
    layout = page.evaluate(
        """() => ({
            inner: window.innerWidth,
            scroll: document.documentElement.scrollWidth,
            right: Math.max(...[...document.querySelectorAll('main, main h1, main p, main small')]
                                .map(e => e.getBoundingClientRect().right)),
        })"""
    )
    assert layout["inner"] == 360
    assert layout["scroll"] <= layout["inner"], layout
    assert layout["right"] <= layout["inner"], layout
