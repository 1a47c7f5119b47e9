"""config/durations.py: durations as written and shown."""

from __future__ import annotations

import pytest

from waitroom.config.durations import format_duration, parse_duration
from waitroom.rooms.sessions import keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_durations() -> None:
    assert [parse_duration(v) for v in ("500ms", "60s", "30m", "2h", "1d", 5, "1.5s")] == [
        0.5,
        60,
        1800,
        7200,
        86400,
        5,
        1.5,
    ]
    for bad in ("soon", "-1s", True, None, "5 parsecs"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert [format_duration(s) for s in (0.05, 60, 90, 3600)] == ["50ms", "1m", "90s", "1h"]
