"""What every store does, whatever holds the state: the protocol and its value types."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

MICROS = 1_000_000
"""Stores keep times in whole microseconds (Redis's TIME resolution)."""


def to_micros(seconds: float) -> int:
    """Times and durations are whole microseconds inside a store, as in the Lua scripts: both stores
    then make the same decision at a window's exact edge, where float seconds would round either way."""
    return round(seconds * MICROS)


DEPARTURE_HORIZON = 300.0
"""Seconds of departures a room's record keeps (see Inside): the cap's measured rate is the rate
over this long, or over less while the record is younger."""
DEPARTURE_BOUND = 256
"""Departures a room's record keeps at most: beyond it, the oldest go, and the record then covers
only back to the oldest it kept (Inside.span says how long)."""


Clock = Callable[[], float]
"""Seconds since the epoch, as `time.time`; injected so tests and flow replay are deterministic."""


RECENT_RELEASES = 10.0
"""Seconds of releases that every activity flush (ActivityStore.touch) learns of, so that a replica
that flushes at least that often stops honouring any released cookie by its next flush."""
RECENT_RELEASES_MAX = 1000
"""Releases one flush learns of, at most (the latest); beyond it a replica learns of the others as
it notes their sessions (at most once per rooms.activity.TOUCH_EVERY each)."""


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
    places_per_ip: int = 0
    """Places one client address may hold at once (0: no limit): see "holds" below."""


# What a client address holds in a room, its "holds" (`places_per_ip`): the session ids it was given
# a place under, kept per address (a hash of it) in the room's state, each counted while it is still a place:
# a ticket in the line (called or not, lapsed or not, before the opening or after), else, unless
# released, a session active within the ttl (a room with max_active) or admitted within the window (a
# room without). An id that is none of these any more is dropped from the address's holdings when
# they are next counted. The holdings of an address are kept for the longest any of them can live
# without the address asking again (abandon_after + grace, the ttl, the window) after its last ask.


@dataclass(frozen=True, slots=True)
class Inside:
    """A room's places inside, as its store measured them (rooms with max_active only): how many
    sessions are active, and how fast places have freed up. Every session that leaves the active
    set (released, or idle past the ttl) is a departure, noted with the time it left in a record
    per room that keeps the last DEPARTURE_HORIZON seconds (at most DEPARTURE_BOUND departures)."""

    active: int = 0
    """Sessions active now (the called tickets of a `fifo` room are not among them)."""
    departed: int = 0
    """Sessions that left the active set within the last `span` seconds."""
    span: float = 0.0
    """Seconds the departures cover. Two or more: from one mean gap between them before the first
    (never before the record starts) to now, so that a record that started long before anyone could
    leave (a young room filling up) does not dilute their pace. Fewer: the whole record,
    DEPARTURE_HORIZON or less while it is younger or full (DEPARTURE_BOUND departures in less)."""
    silent: float = 0.0
    """Seconds since the last departure within the record (0 with none): how long the room has been
    silent, the part of `span` after the departures."""

    def later(self, seconds: float) -> Inside:
        """The same reading `seconds` later, if nobody has left since (a view answering from it)."""
        if seconds <= 0:
            return self
        silent = self.silent + seconds if self.departed else 0.0
        return Inside(self.active, self.departed, self.span + seconds, silent)


NOBODY_INSIDE = Inside()


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

    next_free: float = 0.0
    """A refused visitor: when the window's next place frees up (store clock): the oldest admission
    in the window's log plus the window; `now` or earlier when the window has a place now."""
    inside: Inside = NOBODY_INSIDE
    """A refused visitor of a room with max_active: its places inside."""
    holding: bool = False
    """Refused because the visitor's address holds its `places_per_ip` already."""
    spent: bool = False
    """Refused because `session_id` was admitted and its session has ended since (released, or no
    longer counted inside): the caller asks again under a new id."""

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
    """The event's shuffle key (see rooms.line.event_seed)."""
    tickets_per_ip: int = 0
    """New tickets per client address per minute (0: no limit)."""
    places_per_ip: int = 0
    """Places (tickets and sessions) one client address may hold at once (0: no limit)."""
    draws_per_ip: int = 0
    """Before the opening: pre-queue tickets one address may hold (0: places_per_ip's)."""
    retry_after: float = 0.0
    """The head of the line's poll interval: each waiting ticket is told its own, from its place,
    between this and `max_retry_after` (room_queue.lua, "Poll intervals"). 0: every ticket is due
    back at once (the interval is the caller's)."""
    max_retry_after: float = 0.0
    """The longest poll interval a waiting ticket is told."""
    unheard_for: float = 0.0
    """Seconds the asking replica's calls failed, up to this one: an outage it lived through,
    during which nobody's polls could reach the store. The store counts that time towards nobody's
    abandon_after (silences.lua). 0: it reached the store last time."""


Tickets = Sequence[tuple[str, float]]
"""Called tickets let in while the store was away: (session id, time), as RoomStore.record takes."""


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
    """No ticket: this client address has had `tickets_per_ip` this minute, or holds its
    `places_per_ip` (then `slot` is 0)."""
    used: bool = False
    """The ticket was used (its holder admitted) longer than `grace` ago: it is no ticket; the
    visitor is a newcomer, under a new id."""
    inside: Inside = NOBODY_INSIDE
    """A waiting ticket of a room with max_active: the room's places inside."""
    interval: float = 0.0
    """A waiting ticket: seconds until it should ask again (its poll interval, chosen by the store
    from its place; the store holds it due back then). 0: the room's retry_after."""
    calls: int = 0
    """A waiting ticket: the line's served counters (LineGlance): tickets called, ever..."""
    out: int = 0
    """... and tickets that left the line, ever."""
    lapsed: int = 0
    """A waiting ticket: tickets whose call lapsed (they keep their numbers, uncalled)."""
    in_window: int = 0
    """A waiting ticket: admissions in the window now."""
    last_called: int = 0
    """A waiting ticket: the highest ticket number called, ever..."""
    last_lapsed: int = 0
    """... and the highest whose call lapsed or was given up, ever. A ticket numbered above
    last_lapsed and at most last_called holds the place its call gave it until it is used
    (rooms/line.py, "Called before an outage")."""
    epoch: int = 0
    """A waiting ticket: when the line started (µs, the store's clock); the ticket numbers and
    the marks above count from then (a line that went and came back starts again)."""


@dataclass(frozen=True, slots=True)
class LineGlance:
    """A `fifo` room's line as a replica's line view needs it (rooms/line_view.py), from the
    batched heartbeat's answer (or a waiting ticket's Turn). `calls` and `out` only grow while the
    line exists: a ticket with `b` uncalled, unlapsed tickets ahead of it cannot be called before
    `calls + out` has grown by `b` (each of them is called or leaves first)."""

    now: float
    length: int
    called: int
    lapsed: int
    in_window: int
    calls: int
    out: int
    ranks: tuple[int | None, ...] = ()
    """For each heartbeat sent: the live tickets ahead of it, or None when it is no longer in the
    line (dropped, used, released)."""


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
    inside: Inside = NOBODY_INSIDE
    """A room with max_active (and the policy's ttl): its places inside."""


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
    max_delay: float = 0.0
    """A `delay` rule: a request that could pass within this many seconds is held for its slot
    (RateResult.delay) instead of refused; 0 for every other rule."""


@dataclass(frozen=True, slots=True)
class RateResult:
    allowed: bool
    """The rule's own verdict (a shadow rule may say no without stopping the request)."""
    remaining: int
    reset_after: float
    """Seconds until the quota is whole again; when refused, until one request would pass."""
    delay: float = 0.0
    """Allowed after this many seconds: the store reserved the request's slot (and charged it), so
    the request is held that long and then passes without asking again."""


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


class RoomStore(Protocol):
    """A room's window of admissions and its block."""

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        """One new visitor asks to enter `room`, all in one atomic step: if `session_id` is already
        in the window's log (an earlier ask whose answer was lost), admit it again without counting
        it twice, unless its session ended since (released, or with max_active no longer counted
        inside): refused as `spent`, since a credential that produced a session is good for that
        session only; if the room is blocked, refuse; else prune the window's log; if it has room,
        refuse (`holding`) when `client` (a hash of the visitor's address) holds `places_per_ip`
        places, else admit (recording `session_id`); if it has none, start a block of
        `room.block_for` and refuse. Raises StoreError when it cannot answer."""
        ...

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        """Put admissions decided elsewhere while this store was away into the room's window:
        `(session id, time)` pairs whose times are on the clock that read `now`, so each keeps its
        age. Ids already in the log are not counted twice. `admissions`: the `local` policy's;
        `tickets`: called tickets let in (rooms/line.py), each counted only if the line still holds
        it (a store that lost its data holds no place for it): it leaves the line, and one still
        called is counted inside (with max_active) in the place its call held, unless the cap is
        full or it was released (room_record.lua)."""
        ...

    async def room_state(self, room: RoomPolicy) -> RoomState:
        """Read a room's live state without changing it."""
        ...

    async def unblock(self, room: str) -> bool:
        """End the room's block now (the window's log stays); True if it was blocked."""
        ...


class LineStore(Protocol):
    """A `fifo` room's line."""

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        """One visitor of a `fifo` room asks to enter, in one atomic step: drop the tickets not seen
        for `abandon_after` and the called ones not used within `grace`; call the next tickets in
        order while the window has places; then: `session_id` already admitted (a lost answer) →
        admitted again; holding a called ticket → admitted (recorded in the window's log); holding a
        live ticket → refreshed, its position answered; otherwise admitted at once if the window has
        a place and nobody waits uncalled, else a new ticket at the end of the line (refused when
        `client`, a hash of the visitor's address, has had `tickets_per_ip` this minute). A
        newcomer's direct entry or ticket is refused (`refused`, slot 0) when `client` holds
        `places_per_ip` places (before the opening: `draws_per_ip`). `session_id` admitted within
        grace but released since, or no longer counted inside a capped room, is `used`."""
        ...

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        """Read a `fifo` room's line without changing it."""
        ...

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        """The holders of these tickets are still here: each one still in the line is due back now
        at the earliest (a later due-back time stays), as if it had asked; nobody is called.
        Answers how many were still in the line. `waitroom simulate` sends it for the visitors far
        back in the line whose polls it skips (their place cannot change meanwhile)."""
        ...

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        """A replica's batched heartbeat (rooms/line_view.py): `(session id, seconds until it is due
        back)` for the polls it answered without the store. Each ticket still in the line is due
        back then at the earliest (never earlier than it was); a ticket no longer in the line is
        not brought back. Nobody is called; a bounded batch of abandoned tickets is dropped, as by
        `queue`. Answers the line's state and each ticket's place (None: gone)."""
        ...


class ActivityStore(Protocol):
    """The sessions inside a room, for the cap (`max_active`), and their release."""

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        """Sessions of `room` were active `(session id, seconds ago)`: count them active (for the
        cap). A session the store does not count (any more) is counted again only while fewer than
        `max_active` are (0: no cap): a late note never re-creates a place given to someone else.
        Answers the ids among them that were released or found no place, and every session of the
        room released within the last RECENT_RELEASES seconds (at most RECENT_RELEASES_MAX, the
        latest): their cookies are no longer honoured by the replica that asked, whether or not it
        noted them this time (`seen` may be empty)."""
        ...

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        """End a session, or drop a ticket, at once: its place inside (or in line) is free. The id is
        remembered as released for `ttl`. True if it held a place."""
        ...


class RateStore(Protocol):
    """The rate limiter's counts."""

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        """Check every rule that matches one request, in one atomic step; charge them all (except
        shadow rules that said no) only if no enforcing rule refuses. Results in `checks` order.
        Raises StoreError when it cannot answer."""
        ...


class OverrideStore(Protocol):
    """The admin API's run-time settings."""

    async def overrides(self) -> dict[str, str]:
        """Run-time settings made by the admin API, shared by every replica that shares the store:
        `room:<name>:<field>` and `rule:<name>:<field>` → value (see waitroom.config.overrides)."""
        ...

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        """Apply run-time settings at once; a None value removes the setting."""
        ...

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        """The overrides, and the store's *epoch*, in one round trip (each replica's periodic
        overrides read): a mark the store keeps for as long as it keeps its data. A store that has
        none takes `mark` (a new one with every read) and answers it. A replica that finds the epoch
        it knew replaced by another knows the store lost its data (store/base.py has no way to tell
        otherwise: an empty store looks like a new one). The embedded store never loses its data:
        its epoch never changes."""
        ...


class Store(RoomStore, LineStore, ActivityStore, RateStore, OverrideStore, Protocol):
    """Shared state behind the decisions, every role at once. Implementations: memory (embedded)
    and Redis. A consumer that needs one role takes that role's protocol."""

    async def close(self) -> None: ...
