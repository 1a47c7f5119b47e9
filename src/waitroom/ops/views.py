"""What the admin port reports, independent of HTTP: readiness, the live-state gauges set before a
scrape, and the rooms and rules as the admin API shows them (config, run-time changes, store state)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from prometheus_client import Gauge

from waitroom import __version__
from waitroom.config.durations import format_duration
from waitroom.config.overrides import ROOM_KNOBS, RULE_KNOBS, Overrides, RoomMode
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import Config, RoomConfig
from waitroom.config.store import StoreErrorPolicy
from waitroom.metrics import METRICS, settle_followed
from waitroom.rooms.activity import active_ttl
from waitroom.rooms.estimate import newcomer_estimate
from waitroom.rooms.policy import queue_policy, room_policy
from waitroom.rooms.shadow import ShadowStore
from waitroom.store.base import LineStore, Overloaded, Store, StoreError

ETA_UNKNOWN = -1.0
"""`waitroom_queue_eta_seconds` when no honest figure exists (the cap is full and fewer than two
sessions left for a while): a value no real wait has, which an alert can test for."""
READ_TIMEOUT = 2.0
"""Bound on the store reads behind one admin or metrics answer (each store call has its own)."""


@dataclass(frozen=True, slots=True)
class ReloadRefusal:
    """The config file changed and was refused; the config in force is the older one."""

    since: float
    """When the file was first refused (Unix time); a later bad version keeps it."""
    error: str
    """The refusal's one line, without credentials."""
    file_sha256: str
    """SHA-256 of the refused file's bytes."""


class Operated(Protocol):
    """What the admin port needs from the running wait room."""

    @property
    def config(self) -> Config | None: ...

    @property
    def config_path(self) -> Path | None: ...

    @property
    def config_sha256(self) -> str | None:
        """SHA-256 of the bytes of the config file in force."""
        ...

    @property
    def config_loaded_at(self) -> float | None: ...

    @property
    def reload_refused(self) -> ReloadRefusal | None: ...

    @property
    def store_reset_at(self) -> float | None:
        """When this replica last saw the store come back empty (Runtime.saw_epoch); None if never."""
        ...

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
        "version": __version__,
        "config": str(operated.config_path) if operated.config_path else None,
        "config_sha256": operated.config_sha256,
        "config_loaded_at": iso_time(operated.config_loaded_at),
        "config_reload": reload_state(operated.reload_refused),
        "store": "failing" if failing else "ok",
        "draining": operated.draining,
    }
    if (reset := operated.store_reset_at) is not None:
        body["store_reset_at"] = iso_time(reset)
    if config is not None:
        body["store_url"] = config.store.url.split("://")[0] + "://"  # never the host or credentials
        if failing:
            body["policy"] = config.store.on_error.value
        body["replicas"] = operated.local_replicas()
    ready = config is not None and not operated.draining
    body["ready"] = ready
    METRICS.process.ready.set(1 if ready else 0)
    return body, ready


def reload_state(refused: ReloadRefusal | None) -> dict[str, object]:
    """`{"state": "ok"}`, or the refusal: since when, the error, the refused file's SHA-256. A
    refused reload leaves the proxy serving (ready): the older config is in force."""
    if refused is None:
        return {"state": "ok"}
    return {
        "state": "refused",
        "since": iso_time(refused.since),
        "error": refused.error,
        "file_sha256": refused.file_sha256,
    }


def iso_time(moment: float | None) -> str | None:
    """Unix time as ISO 8601 in UTC, to the second."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


async def refresh_live_metrics(operated: Operated) -> None:
    """Set the live-state gauges from one store read per room, just before a scrape."""
    config = operated.config
    readiness(operated)
    settle_followed()
    failing = operated.store_failing()
    if config is not None:
        for policy in StoreErrorPolicy:
            METRICS.store.degraded.labels(policy.value).set(
                1 if failing and policy is config.store.on_error else 0
            )
        for rule in config.rate_limits:
            METRICS.rate_limits.limit.labels(rule.name).set(operated.overrides.rule(rule).limit)
    views = await room_views(operated)
    store_ok = all(view["store"] == "ok" for view in views) and not failing
    METRICS.store.up.set(1 if store_ok else 0)
    for view in views:
        name = str(view["name"])
        METRICS.shadow.active.labels(name).set(1 if view["shadow"] else 0)
        if view["shadow"]:
            _shadow_gauges(name, view)
            continue
        shadow = METRICS.shadow
        _forget(shadow.window_admissions, shadow.blocked_for, shadow.eta, shadow.length, name=name)
        METRICS.rooms.new_sessions_limit.labels(name).set(_number(view["new_sessions"]))
        for mode in RoomMode:
            METRICS.rooms.mode.labels(name, mode.value.replace("-", "_")).set(
                1 if view["mode"] == mode.value else 0
            )
        if view["store"] == "ok":
            blocked_for = _number(view["blocked_for"])
            METRICS.rooms.window_admissions.labels(name).set(_number(view["in_window"]))
            METRICS.rooms.block_remaining.labels(name).set(blocked_for)
            METRICS.rooms.blocked.labels(name).set(1 if blocked_for > 0 or view["mode"] == "queue-all" else 0)
            METRICS.rooms.admissions_per_minute.labels(name).set(_number(view["admissions_per_minute"]))
            if view["max_active"]:
                METRICS.capacity.active.labels(name).set(_number(view["active"]))
                METRICS.capacity.max_active.labels(name).set(_number(view["max_active"]))
            METRICS.capacity.opens_in.labels(name).set(_number(view["opens_in"]))
            line = view.get("queue")
            if isinstance(line, dict):
                METRICS.line.length.labels(name).set(_number(line["length"]))
                prequeue = line["length"] if view["state"] == "scheduled" else 0
                METRICS.capacity.prequeue_length.labels(name).set(_number(prequeue))
                METRICS.line.oldest_wait.labels(name).set(_number(line["oldest_wait"]))
                eta = line["eta_seconds"]
                METRICS.line.eta.labels(name).set(ETA_UNKNOWN if eta is None else _number(eta))


def _shadow_gauges(name: str, view: dict[str, object]) -> None:
    """A shadow room's gauges: what it would show live, from its own key space. A newcomer's wait is
    the line's estimate (fifo) or what the block has left (block)."""
    if view["store"] != "ok":
        return
    blocked_for = _number(view["blocked_for"])
    METRICS.shadow.window_admissions.labels(name).set(_number(view["in_window"]))
    METRICS.shadow.blocked_for.labels(name).set(blocked_for)
    line = view.get("queue")
    if isinstance(line, dict):
        METRICS.shadow.length.labels(name).set(_number(line["length"]))
        eta = line["eta_seconds"]
        METRICS.shadow.eta.labels(name).set(ETA_UNKNOWN if eta is None else _number(eta))
    else:
        METRICS.shadow.eta.labels(name).set(math.ceil(blocked_for))


def _forget(*gauges: Gauge, name: str) -> None:
    """Drop a room's series (a shadow room turned live no longer reports what it would do)."""
    for gauge in gauges:
        with contextlib.suppress(KeyError):
            gauge.remove(name)


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
        # A shadow room's state is in its own key space (rooms/shadow.py): what it would have done.
        keys: Store = ShadowStore(store) if effective.shadow else store
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                state = await keys.room_state(room_policy(effective, ttl=active_ttl(config.session.ttl)))
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
            view["queue"] = await read_line(keys, effective, active_ttl(config.session.ttl))

    await asyncio.gather(*(read(room, view) for room, view in zip(rooms, views, strict=True)))
    return views


async def read_line(store: LineStore, room: RoomConfig, ttl: float) -> dict[str, object]:
    """A fifo room's line, as the admin API and `waitroom status` show it: `eta_seconds` is what a
    newcomer would be told (rooms/estimate.py), None when no honest figure exists (`eta_basis`
    says why). `ttl`: how long the store counts an idle session (activity.active_ttl)."""
    async with asyncio.timeout(READ_TIMEOUT):
        line = await store.queue_state(queue_policy(room, ttl=ttl))
    estimate = newcomer_estimate(line, room)
    return {
        "length": line.length,
        "called": line.called,
        "oldest_wait": round(line.oldest_wait, 1),
        "eta_seconds": estimate.seconds,
        "eta_basis": estimate.basis,
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
    """A room as the admin API shows it: every run-time knob in force, and as configured."""
    effective = overrides.room(room)
    knobs = {name: knob.show(getattr(effective, name)) for name, knob in ROOM_KNOBS.items()}
    return {
        **knobs,
        **schedule(effective, time.time()),
        "active": None,
        "name": room.name,
        "match": {"path_prefix": room.match.path_prefix, "host": room.match.host},
        "mode": overrides.room_mode(room.name).value,
        "order": room.queue,
        "configured": {name: knob.show(getattr(room, name)) for name, knob in ROOM_KNOBS.items()},
        "ignored": list(overrides.ignored(room)),
        "in_window": None,
        "blocked_for": None,
        "store": "unknown",
    }


def rule_view(rule: RateLimitConfig, overrides: Overrides) -> dict[str, object]:
    effective = overrides.rule(rule)
    return {
        "name": rule.name,
        "key": rule.key,
        **{name: knob.show(getattr(effective, name)) for name, knob in RULE_KNOBS.items()},
        "per": format_duration(rule.per),
        "algorithm": rule.algorithm,
        "action": rule.action,
        "configured": {name: knob.show(getattr(rule, name)) for name, knob in RULE_KNOBS.items()},
        "ignored": list(overrides.ignored(rule)),
    }
