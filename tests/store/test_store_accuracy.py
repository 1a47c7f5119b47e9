"""Exactness of the admission window and the rate-limit algorithms against reference models, on
both stores: the embedded one and a real Redis running the Lua scripts, with the same injected clock.

Each Hypothesis example replays one random arrival sequence in a fresh store (a fresh key prefix on
the shared Redis) and compares every decision with a plain reference model.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import RedisServer
from waitroom.store.base import RateCheck, RoomPolicy, Store
from waitroom.store.memory import MemoryStore
from waitroom.store.redis import RedisStore

pytestmark = pytest.mark.e2e

STORES = ["memory", "redis"]
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(Path(tmp_path_factory.mktemp("accuracy")))
    yield server.url
    server.stop()


def replay[T](
    kind: str, url: str, gap_ms: list[int], call: Callable[[Store], Awaitable[T]]
) -> tuple[list[float], list[T]]:
    """Advance the injected clock by each gap and make one store call; all in one event loop, as the
    Redis client belongs to the loop that made it."""

    async def run() -> tuple[list[float], list[T]]:
        clock = Clock()
        store: Store
        if kind == "memory":
            store = MemoryStore(clock)
        else:
            store = RedisStore.for_url(url, 5.0, f"acc{next(_prefixes)}", clock)
        times, results = [], []
        try:
            for gap in gap_ms:
                clock.now = round(clock.now + gap / 1000, 3)
                times.append(clock.now)
                results.append(await call(store))
        finally:
            await store.close()
        return times, results

    return asyncio.run(run())


# A module-scoped fixture is shared by every example on purpose: each example takes its own prefix.
examples = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

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


@pytest.mark.parametrize("kind", STORES)
@examples
@given(gap_ms=gaps, n=st.integers(1, 6), window_ms=st.integers(1, 3000), block_ms=st.integers(0, 2000))
def test_room_window_is_exact(
    redis_url: str, kind: str, gap_ms: list[int], n: int, window_ms: int, block_ms: int
) -> None:
    window, block_for = window_ms / 1000, block_ms / 1000
    room = RoomPolicy("r", n, window, block_for)
    ids = itertools.count()  # every new visitor has a fresh session id, as in the proxy
    times, answers = replay(kind, redis_url, gap_ms, lambda store: store.admit(room, f"s{next(ids)}"))
    decisions = [(a.admitted, a.block_started) for a in answers]
    for a in answers:
        if not a.admitted and not a.block_started:
            assert a.blocked_for > 0
    assert decisions == reference_admissions(times, n, window, block_for)
    admitted = [t for t, (ok, _) in zip(times, decisions, strict=True) if ok]
    admitted_us = [us(t) for t in admitted]
    for t in admitted_us:  # never more than n in any half-open interval [t, t + window)
        assert sum(1 for u in admitted_us if t <= u < t + us(window)) <= n


def run_hits(
    kind: str, url: str, algorithm: str, gap_ms: list[int], limit: int, per: float, burst: int | None = None
) -> tuple[list[float], list[bool]]:
    check = RateCheck("r", "k", algorithm, limit, per, burst)

    async def one(store: Store) -> bool:
        [result] = await store.hit([check])
        return result.allowed

    return replay(kind, url, gap_ms, one)


@pytest.mark.parametrize("kind", STORES)
@examples
@given(gap_ms=gaps, limit=st.integers(1, 5), per_ms=st.integers(100, 3000))
def test_sliding_log_is_exact(redis_url: str, kind: str, gap_ms: list[int], limit: int, per_ms: int) -> None:
    per = per_ms / 1000
    times, allowed = run_hits(kind, redis_url, "sliding_log", gap_ms, limit, per)
    log: deque[int] = deque()
    for t, ok in zip(map(us, times), allowed, strict=True):
        while log and log[0] <= t - us(per):
            log.popleft()
        expected = len(log) < limit
        assert ok == expected
        if ok:
            log.append(t)


@pytest.mark.parametrize("kind", STORES)
@examples
@given(
    gap_ms=gaps,
    limit=st.integers(1, 5),
    per_ms=st.integers(100, 3000),
    burst=st.one_of(st.none(), st.integers(1, 4)),
)
def test_gcra_matches_the_reference(
    redis_url: str, kind: str, gap_ms: list[int], limit: int, per_ms: int, burst: int | None
) -> None:
    per = per_ms / 1000
    times, allowed = run_hits(kind, redis_url, "gcra", gap_ms, limit, per, burst)
    interval, tat = us(per) / limit, 0.0
    tolerance = interval * ((burst or limit) - 1)
    for t, ok in zip(map(us, times), allowed, strict=True):
        tat = max(tat, t)
        expected = tat - t <= tolerance + 1e-3
        assert ok == expected
        if ok:
            tat += interval


@pytest.mark.parametrize("kind", STORES)
@examples
@given(gap_ms=gaps, limit=st.integers(1, 6), per_ms=st.integers(200, 3000))
def test_sliding_window_stays_within_its_documented_bound(
    redis_url: str, kind: str, gap_ms: list[int], limit: int, per_ms: int
) -> None:
    per = per_ms / 1000
    times, allowed = run_hits(kind, redis_url, "sliding_window", gap_ms, limit, per)
    passed = [us(t) for t, ok in zip(times, allowed, strict=True) if ok]
    for t in passed:  # the documented bound: at most 2 x limit in any interval of length per
        assert sum(1 for u in passed if t <= u < t + us(per)) <= 2 * limit
    # Under traffic spread evenly over the window it is never more generous than the limit allows
    # per window start: each fixed window admits at most `limit`.
    windows: dict[int, int] = {}
    for t in passed:
        windows[t // us(per)] = windows.get(t // us(per), 0) + 1
    assert max(windows.values(), default=0) <= limit


def test_a_refused_request_charges_no_rule() -> None:
    store = MemoryStore(Clock())
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
