"""The counter's answers are true when its Redis stalls: three real mitmdump replicas share one real
redis-server, which is paused (`SIGSTOP`) for longer than the counter's store bound while clients
PUT. With `Idempotency-Key` and retries every logical increment is counted exactly once; without
it, every 200 was counted and no answer that says "not counted" (503) was counted."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import StartProxy
from tests.support import Mitmdump, RedisServer, wait_for
from waitroom.counter.addon import STORE_TIMEOUT

pytestmark = pytest.mark.e2e

COUNTER = ["addons/counter.py"]
CLIENTS = 6
PUTS_PER_CLIENT = 40
MAX_ATTEMPTS = 100
"""Per logical PUT: a client retries at most this often."""
TIME_BOUND = 60.0
UNKNOWN_ANSWERS = 4
"""Redis stays paused until this many PUTs were answered 504, each after the store bound."""


@pytest.fixture
def replicas(start_proxy: StartProxy, redis_server: RedisServer) -> Iterator[list[Mitmdump]]:
    started = [
        start_proxy(None, scripts=COUNTER, extra=["--set", f"counter_store={redis_server.url}"])
        for _ in range(3)
    ]
    yield started
    for proxy in started:
        assert "Traceback" not in proxy.log_text()


class Pause:
    """SIGSTOP the redis-server once enough PUTs went through, SIGCONT it once enough PUTs were
    answered 504 (so it stayed stopped longer than the store bound)."""

    def __init__(self, redis: RedisServer) -> None:
        assert redis.proc is not None
        self.pid = redis.proc.pid
        self.answers = 0
        self.unknown = 0
        self.paused_at: float | None = None
        self.resumed_at: float | None = None
        self.started = asyncio.Event()
        self.enough = asyncio.Event()

    def saw(self, status: int) -> None:
        self.answers += 1
        if self.answers >= 30:
            self.started.set()
        if status == 504 and self.paused_at is not None:
            self.unknown += 1
            if self.unknown >= UNKNOWN_ANSWERS:
                self.enough.set()

    async def run(self) -> None:
        await asyncio.wait_for(self.started.wait(), 30)
        os.kill(self.pid, signal.SIGSTOP)
        self.paused_at = time.monotonic()
        try:
            await asyncio.wait_for(self.enough.wait(), 30)
        finally:
            os.kill(self.pid, signal.SIGCONT)
            self.resumed_at = time.monotonic()


def _urls(replicas: list[Mitmdump]) -> list[str]:
    return [r.url for r in replicas]


@pytest.mark.exact
def test_with_idempotency_keys_every_logical_put_counts_exactly_once(
    replicas: list[Mitmdump], redis_server: RedisServer
) -> None:
    urls = _urls(replicas)
    pause = Pause(redis_server)
    statuses: Counter[int | str] = Counter()
    replayed = 0
    deadline = time.monotonic() + TIME_BOUND

    async def client(n: int, http: httpx.AsyncClient) -> int:
        nonlocal replayed
        done = 0
        for i in range(PUTS_PER_CLIENT):
            key = f'"client-{n}-put-{i}"'
            for attempt in range(MAX_ATTEMPTS):  # the same key on every try, on the next replica
                assert time.monotonic() < deadline, "the test's time bound"
                url = urls[(n + i + attempt) % len(urls)]
                try:
                    answer = await http.put(f"{url}/keyed/{n}", headers={"Idempotency-Key": key})
                except httpx.TransportError as e:
                    statuses[type(e).__name__] += 1
                    continue
                statuses[answer.status_code] += 1
                pause.saw(answer.status_code)
                if answer.status_code == 200:
                    replayed += answer.headers.get("Idempotent-Replayed") == "true"
                    done += 1
                    break
                assert answer.status_code in (503, 504), answer.text
                if answer.status_code == 504:
                    assert answer.json()["outcome"] == "unknown"
                    assert answer.headers["Retry-After"] == "1"  # with a key a retry is safe
            else:
                pytest.fail(f"client {n} put {i}: no 200 in {MAX_ATTEMPTS} attempts ({statuses})")
        return done

    async def everyone() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as http:
            pausing = asyncio.create_task(pause.run())
            done = await asyncio.gather(*(client(n, http) for n in range(CLIENTS)))
            await pausing
            return done

    done = asyncio.run(everyone())
    assert done == [PUTS_PER_CLIENT] * CLIENTS
    assert pause.paused_at is not None
    assert pause.resumed_at is not None
    assert pause.resumed_at - pause.paused_at > STORE_TIMEOUT  # paused longer than the store bound
    assert statuses[504] >= UNKNOWN_ANSWERS, statuses
    # Counted once each, on every replica's view, though some 504'd PUTs ran when Redis resumed.
    for url in urls:
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/").json() == {"total": CLIENTS * PUTS_PER_CLIENT}, (statuses, replayed)
            for n in range(CLIENTS):
                assert c.get(f"/keyed/{n}").json()["count"] == PUTS_PER_CLIENT


@pytest.mark.exact
def test_without_a_key_every_200_is_counted_and_no_503_was(
    replicas: list[Mitmdump], redis_server: RedisServer
) -> None:
    urls = _urls(replicas)
    pause = Pause(redis_server)
    per_path: dict[int, Counter[int | str]] = {n: Counter() for n in range(CLIENTS)}
    deadline = time.monotonic() + TIME_BOUND

    async def client(n: int, http: httpx.AsyncClient) -> None:
        for i in range(PUTS_PER_CLIENT * 3):
            if pause.resumed_at is not None and per_path[n][200] >= PUTS_PER_CLIENT:
                return
            assert time.monotonic() < deadline, "the test's time bound"
            url = urls[(n + i) % len(urls)]
            try:
                answer = await http.put(f"{url}/plain/{n}")
            except httpx.TransportError as e:
                per_path[n][type(e).__name__] += 1
                continue
            per_path[n][answer.status_code] += 1
            pause.saw(answer.status_code)
            assert answer.status_code in (200, 503, 504), answer.text
            if answer.status_code == 504:
                body = answer.json()
                assert body["outcome"] == "unknown"
                assert "may have been counted" in body["detail"]
                assert "Retry-After" not in answer.headers  # a blind retry could count it twice
            if answer.status_code == 503:
                assert "nothing was counted" in answer.json()["detail"]

    async def everyone() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            pausing = asyncio.create_task(pause.run())
            await asyncio.gather(*(client(n, http) for n in range(CLIENTS)))
            await pausing

    asyncio.run(everyone())
    assert sum(c[504] for c in per_path.values()) >= UNKNOWN_ANSWERS, per_path
    # A PUT still queued in the paused Redis runs when it resumes; a new GET comes after it.
    wait_for(lambda: redis_server.client().ping(), 5, "redis answering again")
    with httpx.Client(base_url=urls[0], timeout=10) as c:
        for n, seen in per_path.items():
            count = c.get(f"/plain/{n}").json()["count"]
            assert seen[200] <= count <= seen[200] + seen[504], (n, count, seen)
            assert not any(isinstance(k, str) for k in seen), seen  # every request was answered
