"""The admission decision for one request, independent of mitmproxy.

classify (room? bypass?) → session cookie (no I/O) → the store (one round trip) → a Decision.
The addon turns the Decision into a forwarded request or an answer; the flow-replay harness and the
tests call this directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from waitroom.active import Activity, active_ttl
from waitroom.config import Config, LiveReplicas, RoomConfig, StoreErrorPolicy, unknown_replicas
from waitroom.fallback import StoreFallback
from waitroom.metrics import METRICS
from waitroom.overrides import Overrides, RoomMode
from waitroom.queue import Line
from waitroom.responses import Place
from waitroom.routing import Route, Router
from waitroom.sessions import SessionCodec, SessionIds
from waitroom.store import Admission, Clock, MemoryStore, Overloaded, RoomPolicy, Store


class Outcome(StrEnum):
    NO_ROOM = "no_room"
    """No room covers the request: it passes untouched."""
    BYPASS = "bypass"
    """A bypass prefix: never queued."""
    SESSION = "session"
    """A valid session cookie for this room: forwarded, no store call."""
    ADMITTED = "admitted"
    """A new visitor the window had room for: forwarded with a new session cookie."""
    WAITING = "waiting"
    """A new visitor while the room is blocked (or who just started the block): the wait page."""
    CLOSED = "closed"
    """A new visitor after the room's `closes_at` (with `after_close: page`): the closed answer."""
    REFUSED = "refused"
    """No ticket: the visitor's address had its `tickets_per_ip` this minute (429)."""


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    room: RoomConfig | None = None
    cookie: str | None = None
    """A session token to send in Set-Cookie (new session, or a renewal); None to send nothing."""
    blocked_for: float = 0.0
    """Seconds the room's block still lasts, for the wait page."""
    block_started: bool = False
    degraded: StoreErrorPolicy | None = None
    """Set when the store failed and this failure policy decided instead."""
    shed: str | None = None
    """Set when the proxy was too busy to get the store's answer in time: the reason (see guard.py)."""
    pending: str | None = None
    """A pending token (or, in a `fifo` room, a ticket) to send in Set-Cookie with a wait answer:
    the store may have admitted this visitor although its answer was lost, and the next request
    asks again with the same id."""
    place: Place | None = None
    """A `fifo` room: where the waiting visitor stands in the line, when the store could tell."""
    session_id: str | None = None
    """The visitor's session (SESSION, ADMITTED) or ticket (WAITING in a `fifo` room): what a
    release ends."""
    retry_after: int = 0
    """REFUSED: seconds until the address may get a ticket again."""


def cookie_name(config: Config, room: RoomConfig) -> str:
    """One cookie per room, so a visitor in two rooms keeps both sessions."""
    return f"{config.session.cookie}_{room.name}"


def room_policy(room: RoomConfig, replicas: int = 1, ttl: float = 0.0) -> RoomPolicy:
    """The store's view of a room; with `replicas` > 1 each one gets its share of the limits.
    `ttl`: sessions idle this long no longer count against max_active (active.active_ttl)."""
    return RoomPolicy(
        name=room.name,
        new_sessions=max(1, room.new_sessions // replicas),
        window=room.window,
        block_for=room.block_for,
        max_active=max(1, room.max_active // replicas) if room.max_active else 0,
        ttl=ttl,
    )


class Decider:
    def __init__(
        self,
        config: Config,
        store: Store,
        codec: SessionCodec,
        clock: Clock,
        live_replicas: LiveReplicas = unknown_replicas,
    ) -> None:
        self.config = config
        self.store = store
        self.codec = codec
        self.clock = clock
        self.router = Router(config)
        self.overrides = Overrides()
        """The run-time settings (admin API changes); see set_overrides."""
        self.fallback = StoreFallback(config.store, clock, live_replicas)
        """Decides by `store.on_error` while the store fails."""
        self.new_id = SessionIds()
        """New session ids (a replay hands over its recording's)."""
        self.sync = LocalSync(store, self.fallback, clock)
        self.activity = Activity(store, active_ttl(config.session.ttl), clock)
        """Sessions' activity for the caps, and releases."""
        self.line = Line(config, store, codec, clock, self.sync, self.new_id)
        """The `fifo` rooms' decisions."""

    def set_overrides(self, overrides: Overrides) -> None:
        """New run-time settings, replaced whole (never mutated); the limiter takes them alike."""
        self.overrides = overrides

    async def decide(
        self,
        host: str,
        path: str,
        cookies: Callable[[str], Sequence[str]],
        waited: float = 0.0,
        route: Route | None = None,
        client: Callable[[], str] | None = None,
        user_agent: str = "",
    ) -> Decision:
        """`host` and `path` normalised (see routing); `cookies(name)` gives every value the
        request carries under that name (a browser may send a stale one beside the fresh one);
        `waited`: seconds the request has already spent in the proxy before this decision;
        `route`: the request's route, when the caller classified it already; `client()`: the
        visitor's address (see identity.client_ip), asked only for `tickets_per_ip`; `user_agent`:
        what a `fifo` room's tickets are bound to."""
        if route is None:
            route = self.router.route(host, path)
        if route.bypass:
            return Decision(Outcome.BYPASS)
        room = route.room
        if room is None:
            return Decision(Outcome.NO_ROOM)

        now = self.clock()
        tokens = cookies(cookie_name(self.config, room))
        session = next((s for t in tokens if (s := self.codec.verify(t, room.name, now)) is not None), None)
        if session is not None and not self.activity.released(room.name, session.session_id):
            if room.max_active:
                self.activity.seen(room.name, session.session_id, now)  # no I/O: batched
            renewed = self.codec.renew(session, now)[1] if self.codec.needs_renewal(session, now) else None
            return Decision(Outcome.SESSION, room, cookie=renewed, session_id=session.session_id)

        effective = self.overrides.room(room)
        if effective.closes_at is not None and now >= effective.closes_at.timestamp():
            return Decision(Outcome.NO_ROOM) if room.after_close == "pass" else Decision(Outcome.CLOSED, room)
        mode = self.overrides.room_mode(room.name)
        if room.queue == "fifo" and mode is not RoomMode.OPEN:
            return await self._line(room, tokens, mode, waited, client, user_agent)
        if mode is RoomMode.QUEUE_ALL:  # an operator holds every new visitor: no store call
            return Decision(Outcome.WAITING, room)
        # A visitor whose earlier ask may have been recorded asks again under the same id: the
        # store admits an id it already holds, so a lost answer costs no place.
        pending = next((p for t in tokens if (p := self.codec.pending(t, room.name, now)) is not None), None)
        session_id = pending or self.new_id()
        if mode is RoomMode.OPEN:  # an operator opened the gate: admitted, not counted
            cookie = self.codec.issue(room.name, session_id, now)[1]
            return Decision(Outcome.ADMITTED, room, cookie=cookie, session_id=session_id)
        if waited > self.config.store.max_wait:
            # Saturated: this request queued in the proxy past the bound. Shed it without a store
            # call; an admission is never decided without the shared window.
            METRICS.shed.labels("queue").inc()
            return Decision(
                Outcome.WAITING, room, shed="queue", pending=pending and self._pending(room, pending)
            )
        try:
            admission, degraded, maybe_done = await self._admit(self.overrides.room(room), session_id)
        except Overloaded as e:
            METRICS.shed.labels(e.reason).inc()
            return Decision(Outcome.WAITING, room, shed=e.reason, pending=self._pending(room, session_id))
        if admission.admitted:
            cookie = self.codec.issue(room.name, session_id, now)[1]
            return Decision(Outcome.ADMITTED, room, cookie=cookie, degraded=degraded, session_id=session_id)
        return Decision(
            Outcome.WAITING,
            room,
            blocked_for=admission.blocked_for,
            block_started=admission.block_started,
            degraded=degraded,
            # The store may have recorded the admission although its answer was lost: keep the id.
            pending=self._pending(room, session_id) if maybe_done else None,
        )

    async def _line(
        self,
        room: RoomConfig,
        tokens: Sequence[str],
        mode: RoomMode,
        waited: float,
        client: Callable[[], str] | None,
        user_agent: str,
    ) -> Decision:
        hold = mode is RoomMode.QUEUE_ALL
        effective = self.overrides.room(room)
        asked = await self.line.ask(
            effective, tokens, hold=hold, waited=waited, client=client, user_agent=user_agent
        )
        sid = asked.session_id
        if asked.admitted:
            cookie = self.codec.issue(room.name, sid, self.clock())[1]
            return Decision(Outcome.ADMITTED, room, cookie=cookie, degraded=asked.degraded, session_id=sid)
        if asked.refused:
            return Decision(Outcome.REFUSED, room, retry_after=asked.refused)
        return Decision(
            Outcome.WAITING,
            room,
            degraded=asked.degraded,
            shed=asked.shed,
            pending=asked.ticket,
            place=asked.place,
            session_id=sid,
        )

    def _pending(self, room: RoomConfig, session_id: str) -> str:
        # Alive as long as a recorded admission can still be in the window.
        return self.codec.issue_pending(room.name, session_id, self.clock(), room.window)

    async def _admit(
        self, room: RoomConfig, session_id: str
    ) -> tuple[Admission, StoreErrorPolicy | None, bool]:
        """The store's answer, or the failure policy's when the store fails (and whether the store
        may have admitted the visitor all the same). Overloaded passes up."""

        async def shared() -> Admission:
            # A remote store comes wrapped in a GuardedStore (store/guard.py): every call bounded by
            # store.timeout, and failing at once while its circuit is open.
            await self.sync.before_shared(room)
            return await self.store.admit(room_policy(room, ttl=self.activity.ttl), session_id)

        def closed() -> Admission:
            now = self.clock()
            return Admission(False, now + math.ceil(room.retry_after), False, now)

        async def local(store: MemoryStore, replicas: int) -> Admission:
            admission = await store.admit(room_policy(room, replicas, self.activity.ttl), session_id)
            if admission.admitted:
                self.sync.admitted_locally(room.name)
            return admission

        answer = await self.fallback.ask(
            shared,
            open_=lambda: Admission(True, 0.0, False, self.clock()),
            closed=closed,
            local=local,
            what=f"room {room.name}",
        )
        return answer.value, answer.degraded, answer.maybe_done


class LocalSync:
    """Rooms with admissions the `local` policy made while the store failed, which the shared
    window has not been told of yet; told before the room's next shared decision, so the limit
    holds across the outage (`block` and `fifo` rooms alike: both count in the window's log)."""

    def __init__(self, store: Store, fallback: StoreFallback, clock: Clock) -> None:
        self.store = store
        self.fallback = fallback
        self.clock = clock
        self._unsynced: set[str] = set()

    def admitted_locally(self, room: str) -> None:
        self._unsynced.add(room)

    async def before_shared(self, room: RoomConfig) -> None:
        """Raises StoreError if the store fails again (the policy then decides, as for the call)."""
        if room.name not in self._unsynced:
            return
        assert self.fallback.local is not None
        admissions = self.fallback.local.room_admissions(room.name)
        if admissions:
            await self.store.record(room_policy(room), admissions, self.clock())
        self._unsynced.discard(room.name)
