"""Ending a visit early, so that its place is free at once (docs/concepts.md, "Capacity and release").

- The upstream answers with `Waitroom-Command: release` (checkout done, logout): the visitor's
  session in the room ends, its place inside is free, and the cookie is cleared. The header never
  reaches the client, whatever its value.
- `POST /.waitroom/leave` (the page, or the service on the visitor's behalf): every room whose
  cookie the request carries is left — a session ends, a ticket's place in line is given up — and
  the cookies are cleared. It is answered by the proxy; the upstream never sees it. Only this
  site's own pages may send it (`same_origin`), and each client address at most LEAVES_PER_MINUTE
  times a minute on each replica (`LeaveLimiter`), both decided before any cookie or store call.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from mitmproxy import http

from waitroom.addon import early_answer, flowmeta
from waitroom.addon.apply import cookie_secure, refused, to_response
from waitroom.addon.flowmeta import COMMAND_HEADER
from waitroom.addon.request import peer
from waitroom.addon.runtime import Loaded
from waitroom.config.schema import RoomConfig
from waitroom.metrics import METRICS
from waitroom.rooms.sessions import cookie_name
from waitroom.store import algorithms
from waitroom.store.base import Clock, Overloaded, StoreError
from waitroom.web.answers import problem_answer, set_cookie
from waitroom.web.client import client_is_https, request_ip

log = logging.getLogger(__name__)

LEAVE_PATH = "/.waitroom/leave"
LEAVES_PER_MINUTE = 10
"""Leaves one client address may send a minute, on each replica, all of them at once if it likes. A
leave ends only its sender's own places, so this bounds the store writes one address can cause."""
LEAVE_CLIENTS = 10_000
"""Addresses the leave limit remembers per replica; past it the least recently seen is forgotten."""


def same_origin(request: http.Request, *, https: bool, authority: str | None) -> bool:
    """Was the leave sent by this site's own pages? A browser says where a request comes from:
    `Sec-Fetch-Site` (every current browser), else `Origin`. A request with neither is no browser's
    cross-origin request (a service on the visitor's behalf, curl) and may leave.

    `same-site` is refused: a sibling subdomain or port is another origin, and the cookie's
    `SameSite=Lax` does not keep it out. `authority`: the Host the visitor sent (None when mitmproxy
    replaced it with the upstream's: keep_host_header off), which `Origin` must name."""
    site: str | None = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() == "same-origin"
    origin: str | None = request.headers.get("Origin")
    if origin is None:
        return True
    if authority is None:
        return False  # nothing to compare it with: refused rather than guessed
    return _origin_of(origin) == _origin_of(f"{'https' if https else 'http'}://{authority}")


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None for `null` or junk."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.rstrip("."), port or (443 if parts.scheme == "https" else 80)


class LeaveLimiter:
    """At most LEAVES_PER_MINUTE leaves a minute per client address (GCRA, the whole minute's worth
    at once allowed), in this process; bounded to LEAVE_CLIENTS addresses."""

    def __init__(self, clock: Clock, per_minute: int = LEAVES_PER_MINUTE, size: int = LEAVE_CLIENTS) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.size = size
        self._tat: OrderedDict[str, float] = OrderedDict()
        """Address → its theoretical arrival time, least recently seen first."""

    def wait(self, client: str) -> float:
        """0.0 and the leave is counted; else the seconds until this address may leave again."""
        now = self.clock()
        tat = self._tat.pop(client, 0.0)
        verdict = algorithms.check_gcra(tat, now, self.per_minute, 60.0, None)
        if verdict.allowed:
            tat = algorithms.charge_gcra(tat, now, self.per_minute, 60.0)
        if tat > now:  # an address whose state no longer matters is not kept
            self._tat[client] = tat
            while len(self._tat) > self.size:
                self._tat.popitem(last=False)
        return 0.0 if verdict.allowed else verdict.reset_after


async def on_response(flow: http.HTTPFlow, loaded: Loaded) -> None:
    """The upstream's answer: take the command header off; on `release`, end the session (the
    store is told before the answer goes on, within store.timeout) and clear the cookie."""
    response = flow.response
    if response is None or COMMAND_HEADER not in response.headers:
        return
    commands = [c.strip().lower() for c in response.headers.get_all(COMMAND_HEADER)]
    del response.headers[COMMAND_HEADER]
    state = flowmeta.state(flow)
    found, state.session = state.session, None
    if "release" not in commands or found is None:
        return
    # Saved with the flow (`mitmdump -w`): a replay gives the recorded answer its command back.
    flowmeta.record(flow)["command"] = "release"
    room_name, session_id = found
    room = next((r for r in loaded.config.rooms if r.name == room_name), None)
    if room is None:  # the config changed under the request
        return
    state.set_cookie = None  # no renewal, nor a new session, on its way out
    await _release(loaded, room_name, session_id, "header")
    response.headers.add("Set-Cookie", _cleared(flow, loaded, room))


async def leave(
    flow: http.HTTPFlow,
    loaded: Loaded,
    cookies: Callable[[str], Sequence[str]],
    limiter: LeaveLimiter,
    keep_host: bool,
) -> None:
    """POST /.waitroom/leave: leave every room (or line) the request's cookies hold a place in.
    `keep_host`: mitmproxy's keep_host_header (else the visitor's Host is gone: see same_origin)."""
    request = flow.request
    if request.method != "POST":
        answer = http.Response.make(405, b'{"status": "error", "detail": "use POST"}\n')
        answer.headers.update(
            {"Allow": "POST", "Content-Type": "application/json", "Cache-Control": "no-store"}
        )
        early_answer.answer_now(flow, answer)
        return
    https = client_is_https(
        loaded.config.client_ip,
        tls=flow.client_conn.tls_established,
        forwarded_proto=request.headers.get("X-Forwarded-Proto"),
    )
    authority = request.host_header if keep_host or not flow.live else None
    if not same_origin(request, https=https, authority=authority):
        METRICS.capacity.leaves_refused.labels("origin").inc()
        early_answer.answer_now(
            flow, _refusal(403, "Forbidden", "a leave must come from this site's own pages")
        )
        return
    wait = limiter.wait(request_ip(loaded.config.client_ip, peer(flow), request.headers.get))
    if wait > 0:
        METRICS.capacity.leaves_refused.labels("rate").inc()
        retry_after = max(1, math.ceil(wait))
        problem = problem_answer(429, "too many leave requests from this address", retry_after=retry_after)
        # A browser's form POST gets the refusal page in the visitor's language; fetch gets JSON.
        page = refused(flow, loaded, problem, "rate", retry_after=retry_after)
        early_answer.answer_now(flow, to_response(page))
        return
    codec, now = loaded.decider.codec, loaded.decider.clock()
    user_agent = flow.request.headers.get("User-Agent", "")  # what tickets are bound to
    left, cleared = [], []
    for room in loaded.config.rooms:
        for token in cookies(cookie_name(loaded.config, room)):
            held = codec.verify(token, room.name, now) or codec.ticket(token, room.name, now, user_agent)
            session_id = held.session_id if held else codec.pending(token, room.name, now)
            if session_id is not None:
                await _release(loaded, room.name, session_id, "leave")
                left.append(room.name)
                cleared.append(_cleared(flow, loaded, room))
                break
    body = json.dumps({"status": "left", "rooms": left}).encode()
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", "Waitroom-Status": "left"}
    answer = http.Response.make(200, body, headers)
    for header in cleared:
        answer.headers.add("Set-Cookie", header)
    early_answer.answer_now(flow, answer)


async def _release(loaded: Loaded, room: str, session_id: str, source: str) -> None:
    try:
        await loaded.decider.activity.release(room, session_id, source)
    except (StoreError, Overloaded) as e:
        # Not honoured here any more, and the cookie goes; the place comes back when the session's
        # activity stops (session.ttl) or the ticket is dropped (abandon_after).
        log.warning("waitroom: a release in room %s could not reach the store (%s)", room, e)


def _refusal(status: int, title: str, detail: str) -> http.Response:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = {"Content-Type": "application/problem+json", "Cache-Control": "no-store"}
    return http.Response.make(status, body.encode(), headers)


def _cleared(flow: http.HTTPFlow, loaded: Loaded, room: RoomConfig) -> str:
    return set_cookie(cookie_name(loaded.config, room), "", 0, cookie_secure(flow, loaded))
