"""addon/connection_limits.py: the connection limit's default."""

from __future__ import annotations

from waitroom.addon.connection_limits import auto_max_connections


def test_the_automatic_connection_limit_is_at_least_64() -> None:
    assert auto_max_connections() >= 64
