"""Sessions inside a room: their activity for the cap (`rooms[].max_active`), and releases.

A returning visitor's request does no I/O: `seen` notes the session's activity in memory, at most
once per TOUCH_EVERY per session, and a background task sends what was noted, one store call per
room, at most once per FLUSH_EVERY per process (Store.touch). So the cap's count of active sessions
lags real activity by a few seconds at most, and the store counts a session for SLACK seconds past
`session.ttl` so that the lag can never let the count pass the cap.

A released session (the upstream's `Waitroom-Command: release`, or the leave path) frees its place
in the store at once, and its cookie stops being honoured: at once on the replica that released it,
and on the others with their next flush, whose answer names the released sessions they still see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from waitroom.metrics import METRICS
from waitroom.store import Overloaded, Store, StoreError

log = logging.getLogger(__name__)

TOUCH_EVERY = 5.0
"""Seconds between two notes of one session's activity."""
FLUSH_EVERY = 1.0
"""Seconds between two flushes of the noted activity to the store."""
SLACK = TOUCH_EVERY + FLUSH_EVERY + 2.0
"""How much longer than `session.ttl` the store keeps counting an idle session. A session's last
activity reaches the store up to TOUCH_EVERY + FLUSH_EVERY late (plus a busy loop's delay); were it
dropped from the count meanwhile, the late touch would count it again after a newcomer took its
place, and the room would hold one more than its cap. With the slack, the store drops a session only
after its cookie has expired: a touch can bring back only a session the store never counted (one
from before the cap was set)."""


def active_ttl(session_ttl: float) -> float:
    """How long the store counts an idle session as active (see SLACK)."""
    return session_ttl + SLACK


MAX_NOTED = 100_000
"""Sessions remembered per process (noted activity and released ids each): beyond it, the oldest
half is forgotten (a forgotten note costs one extra touch; a forgotten release is learnt again)."""


class Activity:
    def __init__(self, store: Store, ttl: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        """(room, session id) → when its activity was last noted."""
        self._pending: dict[str, dict[str, float]] = {}
        """Room → session id → activity not sent yet."""
        self._released: dict[str, dict[str, float]] = {}
        """Room → session ids released (here, or learnt from a flush) → when."""
        self._next_flush = 0.0
        self._flushing: asyncio.Task[None] | None = None

    def released(self, room: str, session_id: str) -> bool:
        ids = self._released.get(room)
        return ids is not None and session_id in ids

    def seen(self, room: str, session_id: str, now: float) -> None:
        """A request of this session, in a room with a cap: note it (no I/O)."""
        key = (room, session_id)
        if now - self._last.get(key, -TOUCH_EVERY) < TOUCH_EVERY:
            return
        if len(self._last) >= MAX_NOTED:
            _forget_oldest_half(self._last)
        self._last[key] = now
        self._pending.setdefault(room, {})[session_id] = now
        if now >= self._next_flush and (self._flushing is None or self._flushing.done()):
            self._next_flush = now + FLUSH_EVERY
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        """Send the noted activity, one call per room; learn the releases made elsewhere."""
        pending, self._pending = self._pending, {}
        now = self.clock()
        for room, seen in pending.items():
            try:
                gone = await self.store.touch(room, self.ttl, [(sid, now - at) for sid, at in seen.items()])
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
        METRICS.releases.labels(room, source).inc()
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
