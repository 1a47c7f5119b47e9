"""Headless Chromium from Debian's packages, driven by Playwright, against a real mitmdump running the
wait room in front of the request counter (which answers everything: the upstream is never used).

No Chromium is no reason to skip: the suite fails and says how to install it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")  # before playwright is imported

from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.browser.helpers import ChromiumMissing, find_chromium
from tests.conftest import SECRET, StartProxy
from tests.support import Mitmdump

TIMEOUT_MS = 15_000
"""Bound on every Playwright wait that does not set its own."""

Site = Callable[[str], Mitmdump]
NewContext = Callable[..., BrowserContext]


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    # Package scope: the browser's event loop is gone before the asyncio tests of other packages run.
    executable, problem = None, ""
    try:
        executable = find_chromium()
    except ChromiumMissing as e:
        problem = str(e)
    if executable is None:
        pytest.fail(problem, pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, timeout=30_000)
        yield chromium
        chromium.close()


@pytest.fixture
def site(start_proxy: StartProxy) -> Site:
    """site(config_text) → a running mitmdump: the wait room with that config, then the counter."""

    def start(config: str) -> Mitmdump:
        return start_proxy(
            config, env={"WAITROOM_SECRET": SECRET}, scripts=["addons/waitroom.py", "addons/counter.py"]
        )

    return start


@pytest.fixture
def new_context(browser: Browser) -> Iterator[NewContext]:
    """new_context(**options) → a fresh browser context (one visitor: its own cookies), closed after."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
