"""One simulated proxy replica: the product's own deciders, asked in the gate's order.

A replica holds what a running proxy holds per process (addon/runtime.py builds the same parts):
a `Decider` and a `RateLimiter` over the shared store, with their own caches, activity notes and
failure-policy stores. `answer` takes a request the way the gate does (addon/gate.py: bypass, then
the rate limits, then the room unless a rule refused or rerouted the request or it is a CORS
preflight) and says what the visitor would get, without mitmproxy: the status, the cookies the
answer sets (as addon/apply.py sets them), and the decisions behind it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from waitroom.config.overrides import Overrides
from waitroom.config.schema import Config, RoomConfig
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.ratelimit.decision import LimitDecision, LimitOutcome
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.rooms.decider import Decider, Decision, Outcome
from waitroom.rooms.routing import Route
from waitroom.rooms.sessions import SessionCodec, cookie_name
from waitroom.store.base import Clock, Overloaded, Store, StoreError
from waitroom.web.request import RequestFacts
from waitroom.web.wait import Place

LEAVE_PATH = "/.waitroom/leave"
"""The path the wait page (or the service) posts to leave a room (addon/release.py)."""


class Kind(StrEnum):
    """What the visitor's browser gets back."""

    FORWARDED = "forwarded"
    """The upstream's answer: no room or rule held the request back."""
    WAITING = "waiting"
    """The wait answer (the page, or its JSON for a poll)."""
    ADMITTED = "admitted"
    """The proxy's own answer to the wait page's poll, once in: the page reloads."""
    LIMITED = "limited"
    """429 from a rate-limit rule."""
    REFUSED = "refused"
    """429: no ticket, the address had its `tickets_per_ip` this minute."""
    CLOSED = "closed"
    """The room's closed answer (after `closes_at`)."""
    FAILED = "failed"
    """503: the decision failed (a product bug, counted), or the store failed under `closed`."""
    LEFT = "left"
    """The answer to `POST /.waitroom/leave`."""


@dataclass(slots=True)
class Request:
    method: str
    host: str
    path: str
    """The routing form of the target (web/target.judge_target)."""
    user_agent: str
    client: str
    """The TCP peer the proxy would see."""
    poll: bool = False
    """The wait page's poll: `Waitroom-Poll: 1` and `Accept: application/json`."""
    headers: dict[str, str] | None = None
    """Other request headers, lower-case names (X-Forwarded-For, a rule's key header)."""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        if lower == "user-agent":
            return self.user_agent
        if self.poll and lower == "waitroom-poll":
            return "1"
        if self.poll and lower == "accept":
            return "application/json"
        return self.headers.get(lower) if self.headers else None


@dataclass(slots=True)
class Reply:
    kind: Kind
    status: int
    retry_after: int = 0
    blocked_for: float = 0.0
    place: Place | None = None
    room: str | None = None
    outcome: str | None = None
    """The room's decision (rooms.decider.Outcome), when a room decided."""
    rule: str | None = None
    """The rule whose outcome this is (none: only shadow rules matched)."""
    rule_outcome: str | None = None
    """The rate limits' outcome (ratelimit.decision.LimitOutcome), when a rule matched."""
    shadow_limited: tuple[str, ...] = ()
    """Shadow rules that would have refused."""
    session_id: str | None = None
    cookies: list[tuple[str, str, int]] = field(default_factory=list)
    """Set-Cookie: (name, value, max-age); max-age 0 deletes."""
    delayed: float = 0.0
    released: bool = False
    """The session ended with this answer (the upstream's release, or the leave path)."""
    error: str | None = None


Cookies = Callable[[str], Sequence[str]]


def room_cookie(decision: Decision, config: Config, session_ttl: int) -> tuple[str, str, int] | None:
    """The cookie an answer sets for a room decision, as addon/apply.py sets it."""
    room = decision.room
    if room is None:
        return None
    cookie, max_age = decision.cookie, session_ttl
    if cookie is None and decision.pending is not None:
        # A pending token lives as long as a recorded admission can be in the window; a ticket as
        # long as the line can hold it.
        hold = room.abandon_after_seconds + room.grace_seconds if room.queue == "fifo" else room.window
        cookie, max_age = decision.pending, max(1, int(hold))
    if cookie is None:
        return None
    return cookie_name(config, room), cookie, max_age


class SimIds:
    """Session ids a run gives out: numbered, so that a run with the same seed is the same run."""

    def __init__(self, seed: int) -> None:
        self._prefix = f"s{seed}-"
        self._next = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._next)}"


class Replica:
    """A proxy process's deciders over the shared store."""

    def __init__(
        self,
        index: int,
        config: Config,
        store: Store,
        codec: SessionCodec,
        verifier: ClaimVerifier | None,
        clock: Clock,
        *,
        replicas: int,
        ids: Callable[[], str],
        sleep: Callable[[float], Awaitable[None]],
        schedule_flush: Callable[[Replica], None],
    ) -> None:
        self.index = index
        self.config = config
        self.clock = clock
        self.decider = Decider(config, store, codec, clock, lambda: replicas)
        self.decider.new_id.fresh = ids
        self.decider.activity.schedule_flush = lambda: schedule_flush(self)
        # No line view (rooms/line_view.py): its heartbeats flush on the event loop's own timers,
        # not on the virtual clock; every poll the simulator does not park asks the store.
        self.decider.line.view = None
        self.limiter = RateLimiter(config, store, verifier, clock, lambda: replicas, sleep)
        self.errors = 0
        self._routes: dict[tuple[str, str], Route] = {}

    def set_overrides(self, overrides: Overrides) -> None:
        self.decider.set_overrides(overrides)
        self.limiter.set_overrides(overrides)

    def _route(self, host: str, path: str) -> Route:
        # Visitors ask for the same few pages over and over: each is routed once per config.
        key = (host, path)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= 10_000:
                self._routes.clear()
            route = self._routes[key] = self.decider.router.route(host, path)
        return route

    @property
    def codec(self) -> SessionCodec:
        return self.decider.codec

    async def answer(
        self, request: Request, cookies: Cookies, *, release: bool = False, recorded_ids: Sequence[str] = ()
    ) -> Reply:
        """What `request` gets. `release`: the upstream's answer carries `Waitroom-Command:
        release` (the visitor's last page, or a recorded answer that did). `recorded_ids`: the
        session ids a recorded answer gave out, handed to the deciders as flow replay does."""
        if request.path == LEAVE_PATH:
            return await self._leave(request, cookies)
        facts = RequestFacts(
            request.host, request.path, request.method, request.client, request.header, 0.0, cookies
        )
        if recorded_ids:
            self.decider.new_id.recorded = list(recorded_ids)
        limit: LimitDecision | None = None
        decision: Decision | None = None
        try:
            route = self._route(request.host, request.path)
            if route.bypass:
                return Reply(Kind.FORWARDED, 200)
            if self.limiter.rules:
                limit = await self.limiter.decide(facts, self.limiter.matching(facts))
            if (
                (limit is None or not limit.ends_request)
                and request.method != "OPTIONS"
                and route.room is not None
            ):
                decision = await self.decider.decide(facts, route)
        except Exception as e:  # the gate answers closed (addon/gate.py): never a free pass
            self.errors += 1
            return Reply(Kind.FAILED, 503, retry_after=1, error=type(e).__name__)
        finally:
            if recorded_ids:
                self.decider.new_id.recorded = []
        reply = self._limit_reply(limit)
        if reply is not None:
            return reply
        reply = Reply(Kind.FORWARDED, 200)
        if limit is not None and limit.outcome is not LimitOutcome.NONE:
            reply.rule = limit.rule.name if limit.rule is not None else None
            reply.rule_outcome, reply.delayed = limit.outcome.value, limit.delayed_for
            reply.shadow_limited = limit.shadow_limited
        if decision is None or decision.room is None:
            return reply
        room = decision.room
        reply.room, reply.outcome, reply.session_id = room.name, decision.outcome.value, decision.session_id
        cookie = room_cookie(decision, self.config, self.codec.ttl)
        if cookie is not None:
            reply.cookies.append(cookie)
        self._room_reply(reply, request, room, decision)
        in_session = decision.outcome in (Outcome.SESSION, Outcome.ADMITTED)
        if release and reply.kind is Kind.FORWARDED and in_session and decision.session_id is not None:
            await self._release(room.name, decision.session_id, "header")
            reply.cookies = [(cookie_name(self.config, room), "", 0)]
            reply.released = True
        return reply

    def _limit_reply(self, limit: LimitDecision | None) -> Reply | None:
        if limit is None or limit.rule is None or not limit.ends_request:
            return None
        outcome = limit.outcome.value
        kind, status = (Kind.LIMITED, 429) if limit.outcome is LimitOutcome.LIMITED else (Kind.FORWARDED, 200)
        reply = Reply(
            kind, status, limit.retry_after, rule=limit.rule.name, rule_outcome=outcome
        )  # or rerouted
        reply.shadow_limited = limit.shadow_limited
        return reply

    def _room_reply(self, reply: Reply, request: Request, room: RoomConfig, decision: Decision) -> None:
        match decision.outcome:
            case Outcome.CLOSED:
                reply.kind, reply.status = Kind.CLOSED, room.closed_status
            case Outcome.REFUSED:
                reply.kind, reply.status, reply.retry_after = Kind.REFUSED, 429, decision.retry_after
            case Outcome.WAITING:
                reply.kind, reply.status = Kind.WAITING, room.status
                reply.retry_after, reply.blocked_for = room.retry_after_seconds, decision.blocked_for
                reply.place = decision.place
            case _ if request.poll and request.method == "GET":
                reply.kind = Kind.ADMITTED  # the proxy answers the page's poll itself

    async def _leave(self, request: Request, cookies: Cookies) -> Reply:
        """POST /.waitroom/leave, as addon/release.py: every room the cookies hold a place in."""
        if request.method != "POST":
            return Reply(Kind.LEFT, 405)
        codec, now, reply = self.codec, self.clock(), Reply(Kind.LEFT, 200)
        for room in self.config.rooms:
            name = cookie_name(self.config, room)
            for token in cookies(name):
                held = codec.verify(token, room.name, now) or codec.ticket(
                    token, room.name, now, request.user_agent
                )
                session_id = held.session_id if held else codec.pending(token, room.name, now)
                if session_id is not None:
                    await self._release(room.name, session_id, "leave")
                    reply.cookies.append((name, "", 0))
                    reply.released = True
                    break
        return reply

    async def _release(self, room: str, session_id: str, source: str) -> None:
        # As the proxy: not honoured here any more either way; the place comes back by itself.
        with contextlib.suppress(StoreError, Overloaded):
            await self.decider.activity.release(room, session_id, source)
