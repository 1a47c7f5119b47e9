"""A `fifo` room in a real browser: the page shows the visitor's place and wait, updates them with
each poll without reloading, and lets the visitor in by itself, in ticket order."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import NewContext, Site
from tests.browser.helpers import COUNTER_PRE, Journal, room_config

pytestmark = pytest.mark.e2e

FIFO = "    queue: fifo\n"


def test_the_page_shows_the_place_in_line_and_moves_up(site: Site, new_context: NewContext) -> None:
    proxy = site(room_config(new_sessions=1, window="4s", block_for="0s", retry_after="1s", extra=FIFO))
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
    assert behind.locator("#place").is_visible()

    # The first in line gets in by itself; the one behind moves up on its own page, not reloaded.
    expect(ahead.locator(COUNTER_PRE)).to_have_text('{"path": "/shop/item", "count": 0}', timeout=15_000)
    expect(behind.locator("#position")).to_have_text("You are number 1 in line.", timeout=15_000)
    assert journals[1].documents() == [(url, 503)]
    expect(behind.locator(COUNTER_PRE)).to_have_text('{"path": "/shop/item", "count": 0}', timeout=15_000)
    assert journals[1].documents() == [(url, 503), (url, 200)]
