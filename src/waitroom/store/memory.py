"""The embedded store (`memory://`): one process, nothing to install, the same algorithms as Redis."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from waitroom import algorithms as alg
from waitroom.metrics import METRICS
from waitroom.store.base import MICROS, Clock, RateCheck, RateResult
from waitroom.store.memory_rooms import AFTER_OPENING, MemoryRooms, _us, prequeue_rank

__all__ = [
    "AFTER_OPENING",
    "FULL_SWEEP_INTERVAL",
    "MAX_KEYS",
    "OVERFLOW_KEY",
    "SWEEP_EVERY",
    "MemoryStore",
    "prequeue_rank",
]


@dataclass(slots=True)
class _RateState:
    window: alg.WindowCounters = field(default_factory=alg.WindowCounters)
    log: deque[float] | None = None
    """sliding_log only (an empty deque costs ~600 bytes: not made for every key)."""
    tat: float = 0.0
    idle_after: float = 0.0
    # All in µs, like the Lua script.
    """When this key's state no longer matters (then it may be dropped)."""


SWEEP_EVERY = 10_000
"""Rate-limit hits between sweeps of idle keys: memory stays proportional to active clients."""
MAX_KEYS = 100_000
"""Rate-limit keys held at once (about 400 bytes each, ~40 MB in all). When a new key finds the
table full, the keys whose state no longer matters (idle: their window has passed) are dropped,
which changes no decision. If it is still full, the new key gets no state of its own: it is counted
in its rule's one *overflow* key, which every such key shares. No key that holds state is ever
evicted, so nobody's count is reset by someone else's traffic; the clients that overflow get, all
together, what one client may get — fewer requests than separately, never more."""
OVERFLOW_KEY = "~overflow"
FULL_SWEEP_INTERVAL = 1_000_000
"""µs between two sweeps forced by a full table: a flood of new keys costs one O(n) sweep a second."""


class MemoryStore(MemoryRooms):
    """The whole Store protocol: the rooms (inherited, memory_rooms.py) and the rate limiter's keys."""

    def __init__(self, clock: Clock = time.time, max_keys: int = MAX_KEYS) -> None:
        super().__init__(clock)
        self._rates: dict[tuple[str, str, str], _RateState] = {}
        self._max_keys = max_keys
        self._next_full_sweep = 0
        self.overflowed = 0
        """Hits counted in an overflow key because the table was full (see MAX_KEYS)."""
        self._hits_since_sweep = 0
        self._overrides: dict[str, str] = {}

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        # No await inside: atomic on the event loop, like the Lua script.
        now = _us(self._clock())
        states = [self._rate_state(c, now) for c in checks]
        verdicts = [_check(c, st, now) for c, st in zip(checks, states, strict=True)]
        enforced_refusal = any(not v.allowed and not c.shadow for c, v in zip(checks, verdicts, strict=True))
        if not enforced_refusal:
            for check, state, verdict in zip(checks, states, verdicts, strict=True):
                if verdict.allowed:
                    _charge(check, state, now)
        self._maybe_sweep(now)
        # Whole µs, as the Lua script answers.
        return [RateResult(v.allowed, v.remaining, math.floor(v.reset_after) / MICROS) for v in verdicts]

    def _rate_state(self, check: RateCheck, now: int) -> _RateState:
        ident = (check.rule, check.algorithm, check.key)
        state = self._rates.get(ident)
        if state is not None:
            return state
        if len(self._rates) >= self._max_keys and now >= self._next_full_sweep:
            self._next_full_sweep = now + FULL_SWEEP_INTERVAL
            self._sweep(now)
        if len(self._rates) >= self._max_keys:  # full of live state: share the overflow key
            self.overflowed += 1
            METRICS.store_key_overflows.inc()
            ident = (check.rule, check.algorithm, OVERFLOW_KEY)
            state = self._rates.get(ident)  # at most one per rule and algorithm beyond the cap
            if state is not None:
                return state
        state = self._rates[ident] = _RateState()
        return state

    def _sweep(self, now: float) -> None:
        for ident in [i for i, st in self._rates.items() if st.idle_after < now]:
            del self._rates[ident]

    def _maybe_sweep(self, now: float) -> None:
        self._hits_since_sweep += 1
        if self._hits_since_sweep < SWEEP_EVERY:
            return
        self._hits_since_sweep = 0
        self._sweep(now)

    async def overrides(self) -> dict[str, str]:
        return dict(self._overrides)

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        for name, value in changes.items():
            if value is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = value

    async def close(self) -> None:
        self._rooms.clear()
        self._rates.clear()


def _check(check: RateCheck, state: _RateState, now: int) -> alg.Verdict:
    per = _us(check.per)
    if check.algorithm == "sliding_log":
        if state.log is None:
            state.log = deque()
        return alg.check_sliding_log(state.log, now, check.limit, per)
    if check.algorithm == "gcra":
        return alg.check_gcra(state.tat, now, check.limit, per, check.burst, slack=1e-3)
    return alg.check_sliding_window(state.window, now, check.limit, per)


def _charge(check: RateCheck, state: _RateState, now: int) -> None:
    per = _us(check.per)
    if check.algorithm == "sliding_log":
        if state.log is None:
            state.log = deque()
        alg.charge_sliding_log(state.log, now)
        state.idle_after = now + per
    elif check.algorithm == "gcra":
        state.tat = alg.charge_gcra(state.tat, now, check.limit, per)
        state.idle_after = state.tat
    else:
        alg.charge_sliding_window(state.window, now, per)
        state.idle_after = state.window.window_start + 2 * per
