"""Which room (if any) a request belongs to, compiled once per config.

Prefixes are segment-aware: `/shop` covers `/shop`, `/shop/` and `/shop/cart` but not `/shopping`;
a prefix ending in `/` covers everything below it. When several rooms cover a request, the longest
prefix wins, and at equal length a room with a host beats one without.
"""

from __future__ import annotations

from dataclasses import dataclass

from waitroom.config.schema import Config, RoomConfig
from waitroom.web.target import covers


@dataclass(frozen=True, slots=True)
class Route:
    room: RoomConfig | None
    bypass: bool = False


NO_ROOM = Route(room=None)
BYPASS = Route(room=None, bypass=True)


class Router:
    def __init__(self, config: Config) -> None:
        self._bypass = tuple(config.bypass)
        # Most specific first, so the first room that covers a request is the one it belongs to.
        self._rooms = sorted(
            config.rooms,
            key=lambda r: (len(r.match.path_prefix), r.match.host is not None),
            reverse=True,
        )

    @property
    def uses_host(self) -> bool:
        return any(room.match.host is not None for room in self._rooms)

    def bypassed(self, path: str) -> bool:
        """Under a bypass prefix: neither queued nor rate-limited."""
        return any(covers(prefix, path) for prefix in self._bypass)

    def route(self, host: str, path: str) -> Route:
        """`host` as target.normalize_authority gives it, `path` in its routing form (target.judge_target)."""
        if self.bypassed(path):
            return BYPASS
        for room in self._rooms:
            if covers(room.match.path_prefix, path) and room.match.host in (None, host):
                return Route(room=room)
        return NO_ROOM
