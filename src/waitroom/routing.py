"""Which room (if any) a request belongs to, compiled once per config.

Prefixes are segment-aware: `/shop` covers `/shop`, `/shop/` and `/shop/cart` but not `/shopping`;
a prefix ending in `/` covers everything below it. When several rooms cover a request, the longest
prefix wins, and at equal length a room with a host beats one without.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from waitroom.config import Config, RoomConfig


def covers(prefix: str, path: str) -> bool:
    """True when `path` (without query) lies under `prefix`, by whole path segments."""
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")


def path_segments(decoded: str) -> list[str]:
    """A decoded path's segments as a server resolves them: empty and `.` segments go, `..` removes
    the one before it (never above the root)."""
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return segments


def normalize_path(target: str) -> str:
    """The path a request target names, as an upstream would resolve it.

    Query and fragment go, percent-escapes are decoded, repeated slashes fold and `.`/`..` segments
    resolve, so that `/static/../shop`, `//shop` or `/%73hop` cannot slip past the room for `/shop`
    (or into a bypass prefix). Only routing sees this form; the request itself is not changed.
    """
    for sep in ("?", "#"):
        target = target.split(sep, 1)[0]
    decoded = unquote(target, errors="replace").replace("\\", "/")
    segments = path_segments(decoded)
    trailing = "/" if decoded.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def normalize_host(host_header: str) -> str:
    """`Shop.Example.com:443` → `shop.example.com`; IPv6 literals keep their brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


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
        """`host` as normalize_host gives it, `path` as normalize_path gives it."""
        if self.bypassed(path):
            return BYPASS
        for room in self._rooms:
            if covers(room.match.path_prefix, path) and room.match.host in (None, host):
                return Route(room=room)
        return NO_ROOM
