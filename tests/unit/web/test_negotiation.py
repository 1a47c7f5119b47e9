"""web/negotiation.py: JSON or a page, and the visitor's language, from headers a client writes."""

from __future__ import annotations

import pytest

from waitroom.web.negotiation import negotiate_language, ranges, wants_html, wants_json

CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
SHIPPED = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ja", "zh")


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (CHROME, True),
        (FIREFOX, True),
        ("text/html", True),
        ("*/*", False),  # curl, fetch()
        ("", False),
        ("application/json", False),
        ("application/problem+json", False),
        ("application/json, text/html;q=0.5", False),  # an API client that can read HTML too
        ("text/html;q=0.9, application/json;q=0.9", True),  # a tie goes to the page
        ("text/html;q=0, */*", False),
        ("text/html;q=abc", False),  # a weight that does not parse: the range is left out
        ("TEXT/HTML", True),
        ("application/json;q=0.1, text/html;q=0.2", True),
    ],
)
def test_wants_html(accept: str, html: bool) -> None:
    assert wants_html(accept) is html


def test_wants_json_is_unchanged_for_the_wait_answer() -> None:
    assert wants_json("application/json")
    assert not wants_json("*/*")
    assert not wants_json("text/html,application/json")


def test_a_header_is_read_only_so_far() -> None:
    huge = ",".join(["x-unknown"] * 500) + ",de"
    assert len(ranges(huge)) == 32
    assert negotiate_language(huge, SHIPPED, "en") == "en"  # `de` is past the bound: not read
    assert negotiate_language("de" + " " * 2000 + ",fr", SHIPPED, "en") == "de"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("de-CH,de;q=0.9,en;q=0.8", "de"),
        ("pt-BR", "pt"),  # RFC 4647 lookup: pt-br, then pt
        ("en;q=0.1, pl;q=0.9", "pl"),  # by weight, not by order
        ("fr;q=0.5, nl;q=0.5", "fr"),  # equal weights keep their order
        ("ja;q=0, zh", "zh"),  # q=0: not acceptable
        ("zh-Hans-CN", "zh"),
        ("zh-CN,zh;q=0.9", "zh"),
        ("zh-TW,ja;q=0.5", "ja"),  # Traditional Chinese never falls back to Simplified
        ("zh-Hant", "en"),
        ("zh-HK", "en"),
        ("x-klingon, tlh", "en"),
        ("*", "en"),
        ("", "en"),
        ("de-x-private", "de"),
        ("<script>, ../../etc", "en"),
        ("ES", "es"),
    ],
)
def test_negotiate_language(header: str, language: str) -> None:
    assert negotiate_language(header, SHIPPED, "en") == language


def test_a_traditional_chinese_file_is_found_when_added() -> None:
    assert negotiate_language("zh-TW", (*SHIPPED, "zh-Hant"), "en") == "zh-Hant"
    assert negotiate_language("zh-Hant-HK", (*SHIPPED, "zh-Hant"), "en") == "zh-Hant"
    assert negotiate_language("zh-CN", (*SHIPPED, "zh-Hant"), "en") == "zh"
