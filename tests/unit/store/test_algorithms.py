"""The rate-limit arithmetic of store/algorithms.py, the `delay` reservations in particular: held
requests come out in order, each at its own time, and one that cannot fit is refused at once."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from waitroom.store import algorithms as alg
from waitroom.store.base import RateCheck
from waitroom.store.memory import MemoryStore

S = 1_000_000
"""The stores count in µs: so do these tests."""


def run(
    algorithm: str, n: int, *, limit: int = 5, per: int = S, max_delay: int = 2 * S
) -> list[float | None]:
    """`n` requests at one instant (a window's start): each one's delay in seconds, None if refused."""
    now = 1000 * S
    window, log, tat = alg.WindowCounters(), deque[float](), 0.0
    out: list[float | None] = []
    for _ in range(n):
        if algorithm == "gcra":
            verdict = alg.check_gcra(tat, now, limit, per, None, slack=1e-3, max_delay=max_delay)
            if verdict.allowed:
                tat = alg.charge_gcra(tat, now, limit, per)
        elif algorithm == "sliding_log":
            verdict = alg.check_sliding_log(log, now, limit, per, max_delay)
            if verdict.allowed:
                alg.charge_sliding_log(log, now, verdict.delay)
        else:
            verdict = alg.check_sliding_window(window, now, limit, per, max_delay)
            if verdict.allowed:
                alg.charge_sliding_window(window, now, per, verdict.delay)
        out.append(round(verdict.delay / S, 6) if verdict.allowed else None)
    return out


def test_gcra_spaces_held_requests_one_interval_apart() -> None:
    # The case: 5 per second (burst 5), max_delay 2s, 12 at once.
    assert run("gcra", 12) == [0.0] * 5 + [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4]
    # Held up to 2s: 10 fit behind the burst (0.2 … 2.0), the next are refused.
    delays = run("gcra", 18)
    assert delays[5:15] == pytest.approx([0.2 * k for k in range(1, 11)])
    assert delays[15:] == [None] * 3


def test_sliding_window_holds_requests_in_later_windows_in_order() -> None:
    delays = run("sliding_window", 12)
    assert delays[:5] == [0.0] * 5
    held = [d for d in delays[5:] if d is not None]
    assert held == pytest.approx([1.2, 1.4, 1.6, 1.8, 2.0])  # in order, within max_delay
    assert delays[10:] == [None, None]  # the rest refused, and none held after a refusal


def test_sliding_log_wakes_held_requests_as_the_log_allows() -> None:
    # Exact log: a burst at the window's edge, never more than `limit` in any `per`.
    assert run("sliding_log", 12) == [0.0] * 5 + [1.0] * 5 + [2.0] * 2
    assert run("sliding_log", 16)[15] is None


@pytest.mark.parametrize("algorithm", ["gcra", "sliding_window", "sliding_log"])
def test_a_refusal_says_when_the_turn_would_come_and_reserves_nothing(algorithm: str) -> None:
    # 16 at once, held up to 1s: the refused ones charge nothing, so each says the same.
    delays = run(algorithm, 16, max_delay=S)
    refused = delays.index(None)
    assert delays[refused:] == [None] * (16 - refused)
    now, window, log = 1000 * S, alg.WindowCounters(), deque[float]()
    if algorithm == "gcra":
        verdict = alg.check_gcra(now + 2 * S, now, 5, S, None, slack=1e-3, max_delay=S)
        assert verdict.reset_after == pytest.approx(1.2 * S)  # the slot after the burst tolerance
    elif algorithm == "sliding_log":
        log.extend([now] * 5 + [now + S] * 5)  # 5 now and 5 held to 1s: the next would pass at 2s
        verdict = alg.check_sliding_log(log, now, 5, S, S)
        assert verdict.reset_after == 2 * S
    else:
        window = alg.WindowCounters(window_start=now, current=5, future={now + S: 5})
        verdict = alg.check_sliding_window(window, now, 5, S, S)
        assert verdict.reset_after == 2.2 * S  # the next window is full of held ones: the one after
    assert (verdict.allowed, verdict.delay) == (False, 0.0)


def test_a_window_roll_moves_held_counts_into_the_current_window() -> None:
    window = alg.WindowCounters(window_start=0, current=5, previous=0, future={S: 3, 2 * S: 1})
    window.roll(S + 10, S)
    assert (window.window_start, window.previous, window.current, window.future) == (S, 5, 3, {2 * S: 1})
    window.roll(3 * S, S)  # two windows on: the one held at 2s is `previous`, nothing older remains
    assert (window.previous, window.current, window.future) == (1, 0, {})


def test_the_embedded_store_answers_reservations_in_whole_microseconds() -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    store = MemoryStore(Clock())
    check = RateCheck("r", "k", "gcra", 5, 1.0, max_delay=2.0)
    results = [asyncio.run(store.hit([check]))[0] for _ in range(7)]
    assert [r.delay for r in results] == [0.0] * 5 + [0.2, 0.4]
    # A shadow rule holds nobody: it reports the refusal and the request goes on.
    shadow = RateCheck("s", "k", "gcra", 1, 1.0, shadow=True, max_delay=2.0)
    assert [(r.allowed, r.delay) for r in (asyncio.run(store.hit([shadow]))[0] for _ in range(2))] == [
        (True, 0.0),
        (False, 0.0),
    ]
