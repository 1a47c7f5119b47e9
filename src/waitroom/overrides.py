"""Run-time changes made through the admin API: a room's mode and numbers, a rule's limit.

They live in the store (one Redis hash, `<prefix>:{admin}:overrides`), so every replica that shares
the store obeys them; each replica re-reads them every OVERRIDES_REFRESH seconds and at once after a
change it made itself. They are keyed by name and outlive config reloads: a room that a new config
drops simply ignores its overrides, and a room that comes back finds them again.

    room:<name>:mode          normal | open | queue-all
    room:<name>:new_sessions  an integer >= 1
    room:<name>:block_for     seconds (a duration such as 30s when set through the API)
    room:<name>:opens_at      Unix time (ISO 8601 with a zone through the API), or `none`
    room:<name>:closes_at     Unix time (ISO 8601 with a zone, or `now`, through the API), or `none`
    rule:<name>:limit         an integer >= 1
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from waitroom.config import RateLimitConfig, RoomConfig
from waitroom.durations import parse_duration

OVERRIDES_REFRESH = 1.0
"""Seconds between two reads of the overrides by each replica."""
MAX_NEW_SESSIONS = 10_000_000
MAX_BLOCK_FOR = 86_400.0
MAX_LIMIT = 10_000_000


class RoomMode(StrEnum):
    NORMAL = "normal"
    """The configured behaviour: admit up to new_sessions per window."""
    OPEN = "open"
    """Every new visitor is admitted, without counting: the gate is open."""
    QUEUE_ALL = "queue-all"
    """Every new visitor waits; holders of a session cookie still pass."""


def room_key(room: str, name: str) -> str:
    return f"room:{room}:{name}"


def rule_key(rule: str, name: str) -> str:
    return f"rule:{rule}:{name}"


def check_room_value(name: str, value: object) -> str:
    """The stored form of a room setting, or ValueError with a message for the API's caller."""
    if name == "mode":
        try:
            return RoomMode(str(value)).value
        except ValueError:
            raise ValueError(f"mode must be one of {', '.join(m.value for m in RoomMode)}") from None
    if name == "new_sessions":
        return str(_int_in(value, 1, MAX_NEW_SESSIONS, "new_sessions"))
    if name == "block_for":
        try:
            seconds = parse_duration(value)
        except ValueError as e:
            raise ValueError(f"block_for: {e}") from None
        if seconds > MAX_BLOCK_FOR:
            raise ValueError(f"block_for must be at most {MAX_BLOCK_FOR:g}s")
        return repr(seconds)
    if name in SCHEDULE:
        return _moment(name, value)
    raise ValueError(f"unknown room setting {name!r} (mode, new_sessions, block_for, opens_at, closes_at)")


SCHEDULE = ("opens_at", "closes_at")
NONE = "none"
"""A schedule setting that removes the configured time (no opening / no closing)."""


def _moment(name: str, value: object) -> str:
    """`opens_at`/`closes_at` as stored: Unix time, or `none`."""
    if value is None or value == NONE:
        return NONE
    if value == "now" and name == "closes_at":
        return repr(time.time())
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return repr(moment.timestamp())
    raise ValueError(
        f"{name} must be an ISO 8601 time with a zone (e.g. 2026-12-01T10:00:00+01:00)"
        + (", `now`" if name == "closes_at" else "")
        + " or `none`"
    )


def check_rule_value(name: str, value: object) -> str:
    if name == "limit":
        return str(_int_in(value, 1, MAX_LIMIT, "limit"))
    raise ValueError(f"unknown rule setting {name!r} (limit)")


def _int_in(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class Overrides:
    values: Mapping[str, str] = field(default_factory=dict)
    _rooms: dict[str, tuple[RoomConfig, RoomConfig]] = field(default_factory=dict, compare=False, repr=False)
    _rules: dict[str, tuple[RateLimitConfig, RateLimitConfig]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def room_mode(self, room: str) -> RoomMode:
        value = self.values.get(room_key(room, "mode"))
        try:
            return RoomMode(value) if value else RoomMode.NORMAL
        except ValueError:
            return RoomMode.NORMAL  # written by a newer version: ignore what we do not know

    def room(self, room: RoomConfig) -> RoomConfig:
        """The room with its numbers as overridden; the same object when nothing is."""
        new_sessions = self.values.get(room_key(room.name, "new_sessions"))
        block_for = self.values.get(room_key(room.name, "block_for"))
        schedule = {name: self.values.get(room_key(room.name, name)) for name in SCHEDULE}
        if new_sessions is None and block_for is None and not any(schedule.values()):
            return room
        cached = self._rooms.get(room.name)
        if cached is not None and cached[0] is room:
            return cached[1]
        update: dict[str, object] = {}
        try:
            if new_sessions is not None:
                update["new_sessions"] = int(new_sessions)
            if block_for is not None:
                update["block_for"] = float(block_for)
            for name, value in schedule.items():
                if value is not None:
                    update[name] = None if value == NONE else datetime.fromtimestamp(float(value), UTC)
        except ValueError:
            return room
        effective = room.model_copy(update=update)
        self._rooms[room.name] = (room, effective)
        return effective

    def rule(self, rule: RateLimitConfig) -> RateLimitConfig:
        limit = self.values.get(rule_key(rule.name, "limit"))
        if limit is None:
            return rule
        cached = self._rules.get(rule.name)
        if cached is not None and cached[0] is rule:
            return cached[1]
        try:
            effective = rule.model_copy(update={"limit": int(limit)})
        except ValueError:
            return rule
        self._rules[rule.name] = (rule, effective)
        return effective
