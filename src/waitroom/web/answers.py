"""Answers the proxy serves itself: the wait-room page (HTML or JSON), the closed page, the poll
answer, and refusals (429 and the proxy's own errors: a page for a browser, problem+json otherwise).

Pure functions over plain values; the addon turns an Answer into a mitmproxy response. A page is
rendered in the visitor's language (`strings`, chosen by the caller) from a template (template.py);
what it says is wording.py's.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from dataclasses import dataclass

from waitroom.web.negotiation import wants_html, wants_json
from waitroom.web.strings import Strings
from waitroom.web.template import Template, builtin_script, builtin_style, proof_script
from waitroom.web.wait import Challenge, Estimate, Place, WaitState, wait_state
from waitroom.web.wording import CLIENT_KEYS, REFUSED_CLIENT_KEYS, closed_copy, refusal_copy, wait_copy

POLL_HEADER = "Waitroom-Poll"
"""Sent by the wait page's script: when admitted, the proxy answers the poll itself (no upstream)."""
VARY = "Accept, Accept-Language"
"""Pages and JSON answers differ by both."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def script_safe_json(value: object) -> str:
    """JSON that cannot close the `<script>` element it sits in."""
    return (
        json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _page_values(
    strings: Strings,
    template: Template,
    *,
    title: str,
    copy: dict[str, str],
    data: dict[str, object],
    solver: bool = False,
) -> dict[str, str]:
    """Every placeholder's value (template.py lists them): text escaped, data as safe JSON.
    `solver`: the page carries a proof-of-work challenge, and its script the solver."""
    solver_script = f"{proof_script()}\n" if solver else ""
    values = dict.fromkeys(
        (
            "retry_after",
            "status",
            "position",
            "queue_length",
            "eta_seconds",
            "opens_in",
            "place",
            "eta",
            "status_text",
        ),
        "",
    )
    values.update(
        {
            "lang": html.escape(strings.tag),
            "dir": strings.direction,
            "title": html.escape(title),
            "room": html.escape(title),
            "next_try": "",
            "noscript": "",
            "refresh": "",
            "style": builtin_style(),
            "script": (
                f'<script type="application/json" id="waitroom-data">{script_safe_json(data)}</script>\n'
                f"{solver_script}{builtin_script()}"
            ),
            "data": script_safe_json(data),
        }
    )
    values.update({name: html.escape(text) for name, text in copy.items()})
    for key in template.text_keys:
        values[f"text:{key}"] = html.escape(strings.text(key, title=title))
    return values


def _for_script(strings: Strings, keys: tuple[str, ...]) -> dict[str, object]:
    return {"lang": strings.tag, "plural": strings.plural, "strings": strings.pick(keys)}


def _wait_fields(
    room: str,
    title: str,
    state: WaitState,
    retry_after: int,
    blocked_for: int,
    place: Place | None,
    estimate: Estimate | None,
    challenge: Challenge | None = None,
) -> dict[str, object]:
    fields: dict[str, object] = {
        "status": "waiting",
        "room": room,
        "title": title,
        "state": state.value,
        "retry_after": retry_after,
        "blocked_for": blocked_for,
    }
    if challenge is not None:
        fields["proof_of_work"] = challenge.fields()
        return fields
    if place is not None and place.opens_in is not None:
        fields.update(prequeue=True, opens_in=place.opens_in, queue_length=place.queue_length)
        if estimate is not None and estimate.after_opening_max is not None:
            fields["eta_after_opening_max"] = estimate.after_opening_max
        return fields
    if place is not None:
        fields.update(position=place.position, queue_length=place.queue_length)
    if estimate is not None:
        fields.update(eta_seconds=estimate.seconds, eta_basis=estimate.basis)
        if estimate.past_closing:
            fields["past_closing"] = True
    return fields


def wait_answer(
    *,
    template: Template,
    strings: Strings,
    room: str,
    title: str,
    status: int,
    retry_after: int,
    blocked_for: float,
    accept: str,
    place: Place | None = None,
    estimate: Estimate | None = None,
    challenge: Challenge | None = None,
    head_retry_after: int = 0,
) -> Answer:
    """The wait-room answer: `status` (503 by default), Retry-After, never cached by clients.
    `retry_after`: when this visitor should ask again (a `fifo` ticket's own interval); when that is
    longer than the room's `head_retry_after`, the page's jitter is ±30 % of the latter, so the page
    is never later than the store expects by more than at the head of the line. With
    `place`, the visitor's place in a `fifo` room's line (and its estimate); else `estimate`, when
    there is one (a `block` room's, or why there is none: paused, degraded); a `challenge` (proof
    of work) comes before any place, and each visitor's is its own (never cached)."""
    if place is not None:
        estimate = place.estimate
    if challenge is not None:
        return _challenge_answer(
            template, strings, room, title, status, retry_after, wants_json(accept), challenge
        )
    return _wait_answer(
        template,
        strings,
        room,
        title,
        status,
        retry_after,
        math.ceil(blocked_for),
        wants_json(accept),
        place,
        estimate,
        None,
        head_retry_after if 0 < head_retry_after < retry_after else 0,
    )


def _render_wait(
    template: Template,
    strings: Strings,
    room: str,
    title: str,
    status: int,
    retry_after: int,
    blocked_for: int,
    as_json: bool,
    place: Place | None,
    estimate: Estimate | None,
    challenge: Challenge | None = None,
    head_retry_after: int = 0,
) -> Answer:
    state = wait_state(place, estimate, challenge)
    fields = _wait_fields(room, title, state, retry_after, blocked_for, place, estimate, challenge)
    if head_retry_after:
        fields["head_retry_after"] = head_retry_after
    headers = {
        "Retry-After": str(retry_after),
        "Cache-Control": "no-store",
        "Vary": VARY,
        "Waitroom-Status": "challenge" if challenge is not None else "waiting",
    }
    if as_json:
        headers["Content-Type"] = "application/json"
        return Answer(status, headers, json.dumps(fields).encode())
    headers["Content-Type"] = "text/html; charset=utf-8"
    headers["Content-Language"] = strings.tag
    copy = wait_copy(
        strings, title=title, state=state, place=place, estimate=estimate, retry_after=retry_after
    )
    data = {**fields, **_for_script(strings, CLIENT_KEYS)}
    values = _page_values(strings, template, title=title, copy=copy, data=data, solver=challenge is not None)
    prequeue = state is WaitState.PREQUEUE
    values.update(
        retry_after=str(retry_after),
        status=str(status),
        position="" if place is None or prequeue else str(place.position),
        queue_length="" if place is None else str(place.queue_length),
        eta_seconds="" if prequeue or estimate is None or estimate.seconds is None else str(estimate.seconds),
        opens_in="" if place is None or place.opens_in is None else str(place.opens_in),
        # Without JavaScript no puzzle is solved: reloading would only bring the same challenge back.
        refresh=""
        if challenge is not None
        else f'<noscript><meta http-equiv="refresh" content="{retry_after}"></noscript>',
    )
    return Answer(status, headers, template.render(values).encode("utf-8"))


_wait_answer = functools.lru_cache(maxsize=512)(_render_wait)
"""During a block every new visitor of a room gets the same answer within a second: rendered once
per language."""

_TOKEN_SLOT = "waitroom-challenge-token-slot"
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,200}")


def _challenge_answer(
    template: Template,
    strings: Strings,
    room: str,
    title: str,
    status: int,
    retry_after: int,
    as_json: bool,
    challenge: Challenge,
) -> Answer:
    """Every newcomer of a room with proof of work gets a challenge of its own, in a page that is
    otherwise the same for all: rendered once per language, the token put in its slot. A token of
    our own is plain text that neither JSON nor HTML escapes; anything else is rendered in full."""
    if not _SAFE_TOKEN.fullmatch(challenge.token):
        return _render_wait(
            template, strings, room, title, status, retry_after, 0, as_json, None, None, challenge
        )
    slot = Challenge(_TOKEN_SLOT, challenge.difficulty, challenge.expires_in)
    blank = _wait_answer(template, strings, room, title, status, retry_after, 0, as_json, None, None, slot)
    return Answer(
        blank.status, blank.headers, blank.body.replace(_TOKEN_SLOT.encode(), challenge.token.encode())
    )


def closed_answer(
    *, template: Template, strings: Strings, room: str, title: str, status: int, accept: str
) -> Answer:
    """A room after its `closes_at`: the closed page, or `{"status": "closed"}` for JSON clients."""
    fields: dict[str, object] = {"status": "closed", "room": room, "title": title}
    headers = {"Cache-Control": "no-store", "Vary": VARY, "Waitroom-Status": "closed"}
    if wants_json(accept):
        return Answer(status, {**headers, "Content-Type": "application/json"}, json.dumps(fields).encode())
    values = _page_values(strings, template, title=title, copy=closed_copy(strings, title=title), data=fields)
    values.update(status=str(status), retry_after="0")
    headers.update({"Content-Type": "text/html; charset=utf-8", "Content-Language": strings.tag})
    return Answer(status, headers, template.render(values).encode("utf-8"))


def refusal_page(
    *,
    template: Template,
    strings: Strings,
    kind: str,
    status: int,
    method: str,
    title: str = "",
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """A refusal as a page in the visitor's language, with the same status and headers as its
    problem+json form (`headers`). `kind`: wording.REFUSALS. With `retry_after` it counts down, and
    reloads itself at the end only when the request can be repeated (GET, HEAD)."""
    reload = method in ("GET", "HEAD")
    copy = refusal_copy(strings, kind, title=title, retry_after=retry_after, reload=reload)
    data = {
        "status": "refused",
        "retry_after": retry_after,
        "reload": reload,
        **_for_script(strings, REFUSED_CLIENT_KEYS),
    }
    values = _page_values(strings, template, title=title, copy=copy, data=data)
    values.update(status=str(status), retry_after="" if retry_after is None else str(retry_after))
    if retry_after is not None and reload:
        values["refresh"] = f'<noscript><meta http-equiv="refresh" content="{retry_after}"></noscript>'
    out = dict(headers or {})
    out.pop("Content-Type", None)
    out.update(
        {
            "Cache-Control": "no-store",
            "Vary": VARY,
            "Content-Type": "text/html; charset=utf-8",
            "Content-Language": strings.tag,
        }
    )
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    return Answer(status, out, template.render(values).encode("utf-8"))


def refusal_answer(
    problem: Answer,
    *,
    kind: str,
    accept: str,
    method: str,
    template: Template,
    strings: Strings,
    title: str = "",
    retry_after: int | None = None,
) -> Answer:
    """`problem` (a problem+json refusal) as it goes out: unchanged for API clients, as a page in
    the visitor's language for a browser's navigation (negotiation.wants_html)."""
    if not wants_html(accept):
        return Answer(problem.status, {**problem.headers, "Vary": VARY}, problem.body)
    return refusal_page(
        template=template,
        strings=strings,
        kind=kind,
        status=problem.status,
        method=method,
        title=title,
        retry_after=retry_after,
        headers=problem.headers,
    )


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
