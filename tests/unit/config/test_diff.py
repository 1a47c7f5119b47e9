"""config/diff.py: what a reload changed, as lines for the log; never a credential."""

from __future__ import annotations

from waitroom.config.diff import MAX_LINES, config_changes, redact, summarise
from waitroom.config.schema import parse_config


def test_rooms_and_rules_are_keyed_by_name_and_durations_written_as_in_the_file() -> None:
    old = parse_config(
        {
            "rooms": [
                {"name": "a", "new_sessions": 1, "match": {"path_prefix": "/a"}},
                {"name": "b", "new_sessions": 1, "match": {"path_prefix": "/b"}},
            ],
            "rate_limits": [{"name": "api", "limit": 5}],
        }
    )
    new = parse_config(
        {
            "rooms": [  # reordered: no change for that alone
                {"name": "b", "new_sessions": 1, "match": {"path_prefix": "/b"}, "block_for": "30s"},
                {"name": "a", "new_sessions": 1, "match": {"path_prefix": "/a"}},
            ],
            "bypass": ["/healthz"],
        }
    )
    assert config_changes(old, new) == [
        "rooms[b].block_for: 1m → 30s",
        'bypass: [] → ["/healthz"]',
        "rate_limits[api]: removed",
    ]


def test_credentials_never_show() -> None:
    old = parse_config({"store": {"url": "redis://user:hunter2@redis:6379/0"}})
    new = parse_config({"store": {"url": "rediss://:s3cret@redis:6380/0?password=also-secret"}})
    (line,) = config_changes(old, new)
    assert line == "store.url: redis://***@redis:6379/0 → rediss://***@redis:6380/0?password=***"
    assert (
        redact("cannot reach redis://u:p@h:1 (password=x&db=0)")
        == "cannot reach redis://***@h:1 (password=***&db=0)"
    )


def test_at_most_twenty_lines() -> None:
    lines = [f"rooms[r{i}]: added" for i in range(25)]
    assert summarise(lines) == [*lines[:MAX_LINES], "and 5 more"]
    assert summarise(lines[:3]) == lines[:3]
