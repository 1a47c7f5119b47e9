"""Where the request counter keeps its counts: in process, or in Redis shared by every replica.

The counter is the demo workload, not part of the proxy's decision path, but it uses the same store
choice: `memory://` by default, any Redis URL form otherwise. On Redis a PUT is one Lua script that
bumps the path and the total together, so the total always equals the sum of the paths.

A PUT may carry an idempotency key (the `Idempotency-Key` header): the first PUT with a key counts
and its answer is remembered for the key's window, in the same atomic step; a later PUT with the
same key counts nothing and gets that first answer again, on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from waitroom.config.store import StoreConfig
from waitroom.store.base import StoreError

MEMORY_KEYS = 100_000
"""Most idempotency keys the embedded store remembers at once; past it the oldest is forgotten
early (docs/counter.md says so). Redis keeps every key for its whole window."""
MAX_PATHS = 100_000
"""Most distinct paths counted, by default (option counter_max_paths): past it a PUT to a new path
is refused and counts nothing, while the paths already counted go on counting."""


@dataclass(frozen=True, slots=True)
class Put:
    count: int
    """The path's count after this PUT, or after the first PUT with the same key (`replayed`)."""
    total: int
    """The new total; 0 when `replayed` (nothing changed)."""
    replayed: bool = False
    """The key was seen before: nothing was counted now, `count` is the first answer's."""


class KeyReused(Exception):
    """The idempotency key was first used for another path: nothing was counted (422)."""


class TooManyPaths(Exception):
    """The path is new and the counter already holds `max_paths` paths: nothing was counted (507)."""


class OutcomeUnknown(StoreError):
    """The PUT reached the store (or may have), and no answer came back in time: it may have been
    counted, or may still be. Only a retry with the same idempotency key can tell."""


class Counts(Protocol):
    key_window: float
    """Seconds an idempotency key is remembered (changing it applies to keys stored from then on)."""
    max_paths: int
    """The most distinct paths counted; a new path past it raises TooManyPaths."""

    async def put(self, path: str, key: str | None = None) -> Put:
        """Count one PUT to `path`, once per `key` within the key window.
        Raises KeyReused, TooManyPaths, OutcomeUnknown, or StoreError (known not counted)."""
        ...

    async def get(self, path: str) -> int: ...

    async def total(self) -> int: ...

    async def close(self) -> None: ...


class MemoryCounts:
    def __init__(
        self, key_window: float = 86_400.0, clock: Any = time.monotonic, max_paths: int = MAX_PATHS
    ) -> None:
        self._paths: dict[str, int] = {}
        self._total = 0
        self.key_window = key_window
        self.max_paths = max_paths
        self._clock = clock
        self._keys: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        """key → (forgotten at, first count, path), oldest first (one window for all keys)."""

    async def put(self, path: str, key: str | None = None) -> Put:
        # No await in here: on one event loop the key's check, the count and its record happen together.
        if key is not None:
            now = self._clock()
            while self._keys and (
                next(iter(self._keys.values()))[0] <= now or len(self._keys) >= MEMORY_KEYS
            ):
                self._keys.popitem(last=False)
            seen = self._keys.get(key)
            if seen is not None:
                if seen[2] != path:
                    raise KeyReused(key)
                return Put(seen[1], 0, replayed=True)
        if path not in self._paths and len(self._paths) >= self.max_paths:
            raise TooManyPaths(path)
        self._paths[path] = count = self._paths.get(path, 0) + 1
        self._total += 1
        if key is not None:
            self._keys[key] = (self._clock() + self.key_window, count, path)
        return Put(count, self._total)

    async def get(self, path: str) -> int:
        return self._paths.get(path, 0)

    async def total(self) -> int:
        return self._total

    async def close(self) -> None:
        self._paths.clear()
        self._keys.clear()


class RedisCounts:
    """Keys: `<prefix>:{counter}:paths` (hash) and `<prefix>:{counter}:total`. One hash tag keeps
    them in one Cluster slot, which the atomic total needs (and which makes the counter one hot slot
    on a Cluster: it is a demo workload, not a sharded database)."""

    def __init__(
        self,
        client: Any,
        key_prefix: str,
        timeout: float,
        key_window: float = 86_400.0,
        max_paths: int = MAX_PATHS,
    ) -> None:
        from waitroom.store.redis_client import load_lua

        self._client = client
        self._timeout = timeout
        self.key_window = key_window
        self.max_paths = max_paths
        self.paths_key = f"{key_prefix}:{{counter}}:paths"
        self.total_key = f"{key_prefix}:{{counter}}:total"
        self.key_prefix = f"{key_prefix}:{{counter}}:idem:"
        self._put = client.register_script(load_lua("counter_put.lua"))

    async def _call(self, what: Any, writes: bool = False) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout):
                return await what
        except (RedisError, OSError, TimeoutError) as e:
            if writes and not _before_sending(e):
                # Sent, or maybe sent: Redis may run it now or when it comes back. Never retried here
                # (that could count it twice); the caller says so.
                raise OutcomeUnknown(f"redis: {type(e).__name__}") from e
            raise StoreError(f"redis: {type(e).__name__}") from e

    async def put(self, path: str, key: str | None = None) -> Put:
        keys = [self.paths_key, self.total_key]
        args: list[str | int] = [path, self.max_paths]
        if key is not None:
            keys.append(self.key_prefix + key)
            args.append(max(1, round(self.key_window * 1000)))
        count, total, replayed = await self._call(self._put(keys=keys, args=args), writes=True)
        if replayed == 2:
            raise KeyReused(key)
        if replayed == 3:
            raise TooManyPaths(path)
        return Put(int(count), int(total), replayed=bool(replayed))

    async def get(self, path: str) -> int:
        return int(await self._call(self._client.hget(self.paths_key, path)) or 0)

    async def total(self) -> int:
        return int(await self._call(self._client.get(self.total_key)) or 0)

    async def close(self) -> None:
        from redis.exceptions import RedisError

        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()


def open_counts(
    config: StoreConfig, timeout: float, key_window: float = 86_400.0, max_paths: int = MAX_PATHS
) -> Counts:
    """The counts store that `store.url` names; connections are made on first use."""
    if config.url.startswith("memory://"):
        return MemoryCounts(key_window, max_paths=max_paths)
    from waitroom.store.redis_client import client_from_url

    client = client_from_url(config.url_with_password(), timeout)
    return RedisCounts(client, config.key_prefix, timeout, key_window, max_paths)


def _before_sending(error: BaseException) -> bool:
    """True when the call certainly failed before its command left: no connection could be made
    (redis-py says `... connecting to ...`). Anything else may have reached Redis."""
    return isinstance(error, ConnectionRefusedError) or "connecting to" in str(error)
