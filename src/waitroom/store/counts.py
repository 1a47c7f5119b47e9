"""Where the request counter keeps its counts: in process, or in Redis shared by every replica.

The counter is the demo workload, not part of the proxy's decision path, but it uses the same store
choice: `memory://` by default, any Redis URL form otherwise. On Redis a PUT is one Lua script that
bumps the path and the total together, so the total always equals the sum of the paths.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from waitroom.config import StoreConfig
from waitroom.store.base import StoreError


class Counts(Protocol):
    async def put(self, path: str) -> tuple[int, int]:
        """Count one PUT to `path`; return (the path's new count, the new total)."""
        ...

    async def get(self, path: str) -> int: ...

    async def total(self) -> int: ...

    async def close(self) -> None: ...


class MemoryCounts:
    def __init__(self) -> None:
        self._paths: dict[str, int] = {}
        self._total = 0

    async def put(self, path: str) -> tuple[int, int]:
        # No await between the two updates: on one event loop they happen together.
        self._paths[path] = count = self._paths.get(path, 0) + 1
        self._total += 1
        return count, self._total

    async def get(self, path: str) -> int:
        return self._paths.get(path, 0)

    async def total(self) -> int:
        return self._total

    async def close(self) -> None:
        self._paths.clear()


class RedisCounts:
    """Keys: `<prefix>:{counter}:paths` (hash) and `<prefix>:{counter}:total`. One hash tag keeps
    them in one Cluster slot, which the atomic total needs (and which makes the counter one hot slot
    on a Cluster: it is a demo workload, not a sharded database)."""

    def __init__(self, client: Any, key_prefix: str, timeout: float) -> None:
        from waitroom.store.redis import load_lua

        self._client = client
        self._timeout = timeout
        self.paths_key = f"{key_prefix}:{{counter}}:paths"
        self.total_key = f"{key_prefix}:{{counter}}:total"
        self._put = client.register_script(load_lua("counter_put.lua"))

    async def _call(self, what: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout):
                return await what
        except (RedisError, OSError, TimeoutError) as e:
            raise StoreError(f"redis: {type(e).__name__}") from e

    async def put(self, path: str) -> tuple[int, int]:
        count, total = await self._call(self._put(keys=[self.paths_key, self.total_key], args=[path]))
        return int(count), int(total)

    async def get(self, path: str) -> int:
        return int(await self._call(self._client.hget(self.paths_key, path)) or 0)

    async def total(self) -> int:
        return int(await self._call(self._client.get(self.total_key)) or 0)

    async def close(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()


def open_counts(config: StoreConfig, timeout: float) -> Counts:
    """The counts store that `store.url` names; connections are made on first use."""
    if config.url.startswith("memory://"):
        return MemoryCounts()
    from waitroom.store.redis import client_from_url

    return RedisCounts(client_from_url(config.url_with_password(), timeout), config.key_prefix, timeout)
