"""Rate-limit algorithms, as pure functions over a small state: the embedded store runs these, and
the Lua scripts in store/lua/ implement the same arithmetic for Redis. Their bounds and costs: see
docs/design.md, Algorithms.

Each `check_*` answers "may one more request pass at `now`?" without changing anything; `charge_*`
records the request. Keeping the two apart lets several rules be checked first and charged only when
all of them allow (a refused request costs no rule anything).

A `delay` rule passes `max_delay`: a request that cannot pass now but can within it gets a
*reservation*, a verdict that allows it after `delay`, and is charged at that wake time, so the next
one finds the slot taken and is held longer. Held requests come out one by one, in the order they
arrived, as the rule allows (nginx's `limit_req … delay`); one that cannot fit is refused at once,
with the time its turn would have come.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    remaining: int
    """Requests still allowed now, after this one if it is allowed."""
    reset_after: float
    """Seconds until the quota is fully available again (RateLimit `t`) or, when refused, until the
    next request would be allowed (Retry-After)."""
    delay: float = 0.0
    """Allowed after waiting this long: a reservation (see the module's docstring); charge it with
    this delay."""


# --- sliding window ----------------------------------------------------------------------------
# Two fixed-window counters, the previous one weighted by how much of it still overlaps the sliding
# window (Cloudflare's approximation). It assumes the previous window's requests were spread evenly,
# so it can admit up to ~2x `limit` in some interval of length `per`, when they all came at its end.
# Reservations (delay rules) are counted in the window of their wake time: the current one, or a
# later one kept in `future` until it begins.


@dataclass(slots=True)
class WindowCounters:
    window_start: float = 0.0
    current: int = 0
    previous: int = 0
    future: dict[float, int] = field(default_factory=dict)
    """Reservations in windows after the current one, by window start (delay rules only)."""

    def count(self, start: float, per: float) -> int:
        """Requests counted in the window that begins at `start`."""
        if start == self.window_start:
            return self.current
        if start == self.window_start - per:
            return self.previous
        return self.future.get(start, 0) if start > self.window_start else 0

    def roll(self, now: float, per: float) -> None:
        start = math.floor(now / per) * per
        if start == self.window_start:
            return
        # The window just before `start` becomes `previous`; anything older is gone.
        self.previous, self.current = self.count(start - per, per), self.count(start, per)
        self.window_start = start
        if self.future:
            self.future = {b: n for b, n in self.future.items() if b > start}


def _window_estimate(state: WindowCounters, now: float, per: float) -> float:
    overlap = 1.0 - (now - state.window_start) / per
    return state.previous * overlap + state.current


def window_buckets(per: float, max_delay: float) -> int:
    """Windows searched for a request's wake time: the current one, those `max_delay` reaches, and
    two more (with `limit` 1, a full window frees up only two windows later)."""
    return 3 + math.ceil(max_delay / per)


def check_sliding_window(
    state: WindowCounters, now: float, limit: int, per: float, max_delay: float = 0.0
) -> Verdict:
    state.roll(now, per)
    estimate = _window_estimate(state, now, per)
    if estimate + 1 <= limit:
        return Verdict(True, max(0, math.floor(limit - estimate - 1)), per - (now - state.window_start))
    wake = sliding_window_wake(state, now, limit, per, window_buckets(per, max_delay))
    if max_delay > 0 and wake - now <= max_delay:
        return Verdict(True, 0, wake - now + per, delay=wake - now)
    return Verdict(False, 0, wake - now)


def sliding_window_wake(state: WindowCounters, now: float, limit: int, per: float, buckets: int) -> float:
    """The earliest time (≥ now) at which one more request fits, reservations counted, searching
    `buckets` windows; past them, the start of the next window (a lower bound)."""
    start = state.window_start
    for _ in range(buckets):
        before, here = state.count(start - per, per), state.count(start, per)
        if here + 1 <= limit:
            # In this window the estimate `before * (1 - (t - start)/per) + here` falls as t grows.
            at = start if before == 0 else start + per * (1 - (limit - 1 - here) / before)
            at = max(at, start, now)
            if at < start + per:
                return at
        start += per
    return start


def charge_sliding_window(state: WindowCounters, now: float, per: float, delay: float = 0.0) -> None:
    state.roll(now, per)
    wake_window = math.floor((now + delay) / per) * per
    if wake_window == state.window_start:
        state.current += 1
    else:
        state.future[wake_window] = state.future.get(wake_window, 0) + 1


# --- sliding log -------------------------------------------------------------------------------
# Every request's time: never more than `limit` in any interval of length `per`. A reservation is an
# entry at its wake time; entries stay in time order, so a newcomer never passes a held request.


def check_sliding_log(
    log: deque[float], now: float, limit: int, per: float, max_delay: float = 0.0
) -> Verdict:
    while log and log[0] <= now - per:
        log.popleft()
    if len(log) < limit:
        reset = (log[0] + per - now) if log else per
        return Verdict(True, limit - len(log) - 1, reset)
    # The next request may pass when the oldest one that keeps the log full leaves the window.
    wait = log[len(log) - limit] + per - now
    if wait <= max_delay:
        return Verdict(True, 0, wait + per, delay=wait)
    return Verdict(False, 0, wait)


def charge_sliding_log(log: deque[float], now: float, delay: float = 0.0) -> None:
    log.append(now + delay)


# --- GCRA --------------------------------------------------------------------------------------
# The generic cell rate algorithm (a token bucket without a refill task): one theoretical arrival
# time per key; sustains `limit` per `per` and allows bursts of `burst` at once. A reservation moves
# the arrival time on by one interval like any request, so held requests come out `per / limit`
# apart: `burst` plays nginx's `delay=`, `max_delay × limit / per` its `burst=`.


def gcra_params(limit: int, per: float, burst: int | None) -> tuple[float, float]:
    """(emission interval, tolerance): one request per `limit/per`, `burst` of them at once."""
    interval = per / limit
    return interval, interval * ((burst or limit) - 1)


def check_gcra(
    tat: float,
    now: float,
    limit: int,
    per: float,
    burst: int | None,
    slack: float = 1e-9,
    max_delay: float = 0.0,
) -> Verdict:
    """`tat` is the key's theoretical arrival time (0 for a new key). `slack` absorbs float rounding
    in `per / limit` (1 ns by default; the stores work in µs and pass 1e-3)."""
    interval, tolerance = gcra_params(limit, per, burst)
    tat = max(tat, now)
    if tat - now > tolerance + slack:
        wait = tat - now - tolerance
        if wait <= max_delay:
            return Verdict(True, 0, tat + interval - now, delay=wait)
        return Verdict(False, 0, wait)
    new_tat = tat + interval
    remaining = math.floor((tolerance - (new_tat - now)) / interval + 1e-9) + 1
    return Verdict(True, max(0, remaining), new_tat - now)


def charge_gcra(tat: float, now: float, limit: int, per: float) -> float:
    """The key's new theoretical arrival time after one request (held or not)."""
    return max(tat, now) + per / limit
