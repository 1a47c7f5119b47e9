"""The stores' shared fixtures: every case runs on the embedded store and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import RedisServer
from waitroom.store.base import Store
from waitroom.store.memory import MemoryStore
from waitroom.store.redis import RedisStore
from waitroom.store.redis_client import client_from_url


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


_prefix = iter(range(1_000_000))


@pytest.fixture(params=["memory", "redis", "redis-py"])
async def store_and_clock(
    request: pytest.FixtureRequest, shared_redis: RedisServer
) -> AsyncIterator[tuple[Store, Clock]]:
    """The embedded store; Redis as production uses it (scripts over the pipelined connection); and
    Redis through redis-py alone (as for TLS, Sentinel and Cluster URLs)."""
    clock = Clock()
    store: Store
    if request.param == "memory":
        store = MemoryStore(clock)
    elif request.param == "redis":
        store = RedisStore.for_url(shared_redis.url, 2.0, f"t{next(_prefix)}", clock)
    else:
        store = RedisStore(
            client_from_url(shared_redis.url, 2.0), key_prefix=f"t{next(_prefix)}", clock=clock
        )
    yield store, clock
    await store.close()
