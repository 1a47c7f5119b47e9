"""What every store does, whatever holds the state: the protocol and its value types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

MICROS = 1_000_000
"""Stores keep times in whole microseconds (Redis's TIME resolution)."""

Clock = Callable[[], float]
"""Seconds since the epoch, as `time.time`; injected so tests and flow replay are deterministic."""


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """The numbers an admission decision needs; the caller may scale them (e.g. per replica)."""

    name: str
    new_sessions: int
    window: float
    block_for: float
    max_active: int = 0
    """Sessions active at once (0: no cap)."""
    ttl: float = 0.0
    """A session idle this long is no longer active (the session cookie's ttl)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """The store's answer for one new visitor."""

    admitted: bool
    blocked_until: float
    """When the room's block ends (store clock); 0 while the room is not blocked."""
    block_started: bool
    """This visitor found the window full and started the block."""
    now: float
    """The store's clock when it decided; compare `blocked_until` with this, not the local clock."""

    @property
    def blocked_for(self) -> float:
        return max(0.0, self.blocked_until - self.now)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """The numbers a `fifo` room's decision needs (see docs/concepts.md, "The line")."""

    name: str
    new_sessions: int
    window: float
    abandon_after: float
    """A ticket not seen for this long is dropped."""
    grace: float
    """A called ticket keeps its place this long, then it lapses to the next in line."""
    hold: bool = False
    """An operator holds every new visitor (queue-all): the line is kept, nobody is called."""
    max_active: int = 0
    """Sessions active at once (0: no cap): a ticket is called only when there is a place inside."""
    ttl: float = 0.0
    """A session idle this long is no longer active."""
    opens_at: float = 0.0
    """A scheduled opening (Unix time; 0: none). Before it nobody is called, and new tickets take a
    place in the pre-queue by a keyed hash of their id, so its order is random but the same on every
    replica; from it, tickets join the end of the line."""
    seed: str = ""
    """The event's shuffle key (see queue.event_seed)."""
    tickets_per_ip: int = 0
    """New tickets per client address per minute (0: no limit)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """The store's answer for one visitor of a `fifo` room."""

    admitted: bool
    ticket: int
    """The visitor's ticket number (0 when admitted without waiting, or admitted again)."""
    position: int
    """Live tickets ahead of this one (0 when admitted)."""
    queue_length: int
    """Live tickets in the line, this one included while it waits."""
    called: int
    """Tickets at the head of the line whose turn has come (they hold a place each)."""
    slot: float
    """When the place this ticket will take in the current window frees up (store clock): the
    admission time of the log entry that must leave the window, `now` for a place held by a called
    ticket, or earlier than `now - window` for a place free already. When `refused`: seconds until
    the address may get a ticket again."""
    now: float
    prequeue: bool = False
    """Before the scheduled opening: the ticket waits in the pre-queue."""
    refused: bool = False
    """No ticket: this client address has had `tickets_per_ip` this minute."""
    used: bool = False
    """The ticket was used (its holder admitted) longer than `grace` ago: it is no ticket; the
    visitor is a newcomer, under a new id."""


@dataclass(frozen=True, slots=True)
class QueueState:
    """A `fifo` room's line as the store sees it now, for metrics and the admin API (read-only)."""

    length: int
    """Live tickets in the line (seen within abandon_after)."""
    called: int
    oldest_wait: float
    """Seconds the oldest live ticket has waited; 0 for an empty line."""
    in_window: int
    slot: float
    """As Turn.slot, for a newcomer who would join the end of the line now."""
    now: float


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One rule's question for one request: may `key` make one more request?"""

    rule: str
    key: str
    """The client's identity for this rule, already hashed (never a raw API key or token)."""
    algorithm: str
    """`sliding_window`, `sliding_log` or `gcra`."""
    limit: int
    per: float
    burst: int | None = None
    shadow: bool = False
    """Counted and reported, never enforced: its refusal does not stop the others being charged."""


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool
    """The rule's own verdict (a shadow rule may say no without stopping the request)."""
    remaining: int
    reset_after: float
    """Seconds until the quota is whole again; when refused, until one request would pass."""


class StoreError(Exception):
    """The store could not answer (unreachable, timed out, refused); the failure policy applies."""

    def __init__(self, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done
        """The question may have reached the store and been carried out (a timeout, a connection
        lost while waiting): an admission may have been recorded although no answer came."""


class Overloaded(Exception):
    """The proxy itself was too busy to get the store's answer in time (see store/guard.py).

    Not a store failure: the failure policy does not apply and the breaker does not count it. The
    request is *shed*: a new visitor gets the wait answer, a rate-limited request the rule's refusal.
    `sent` says whether the question may have reached the store (its outcome is then unknown)."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


@dataclass(frozen=True, slots=True)
class RoomState:
    """A room as the store sees it now, for metrics and the admin API (read-only)."""

    in_window: int
    """Admissions inside the window ending now."""
    blocked_for: float
    """Seconds the room's block still lasts; 0 when it is not blocked."""
    active: int = 0
    """Sessions active now (kept only for a room with max_active)."""


class Store(Protocol):
    """Shared state behind the decisions. Implementations: memory (embedded) and Redis."""

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        """One new visitor asks to enter `room`, all in one atomic step: if `session_id` is already
        in the window's log (an earlier ask whose answer was lost), admit it again without counting
        it twice; if the room is blocked, refuse; else prune the window's log, and admit (recording
        `session_id`) if it has room, or start a block of `room.block_for` and refuse. Raises
        StoreError when it cannot answer."""
        ...

    async def record(self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float) -> None:
        """Put admissions decided elsewhere (the `local` policy, while this store was away) into the
        room's window: `(session id, time)` pairs whose times are on the clock that read `now`, so
        each keeps its age. Ids already in the log are not counted twice."""
        ...

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        """One visitor of a `fifo` room asks to enter, in one atomic step: drop the tickets not seen
        for `abandon_after` and the called ones not used within `grace`; call the next tickets in
        order while the window has places; then: `session_id` already admitted (a lost answer) →
        admitted again; holding a called ticket → admitted (recorded in the window's log); holding a
        live ticket → refreshed, its position answered; otherwise admitted at once if the window has
        a place and nobody waits uncalled, else a new ticket at the end of the line (refused when
        `client`, a hash of the visitor's address, has had `tickets_per_ip` this minute)."""
        ...

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        """Read a `fifo` room's line without changing it."""
        ...

    async def touch(self, room: str, ttl: float, seen: Sequence[tuple[str, float]]) -> list[str]:
        """Sessions of `room` were active `(session id, seconds ago)`: count them active (for the
        cap). Answers the ids among them that were released (their cookies are no longer honoured)."""
        ...

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        """End a session, or drop a ticket, at once: its place inside (or in line) is free. The id is
        remembered as released for `ttl`. True if it held a place."""
        ...

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        """Check every rule that matches one request, in one atomic step; charge them all (except
        shadow rules that said no) only if no enforcing rule refuses. Results in `checks` order.
        Raises StoreError when it cannot answer."""
        ...

    async def room_state(self, room: RoomPolicy) -> RoomState:
        """Read a room's live state without changing it."""
        ...

    async def unblock(self, room: str) -> bool:
        """End the room's block now (the window's log stays); True if it was blocked."""
        ...

    async def overrides(self) -> dict[str, str]:
        """Run-time settings made by the admin API, shared by every replica that shares the store:
        `room:<name>:<field>` and `rule:<name>:<field>` → value (see waitroom.overrides)."""
        ...

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        """Apply run-time settings at once; a None value removes the setting."""
        ...

    async def close(self) -> None: ...
