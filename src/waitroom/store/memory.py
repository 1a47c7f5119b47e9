"""The embedded store (`memory://`): one process, nothing to install, the same algorithms as Redis."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from waitroom.metrics import METRICS
from waitroom.store import algorithms as alg
from waitroom.store.base import (
    MICROS,
    Admission,
    Clock,
    LineGlance,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Tickets,
    Turn,
    to_micros,
)
from waitroom.store.memory_rooms import MemoryRooms

__all__ = [
    "EVICTION_SCAN",
    "FULL_SWEEP_INTERVAL",
    "MAX_KEYS",
    "OVERFLOW_KEY",
    "SWEEP_EVERY",
    "MemoryRates",
    "MemoryStore",
]


@dataclass(slots=True)
class _RateState:
    window: alg.WindowCounters = field(default_factory=alg.WindowCounters)
    log: deque[float] | None = None
    """sliding_log only (an empty deque costs ~600 bytes: not made for every key)."""
    tat: float = 0.0
    """gcra's theoretical arrival time, in µs like every time here (as in the Lua script)."""
    idle_after: float = 0.0
    """When this key's state no longer matters (then it may be dropped)."""
    spent_until: float = 0.0
    """A key that used up its quota (a check refused it, or allowed its last request) is never
    evicted before this: until its state no longer matters. So a full table never frees a client
    at its limit."""


SWEEP_EVERY = 10_000
"""Rate-limit hits between sweeps of idle keys: memory stays proportional to active clients."""
MAX_KEYS = 100_000
"""Rate-limit keys held at once by default (`store.max_keys`; about 400 bytes each, ~40 MB in all).
When a new key finds the table full, the keys whose state no longer matters (idle: their window has
passed) are dropped, which changes no decision. If it is still full, the least recently used key
that still has quota left is evicted (see EVICTION_SCAN): a key that has used up its quota is never
evicted, so no flood of new keys frees a client at its limit, and a stranger always gets a quota of
its own. The price: a client evicted while under its limit starts afresh, so it may get up to one
more quota in that `per` — and only after `max_keys` more recent keys came. Only when every key
scanned is at its limit does the new key share its rule's one *overflow* key (fewer requests for
those clients together than separately, never more)."""
EVICTION_SCAN = 64
"""Keys looked at, oldest use first, for one to evict: keys at their limit that are passed over go
to the back, so a scan never sees them again before every other key."""
OVERFLOW_KEY = "~overflow"
FULL_SWEEP_INTERVAL = 1_000_000
"""µs between two sweeps forced by a full table: a flood of new keys costs one O(n) sweep a second."""


class MemoryStore:
    """The whole Store protocol in this process's memory: the rooms (memory_rooms.py), the rate
    limiter's keys and the run-time overrides. The rooms and the keys share nothing but the clock."""

    def __init__(self, clock: Clock = time.time, max_keys: int = MAX_KEYS) -> None:
        self.rooms = MemoryRooms(clock)
        self.rates = MemoryRates(clock, max_keys)
        self._overrides: dict[str, str] = {}
        self._epoch = "memory"
        """Never changes: this store's data lives as long as the process (and the store)."""

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        return self.rooms.admit(room, session_id, client)

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        self.rooms.record(room, admissions, now, tickets)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        return self.rooms.room_state(room)

    async def unblock(self, room: str) -> bool:
        return self.rooms.unblock(room)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        return self.rooms.queue(room, session_id, client)

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        return self.rooms.queue_state(room)

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        return self.rooms.heartbeat(room, session_ids)

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        return self.rooms.still_here(room, beats)

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        return self.rooms.touch(room, ttl, seen, max_active)

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        return self.rooms.release(room, session_id, ttl)

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        return self.rates.hit(checks)

    async def overrides(self) -> dict[str, str]:
        return dict(self._overrides)

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        return dict(self._overrides), self._epoch

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        for name, value in changes.items():
            if value is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = value

    async def close(self) -> None:
        self.rooms.clear()
        self.rates.clear()


class MemoryRates:
    """The rate limiter's keys, one state per (rule, algorithm, client key), bounded by `max_keys`.

    Plain methods, never a coroutine: with no await inside, a hit is atomic on the event loop, as
    rate_limit.lua is on Redis."""

    def __init__(self, clock: Clock, max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._rates: OrderedDict[tuple[str, str, str], _RateState] = OrderedDict()
        """In the order of last use (a linked list: the oldest is O(1) to find and move)."""
        self.max_keys = max_keys
        """The table's bound (store.max_keys); a reload may change it on a running store."""
        self._next_full_sweep = 0
        self.overflowed = 0
        """Hits counted in an overflow key because the table was full (see MAX_KEYS)."""
        self.evicted = 0
        """Keys evicted under their limit to make room for a new one (see MAX_KEYS)."""
        self._hits_since_sweep = 0

    def __len__(self) -> int:
        """Keys holding state, the overflow keys included."""
        return len(self._rates)

    def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        now = to_micros(self._clock())
        states = [self._rate_state(c, now) for c in checks]
        verdicts = [_check(c, st, now) for c, st in zip(checks, states, strict=True)]
        enforced_refusal = any(not v.allowed and not c.shadow for c, v in zip(checks, verdicts, strict=True))
        for check, state, verdict in zip(checks, states, verdicts, strict=True):
            if verdict.allowed and not enforced_refusal:
                _charge(check, state, now, math.floor(verdict.delay))
            if not verdict.allowed or verdict.remaining == 0:  # refused, its last, or a reservation
                # Until its state no longer matters: a sliding window's count weighs on for `per`
                # after its window ends, which reset_after does not cover.
                state.spent_until = max(state.spent_until, state.idle_after, now + verdict.reset_after)
        self._maybe_sweep(now)
        # Whole µs, as the Lua script answers.
        return [
            RateResult(
                v.allowed, v.remaining, math.floor(v.reset_after) / MICROS, math.floor(v.delay) / MICROS
            )
            for v in verdicts
        ]

    def _rate_state(self, check: RateCheck, now: int) -> _RateState:
        ident = (check.rule, check.algorithm, check.key)
        state = self._rates.get(ident)
        if state is not None:
            self._rates.move_to_end(ident)
            return state
        if len(self._rates) >= self.max_keys and now >= self._next_full_sweep:
            self._next_full_sweep = now + FULL_SWEEP_INTERVAL
            self._sweep(now)
        if len(self._rates) >= self.max_keys and not self._evict_one(now):
            # Every key scanned is at its limit: share the overflow key.
            self.overflowed += 1
            METRICS.store.key_overflows.inc()
            ident = (check.rule, check.algorithm, OVERFLOW_KEY)
            state = self._rates.get(ident)  # at most one per rule and algorithm beyond the cap
            if state is not None:
                return state
        state = self._rates[ident] = _RateState()
        return state

    def _evict_one(self, now: int) -> bool:
        """Drop the least recently used key that has quota left; False if the scan found none."""
        rates = self._rates
        for _ in range(min(EVICTION_SCAN, len(rates))):
            ident, state = next(iter(rates.items()))
            if state.spent_until <= now and ident[2] != OVERFLOW_KEY:
                del rates[ident]
                self.evicted += 1
                METRICS.store.key_evictions.inc()
                return True
            rates.move_to_end(ident)  # at its limit: passed over until every other key was seen
        return False

    def _sweep(self, now: float) -> None:
        for ident in [i for i, st in self._rates.items() if st.idle_after < now]:
            del self._rates[ident]

    def _maybe_sweep(self, now: float) -> None:
        self._hits_since_sweep += 1
        if self._hits_since_sweep < SWEEP_EVERY:
            return
        self._hits_since_sweep = 0
        self._sweep(now)

    def clear(self) -> None:
        self._rates.clear()


def _check(check: RateCheck, state: _RateState, now: int) -> alg.Verdict:
    per = to_micros(check.per)
    max_delay = 0 if check.shadow else to_micros(check.max_delay)  # a shadow rule holds nobody
    if check.algorithm == "sliding_log":
        if state.log is None:
            state.log = deque()
        return alg.check_sliding_log(state.log, now, check.limit, per, max_delay)
    if check.algorithm == "gcra":
        return alg.check_gcra(state.tat, now, check.limit, per, check.burst, slack=1e-3, max_delay=max_delay)
    return alg.check_sliding_window(state.window, now, check.limit, per, max_delay)


def _charge(check: RateCheck, state: _RateState, now: int, delay: int) -> None:
    """Charge one request that passes after `delay` µs (0: now); its state matters until then too."""
    per = to_micros(check.per)
    if check.algorithm == "sliding_log":
        if state.log is None:
            state.log = deque()
        alg.charge_sliding_log(state.log, now, delay)
        state.idle_after = now + delay + per
    elif check.algorithm == "gcra":
        state.tat = alg.charge_gcra(state.tat, now, check.limit, per)
        state.idle_after = state.tat
    else:
        alg.charge_sliding_window(state.window, now, per, delay)
        last = max([state.window.window_start, *state.window.future])
        state.idle_after = last + 2 * per
