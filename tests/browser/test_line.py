"""A `fifo` room in a real browser: the page shows the visitor's place and wait, updates them with
each poll without reloading, and lets the visitor in by itself, in ticket order; before a scheduled
opening it counts down (screenshots: docs/prequeue-*.png, taken again with WAITROOM_UPDATE_DOCS=1)."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import NewContext, Site
from tests.browser.helpers import COUNTER_PRE, UPDATE_DOCS_ENV, Journal, png_size, room_config
from tests.browser.test_page_quality import ARTIFACTS, DOCS, SCREENS
from tests.support import Mitmdump, wait_for

pytestmark = pytest.mark.e2e

FIFO = "    queue: fifo\n"
SHORT_POLLS = "    max_retry_after: 2s\n"
"""A 60 s window would tell the line to come back in up to 30 s; a reload's new place would wait."""


def test_the_page_shows_the_place_in_line_and_moves_up(site: Site, new_context: NewContext) -> None:
    # A window no machine outlasts: a place opens when the operator adds one (a reload), not when a
    # short window happens to pass between two visits on a busy machine.
    proxy = site(line_room(new_sessions=1))
    url = f"{proxy.url}/shop/item"
    first = new_context().new_page()
    assert first.goto(url).status == 200  # type: ignore[union-attr]

    pages, journals = [], []
    for _ in range(2):
        page = new_context().new_page()
        journals.append(Journal(page))
        assert page.goto(url).status == 503  # type: ignore[union-attr]
        pages.append(page)
    ahead, behind = pages
    expect(ahead.locator("#position")).to_have_text("You are number 1 in line.")
    expect(behind.locator("#position")).to_have_text("You are number 2 in line.")
    expect(behind.locator("#eta")).to_have_text(
        re.compile(r"^Your wait: (less than a minute|about \d+ minutes?)\.$")
    )
    assert behind.locator("#eta").is_visible()

    # A place opens: the first in line gets in by itself; the one behind moves up on its own page,
    # not reloaded, and gets in by itself when the next place opens.
    add_places(proxy, 2)
    expect(ahead.locator(COUNTER_PRE)).to_have_text('{"path": "/shop/item", "count": 0}', timeout=15_000)
    expect(behind.locator("#position")).to_have_text("You are number 1 in line.", timeout=15_000)
    assert journals[1].documents() == [(url, 503)]
    add_places(proxy, 3)
    expect(behind.locator(COUNTER_PRE)).to_have_text('{"path": "/shop/item", "count": 0}', timeout=15_000)
    assert journals[1].documents() == [(url, 503), (url, 200)]


def line_room(new_sessions: int) -> str:
    return room_config(
        new_sessions=new_sessions, window="60s", block_for="0s", retry_after="1s", extra=FIFO + SHORT_POLLS
    )


def add_places(proxy: Mitmdump, new_sessions: int) -> None:
    """The operator raises the room's new_sessions (a config reload) and the proxy takes it."""
    assert proxy.config_path is not None
    reloads = proxy.log_text().count("waitroom: reloaded")
    proxy.config_path.write_text(line_room(new_sessions))
    wait_for(lambda: proxy.log_text().count("waitroom: reloaded") > reloads, 10, f"{new_sessions} places")


def event_room(opens_in: float) -> str:
    opens = (datetime.now(UTC) + timedelta(seconds=opens_in)).isoformat()
    return room_config(
        new_sessions=5,
        window="10s",
        block_for="0s",
        retry_after="1s",
        extra=f"{FIFO}    opens_at: '{opens}'\n",
    )


def test_the_pre_queue_page_counts_down_then_lets_the_visitor_in(site: Site, new_context: NewContext) -> None:
    # Started an hour before the opening, then moved to 6 s from now once it serves: however long
    # the start takes on a busy machine, the page meets the countdown.
    proxy = site(event_room(3600))
    assert proxy.config_path is not None
    proxy.config_path.write_text(event_room(6))
    wait_for(lambda: "waitroom: reloaded" in proxy.log_text(), 10, "the opening time")
    page = new_context().new_page()
    journal = Journal(page)
    url = f"{proxy.url}/shop/item"
    assert page.goto(url).status == 503  # type: ignore[union-attr]
    countdown = page.locator("#position")
    expect(countdown).to_have_text(re.compile(r"^Opens in 0:0[1-6]\.$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first, timeout=3_000)  # it ticks, without a reload
    expect(page.locator("[data-waitroom=message]")).to_contain_text("random order")
    expect(page.locator("h1")).to_contain_text("shop opens at")  # the opening, not a crowd
    expect(page.locator(COUNTER_PRE)).to_have_text('{"path": "/shop/item", "count": 0}', timeout=20_000)
    assert journal.documents() == [(url, 503), (url, 200)]


@pytest.mark.parametrize("screen", sorted(SCREENS))
def test_screenshots_of_the_pre_queue_page(site: Site, new_context: NewContext, screen: str) -> None:
    options = SCREENS[screen]
    proxy = site(event_room(12 * 60 + 34))
    page = new_context(color_scheme="light", reduced_motion="reduce", **options).new_page()
    assert page.goto(f"{proxy.url}/shop").status == 503  # type: ignore[union-attr]
    # 12:34 when the proxy started; a busy machine may take some seconds to start it.
    expect(page.locator("#position")).to_have_text(re.compile(r"^Opens in 12:[0-3]\d\.$"))
    name = f"prequeue-{screen}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)
    size = (options["viewport"]["width"], options["viewport"]["height"])
    assert png_size(ARTIFACTS / name) == size
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        shutil.copyfile(ARTIFACTS / name, DOCS / name)
    documented = DOCS / name
    assert documented.is_file(), f"{documented} is missing: run the browser tests with {UPDATE_DOCS_ENV}=1"
    assert png_size(documented) == size, f"{documented} is stale: rerun with {UPDATE_DOCS_ENV}=1"
