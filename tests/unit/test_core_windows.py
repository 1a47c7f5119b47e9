"""Exactness of the admission window and the rate-limit algorithms against reference models."""

from __future__ import annotations

import asyncio
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from waitroom.store import MemoryStore, RoomPolicy
from waitroom.store.base import RateCheck

# Arrival gaps in whole milliseconds, as the stores keep whole microseconds.
gaps = st.lists(st.integers(min_value=0, max_value=1500), min_size=1, max_size=120)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def us(seconds: float) -> int:
    """References count in whole microseconds, like the stores: float seconds round either way at
    a window's exact edge."""
    return round(seconds * 1_000_000)


def reference_admissions(
    times: list[float], n: int, window_s: float, block_for_s: float
) -> list[tuple[bool, bool]]:
    """The seed semantics, written as plainly as possible."""
    log: list[int] = []
    blocked_until = 0
    out = []
    window, block_for = us(window_s), us(block_for_s)
    for t in map(us, times):
        if t < blocked_until:
            out.append((False, False))
            continue
        log = [a for a in log if a > t - window]
        if len(log) < n:
            log.append(t)
            out.append((True, False))
        else:
            if block_for > 0:
                blocked_until = t + block_for
            out.append((False, True))
    return out


@settings(max_examples=150, deadline=None)
@given(gaps, st.integers(1, 6), st.integers(1, 3000), st.integers(0, 2000))
def test_room_window_is_exact(gap_ms: list[int], n: int, window_ms: int, block_ms: int) -> None:
    clock, store = Clock(), None
    store = MemoryStore(clock)
    window, block_for = window_ms / 1000, block_ms / 1000
    times, decisions = [], []
    for gap in gap_ms:
        clock.now = round(clock.now + gap / 1000, 3)
        times.append(clock.now)
        a = asyncio.run(store.admit(RoomPolicy("r", n, window, block_for), "sid"))
        decisions.append((a.admitted, a.block_started))
        if not a.admitted and not a.block_started:
            assert a.blocked_for > 0
    assert decisions == reference_admissions(times, n, window, block_for)
    admitted = [t for t, (ok, _) in zip(times, decisions, strict=True) if ok]
    admitted_us = [us(t) for t in admitted]
    for t in admitted_us:  # never more than n in any half-open interval [t, t + window)
        assert sum(1 for u in admitted_us if t <= u < t + us(window)) <= n


def run_hits(
    algorithm: str, gap_ms: list[int], limit: int, per: float, burst: int | None = None
) -> tuple[list[float], list[bool]]:
    clock = Clock()
    store = MemoryStore(clock)
    times, allowed = [], []
    for gap in gap_ms:
        clock.now = round(clock.now + gap / 1000, 3)
        times.append(clock.now)
        [result] = asyncio.run(store.hit([RateCheck("r", "k", algorithm, limit, per, burst)]))
        allowed.append(result.allowed)
    return times, allowed


@settings(max_examples=120, deadline=None)
@given(gaps, st.integers(1, 5), st.integers(100, 3000))
def test_sliding_log_is_exact(gap_ms: list[int], limit: int, per_ms: int) -> None:
    per = per_ms / 1000
    times, allowed = run_hits("sliding_log", gap_ms, limit, per)
    log: deque[int] = deque()
    for t, ok in zip(map(us, times), allowed, strict=True):
        while log and log[0] <= t - us(per):
            log.popleft()
        expected = len(log) < limit
        assert ok == expected
        if ok:
            log.append(t)


@settings(max_examples=120, deadline=None)
@given(gaps, st.integers(1, 5), st.integers(100, 3000), st.one_of(st.none(), st.integers(1, 4)))
def test_gcra_matches_the_reference(gap_ms: list[int], limit: int, per_ms: int, burst: int | None) -> None:
    per = per_ms / 1000
    times, allowed = run_hits("gcra", gap_ms, limit, per, burst)
    interval, tat = us(per) / limit, 0.0
    tolerance = interval * ((burst or limit) - 1)
    for t, ok in zip(map(us, times), allowed, strict=True):
        tat = max(tat, t)
        expected = tat - t <= tolerance + 1e-3
        assert ok == expected
        if ok:
            tat += interval


@settings(max_examples=120, deadline=None)
@given(gaps, st.integers(1, 6), st.integers(200, 3000))
def test_sliding_window_stays_within_its_documented_bound(gap_ms: list[int], limit: int, per_ms: int) -> None:
    per = per_ms / 1000
    times, allowed = run_hits("sliding_window", gap_ms, limit, per)
    passed = [t for t, ok in zip(times, allowed, strict=True) if ok]
    for t in passed:  # at most about twice the limit in any interval of length per
        assert sum(1 for u in passed if t <= u < t + per - 1e-9) <= 2 * limit


def test_a_refused_request_charges_no_rule() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    total = RateCheck("total", "*", "sliding_log", 10, 1.0)
    user = RateCheck("user", "u", "sliding_log", 1, 1.0)
    shadow = RateCheck("shadow", "*", "sliding_log", 1, 1.0, shadow=True)
    assert [r.allowed for r in asyncio.run(store.hit([total, user, shadow]))] == [True, True, True]
    assert [r.allowed for r in asyncio.run(store.hit([total, user, shadow]))] == [True, False, False]
    # The refusal charged nothing: 9 more requests fit the total rule.
    results = [asyncio.run(store.hit([total]))[0].allowed for _ in range(10)]
    assert results == [True] * 9 + [False]
    # A shadow refusal does not stop the request: the enforcing rule is charged.
    other = RateCheck("user", "v", "sliding_log", 5, 1.0)
    assert [r.allowed for r in asyncio.run(store.hit([other, shadow]))] == [True, False]
    assert asyncio.run(store.hit([other]))[0].remaining == 3
