"""The embedded store's rooms: admission windows, blocks, active sessions and `fifo` lines.

Kept apart from the rate limiter's key table (memory.py), which shares nothing with it but the clock:
MemoryStore inherits these operations, so both halves stay one object behind the Store protocol."""

from __future__ import annotations

import bisect
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from waitroom.store.base import MICROS, Admission, Clock, QueuePolicy, QueueState, RoomPolicy, RoomState, Turn
from waitroom.store.memory_line import _Line


def _us(seconds: float) -> int:
    """Times and durations are whole microseconds inside, as in the Lua scripts: both stores then
    make the same decision at a window's exact edge, where float seconds would round either way."""
    return round(seconds * MICROS)


@dataclass(slots=True)
class _RoomState:
    log: deque[tuple[int, str]] = field(default_factory=deque)
    """(admission time in µs, session id) inside the window, oldest first: O(new_sessions) memory."""
    blocked_until: int = 0
    line: _Line = field(default_factory=_Line)
    active: dict[str, int] = field(default_factory=dict)
    """Session id → last activity, in the order of that activity (only with max_active)."""
    released: dict[str, int] = field(default_factory=dict)
    """Session id → when it was released, oldest first."""

    def active_count(self, now: int, ttl: int) -> int:
        """Sessions active now, after dropping those idle for `ttl`."""
        while self.active:
            sid, at = next(iter(self.active.items()))
            if at > now - ttl:
                break
            del self.active[sid]
        return len(self.active)

    def activate(self, sid: str, at: int) -> None:
        self.active.pop(sid, None)
        self.active[sid] = at


class MemoryRooms:
    """The room operations of the Store protocol, on this process's memory (see MemoryStore)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._rooms: dict[str, _RoomState] = {}

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        # No await inside: on one event loop this whole decision is atomic, like the Lua script.
        now = _us(self._clock())
        # The window is the half-open interval (now - window, now]: an admission exactly one
        # window old no longer counts, so no interval of that length holds more than new_sessions.
        state = self._room(room.name, now, room.window)
        log = state.log
        if any(member == session_id for _, member in log):  # already admitted: asked again
            return Admission(True, 0.0, False, now / MICROS)
        if now < state.blocked_until:
            return Admission(False, state.blocked_until / MICROS, False, now / MICROS)
        if len(log) < room.new_sessions:
            if room.max_active:
                if state.active_count(now, _us(room.ttl)) >= room.max_active:
                    return Admission(False, 0.0, False, now / MICROS)  # full inside: no block
                state.activate(session_id, now)
            log.append((now, session_id))
            return Admission(True, 0.0, False, now / MICROS)
        if room.block_for <= 0:  # no block: every new visitor is judged by the window alone
            return Admission(False, 0.0, True, now / MICROS)
        state.blocked_until = now + _us(room.block_for)
        return Admission(False, state.blocked_until / MICROS, True, now / MICROS)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        # No await inside: atomic on the event loop, like room_queue.lua (which it follows step by step).
        now = _us(self._clock())
        state = self._room(room.name, now, room.window)
        log, line = state.log, state.line
        prequeue = now < _us(room.opens_at)
        hold = room.hold or prequeue
        admitted_at = next((at for at, member in log if member == session_id), None)
        if admitted_at is not None:
            line.leave(session_id)
            # An earlier ask got in but its answer was lost; or the ticket was used long ago (a
            # copy of it, kept): no ticket, no second place.
            used = admitted_at <= now - _us(room.grace)
            return Turn(not used, 0, 0, len(line.numbers), len(line.called), 0.0, now / MICROS, used=used)
        line.drop_stale(now, _us(room.abandon_after), _us(room.grace))
        free = room.new_sessions - len(log) - len(line.called)
        if room.max_active:  # a place inside as well: the called tickets hold theirs already
            free = min(free, room.max_active - state.active_count(now, _us(room.ttl)) - len(line.called))
        if not hold and free > 0:
            free -= line.call(free, now)
        length, called = len(line.numbers), len(line.called)

        def enter() -> None:
            log.append((now, session_id))
            if room.max_active:
                state.activate(session_id, now)

        number = line.tickets.get(session_id)
        if number is not None:
            if session_id in line.called:  # its turn has come
                line.leave(session_id)
                enter()
                return Turn(True, _shown(number), 0, length - 1, called - 1, 0.0, now / MICROS)
            line.seen.pop(session_id)
            line.seen[session_id] = now  # to the end: the order of last asks
            position = bisect.bisect_left(line.numbers, number)
            slot = _slot(position - called, room.new_sessions, free, log, now, room.window)
            return Turn(False, _shown(number), position, length, called, slot, now / MICROS, prequeue)
        if not hold and free > 0 and called == length:  # a place, and nobody waits for one
            enter()
            return Turn(True, 0, 0, length, called, 0.0, now / MICROS)
        if room.tickets_per_ip and client:
            issued, until = line.tickets_from.get(client, (0, 0))
            if until <= now:
                issued, until = 0, now + 60 * MICROS
            line.tickets_from[client] = (issued + 1, until)
            if issued + 1 > room.tickets_per_ip:
                return Turn(False, 0, 0, length, called, (until - now) / MICROS, now / MICROS, refused=True)
        if prequeue:
            number = prequeue_rank(room.seed, session_id)
        else:
            line.counter += 1
            number = AFTER_OPENING + line.counter
        line.join(session_id, now, number)
        position = bisect.bisect_left(line.numbers, number)
        slot = _slot(position - called, room.new_sessions, free, log, now, room.window)
        return Turn(False, _shown(number), position, length + 1, called, slot, now / MICROS, prequeue)

    async def touch(self, room: str, ttl: float, seen: Sequence[tuple[str, float]]) -> list[str]:
        now = _us(self._clock())
        state = self._rooms.setdefault(room, _RoomState())
        gone = []
        for session_id, ago in seen:
            if session_id in state.released:
                gone.append(session_id)
            else:
                at = now - max(0, _us(ago))
                if state.active.get(session_id, at - 1) < at:
                    state.activate(session_id, at)
        return gone

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        now = _us(self._clock())
        state = self._rooms.setdefault(room, _RoomState())
        held = state.active.pop(session_id, None) is not None or session_id in state.line.tickets
        state.line.leave(session_id)
        released = state.released
        while released and next(iter(released.values())) <= now - _us(ttl):
            del released[next(iter(released))]
        released.pop(session_id, None)
        released[session_id] = now
        return held

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        now = _us(self._clock())
        state = self._rooms.get(room.name)
        if state is None:
            return QueueState(0, 0, 0.0, 0, (now - _us(room.window)) / MICROS, now / MICROS)
        line = state.line
        alive, fresh = now - _us(room.abandon_after), now - _us(room.grace)
        cutoff = now - _us(room.window)
        length = sum(1 for at in line.seen.values() if at > alive)
        called = sum(1 for at in line.called.values() if at > fresh)
        log = [entry for entry in state.log if entry[0] > cutoff]
        oldest = next(
            (line.joined[line.holders[n]] for n in line.numbers[:64] if line.seen[line.holders[n]] > alive), 0
        )
        free = max(0, room.new_sessions - len(log) - called)
        slot = _slot(length - called, room.new_sessions, free, log, now, room.window)
        return QueueState(
            length, called, (now - oldest) / MICROS if oldest else 0.0, len(log), slot, now / MICROS
        )

    def _room(self, name: str, now: int, window: float) -> _RoomState:
        """A room's state with its log pruned to the window ending `now`."""
        state = self._rooms.get(name)
        if state is None:
            state = self._rooms[name] = _RoomState()
        log, cutoff = state.log, now - _us(window)
        while log and log[0][0] <= cutoff:
            log.popleft()
        return state

    async def room_state(self, room: RoomPolicy) -> RoomState:
        now = _us(self._clock())
        state = self._rooms.get(room.name)
        if state is None:
            return RoomState(0, 0.0)
        cutoff = now - _us(room.window)
        active = sum(1 for at in state.active.values() if at > now - _us(room.ttl))
        return RoomState(
            sum(1 for t, _ in state.log if t > cutoff), max(0, state.blocked_until - now) / MICROS, active
        )

    async def record(self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float) -> None:
        """Count admissions made elsewhere (`(session id, time)`, times on the clock that read
        `now`) in the room's window, as of this store's clock."""
        here = _us(self._clock())
        state = self._rooms.setdefault(room.name, _RoomState())
        known = {member for _, member in state.log}
        cutoff = here - _us(room.window)
        for session_id, at in admissions:
            when = here - _us(now - at)
            if when > cutoff and session_id not in known:
                state.log.append((when, session_id))
        state.log = deque(sorted(state.log))

    def room_admissions(self, room: str) -> list[tuple[str, float]]:
        """The (session id, time in seconds) of a room's admissions still in its log."""
        state = self._rooms.get(room)
        return [(member, at / MICROS) for at, member in state.log] if state else []

    async def unblock(self, room: str) -> bool:
        state = self._rooms.get(room)
        if state is None or state.blocked_until <= _us(self._clock()):
            return False
        state.blocked_until = 0
        return True


AFTER_OPENING = 2**48
"""Tickets numbered by the counter come after every pre-queue ticket (numbered by a 48-bit hash)."""


def prequeue_rank(seed: str, session_id: str) -> int:
    """A pre-queue ticket's place: a keyed hash of its id, as room_queue.lua computes it."""
    return int(hashlib.sha1((seed + session_id).encode()).hexdigest()[:12], 16)


def _shown(number: int) -> int:
    """The number a ticket shows: its place in arrival order, 0 in the pre-queue."""
    return number - AFTER_OPENING if number >= AFTER_OPENING else 0


def _slot(
    k: int, new_sessions: int, free: int, log: Sequence[tuple[int, str]], now: int, window: float
) -> float:
    """When the place of the k-th uncalled ticket frees up (see Turn.slot and room_queue.lua)."""
    index = k % new_sessions
    open_ = max(0, free)
    if index < open_:
        return (now - _us(window)) / MICROS
    index -= open_
    if index < len(log):
        return log[index][0] / MICROS
    return now / MICROS
