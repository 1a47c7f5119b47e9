"""Shadow rooms (`rooms[].shadow: true`): a room that decides every request exactly as it would
live, and enforces nothing. The gate forwards every request of a shadow room untouched (no cookie,
no page, no header) and counts and logs what the room would have done (telemetry.py).

Three things make a shadow different from the room it imitates, and nothing else:

- **Its own key space.** It decides with its own `Decider` over a `ShadowStore`, which renames
  every room it is asked about to `shadow:<name>`: the Redis keys are `{room:shadow:<name>}:…` (the
  embedded store's room table keys it alike), so a shadow and a live room of the same name never
  share a window, a line or a count. When `shadow` is switched off the live room starts from its own
  keys, fresh: nothing the shadow recorded admits anyone.
- **A jar instead of the visitor's cookies.** A shadow visitor gets no cookie, so the shadow keeps
  the cookies the room would have set, per *shadow identity*: an HMAC, under the signing key, of the
  client's canonical address (`client_ip`) and its User-Agent. On the visitor's next request the
  room is decided with those cookies (beside any the visitor really sends), so a returning visitor
  counts as the room would count its cookie: a session, a ticket holding its place, a pending
  token asking again under the same id. The jar is per process and bounded (MAX_IDENTITIES).
- **No proof of work.** A challenge needs the client to solve it and send the answer back, which a
  forwarded request never does: the shadow decides a room with `proof_of_work` as if every visitor
  had solved it at once (as `waitroom simulate` does).

What the figures approximate (docs/sizing.md says it to operators): visitors behind one address
with the same browser (a NAT, a corporate proxy) share one identity, so they count as one visitor,
admitted once: the shadow under-counts newcomers and over-counts sessions there. A visitor who
changes address or browser counts as a new one. The jar is per replica: with several replicas a
visitor recognised by one is a newcomer to another, so run a shadow on one replica or behind
address affinity for exact figures. And a shadow visitor never sees a wait page: it does not poll,
it keeps browsing (each request counted as it would be decided), and in a `fifo` room one who
stops browsing leaves the line after `abandon_after`, where the page would have kept its place.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Sequence
from enum import StrEnum

from waitroom.config.overrides import Overrides
from waitroom.config.schema import Config, RoomConfig
from waitroom.config.store import LiveReplicas, unknown_replicas
from waitroom.rooms.decider import Decider, Decision, Outcome
from waitroom.rooms.routing import Route
from waitroom.rooms.sessions import SessionCodec, cookie_name
from waitroom.store.base import (
    Admission,
    Clock,
    LineGlance,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Store,
    Tickets,
    Turn,
)
from waitroom.web.request import RequestFacts

PREFIX = "shadow:"
"""A shadow room's name in the store. Room names cannot hold `:` (NAME_PATTERN), so no live room
has such a name."""
MAX_IDENTITIES = 100_000
"""Shadow identities remembered per process, one per room each (a few hundred bytes each): beyond
it the least recently seen is forgotten, and counts as a newcomer when it comes back."""


def shadow_key(room: str) -> str:
    """The name a shadow room's state has in the store."""
    return PREFIX + room


class Would(StrEnum):
    """What a shadow room's visitor would have met."""

    ADMIT = "would_admit"
    """Forwarded by the live room too: a new admission, a session, a room that does not apply."""
    WAIT = "would_wait"
    """The wait page (a block, the line, a proof of work the live room would ask for first)."""
    REFUSE = "would_refuse"
    """The closed answer, or no ticket (tickets_per_ip)."""


def would(outcome: Outcome) -> Would:
    match outcome:
        case Outcome.WAITING:
            return Would.WAIT
        case Outcome.CLOSED | Outcome.REFUSED:
            return Would.REFUSE
        case _:
            return Would.ADMIT


class ShadowStore:
    """A store whose rooms live in the shadow key space: every room operation is the wrapped
    store's, on `shadow:<name>`; the rest (rate limits, overrides) is the wrapped store's own.
    Closing it closes nothing: the runtime owns the store."""

    def __init__(self, store: Store) -> None:
        self.inner = store

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        return await self.inner.admit(_renamed(room), session_id, client)

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        await self.inner.record(_renamed(room), admissions, now, tickets)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        return await self.inner.room_state(_renamed(room))

    async def unblock(self, room: str) -> bool:
        return await self.inner.unblock(shadow_key(room))

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        return await self.inner.queue(_renamed(room), session_id, client)

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        return await self.inner.queue_state(_renamed(room))

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        return await self.inner.heartbeat(_renamed(room), session_ids)

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        return await self.inner.still_here(_renamed(room), beats)

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        return await self.inner.touch(shadow_key(room), ttl, seen, max_active)

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        return await self.inner.release(shadow_key(room), session_id, ttl)

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        return await self.inner.hit(checks)

    async def overrides(self) -> dict[str, str]:
        return await self.inner.overrides()

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        await self.inner.set_overrides(changes)

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        return await self.inner.overrides_and_epoch(mark)

    async def close(self) -> None:
        pass


def _renamed[P: (RoomPolicy, QueuePolicy)](policy: P) -> P:
    return dataclasses.replace(policy, name=shadow_key(policy.name))


class Jar:
    """The cookies a shadow room would have set, per (room, shadow identity): the browser its
    visitors do not have. Bounded: the least recently seen identity goes first."""

    def __init__(self, clock: Clock, size: int = MAX_IDENTITIES) -> None:
        self.clock = clock
        self.size = size
        self._values: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        """(room, identity) → (the cookie's value, when it expires)."""

    def get(self, room: str, identity: str) -> str | None:
        key = (room, identity)
        found = self._values.get(key)
        if found is None:
            return None
        if found[1] <= self.clock():
            del self._values[key]
            return None
        self._values.move_to_end(key)
        return found[0]

    def put(self, room: str, identity: str, value: str, max_age: float) -> None:
        key = (room, identity)
        self._values[key] = (value, self.clock() + max_age)
        self._values.move_to_end(key)
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def __len__(self) -> int:
        return len(self._values)


class Shadow:
    """Decides the shadow rooms' requests: the room's own decision, in the shadow key space, with
    the jar's cookies; nothing of it reaches the visitor (the gate forwards the request)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        codec: SessionCodec,
        clock: Clock = time.time,
        live_replicas: LiveReplicas = unknown_replicas,
        jar: Jar | None = None,
    ) -> None:
        """`jar`: the one of the config this replaces (a reload forgets no visitor)."""
        self.config = config
        self.codec = codec
        self.decider = Decider(_without_proofs(config), ShadowStore(store), codec, clock, live_replicas)
        """The rooms' own decider, over the shadow key space (its activity notes, local window and
        line are its own too)."""
        self.jar = jar if jar is not None else Jar(clock)
        self._rooms = {room.name: room for room in self.decider.config.rooms}

    def set_overrides(self, overrides: Overrides) -> None:
        """The run-time settings, as the live rooms take them, but for proof of work; a copy of its
        own (Overrides caches each room's effective settings by the room object it was given)."""
        values = {k: v for k, v in overrides.values.items() if not k.endswith(":proof_of_work")}
        self.decider.set_overrides(Overrides(values))

    def identity(self, facts: RequestFacts) -> str:
        """The visitor as the shadow recognises it without a cookie: its canonical address and its
        User-Agent, keyed with the signing key (no client can compute or forge another's)."""
        address = facts.client_ip(self.config.client_ip)
        return self.codec.derive(f"shadow|{address}|{facts.user_agent}")

    async def decide(self, facts: RequestFacts, route: Route) -> Decision:
        """The decision the room in `route` would make, remembered in the jar as a browser would
        keep the cookie it sets. `route.room`: the room as configured (the gate found it shadow)."""
        configured = route.room
        if configured is None:
            return Decision(Outcome.NO_ROOM)
        room = self._rooms.get(configured.name, configured)
        name = cookie_name(self.config, room)
        identity = self.identity(facts)
        kept = self.jar.get(room.name, identity)

        def cookies(wanted: str) -> Sequence[str]:
            sent = facts.cookies(wanted)
            return [kept, *sent] if kept is not None and wanted == name else sent

        decision = await self.decider.decide(
            dataclasses.replace(facts, cookies=cookies), Route(room=room, bypass=route.bypass)
        )
        self._keep(room, identity, decision)
        return decision

    def _keep(self, room: RoomConfig, identity: str, decision: Decision) -> None:
        """What the live room's answer would set (apply.py's `_room`), kept in the jar."""
        if decision.cookie is not None:
            self.jar.put(room.name, identity, decision.cookie, self.codec.ttl)
        elif decision.pending is not None:
            effective = decision.room or room
            hold = (
                effective.abandon_after_seconds + effective.grace_seconds
                if effective.queue == "fifo"
                else effective.window
            )
            self.jar.put(room.name, identity, decision.pending, max(1, int(hold)))


def _without_proofs(config: Config) -> Config:
    """The config the shadow decides by: proof of work taken out (see the module's docstring)."""
    if not any(room.proof_of_work is not None for room in config.rooms):
        return config
    rooms = [room.model_copy(update={"proof_of_work": None}) for room in config.rooms]
    return config.model_copy(update={"rooms": rooms})


def is_shadow(room: RoomConfig, overrides: Overrides) -> bool:
    """The room is a shadow now (config, or the admin API's `shadow` knob)."""
    return overrides.room(room).shadow
