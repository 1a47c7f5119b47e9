"""The admin port's request handlers (tornado): the probes, /metrics, and the token-protected admin
API over small JSON bodies. What they report is built in adminviews.py; admin.py routes to them."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado.web import RequestHandler

from waitroom.config.overrides import (
    ROOM_SETTINGS,
    RULE_KNOBS,
    check_room_value,
    check_rule_value,
    room_key,
    rule_key,
    validate_room,
    validate_rule,
)
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import RoomConfig
from waitroom.metrics import METRICS
from waitroom.ops.views import (
    READ_TIMEOUT,
    Operated,
    readiness,
    refresh_live_metrics,
    room_views,
    rule_view,
)
from waitroom.rooms.shadow import ShadowStore
from waitroom.store.base import Overloaded, StoreError

log = logging.getLogger("waitroom.ops.admin")  # one logger for the admin port, whichever module logs

MAX_BODY = 16 * 1024
"""Admin requests are small JSON objects; anything bigger is refused with 413."""


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


class Metrics(_Base):
    async def get(self) -> None:
        await refresh_live_metrics(self.operated)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(METRICS.registry))


def _after(values: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The overrides as they would be with `changes` written (None removes a key)."""
    merged = dict(values)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _no_constant(name: str) -> object:
    """JSON's NaN and Infinity are not numbers any setting can take."""
    raise ValueError(f"{name} is not allowed")


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

    def knobs(self, known: tuple[str, ...]) -> tuple[str, ...] | None:
        """`{"knobs": [...]}` of a reset (every knob without it), or None after answering 400."""
        body = self.json_body()
        if body is None:
            return None
        names = body.get("knobs", list(known))
        if set(body) - {"knobs"} or not isinstance(names, list) or not names:
            self.fail(400, f'reset takes {{"knobs": [...]}} naming some of {", ".join(known)}, or no body')
            return None
        unknown = [n for n in names if n not in known]
        if unknown:
            self.fail(400, f"unknown setting {unknown[0]!r} (known: {', '.join(known)})")
            return None
        return tuple(names)

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
        METRICS.process.admin_actions.labels(action).inc()
        log.info("waitroom admin: %s (from %s)", what, self.request.remote_ip)
        return True


class Status(_Admin):
    async def get(self) -> None:
        ready_body, _ = readiness(self.operated)
        config = self.operated.config
        rules = [rule_view(r, self.operated.overrides) for r in config.rate_limits] if config else []
        self.reply(200, {**ready_body, "rooms": await room_views(self.operated), "rules": rules})


class Rooms(_Admin):
    async def get(self) -> None:
        self.reply(200, {"rooms": await room_views(self.operated)})


class Room(_Admin):
    async def get(self, name: str) -> None:
        if self.room_config(name) is not None:
            self.reply(200, (await room_views(self.operated, only=name))[0])

    async def patch(self, name: str) -> None:
        """Change knobs of the room: each value checked, then the room it makes (config, the other
        run-time changes, these) validated whole by the config model; 400 and nothing changed
        otherwise."""
        room, body = self.room_config(name), None
        if room is None or (body := self.json_body()) is None:
            return
        if not body:
            self.fail(400, f"nothing to change: give any of {', '.join(ROOM_SETTINGS)}")
            return
        changes: dict[str, str | None] = {}
        for field, value in body.items():
            try:
                changes[room_key(name, field)] = check_room_value(str(field), value)
            except ValueError as e:
                self.fail(400, str(e))
                return
        try:
            validate_room(room, _after(self.operated.overrides.values, changes))
        except ValueError as e:
            self.fail(400, f"room {name}: {e} (nothing was changed)")
            return
        what = ", ".join(f"{k}={v}" for k, v in body.items())
        if await self.change("room_set", f"room {name}: {what}", changes):
            self.reply(200, (await room_views(self.operated, only=name))[0])


class RoomAction(_Admin):
    async def post(self, name: str, action: str) -> None:
        room = self.room_config(name)
        if room is None:
            return
        if action in ("open", "queue-all", "normal"):
            changes: dict[str, str | None] = {room_key(name, "mode"): None if action == "normal" else action}
            if not await self.change(
                f"room_{action.replace('-', '_')}", f"room {name}: mode={action}", changes
            ):
                return
        elif action == "close":  # closes_at = now: new visitors get the closed answer
            changes = {room_key(name, "closes_at"): check_room_value("closes_at", "now")}
            try:
                validate_room(room, _after(self.operated.overrides.values, changes))
            except ValueError as e:
                self.fail(400, f"room {name}: {e} (nothing was changed)")
                return
            if not await self.change("room_close", f"room {name}: closed", changes):
                return
        elif action == "reset":
            knobs = self.knobs(ROOM_SETTINGS)
            if knobs is None:
                return
            changes = {room_key(name, k): None for k in knobs}
            what = f"room {name}: reset" + (f" {' '.join(knobs)}" if len(knobs) < len(ROOM_SETTINGS) else "")
            if not await self.change("room_reset", what, changes):
                return
        elif action == "unblock":
            store = self.operated.store
            try:
                if store is None:
                    raise StoreError("no store")
                if self.operated.overrides.room(room).shadow:  # the block in force is the shadow's
                    store = ShadowStore(store)
                await asyncio.wait_for(store.unblock(name), READ_TIMEOUT)
            except (StoreError, Overloaded, TimeoutError) as e:
                log.warning("waitroom admin: unblock %s refused: the store is failing (%s)", name, e)
                self.fail(503, "the store is failing: nothing was changed")
                return
            METRICS.process.admin_actions.labels("room_unblock").inc()
            log.info("waitroom admin: room %s: unblocked (from %s)", name, self.request.remote_ip)
        else:
            self.fail(404, f"unknown room action {action!r} (open, queue-all, normal, unblock, close, reset)")
            return
        self.reply(200, (await room_views(self.operated, only=name))[0])


class Rules(_Admin):
    def get(self) -> None:
        config = self.operated.config
        rules = config.rate_limits if config else []
        self.reply(200, {"rules": [rule_view(r, self.operated.overrides) for r in rules]})


class Rule(_Admin):
    def get(self, name: str) -> None:
        if (rule := self.rule_config(name)) is not None:
            self.reply(200, rule_view(rule, self.operated.overrides))

    async def patch(self, name: str) -> None:
        rule, body = self.rule_config(name), None
        if rule is None or (body := self.json_body()) is None:
            return
        if not body:
            self.fail(400, f"nothing to change: give any of {', '.join(RULE_KNOBS)}")
            return
        changes: dict[str, str | None] = {}
        for field, value in body.items():
            try:
                changes[rule_key(name, field)] = check_rule_value(str(field), value)
            except ValueError as e:
                self.fail(400, str(e))
                return
        try:
            validate_rule(rule, _after(self.operated.overrides.values, changes))
        except ValueError as e:
            self.fail(400, f"rule {name}: {e} (nothing was changed)")
            return
        what = ", ".join(f"{k}={v}" for k, v in body.items())
        if await self.change("rule_set", f"rule {name}: {what}", changes):
            self.reply(200, rule_view(rule, self.operated.overrides))


class RuleAction(_Admin):
    async def post(self, name: str, action: str) -> None:
        if (rule := self.rule_config(name)) is None:
            return
        if action != "reset":
            self.fail(404, f"unknown rule action {action!r} (reset)")
            return
        knobs = self.knobs(tuple(RULE_KNOBS))
        if knobs is None:
            return
        what = f"rule {name}: reset" + (f" {' '.join(knobs)}" if len(knobs) < len(RULE_KNOBS) else "")
        if await self.change("rule_reset", what, {rule_key(name, k): None for k in knobs}):
            self.reply(200, rule_view(rule, self.operated.overrides))
