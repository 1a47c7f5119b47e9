"""The admission decision for one request, independent of mitmproxy.

classify (room? bypass?) → session cookie (no I/O) → the store (one round trip) → a Decision.
The addon turns the Decision into a forwarded request or an answer; the flow-replay harness and the
tests call this directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from waitroom.config.overrides import Overrides, RoomMode
from waitroom.config.schema import Config, RoomConfig
from waitroom.config.store import LiveReplicas, StoreErrorPolicy, unknown_replicas
from waitroom.metrics import METRICS
from waitroom.rooms.activity import Activity, active_ttl
from waitroom.rooms.estimate import block_estimate
from waitroom.rooms.line import Line, client_key
from waitroom.rooms.local_sync import LocalSync
from waitroom.rooms.policy import room_policy
from waitroom.rooms.routing import Route, Router
from waitroom.rooms.sessions import SessionCodec, SessionIds, cookie_name
from waitroom.store.base import Admission, Clock, Overloaded, Store, StoreError
from waitroom.store.on_error import OnError
from waitroom.web.request import RequestFacts
from waitroom.web.wait import DEGRADED, PAUSED, Challenge, Estimate, Place


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
    """No place: the visitor's address had its `tickets_per_ip` this minute, or holds its
    `places_per_ip` (429)."""


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
    estimate: Estimate | None = None
    """WAITING without a place: what the page says of the wait (a `block` room's next free place,
    an operator's hold, a store that did not answer); None when there is no estimate to give."""
    session_id: str | None = None
    """The visitor's session (SESSION, ADMITTED) or ticket (WAITING in a `fifo` room): what a
    release ends."""
    retry_after: int = 0
    """REFUSED: seconds until the address may get a ticket again. WAITING in a `fifo` room: the
    visitor's own poll interval (0: the room's retry_after)."""
    challenge: Challenge | None = None
    """WAITING in a room with proof of work: the puzzle to solve before a place is given."""


class Decider:
    """Admission to a room, one request at a time. Of its store it uses three roles: RoomStore (its
    own `admit`; LocalSync's `record`), LineStore (Line) and ActivityStore (Activity)."""

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
        self.on_error = OnError(config.store, clock, live_replicas)
        """Which `store.on_error` policy decides while the store fails, and its local store."""
        self.new_id = SessionIds()
        """New session ids (a replay hands over its recording's)."""
        self.sync = LocalSync(store, self.on_error, clock, active_ttl(config.session.ttl))
        self.activity = Activity(store, active_ttl(config.session.ttl), clock)
        """Sessions' activity for the caps, and releases."""
        self.line = Line(config, store, codec, clock, self.sync, self.new_id, self.activity.released)
        """The `fifo` rooms' decisions."""

    def set_overrides(self, overrides: Overrides) -> None:
        """New run-time settings, replaced whole (never mutated); the limiter takes them alike."""
        self.overrides = overrides

    async def decide(self, facts: RequestFacts, route: Route) -> Decision:
        """`route`: the request's room (or bypass), as the gate classified it (router.route)."""
        if route.bypass:
            return Decision(Outcome.BYPASS)
        room = route.room
        if room is None:
            return Decision(Outcome.NO_ROOM)

        now = self.clock()
        tokens = facts.cookies(cookie_name(self.config, room))
        session = next((s for t in tokens if (s := self.codec.verify(t, room.name, now)) is not None), None)
        if session is not None and not self.activity.released(room.name, session.session_id):
            if cap := self.overrides.room(room).max_active:  # a cap set at run time counts them too
                self.activity.seen(room.name, session.session_id, now, cap)  # no I/O: batched
            renewed = self.codec.renew(session, now)[1] if self.codec.needs_renewal(session, now) else None
            return Decision(Outcome.SESSION, room, cookie=renewed, session_id=session.session_id)

        effective = self.overrides.room(room)
        if effective.closes_at is not None and now >= effective.closes_at.timestamp():
            return (
                Decision(Outcome.NO_ROOM)
                if room.after_close == "pass"
                else Decision(Outcome.CLOSED, effective)
            )
        mode = self.overrides.room_mode(room.name)
        # From here on the room is the one in force: its decision carries the knobs changed at run
        # time (retry_after, window) to the answer.
        room = effective
        if room.queue == "fifo" and mode is not RoomMode.OPEN:
            return await self._line(room, facts, tokens, mode)
        if mode is RoomMode.QUEUE_ALL:  # an operator holds every new visitor: no store call
            return Decision(Outcome.WAITING, room, estimate=PAUSED)
        # A visitor whose earlier ask may have been recorded asks again under the same id: the
        # store admits an id it already holds, so a lost answer costs no place.
        pending = next((p for t in tokens if (p := self.codec.pending(t, room.name, now)) is not None), None)
        session_id = pending or self.new_id()
        if mode is RoomMode.OPEN:  # an operator opened the gate: admitted, not counted
            cookie = self.codec.issue(room.name, session_id, now)[1]
            return Decision(Outcome.ADMITTED, room, cookie=cookie, session_id=session_id)
        if facts.waited > self.config.store.max_wait:
            # Saturated: this request queued in the proxy past the bound. Shed it without a store
            # call; an admission is never decided without the shared window.
            METRICS.store.shed.labels("queue").inc()
            return Decision(
                Outcome.WAITING,
                room,
                shed="queue",
                pending=pending and self._pending(room, pending),
                estimate=DEGRADED,
            )
        client = client_key(facts.client_ip(self.config.client_ip)) if room.places_per_ip else ""
        try:
            admission, degraded, maybe_done = await self._admit(room, session_id, client)
            if admission.spent:  # its session ended: the copy of its credential is a new visitor
                session_id = self.new_id()
                admission, degraded, maybe_done = await self._admit(room, session_id, client)
        except Overloaded as e:
            METRICS.store.shed.labels(e.reason).inc()
            return Decision(
                Outcome.WAITING,
                room,
                shed=e.reason,
                pending=self._pending(room, session_id),
                estimate=DEGRADED,
            )
        if admission.admitted:
            cookie = self.codec.issue(room.name, session_id, now)[1]
            return Decision(Outcome.ADMITTED, room, cookie=cookie, degraded=degraded, session_id=session_id)
        if admission.holding:
            METRICS.line.tickets_refused.labels(room.name).inc()
            return Decision(Outcome.REFUSED, room, retry_after=room.retry_after_seconds)
        held = degraded is StoreErrorPolicy.CLOSED or (
            degraded is StoreErrorPolicy.LOCAL and bool(room.max_active)
        )
        return Decision(
            Outcome.WAITING,
            room,
            blocked_for=admission.blocked_for,
            block_started=admission.block_started,
            degraded=degraded,
            # The store may have recorded the admission although its answer was lost: keep the id.
            pending=self._pending(room, session_id) if maybe_done else None,
            # When the next place should free up (the window's log, the cap); none when the store
            # did not answer and the policy held the visitor (closed; local in a capped room), as
            # no store measured anything.
            estimate=DEGRADED if held else block_estimate(room, admission),
        )

    async def _line(
        self, room: RoomConfig, facts: RequestFacts, tokens: Sequence[str], mode: RoomMode
    ) -> Decision:
        """`room`: the room in force (run-time changes applied)."""
        hold = mode is RoomMode.QUEUE_ALL
        asked = await self.line.ask(room, facts, tokens, hold=hold)
        if asked.challenge is not None:  # proof of work first: no place was asked for
            return Decision(Outcome.WAITING, room, challenge=asked.challenge)
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
            retry_after=asked.retry_after,
            # No place: the store did not answer (or the proxy shed the ask).
            estimate=DEGRADED if asked.place is None else None,
        )

    def _pending(self, room: RoomConfig, session_id: str) -> str:
        # Alive as long as a recorded admission can still be in the window.
        return self.codec.issue_pending(room.name, session_id, self.clock(), room.window)

    async def _admit(
        self, room: RoomConfig, session_id: str, client: str = ""
    ) -> tuple[Admission, StoreErrorPolicy | None, bool]:
        """The store's answer; when the store fails, the `store.on_error` policy's (and whether the
        store may have admitted the visitor all the same). Overloaded passes up: the caller sheds."""
        try:
            # A remote store comes wrapped in a GuardedStore (store/guard.py): every call bounded by
            # store.timeout, and failing at once while its circuit is open.
            await self.sync.before_shared(room)
            policy = room_policy(room, ttl=self.activity.ttl)
            return await self.store.admit(policy, session_id, client), None, False
        except StoreError as e:
            failed = self.on_error.failed(e, f"room {room.name}")
        now = self.clock()
        match failed.policy:
            case StoreErrorPolicy.OPEN:
                admission = Admission(True, 0.0, False, now)
            case StoreErrorPolicy.CLOSED:
                admission = Admission(False, now + math.ceil(room.retry_after), False, now)
            case StoreErrorPolicy.LOCAL if room.max_active:
                # The cap is a count of everyone inside, on every replica: no replica can know it
                # alone, so `local` holds a capped room rather than pass its cap.
                admission = Admission(False, now + math.ceil(room.retry_after), False, now)
            case StoreErrorPolicy.LOCAL:
                share = room_policy(room, failed.replicas, self.activity.ttl)
                admission = await self.on_error.local_store().admit(share, session_id, client)
                if admission.admitted:
                    self.sync.admitted_locally(room)
        return admission, failed.policy, failed.maybe_done
