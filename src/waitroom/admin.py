"""The admin port: /healthz, /readyz, /metrics and the token-protected admin API.

It runs on mitmproxy's own event loop (tornado, which mitmproxy already depends on), never on the
proxied port. The admin API is off unless the environment variable named by `admin.token_env`
(default WAITROOM_ADMIN_TOKEN) holds a token; callers send `Authorization: Bearer <token>`, checked
in constant time. Changes go to the store, so every replica sharing it obeys them (see overrides.py),
and each one is logged — without the token.

    GET   /healthz                          200 while the process runs
    GET   /readyz                           200 when the config is loaded and not draining, else 503;
                                            reports the store's health and the failure policy in force
    GET   /metrics                          Prometheus text format
    GET   /admin/status                     rooms and rules with live state
    GET   /admin/rooms[/NAME]               rooms with live state
    POST  /admin/rooms/NAME/ACTION          open | queue-all | normal | unblock | close | reset
    PATCH /admin/rooms/NAME                 {"new_sessions": 50, "block_for": "30s"}
    GET   /admin/rules[/NAME]               rate-limit rules with the limit in force
    PATCH /admin/rules/NAME                 {"limit": 20}
    POST  /admin/rules/NAME/reset           back to the config's limit
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from waitroom.config import Config, RateLimitConfig, RoomConfig, StoreErrorPolicy
from waitroom.decide import room_policy
from waitroom.durations import format_duration
from waitroom.metrics import METRICS
from waitroom.overrides import (
    SCHEDULE,
    Overrides,
    RoomMode,
    check_room_value,
    check_rule_value,
    room_key,
    rule_key,
)
from waitroom.queue import newcomer_wait, queue_policy
from waitroom.store import Overloaded, Store, StoreError

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""Admin requests are small JSON objects; anything bigger is refused with 413."""
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


class AdminServer:
    def __init__(self, operated: Operated, token: str | None) -> None:
        self.operated = operated
        self.token = token
        self._server: HTTPServer | None = None

    def start(self, host: str, port: int) -> None:
        settings = {"operated": self.operated, "token": self.token}
        app = Application(
            [
                (r"/healthz", Healthz, settings),
                (r"/readyz", Readyz, settings),
                (r"/metrics", Metrics, settings),
                (r"/admin/status", Status, settings),
                (r"/admin/rooms", Rooms, settings),
                (r"/admin/rooms/([^/]+)", Room, settings),
                (r"/admin/rooms/([^/]+)/([^/]+)", RoomAction, settings),
                (r"/admin/rules", Rules, settings),
                (r"/admin/rules/([^/]+)", Rule, settings),
                (r"/admin/rules/([^/]+)/([^/]+)", RuleAction, settings),
            ],
            log_function=_log_request,
            default_handler_class=NotFound,
            default_handler_args=settings,
        )
        self._server = HTTPServer(app, max_body_size=MAX_BODY * 64)
        self._server.listen(port, host)
        log.info(
            "waitroom: admin port on http://%s:%d (admin API %s)", host, port, "on" if self.token else "off"
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await asyncio.wait_for(self._server.close_all_connections(), 5)
            self._server = None


def _log_request(handler: RequestHandler) -> None:
    # Probes and scrapes arrive every few seconds: only failures are worth a line.
    if handler.get_status() >= 500:
        log.warning(
            "waitroom admin: %s %s → %d", handler.request.method, handler.request.path, handler.get_status()
        )


class _Base(RequestHandler):
    def initialize(self, operated: Operated, token: str | None) -> None:
        self.operated = operated
        self.token = token

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def reply(self, status: int, body: object) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, indent=1) + "\n")

    def fail(self, status: int, message: str) -> None:
        self.reply(status, {"error": message})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Never tornado's HTML traceback page.
        self.reply(status_code, {"error": self._reason})


class NotFound(_Base):
    def prepare(self) -> None:
        self.fail(404, f"no such endpoint: {self.request.path}")


class Healthz(_Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n")


class Readyz(_Base):
    def get(self) -> None:
        body, ready = readiness(self.operated)
        self.reply(200 if ready else 503, body)


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


class Metrics(_Base):
    async def get(self) -> None:
        await refresh_live_metrics(self.operated)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(METRICS.registry))


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


def _no_constant(name: str) -> object:
    """JSON's NaN and Infinity are not numbers any setting can take."""
    raise ValueError(f"{name} is not allowed")


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


async def room_views(operated: Operated, only: str | None = None) -> list[dict[str, object]]:
    config, store = operated.config, operated.store
    if config is None:
        return []
    rooms = [r for r in config.rooms if only is None or r.name == only]
    views = [_room_view(room, operated.overrides) for room in rooms]
    if store is None:
        return views

    async def read(room: RoomConfig, view: dict[str, object]) -> None:
        effective = operated.overrides.room(room)
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                state = await store.room_state(room_policy(effective, ttl=config.session.ttl))
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


def _schedule(room: RoomConfig, now: float) -> dict[str, object]:
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


def _room_view(room: RoomConfig, overrides: Overrides) -> dict[str, object]:
    effective = overrides.room(room)
    return {
        **_schedule(effective, time.time()),
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


def _rule_view(rule: RateLimitConfig, overrides: Overrides) -> dict[str, object]:
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


class _Admin(_Base):
    """The admin API: a bearer token, small JSON bodies."""

    def prepare(self) -> None:
        if not self.token:
            self.fail(404, "the admin API is off: set the admin token's environment variable to turn it on")
            return
        given = self.request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            self.set_header("WWW-Authenticate", 'Bearer realm="waitroom"')
            self.fail(401, "a valid admin token is required (Authorization: Bearer ...)")
            return
        if len(self.request.body) > MAX_BODY:
            self.fail(413, f"the body is larger than {MAX_BODY} bytes")

    def json_body(self) -> dict[str, Any] | None:
        """The request's JSON object, or None after answering 400."""
        try:
            body = json.loads(self.request.body or b"{}", parse_constant=_no_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.fail(400, "the body is not JSON")
            return None
        if not isinstance(body, dict):
            self.fail(400, "the body must be a JSON object")
            return None
        return body

    def room_config(self, name: str) -> RoomConfig | None:
        config = self.operated.config
        room = next((r for r in config.rooms if r.name == name), None) if config else None
        if room is None:
            self.fail(404, f"no room named {name!r}")
        return room

    def rule_config(self, name: str) -> RateLimitConfig | None:
        config = self.operated.config
        rule = next((r for r in config.rate_limits if r.name == name), None) if config else None
        if rule is None:
            self.fail(404, f"no rate-limit rule named {name!r}")
        return rule

    async def change(self, action: str, what: str, changes: dict[str, str | None]) -> bool:
        try:
            await self.operated.change_overrides(changes)
        except (StoreError, Overloaded) as e:
            log.warning("waitroom admin: %s refused: the store is failing (%s)", what, e)
            self.fail(503, "the store is failing: nothing was changed")
            return False
        METRICS.admin_actions.labels(action).inc()
        log.info("waitroom admin: %s (from %s)", what, self.request.remote_ip)
        return True


class Status(_Admin):
    async def get(self) -> None:
        ready_body, _ = readiness(self.operated)
        config = self.operated.config
        rules = [_rule_view(r, self.operated.overrides) for r in config.rate_limits] if config else []
        self.reply(200, {**ready_body, "rooms": await room_views(self.operated), "rules": rules})


class Rooms(_Admin):
    async def get(self) -> None:
        self.reply(200, {"rooms": await room_views(self.operated)})


class Room(_Admin):
    async def get(self, name: str) -> None:
        if self.room_config(name) is not None:
            self.reply(200, (await room_views(self.operated, only=name))[0])

    async def patch(self, name: str) -> None:
        room, body = self.room_config(name), None
        if room is None or (body := self.json_body()) is None:
            return
        if not body:
            self.fail(400, "nothing to change: give new_sessions, block_for, opens_at and/or closes_at")
            return
        changes: dict[str, str | None] = {}
        for field, value in body.items():
            if field not in ("new_sessions", "block_for", *SCHEDULE):
                self.fail(
                    400, f"unknown room setting {field!r} (new_sessions, block_for, opens_at, closes_at)"
                )
                return
            if field == "opens_at" and room.queue != "fifo":
                self.fail(400, "opens_at needs a room with queue: fifo")
                return
            try:
                changes[room_key(name, field)] = check_room_value(field, value)
            except ValueError as e:
                self.fail(400, str(e))
                return
        what = ", ".join(f"{k}={v}" for k, v in body.items())
        if await self.change("room_set", f"room {name}: {what}", changes):
            self.reply(200, (await room_views(self.operated, only=name))[0])


class RoomAction(_Admin):
    async def post(self, name: str, action: str) -> None:
        if self.room_config(name) is None:
            return
        if action in ("open", "queue-all", "normal"):
            changes: dict[str, str | None] = {room_key(name, "mode"): None if action == "normal" else action}
            if not await self.change(
                f"room_{action.replace('-', '_')}", f"room {name}: mode={action}", changes
            ):
                return
        elif action == "close":  # closes_at = now: new visitors get the closed answer
            changes = {room_key(name, "closes_at"): check_room_value("closes_at", "now")}
            if not await self.change("room_close", f"room {name}: closed", changes):
                return
        elif action == "reset":
            fields = ("mode", "new_sessions", "block_for", *SCHEDULE)
            if not await self.change(
                "room_reset", f"room {name}: reset", {room_key(name, f): None for f in fields}
            ):
                return
        elif action == "unblock":
            store = self.operated.store
            try:
                if store is None:
                    raise StoreError("no store")
                await asyncio.wait_for(store.unblock(name), READ_TIMEOUT)
            except (StoreError, Overloaded, TimeoutError) as e:
                log.warning("waitroom admin: unblock %s refused: the store is failing (%s)", name, e)
                self.fail(503, "the store is failing: nothing was changed")
                return
            METRICS.admin_actions.labels("room_unblock").inc()
            log.info("waitroom admin: room %s: unblocked (from %s)", name, self.request.remote_ip)
        else:
            self.fail(404, f"unknown room action {action!r} (open, queue-all, normal, unblock, close, reset)")
            return
        self.reply(200, (await room_views(self.operated, only=name))[0])


class Rules(_Admin):
    def get(self) -> None:
        config = self.operated.config
        rules = config.rate_limits if config else []
        self.reply(200, {"rules": [_rule_view(r, self.operated.overrides) for r in rules]})


class Rule(_Admin):
    def get(self, name: str) -> None:
        if (rule := self.rule_config(name)) is not None:
            self.reply(200, _rule_view(rule, self.operated.overrides))

    async def patch(self, name: str) -> None:
        rule, body = self.rule_config(name), None
        if rule is None or (body := self.json_body()) is None:
            return
        if set(body) != {"limit"}:
            self.fail(400, "give exactly one setting: limit")
            return
        try:
            value = check_rule_value("limit", body["limit"])
        except ValueError as e:
            self.fail(400, str(e))
            return
        if await self.change("rule_set", f"rule {name}: limit={value}", {rule_key(name, "limit"): value}):
            self.reply(200, _rule_view(rule, self.operated.overrides))


class RuleAction(_Admin):
    async def post(self, name: str, action: str) -> None:
        if (rule := self.rule_config(name)) is None:
            return
        if action != "reset":
            self.fail(404, f"unknown rule action {action!r} (reset)")
            return
        if await self.change("rule_reset", f"rule {name}: reset", {rule_key(name, "limit"): None}):
            self.reply(200, _rule_view(rule, self.operated.overrides))
