"""The pages a visitor meets, in a real Chromium, against one `waitroom serve` shared by the module:
the refusal pages (a rate limit on a page path, after a GET and after a POST; `tickets_per_ip`; a
closed event), the pre-queue's copy, the wait page in three languages (screenshots:
docs/waitroom-{de,fr,pl}.png, taken again with WAITROOM_UPDATE_DOCS=1; this machine has no CJK
fonts, so Japanese and Chinese are checked as text, in tests/unit/web), the page script's plurals
against the server's, and docs/concepts.md's custom-template example, which must let its visitor
in by itself.

Serve only: the pages do not depend on the entry point (tests/conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Page, expect

from tests.browser.conftest import NewContext
from tests.browser.helpers import ARTIFACTS, COUNTER_PRE, DOCS, UPDATE_DOCS_ENV, Journal, png_size
from tests.conftest import SECRET
from tests.support import REPO, Mitmdump
from waitroom.web.strings import PLURAL_RULES, Catalog

pytestmark = pytest.mark.e2e

TITLES = {"en": "Summer sale", "de": "Sommerschlussverkauf", "fr": "Soldes d’été", "pl": "Wyprzedaż letnia"}
LANGUAGES = Catalog.load().languages


def docs_example() -> tuple[dict[str, Any], str]:
    """docs/concepts.md's custom-template example, as written there: its config and its page."""
    text = (REPO / "docs" / "concepts.md").read_text(encoding="utf-8")
    found = re.search(r"```yaml\n(bypass:.*?template: sale-wait\.html.*?)```\s*```html\n(.*?)```", text, re.S)
    assert found is not None, "docs/concepts.md: the custom-template example is gone"
    return yaml.safe_load(found.group(1)), found.group(2)


def config(workdir: Path) -> str:
    example, page = docs_example()
    (workdir / "sale-wait.html").write_text(page, encoding="utf-8")
    sale = example["rooms"][0]
    # The example as documented, made quick: one visitor at a time, a place every 2 seconds.
    sale.update(match={"path_prefix": "/sale"}, new_sessions=1, window="2s", block_for="0s", retry_after="1s")
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    full = {"new_sessions": 1, "window": "60s", "block_for": "60s", "retry_after": "10s"}
    return yaml.safe_dump(
        {
            "bypass": example["bypass"],
            "rate_limits": [{"name": "pages", "match": {"path_prefix": "/limited"}, "limit": 1, "per": "3s"}],
            "rooms": [
                {"name": "shop", "title": TITLES, "match": {"path_prefix": "/shop"}, **full},
                {
                    "name": "event",
                    "title": "Concert tickets",
                    "match": {"path_prefix": "/event"},
                    "queue": "fifo",
                    "new_sessions": 5,
                    "opens_at": later,
                },
                {
                    "name": "tickets",
                    "match": {"path_prefix": "/tickets"},
                    "title": "Concert tickets",
                    "queue": "fifo",
                    "new_sessions": 5,
                    "opens_at": later,
                    "tickets_per_ip": 1,
                },
                {
                    "name": "gone",
                    "title": "Spring sale",
                    "match": {"path_prefix": "/gone"},
                    "new_sessions": 5,
                },
                sale,
            ],
        },
        allow_unicode=True,
    ).replace("name: gone\n", f"name: gone\n  closes_at: '{earlier}'\n")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    workdir = tmp_path_factory.mktemp("pages")
    path = workdir / "waitroom.yaml"
    path.write_text(config(workdir), encoding="utf-8")
    started = Mitmdump(
        "http://127.0.0.1:9",
        workdir,
        path,
        env={"WAITROOM_SECRET": SECRET},
        scripts=["addons/waitroom.py", "addons/counter.py"],
        entry="serve",
    )
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def open_page(page: Page, url: str, status: int) -> None:
    response = page.goto(url)
    assert response is not None
    assert response.status == status, url


def visible_text(page: Page) -> str:
    return page.locator("main").inner_text()


def test_refusal_pages(proxy: Mitmdump, new_context: NewContext) -> None:
    # A rate limit on a page path, after a GET: a page that counts down, then reloads by itself.
    page = new_context(locale="en-US").new_page()
    journal = Journal(page)
    open_page(page, f"{proxy.url}/limited/item", 200)
    open_page(page, f"{proxy.url}/limited/item", 429)
    expect(page.locator("h1")).to_have_text("Too many requests")
    expect(page.locator("#next")).to_have_text(re.compile(r"^Next try in [1-3] seconds?\.$"))
    assert "about:blank" not in visible_text(page)  # no raw problem+json
    radius = page.locator("main").evaluate("e => getComputedStyle(e).borderRadius")
    assert radius == "12px"  # the wait page's look (its stylesheet)
    # An API client on the same path keeps the documented problem+json.
    api = httpx.get(f"{proxy.url}/limited/item", timeout=10)
    assert (api.status_code, api.headers["content-type"]) == (429, "application/problem+json")
    assert api.json()["rule"] == "pages"
    expect(page.locator(COUNTER_PRE)).to_have_text('{"path": "/limited/item", "count": 0}', timeout=10_000)
    statuses = [status for _, status in journal.documents()]
    assert (statuses[:2], statuses[-1]) == ([200, 429], 200)  # it reloaded itself, and got in

    # After a POST: the form was not sent, nothing reloads; "Go back" once it may be sent again.
    # The form is put on the page before (set_content makes no history entry).
    page.set_content(f'<form method="post" action="{proxy.url}/limited/form"><input name="q"></form>')
    with page.expect_navigation() as sent:
        page.evaluate("document.forms[0].submit()")
    assert sent.value is not None
    assert sent.value.status == 429
    assert sent.value.request.method == "POST"
    expect(page.locator("[data-waitroom=place]")).to_have_text("Your form was not sent.")
    expect(page.locator("#next")).to_have_text(re.compile(r"^Please wait [1-3] seconds?, then go back"))
    back = page.locator("[data-waitroom=back]")
    expect(back).to_be_visible()
    expect(page.locator("#next")).to_have_text("You can go back and send it again now.", timeout=10_000)
    assert page.url == f"{proxy.url}/limited/form"  # still the refusal: never sent again by itself
    back.click()
    expect(page).to_have_url(f"{proxy.url}/limited/item")  # back to the page before the form

    # tickets_per_ip: the second new ticket from one address this minute, in the visitor's language.
    first = new_context(locale="de-DE").new_page()
    open_page(first, f"{proxy.url}/tickets/", 503)
    refused = new_context(locale="de-DE").new_page()
    open_page(refused, f"{proxy.url}/tickets/", 429)
    expect(refused.locator("h1")).to_have_text("Zu viele Anfragen")
    expect(refused.locator("main")).to_contain_text("für Concert tickets angestellt")
    assert "tickets" not in refused.title()  # the room's name is never shown
    expect(refused.locator("#next")).to_have_text(re.compile(r"^Nächster Versuch in \d+ Sekunden?\.$"))

    # A closed event.
    closed = new_context(locale="en-GB").new_page()
    open_page(closed, f"{proxy.url}/gone/", 410)
    expect(closed.locator("h1")).to_have_text("This event has closed")
    expect(closed.locator("main")).to_contain_text("Thank you for your interest in Spring sale.")
    assert "gone" not in visible_text(closed)


def test_the_pre_queue_page_says_when_it_opens(proxy: Mitmdump, new_context: NewContext) -> None:
    page = new_context(locale="en-US", timezone_id="Asia/Tokyo").new_page()
    open_page(page, f"{proxy.url}/event/", 503)
    opens = page.evaluate(
        "() => new Intl.DateTimeFormat('en', {hour: 'numeric', minute: '2-digit'})"
        ".format(new Date(Date.now() + 7200 * 1000))"
    )
    heading = page.locator("h1").inner_text()
    # In the visitor's zone and words (the opening is 2 hours on; a minute's rounding aside).
    assert heading.startswith("Concert tickets opens "), heading
    assert opens[:2] in heading or "on" in heading, (heading, opens)
    expect(page.locator("#position")).to_have_text(re.compile(r"^Opens in [12]:\d\d:\d\d\.$"))
    text = visible_text(page)
    assert "random order" in text
    assert "so many people" not in text.lower()
    assert "in line" not in text  # no position before the draw


@pytest.mark.parametrize("lang", ["de", "fr", "pl"])
def test_the_wait_page_in_the_visitors_language(proxy: Mitmdump, new_context: NewContext, lang: str) -> None:
    first = new_context().new_page()
    first.goto(f"{proxy.url}/shop/")  # takes the room's one place (or finds it taken)
    strings = LANGUAGES[lang]
    page = new_context(
        locale=lang, color_scheme="light", reduced_motion="reduce", viewport={"width": 600, "height": 720}
    ).new_page()
    open_page(page, f"{proxy.url}/shop/item", 503)
    assert page.locator("html").get_attribute("lang") == lang
    expect(page.locator("h1")).to_have_text(strings.text("wait.heading"))
    expect(page.locator("[data-waitroom=message]")).to_have_text(
        strings.text("wait.blocked", title=TITLES[lang])
    )
    expect(page.locator("small")).to_have_text(strings.text("footer", title=TITLES[lang]))
    assert page.title() == strings.text("title.wait", title=TITLES[lang])
    assert "shop" not in visible_text(page)
    # The countdown, as the page's script words it, is the server's wording for that number.
    shown = page.locator("#next").inner_text()
    number = int(re.findall(r"\d+", shown)[0])
    assert shown == strings.text("next_try", number)

    # The page script's plural rules are the server's, for every rule and many numbers.
    numbers = [*range(130), 1001, 1002, 1005, 1011, 1012, 1021, 1022, 1025]
    script = page.evaluate(
        "([rules, numbers]) => rules.map(r => numbers.map(n => window.waitroom.plural(r, n)))",
        [list(PLURAL_RULES), numbers],
    )
    assert script == [[choose(n) for n in numbers] for choose, _ in PLURAL_RULES.values()]

    name = f"waitroom-{lang}.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / name)
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        shutil.copyfile(ARTIFACTS / name, DOCS / name)
    documented = DOCS / name
    assert documented.is_file(), f"{documented} is missing: run the browser tests with {UPDATE_DOCS_ENV}=1"
    assert png_size(documented) == (600, 720), f"{documented} is stale: rerun with {UPDATE_DOCS_ENV}=1"


def test_the_documented_custom_template_lets_its_visitor_in(proxy: Mitmdump, new_context: NewContext) -> None:
    first = new_context().new_page()
    open_page(first, f"{proxy.url}/sale/", 200)
    page = new_context(locale="en-US").new_page()
    journal = Journal(page)
    open_page(page, f"{proxy.url}/sale/item", 503)
    assert page.locator("img").get_attribute("src") == "/assets/logo.svg"
    expect(page.locator("h1")).to_have_text("You are in the waiting room")
    expect(page.locator("small")).to_have_text("Waiting room: Summer sale")
    expect(page.locator("[data-waitroom=next]")).to_have_text(re.compile(r"^Next try in \d seconds?\.$"))
    # No script of its own: {{ script }} polls and lets the visitor in when a place frees up.
    expect(page.locator(COUNTER_PRE)).to_have_text('{"path": "/sale/item", "count": 0}', timeout=15_000)
    assert [status for _, status in journal.documents()] == [503, 200]
    assert journal.polls()[-1] == (200, "admitted")
