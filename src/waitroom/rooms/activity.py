"""Sessions inside a room: their activity for the cap (`rooms[].max_active`), and releases.

A returning visitor's request does no I/O: `seen` notes the session's activity in memory, at most
once per TOUCH_EVERY per session, and a background task sends what was noted, one store call per
room, FLUSH_EVERY after the first note it carries (ActivityStore.touch). So the cap's count of
active sessions lags real activity by a few seconds, and the store counts a session for SLACK seconds
past `session.ttl` so that the lag does not drop sessions still in use.

The cap does not rest on that timing. Only the store gives places, and it gives one only while fewer
than `max_active` are counted — at admission, and to a late note of a session it stopped counting
(ActivityStore.touch answers it as gone, and this replica stops honouring its cookie). So the count
in the store never passes the cap, whatever the delay of notes, flushes or replies.

A released session (the upstream's `Waitroom-Command: release`, or the leave path) frees its place
in the store at once, and its cookie stops being honoured: at once on the replica that released it,
and on the others with their next flush, whose answer names every session released in the last
store.base.RECENT_RELEASES seconds. While a room's sessions make requests, a replica flushes that room every
FLUSH_EVERY even with no activity to note, so a released cookie replayed on another replica is
honoured there at most FLUSH_EVERY + one store call (store.timeout) after the release.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from waitroom.metrics import METRICS
from waitroom.store.base import ActivityStore, Overloaded, StoreError

log = logging.getLogger(__name__)

TOUCH_EVERY = 5.0
"""Seconds between two notes of one session's activity."""
FLUSH_EVERY = 1.0
"""Seconds between two flushes of the noted activity to the store."""
SLACK = TOUCH_EVERY + FLUSH_EVERY + 2.0
"""How much longer than `session.ttl` the store keeps counting an idle session. A session's last
activity reaches the store up to TOUCH_EVERY + FLUSH_EVERY late (plus a busy loop's delay); with the
slack, a session in use is not dropped meanwhile. Were it dropped (a longer stall), its late note
finds its place given away when the room is full and the session ends: the cap holds either way."""


def active_ttl(session_ttl: float) -> float:
    """How long the store counts an idle session as active (see SLACK)."""
    return session_ttl + SLACK


MAX_NOTED = 100_000
"""Sessions remembered per process (noted activity and released ids each): beyond it, the oldest
half is forgotten (a forgotten note costs one extra touch; a forgotten release is learnt again)."""


class Activity:
    def __init__(
        self,
        store: ActivityStore,
        ttl: float,
        clock: Callable[[], float],
        schedule_flush: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.schedule_flush = schedule_flush
        """How a flush is started: None, a task on the running loop (the proxy); `waitroom simulate`,
        whose loop runs on a virtual clock, puts a flush event at the current virtual time instead."""
        self._last: dict[tuple[str, str], float] = {}
        """(room, session id) → when its activity was last noted."""
        self._pending: dict[str, dict[str, float]] = {}
        """Room → session id → activity not sent yet."""
        self._caps: dict[str, int] = {}
        """Room → its max_active when its activity was last noted (the store gives places by it)."""
        self._released: dict[str, dict[str, float]] = {}
        """Room → session ids released (here, or learnt from a flush) → when."""
        self._next_flush = 0.0
        self._flushing: asyncio.Task[None] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def released(self, room: str, session_id: str) -> bool:
        ids = self._released.get(room)
        return ids is not None and session_id in ids

    def seen(self, room: str, session_id: str, now: float, max_active: int) -> None:
        """A request of this session, in a room with a cap of `max_active`: note it (no I/O), and
        make sure the room is flushed within FLUSH_EVERY, noted or not: the flush's answer is how
        this replica learns of the releases made elsewhere."""
        key = (room, session_id)
        noted = self._pending.setdefault(room, {})
        self._caps[room] = max_active
        if now - self._last.get(key, -TOUCH_EVERY) >= TOUCH_EVERY:
            if len(self._last) >= MAX_NOTED:
                _forget_oldest_half(self._last)
            self._last[key] = now
            noted[session_id] = now
        if self.schedule_flush is not None:
            if now >= self._next_flush:
                self._next_flush = now + FLUSH_EVERY
                self.schedule_flush()
        elif self._flush_timer is None:
            # Every note is sent within FLUSH_EVERY, whether or not another request follows it.
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(max(0.0, self._next_flush - now), self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        loop = asyncio.get_running_loop()
        if self._flushing is not None and not self._flushing.done():  # one flush at a time
            self._flush_timer = loop.call_later(FLUSH_EVERY, self._start_flush)
            return
        self._next_flush = self.clock() + FLUSH_EVERY
        self._flushing = loop.create_task(self.flush())

    async def flush(self) -> None:
        """Send the noted activity, one call per room; learn the releases made elsewhere."""
        pending, self._pending = self._pending, {}
        now = self.clock()
        for room, seen in pending.items():
            try:
                ages = [(sid, now - at) for sid, at in seen.items()]
                gone = await self.store.touch(room, self.ttl, ages, self._caps.get(room, 0))
            except (StoreError, Overloaded) as e:  # the next notes come within TOUCH_EVERY
                log.debug("activity of room %s not sent: %s", room, e)
                continue
            except Exception as e:  # a bug: the cap's count goes stale, requests are not affected
                log.warning("waitroom: the activity of room %s was not sent: %s", room, type(e).__name__)
                continue
            for session_id in gone:
                self._remember(room, session_id, now)

    def revoke(self, room: str, session_id: str) -> None:
        """This replica no longer honours the session's cookie (at once, no I/O)."""
        self._remember(room, session_id, self.clock())
        self._last.pop((room, session_id), None)

    async def release(self, room: str, session_id: str, source: str) -> bool:
        """End a session (or drop a ticket) now. Raises StoreError/Overloaded when the store could
        not be told; the id is not honoured here any more either way."""
        self.revoke(room, session_id)
        held = await self.store.release(room, session_id, self.ttl)
        METRICS.capacity.releases.labels(room, source).inc()
        return held

    def _remember(self, room: str, session_id: str, now: float) -> None:
        ids = self._released.setdefault(room, {})
        while ids and next(iter(ids.values())) < now - self.ttl:  # no cookie outlives the ttl
            del ids[next(iter(ids))]
        if len(ids) >= MAX_NOTED:
            _forget_oldest_half(ids)
        ids[session_id] = now


def _forget_oldest_half[K](table: dict[K, float]) -> None:
    for key in list(table)[: len(table) // 2]:
        del table[key]
