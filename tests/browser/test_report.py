"""The `waitroom simulate` report in Debian's Chromium: opened from a file, it asks for nothing but
itself, logs no error, draws its six charts per room, and follows the dark scheme. The sizing page's
screenshot (docs/sizing-report.png) is taken from the page's own example with WAITROOM_UPDATE_DOCS=1."""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.helpers import ARTIFACTS, DOCS, UPDATE_DOCS_ENV, png_size
from tests.support import REPO
from waitroom.sim.crowd import parse_crowd
from waitroom.sim.report import html_report
from waitroom.sim.run import Options, simulate
from waitroom.sim.visitors import Behaviour, parse_patience

EXAMPLE = REPO / "docs" / "examples" / "sizing"
SCREENSHOT = "sizing-report.png"
WIDTH = 1280


def report(path: Path, options: Options) -> str:
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(asyncio.run, simulate(options)).result(timeout=120)
    path.write_text(html_report(run), encoding="utf-8")
    return path.as_uri()


def open_offline(browser: Browser, url: str, scheme: str) -> tuple[Page, list[str], list[str]]:
    context = browser.new_context(viewport={"width": WIDTH, "height": 900}, color_scheme=scheme)  # type: ignore[arg-type]
    page = context.new_page()
    asked: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page, asked, errors


def test_the_simulate_report_renders_offline_in_chromium(browser: Browser, tmp_path: Path) -> None:
    options = Options(
        EXAMPLE / "candidate.yaml",
        crowd=parse_crowd("400 over 20s"),
        behaviour=Behaviour(patience=parse_patience("20%:30s"), time_on_site=60),
        against=EXAMPLE / "current.yaml",
    )
    url = report(tmp_path / "report.html", options)
    page, asked, errors = open_offline(browser, url, "dark")
    try:
        assert asked == [url]  # the file and nothing else: no font, image, script or stylesheet
        assert errors == []
        figures = page.locator("figure")
        assert figures.count() == 6
        for i in range(6):
            svg = figures.nth(i).locator("svg")
            assert svg.is_visible()
            box = svg.bounding_box()
            assert box is not None
            assert box["width"] > 300
            assert box["height"] > 100
            drawn = svg.locator("path.series, circle")
            assert drawn.count() > 0
            path = svg.locator("path.series").first
            if path.count():
                assert len(path.get_attribute("d") or "") > 20
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 17, 21)"
        assert page.locator("text=guarantees held").count() == 1
    finally:
        page.context.close()


def test_the_sizing_pages_screenshot(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/sizing-report.png: the sizing page's own example, candidate against current, in the
    light scheme (rerun with WAITROOM_UPDATE_DOCS=1 when the report changes)."""
    documented = DOCS / SCREENSHOT
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        monkeypatch.chdir(REPO)  # the page's command, as it reads there: paths from the checkout
        example = EXAMPLE.relative_to(REPO)
        options = Options(
            example / "candidate.yaml",
            arrivals=[example / "access.log.gz"],
            behaviour=Behaviour(patience=parse_patience("20%:10m")),
            against=example / "current.yaml",
        )
        url = report(tmp_path / "sizing.html", options)
        page, asked, errors = open_offline(browser, url, "light")
        try:
            assert asked == [url]
            assert errors == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / SCREENSHOT, full_page=True)
        finally:
            page.context.close()
        shutil.copyfile(ARTIFACTS / SCREENSHOT, documented)
    assert documented.is_file(), f"{documented} is missing: run the browser tests with {UPDATE_DOCS_ENV}=1"
    assert png_size(documented)[0] == WIDTH, f"{documented} is stale: rerun with {UPDATE_DOCS_ENV}=1"
