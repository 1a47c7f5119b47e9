"""The embedded store's rooms: admission windows, blocks, active sessions and `fifo` lines."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from waitroom.store.base import (
    DEPARTURE_BOUND,
    DEPARTURE_HORIZON,
    MICROS,
    NOBODY_INSIDE,
    RECENT_RELEASES,
    RECENT_RELEASES_MAX,
    Admission,
    Clock,
    Inside,
    LineGlance,
    QueuePolicy,
    QueueState,
    RoomPolicy,
    RoomState,
    Tickets,
    Turn,
    to_micros,
)
from waitroom.store.memory_holds import MemoryHolds
from waitroom.store.memory_line import AFTER_OPENING, MemoryLine, shown
from waitroom.store.memory_log import AdmissionLog


@dataclass(slots=True)
class _RoomState:
    log: AdmissionLog = field(default_factory=AdmissionLog)
    """(admission time in µs, session id) inside the window, oldest first: O(new_sessions) memory."""
    blocked_until: int = 0
    line: MemoryLine = field(default_factory=MemoryLine)
    active: dict[str, int] = field(default_factory=dict)
    """Session id → last activity, in the order of that activity (only with max_active)."""
    released: dict[str, int] = field(default_factory=dict)
    """Session id → when it was released, oldest first."""
    departed: list[int] = field(default_factory=list)
    """When sessions left the active set (released, or idle past the ttl), ascending: the
    departures record of departures.lua (Inside)."""
    since: int | None = None
    """When the departures record starts; None: there is none yet."""
    holds: MemoryHolds = field(default_factory=MemoryHolds)
    """What each client address holds (places_per_ip)."""

    def holds_place(self, sid: str, now: int, window: int, ttl: int, capped: bool) -> bool:
        """`sid` is still a place an address holds (holds.lua's holds_count)."""
        if sid in self.line.tickets:
            return True
        if sid in self.released:
            return False
        if capped:
            at = self.active.get(sid)
            return at is not None and at > now - ttl
        at = self.log.when(sid)
        return at is not None and at > now - window

    def ended(self, sid: str, capped: bool) -> bool:
        """An admitted session that ended since: released, or (capped) no longer counted inside."""
        return sid in self.released or (capped and sid not in self.active)

    def active_count(self, now: int, ttl: int) -> int:
        """Sessions active now, after dropping those idle for `ttl` (each a departure)."""
        self.keep_departures(now)
        while self.active:
            sid, at = next(iter(self.active.items()))
            if at > now - ttl:
                break
            del self.active[sid]
            self.depart(at + ttl, now)
        return len(self.active)

    def keep_departures(self, now: int) -> None:
        """Start the departures record, or go on with it (departures.lua's departures_keep)."""
        low = now - HORIZON
        del self.departed[: bisect.bisect_left(self.departed, low)]
        self.since = max(now if self.since is None else self.since, low)

    def depart(self, at: int, now: int) -> None:
        """A session left the active set at `at` (after keep_departures)."""
        if at < now - HORIZON:
            return
        bisect.insort(self.departed, at)
        if self.since is None or at < self.since:
            self.since = at
        if len(self.departed) > DEPARTURE_BOUND:
            del self.departed[: len(self.departed) - DEPARTURE_BOUND]
            self.since = self.departed[0]

    def inside(self, now: int, ttl: int) -> Inside:
        """The places inside, read only: idle sessions not yet dropped count as departed."""
        low = now - HORIZON
        kept = self.departed[bisect.bisect_left(self.departed, low) :] if self.since is not None else []
        since = max(now if self.since is None else self.since, low)
        idle, left = 0, []
        for at in self.active.values():  # in the order of activity: the idle ones first
            if at > now - ttl:
                break
            idle += 1
            if at >= low - ttl:
                left.append(at + ttl)
        departed = len(kept) + len(left)
        start, silent = since, 0
        if departed:  # from one mean gap before the first departure (departures.lua inside)
            first, last = min(kept[:1] + left[:1]), max(kept[-1:] + left[-1:])
            silent = now - last
            if departed >= 2:
                start = max(min(since, first), first - (last - first) // (departed - 1))
        return Inside(len(self.active) - idle, departed, (now - start) / MICROS, silent / MICROS)

    def activate(self, sid: str, at: int) -> None:
        self.active.pop(sid, None)
        self.active[sid] = at


class MemoryRooms:
    """The room operations of the Store protocol, on this process's memory; MemoryStore holds one.

    Plain methods, never a coroutine: with no await inside, each operation is atomic on the event
    loop, as a Lua script is on Redis."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._rooms: dict[str, _RoomState] = {}

    def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        now = to_micros(self._clock())
        # The window is the half-open interval (now - window, now]: an admission exactly one
        # window old no longer counts, so no interval of that length holds more than new_sessions.
        state = self._room(room.name, now, room.window)
        log = state.log
        window, ttl, capped = to_micros(room.window), to_micros(room.ttl), bool(room.max_active)

        def refused(
            blocked_until: int, started: bool, *, holding: bool = False, spent: bool = False
        ) -> Admission:
            """As room_admit.lua's: with when the window's next place frees, and the cap's reading."""
            over = len(log) - room.new_sessions
            next_free = log[over][0] + window if over >= 0 else now
            inside = state.inside(now, ttl) if room.max_active else NOBODY_INSIDE
            return Admission(
                False,
                blocked_until / MICROS,
                started,
                now / MICROS,
                next_free / MICROS,
                inside,
                holding=holding,
                spent=spent,
            )

        if log.when(session_id) is not None:  # already admitted: asked again
            if state.ended(session_id, capped):  # a credential good for its one session only
                return refused(0, False, spent=True)
            return Admission(True, 0.0, False, now / MICROS)
        if now < state.blocked_until:
            return refused(state.blocked_until, False)
        if len(log) < room.new_sessions:
            counted = bool(room.places_per_ip and client)
            if counted:
                held = state.holds.count(
                    client,
                    now,
                    _hold_ttl(0, ttl, window),
                    lambda sid: state.holds_place(sid, now, window, ttl, capped),
                )
                if held >= room.places_per_ip:
                    return refused(0, False, holding=True)
            if room.max_active:
                if state.active_count(now, to_micros(room.ttl)) >= room.max_active:
                    return refused(0, False)  # full inside: no block
                state.activate(session_id, now)
            log.add(now, session_id)
            if counted:
                state.holds.add(client, session_id, now, _hold_ttl(0, ttl, window))
            return Admission(True, 0.0, False, now / MICROS)
        if room.block_for <= 0:  # no block: every new visitor is judged by the window alone
            return refused(0, True)
        state.blocked_until = now + to_micros(room.block_for)
        return refused(state.blocked_until, True)

    def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        # Follows room_queue.lua step by step.
        now = to_micros(self._clock())
        state = self._room(room.name, now, room.window)
        log, line = state.log, state.line
        line.born = line.born or now
        prequeue = now < to_micros(room.opens_at)
        hold = room.hold or prequeue
        window, ttl, capped = to_micros(room.window), to_micros(room.ttl), bool(room.max_active)
        admitted_at = log.when(session_id)
        if admitted_at is not None:
            line.leave(session_id)
            # An earlier ask got in but its answer was lost; or the ticket was used long ago (a
            # copy of it, kept), or its session ended since: no ticket, no second place.
            used = admitted_at <= now - to_micros(room.grace) or state.ended(session_id, capped)
            return Turn(not used, 0, 0, len(line.numbers), len(line.called), 0.0, now / MICROS, used=used)
        counted = bool(room.places_per_ip and client)
        hold_ttl = _hold_ttl(to_micros(room.abandon_after) + to_micros(room.grace), ttl, window)
        if counted:
            state.holds.keep(client, now, hold_ttl)  # the address asked: its holds stay
        if room.unheard_for:  # an outage the asking replica lived through (room_queue.lua)
            line.note_silence(now - to_micros(room.unheard_for), now)
        line.drop_stale(now, to_micros(room.abandon_after), to_micros(room.grace), _longer(room))
        line.lapsed.pop(session_id, None)  # its holder is back: it may be called again, first
        free = room.new_sessions - len(log) - len(line.called)
        if room.max_active:  # a place inside as well: the called tickets hold theirs already
            free = min(
                free, room.max_active - state.active_count(now, to_micros(room.ttl)) - len(line.called)
            )
        if not hold and free > 0:
            free -= line.call(free, now)
        length, called = len(line.numbers), len(line.called)
        window_free = room.new_sessions - len(log) - called  # the window's own (room_queue.lua)
        ttl = to_micros(room.ttl)
        inside = state.inside(now, ttl) if room.max_active else NOBODY_INSIDE

        def enter() -> None:
            log.add(now, session_id)
            if room.max_active:
                state.activate(session_id, now)

        lapsed = len(line.lapsed)

        def waiting(number: int, position: int, length: int) -> Turn:
            """A waiting ticket's answer; it is due back after its poll interval (room_queue.lua)."""
            # A called ticket's place counts as free now: its call may lapse, or its holder leave,
            # at any moment, and a ticket told to wait for it would come back after its turn.
            ahead = position - called - lapsed
            every = _interval(room, ahead, window_free + called, log, now, prequeue, hold)
            line.due_back(session_id, now + every)
            slot = _slot(position - called, room.new_sessions, window_free, log, now, room.window)
            return Turn(
                False,
                shown(number),
                position,
                length,
                called,
                slot,
                now / MICROS,
                prequeue,
                inside=inside,
                interval=every / MICROS,
                calls=line.calls,
                out=line.out,
                lapsed=lapsed,
                in_window=len(log),
                last_called=line.last_called,
                last_lapsed=line.last_lapsed,
                epoch=line.born,
            )

        number = line.tickets.get(session_id)
        if number is not None:
            if session_id in line.called:  # its turn has come
                line.leave(session_id)
                enter()
                return Turn(
                    True,
                    shown(number),
                    0,
                    length - 1,
                    called - 1,
                    0.0,
                    now / MICROS,
                    last_called=line.last_called,
                    last_lapsed=line.last_lapsed,
                    epoch=line.born,
                )
            return waiting(number, bisect.bisect_left(line.numbers, number), length)
        if counted:  # a newcomer: a place of any kind only while its address holds fewer
            limit = room.places_per_ip
            if prequeue and room.draws_per_ip:
                limit = min(limit, room.draws_per_ip)
            held = state.holds.count(
                client, now, hold_ttl, lambda sid: state.holds_place(sid, now, window, ttl, capped)
            )
            if held >= limit:
                return Turn(False, 0, 0, length, called, 0.0, now / MICROS, refused=True)
        if not hold and free > 0 and called == length:  # a place, and nobody waits for one
            enter()
            if counted:
                state.holds.add(client, session_id, now, hold_ttl)
            return Turn(True, 0, 0, length, called, 0.0, now / MICROS)
        if room.tickets_per_ip and client:
            issued, until = line.new_ticket_from(client, now)
            if issued > room.tickets_per_ip:
                return Turn(False, 0, 0, length, called, (until - now) / MICROS, now / MICROS, refused=True)
        if counted:
            state.holds.add(client, session_id, now, hold_ttl)
        if prequeue:
            number = prequeue_rank(room.seed, session_id)
        else:
            line.counter += 1
            number = AFTER_OPENING + line.counter
        line.join(session_id, now, number)
        return waiting(number, bisect.bisect_left(line.numbers, number), length + 1)

    def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        glance = self.still_here(room, [(sid, 0.0) for sid in session_ids])
        return sum(1 for rank in glance.ranks if rank is not None)

    def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        # Follows room_heartbeat.lua.
        now = to_micros(self._clock())
        state = self._rooms.get(room.name)
        if state is None:
            return LineGlance(now / MICROS, 0, 0, 0, 0, 0, 0, tuple(None for _ in beats))
        line = state.line
        # Read before any due-back time moves (room_heartbeat.lua).
        heard = 0 < line.last_ask < now and not line.silent(now, to_micros(room.grace), _longer(room))
        if heard or not line.last_ask:  # not after a silence that may be an outage (room_heartbeat.lua)
            line.drop_abandoned(now, to_micros(room.abandon_after))
        ranks: list[int | None] = []
        for session_id, due_in in beats:
            number = line.tickets.get(session_id)
            if number is None:
                ranks.append(None)
                continue
            line.due_back(session_id, now + to_micros(due_in), later_only=True)
            ranks.append(bisect.bisect_left(line.numbers, number))
        # Visitors reached a replica that reached the store: no outage (room_heartbeat.lua).
        if heard and any(rank is not None for rank in ranks):
            line.last_ask = now
        in_window = sum(1 for at, _ in state.log.entries() if at > now - to_micros(room.window))
        return LineGlance(
            now / MICROS,
            len(line.numbers),
            len(line.called),
            len(line.lapsed),
            in_window,
            line.calls,
            line.out,
            tuple(ranks),
        )

    def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        now = to_micros(self._clock())
        horizon = now - to_micros(ttl)
        state = self._rooms.setdefault(room, _RoomState())
        state.active_count(now, to_micros(ttl))  # drops (and notes) the idle ones, as room_touch.lua
        gone = []
        for session_id, ago in seen:
            at = now - max(0, to_micros(ago))
            current = state.active.get(session_id)
            if session_id in state.released:
                gone.append(session_id)
            elif current is not None and current > horizon:
                if current < at:
                    state.activate(session_id, at)
            elif at > horizon:  # not counted (any more): a place only if one is free
                if max_active and state.active_count(now, to_micros(ttl)) >= max_active:
                    gone.append(session_id)
                else:
                    state.activate(session_id, at)
        # Then the releases of the last RECENT_RELEASES seconds, the latest first, as room_touch.lua.
        recent, named = now - to_micros(RECENT_RELEASES), set(gone)
        for count, session_id in enumerate(reversed(state.released)):
            if count >= RECENT_RELEASES_MAX or state.released[session_id] <= recent:
                break
            if session_id not in named:
                gone.append(session_id)
        return gone

    def release(self, room: str, session_id: str, ttl: float) -> bool:
        now = to_micros(self._clock())
        state = self._rooms.setdefault(room, _RoomState())
        active = state.active.pop(session_id, None) is not None
        if active:
            state.keep_departures(now)
            state.depart(now, now)
        held = active or session_id in state.line.tickets
        state.line.give_up(session_id)
        released = state.released
        while released and next(iter(released.values())) <= now - to_micros(ttl):
            del released[next(iter(released))]
        released.pop(session_id, None)
        released[session_id] = now
        return held

    def queue_state(self, room: QueuePolicy) -> QueueState:
        now = to_micros(self._clock())
        state = self._rooms.get(room.name)
        if state is None:
            return QueueState(0, 0, 0.0, 0, (now - to_micros(room.window)) / MICROS, now / MICROS)
        line = state.line
        alive, fresh = now - to_micros(room.abandon_after), now - to_micros(room.grace)
        length = sum(1 for at in line.seen.values() if at > alive)
        called = sum(1 for at in line.called.values() if at > fresh)
        log = state.log
        log.prune(now - to_micros(room.window))  # what leaves the window would go at the next ask
        oldest = next(
            (line.joined[line.holders[n]] for n in line.numbers[:64] if line.seen[line.holders[n]] > alive), 0
        )
        free = max(0, room.new_sessions - len(log) - called)
        slot = _slot(length - called, room.new_sessions, free, log, now, room.window)
        inside = state.inside(now, to_micros(room.ttl)) if room.max_active and room.ttl else NOBODY_INSIDE
        return QueueState(
            length, called, (now - oldest) / MICROS if oldest else 0.0, len(log), slot, now / MICROS, inside
        )

    def _room(self, name: str, now: int, window: float) -> _RoomState:
        """A room's state with its log pruned to the window ending `now`."""
        state = self._rooms.get(name)
        if state is None:
            state = self._rooms[name] = _RoomState()
        state.log.prune(now - to_micros(window))
        return state

    def room_state(self, room: RoomPolicy) -> RoomState:
        now = to_micros(self._clock())
        state = self._rooms.get(room.name)
        if state is None:
            return RoomState(0, 0.0)
        state.log.prune(now - to_micros(room.window))  # what leaves the window would go at the next ask
        active = sum(1 for at in state.active.values() if at > now - to_micros(room.ttl))
        return RoomState(len(state.log), max(0, state.blocked_until - now) / MICROS, active)

    def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        """Count admissions made elsewhere (`(session id, time)`, times on the clock that read
        `now`) in the room's window, as of this store's clock."""
        # Follows room_record.lua.
        here = to_micros(self._clock())
        state = self._rooms.setdefault(room.name, _RoomState())
        cutoff = here - to_micros(room.window)
        ttl = to_micros(room.ttl)
        ticket_ids = {session_id for session_id, _ in tickets}
        for session_id, at in [*tickets, *admissions]:
            when = min(here, here - to_micros(now - at))
            was_called = session_id in state.line.called
            if session_id in ticket_ids and session_id not in state.line.tickets:
                continue  # the line lost it: no place is held for it here
            state.line.leave(session_id)
            if when > cutoff and state.log.when(session_id) is None:
                state.log.add(when, session_id)
            if (
                was_called
                and room.max_active
                and session_id not in state.released
                and state.active_count(here, ttl) < room.max_active
                and session_id not in state.active
            ):
                state.activate(session_id, here)

    def room_admissions(self, room: str) -> list[tuple[str, float]]:
        """The (session id, time in seconds) of a room's admissions still in its log."""
        state = self._rooms.get(room)
        return [(member, at / MICROS) for at, member in state.log.entries()] if state else []

    def clear(self) -> None:
        self._rooms.clear()

    def unblock(self, room: str) -> bool:
        state = self._rooms.get(room)
        if state is None or state.blocked_until <= to_micros(self._clock()):
            return False
        state.blocked_until = 0
        return True


HORIZON = round(DEPARTURE_HORIZON * MICROS)
"""µs of departures a record keeps."""


def prequeue_rank(seed: str, session_id: str) -> int:
    """A pre-queue ticket's place: a keyed hash of its id, as room_queue.lua computes it."""
    return int(hashlib.sha1((seed + session_id).encode()).hexdigest()[:12], 16)


def _hold_ttl(line: int, ttl: int, window: int) -> int:
    """How long an address's holds are kept after its last ask (µs), as holds.lua's hold_ttl."""
    return max(line, ttl, window) + 1_000_000


def _longer(room: QueuePolicy) -> int:
    """µs the longest poll interval adds to the gap between two asks of a quiet line."""
    if not room.retry_after:
        return 0
    return max(0, to_micros(room.max_retry_after) - to_micros(room.retry_after))


def _interval(
    room: QueuePolicy, ahead: int, free: int, log: AdmissionLog, now: int, prequeue: bool, hold: bool
) -> int:
    """A waiting ticket's poll interval (µs), `ahead` uncalled, unlapsed tickets from the head: half
    the time until its turn could come at the earliest, within [retry_after, max_retry_after]
    (room_queue.lua's interval())."""
    retry = to_micros(room.retry_after)
    if retry <= 0:
        return 0
    longest = max(retry, to_micros(room.max_retry_after))
    earliest = 0
    if prequeue:
        earliest = to_micros(room.opens_at) - now
    elif not hold:
        ahead = max(0, ahead)
        window = to_micros(room.window)
        first = to_micros(_slot(ahead, room.new_sessions, free, log, now, room.window)) + window
        earliest = ahead // room.new_sessions * window + max(0, first - now)
    return min(longest, max(retry, earliest // 2))


def _slot(k: int, new_sessions: int, free: int, log: AdmissionLog, now: int, window: float) -> float:
    """When the place of the k-th uncalled ticket frees up (see Turn.slot and room_queue.lua)."""
    index = k % new_sessions
    open_ = max(0, free)
    if index < open_:
        return (now - to_micros(window)) / MICROS
    index -= open_
    if index < len(log):
        return log[index][0] / MICROS
    return now / MICROS
