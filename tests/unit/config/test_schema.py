"""config/schema.py: the shipped config, defaults, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import REPO
from waitroom.config.fields import ConfigError
from waitroom.config.schema import load_config, parse_config
from waitroom.rooms.sessions import keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_shipped_config_and_defaults() -> None:
    config = load_config(REPO / "config" / "waitroom.yaml")
    assert config.rooms[0].name == "demo"
    room = parse_config({"rooms": [{"name": "r", "new_sessions": 1}]}).rooms[0]
    assert (room.window, room.block_for, room.retry_after, room.status) == (60, 60, 10, 503)
    store = parse_config({}).store
    assert (store.url, store.timeout, store.max_wait, store.on_error.value) == (
        "memory://",
        0.25,
        2.0,
        "local",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"rooms": [{"name": "r", "new_sessions": 1, "window": "soon"}]},
            "rooms[0].window: invalid duration 'soon'",
        ),
        ({"rooms": [{"name": "r", "new_sessions": 0}]}, "rooms[0].new_sessions: "),
        ({"rooms": [{"name": "r", "new_sessions": 1, "maxx": 2}]}, "rooms[0].maxx: "),
        (
            {
                "rooms": [
                    {"name": "r", "new_sessions": 1},
                    {"name": "r", "new_sessions": 1, "match": {"path_prefix": "/b"}},
                ]
            },
            "rooms[1].name: duplicate room name 'r'",
        ),
        (
            {"rooms": [{"name": "r", "new_sessions": 1, "match": {"path_prefix": "shop"}}]},
            "rooms[0].match.path_prefix: ",
        ),
        ({"store": {"url": "mysql://x"}}, "store.url: "),
        ({"session": {"cookie": "a b"}}, "session.cookie: "),
        ({"rate_limits": [{"name": "x", "limit": 1, "key": "cookie:x"}]}, "rate_limits[0].key: "),
        (
            {
                "rate_limits": [
                    {"name": "x", "limit": 5, "per": "100ms", "action": "delay", "max_delay": "7s"}
                ]
            },
            "max_delay (7s) is more than 64 × per (0.1s) for a sliding_window; use algorithm: gcra",
        ),
        ({"pages": {"default_language": "english!"}}, "pages.default_language: must be a language tag"),
        (
            {"rooms": [{"name": "r", "new_sessions": 1, "title": "x" * 121}]},
            "rooms[0].title: must be 1 to 120",
        ),
        ([1, 2], "the file must hold a mapping"),
    ],
)
def test_config_errors_are_one_line_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_template_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: r, new_sessions: 1, template: page.html}]\n")
    assert load_config(path).rooms[0].template == tmp_path / "page.html"


@pytest.mark.parametrize(
    ("room", "message"),
    [
        ({"draws_per_ip": 1}, "draws_per_ip needs places_per_ip"),
        ({"places_per_ip": 2, "draws_per_ip": 3}, "draws_per_ip (3) must not be more than places_per_ip (2)"),
        ({"queue": "block", "places_per_ip": 2, "draws_per_ip": 1}, "draws_per_ip needs queue: fifo"),
        ({"places_per_ip": 0}, "places_per_ip"),
    ],
)
def test_places_per_ip_and_draws_per_ip_are_checked(room: dict[str, object], message: str) -> None:
    base = {"name": "shop", "match": {"path_prefix": "/shop"}, "queue": "fifo", "new_sessions": 5}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config({"rooms": [base | room]})


def test_places_per_ip_applies_to_both_queues() -> None:
    for queue in ("block", "fifo"):
        config = parse_config(
            {
                "rooms": [
                    {
                        "name": "r",
                        "match": {"path_prefix": "/"},
                        "queue": queue,
                        "new_sessions": 5,
                        "places_per_ip": 3,
                    }
                ]
            }
        )
        assert (config.rooms[0].places_per_ip, config.rooms[0].draws_per_ip) == (3, None)
