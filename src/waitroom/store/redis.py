"""The Redis store: every replica sees one exact window.

Each decision is one Lua script (EVALSHA, loaded again when Redis answers NOSCRIPT after a restart).
The client and its URL forms are in redis_client.py, the room operations in redis_rooms.py; this
module holds the rate limiter's script, the overrides and the connection's life.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from waitroom.config.store import StoreConfig
from waitroom.store.base import (
    MICROS,
    Admission,
    Clock,
    LineGlance,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Tickets,
    Turn,
)
from waitroom.store.pipelined import PipelinedConnection, PipelinedScript
from waitroom.store.redis_client import (
    CLIENT_TIMEOUT,
    client_from_url,
    load_lua,
    redis_errors,
    script_time,
    text,
)
from waitroom.store.redis_rooms import RedisRooms

__all__ = ["RedisStore"]

_ALGORITHM_CODES = {"sliding_window": "w", "sliding_log": "l", "gcra": "g"}


class RedisStore:
    """The whole Store protocol on Redis: the rooms (redis_rooms.py), rate limits and overrides."""

    def __init__(
        self,
        client: Any,
        key_prefix: str = "waitroom",
        clock: Clock | None = None,
        fast: PipelinedConnection | None = None,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        """None: the Redis server's clock decides (production). Set: tests and flow replay."""
        self._fast = fast
        # The scripts on the request path go over the pipelined connection when there is one.
        register: Any = (lambda source: PipelinedScript(fast, source)) if fast else client.register_script
        self.rooms = RedisRooms(client, register, key_prefix, clock)
        self._rate_limit = register(load_lua("rate_limit.lua"))
        self.overrides_key = f"{key_prefix}:{{admin}}:overrides"
        self.epoch_key = f"{key_prefix}:{{admin}}:epoch"
        """The store's epoch (overrides_and_epoch): same slot as the overrides."""
        self._overrides_and_epoch = client.register_script(load_lua("overrides_epoch.lua"))
        self._cluster = isinstance(client, RedisCluster)

    @classmethod
    def from_config(cls, config: StoreConfig, clock: Clock | None = None) -> RedisStore:
        return cls.for_url(config.url_with_password(), config.timeout, config.key_prefix, clock)

    @classmethod
    def for_url(cls, url: str, timeout: float, key_prefix: str, clock: Clock | None = None) -> RedisStore:
        """A single node (`redis://` without options) gets the pipelined connection for its scripts;
        TLS, Sentinel and Cluster go through redis-py alone."""
        # The clients' own socket timeouts are only a backstop: store.timeout is enforced around
        # every call by the GuardedStore's Deadline, which tells a slow Redis from a busy event
        # loop; a client timeout as tight as store.timeout would count the loop's lag as Redis's.
        bound = max(timeout, CLIENT_TIMEOUT)
        parts = urlsplit(url)
        fast = (
            PipelinedConnection.from_url(url, bound) if parts.scheme == "redis" and not parts.query else None
        )
        return cls(client_from_url(url, bound), key_prefix, clock, fast)

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        return await self.rooms.admit(room, session_id, client)

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        await self.rooms.record(room, admissions, now, tickets)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        return await self.rooms.room_state(room)

    async def unblock(self, room: str) -> bool:
        return await self.rooms.unblock(room)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        return await self.rooms.queue(room, session_id, client)

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        return await self.rooms.queue_state(room)

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        return await self.rooms.heartbeat(room, session_ids)

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        return await self.rooms.still_here(room, beats)

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        return await self.rooms.touch(room, ttl, seen, max_active)

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        return await self.rooms.release(room, session_id, ttl)

    def rate_key(self, check: RateCheck) -> str:
        return f"{self._prefix}:{{rl:{check.rule}:{check.key}}}:{_ALGORITHM_CODES[check.algorithm]}"

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        if not checks:
            return []
        groups = [list(range(len(checks)))]
        if self._cluster:
            # A script may touch one Cluster slot only. Rules whose keys live in different slots
            # are decided one slot after another; a refusal in a later slot does not undo the
            # charges of an earlier one (docs/rate-limits.md says so).
            by_slot: dict[int, list[int]] = {}
            for i, check in enumerate(checks):
                by_slot.setdefault(key_slot(self.rate_key(check).encode()), []).append(i)
            groups = list(by_slot.values())
        results: list[RateResult | None] = [None] * len(checks)
        for group in groups:
            part = [checks[i] for i in group]
            for i, result in zip(group, await self._hit_one_slot(part), strict=True):
                results[i] = result
            if any(
                not r.allowed and not c.shadow
                for r, c in zip((results[i] for i in group), part, strict=True)
                if r
            ):
                break
        # Groups after an enforced refusal were not asked: they count as allowed and uncharged.
        return [r if r is not None else RateResult(True, checks[i].limit, 0.0) for i, r in enumerate(results)]

    async def _hit_one_slot(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        args: list[str | int] = [script_time(self._clock)]
        for c in checks:
            args += [
                _ALGORITHM_CODES[c.algorithm],
                c.limit,
                round(c.per * MICROS),
                c.burst or 0,
                int(c.shadow),
                round(c.max_delay * MICROS),
            ]
        with redis_errors():
            reply = await self._rate_limit(keys=[self.rate_key(c) for c in checks], args=args)
        return [
            RateResult(bool(reply[i]), int(reply[i + 1]), reply[i + 2] / MICROS, reply[i + 3] / MICROS)
            for i in range(0, len(reply), 4)
        ]

    async def overrides(self) -> dict[str, str]:
        with redis_errors():
            raw = await self._client.hgetall(self.overrides_key)
        return {text(k): text(v) for k, v in raw.items()}

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        with redis_errors():
            epoch, flat = await self._overrides_and_epoch(
                keys=[self.overrides_key, self.epoch_key], args=[mark]
            )
        return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}, text(epoch)

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        updates = {k: v for k, v in changes.items() if v is not None}
        removals = [k for k, v in changes.items() if v is None]
        with redis_errors():
            # One key, so one slot: a transaction applies every change at once, also on a Cluster.
            async with self._client.pipeline(transaction=True) as pipe:
                if updates:
                    pipe.hset(self.overrides_key, mapping=updates)
                if removals:
                    pipe.hdel(self.overrides_key, *removals)
                await pipe.execute()

    async def warm(self) -> None:
        """Connect and load the scripts before the first visitor needs them (a replica that starts
        in the middle of a flash crowd should not make its first callers pay for the connection)."""
        if self._fast is not None:
            await self._fast.connect()
        else:
            await self.ping()

    async def ping(self) -> bool:
        with redis_errors():
            return bool(await self._client.ping())

    async def close(self) -> None:
        # Closing the connections to a Redis that is gone is not an error worth reporting.
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
            if self._fast is not None:
                await self._fast.close()
