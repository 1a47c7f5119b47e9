"""`action: delay` through a real `waitroom serve` and a real Redis (rate_limit.lua): a crowd at once
on a 5/1s rule held up to 2s. Held requests pass one by one, each at its own time, never before it;
those that cannot fit are refused at once, never held and then refused.

Serve only: the entry point does not change how a rule decides (tests/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream

pytestmark = pytest.mark.e2e

LIMIT, PER, MAX_DELAY = 5, 1.0, 2.0
EARLY = 0.03
"""A held request passes no earlier than its slot; this much for the clocks of two processes."""
LATE = 0.5
"""Slack past max_delay for the last held request's answer on a busy machine."""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mitmdump, Upstream]]:
    workdir: Path = tmp_path_factory.mktemp("delay")
    redis, upstream = RedisServer(workdir), Upstream()
    rules = f"key: global, action: delay, limit: {LIMIT}, per: 1s, max_delay: 2s"
    config = workdir / "waitroom.yaml"
    config.write_text(
        f"""
store: {{url: "{redis.url}", timeout: 1s}}
rate_limits:
  - {{name: even, match: {{path_prefix: /g}}, algorithm: gcra, {rules}}}
  - {{name: window, match: {{path_prefix: /w}}, algorithm: sliding_window, {rules}}}
"""
    )
    started = Mitmdump(upstream.url, workdir, config, env={"WAITROOM_SECRET": SECRET}, entry="serve")
    try:
        yield started.wait_ready(), upstream
    finally:
        started.stop()
        upstream.close()
        redis.stop()


def crowd(
    base: str, path: str, size: int, release: Callable[[], None] | None = None
) -> tuple[float, list[tuple[int, float]]]:
    """`size` requests released together (after `release` returns), each on a connection of its own
    made beforehand: when the first was sent, and each one's (status, seconds to its answer)."""
    ready = threading.Barrier(size, action=release, timeout=10)

    def one(_: int) -> tuple[float, int, float]:
        with httpx.Client(base_url=base, timeout=10) as client:
            client.get("/not-limited")
            ready.wait()
            sent = time.monotonic()
            answer = client.get(path)
            return sent, answer.status_code, time.monotonic() - sent

    with ThreadPoolExecutor(size) as pool:
        results = [f.result(timeout=30) for f in [pool.submit(one, i) for i in range(size)]]
    return min(sent for sent, _, _ in results), [(status, took) for _, status, took in results]


def next_second() -> None:
    """Pacing: the crowd starts just after a wall-clock second (a window of the store) begins."""
    time.sleep(1.02 - time.time() % 1)


def arrivals(upstream: Upstream, prefix: str, since: float) -> list[float]:
    return sorted(s.at - since for s in upstream.seen if s.path.startswith(prefix) and s.at >= since)


def test_gcra_releases_held_requests_one_interval_apart(proxy: tuple[Mitmdump, Upstream]) -> None:
    # The case: 12 at once. With gcra (burst 5) all fit: 5 now, 7 held 0.2 … 1.4 s.
    mitm, upstream = proxy
    start, answers = crowd(mitm.url, "/g/x", 12)
    assert sorted(status for status, _ in answers) == [200] * 12
    passed = arrivals(upstream, "/g/x", start)
    assert len(passed) == 12
    # The k-th held request reaches the upstream no earlier than its slot (k × per/limit), and
    # every one within max_delay.
    for k, at in enumerate(passed[LIMIT:], start=1):
        assert at >= k * PER / LIMIT - EARLY, (k, passed)
    assert max(took for _, took in answers) <= MAX_DELAY + LATE


def test_sliding_window_holds_what_fits_and_refuses_the_rest_at_once(
    proxy: tuple[Mitmdump, Upstream],
) -> None:
    # The case again, 12 at once, early in a window (the store counts in windows of wall-
    # clock seconds): 5 pass, 5 (or 6) are held to 1.2, 1.4 … 2.0 (2.25) s into that window, and
    # the rest cannot fit within 2s: they are answered before any held request is let through, not
    # held and refused late.
    mitm, upstream = proxy
    start, answers = crowd(mitm.url, "/w/x", 12, release=next_second)
    assert {status for status, _ in answers} <= {200, 429}
    passed = arrivals(upstream, "/w/x", start)
    refused = sorted(took for status, took in answers if status == 429)
    assert len(passed) == 12 - len(refused)
    assert len(refused) in (1, 2), answers
    # The first held one passes no earlier than its slot, 1.2 s into the window the crowd began in.
    phase = (start + time.time() - time.monotonic()) % 1
    assert passed[LIMIT] >= 1.2 - phase - EARLY, (phase, passed)
    assert refused[-1] < passed[LIMIT], f"a refusal came late: {refused} vs first held {passed[LIMIT]}"
    assert max(took for _, took in answers) <= MAX_DELAY + LATE
