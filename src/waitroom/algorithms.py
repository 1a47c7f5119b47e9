"""Rate-limit algorithms, as pure functions over a small state: the embedded store runs these, and
the Lua scripts in store/lua/ implement the same arithmetic for Redis.

Each `check_*` answers "may one more request pass at `now`?" without changing anything; `charge_*`
records the request. Keeping the two apart lets several rules be checked first and charged only when
all of them allow (a refused request costs no rule anything).

- sliding_window: two fixed-window counters, the previous one weighted by how much of it still
  overlaps the sliding window (Cloudflare's approximation). O(1) per key. It assumes the previous
  window's requests were spread evenly, so it can admit more than `limit` in some interval of length
  `per`, at most ~2x in the worst case, when the previous window's requests all came at its end.
- sliding_log: every request's time. Exact: never more than `limit` in any interval of length `per`.
  O(limit) per key.
- gcra: the generic cell rate algorithm (a token bucket without a refill task): one theoretical
  arrival time per key; sustains `limit` per `per` and allows bursts of `burst` at once. Exact for
  that model. O(1) per key.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    remaining: int
    """Requests still allowed now, after this one if it is allowed."""
    reset_after: float
    """Seconds until the quota is fully available again (RateLimit `t`) or, when refused, until the
    next request would be allowed (Retry-After)."""


# --- sliding window ----------------------------------------------------------------------------


@dataclass(slots=True)
class WindowCounters:
    window_start: float = 0.0
    current: int = 0
    previous: int = 0

    def roll(self, now: float, per: float) -> None:
        start = math.floor(now / per) * per
        if start == self.window_start:
            return
        # The counter of the window just before `start` becomes `previous`; anything older is gone.
        self.previous = self.current if start - self.window_start == per else 0
        self.current = 0
        self.window_start = start


def _window_estimate(state: WindowCounters, now: float, per: float) -> float:
    overlap = 1.0 - (now - state.window_start) / per
    return state.previous * overlap + state.current


def check_sliding_window(state: WindowCounters, now: float, limit: int, per: float) -> Verdict:
    state.roll(now, per)
    estimate = _window_estimate(state, now, per)
    if estimate + 1 <= limit:
        return Verdict(True, max(0, math.floor(limit - estimate - 1)), per - (now - state.window_start))
    return Verdict(False, 0, _sliding_window_wait(state, now, limit, per))


def _sliding_window_wait(state: WindowCounters, now: float, limit: int, per: float) -> float:
    """Seconds until the estimate leaves room for one request, as the weighted count decays."""
    elapsed = now - state.window_start
    if state.current + 1 <= limit and state.previous > 0:
        # Within this window: previous * (1 - e/per) + current + 1 <= limit.
        e = per * (1 - (limit - 1 - state.current) / state.previous)
        return max(0.0, e - elapsed)
    # Next window: `current` becomes `previous` and must decay: current * (1 - e/per) + 1 <= limit.
    e = per * (1 - (limit - 1) / state.current) if state.current > 0 else 0.0
    return (per - elapsed) + max(0.0, e)


def charge_sliding_window(state: WindowCounters, now: float, per: float) -> None:
    state.roll(now, per)
    state.current += 1


# --- sliding log -------------------------------------------------------------------------------


def check_sliding_log(log: deque[float], now: float, limit: int, per: float) -> Verdict:
    while log and log[0] <= now - per:
        log.popleft()
    if len(log) < limit:
        reset = (log[0] + per - now) if log else per
        return Verdict(True, limit - len(log) - 1, reset)
    # The next request may pass when the oldest one that keeps the log full leaves the window.
    return Verdict(False, 0, log[len(log) - limit] + per - now)


def charge_sliding_log(log: deque[float], now: float) -> None:
    log.append(now)


# --- GCRA --------------------------------------------------------------------------------------


def gcra_params(limit: int, per: float, burst: int | None) -> tuple[float, float]:
    """(emission interval, tolerance): one request per `limit/per`, `burst` of them at once."""
    interval = per / limit
    return interval, interval * ((burst or limit) - 1)


def check_gcra(
    tat: float, now: float, limit: int, per: float, burst: int | None, slack: float = 1e-9
) -> Verdict:
    """`tat` is the key's theoretical arrival time (0 for a new key). `slack` absorbs float rounding
    in `per / limit` (1 ns by default; the stores work in µs and pass 1e-3)."""
    interval, tolerance = gcra_params(limit, per, burst)
    tat = max(tat, now)
    if tat - now > tolerance + slack:
        return Verdict(False, 0, tat - now - tolerance)
    new_tat = tat + interval
    remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9) + 1
    return Verdict(True, max(0, remaining), new_tat - now)


def charge_gcra(tat: float, now: float, limit: int, per: float) -> float:
    """The key's new theoretical arrival time after one request."""
    return max(tat, now) + per / limit
