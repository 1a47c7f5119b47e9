"""Run-time overrides: what the admin API accepts, and how rooms and rules see them."""

from __future__ import annotations

import pytest

from waitroom.config import parse_config
from waitroom.overrides import Overrides, RoomMode, check_room_value, check_rule_value

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
        ("block_for", "2d", "block_for must be at most"),
        ("colour", "red", "unknown room setting"),
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
