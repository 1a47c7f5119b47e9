"""Run-time changes made through the admin API: a room's mode and knobs, a rule's knobs.

They live in the store (one Redis hash, `<prefix>:{admin}:overrides`), so every replica that shares
the store obeys them; each replica re-reads them every OVERRIDES_REFRESH seconds and at once after a
change it made itself. They are keyed by name and outlive config reloads: a room that a new config
drops simply ignores its overrides, and a room that comes back finds them again.

    room:<name>:mode          normal | open | queue-all
    room:<name>:<knob>        a knob of ROOM_KNOBS, in its stored form (below)
    rule:<name>:<knob>        a knob of RULE_KNOBS

Stored forms: integers as digits, durations in seconds (`30.0`), times as Unix time, switches as
`true`/`false`, and `none` for "no value" (no cap, no opening).

**One validation, the model's.** A change is accepted only if the room (rule) it makes, config and
every other override included, passes the config model: the same ranges and cross-field rules as
the file (`grace` ≥ 1.5 × `retry_after`, `closes_at` after `opens_at`, fifo-only knobs). A stored
value that a later reload made invalid is skipped alone (and reported in the view's `ignored`), never
all of the room's overrides with it.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from waitroom.config.durations import format_duration, parse_duration
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import ProofOfWorkConfig, RoomConfig
from waitroom.config.yamlfile import all_errors

log = logging.getLogger(__name__)

OVERRIDES_REFRESH = 1.0
"""Seconds between two reads of the overrides by each replica."""
NONE = "none"
"""The stored (and accepted) word for "no value": no cap, no opening, no closing."""
MAX_INT = 10_000_000


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


@dataclass(frozen=True, slots=True)
class Knob:
    """A setting that may change at run time: how the API's value is stored, and read back."""

    name: str
    store: Callable[[object], str]
    """The API's JSON value → the stored string; ValueError with a message for the caller."""
    load: Callable[[str], object]
    """The stored string → the value the config model takes; ValueError when it is damaged."""
    show: Callable[[Any], object]
    """The model's value → what the admin API shows (`30s`, an ISO time, null)."""
    accepts: str
    """What the API takes, for messages."""


def _int(name: str, nullable: bool = False) -> Knob:
    def store(value: object) -> str:
        if nullable and (value is None or value == NONE):
            return NONE
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT:
            raise ValueError(
                f"{name} must be an integer from 1 to {MAX_INT}" + (" or none" if nullable else "")
            )
        return str(value)

    def load(stored: str) -> object:
        return None if nullable and stored == NONE else int(stored)

    return Knob(name, store, load, lambda v: v, "an integer" + (" or none" if nullable else ""))


def _duration(name: str, nullable: bool = False) -> Knob:
    def store(value: object) -> str:
        if nullable and (value is None or value == NONE):
            return NONE
        try:
            return repr(parse_duration(value))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None

    def load(stored: str) -> object:
        return None if nullable and stored == NONE else float(stored)

    def show(value: Any) -> object:
        return format_duration(value) if isinstance(value, float | int) else None

    return Knob(name, store, load, show, "a duration (30s, 5m)" + (" or none" if nullable else ""))


def _moment(name: str, now_allowed: bool) -> Knob:
    def store(value: object) -> str:
        if value is None or value == NONE:
            return NONE
        if value == "now" and now_allowed:
            return repr(time.time())
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is not None:
                try:
                    return repr(moment.timestamp())
                except (OverflowError, ValueError, OSError):
                    pass
        raise ValueError(
            f"{name} must be an ISO 8601 time with a zone (e.g. 2026-12-01T10:00:00+01:00)"
            + (", `now`" if now_allowed else "")
            + " or `none`"
        )

    def load(stored: str) -> object:
        return None if stored == NONE else datetime.fromtimestamp(float(stored), UTC)

    def show(value: Any) -> object:
        return value.isoformat() if isinstance(value, datetime) else None

    return Knob(name, store, load, show, "an ISO 8601 time with a zone or none")


def _switch(name: str) -> Knob:
    def store(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value in ("true", "false"):
            return str(value)
        raise ValueError(f"{name} must be true or false")

    def load(stored: str) -> object:
        if stored not in ("true", "false"):
            raise ValueError(stored)
        return stored == "true"

    return Knob(name, store, load, lambda v: v, "true or false")


def _proof_of_work() -> Knob:
    """`proof_of_work`: a difficulty alone (the ttl then its default), the whole setting, or none."""
    name = "proof_of_work"

    def store(value: object) -> str:
        if value is None or value == NONE:
            return NONE
        given = {"difficulty": value} if isinstance(value, int) and not isinstance(value, bool) else value
        if isinstance(given, dict):
            try:
                setting = ProofOfWorkConfig.model_validate(given)
            except ValidationError as e:
                raise ValueError(f"{name}: {_first_error(e, ProofOfWorkConfig)}") from None
            return json.dumps(setting.model_dump(exclude_none=True))
        raise ValueError(f"{name} must be a difficulty (1 to 24), {{difficulty, ttl}} or none")

    def load(stored: str) -> object:
        if stored == NONE:
            return None
        loaded = json.loads(stored)
        if not isinstance(loaded, dict):
            raise ValueError(stored)
        return loaded

    def show(value: Any) -> object:
        if not isinstance(value, ProofOfWorkConfig):
            return None
        return {"difficulty": value.difficulty, "ttl": format_duration(value.ttl) if value.ttl else None}

    return Knob(name, store, load, show, "a difficulty, {difficulty, ttl} or none")


ROOM_KNOBS: dict[str, Knob] = {
    knob.name: knob
    for knob in (
        _int("new_sessions"),
        _duration("window"),
        _duration("block_for"),
        _duration("retry_after"),
        _duration("max_retry_after", nullable=True),
        _int("max_active", nullable=True),
        _duration("abandon_after", nullable=True),
        _duration("grace", nullable=True),
        _int("tickets_per_ip", nullable=True),
        _int("places_per_ip", nullable=True),
        _int("draws_per_ip", nullable=True),
        _moment("opens_at", now_allowed=False),
        _moment("closes_at", now_allowed=True),
        _proof_of_work(),
        _switch("shadow"),
    )
}
"""A room's knobs that are safe to change while it runs, each shared across replicas:
- `new_sessions`, `block_for`: the next admission counts with them;
- `window`: a shorter one frees places at once, a longer one counts only what the log still holds;
- `retry_after`, `max_retry_after` (fifo): pages adopt them at their next answer;
- `max_active` (`none` lifts the cap): turned on, it counts sessions from their next request;
- `abandon_after`, `grace`, `tickets_per_ip`, `draws_per_ip` (fifo): the line reads them at each ask;
- `places_per_ip`: the next new place is counted with it (places already held stay);
- `opens_at`, `closes_at`: the schedule;
- `proof_of_work` (fifo): the next challenge is made with it, and a proof made for an easier one
  is void;
- `shadow`: the next request is decided by the room in force (a live room starts fresh: its keys
  are not the shadow's, see rooms/shadow.py).
Not at run time: `queue` (another data structure), `match` and `name` (routing), `template`,
`status`, `closed_status`, `after_close` (change the file)."""

RULE_KNOBS: dict[str, Knob] = {
    knob.name: knob
    for knob in (_int("limit"), _int("burst", nullable=True), _duration("max_delay"), _switch("shadow"))
}
"""A rule's run-time knobs. `per` is not one: the sliding window's buckets are aligned to it."""

ROOM_SETTINGS = ("mode", *ROOM_KNOBS)
"""Everything `PATCH /admin/rooms/NAME` takes."""


def check_room_value(name: str, value: object) -> str:
    """The stored form of one room setting, or ValueError with a message for the API's caller
    (the value alone: `validate_room` judges the room it makes)."""
    if name == "mode":
        try:
            return RoomMode(str(value)).value
        except ValueError:
            raise ValueError(f"mode must be one of {', '.join(m.value for m in RoomMode)}") from None
    knob = ROOM_KNOBS.get(name)
    if knob is None:
        raise ValueError(_unknown("room", name, ROOM_SETTINGS))
    return knob.store(value)


def check_rule_value(name: str, value: object) -> str:
    knob = RULE_KNOBS.get(name)
    if knob is None:
        raise ValueError(_unknown("rule", name, tuple(RULE_KNOBS)))
    return knob.store(value)


def _unknown(what: str, name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {what} setting {name!r}{hint} (known: {', '.join(known)})"


def _with(model: BaseModel, update: Mapping[str, object]) -> Any:
    """The model with `update` applied, validated whole by its class (ValidationError otherwise)."""
    return type(model).model_validate({**model.model_dump(), **update})


def _first_error(error: ValidationError, model: type[BaseModel]) -> str:
    return all_errors(error, model)[0]


def validate_room(room: RoomConfig, values: Mapping[str, str]) -> RoomConfig:
    """The room as `values` (the stored overrides, with a change applied) make it, validated whole;
    ValueError with one line naming the problem when the config model refuses it."""
    try:
        effective: RoomConfig = _with(room, _loaded(values, room.name, ROOM_KNOBS, room_key))
    except ValidationError as e:
        raise ValueError(_first_error(e, RoomConfig)) from None
    except (OverflowError, OSError) as e:  # a time no clock reaches
        raise ValueError(f"not a usable time: {e}") from None
    return effective


def validate_rule(rule: RateLimitConfig, values: Mapping[str, str]) -> RateLimitConfig:
    try:
        effective: RateLimitConfig = _with(rule, _loaded(values, rule.name, RULE_KNOBS, rule_key))
    except ValidationError as e:
        raise ValueError(_first_error(e, RateLimitConfig)) from None
    return effective


def _loaded(
    values: Mapping[str, str], name: str, knobs: Mapping[str, Knob], key: Callable[[str, str], str]
) -> dict[str, object]:
    update = {}
    for knob in knobs.values():
        stored = values.get(key(name, knob.name))
        if stored is not None:
            update[knob.name] = knob.load(stored)
    return update


_warned: set[tuple[str, str, str]] = set()
"""(key, stored value, reason) already logged as ignored: once each, not on every refresh."""


@dataclass(frozen=True)
class Overrides:
    values: Mapping[str, str] = field(default_factory=dict)
    _rooms: dict[str, tuple[RoomConfig, RoomConfig, tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _rules: dict[str, tuple[RateLimitConfig, RateLimitConfig, tuple[str, ...]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def room_mode(self, room: str) -> RoomMode:
        value = self.values.get(room_key(room, "mode"))
        try:
            return RoomMode(value) if value else RoomMode.NORMAL
        except ValueError:
            return RoomMode.NORMAL  # written by a newer version: ignore what we do not know

    def room(self, room: RoomConfig) -> RoomConfig:
        """The room with its knobs as overridden; the same object when nothing is. On the request
        path (a returning visitor's cap check): a dict lookup once built."""
        if not self.values:
            return room
        return self._room(room)[0]

    def rule(self, rule: RateLimitConfig) -> RateLimitConfig:
        """The rule with its knobs as overridden; the same object when nothing is."""
        if not self.values:
            return rule
        return self._rule(rule)[0]

    def ignored(self, model: RoomConfig | RateLimitConfig) -> tuple[str, ...]:
        """Stored changes to this room (rule) that it does not take, each with the reason."""
        return self._room(model)[1] if isinstance(model, RoomConfig) else self._rule(model)[1]

    def _room(self, room: RoomConfig) -> tuple[RoomConfig, tuple[str, ...]]:
        cached = self._rooms.get(room.name)
        if cached is not None and cached[0] is room:
            return cached[1], cached[2]
        effective, ignored = _apply(room, self.values, ROOM_KNOBS, room_key)
        self._rooms[room.name] = (room, effective, ignored)
        return effective, ignored

    def _rule(self, rule: RateLimitConfig) -> tuple[RateLimitConfig, tuple[str, ...]]:
        cached = self._rules.get(rule.name)
        if cached is not None and cached[0] is rule:
            return cached[1], cached[2]
        effective, ignored = _apply(rule, self.values, RULE_KNOBS, rule_key)
        self._rules[rule.name] = (rule, effective, ignored)
        return effective, ignored


def _apply[M: BaseModel](
    model: M, values: Mapping[str, str], knobs: Mapping[str, Knob], key: Callable[[str, str], str]
) -> tuple[M, tuple[str, ...]]:
    """`model` with its stored knobs. All at once when they validate together (the API checked
    them so); otherwise one by one, skipping (and reporting) each that does not fit any more, e.g.
    after a reload changed `retry_after` under a stored `grace`."""
    name = str(getattr(model, "name", ""))
    stored = {k: v for k in knobs if (v := values.get(key(name, k))) is not None}
    if not stored:
        return model, ()
    ignored: list[str] = []
    loaded: dict[str, object] = {}
    for knob_name, text in stored.items():
        try:
            loaded[knob_name] = knobs[knob_name].load(text)
        except (ValueError, OverflowError, OSError):
            ignored.append(_ignore(key(name, knob_name), text, "not a value this version reads"))
    if not loaded:
        return model, tuple(ignored)
    try:
        return _with(model, loaded), tuple(ignored)
    except ValidationError:
        pass
    effective = model
    for knob_name, value in loaded.items():
        try:
            effective = _with(effective, {knob_name: value})
        except ValidationError as e:
            reason = _first_error(e, type(model))
            ignored.append(_ignore(key(name, knob_name), stored[knob_name], reason))
    return effective, tuple(ignored)


def _ignore(key: str, stored: str, reason: str) -> str:
    line = f"{key}={stored}: {reason}"
    if (key, stored, reason) not in _warned:
        if len(_warned) > 1000:
            _warned.clear()
        _warned.add((key, stored, reason))
        log.warning("waitroom: ignoring the run-time change %s", line)
    return line
