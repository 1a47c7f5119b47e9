"""rooms/routing.py: which room a request belongs to."""

from __future__ import annotations

from waitroom.config.schema import parse_config
from waitroom.rooms.routing import Router
from waitroom.rooms.sessions import keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_longest_prefix_wins_and_host_beats_hostless() -> None:
    config = parse_config(
        {
            "bypass": ["/shop/static/"],
            "rooms": [
                {"name": "all", "new_sessions": 1, "match": {"path_prefix": "/"}},
                {"name": "shop", "new_sessions": 1, "match": {"path_prefix": "/shop"}},
                {
                    "name": "shop-eu",
                    "new_sessions": 1,
                    "match": {"path_prefix": "/shop", "host": "EU.example.com"},
                },
            ],
        }
    )
    router = Router(config)
    assert router.route("x.com", "/shop/a").room.name == "shop"  # type: ignore[union-attr]
    assert router.route("eu.example.com", "/shop/a").room.name == "shop-eu"  # type: ignore[union-attr]
    assert router.route("x.com", "/other").room.name == "all"  # type: ignore[union-attr]
    assert router.route("x.com", "/shop/static/app.js").bypass
