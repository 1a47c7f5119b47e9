"""A `fifo` room: first come, first in, with a place in line and an honest wait estimate.

A visitor who cannot enter at once gets a *ticket* (a signed cookie, see sessions.TICKET) naming a
session id the store keeps in the room's line. Each ask of a ticket holder is one store call
(room_queue.lua, or MemoryStore.queue): it keeps the ticket alive, calls the next tickets in order
while the window has places, and answers the visitor's position. Places are given at the room's rate
(`new_sessions` per `window`), across every replica that shares the store. docs/concepts.md, "The
line", says what is guaranteed and what is not.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from waitroom.active import active_ttl
from waitroom.config import Config, RoomConfig, StoreErrorPolicy
from waitroom.fallback import Answer as FallbackAnswer
from waitroom.metrics import METRICS
from waitroom.responses import Place
from waitroom.sessions import SessionCodec, new_session_id
from waitroom.store import Clock, MemoryStore, Overloaded, QueuePolicy, QueueState, Store, Turn

if TYPE_CHECKING:
    from waitroom.decide import LocalSync


def queue_policy(
    room: RoomConfig, replicas: int = 1, *, hold: bool = False, ttl: float = 0.0, seed: str = ""
) -> QueuePolicy:
    """The store's view of a `fifo` room; with `replicas` > 1 each one gets its share of the
    limits. `ttl`: the session ttl (for max_active); `seed`: the event's (see event_seed)."""
    return QueuePolicy(
        name=room.name,
        new_sessions=max(1, room.new_sessions // replicas),
        window=room.window,
        abandon_after=room.abandon_after_seconds,
        grace=room.grace_seconds,
        hold=hold,
        max_active=max(1, room.max_active // replicas) if room.max_active else 0,
        ttl=ttl,
        opens_at=room.opens_at.timestamp() if room.opens_at else 0.0,
        seed=seed,
        tickets_per_ip=room.tickets_per_ip or 0,
    )


def event_seed(codec: SessionCodec, room: RoomConfig) -> str:
    """The key of a scheduled opening's shuffle: the same on every replica (they share the signing
    key), a new one for each event (room and opening time), and unknown to clients, so that nobody
    can tell in advance which ids would come first."""
    return codec.derive(f"pre-queue|{room.name}|{room.opens_at.timestamp() if room.opens_at else 0}")


def client_key(address: str) -> str:
    """A client address as a store key holds it: hashed, never in the clear."""
    return hashlib.sha256(address.encode()).hexdigest()[:24]


def estimate_wait(
    *,
    position: int,
    called: int,
    slot: float,
    now: float,
    new_sessions: int,
    window: float,
    retry_after: float,
) -> int:
    """Seconds until a ticket `position` places from the head is let in, if everyone ahead keeps
    waiting (anyone who leaves the line makes it shorter).

    The tickets at the head whose turn has come hold places already; each of the others needs a
    place of the window to free up. The first `new_sessions` of those places free up when the
    admissions now in the window's log leave it (`slot`: measured admission times, not the
    configured rate), the next ones a window after the admissions that fill them, and so on. A
    called visitor comes in at its page's next poll, on average half a retry interval later."""
    come_in = retry_after / 2
    waiting_ahead = max(0, position - called)
    cycles = waiting_ahead // max(1, new_sessions)
    first = max(0.0, slot + window - now)
    return math.ceil(cycles * (window + come_in) + first + come_in)


def newcomer_wait(state: QueueState, room: RoomConfig) -> int:
    """The estimate a visitor arriving now would be shown (0: there is a place at once)."""
    waiting = state.length - state.called
    if waiting == 0 and state.in_window + state.called < room.new_sessions:
        return 0
    return room_wait(room, state.length, state.called, state.slot, state.now)


def room_wait(room: RoomConfig, position: int, called: int, slot: float, now: float) -> int:
    """estimate_wait with the room's numbers."""
    return estimate_wait(
        position=position,
        called=called,
        slot=slot,
        now=now,
        new_sessions=room.new_sessions,
        window=room.window,
        retry_after=room.retry_after,
    )


@dataclass(frozen=True, slots=True)
class Asked:
    """What the line said to one visitor."""

    admitted: bool
    session_id: str
    place: Place | None = None
    """None when the store could not tell (it failed and the policy decided, or the proxy shed)."""
    ticket: str | None = None
    """A ticket token to set: the visitor's place, kept across asks."""
    degraded: StoreErrorPolicy | None = None
    shed: str | None = None
    refused: int = 0
    """No ticket (tickets_per_ip): seconds until the address may ask again."""


class Line:
    """Asks the store for a `fifo` room's decision; the failure policy's when the store fails."""

    def __init__(
        self,
        config: Config,
        store: Store,
        codec: SessionCodec,
        clock: Clock,
        sync: LocalSync,
        new_id: Callable[[], str] = new_session_id,
    ) -> None:
        self.new_id = new_id
        """New session ids (a replay hands over its recording's)."""
        self.config = config
        self.store = store
        self.codec = codec
        self.clock = clock
        self.sync = sync

    async def ask(
        self,
        room: RoomConfig,
        tokens: Sequence[str],
        *,
        hold: bool,
        waited: float,
        client: Callable[[], str] | None = None,
        user_agent: str = "",
    ) -> Asked:
        """`room` with the run-time settings applied; `tokens`: the request's values of the room's
        cookie; `hold`: an operator holds every new visitor; `client()`: the visitor's address."""
        now = self.clock()
        held = next(
            (t.session_id for token in tokens if (t := self.codec.ticket(token, room.name, now, user_agent))),
            None,
        )
        session_id = held or self.new_id()
        if waited > self.config.store.max_wait:
            # Saturated: shed without a store call. A ticket holder keeps its cookie (and its place
            # while it asks again within abandon_after); a newcomer tries again later.
            METRICS.shed.labels("queue").inc()
            return Asked(False, session_id, shed="queue")
        try:
            seed = event_seed(self.codec, room) if room.opens_at else ""
            policy = queue_policy(room, hold=hold, ttl=active_ttl(self.config.session.ttl), seed=seed)
            address = client_key(client()) if client is not None and room.tickets_per_ip else ""
            answer = await self._ask(room, policy, session_id, address)
            if answer.value is not None and answer.value.used:  # a used ticket: a newcomer after all
                held, session_id = None, self.new_id()
                answer = await self._ask(room, policy, session_id, address)
        except Overloaded as e:
            METRICS.shed.labels(e.reason).inc()
            # The store may have put a newcomer in the line: keep the id, so the next ask finds it.
            return Asked(
                False,
                session_id,
                ticket=None if held else self._ticket(room, session_id, 0, now, user_agent),
                shed=e.reason,
            )
        turn = answer.value
        if turn is None:  # closed: wait; a newcomer the store may have put in line keeps the id
            keep = answer.maybe_done and not held
            return Asked(
                False,
                session_id,
                ticket=self._ticket(room, session_id, 0, now, user_agent) if keep else None,
                degraded=answer.degraded,
            )
        if turn.admitted:
            return Asked(True, session_id, degraded=answer.degraded)
        if turn.refused:
            METRICS.tickets_refused.labels(room.name).inc()
            return Asked(False, session_id, refused=max(1, math.ceil(turn.slot)), degraded=answer.degraded)
        ticket = self._ticket(room, session_id, turn.ticket, now, user_agent)
        if turn.prequeue:
            opens_in = max(1, math.ceil(policy.opens_at - turn.now))
            place = Place(turn.position, turn.queue_length, opens_in, opens_in=opens_in)
            return Asked(False, session_id, place, ticket, degraded=answer.degraded)
        eta = room_wait(room, turn.position, turn.called, turn.slot, turn.now)
        return Asked(
            False, session_id, Place(turn.position, turn.queue_length, eta), ticket, degraded=answer.degraded
        )

    def _ticket(self, room: RoomConfig, session_id: str, number: int, now: float, bind: str) -> str:
        # Alive as long as the store can still hold it; renewed with every answer while it waits.
        expires = now + room.abandon_after_seconds + room.grace_seconds
        return self.codec.issue_ticket(room.name, session_id, number, expires, bind)

    async def _ask(
        self, room: RoomConfig, policy: QueuePolicy, session_id: str, client: str
    ) -> FallbackAnswer[Turn | None]:
        async def shared() -> Turn | None:
            await self.sync.before_shared(room)
            return await self.store.queue(policy, session_id, client)

        async def local(store: MemoryStore, replicas: int) -> Turn | None:
            share = queue_policy(room, replicas, hold=policy.hold, ttl=policy.ttl, seed=policy.seed)
            turn = await store.queue(share, session_id, client)
            if turn.admitted:
                self.sync.admitted_locally(room.name)
            return turn

        now = self.clock()
        return await self.sync.fallback.ask(
            shared,
            open_=lambda: Turn(True, 0, 0, 0, 0, 0.0, now),
            closed=lambda: None,
            local=local,
            what=f"room {room.name}",
        )
