"""The simulation: a discrete-event loop on a virtual clock that drives the product's own deciders.

Events sit in one heap of `(time, seq, kind, what)`, `seq` breaking ties in the order they were
made; arrivals come from a sorted list beside it (first at equal times). The loop takes the next
event, moves the clock to its time and handles it: a visitor's request goes through a replica's
deciders (replica.py) and its answer schedules the visitor's next step; FLUSH sends a replica's
noted activity (the cap's count), as the proxy's background task does a moment after a request;
SAMPLE reads the line and the room from the store; HEARTBEAT keeps parked tickets (below); WAKE
resumes a request a `delay` rule held; CHANGE applies an operator's change on every replica;
RECORDED decides one recorded request as it was sent (`--as-recorded`). On the embedded store
nothing awaits for real, so a decision is plain calls; on Redis the calls are serial, in event order.

**Parking.** A visitor far back in a `fifo` line cannot be called for a while. Within d seconds
(d = (m − 1)·W + r, 0 < r ≤ W) the line calls at most `m·N − A` tickets, A being the admissions
of the last W seconds that still hold places at the end of the first r (N places per window W;
the tickets ahead already called hold places among those), plus one for each ticket ahead that
disappears because its holder stopped polling (the engine knows every visitor's patience in
advance, and counts those from above: class Leavers). While its position is beyond that, its polls
would only refresh its ticket, so they are not asked: their jitter is drawn as the page would (its
poll times stay what they would be), the store is told the ticket is still there
(`Store.heartbeat`, before `abandon_after` runs out), and its first poll past that horizon asks for
real (a probe), with the ticket its last skipped poll would have got. A visitor's last poll before
its patience runs out is always asked, so an abandoned ticket leaves the line when it would have.
In a `block` room the polls during a block change nothing and are skipped. Nothing parks across
an operator change, an outage or a closing, nor when a rate-limit rule covers the poll. What
parking can change: the line is pruned, and places are called, at the next real ask rather than at
a skipped one (the head of the line asks several times a second). `exact=True` (`--exact`) asks
every poll; the tests compare the two, visitor by visitor.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from waitroom.config.overrides import Overrides
from waitroom.config.schema import Config, RoomConfig
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.rooms.activity import active_ttl
from waitroom.rooms.estimate import newcomer_estimate
from waitroom.rooms.policy import queue_policy, room_policy
from waitroom.rooms.sessions import SessionCodec, cookie_name
from waitroom.sim.arrivals import Hit
from waitroom.sim.clock import VirtualClock
from waitroom.sim.replica import Cookies, Kind, Replica, Reply, Request, SimIds
from waitroom.sim.visitors import (
    JITTER_LOW,
    JITTER_SPAN,
    PAGE_RETRIES,
    Behaviour,
    CookieJar,
    Plan,
    draw_plan,
    page_poll_delay,
)
from waitroom.sim.visits import Visit
from waitroom.store.base import Overloaded, Store, StoreError
from waitroom.web.target import covers

ARRIVE, REQUEST, FLUSH, SAMPLE, HEARTBEAT, WAKE, CHANGE, RECORDED = range(8)

# Where a visitor is: what it sends next.
FIRST, POLL, RELOAD, PAGE, DONE = range(5)

HEARTBEAT_MARGIN = 2.0
"""A parked ticket is refreshed this long (and up to a second more) before it would go stale."""


@dataclass(frozen=True, slots=True)
class Change:
    """An operator's change at run time (`--change "AT ROOM FIELD=VALUE"`), as the admin API stores it."""

    at: float
    key: str
    """The override's key: `room:NAME:FIELD`."""
    value: str | None


class Transport(Protocol):
    """How a visitor's request reaches a wait room: this process's replicas (InProcess), or a real
    proxy over HTTP (http.py)."""

    async def send(self, visitor: Visitor, request: Request, replica: int, release: bool) -> Reply: ...


class Visitor:
    """One simulated visitor: its plan, its cookies, where it is, and what happened to it."""

    __slots__ = (
        "abandoned",
        "admitted",
        "cookies",
        "entry_ticket",
        "eta",
        "failures",
        "first_answer",
        "index",
        "jar",
        "joined",
        "last_seen",
        "lcg",
        "left",
        "page",
        "pages_from",
        "parked",
        "plan",
        "poll",
        "released",
        "request",
        "requests",
        "retries",
        "rng",
        "room",
        "session_id",
        "sessions",
        "skipped_at",
        "stage",
        "stash",
        "ticket",
        "visit",
        "wait_from",
        "wait_retry",
        "waiting",
    )

    def __init__(
        self, index: int, visit: Visit, plan: Plan, request: Request, room: RoomConfig | None
    ) -> None:
        self.index = index
        self.visit = visit
        self.plan = plan
        self.request = request
        """Its arrival's request: the page it waits for, and polls."""
        self.poll: Request | None = None
        self.room = room
        """The room of its arrival's request."""
        self.jar = CookieJar()
        self.cookies: Cookies | None = None
        """Its cookies as the deciders read them (made once)."""
        self.stage = FIRST
        self.page = 0
        self.pages_from = 0.0
        self.failures = 0
        self.retries = 0
        self.rng: random.Random | None = None
        self.lcg = plan.seed
        self.stash: float | None = None
        self.parked = False
        self.skipped_at = math.nan
        """When its last skipped poll was, while parked."""
        self.sessions: dict[str, list[float]] = {}
        """Room → its current session there (see Records.sessions)."""
        self.session_id: str | None = None
        """Its ticket's session id, while it waits in a `fifo` room."""
        self.ticket = 0
        """Its ticket's number (the last it held)."""
        self.entry_ticket = 0
        """The ticket it first came in with (0: none)."""
        self.joined = 0.0
        """When it got that ticket."""
        self.wait_retry = 1
        self.waiting = False
        self.first_answer = ""
        self.wait_from = math.nan
        """When it first saw the wait page (its arrival, unless a rule held it up)."""
        self.admitted = math.nan
        self.abandoned = math.nan
        self.released = math.nan
        self.last_seen = math.nan
        self.eta = -1
        """The wait (seconds) its first answer with a place in line showed; -1: none yet; -2: the
        page said it could not estimate the wait."""
        self.left = ""
        """Why it went without getting in: abandoned, gave up, closed, refused."""
        self.requests = 0

    def jitter(self) -> float:
        """Its next poll's draw (the one drawn ahead by parking, if any)."""
        if self.stash is not None:
            u, self.stash = self.stash, None
            return u
        if self.rng is None:
            self.rng = random.Random(self.plan.seed)
        return self.rng.random()


@dataclass(slots=True)
class Sample:
    at: float
    room: str
    line: int
    """A `fifo` room: live tickets; a `block` room: the visitors on the wait page."""
    called: int
    eta: int | None
    """The wait a newcomer would be shown (fifo)."""
    active: int | None
    """Sessions the store counts inside (a room with max_active)."""
    blocked_for: float


@dataclass
class Records:
    """Everything a run saw; figures.py turns it into numbers, report.py into words and charts."""

    visitors: list[Visitor] = field(default_factory=list)
    rooms: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(room, outcome) → requests."""
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(rule, outcome) → requests."""
    admissions: dict[str, list[float]] = field(default_factory=dict)
    """Room → the time of every admission (a visitor whose session ended may come in again)."""
    limits: dict[str, int] = field(default_factory=dict)
    """Room → the most `new_sessions` in force during the run (the config's, or an operator's)."""
    unchecked: dict[str, str] = field(default_factory=dict)
    """Room → why its guarantees cannot be checked over the whole run (an outage, an opened room)."""
    outages: list[tuple[float, float]] = field(default_factory=list)
    sessions: dict[str, list[list[float]]] = field(default_factory=dict)
    """Room → every session: [admitted at, last request, released at (nan: not released)]."""
    samples: list[Sample] = field(default_factory=list)
    requests: list[tuple[int, int, str, str, str, str]] = field(default_factory=list)
    """--as-recorded: (input, line, room, outcome, rule, rule outcome) for each request."""
    decisions: int = 0
    skipped_polls: int = 0
    probes: int = 0
    heartbeats: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    ended: float = 0.0
    wall: float = 0.0


class Engine:
    def __init__(
        self,
        config: Config,
        visits: Sequence[Visit],
        behaviour: Behaviour,
        *,
        store: Store,
        clock: VirtualClock,
        codec: SessionCodec,
        verifier: ClaimVerifier | None = None,
        crowd_request: Request | None = None,
        recorded: Sequence[Hit] = (),
        replicas: int = 1,
        seed: int = 1,
        exact: bool = False,
        changes: Sequence[Change] = (),
        quiet: Sequence[tuple[float, float]] = (),
        every: float = 10.0,
        transport: Transport | None = None,
        realtime: bool = False,
        trace: bool = False,
    ) -> None:
        """`visits`: who arrives (behaviour model); `recorded`: requests decided as they were sent
        (--as-recorded) instead. `quiet`: (start, end) moments no park may cross (an outage).
        `transport`/`realtime`: a real proxy, paced by the wall clock (http.py)."""
        self.config = config
        self.visits = visits
        self.recorded = recorded
        self.behaviour = behaviour
        self.store = store
        self.clock = clock
        self.codec = codec
        self.seed = seed
        self.crowd_request = crowd_request
        self.changes = sorted(changes, key=lambda c: c.at)
        self.every = every
        self.realtime = realtime
        self.records = Records()
        self.trace: list[dict[str, Any]] | None = [] if trace else None
        """With `trace`: every request sent, as a JSON line `--as-recorded` reads back (`visitor`:
        its key)."""
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._ids = SimIds(seed)
        self.replicas = [
            Replica(
                i,
                config,
                store,
                codec,
                verifier,
                clock,
                replicas=replicas,
                ids=self._ids,
                sleep=self.sleep,
                schedule_flush=self._flush_soon,
            )
            for i in range(replicas)
        ]
        self.transport: Transport = transport or InProcess(self)
        self.park = not exact and transport is None
        self._overrides: dict[str, str] = {}
        self._waiting_in: Counter[str] = Counter()
        self._active = 0
        self._slept: asyncio.Future[asyncio.Future[None]] | None = None
        self._sleeping: dict[
            asyncio.Future[None], tuple[asyncio.Task[Reply], Visitor, Request, Hit | None]
        ] = {}
        self._parked: dict[str, dict[str, Visitor]] = {}
        """Room → its parked tickets (session id → visitor), kept by HEARTBEAT."""
        self._beating: set[str] = set()
        self._logs: dict[str, list[float]] = {
            r.name: [] for r in config.rooms if r.queue == "fifo" and not quiet and not _modes_change(changes)
        }
        """Room → the times of its admissions within the window (for the parking bound)."""
        self._delay_rules = [r for r in config.rate_limits if r.action == "delay"]
        self._ruled: dict[tuple[str, str], bool] = {}
        self._leavers: dict[str, Leavers] = {}
        """Room → its impatient visitors (the parking bound counts them)."""
        self._max_new = {r.name: r.new_sessions for r in config.rooms}
        for change in self.changes:
            _, room, name = change.key.split(":", 2)
            if name == "new_sessions" and change.value is not None and room in self._max_new:
                self._max_new[room] = max(self._max_new[room], int(change.value))
        self._quiet = [(c.at, c.at) for c in self.changes] + list(quiet)
        self.records.limits = dict(self._max_new)
        self.records.outages = list(quiet)
        for change in self.changes:
            if change.key.endswith(":mode") and change.value == "open":
                self.records.unchecked[change.key.split(":")[1]] = "an operator opened the room"
        self._by_key: dict[str, Visitor] = {}
        self._arrivals: list[Visitor] = []
        self._activity_ttl = active_ttl(config.session.ttl)

    # --- the loop -----------------------------------------------------------------------------------

    def push(self, at: float, kind: int, what: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, what))

    async def run(self, until: float | None = None) -> Records:
        records = self.records
        records.started = self.clock.now
        wall = time.perf_counter()
        if self.recorded:
            for hit in self.recorded:
                self.push(hit.at, RECORDED, hit)
            self._active = len(self.recorded)
        else:
            self._plan_visitors()
        if not self.realtime:
            self.push(self.clock.now, SAMPLE)
        for change in self.changes:
            self.push(change.at, CHANGE, change)
        end = math.inf if until is None else until
        heap, arrivals, arrived = self._heap, self._arrivals, 0
        what: Any
        while self._active > 0:
            if arrived < len(arrivals) and (not heap or arrivals[arrived].visit.at <= heap[0][0]):
                at, kind, what = arrivals[arrived].visit.at, ARRIVE, arrivals[arrived]
                arrived += 1
            elif heap:
                at, _, kind, what = heapq.heappop(heap)
            else:
                break
            if at > end:
                break
            if self.realtime:
                await self._wall(at)
            elif at > self.clock.now:
                self.clock.now = at
            if kind == REQUEST:
                await self._request(what)
            elif kind == ARRIVE:
                self._arrive(what)
            elif kind == FLUSH:
                await what.decider.activity.flush()
            elif kind == HEARTBEAT:
                await self._heartbeat(what)
            elif kind == SAMPLE:
                await self._sample()
                self.push(at + self.every, SAMPLE)
            elif kind == WAKE:
                await self._wake(what)
            elif kind == CHANGE:
                self._change(what)
            elif kind == RECORDED:
                await self._recorded(what)
        records.ended = self.clock.now if until is None else min(self.clock.now, until)
        records.wall = time.perf_counter() - wall
        for v in records.visitors:  # what the figures do not need
            v.rng, v.jar, v.cookies, v.sessions = None, CookieJar(), None, {}
        return records

    async def _wall(self, at: float) -> None:
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        self.clock.now = max(self.clock.now, time.time())

    def _plan_visitors(self) -> None:
        router = self.replicas[0].decider.router
        impatient: dict[str, list[tuple[float, float]]] = {}
        for index, visit in enumerate(self.visits):
            plan = draw_plan(self.behaviour, self.seed, index)
            if visit.first is not None:
                hit = visit.first
                request = Request(
                    hit.method, hit.host, hit.path, hit.user_agent, hit.client, headers=hit.headers
                )
            else:
                assert self.crowd_request is not None, "a crowd visitor needs the crowd's request"
                base = self.crowd_request
                request = Request(
                    base.method, base.host, base.path, f"waitroom-sim/{index}", crowd_address(index)
                )
            room = router.route(request.host, request.path).room
            visitor = Visitor(index, visit, plan, request, room)
            self.records.visitors.append(visitor)
            self._active += 1
            if room is not None and room.queue == "fifo" and math.isfinite(plan.patience):
                impatient.setdefault(room.name, []).append((visit.at, visit.at + plan.patience))
        for room in self.config.rooms:
            if room.queue == "fifo":
                self._leavers[room.name] = Leavers(impatient.get(room.name, []), room.opens_at is None)
        # Arrivals are not put on the heap: the loop takes them in order (first at equal times).
        self._arrivals = sorted(self.records.visitors, key=lambda v: v.visit.at)

    def _arrive(self, v: Visitor) -> None:
        now = self.clock.now
        if v.visit.inside and v.room is not None:  # a genuine session from before the run
            token = self.codec.issue(v.room.name, self._ids(), now)[1]
            v.jar.set(cookie_name(self.config, v.room), token, self.codec.ttl, now)
            v.first_answer = "inside"
        self.push(now, REQUEST, v)

    # --- a visitor's request ---------------------------------------------------------------------------

    def _next_request(self, v: Visitor) -> tuple[Request, bool]:
        """What the visitor sends now, and whether the upstream will answer it with a release."""
        base = v.request
        if v.stage == POLL:
            if v.plan.no_js:  # the page refreshes itself: a page load
                return base, self._landing_releases(v)
            if v.poll is None:  # the same question every time
                v.poll = Request(
                    "GET", base.host, base.path, base.user_agent, base.client, True, base.headers
                )
            return v.poll, False
        if v.stage == RELOAD:
            reload = Request("GET", base.host, base.path, base.user_agent, base.client, headers=base.headers)
            return reload, self._landing_releases(v)
        if v.stage == PAGE and v.visit.first is not None:
            hit = v.visit.pages[v.page - 1][1]
            page = Request(hit.method, hit.host, hit.path, base.user_agent, base.client, headers=hit.headers)
            return page, hit.command == "release"
        if v.stage == PAGE:
            return base, v.plan.release and v.page >= len(v.plan.pauses)
        return base, self._landing_releases(v)

    def _landing_releases(self, v: Visitor) -> bool:
        return v.visit.first is None and v.plan.release and not v.plan.pauses

    def _replica(self, v: Visitor) -> int:
        n = len(self.replicas)
        if n == 1:
            return 0
        v.lcg = (v.lcg * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return (v.lcg >> 33) % n

    async def _request(self, v: Visitor) -> None:
        if v.stage == DONE:
            return
        request, release = self._next_request(v)
        replica = self._replica(v)
        if v.parked:
            self._unpark(v)
        if self._delay_rules and self._may_delay(request):
            reply = await self._held(self.transport.send(v, request, replica, release), v, request)
            if reply is None:
                return  # a delay rule holds it: a WAKE event resumes it
        else:
            reply = await self.transport.send(v, request, replica, release)
        self._answered(v, request, reply)

    async def _held(self, sending: Any, v: Visitor, request: Request, hit: Hit | None = None) -> Reply | None:
        """Run a request that may sleep (a `delay` rule) as a task: its answer, or None while it
        sleeps (its WAKE event carries it on)."""
        loop = asyncio.get_running_loop()
        self._slept = loop.create_future()
        task: asyncio.Task[Reply] = loop.create_task(sending)
        return await self._until_asleep(task, v, request, hit)

    async def _until_asleep(
        self, task: asyncio.Task[Reply], v: Visitor, request: Request, hit: Hit | None
    ) -> Reply | None:
        assert self._slept is not None
        slept: asyncio.Future[Any] = self._slept
        await asyncio.wait([task, slept], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        self._sleeping[self._slept.result()] = (task, v, request, hit)
        return None

    async def sleep(self, seconds: float) -> None:
        """How a `delay` rule holds a request: until a WAKE event `seconds` later."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.push(self.clock.now + max(0.0, seconds), WAKE, woken)
        if self._slept is not None and not self._slept.done():
            self._slept.set_result(woken)
        await woken

    async def _wake(self, woken: asyncio.Future[None]) -> None:
        task, v, request, hit = self._sleeping.pop(woken)
        self._slept = asyncio.get_running_loop().create_future()
        woken.set_result(None)
        reply = await self._until_asleep(task, v, request, hit)
        if reply is not None:
            if hit is not None:
                self._recorded_answer(hit, v, request, reply)
            else:
                self._answered(v, request, reply)

    def _may_delay(self, request: Request) -> bool:
        return any(
            covers(r.match.path_prefix, request.path)
            and r.match.host in (None, request.host)
            and (r.match.methods is None or request.method in r.match.methods)
            for r in self._delay_rules
        )

    def _count(self, v: Visitor, request: Request, reply: Reply) -> None:
        """What every answer leaves in the records and the jar."""
        now = self.clock.now
        records = self.records
        records.decisions += 1
        v.requests += 1
        if self.trace is not None:
            self.trace.append(
                {
                    "time": now,
                    "visitor": f"v{v.index}",
                    "method": request.method,
                    "host": request.host,
                    "path": request.path,
                    "user_agent": request.user_agent,
                    "client": request.client,
                    "poll": request.poll,
                    "status": reply.status,
                    "outcome": reply.outcome,
                    "answered": time.time() if self.realtime else now,
                }
            )
        v.last_seen = now
        for name, value, max_age in reply.cookies:
            v.jar.set(name, value, max_age, now)
        if reply.room is not None:
            records.rooms[(reply.room, reply.outcome or "")] += 1
            if reply.outcome in ("admitted", "session"):
                self._session(v, reply.room, now, reply.outcome == "admitted", reply.released)
            if reply.outcome == "admitted":
                records.admissions.setdefault(reply.room, []).append(now)
                log = self._logs.get(reply.room)
                if log is not None:
                    log.append(now)
            if reply.outcome == "admitted" and math.isnan(v.admitted):
                v.admitted = now
                v.entry_ticket = v.ticket
                if math.isnan(v.wait_from):
                    v.wait_from = now
                self._stop_waiting(v)
        # Counted as the proxy's metrics count them (addon/telemetry.count_limit).
        for rule in reply.shadow_limited:
            records.rules[(rule, "shadow_limited")] += 1
        if reply.rule is not None:
            shadowed = reply.rule_outcome == "shadow_limited"
            records.rules[(reply.rule, "allowed" if shadowed else reply.rule_outcome or "")] += 1
        if reply.error is not None:
            records.errors[reply.error] += 1
        if reply.released:
            v.released = now
        if not v.first_answer:
            v.first_answer = reply.kind.value
        if reply.kind is Kind.WAITING:
            if math.isnan(v.wait_from):
                v.wait_from = now
            if not v.waiting and math.isnan(v.admitted) and v.room is not None:
                v.waiting = True
                self._waiting_in[v.room.name] += 1
            if v.eta == -1 and reply.place is not None and reply.place.opens_in is None:
                seconds = reply.place.estimate.seconds
                v.eta = seconds if seconds is not None else -2  # "we can't estimate your wait yet"
            if reply.session_id is not None and reply.session_id != v.session_id and reply.cookies:
                v.session_id = reply.session_id
                v.joined = now
                room = v.room
                held = (
                    self.codec.ticket(reply.cookies[0][1], room.name, now, v.request.user_agent)
                    if room is not None
                    else None
                )
                v.ticket = held.issued_at if held is not None else 0

    def _session(self, v: Visitor, room: str, now: float, new: bool, released: bool) -> None:
        """The visitor's session in `room`: a new one at an admission (or its first request on a
        cookie from before the run), its last request, its release."""
        current = v.sessions.get(room)
        if new or current is None:
            current = v.sessions[room] = [now, now, math.nan]
            self.records.sessions.setdefault(room, []).append(current)
        current[1] = now
        if released:
            current[2] = now
            del v.sessions[room]

    def _stop_waiting(self, v: Visitor) -> None:
        if v.waiting and v.room is not None:
            v.waiting = False
            self._waiting_in[v.room.name] -= 1

    def _answered(self, v: Visitor, request: Request, reply: Reply) -> None:
        self._count(v, request, reply)
        stage, kind = v.stage, reply.kind
        if kind is Kind.WAITING:
            self._wait(v, reply)
        elif kind is Kind.ADMITTED or (
            stage == POLL and not v.plan.no_js and kind in (Kind.FORWARDED, Kind.CLOSED)
        ):
            # The page's poll: in (or an answer that is not the wait room's, which it follows): it
            # reloads itself.
            v.stage = RELOAD
            self.push(self.clock.now, REQUEST, v)
        elif kind in (Kind.LIMITED, Kind.REFUSED, Kind.FAILED):
            self._trouble(v, reply)
        elif kind is Kind.CLOSED:
            self._done(v, "closed")
        else:  # forwarded: the landing page (first, reloaded, refreshed), or the next page
            v.retries = 0
            if stage != PAGE:
                v.page = 0
                v.pages_from = self.clock.now
            self._next_page(v)

    def _wait(self, v: Visitor, reply: Reply) -> None:
        now = self.clock.now
        v.stage = POLL
        v.wait_retry = reply.retry_after or v.wait_retry
        v.failures = 0
        deadline = v.wait_from + v.plan.patience
        at = now + self._delay(v)
        if at > deadline:
            self._abandon(v, deadline)
            return
        if self.park and v.room is not None and not self._ruled_out(v):
            at = self._park(v, reply, at, deadline)
        self.push(at, REQUEST, v)

    def _jittered(self, v: Visitor) -> bool:
        return not v.plan.no_js and self.behaviour.poll == "page"

    def _delay(self, v: Visitor) -> float:
        if not self._jittered(v):
            return float(max(1, v.wait_retry))  # the page's refresh, or Retry-After to the letter
        return page_poll_delay(v.wait_retry, 0, v.jitter())

    def _trouble(self, v: Visitor, reply: Reply) -> None:
        now = self.clock.now
        if v.stage == POLL and not v.plan.no_js:  # the page's `trouble()`: backs off, stays
            v.failures += 1
            at = now + page_poll_delay(v.wait_retry, v.failures, v.jitter())
            if at > v.wait_from + v.plan.patience:
                self._abandon(v, v.wait_from + v.plan.patience)
            else:
                self.push(at, REQUEST, v)
            return
        v.retries += 1
        if v.retries > PAGE_RETRIES:
            self._done(v, "refused" if reply.kind is Kind.REFUSED else "gave up")
        else:
            self.push(now + max(1, reply.retry_after), REQUEST, v)

    def _next_page(self, v: Visitor) -> None:
        if v.visit.first is not None:
            pages = v.visit.pages
            if v.page >= len(pages):
                self._done(v, "")
                return
            at = max(self.clock.now, v.pages_from + pages[v.page][0])
        else:
            if v.page >= len(v.plan.pauses):
                self._done(v, "")
                return
            at = self.clock.now + v.plan.pauses[v.page]
        v.page += 1
        v.stage = PAGE
        self.push(at, REQUEST, v)

    def _abandon(self, v: Visitor, at: float) -> None:
        v.abandoned = at
        self._done(v, "abandoned")

    def _done(self, v: Visitor, why: str) -> None:
        self._stop_waiting(v)
        if why and math.isnan(v.admitted):
            v.left = why
        v.stage = DONE
        self._active -= 1

    # --- --as-recorded ----------------------------------------------------------------------------------

    async def _recorded(self, hit: Hit) -> None:
        """One recorded request, decided at its time with its visitor's cookies: the recorded
        Cookie header (flows), else the cookies this run gave the visitor (logs)."""
        self._active -= 1
        v = self._by_key.get(hit.visitor)
        if v is None:
            request = Request(hit.method, hit.host, hit.path, hit.user_agent, hit.client, headers=hit.headers)
            plan = draw_plan(self.behaviour, self.seed, len(self.records.visitors))
            room = self.replicas[0].decider.router.route(hit.host, hit.path).room
            v = self._by_key[hit.visitor] = Visitor(
                len(self.records.visitors), Visit(hit.at, hit), plan, request, room
            )
            v.stage = -1
            self.records.visitors.append(v)
        request = Request(
            hit.method, hit.host, hit.path, hit.user_agent, hit.client, bool(hit.poll), hit.headers
        )
        # A flow's recorded Cookie header as recorded; a log's visitor keeps the cookies this run gave.
        cookies = recorded_cookies(hit.cookie_header) if hit.flow else _jar_reader(v.jar, self.clock)
        replica = self.replicas[self._replica(v)]
        sending = replica.answer(
            request, cookies, release=hit.command == "release", recorded_ids=hit.recorded_ids
        )
        if self._delay_rules and self._may_delay(request):
            reply = await self._held(sending, v, request, hit)
            if reply is None:
                return
        else:
            reply = await sending
        self._recorded_answer(hit, v, request, reply)

    def _recorded_answer(self, hit: Hit, v: Visitor, request: Request, reply: Reply) -> None:
        self._count(v, request, reply)
        row = (
            hit.source,
            hit.line,
            reply.room or "",
            reply.outcome or "",
            reply.rule or "",
            reply.rule_outcome or "",
        )
        self.records.requests.append(row)

    # --- parking ---------------------------------------------------------------------------------------

    def _ruled_out(self, v: Visitor) -> bool:
        """A rate-limit rule covers its poll: every poll counts there, none is skipped."""
        key = (v.request.host, v.request.path)
        found = self._ruled.get(key)
        if found is None:
            found = self._ruled[key] = any(
                covers(r.match.path_prefix, v.request.path) and r.match.host in (None, v.request.host)
                for r in self.config.rate_limits
            )
        return found

    def _park(self, v: Visitor, reply: Reply, at: float, deadline: float) -> float:
        """The time of the visitor's next real poll: `at`, or later if it parks."""
        room = v.room
        assert room is not None
        now = self.clock.now
        if room.queue == "fifo":
            horizon = self._fifo_horizon(v, room, reply, now, at)
        elif reply.blocked_for > 0:  # a block: every ask before its end is refused, changing nothing
            horizon = now + reply.blocked_for - 1e-6
        else:
            return at
        horizon = self._quiet_before(horizon, now)
        if at > horizon:
            return at
        # Skip its polls up to the horizon, drawing their jitter as the page would; its last poll
        # before its patience runs out is asked (its ticket must leave the line when it would).
        jittered, retry = self._jittered(v), float(max(1, v.wait_retry))
        skipped, last = 0, math.nan
        if jittered:  # the hot loop of a long run: as few operations per skipped poll as can be
            if v.rng is None:
                v.rng = random.Random(v.plan.seed)
            draw = v.rng.random
            u = v.stash if v.stash is not None else draw()
            while at <= horizon:
                following = at + retry * (JITTER_LOW + JITTER_SPAN * u)  # as page_poll_delay
                if following > deadline:
                    break  # `at` is its last poll: asked
                skipped += 1
                last, at = at, following
                u = draw()
            v.stash = u  # drawn for the poll after `at`: its own, kept for its real answer
        else:
            while at <= horizon and at + retry <= deadline:
                skipped += 1
                last, at = at, at + retry
        if not skipped:
            return at
        self.records.skipped_polls += skipped
        self.records.probes += 1
        v.parked = True
        v.skipped_at = last
        if room.queue == "fifo" and v.session_id is not None:
            parked = self._parked.setdefault(room.name, {})
            parked[v.session_id] = v
            if room.name not in self._beating:
                self._beating.add(room.name)
                self.push(now + room.abandon_after_seconds - HEARTBEAT_MARGIN, HEARTBEAT, room)
        return at

    def _fifo_horizon(
        self, visitor: Visitor, room: RoomConfig, reply: Reply, now: float, poll: float
    ) -> float:
        """Until when nobody can call this visitor's ticket.

        Within d seconds the line calls at most `m·N − A(now + r − W, now]` tickets (m = ⌈d/W⌉,
        d = (m − 1)·W + r, A: admissions of the room in that span, which still hold places of the
        window), and its tickets ahead that are called already hold places among those; so a
        ticket at `position` is not called while `position ≥ m·N − A(…) + D`, D counting the
        tickets ahead that may disappear meanwhile (their holders' patience ran out)."""
        place = reply.place
        if place is None or reply.session_id is None:
            return now
        if place.opens_in is not None:  # the pre-queue: nobody is called before the opening
            return now + place.opens_in - 1.0
        n, window, position = self._max_new[room.name], room.window, place.position
        leavers = self._leavers.get(room.name)
        since = now - room.abandon_after_seconds - room.grace_seconds - 1.0
        ahead_of = now + 1.3 * room.retry_after_seconds + 1.0
        gone = leavers.gone(visitor.joined, since) if leavers is not None else (lambda _upto: 0)
        log = self._log_of(room, now)
        entries, oldest = len(log), now - window

        def need(d: float) -> int:
            m = max(1, math.ceil(d / window))
            start = oldest + d - (m - 1) * window
            recent = entries - bisect.bisect_right(log, start) if entries and start < now else 0
            return m * n - recent + gone(ahead_of + d)

        if need(poll - now) > position:  # not even its next poll can be skipped
            return now
        # Whole windows: from the most there could be (nobody ahead leaving), down by galloping.
        high = max(0, (position + len(log)) // n)
        if need(high * window) <= position:
            low = high
        else:
            step, low = 1, high
            while low > 0 and need(low * window) > position:
                low, step = max(0, low - step), step * 2
            high = min(high, low + step // 2 if step > 1 else low)
            while low < high:  # need(low·W) fits, need((high + 1)·W) does not
                mid = (low + high + 1) // 2
                if need(mid * window) <= position:
                    low = mid
                else:
                    high = mid - 1
        d, part = low * window, window / 2
        for _ in range(5):  # and part of the next one
            if need(d + part) <= position:
                d += part
            part /= 2
        horizon = now + d
        if room.closes_at is not None:
            horizon = min(horizon, room.closes_at.timestamp() - 1.0)
        return horizon

    def _log_of(self, room: RoomConfig, now: float) -> list[float]:
        """The room's admissions still in its window (the store's log, as this run made it); empty
        when the run cannot know it exactly (an outage's or an operator's admissions)."""
        log = self._logs.get(room.name)
        if log is None:
            return []
        cutoff = now - room.window
        drop = bisect.bisect_right(log, cutoff)
        if drop:
            del log[:drop]
        return log

    def _quiet_before(self, horizon: float, now: float) -> float:
        for start, end in self._quiet:
            if start - 1.0 <= now <= end + 1.0:
                return now
            if now < start:
                horizon = min(horizon, start - 1.0)
        return horizon

    async def _heartbeat(self, room: RoomConfig) -> None:
        """Every parked ticket of the room is still there: one store call, before any could go
        stale (a parked visitor's last real ask was at most one period ago)."""
        parked = self._parked.get(room.name)
        if not parked:
            self._beating.discard(room.name)
            return
        with contextlib.suppress(StoreError, Overloaded):  # an outage: nothing parks across one
            await self.store.heartbeat(queue_policy(room), list(parked))
        self.records.heartbeats += len(parked)
        self.push(self.clock.now + room.abandon_after_seconds - HEARTBEAT_MARGIN, HEARTBEAT, room)

    def _unpark(self, v: Visitor) -> None:
        """The probe: the jar holds the ticket the last skipped poll would have set."""
        v.parked = False
        room, skipped = v.room, v.skipped_at
        v.skipped_at = math.nan
        if room is None or room.queue != "fifo" or v.session_id is None:
            return
        self._parked.get(room.name, {}).pop(v.session_id, None)
        if math.isnan(skipped):
            return
        hold = room.abandon_after_seconds + room.grace_seconds
        token = self.codec.issue_ticket(
            room.name, v.session_id, v.ticket, skipped + hold, v.request.user_agent
        )
        v.jar.set(cookie_name(self.config, room), token, max(1, int(hold)), skipped)

    # --- the store, sampled; activity; operators' changes -----------------------------------------------

    async def _sample(self) -> None:
        now = self.clock.now
        overrides = self.replicas[0].decider.overrides
        for room in self.config.rooms:
            effective = overrides.room(room)
            try:
                if room.queue == "fifo":
                    state = await self.store.queue_state(queue_policy(effective, ttl=self._activity_ttl))
                    eta: int | None = newcomer_estimate(state, effective).seconds
                    line, called = state.length, state.called
                else:
                    eta, line, called = None, max(0, self._waiting_in[room.name]), 0
                found = await self.store.room_state(room_policy(effective, ttl=self._activity_ttl))
            except (StoreError, Overloaded):
                continue
            active = found.active if room.max_active else None
            self.records.samples.append(Sample(now, room.name, line, called, eta, active, found.blocked_for))

    def _flush_soon(self, replica: Replica) -> None:
        self.push(self.clock.now, FLUSH, replica)

    def _change(self, change: Change) -> None:
        if change.value is None:
            self._overrides.pop(change.key, None)
        else:
            self._overrides[change.key] = change.value
        overrides = Overrides(dict(self._overrides))
        for replica in self.replicas:
            replica.set_overrides(overrides)


class Leavers:
    """When the tickets of a room's impatient visitors can disappear, counted from above.

    A visitor whose patience runs out at A stops polling; its ticket leaves the line (dropped, or
    lapsed if it was called meanwhile) within about `abandon_after + grace` of A. `gone(joined,
    since, upto)` counts the visitors that arrived by `joined` whose patience runs out in
    (since, upto]: every ticket ahead of one issued at `joined` belongs to a visitor that arrived
    before it. The counts come from prefix sums over a grid of (arrival, end of patience), rounded
    outwards to its cells, so a query costs the same however many visitors there are."""

    CELLS = 400

    def __init__(self, pairs: Sequence[tuple[float, float]], by_arrival: bool) -> None:
        """`pairs`: (arrival, end of patience). `by_arrival`: tickets are in arrival order (not a
        pre-queue, whose order is drawn): only earlier arrivals can be ahead."""
        self.by_arrival = by_arrival
        self.ends = sorted(end for _, end in pairs)
        self.origin, self.cell, self.size = 0.0, 1.0, 1
        self.grid: list[list[int]] = [[0]]
        if not pairs or not by_arrival:
            return
        self.origin = min(min(a for a, _ in pairs), self.ends[0])
        span = max(max(a for a, _ in pairs), self.ends[-1]) - self.origin
        self.cell = max(5.0, span / (self.CELLS - 1))
        self.size = size = int(span / self.cell) + 2
        grid = [[0] * size for _ in range(size)]
        for arrival, end in pairs:
            grid[self._cell(arrival)][self._cell(end)] += 1
        for i in range(size):  # prefix sums over both axes
            row, total = grid[i], 0
            above = grid[i - 1] if i else [0] * size
            for j in range(size):
                total += row[j]
                row[j] = total + above[j]
        self.grid = grid

    def _cell(self, at: float) -> int:
        return max(0, min(self.size - 1, int((at - self.origin) // self.cell)))

    def gone(self, joined: float, since: float) -> Callable[[float], int]:
        """`upto` → the count, for one ticket and one moment (the grid's row chosen once)."""
        if not self.by_arrival:
            ends = self.ends
            before = bisect.bisect_right(ends, since)
            return lambda upto: bisect.bisect_right(ends, upto) - before
        row, origin, cell, last = self.grid[self._cell(joined)], self.origin, self.cell, self.size - 1
        low = self._cell(since) - 1  # the cell holding `since` included: from above
        before = row[low] if low >= 0 and since >= origin else 0

        def count(upto: float) -> int:
            if upto < origin:
                return 0
            return row[min(last, int((upto - origin) // cell))] - before

        return count


def _modes_change(changes: Sequence[Change]) -> bool:
    """An operator opens a room (its admissions are not counted) or changes its numbers."""
    return any(c.key.endswith((":mode", ":new_sessions")) for c in changes)


def recorded_cookies(header: str) -> Cookies:
    """A recorded Cookie header, read as the proxy reads one (addon/request.cookie_reader)."""
    pairs = []
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep:
            pairs.append((key.strip(), value.strip().strip('"')))

    def values(name: str) -> Sequence[str]:
        return [v for k, v in pairs if k == name]

    return values


def _jar_reader(jar: CookieJar, clock: VirtualClock) -> Cookies:
    def values(name: str) -> Sequence[str]:
        return jar.values(name, clock.now)

    return values


def crowd_address(index: int) -> str:
    """A crowd visitor's address: 10.a.b.c, one of its own (16M of them)."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


class InProcess:
    """The engine's replicas, in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def send(self, visitor: Visitor, request: Request, replica: int, release: bool) -> Reply:
        cookies = visitor.cookies
        if cookies is None:
            cookies = visitor.cookies = _jar_reader(visitor.jar, self.engine.clock)
        return await self.engine.replicas[replica].answer(request, cookies, release=release)
