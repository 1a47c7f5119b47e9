"""The Redis store's client: one redis-py asyncio client for any supported URL, its errors, and the
scripts' sources and time argument.

URL forms (see docs/stores.md):
- `redis://[[user]:password@]host[:port][/db]` and `rediss://...` (TLS)
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]` — the password is the
  data node's; `?sentinel_password=...` authenticates to the sentinels
- `redis+cluster://[[user]:password@]host:port[,host:port...]` — any reachable nodes; the client
  discovers the rest

The counter (counter/counts.py) makes its clients here too, without the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from waitroom.store.base import MICROS, Clock, StoreError

CLIENT_TIMEOUT = 2.0
"""The least socket timeout given to the Redis clients (see for_url)."""


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The one place a Redis failure becomes a StoreError: the client's own error or a socket's,
    named by type only (its message may hold a key or an address). The original stays the cause,
    which is how guard.py tells whether the store may have done the call (StoreError.maybe_done)."""
    try:
        yield
    except (RedisError, OSError) as e:
        raise StoreError(f"redis: {type(e).__name__}") from e


INCLUDE = "--#include "
"""A script's line `--#include NAME.lua` stands for that file's text (the departures' functions)."""


def load_lua(name: str) -> str:
    source = resources.files("waitroom.store").joinpath("lua", name).read_text(encoding="utf-8")
    return "\n".join(
        load_lua(line.removeprefix(INCLUDE).strip()) if line.startswith(INCLUDE) else line
        for line in source.splitlines()
    )


def parse_hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """`user:pass@h1:p1,h2:p2` → (user, password, [(h1, p1), (h2, p2)])."""
    user = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, password = auth.partition(":") if ":" in auth else ("", "", auth)
        user, password = unquote(user) or None, unquote(password) or None
    nodes = []
    for item in netloc.split(","):
        if item.startswith("["):  # [::1]:6379
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = item.partition(":")
        nodes.append((host, int(port) if port else default_port))
    return user, password, nodes


def client_from_url(url: str, timeout: float) -> Any:
    """A redis-py asyncio client for any of the supported URL forms."""
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
        # Never retry: an admission that timed out may have run on the server, and running it again
        # records a second admission (redis-py retries timeouts by default). A failure goes to the
        # failure policy instead, once, within store.timeout.
        "retry": Retry(NoBackoff(), 0),
    }
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        return aioredis.Redis.from_url(url, **common)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "redis+cluster":
        user, password, nodes = parse_hosts(parts.netloc, 6379)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            username=user,
            password=password,
            ssl=query.get("ssl", "").lower() in ("1", "true", "yes"),
            **common,
        )
    if parts.scheme == "redis+sentinel":
        user, password, nodes = parse_hosts(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// URLs name the service: redis+sentinel://host:26379/mymaster")
        sentinel_kwargs = {"password": query["sentinel_password"]} if "sentinel_password" in query else {}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            nodes, sentinel_kwargs=sentinel_kwargs, **common
        )
        return sentinel.master_for(
            path[0],
            username=user,
            password=password,
            db=int(path[1]) if len(path) > 1 else 0,
            **common,
        )
    raise ValueError(f"unsupported store URL scheme {parts.scheme!r}")


def script_time(clock: Clock | None) -> str:
    """The time argument of a script: its clock's time in µs, or "" for the Redis server's (TIME)."""
    return "" if clock is None else str(round(clock() * MICROS))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
