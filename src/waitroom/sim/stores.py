"""The store a simulation runs on: the embedded one or a real Redis (keys of its own, removed at the
end), wrapped to fail while `--outage` says and to count the calls the deciders make."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from waitroom.sim.clock import VirtualClock
from waitroom.store.base import (
    Admission,
    LineGlance,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Store,
    StoreError,
    Tickets,
    Turn,
)


@dataclass(frozen=True, slots=True)
class Outage:
    """The store fails from `at` for `seconds` (`--outage AT+D`): `store.on_error` decides."""

    at: float
    seconds: float


class SimStore:
    """A store that counts the calls made on it and fails during an outage."""

    def __init__(self, inner: Store, clock: VirtualClock, outage: Outage | None = None) -> None:
        self.inner = inner
        self.clock = clock
        self.outage = outage
        self.calls: Counter[str] = Counter()

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        outage = self.outage
        if outage is not None and outage.at <= self.clock.now < outage.at + outage.seconds:
            raise StoreError("simulated outage")

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        self._call("admit")
        return await self.inner.admit(room, session_id, client)

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        self._call("record")
        await self.inner.record(room, admissions, now, tickets)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        self._call("room_state")
        return await self.inner.room_state(room)

    async def unblock(self, room: str) -> bool:
        self._call("unblock")
        return await self.inner.unblock(room)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        self._call("queue")
        return await self.inner.queue(room, session_id, client)

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        self._call("queue_state")
        return await self.inner.queue_state(room)

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        self._call("heartbeat")
        return await self.inner.heartbeat(room, session_ids)

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        self._call("still_here")
        return await self.inner.still_here(room, beats)

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        self._call("touch")
        return await self.inner.touch(room, ttl, seen, max_active)

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        self._call("release")
        return await self.inner.release(room, session_id, ttl)

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        self._call("hit")
        return await self.inner.hit(checks)

    async def overrides(self) -> dict[str, str]:
        return await self.inner.overrides()

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        return await self.inner.overrides_and_epoch(mark)

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        await self.inner.set_overrides(changes)

    async def close(self) -> None:
        await self.inner.close()


class RedisKeys:
    """A run's own keys on a real Redis: `sim:<pid>-<hex>:…`, checked unused first, removed after."""

    def __init__(self, url: str) -> None:
        from waitroom.store.redis_client import client_from_url

        self.url = url
        self.prefix = f"sim:{os.getpid()}-{secrets.token_hex(4)}"
        self._client: Any = client_from_url(url, 5.0)

    async def check(self) -> None:
        from redis.exceptions import RedisError

        try:
            _, found = await self._client.scan(0, match=f"{self.prefix}:*", count=1000)
        except (RedisError, OSError) as e:
            raise StoreError(str(e) or type(e).__name__) from None
        if found:
            raise StoreError(f"keys under {self.prefix}: already exist")

    async def remove(self) -> int:
        from redis.exceptions import RedisError

        removed = 0
        try:
            batch = []
            async for key in self._client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += await self._client.unlink(*batch)
                    batch = []
            if batch:
                removed += await self._client.unlink(*batch)
        except (RedisError, OSError):
            pass
        finally:
            await self._client.aclose()
        return removed
