"""Content negotiation: JSON or a page (`Accept`), and the visitor's language (`Accept-Language`).

Headers are the client's: each is read only up to MAX_HEADER characters and MAX_RANGES ranges, so a
huge header costs nothing, and anything that does not parse is skipped, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MAX_HEADER = 1024
MAX_RANGES = 32
TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
"""A language tag (BCP 47's shape, checked loosely: letters, then `-` and letters or digits)."""

_JSON_TYPES = ("application/json", "application/problem+json")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TRADITIONAL_CHINESE = ("zh-hant", "zh-tw", "zh-hk", "zh-mo")
"""Ranges that must not fall back to plain `zh`, which the pages ship as Simplified Chinese."""


def wants_json(accept: str) -> bool:
    """The wait and closed answers: JSON for scripts and API clients that ask for it; browsers
    (and `*/*`) get the page."""
    accept = accept[:MAX_HEADER].lower()
    return "application/json" in accept and "text/html" not in accept


def wants_html(accept: str) -> bool:
    """A refusal: the page only for a client that asks for HTML at least as much as for JSON, as a
    browser's navigation does. `curl` (`*/*`), `fetch` and API clients keep problem+json."""
    html_q = json_q = 0.0
    for media, q in ranges(accept):
        if media in _HTML_TYPES:
            html_q = max(html_q, q)
        elif media in _JSON_TYPES or media.endswith("+json"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def ranges(header: str) -> list[tuple[str, float]]:
    """`Accept`-style ranges, lower-cased, best first (a stable sort: equal weights keep their
    order); ranges with `q=0` (not acceptable) or a weight that does not parse are left out."""
    found: list[tuple[str, float]] = []
    for part in header[:MAX_HEADER].split(",")[:MAX_RANGES]:
        value, *params = (p.strip() for p in part.split(";"))
        if not value:
            continue
        q = 1.0
        for param in params:
            name, _, weight = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(weight.strip())
                except ValueError:
                    q = -1.0
        if 0 < q <= 1:
            found.append((value.lower(), q))
    return sorted(found, key=lambda r: -r[1])


def lookup(tag: str, available: Mapping[str, str]) -> str | None:
    """RFC 4647 lookup of one range in `available` (lower-cased tag → its own spelling): `pt-BR`,
    then `pt`. Traditional Chinese (`zh-Hant`, `zh-TW`, `zh-HK`) never falls back to `zh`."""
    tag = tag.lower()
    if not TAG.fullmatch(tag):
        return None
    traditional = tag.startswith(_TRADITIONAL_CHINESE)
    while tag:
        if tag in available:
            return available[tag]
        if traditional and tag in _TRADITIONAL_CHINESE:
            return available.get("zh-hant")
        tag = tag.rpartition("-")[0]
        if len(tag) > 1 and tag[-2] == "-":  # a singleton (`-x`) goes with what follows it
            tag = tag[:-2]
    return None


def negotiate_language(header: str, available: Iterable[str], default: str) -> str:
    """The visitor's language among `available` from an `Accept-Language` header: the best range
    that matches (lookup), `*` or no match → `default`."""
    offered = {tag.lower(): tag for tag in available}
    for tag, _ in ranges(header):
        if tag == "*":
            return default
        found = lookup(tag, offered)
        if found is not None:
            return found
    return default
