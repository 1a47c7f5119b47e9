"""State behind the decisions: the embedded store or Redis, behind one protocol made of roles."""

from __future__ import annotations

import time

from waitroom.config.store import StoreConfig
from waitroom.store.base import (
    ActivityStore,
    Admission,
    Clock,
    LineStore,
    Overloaded,
    OverrideStore,
    QueuePolicy,
    QueueState,
    RateStore,
    RoomPolicy,
    RoomStore,
    Store,
    StoreError,
    Turn,
)
from waitroom.store.memory import MemoryStore

__all__ = [
    "ActivityStore",
    "Admission",
    "Clock",
    "LineStore",
    "MemoryStore",
    "Overloaded",
    "OverrideStore",
    "QueuePolicy",
    "QueueState",
    "RateStore",
    "RoomPolicy",
    "RoomStore",
    "Store",
    "StoreError",
    "Turn",
    "open_store",
]


def open_store(config: StoreConfig, clock: Clock = time.time, *, redis_clock: Clock | None = None) -> Store:
    """The store that `store.url` names. Connections are made lazily, on first use.

    Redis decides by its own clock (TIME) unless `redis_clock` is given: flow replay decides by the
    recorded times, on either store."""
    if config.url.startswith("memory://"):
        return MemoryStore(clock, config.max_keys)
    from waitroom.store.guard import CircuitBreaker, GuardedStore
    from waitroom.store.redis import RedisStore  # only deployments that use Redis import it

    breaker = CircuitBreaker(config.breaker.failures, config.breaker.cool_down)
    return GuardedStore(RedisStore.from_config(config, redis_clock), config.timeout, breaker, config.max_wait)
