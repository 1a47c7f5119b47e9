"""Between mitmproxy flows and the plain decisions: what a request is judged as (its target and
authority, put in the form the upstream receives) and what a decision does to it (an answer, a
cookie, rate-limit headers, another upstream)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from waitroom import early
from waitroom.decide import Decision, Outcome, cookie_name
from waitroom.identity import client_is_https
from waitroom.limits import LimitDecision, LimitOutcome
from waitroom.responses import (
    POLL_HEADER,
    Answer,
    admitted_poll_answer,
    closed_answer,
    limited_answer,
    rate_limit_headers,
    refused_ticket_answer,
    set_cookie,
    wait_answer,
)
from waitroom.routing import normalize_host
from waitroom.runtime import Loaded
from waitroom.target import Refused, judge_authority, judge_target

SET_COOKIE_KEY = "waitroom.set_cookie"
SESSION_KEY = "waitroom.session"
"""(room, session id) of a request that passes with a session: what `Waitroom-Command: release` ends."""
EXTRA_HEADERS_KEY = "waitroom.response_headers"


def judge(flow: http.HTTPFlow, loaded: Loaded, max_header_bytes: int) -> tuple[str, str]:
    """(host, path) as decided on, which are also what the upstream receives: the target is
    put in its canonical form (or refused), and the one authority the request names is the
    one that goes on. Raises Refused. See target.py."""
    req = flow.request
    size = 0
    for name, value in req.headers.fields:
        size += len(name) + len(value) + 4
    if size > max_header_bytes:
        raise Refused(431, "the request headers are too large", "headers")
    target = judge_target(req.path)
    keep_host = bool(getattr(ctx.options, "keep_host_header", False))
    http1 = not (req.is_http2 or req.is_http3)
    absolute = req.authority if not http1 or req.authority else ""
    if keep_host or not flow.live:
        hosts = req.headers.get_all("host")
        authority = judge_authority(hosts, absolute, required=loaded.needs_host)
        if http1 and req.authority:
            if not hosts:
                req.headers["Host"] = authority
            req.authority = ""  # origin form: the upstream sees the authority we judged, once
    else:
        # mitmproxy already put the upstream's name in Host; a client's absolute-form authority
        # is neither judged nor forwarded.
        if http1 and req.authority:
            req.authority = ""
        authority = req.host_header or req.host
    if target.forwarded != req.path:
        req.path = target.forwarded
    return normalize_host(authority), target.routing


def act(flow: http.HTTPFlow, loaded: Loaded, limit: LimitDecision | None, decision: Decision | None) -> None:
    """Carry out the request's decisions, once: a rate-limit refusal or reroute ends it (the room
    was not asked); otherwise its headers go on the answer and the room's decision applies."""
    if limit is not None and _limit(flow, limit):
        return
    if decision is not None:
        _room(flow, loaded, decision)


def _limit(flow: http.HTTPFlow, limit: LimitDecision) -> bool:
    """True when the request is answered or sent elsewhere."""
    rule, result = limit.rule, limit.result
    if limit.outcome is LimitOutcome.NONE or rule is None or result is None:
        return False
    if limit.outcome is LimitOutcome.LIMITED:
        answer = limited_answer(rule=rule.name, limit=rule.limit, per=rule.per, retry_after=limit.retry_after)
        early.answer_now(flow, to_response(answer))
        return True
    if limit.outcome is LimitOutcome.REROUTED and limit.upstream:
        reroute(flow, limit.upstream)
        return True
    headers = rate_limit_headers(rule.name, rule.limit, rule.per, result.remaining, result.reset_after)
    flow.metadata[EXTRA_HEADERS_KEY] = list(headers.items())
    return False


def _room(flow: http.HTTPFlow, loaded: Loaded, decision: Decision) -> None:
    room = decision.room
    if room is None:
        return
    req = flow.request
    cookie, max_age = decision.cookie, loaded.decider.codec.ttl
    if cookie is None and decision.pending is not None:
        # A pending token lives as long as a recorded admission can be in the window; a ticket as
        # long as the line can hold it (it is renewed with every answer while the visitor waits).
        hold = room.abandon_after_seconds + room.grace_seconds if room.queue == "fifo" else room.window
        cookie, max_age = decision.pending, max(1, int(hold))
    if cookie is not None:
        name = cookie_name(loaded.config, room)
        flow.metadata[SET_COOKIE_KEY] = set_cookie(name, cookie, max_age, cookie_secure(flow, loaded))
    if decision.session_id is not None and decision.outcome in (Outcome.SESSION, Outcome.ADMITTED):
        flow.metadata[SESSION_KEY] = (room.name, decision.session_id)
    accept = req.headers.get("Accept", "")
    if decision.outcome is Outcome.CLOSED:
        template = loaded.templates[f"{room.name}:closed"]
        answer = closed_answer(template=template, room=room.name, status=room.closed_status, accept=accept)
        early.answer_now(flow, to_response(answer))
    elif decision.outcome is Outcome.REFUSED:
        early.answer_now(
            flow, to_response(refused_ticket_answer(room=room.name, retry_after=decision.retry_after))
        )
    elif decision.outcome is Outcome.WAITING:
        answer = wait_answer(
            template=loaded.templates[room.name],
            room=room.name,
            status=room.status,
            retry_after=room.retry_after_seconds,
            blocked_for=decision.blocked_for,
            accept=accept,
            place=decision.place,
        )
        early.answer_now(flow, to_response(answer))
    elif req.method == "GET" and POLL_HEADER in req.headers:
        # The wait page asking whether it may come in: answer here, the upstream never sees it.
        early.answer_now(flow, to_response(admitted_poll_answer(room.name)))


def cookie_secure(flow: http.HTTPFlow, loaded: Loaded) -> bool:
    """The `Secure` flag of our cookies (session.secure; `auto`: when the visitor's side is https)."""
    secure = {"true": True, "false": False}.get(loaded.config.session.secure)
    if secure is not None:
        return secure
    return client_is_https(
        loaded.config.client_ip,
        tls=flow.client_conn.tls_established,
        forwarded_proto=flow.request.headers.get("X-Forwarded-Proto"),
    )


def add_headers(flow: http.HTTPFlow) -> None:
    """What the decision adds to the answer (a session cookie, rate-limit headers)."""
    cookie = flow.metadata.pop(SET_COOKIE_KEY, None)
    extra = flow.metadata.pop(EXTRA_HEADERS_KEY, ())
    if flow.response is None:
        return
    if cookie is not None:
        flow.response.headers.add("Set-Cookie", cookie)
    for name, value in extra:
        flow.response.headers[name] = value


def reroute(flow: http.HTTPFlow, upstream: str) -> None:
    """Send the request to another upstream (`action: upstream:URL`), keeping its path and query;
    a path in URL is put in front of it. The Host header follows unless keep_host_header is set."""
    target = urlsplit(upstream)
    req = flow.request
    original_host = req.host_header
    req.scheme = target.scheme
    req.host = target.hostname or req.host
    req.port = target.port or (443 if target.scheme == "https" else 80)
    if target.path not in ("", "/"):
        req.path = target.path.rstrip("/") + req.path
    if getattr(ctx.options, "keep_host_header", False) and original_host is not None:
        req.host_header = original_host


def cookie_reader(req: http.Request) -> Callable[[str], list[str]]:
    """`name` → every value the Cookie headers carry under it. A plain split, linear in the
    header's size (which max_header_bytes bounds), instead of mitmproxy's full cookie parser."""

    def values(name: str) -> list[str]:
        found = []
        for header in req.headers.get_all("cookie"):
            for pair in header.split(";"):
                key, sep, value = pair.partition("=")
                if sep and key.strip() == name:
                    found.append(value.strip().strip('"'))
        return found

    return values


def to_response(answer: Answer) -> http.Response:
    return http.Response.make(answer.status, answer.body, answer.headers)


def peer(flow: http.HTTPFlow) -> str:
    address = flow.client_conn.peername
    return str(address[0]) if address else ""
