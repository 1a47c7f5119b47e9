"""counter/counts.py: the counts stores' contract, on the embedded store and a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support import RedisServer
from waitroom.config.store import StoreConfig
from waitroom.counter.counts import (
    Counts,
    KeyReused,
    MemoryCounts,
    Put,
    RedisCounts,
    TooManyPaths,
    open_counts,
)
from waitroom.store.redis_client import client_from_url


@pytest.fixture(scope="module")
def redis_for_counts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("counts")))
    yield server
    server.stop()


_prefix = iter(range(1_000_000))


@pytest.fixture(params=["memory", "redis"])
async def counts(request: pytest.FixtureRequest, redis_for_counts: RedisServer) -> AsyncIterator[Counts]:
    store: Counts
    if request.param == "memory":
        store = MemoryCounts()
    else:
        store = RedisCounts(client_from_url(redis_for_counts.url, 2.0), f"c{next(_prefix)}", 2.0)
    yield store
    await store.close()


@pytest.mark.e2e
async def test_counts_contract(counts: Counts) -> None:
    assert await counts.total() == 0
    assert await counts.get("/a") == 0
    assert await counts.put("/a") == Put(1, 1)
    assert await counts.put("/a") == Put(2, 2)
    assert await counts.put("/b") == Put(1, 3)
    assert (await counts.get("/a"), await counts.get("/b"), await counts.total()) == (2, 1, 3)
    assert await counts.put("/café ünïcode") == Put(1, 4)
    assert await counts.get("/café ünïcode") == 1


@pytest.mark.e2e
async def test_a_key_counts_once_and_replays_the_first_answer(counts: Counts) -> None:
    assert await counts.put("/a", "k1") == Put(1, 1)
    assert await counts.put("/a") == Put(2, 2)
    assert await counts.put("/a", "k1") == Put(1, 0, replayed=True)  # the first answer, counted once
    assert await counts.put("/a", "k2") == Put(3, 3)
    with pytest.raises(KeyReused):
        await counts.put("/b", "k1")  # the key belongs to /a: nothing is counted
    assert (await counts.get("/a"), await counts.get("/b"), await counts.total()) == (3, 0, 3)
    # Concurrent retries of one key: exactly one counts, all answer its count.
    answers = await asyncio.gather(*(counts.put("/c", "k3") for _ in range(50)))
    assert [a.replayed for a in answers].count(False) == 1
    assert {a.count for a in answers} == {1}
    assert await counts.get("/c") == 1


@pytest.mark.e2e
async def test_paths_are_bounded_and_the_total_stays_their_sum(counts: Counts) -> None:
    counts.max_paths = 3
    for path in ("/a", "/b", "/c"):
        await counts.put(path)
    with pytest.raises(TooManyPaths):
        await counts.put("/d")
    with pytest.raises(TooManyPaths):
        await counts.put("/d", "k1")  # nothing is remembered for the key either
    assert await counts.put("/a") == Put(2, 4)  # an existing path still counts
    assert await counts.put("/a", "k2") == Put(3, 5)
    assert await counts.put("/a", "k2") == Put(3, 0, replayed=True)
    assert (await counts.get("/d"), await counts.total()) == (0, 5)
    counts.max_paths = 4  # raised at run time (the option changed)
    assert await counts.put("/d", "k1") == Put(1, 6)


async def test_the_embedded_store_forgets_keys_after_their_window() -> None:
    now = [100.0]
    counts = MemoryCounts(key_window=60.0, clock=lambda: now[0])
    assert (await counts.put("/a", "k")).count == 1
    now[0] += 59.9
    assert (await counts.put("/a", "k")).replayed
    now[0] += 0.1
    assert await counts.put("/a", "k") == Put(2, 2)  # a new window: counted again


@pytest.mark.e2e
async def test_redis_keeps_a_key_for_its_window(redis_for_counts: RedisServer) -> None:
    counts = RedisCounts(client_from_url(redis_for_counts.url, 2.0), "ttl", 2.0, key_window=90.0)
    try:
        await counts.put("/a", "k")
        ttl = redis_for_counts.client().pttl(counts.key_prefix + "k")
        assert 89_000 < ttl <= 90_000
    finally:
        await counts.close()


@pytest.mark.e2e
async def test_concurrent_puts_keep_the_total_equal_to_the_sum(counts: Counts) -> None:
    paths = [f"/p{i}" for i in range(20)]
    await asyncio.gather(*(counts.put(paths[i % 20]) for i in range(400)))
    per_path = [await counts.get(p) for p in paths]
    assert per_path == [20] * 20
    assert await counts.total() == sum(per_path) == 400


def test_open_counts_follows_the_store_url() -> None:
    assert isinstance(open_counts(StoreConfig(), 1.0), MemoryCounts)
    assert isinstance(open_counts(StoreConfig(url="redis://127.0.0.1:1/0"), 1.0), RedisCounts)
