"""web/answers.py: the wait, closed and refusal answers, as JSON for scripts and as pages in the
visitor's language; the shipped pages; cookies."""

from __future__ import annotations

import html
import json
import re

import pytest

from waitroom.web.answers import (
    closed_answer,
    limited_answer,
    refusal_answer,
    refused_ticket_answer,
    script_safe_json,
    set_cookie,
    wait_answer,
)
from waitroom.web.strings import Catalog, Strings
from waitroom.web.template import (
    CLOSED_TEMPLATE,
    DEFAULT_TEMPLATE,
    REFUSED_TEMPLATE,
    Template,
    TemplateError,
)
from waitroom.web.wait import PAUSED, UNKNOWN, Challenge, Estimate, Place

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
LANGUAGES = Catalog.load().languages
EN, DE, PL = LANGUAGES["en"], LANGUAGES["de"], LANGUAGES["pl"]
WAIT = Template.load(DEFAULT_TEMPLATE)
REFUSED = Template.load(REFUSED_TEMPLATE)


def wait(strings: Strings = EN, accept: str = BROWSER, **changes: object) -> tuple[dict[str, str], str]:
    values: dict[str, object] = {
        "template": WAIT,
        "strings": strings,
        "room": "shop",
        "title": "shop",
        "status": 503,
        "retry_after": 7,
        "blocked_for": 41.2,
        "accept": accept,
    }
    values.update(changes)
    answer = wait_answer(**values)  # type: ignore[arg-type]
    return answer.headers, answer.body.decode()


def text_of(page: str, part: str) -> str:
    found = re.search(rf'data-waitroom="{part}"[^>]*>([^<]*)<', page)
    assert found is not None, part
    return found.group(1)


def visible(page: str) -> str:
    """The page without its scripts (whose data carries every string the script may say)."""
    return re.sub(r"<script.*?</script>", "", page, flags=re.S)


def test_template_checks_its_placeholders() -> None:
    with pytest.raises(TemplateError, match="visitor"):
        Template.parse("<p>{{ visitor }}</p>")
    with pytest.raises(TemplateError, match=r"did you mean \{\{ heading \}\}"):
        Template.parse("<p>{{ headng }}</p>")
    with pytest.raises(
        TemplateError, match=r"unknown string \{\{ text:wait.heeding \}\}; did you mean text:wait.heading"
    ):
        Template.parse("<p>{{ text:wait.heeding }}</p>")
    for depends in ("next_try", "place.position", "prequeue.heading"):
        with pytest.raises(TemplateError, match="depends on the wait"):
            Template.parse(f"<p>{{{{ text:{depends} }}}}</p>")
    assert Template.parse("{{text:footer}}").text_keys == {"footer"}
    assert "</script>" not in script_safe_json({"x": "</script><b>&\u2028"})
    assert json.loads(script_safe_json({"x": "</script>\u2028"})) == {"x": "</script>\u2028"}


def test_wait_answer_as_json_keeps_its_fields_and_adds_the_state() -> None:
    headers, body = wait(accept="application/json")
    assert json.loads(body) == {
        "status": "waiting",
        "room": "shop",
        "title": "shop",
        "state": "blocked",
        "retry_after": 7,
        "blocked_for": 42,
    }
    assert (headers["Retry-After"], headers["Cache-Control"], headers["Vary"]) == (
        "7",
        "no-store",
        "Accept, Accept-Language",
    )
    place = Place(2, 5, Estimate(None, "unknown"))
    _, body = wait(accept="application/json", place=place, title="Summer sale")
    fields = json.loads(body)
    assert (fields["title"], fields["room"], fields["state"]) == ("Summer sale", "shop", "line")
    assert (fields["position"], fields["eta_seconds"], fields["eta_basis"]) == (2, None, "unknown")
    for accept in (BROWSER, "*/*", ""):
        assert wait(accept=accept)[0]["Content-Type"].startswith("text/html")


def test_the_page_says_what_state_the_wait_is_in() -> None:
    _, blocked = wait()
    assert text_of(blocked, "message").startswith("So many people are visiting shop")
    assert "There is no line" in text_of(blocked, "place")
    assert text_of(blocked, "next") == "Next try in 7 seconds."
    _, one = wait(retry_after=1)
    assert text_of(one, "next") == "Next try in 1 second."  # not "1 seconds"

    _, line = wait(place=Place(0, 3, Estimate(3 * 60 + 20)))
    assert "in the order they arrived" in text_of(line, "message")
    assert text_of(line, "place") == "You are number 1 in line."
    assert text_of(line, "eta") == "Your wait: about 3 minutes."
    _, unknown = wait(place=Place(4, 9, UNKNOWN))
    assert text_of(unknown, "eta").startswith("We can&#x27;t estimate your wait yet")
    assert "less than a minute" not in visible(unknown)
    _, capacity = wait(place=Place(4, 9, Estimate(90, "capacity", past_closing=True)))
    assert "full right now" in text_of(capacity, "message")
    assert (
        text_of(capacity, "eta") == "Your wait: about 2 minutes. The event may close before your turn comes."
    )
    _, paused = wait(place=Place(1, 2, PAUSED))
    assert "paused" in text_of(paused, "message")
    _, hours = wait(place=Place(400, 900, Estimate(3 * 3600)))
    assert text_of(hours, "eta") == "Your wait: about 3 hours."


def test_a_block_room_tells_when_the_next_places_free_up_in_every_language() -> None:
    for lang, strings in LANGUAGES.items():
        _, page = wait(strings, estimate=Estimate(150))
        assert text_of(page, "eta") == html.escape(strings.text("block.minutes", 3)), lang
        _, soon = wait(strings, estimate=Estimate(20))
        assert text_of(soon, "eta") == html.escape(strings.text("block.soon")), lang
        # A full cap with nobody leaving: no figure, said in words.
        _, full = wait(strings, estimate=Estimate(None, "capacity"))
        assert text_of(full, "eta") == html.escape(strings.text("eta.unknown")), lang
        assert text_of(full, "place") == html.escape(strings.text("block.no_line")), lang
    _, body = wait(accept="application/json", estimate=Estimate(150))
    fields = json.loads(body)
    assert (fields["state"], fields["eta_seconds"], fields["eta_basis"]) == ("blocked", 150, "window")
    _, body = wait(accept="application/json", estimate=Estimate(None, "capacity"))
    fields = json.loads(body)
    assert (fields["state"], fields["eta_seconds"], fields["eta_basis"]) == ("blocked", None, "capacity")


def test_the_pre_queue_page_says_when_it_opens_and_nothing_about_crowds() -> None:
    opens_at = 1_800_000_000.0  # 2027-01-15 08:00 UTC
    place = Place(0, 40, Estimate(None, "opening"), opens_in=754, opens_at=opens_at)
    _, page = wait(place=place, title="Summer sale")
    assert text_of(page, "heading") == "Summer sale opens at 08:00 UTC"
    assert text_of(page, "place") == "Opens in 12:34."
    assert "random order" in text_of(page, "message")
    assert "so many people" not in visible(page).lower()
    far = Place(0, 40, Estimate(None, "opening"), opens_in=3 * 86400, opens_at=opens_at)
    assert text_of(wait(place=far)[1], "heading") == "shop opens on 2027-01-15 08:00 UTC"
    _, data = wait(place=place, accept="application/json")
    assert json.loads(data)["state"] == "prequeue"
    assert "eta_seconds" not in json.loads(data)


def test_the_page_speaks_the_visitors_language_and_escapes_the_title() -> None:
    headers, page = wait(DE, title="<b>Sale</b> & more", retry_after=2)
    assert '<html lang="de" dir="ltr">' in page
    assert headers["Content-Language"] == "de"
    assert text_of(page, "heading") == "Sie sind im Warteraum"
    assert text_of(page, "next") == "Nächster Versuch in 2 Sekunden."
    assert "<b>Sale</b>" not in page
    assert "&lt;b&gt;Sale&lt;/b&gt; &amp; more" in page
    data = json.loads(re.search(r'id="waitroom-data">([^<]*)<', page).group(1))  # type: ignore[union-attr]
    assert (data["lang"], data["plural"], data["title"]) == ("de", "one_other", "<b>Sale</b> & more")
    assert data["strings"]["next_try"]["other"] == "Nächster Versuch in {n} Sekunden."
    _, polish = wait(PL, retry_after=5)
    assert text_of(polish, "next") == "Następna próba za 5 sekund."


def test_the_shipped_pages_are_small_accessible_and_self_contained() -> None:
    for lang in ("en", "ja"):
        _, page = wait(LANGUAGES[lang], place=Place(3, 9, Estimate(300)))
        assert len(page.encode()) < 16 * 1024
        for needle in (
            f'<html lang="{lang}"',
            "<title>",
            'role="status"',
            'aria-live="polite"',
            '<noscript><meta http-equiv="refresh"',
            'name="viewport"',
        ):
            assert needle in page
        for outside in ("http://", "https://", ' src="', "<link"):
            assert outside not in page


def test_closed_page_and_json() -> None:
    template = Template.load(CLOSED_TEMPLATE)
    page = closed_answer(template=template, strings=DE, room="shop", title="Sale", status=410, accept=BROWSER)
    assert page.status == 410
    assert "Diese Veranstaltung ist beendet" in page.body.decode()
    assert "Sale" in page.body.decode()
    plain = closed_answer(
        template=template, strings=DE, room="shop", title="Sale", status=410, accept="application/json"
    )
    assert json.loads(plain.body) == {"status": "closed", "room": "shop", "title": "Sale"}


def refusal(accept: str, method: str = "GET", strings: Strings = EN) -> tuple[bytes, dict[str, str], bytes]:
    problem = limited_answer(rule="api", limit=2, per=1.0, retry_after=3)
    answer = refusal_answer(
        problem, kind="rate", accept=accept, method=method, template=REFUSED, strings=strings, retry_after=3
    )
    assert answer.status == 429
    return problem.body, answer.headers, answer.body


def test_a_429_stays_problem_json_byte_for_byte_for_api_clients() -> None:
    documented = (
        b'{"type": "about:blank", "title": "Too Many Requests", "status": 429, "detail": "Rate limit '
        b'\'api\' exceeded: 2 requests per 1s. Retry in 3s.", "rule": "api", "retry_after": 3}'
    )
    for accept in (
        "*/*",
        "",
        "application/json",
        "application/problem+json",
        "application/json, text/html;q=0.5",
    ):
        problem, headers, body = refusal(accept)
        assert body == problem == documented
        assert headers["Content-Type"] == "application/problem+json"
        assert headers["Retry-After"] == "3"
        assert headers["RateLimit-Policy"] == '"api";q=2;w=1'


def test_a_429_is_a_page_for_a_browser() -> None:
    _, headers, body = refusal(BROWSER, strings=DE)
    page = body.decode()
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert (headers["Retry-After"], headers["RateLimit-Policy"]) == ("3", '"api";q=2;w=1')
    assert "<h1>Zu viele Anfragen</h1>" in page
    assert text_of(page, "next") == "Nächster Versuch in 3 Sekunden."
    assert '<meta http-equiv="refresh" content="3">' in page  # a GET reloads by itself
    assert '"reload":true' in page
    assert "about:blank" not in page


def test_after_a_post_the_page_does_not_send_the_form_again() -> None:
    _, _, body = refusal(BROWSER, method="POST")
    page = body.decode()
    assert 'http-equiv="refresh"' not in page
    assert '"reload":false' in page
    assert text_of(page, "place") == "Your form was not sent."
    assert text_of(page, "next") == "Please wait 3 seconds, then go back and send it again."
    assert 'data-waitroom="back" hidden>Go back<' in page


def test_a_ticket_refusal_is_a_page_with_the_rooms_title() -> None:
    problem = refused_ticket_answer(room="shop", retry_after=20)
    page = refusal_answer(
        problem,
        kind="tickets",
        accept=BROWSER,
        method="GET",
        template=REFUSED,
        strings=EN,
        title="Summer sale",
        retry_after=20,
    )
    assert (page.status, page.headers["Waitroom-Status"], page.headers["Retry-After"]) == (
        429,
        "refused",
        "20",
    )
    assert "joined the line for Summer sale" in page.body.decode()
    assert ">shop<" not in page.body.decode()
    api = refusal_answer(
        problem, kind="tickets", accept="*/*", method="GET", template=REFUSED, strings=EN, retry_after=20
    )
    assert api.body == problem.body


def test_custom_templates_get_text_style_and_script() -> None:
    template = Template.parse(
        '<html lang="{{ lang }}"><h1 data-waitroom="heading">{{ heading }}</h1>{{ text:wait.keep_open }}'
        "{{ style }}{{ script }}</html>"
    )
    _, page = wait(DE, template=template)
    assert page.startswith(
        '<html lang="de"><h1 data-waitroom="heading">Sie sind im Warteraum</h1>Bitte lassen'
    )
    assert "<style>" in page
    assert 'id="waitroom-data"' in page
    assert "fetch(" in page  # the page script: it polls


CHALLENGE = Challenge("w1.shop.1800000000000.16.AAAAAAAAAAAAAAAA.bWFj", 16, 30)


def test_a_challenge_is_a_state_of_its_own_for_scripts() -> None:
    headers, body = wait(accept="application/json", challenge=CHALLENGE)
    fields = json.loads(body)
    assert (fields["status"], fields["state"], fields["retry_after"]) == ("waiting", "challenge", 7)
    assert fields["proof_of_work"] == {
        "challenge": CHALLENGE.token,
        "difficulty": 16,
        "expires_in": 30,
        "algorithm": "sha256(sha256(challenge) || uint32_be(nonce)) < 2^(256 - difficulty)",
        "header": "Waitroom-Proof",
        "value": "<challenge>;<nonce>",
    }
    assert "position" not in fields
    assert "eta_seconds" not in fields
    assert (headers["Waitroom-Status"], headers["Retry-After"]) == ("challenge", "7")
    other = Challenge("w1.shop.1800000000000.16.BBBBBBBBBBBBBBBB.bWFj", 16, 30)
    assert json.loads(wait(accept="application/json", challenge=other)[1])["proof_of_work"]["challenge"] == (
        other.token
    )  # each visitor's own: never an answer cached for another


def test_a_challenge_page_solves_it_and_says_it_needs_javascript() -> None:
    headers, page = wait(challenge=CHALLENGE, title="Summer sale")
    assert headers["Waitroom-Status"] == "challenge"
    assert text_of(page, "message").startswith("Before you get your place in line for Summer sale")
    assert text_of(page, "status") == "Getting your place in line…"
    assert (text_of(page, "place"), text_of(page, "eta"), text_of(page, "next")) == ("", "", "")
    noscript = re.search(r"<noscript><p>(.*?)</p></noscript>", page)
    assert noscript is not None
    assert "needs JavaScript" in noscript.group(1)
    assert 'http-equiv="refresh"' not in page  # a reload would only bring the challenge back
    assert "api.solve = solve" in page  # the solver, before the page script that calls it
    assert page.index("api.solve = solve") < page.index("fetch(")
    data = json.loads(re.search(r'id="waitroom-data">([^<]*)<', page).group(1))  # type: ignore[union-attr]
    assert data["proof_of_work"]["challenge"] == CHALLENGE.token
    _, german = wait(DE, challenge=CHALLENGE)
    assert "JavaScript" in german
    assert "Rechenaufgabe" in text_of(german, "message")
    # Pages without a challenge carry no solver, and keep their refresh without JavaScript.
    _, line = wait(place=Place(0, 3, Estimate(60)))
    assert "api.solve = solve" not in line
    assert 'http-equiv="refresh"' in line


def test_set_cookie_attributes() -> None:
    assert set_cookie("c", "v", 60, False) == "c=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
    assert set_cookie("c", "v", 60, True).endswith("; Secure")
