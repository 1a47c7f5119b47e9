"""Run-time overrides: what the admin API accepts, and how rooms and rules see them."""

from __future__ import annotations

import re

import pytest

from waitroom.config.overrides import (
    Overrides,
    RoomMode,
    check_room_value,
    check_rule_value,
    validate_room,
    validate_rule,
)
from waitroom.config.schema import parse_config

CONFIG = parse_config(
    {
        "rooms": [{"name": "shop", "match": {"path_prefix": "/shop"}, "new_sessions": 5, "block_for": "30s"}],
        "rate_limits": [{"name": "api", "key": "ip", "limit": 10, "per": "1s"}],
    }
)
ROOM, RULE = CONFIG.rooms[0], CONFIG.rate_limits[0]


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("mode", "queue-all", "queue-all"),
        ("mode", "open", "open"),
        ("new_sessions", 50, "50"),
        ("block_for", "90s", "90.0"),
        ("block_for", 0, "0.0"),
        ("proof_of_work", 18, '{"difficulty": 18}'),
        ("proof_of_work", {"difficulty": 12, "ttl": "20s"}, '{"difficulty": 12, "ttl": 20.0}'),
        ("proof_of_work", "none", "none"),
        ("proof_of_work", None, "none"),
    ],
)
def test_room_values_accepted(field: str, value: object, stored: str) -> None:
    assert check_room_value(field, value) == stored


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("mode", "closed", "mode must be one of normal, open, queue-all"),
        ("new_sessions", 0, "new_sessions must be an integer from 1"),
        ("new_sessions", -3, "new_sessions must be"),
        ("new_sessions", True, "new_sessions must be"),
        ("new_sessions", "5", "new_sessions must be"),
        ("new_sessions", 2.5, "new_sessions must be"),
        ("block_for", "-1s", "block_for: invalid duration"),
        ("block_for", "31d", "block_for: invalid duration"),
        ("max_active", "lots", "max_active must be an integer from 1 to 10000000 or none"),
        ("opens_at", "tomorrow", "opens_at must be an ISO 8601 time with a zone"),
        ("colour", "red", "unknown room setting"),
        ("max_activ", 5, "did you mean max_active?"),
        ("proof_of_work", 25, "proof_of_work: difficulty: Input should be less than or equal to 24"),
        ("proof_of_work", {"difficulty": 16, "ttl": "1s"}, "proof_of_work: ttl: must be at least 5s"),
        ("proof_of_work", {"rounds": 2}, "proof_of_work: rounds: "),
        ("proof_of_work", "hard", r"proof_of_work must be a difficulty \(1 to 24\)"),
        ("proof_of_work", True, "proof_of_work must be a difficulty"),
    ],
)
def test_room_values_refused(field: str, value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_room_value(field, value)


def test_rule_values() -> None:
    assert check_rule_value("limit", 3) == "3"
    for bad in (0, -1, "3", None, 10**9):
        with pytest.raises(ValueError, match="limit must be"):
            check_rule_value("limit", bad)
    with pytest.raises(ValueError, match="unknown rule setting"):
        check_rule_value("per", 5)


def test_rooms_and_rules_see_their_overrides() -> None:
    none = Overrides()
    assert none.room(ROOM) is ROOM
    assert none.rule(RULE) is RULE
    assert none.room_mode("shop") is RoomMode.NORMAL

    some = Overrides({"room:shop:new_sessions": "50", "room:shop:mode": "queue-all", "rule:api:limit": "2"})
    room = some.room(ROOM)
    assert (room.new_sessions, room.block_for, room.window) == (50, 30.0, ROOM.window)
    assert some.room(ROOM) is room  # built once, not per request
    assert some.rule(RULE).limit == 2
    assert some.room_mode("shop") is RoomMode.QUEUE_ALL
    assert some.room_mode("other") is RoomMode.NORMAL

    # Values written by a newer version, or damaged, are ignored rather than trusted.
    odd = Overrides({"room:shop:mode": "sideways", "room:shop:new_sessions": "many", "rule:api:limit": "x"})
    assert odd.room_mode("shop") is RoomMode.NORMAL
    assert odd.room(ROOM) is ROOM
    assert odd.rule(RULE) is RULE


FIFO = parse_config(
    {
        "rooms": [
            {
                "name": "line",
                "new_sessions": 5,
                "queue": "fifo",
                "retry_after": "4s",
                "opens_at": "2030-01-01T10:00:00+00:00",
                "closes_at": "2030-01-01T12:00:00+00:00",
            }
        ]
    }
).rooms[0]


def test_every_knob_round_trips_through_the_store() -> None:
    """The API's value, stored, read back by a replica: the room the model validates."""
    given = {
        "new_sessions": 50,
        "window": "2m",
        "block_for": "0s",
        "retry_after": "6s",
        "max_active": 500,
        "abandon_after": "1m",
        "grace": "30s",
        "tickets_per_ip": 3,
        "opens_at": "2030-01-01T09:00:00+00:00",
        "closes_at": "2030-01-01T13:00:00+00:00",
        "proof_of_work": {"difficulty": 18, "ttl": "40s"},
    }
    values = {f"room:line:{name}": check_room_value(name, value) for name, value in given.items()}
    room = validate_room(FIFO, values)
    assert Overrides(values).room(FIFO) == room
    assert (room.new_sessions, room.window, room.block_for, room.retry_after) == (50, 120.0, 0.0, 6.0)
    assert (room.max_active, room.abandon_after, room.grace, room.tickets_per_ip) == (500, 60.0, 30.0, 3)
    assert room.opens_at is not None
    assert room.opens_at.hour == 9
    assert room.proof_of_work is not None
    assert (room.proof_of_work.difficulty, room.proof_ttl_seconds) == (18, 40.0)
    lifted = validate_room(FIFO, {**values, "room:line:max_active": check_room_value("max_active", None)})
    assert lifted.max_active is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"closes_at": "2030-01-01T09:00:00+00:00"}, "closes_at must be after opens_at"),
        ({"grace": "5s"}, "grace (5s) must be at least 1.5 × retry_after (6s)"),
        ({"retry_after": "20s", "abandon_after": "20s"}, "abandon_after (20s) must be at least 1.5"),
        ({"opens_at": "9999-12-31T23:00:00+00:00"}, "opens_at: must be between 2000-01-01 and 2999-12-31"),
        ({"closes_at": "0001-01-01T00:00:00+00:00"}, "closes_at: must be between"),
        ({"proof_of_work": {"ttl": "90s"}}, "proof_of_work.ttl (90s) must not be longer than window (60s)"),
        ({"proof_of_work": 16, "window": "3s"}, "proof_of_work needs a window of at least 5s"),
    ],
)
def test_a_change_is_judged_with_the_whole_room(changes: dict[str, object], words: str) -> None:
    values = {f"room:line:{k}": check_room_value(k, v) for k, v in changes.items()}
    with pytest.raises(ValueError, match=re.escape(words)):
        validate_room(FIFO, values)


def test_a_stored_change_that_no_longer_fits_is_skipped_alone() -> None:
    """After a reload raised retry_after, a stored `grace` is too short: the room keeps its other
    overrides, and the view reports the one it ignores (issue 27's N9: never all of them)."""
    values = {
        "room:line:grace": check_room_value("grace", "7s"),
        "room:line:max_active": check_room_value("max_active", 9),
        "room:line:new_sessions": check_room_value("new_sessions", 8),
    }
    assert Overrides(values).ignored(FIFO) == ()
    reloaded = FIFO.model_copy(update={"retry_after": 10.0})
    overrides = Overrides(values)
    room = overrides.room(reloaded)
    assert (room.max_active, room.new_sessions, room.grace) == (9, 8, None)
    (ignored,) = overrides.ignored(reloaded)
    assert ignored.startswith("room:line:grace=7.0: grace (7s) must be at least 1.5 × retry_after")
    damaged = Overrides({"room:line:max_active": "many", "room:line:new_sessions": "8"})
    assert damaged.room(FIFO).new_sessions == 8
    assert damaged.ignored(FIFO) == ("room:line:max_active=many: not a value this version reads",)


def test_proof_of_work_is_a_fifo_knob_that_a_block_room_refuses() -> None:
    with pytest.raises(ValueError, match="proof_of_work needs queue: fifo"):
        validate_room(ROOM, {"room:shop:proof_of_work": check_room_value("proof_of_work", 16)})
    on = Overrides({"room:line:proof_of_work": check_room_value("proof_of_work", 20)}).room(FIFO)
    assert on.proof_of_work is not None
    assert on.proof_of_work.difficulty == 20
    configured = FIFO.model_copy(update={"proof_of_work": on.proof_of_work})
    off = Overrides({"room:line:proof_of_work": check_room_value("proof_of_work", None)}).room(configured)
    assert off.proof_of_work is None


def test_rule_knobs() -> None:
    values = {
        "rule:api:burst": check_rule_value("burst", 4),
        "rule:api:shadow": check_rule_value("shadow", True),
        "rule:api:max_delay": check_rule_value("max_delay", "2s"),
    }
    rule = validate_rule(RULE, values)
    assert (rule.burst, rule.shadow, rule.max_delay) == (4, True, 2.0)
    with pytest.raises(ValueError, match="max_delay: must be at most 30s"):
        validate_rule(RULE, {"rule:api:max_delay": check_rule_value("max_delay", "40s")})
    with pytest.raises(ValueError, match="unknown rule setting 'per'"):
        check_rule_value("per", "1s")
