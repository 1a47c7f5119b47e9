"""A replica's view of each busy `fifo` line: polls far from the head answered with no store call.

A poll of a waiting ticket costs a store round trip (room_queue.lua) although, far back in a long
line, the answer cannot change: the ticket is not called before its next poll. The view keeps, per
room, the line's state as the store last said it (a LineGlance: read from every waiting ticket's
answer, and from the batched heartbeat's answer, so at most about a second old in a busy room) and
answers such a poll itself: position, estimate and the next poll interval, never an admission and
never a new ticket. The ticket's "still here" (its id and when it is due back) is queued and sent
in one `still_here` call per room per FLUSH_EVERY, whose answer brings each ticket's place and the
line's counters back.

Why a cached answer is safe: a ticket's *mark* (signed into its cookie, sessions.MARKED; or learnt
from a heartbeat) says that when the line's served counter (tickets called plus tickets that left,
ever: room_queue.lua KEYS[13]) stood at `s`, at least `b` uncalled, unlapsed tickets were ahead of
it. Each of those is called or leaves before it is called, and each of those counts once, so while
the counter stands at `S`, at least `b - (S - s)` are still ahead. The view answers only when that
many cannot all be called before the ticket's next poll, however the window's places free up: at
most the places free now plus `new_sessions` per window started over the view's age, the interval,
the page's lateness and a margin. Tickets that leave from ahead (abandoned, released) make the turn
come sooner than any store answer could tell either; the store's own interval assumes the same.

A ticket's next poll goes to the store when the view is older than FRESH, when the room is held or
before its opening, when the ticket has no mark, and after a heartbeat flush failed (or said the
ticket is gone), so that no ticket is lost silently. The embedded store has no view: its "round
trip" is a function call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from waitroom.metrics import METRICS
from waitroom.store.base import (
    NOBODY_INSIDE,
    Inside,
    LineGlance,
    LineStore,
    Overloaded,
    QueuePolicy,
    StoreError,
    Turn,
)

log = logging.getLogger(__name__)

FRESH = 1.5
"""Seconds a room's view may be old and still answer a poll."""
FLUSH_EVERY = 1.0
"""Seconds between two heartbeat flushes of one room."""
LATENESS = 0.3
"""The page polls up to this × retry_after after the interval it was given (its jitter)."""
MARGIN = 1.0
"""Seconds more, for the store's answer's own delay and the clocks' rounding."""
BATCH = 1000
"""Heartbeats per store call at most: a 1M-ticket line takes ~15 µs of Redis time per heartbeat
(bench/line_million.py), so one call stays within ~15 ms; a busier second is sent in several."""
MAX_KNOWN = 100_000
"""Tickets per room whose place a heartbeat told (beyond it the oldest half is forgotten: their
cookies' marks still serve)."""


@dataclass(frozen=True, slots=True)
class Cached:
    """A poll answered from the view."""

    position: int
    """Live tickets ahead, at least (the view's lower bound)."""
    length: int
    called: int
    interval: int
    """Whole seconds until the next poll."""
    mark: tuple[int, int]
    """The mark to sign into the renewed ticket."""
    now: float
    """The store's clock, as the view reckons it now."""
    inside: Inside


@dataclass(slots=True)
class _Room:
    policy: QueuePolicy
    glance: LineGlance | None = None
    read_at: float = 0.0
    """The local clock when `glance` came."""
    inside: Inside = NOBODY_INSIDE
    beats: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Session id → (interval, when answered): heartbeats not sent yet."""
    known: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Session id → mark, from the last heartbeat's ranks."""
    unsure: set[str] = field(default_factory=set)
    """Tickets whose next poll goes to the store (their heartbeat failed, or they are gone)."""


def mark_of(turn: Turn) -> tuple[int, int]:
    """A waiting ticket's mark from the store's answer (see the module's docstring)."""
    return max(0, turn.position - turn.called - turn.lapsed), turn.calls + turn.out


class LineView:
    """The `fifo` rooms' views on one replica, and their batched heartbeats."""

    def __init__(
        self,
        store: LineStore,
        clock: Callable[[], float],
        schedule_flush: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.schedule_flush = schedule_flush
        """How a flush is started: None, a timer on the running loop (the proxy)."""
        self._rooms: dict[str, _Room] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def learn(self, policy: QueuePolicy, turn: Turn, sid: str) -> None:
        """The store answered a waiting ticket of the room: the freshest view of its line."""
        room = self._room(policy)
        room.unsure.discard(sid)
        if turn.prequeue or turn.admitted or turn.refused or turn.used:
            return
        glance = LineGlance(
            turn.now, turn.queue_length, turn.called, turn.lapsed, turn.in_window, turn.calls, turn.out
        )
        self._see(room, glance, self.clock())
        room.inside = turn.inside

    def answer(self, policy: QueuePolicy, sid: str, mark: tuple[int, int] | None) -> Cached | None:
        """The answer to a poll of ticket `sid` (its cookie's `mark`) if the view may give it, else
        None (ask the store). A given answer queues the ticket's heartbeat."""
        state = self._rooms.get(policy.name)
        now = self.clock()
        if state is None or state.glance is None or sid in state.unsure or policy.hold:
            return None
        if policy.opens_at and state.glance.now < policy.opens_at:
            return None  # before the opening: the pre-queue is the store's
        state.policy = policy  # the run-time knobs in force, for the heartbeat
        age = now - state.read_at
        if not 0 <= age <= FRESH:
            return None
        glance = state.glance
        served = glance.calls + glance.out
        ahead = _ahead(mark, state.known.get(sid), served)
        if ahead is None or ahead <= 0 or ahead > glance.length:
            return None  # no mark, near the head, or a mark from another life of the line
        retry = max(1, math.ceil(policy.retry_after))
        longest = max(retry, math.floor(policy.max_retry_after))
        window, per_window = policy.window, policy.new_sessions
        earliest = ahead // per_window * window
        interval = min(longest, max(retry, math.floor(earliest / 2)))
        horizon = age + interval + LATENESS * retry + MARGIN
        free = max(0, per_window - glance.in_window - glance.called)
        if free + per_window * (math.ceil(horizon / window) + 1) > ahead:
            return None  # it might be called before it polls again: the store decides
        state.beats[sid] = (interval, now)
        self._plan_flush()
        return Cached(
            position=ahead + glance.called + glance.lapsed,
            length=max(glance.length, ahead + glance.called + glance.lapsed + 1),
            called=glance.called,
            interval=interval,
            mark=(ahead, served),
            now=glance.now + age,
            inside=state.inside.later(age),
        )

    async def flush(self) -> None:
        """Send each room's queued heartbeats, one call per room; learn the line and the places."""
        for state in list(self._rooms.values()):
            pending, state.beats = list(state.beats.items()), {}
            for start in range(0, len(pending), BATCH):
                await self._send(state, dict(pending[start : start + BATCH]))

    async def _send(self, state: _Room, beats: dict[str, tuple[int, float]]) -> None:
        now = self.clock()
        sent = [(sid, max(0.0, interval - (now - at))) for sid, (interval, at) in beats.items()]
        try:
            glance = await self.store.still_here(state.policy, sent)
        except (StoreError, Overloaded) as e:
            # Their due-back times were not moved: each of their next polls asks the store.
            state.unsure.update(beats)
            METRICS.line.view_heartbeats.labels(state.policy.name, "failed").inc(len(beats))
            log.debug("line view of room %s: heartbeats not sent: %s", state.policy.name, e)
            return
        METRICS.line.view_heartbeats.labels(state.policy.name, "sent").inc(len(beats))
        self._see(state, glance, self.clock())
        served = glance.calls + glance.out
        if len(state.known) + len(beats) > MAX_KNOWN:
            for sid in list(state.known)[: len(state.known) // 2]:
                del state.known[sid]
        for (sid, _), rank in zip(sent, glance.ranks, strict=False):
            if rank is None:
                state.unsure.add(sid)
                state.known.pop(sid, None)
            else:
                state.known[sid] = (max(0, rank - glance.called - glance.lapsed), served)

    def _see(self, state: _Room, glance: LineGlance, at: float) -> None:
        """A newer reading of the line replaces the view's (an older one that came late does not)."""
        if state.glance is None or glance.now >= state.glance.now:
            state.glance, state.read_at = glance, at

    def _room(self, policy: QueuePolicy) -> _Room:
        state = self._rooms.get(policy.name)
        if state is None:
            state = self._rooms[policy.name] = _Room(policy)
        state.policy = policy  # the run-time knobs in force
        return state

    def _plan_flush(self) -> None:
        if self.schedule_flush is not None:
            self.schedule_flush()
            return
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test): flush() is called by hand
            return
        self._timer = loop.call_later(FLUSH_EVERY, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is not None and not self._flushing.done():  # one flush at a time
            self._plan_flush()
            return
        self._flushing = asyncio.get_running_loop().create_task(self.flush())


def _ahead(mark: tuple[int, int] | None, known: tuple[int, int] | None, served: int) -> int | None:
    """Uncalled tickets still ahead, at least, by the best of the marks (None: no mark)."""
    best = None
    for given in (mark, known):
        if given is not None:
            ahead = given[0] - (served - given[1])
            best = ahead if best is None else max(best, ahead)
    return best
