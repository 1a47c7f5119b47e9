"""What the admin port reports, independent of HTTP: readiness, the live-state gauges set before a
scrape, and the rooms and rules as the admin API shows them (config, run-time changes, store state)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Protocol

from waitroom.active import active_ttl
from waitroom.config import Config, RateLimitConfig, RoomConfig, StoreErrorPolicy
from waitroom.decide import room_policy
from waitroom.durations import format_duration
from waitroom.metrics import METRICS
from waitroom.overrides import Overrides, RoomMode
from waitroom.queue import newcomer_wait, queue_policy
from waitroom.store import Overloaded, Store, StoreError

READ_TIMEOUT = 2.0
"""Bound on the store reads behind one admin or metrics answer (each store call has its own)."""


class Operated(Protocol):
    """What the admin port needs from the running wait room."""

    @property
    def config(self) -> Config | None: ...

    @property
    def config_path(self) -> Path | None: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def overrides(self) -> Overrides: ...

    @property
    def draining(self) -> bool: ...

    def local_replicas(self) -> int:
        """What `on_error: local` divides limits by now."""
        ...

    def store_failing(self) -> bool:
        """True while the store's circuit breaker is not closed (the failure policy decides)."""
        ...

    async def change_overrides(self, changes: dict[str, str | None]) -> None:
        """Write run-time settings to the store and apply them here at once."""
        ...


def readiness(operated: Operated) -> tuple[dict[str, object], bool]:
    config = operated.config
    failing = operated.store_failing()
    body: dict[str, object] = {
        "ready": False,
        "config": str(operated.config_path) if operated.config_path else None,
        "store": "failing" if failing else "ok",
        "draining": operated.draining,
    }
    if config is not None:
        body["store_url"] = config.store.url.split("://")[0] + "://"  # never the host or credentials
        if failing:
            body["policy"] = config.store.on_error.value
        body["replicas"] = operated.local_replicas()
    ready = config is not None and not operated.draining
    body["ready"] = ready
    METRICS.ready.set(1 if ready else 0)
    return body, ready


async def refresh_live_metrics(operated: Operated) -> None:
    """Set the live-state gauges from one store read per room, just before a scrape."""
    config = operated.config
    readiness(operated)
    failing = operated.store_failing()
    if config is not None:
        for policy in StoreErrorPolicy:
            METRICS.degraded.labels(policy.value).set(1 if failing and policy is config.store.on_error else 0)
        for rule in config.rate_limits:
            METRICS.rule_limit.labels(rule.name).set(operated.overrides.rule(rule).limit)
    views = await room_views(operated)
    store_ok = all(view["store"] == "ok" for view in views) and not failing
    METRICS.store_up.set(1 if store_ok else 0)
    for view in views:
        name = str(view["name"])
        METRICS.room_new_sessions_limit.labels(name).set(_number(view["new_sessions"]))
        for mode in RoomMode:
            METRICS.room_mode.labels(name, mode.value.replace("-", "_")).set(
                1 if view["mode"] == mode.value else 0
            )
        if view["store"] == "ok":
            blocked_for = _number(view["blocked_for"])
            METRICS.room_window_admissions.labels(name).set(_number(view["in_window"]))
            METRICS.room_block_remaining.labels(name).set(blocked_for)
            METRICS.room_blocked.labels(name).set(1 if blocked_for > 0 or view["mode"] == "queue-all" else 0)
            METRICS.room_admissions_per_minute.labels(name).set(_number(view["admissions_per_minute"]))
            if view["max_active"]:
                METRICS.room_active.labels(name).set(_number(view["active"]))
                METRICS.room_max_active.labels(name).set(_number(view["max_active"]))
            METRICS.opens_in.labels(name).set(_number(view["opens_in"]))
            line = view.get("queue")
            if isinstance(line, dict):
                METRICS.queue_length.labels(name).set(_number(line["length"]))
                prequeue = line["length"] if view["state"] == "scheduled" else 0
                METRICS.prequeue_length.labels(name).set(_number(prequeue))
                METRICS.queue_oldest_wait.labels(name).set(_number(line["oldest_wait"]))
                METRICS.queue_eta.labels(name).set(_number(line["eta_seconds"]))


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


async def room_views(operated: Operated, only: str | None = None) -> list[dict[str, object]]:
    config, store = operated.config, operated.store
    if config is None:
        return []
    rooms = [r for r in config.rooms if only is None or r.name == only]
    views = [room_view(room, operated.overrides) for room in rooms]
    if store is None:
        return views

    async def read(room: RoomConfig, view: dict[str, object]) -> None:
        effective = operated.overrides.room(room)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                state = await store.room_state(room_policy(effective, ttl=active_ttl(config.session.ttl)))
        except (StoreError, Overloaded, TimeoutError):
            view["store"] = "failing"
            return
        view["store"] = "ok"
        view["in_window"] = state.in_window
        view["blocked_for"] = round(state.blocked_for, 3)
        view["admissions_per_minute"] = round(state.in_window * 60 / effective.window, 1)
        if effective.max_active:
            view["active"] = state.active
        if effective.queue == "fifo":
            view["queue"] = await read_line(store, effective)

    await asyncio.gather(*(read(room, view) for room, view in zip(rooms, views, strict=True)))
    return views


async def read_line(store: Store, room: RoomConfig) -> dict[str, object]:
    """A fifo room's line, as the admin API and `waitroom status` show it."""
    async with asyncio.timeout(READ_TIMEOUT):
        line = await store.queue_state(queue_policy(room))
    return {
        "length": line.length,
        "called": line.called,
        "oldest_wait": round(line.oldest_wait, 1),
        "eta_seconds": newcomer_wait(line, room),
    }


def schedule(room: RoomConfig, now: float) -> dict[str, object]:
    """A room's opening and closing, as the admin API shows them (times in ISO 8601)."""
    opens, closes = room.opens_at, room.closes_at
    state = "open"
    if closes is not None and now >= closes.timestamp():
        state = "closed"
    elif opens is not None and now < opens.timestamp():
        state = "scheduled"
    return {
        "state": state,
        "opens_at": opens.isoformat() if opens else None,
        "closes_at": closes.isoformat() if closes else None,
        "opens_in": max(0, math.ceil(opens.timestamp() - now)) if opens else 0,
    }


def room_view(room: RoomConfig, overrides: Overrides) -> dict[str, object]:
    effective = overrides.room(room)
    return {
        **schedule(effective, time.time()),
        "max_active": effective.max_active,
        "active": None,
        "name": room.name,
        "match": {"path_prefix": room.match.path_prefix, "host": room.match.host},
        "mode": overrides.room_mode(room.name).value,
        "order": room.queue,
        "new_sessions": effective.new_sessions,
        "window": format_duration(room.window),
        "block_for": format_duration(effective.block_for),
        "configured": {"new_sessions": room.new_sessions, "block_for": format_duration(room.block_for)},
        "in_window": None,
        "blocked_for": None,
        "store": "unknown",
    }


def rule_view(rule: RateLimitConfig, overrides: Overrides) -> dict[str, object]:
    return {
        "name": rule.name,
        "key": rule.key,
        "limit": overrides.rule(rule).limit,
        "per": format_duration(rule.per),
        "algorithm": rule.algorithm,
        "action": rule.action,
        "shadow": rule.shadow,
        "configured": {"limit": rule.limit},
    }
