"""Answers the proxy serves itself: the wait-room page (HTML or JSON) and the poll answer.

Pure functions over plain values; the addon turns an Answer into a mitmproxy response.
Templates use `{{ name }}` placeholders, checked when the config loads:
`room` (HTML-escaped), `retry_after` and `status` (numbers), `data` (JSON for the page's script,
safe inside `<script>`), and in a `fifo` room `position`, `queue_length` and `eta_seconds` (numbers;
empty in a `block` room, or when the store could not tell).
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "static" / "waitroom.html"
CLOSED_TEMPLATE = Path(__file__).resolve().parents[2] / "static" / "closed.html"
MAX_TEMPLATE_BYTES = 64 * 1024
TEMPLATE_VARIABLES = frozenset(
    {"room", "retry_after", "status", "data", "position", "queue_length", "eta_seconds", "opens_in"}
)
POLL_HEADER = "Waitroom-Poll"
"""Sent by the wait page's script: when admitted, the proxy answers the poll itself (no upstream)."""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Template:
    """A page split once into literal text and placeholder names, so rendering is a join."""

    parts: tuple[str, ...]
    names: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Template:
        pieces = _PLACEHOLDER.split(text)
        literals, names = tuple(pieces[0::2]), tuple(pieces[1::2])
        unknown = sorted(set(names) - TEMPLATE_VARIABLES)
        if unknown:
            raise TemplateError(
                f"unknown template variable {{{{ {unknown[0]} }}}} "
                f"(known: {', '.join(sorted(TEMPLATE_VARIABLES))})"
            )
        return cls(literals, names)

    @classmethod
    def load(cls, path: Path) -> Template:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise TemplateError(f"cannot read {path}: {e.strerror or e}") from None
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{path} is {len(raw)} bytes; the limit is {MAX_TEMPLATE_BYTES}")
        try:
            return cls.parse(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise TemplateError(f"{path} is not UTF-8 text") from None

    def render(self, values: dict[str, str]) -> str:
        out = [self.parts[0]]
        for name, literal in zip(self.names, self.parts[1:], strict=True):
            out.append(values[name])
            out.append(literal)
        return "".join(out)


def script_safe_json(value: object) -> str:
    """JSON that cannot close the `<script>` element it sits in."""
    return (
        json.dumps(value, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def wants_json(accept: str) -> bool:
    """Scripts and API clients ask for JSON; browsers (and `*/*`) get the page."""
    accept = accept.lower()
    return "application/json" in accept and "text/html" not in accept


@dataclass(frozen=True, slots=True)
class Place:
    """A waiting visitor's place in a `fifo` room's line, as the answer shows it."""

    position: int
    """Live tickets ahead of the visitor (0: next in)."""
    queue_length: int
    eta_seconds: int
    opens_in: int | None = None
    """Before a scheduled opening: seconds until it (the pre-queue's order is drawn at the opening,
    so no position is shown before)."""


def _wait_fields(room: str, retry_after: int, blocked_for: int, place: Place | None) -> dict[str, object]:
    fields: dict[str, object] = {
        "status": "waiting",
        "room": room,
        "retry_after": retry_after,
        "blocked_for": blocked_for,
    }
    if place is not None and place.opens_in is not None:
        fields.update(prequeue=True, opens_in=place.opens_in, queue_length=place.queue_length)
    elif place is not None:
        fields.update(position=place.position, queue_length=place.queue_length, eta_seconds=place.eta_seconds)
    return fields


def wait_answer(
    *,
    template: Template,
    room: str,
    status: int,
    retry_after: int,
    blocked_for: float,
    accept: str,
    place: Place | None = None,
) -> Answer:
    """The wait-room answer: `status` (503 by default), Retry-After, never cached by clients;
    with `place`, the visitor's place in a `fifo` room's line."""
    return _wait_answer(
        template, room, status, retry_after, math.ceil(blocked_for), wants_json(accept), place
    )


@functools.lru_cache(maxsize=512)
def _wait_answer(
    template: Template,
    room: str,
    status: int,
    retry_after: int,
    blocked_for: int,
    as_json: bool,
    place: Place | None,
) -> Answer:
    # During a block every new visitor of a room gets the same answer within a second: rendered once.
    fields = _wait_fields(room, retry_after, blocked_for, place)
    headers = {
        "Retry-After": str(retry_after),
        "Cache-Control": "no-store",
        "Waitroom-Status": "waiting",
    }
    if as_json:
        headers["Content-Type"] = "application/json"
        return Answer(status, headers, json.dumps(fields).encode())
    headers["Content-Type"] = "text/html; charset=utf-8"
    page = template.render(
        {
            "room": html.escape(room),
            "retry_after": str(retry_after),
            "status": str(status),
            "data": script_safe_json(fields),
            "position": "" if place is None or place.opens_in is not None else str(place.position),
            "queue_length": "" if place is None else str(place.queue_length),
            "eta_seconds": "" if place is None or place.opens_in is not None else str(place.eta_seconds),
            "opens_in": "" if place is None or place.opens_in is None else str(place.opens_in),
        }
    )
    return Answer(status, headers, page.encode("utf-8"))


def closed_answer(*, template: Template, room: str, status: int, accept: str) -> Answer:
    """A room after its `closes_at`: the closed page, or `{"status": "closed"}` for JSON clients."""
    fields = {"status": "closed", "room": room}
    headers = {"Cache-Control": "no-store", "Waitroom-Status": "closed"}
    if wants_json(accept):
        return Answer(status, {**headers, "Content-Type": "application/json"}, json.dumps(fields).encode())
    values = dict.fromkeys(TEMPLATE_VARIABLES, "")
    values.update(room=html.escape(room), status=str(status), retry_after="0", data=script_safe_json(fields))
    page = template.render(values)
    return Answer(status, {**headers, "Content-Type": "text/html; charset=utf-8"}, page.encode("utf-8"))


def refused_ticket_answer(*, room: str, retry_after: int) -> Answer:
    """No ticket: too many new tickets from the visitor's address this minute (tickets_per_ip)."""
    answer = problem_answer(429, "Too many new places in line from your address; try again later.")
    headers = {**answer.headers, "Retry-After": str(retry_after), "Waitroom-Status": "refused"}
    body = json.loads(answer.body) | {"title": "Too Many Requests", "room": room, "retry_after": retry_after}
    return Answer(429, headers, json.dumps(body).encode())


def admitted_poll_answer(room: str) -> Answer:
    """The wait page's poll, once admitted: the page reloads itself on `status: admitted`."""
    return Answer(
        200,
        {"Content-Type": "application/json", "Cache-Control": "no-store", "Waitroom-Status": "admitted"},
        json.dumps({"status": "admitted", "room": room}).encode(),
    )


def set_cookie(name: str, token: str, max_age: int, secure: bool) -> str:
    parts = [f"{name}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def rate_limit_headers(
    rule: str, limit: int, per: float, remaining: int, reset_after: float
) -> dict[str, str]:
    """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers): the policy (quota `q` per
    window `w` seconds) and the current state (`r` remaining, `t` seconds until it resets)."""
    return {
        "RateLimit-Policy": f'"{rule}";q={limit};w={max(1, math.ceil(per))}',
        "RateLimit": f'"{rule}";r={max(0, remaining)};t={max(0, math.ceil(reset_after))}',
    }


def limited_answer(*, rule: str, limit: int, per: float, retry_after: int) -> Answer:
    """429 Too Many Requests as problem+json (RFC 9457), with Retry-After and the RateLimit fields."""
    headers = {
        "Retry-After": str(retry_after),
        "Cache-Control": "no-store",
        "Content-Type": "application/problem+json",
        **rate_limit_headers(rule, limit, per, 0, retry_after),
    }
    problem = {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit '{rule}' exceeded: {limit} requests per {per:g}s. Retry in {retry_after}s.",
        "rule": rule,
        "retry_after": retry_after,
    }
    return Answer(429, headers, json.dumps(problem).encode())


def problem_answer(status: int, detail: str, *, retry_after: int | None = None) -> Answer:
    """A refusal the proxy makes itself (ambiguous target, too large headers, a failed decision),
    as problem+json. `detail` is our own text: nothing of the request is reflected."""
    headers = {"Cache-Control": "no-store", "Content-Type": "application/problem+json"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    title = {
        400: "Bad Request",
        414: "URI Too Long",
        429: "Too Many Requests",
        431: "Request Header Fields Too Large",
    }.get(status, "Service Unavailable")
    problem = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Answer(status, headers, json.dumps(problem).encode())
