"""What a decision does to a mitmproxy flow: an answer, a cookie, rate-limit headers, another
upstream."""

from __future__ import annotations

from urllib.parse import urlsplit

from mitmproxy import http

from waitroom.addon import early_answer, flowmeta
from waitroom.addon.runtime import Loaded
from waitroom.config.schema import RoomConfig
from waitroom.ratelimit.decision import LimitDecision, LimitOutcome
from waitroom.rooms.decider import Decision, Outcome
from waitroom.rooms.sessions import cookie_name
from waitroom.web.answers import (
    POLL_HEADER,
    Answer,
    admitted_poll_answer,
    closed_answer,
    limited_answer,
    rate_limit_headers,
    refusal_answer,
    refused_ticket_answer,
    set_cookie,
    wait_answer,
)
from waitroom.web.client import client_is_https
from waitroom.web.strings import Strings, title_in
from waitroom.web.wait import DEGRADED


def act(
    flow: http.HTTPFlow,
    loaded: Loaded,
    limit: LimitDecision | None,
    decision: Decision | None,
    keep_host: bool = False,
) -> None:
    """Carry out the request's decisions, once: a rate-limit refusal or reroute ends it (the room
    was not asked); otherwise its headers go on the answer and the room's decision applies.
    `keep_host`: mitmproxy's keep_host_header (a rerouted request keeps its Host)."""
    if limit is not None and _limit(flow, loaded, limit, keep_host):
        return
    if decision is not None:
        _room(flow, loaded, decision)


def _limit(flow: http.HTTPFlow, loaded: Loaded, limit: LimitDecision, keep_host: bool) -> bool:
    """True when the request is answered or sent elsewhere."""
    rule, result = limit.rule, limit.result
    if limit.outcome is LimitOutcome.NONE or rule is None or result is None:
        return False
    if limit.outcome is LimitOutcome.LIMITED:
        retry = limit.retry_after
        problem = limited_answer(rule=rule.name, limit=rule.limit, per=rule.per, retry_after=retry)
        early_answer.answer_now(flow, to_response(refused(flow, loaded, problem, "rate", retry_after=retry)))
        return True
    if limit.outcome is LimitOutcome.REROUTED and limit.upstream:
        reroute(flow, limit.upstream, keep_host)
        return True
    # A held request's headers go out after its wait: its reset is counted from then.
    reset_after = result.reset_after - limit.delayed_for
    headers = rate_limit_headers(rule.name, rule.limit, rule.per, result.remaining, reset_after)
    flowmeta.state(flow).extra_headers = list(headers.items())
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
        hold = (
            max(decision.retry_after, room.retry_after_seconds)
            + room.abandon_after_seconds
            + room.grace_seconds
            if room.queue == "fifo"
            else room.window
        )
        cookie, max_age = decision.pending, max(1, int(hold))
    if cookie is not None:
        name = cookie_name(loaded.config, room)
        flowmeta.state(flow).set_cookie = set_cookie(name, cookie, max_age, cookie_secure(flow, loaded))
    if decision.session_id is not None and decision.outcome in (Outcome.SESSION, Outcome.ADMITTED):
        flowmeta.state(flow).session = (room.name, decision.session_id)
    accept = req.headers.get("Accept", "")
    if decision.outcome is Outcome.CLOSED:
        strings = visitor_strings(flow, loaded, room.name)
        answer = closed_answer(
            template=loaded.pages.closed[room.name],
            strings=strings,
            room=room.name,
            title=room_title(loaded, room, strings),
            status=room.closed_status,
            accept=accept,
        )
        early_answer.answer_now(flow, to_response(answer))
    elif decision.outcome is Outcome.REFUSED:
        retry = decision.retry_after
        problem = refused_ticket_answer(room=room.name, retry_after=retry)
        answer = refused(flow, loaded, problem, "tickets", retry_after=retry, room=room)
        early_answer.answer_now(flow, to_response(answer))
    elif decision.outcome is Outcome.WAITING:
        early_answer.answer_now(flow, to_response(waiting(flow, loaded, room, decision)))
    elif req.method == "GET" and POLL_HEADER in req.headers:
        # The wait page asking whether it may come in: answer here, the upstream never sees it.
        early_answer.answer_now(flow, to_response(admitted_poll_answer(room.name)))


def visitor_strings(flow: http.HTTPFlow, loaded: Loaded, room: str | None) -> Strings:
    """The strings of the visitor's language (the room's, if it sets one)."""
    return loaded.pages.strings(room, flow.request.headers.get("Accept-Language", ""))


def room_title(loaded: Loaded, room: RoomConfig, strings: Strings) -> str:
    """The room's name as its visitors see it, in the page's language."""
    return title_in(room.title, room.name, strings.tag, loaded.pages.catalog.default)


def waiting(flow: http.HTTPFlow, loaded: Loaded, room: RoomConfig, decision: Decision | None) -> Answer:
    """The room's wait answer (`decision` None: a decision that failed, and no more is known)."""
    strings = visitor_strings(flow, loaded, room.name)
    return wait_answer(
        template=loaded.pages.wait[room.name],
        strings=strings,
        room=room.name,
        title=room_title(loaded, room, strings),
        status=room.status,
        retry_after=(decision.retry_after if decision else 0) or room.retry_after_seconds,
        head_retry_after=room.retry_after_seconds,
        blocked_for=decision.blocked_for if decision else 0.0,
        accept=flow.request.headers.get("Accept", ""),
        place=decision.place if decision else None,
        estimate=decision.estimate if decision else DEGRADED,
        challenge=decision.challenge if decision else None,
    )


def refused(
    flow: http.HTTPFlow,
    loaded: Loaded,
    problem: Answer,
    kind: str,
    *,
    retry_after: int | None = None,
    room: RoomConfig | None = None,
) -> Answer:
    """A refusal (`problem`, problem+json) as it goes to this client: a page in the visitor's
    language for a browser's navigation, `problem` itself otherwise (web/negotiation.py)."""
    req = flow.request
    strings = visitor_strings(flow, loaded, room.name if room else None)
    return refusal_answer(
        problem,
        kind=kind,
        accept=req.headers.get("Accept", ""),
        method=req.method,
        template=loaded.pages.refused,
        strings=strings,
        title=room_title(loaded, room, strings) if room else "",
        retry_after=retry_after,
    )


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
    state = flowmeta.peek(flow)
    if state is None:
        return
    cookie, extra = state.set_cookie, state.extra_headers
    state.set_cookie, state.extra_headers = None, []
    if flow.response is None:
        return
    if cookie is not None:
        flow.response.headers.add("Set-Cookie", cookie)
    for name, value in extra:
        flow.response.headers[name] = value


def reroute(flow: http.HTTPFlow, upstream: str, keep_host: bool = False) -> None:
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
    if keep_host and original_host is not None:
        req.host_header = original_host


def to_response(answer: Answer) -> http.Response:
    return http.Response.make(answer.status, answer.body, answer.headers)
