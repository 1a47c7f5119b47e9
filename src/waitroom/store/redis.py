"""The Redis store: every replica sees one exact window.

URL forms (see docs/stores.md):
- `redis://[[user]:password@]host[:port][/db]` and `rediss://...` (TLS)
- `redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]` — the password is the
  data node's; `?sentinel_password=...` authenticates to the sentinels
- `redis+cluster://[[user]:password@]host:port[,host:port...]` — any reachable nodes; the client
  discovers the rest

Each decision is one Lua script (EVALSHA, reloaded by redis-py on NOSCRIPT after a Redis restart).
Keys are `<key_prefix>:{room:<name>}:log|blocked` (and, for a `fifo` room's line,
`line|seen|called|joined|tickets`); the hash tag keeps a room's keys in one slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError

from waitroom.config import StoreConfig
from waitroom.store.base import (
    MICROS,
    Admission,
    Clock,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    StoreError,
    Turn,
)
from waitroom.store.pipelined import PipelinedConnection, PipelinedScript

CLIENT_TIMEOUT = 2.0
"""The least socket timeout given to the Redis clients (see for_url)."""

_ALGORITHM_CODES = {"sliding_window": "w", "sliding_log": "l", "gcra": "g"}


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The one place a Redis failure becomes a StoreError: the client's own error or a socket's,
    named by type only (its message may hold a key or an address). The original stays the cause,
    which is how guard.py tells whether the store may have done the call (StoreError.maybe_done)."""
    try:
        yield
    except (RedisError, OSError) as e:
        raise StoreError(f"redis: {type(e).__name__}") from e


def load_lua(name: str) -> str:
    return resources.files("waitroom.store").joinpath("lua", name).read_text(encoding="utf-8")


def _hosts(netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
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
        user, password, nodes = _hosts(parts.netloc, 6379)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in nodes],
            username=user,
            password=password,
            ssl=query.get("ssl", "").lower() in ("1", "true", "yes"),
            **common,
        )
    if parts.scheme == "redis+sentinel":
        user, password, nodes = _hosts(parts.netloc, 26379)
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


class RedisStore:
    def __init__(
        self,
        client: Any,
        key_prefix: str = "waitroom",
        clock: Clock | None = None,
        fast: PipelinedConnection | None = None,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        """None: the Redis server's clock decides (production). Set: tests and flow replay."""
        self._fast = fast
        # The scripts on the request path go over the pipelined connection when there is one.
        scripts: Any = (lambda source: PipelinedScript(fast, source)) if fast else client.register_script
        self._admit = scripts(load_lua("room_admit.lua"))
        self._rate_limit = scripts(load_lua("rate_limit.lua"))
        self._room_state = scripts(load_lua("room_state.lua"))
        self._room_record = scripts(load_lua("room_record.lua"))
        self._queue = scripts(load_lua("room_queue.lua"))
        self._queue_state = scripts(load_lua("room_queue_state.lua"))
        self._touch = scripts(load_lua("room_touch.lua"))
        self._release = scripts(load_lua("room_release.lua"))
        self.overrides_key = f"{key_prefix}:{{admin}}:overrides"
        self._cluster = isinstance(client, RedisCluster)

    @classmethod
    def from_config(cls, config: StoreConfig, clock: Clock | None = None) -> RedisStore:
        return cls.for_url(config.url_with_password(), config.timeout, config.key_prefix, clock)

    @classmethod
    def for_url(cls, url: str, timeout: float, key_prefix: str, clock: Clock | None = None) -> RedisStore:
        """A single node (`redis://` without options) gets the pipelined connection for its scripts;
        TLS, Sentinel and Cluster go through redis-py alone."""
        # The clients' own socket timeouts are only a backstop: store.timeout is enforced around
        # every call by the GuardedStore's Deadline, which tells a slow Redis from a busy event
        # loop; a client timeout as tight as store.timeout would count the loop's lag as Redis's.
        bound = max(timeout, CLIENT_TIMEOUT)
        parts = urlsplit(url)
        fast = (
            PipelinedConnection.from_url(url, bound) if parts.scheme == "redis" and not parts.query else None
        )
        return cls(client_from_url(url, bound), key_prefix, clock, fast)

    def room_keys(self, room: str) -> list[str]:
        """The admission log, the block, the active sessions, the released ones."""
        tag = f"{self._prefix}:{{room:{room}}}"
        return [f"{tag}:log", f"{tag}:blocked", f"{tag}:active", f"{tag}:released"]

    def queue_keys(self, room: str) -> list[str]:
        """The admission log (shared with `block`: a room may change order), then the line's."""
        tag = f"{self._prefix}:{{room:{room}}}"
        return [
            f"{tag}:log",
            f"{tag}:line",
            f"{tag}:seen",
            f"{tag}:called",
            f"{tag}:joined",
            f"{tag}:tickets",
        ]

    def _queue_args(self, room: QueuePolicy) -> list[int]:
        return [
            room.new_sessions,
            round(room.window * MICROS),
            round(room.abandon_after * MICROS),
            round(room.grace * MICROS),
        ]

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * MICROS))

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        args = [
            room.new_sessions,
            round(room.window * MICROS),
            round(room.block_for * MICROS),
            session_id,
            self._now_arg(),
            room.max_active,
            round(room.ttl * MICROS),
        ]
        with redis_errors():
            reply = await self._admit(keys=self.room_keys(room.name)[:3], args=args)
        admitted, blocked_until, started, now = reply
        return Admission(bool(admitted), blocked_until / MICROS, bool(started), now / MICROS)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        args = [
            *self._queue_args(room),
            session_id,
            "1" if room.hold else "",
            self._now_arg(),
            room.max_active,
            round(room.ttl * MICROS),
            round(room.opens_at * MICROS),
            room.seed,
            room.tickets_per_ip,
        ]
        keys = [*self.queue_keys(room.name), self.room_keys(room.name)[2]]
        if room.tickets_per_ip and client:
            keys.append(f"{self._prefix}:{{room:{room.name}}}:tickets-from:{client}")
        with redis_errors():
            reply = await self._queue(keys=keys, args=args)
        admitted, ticket, position, length, called, slot, now, state = reply
        return Turn(
            bool(admitted),
            int(ticket),
            int(position),
            int(length),
            int(called),
            slot / MICROS,
            now / MICROS,
            prequeue=state == 1,
            refused=state == 2,
        )

    async def touch(self, room: str, ttl: float, seen: Sequence[tuple[str, float]]) -> list[str]:
        args: list[str | int] = [round(ttl * MICROS), self._now_arg()]
        for session_id, ago in seen:
            args += [session_id, max(0, round(ago * MICROS))]
        with redis_errors():
            gone = await self._touch(keys=self.room_keys(room)[2:], args=args)
        return [_text(sid) for sid in gone]

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        keys = [*self.room_keys(room)[2:], *self.queue_keys(room)[1:5]]
        with redis_errors():
            return bool(
                await self._release(keys=keys, args=[session_id, round(ttl * MICROS), self._now_arg()])
            )

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        args = [*self._queue_args(room), self._now_arg()]
        with redis_errors():
            reply = await self._queue_state(keys=self.queue_keys(room.name)[:5], args=args)
        length, called, oldest, in_window, slot, now = reply
        waited = (now - oldest) / MICROS if oldest else 0.0
        return QueueState(
            int(length), int(called), max(0.0, waited), int(in_window), slot / MICROS, now / MICROS
        )

    async def record(self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float) -> None:
        args: list[str | int] = [round(room.window * MICROS), round(now * MICROS), self._now_arg()]
        for session_id, at in admissions:
            args += [session_id, round(at * MICROS)]
        with redis_errors():
            await self._room_record(keys=self.room_keys(room.name)[:1], args=args)

    def rate_key(self, check: RateCheck) -> str:
        return f"{self._prefix}:{{rl:{check.rule}:{check.key}}}:{_ALGORITHM_CODES[check.algorithm]}"

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        if not checks:
            return []
        groups = [list(range(len(checks)))]
        if self._cluster:
            # A script may touch one Cluster slot only. Rules whose keys live in different slots
            # are decided one slot after another; a refusal in a later slot does not undo the
            # charges of an earlier one (docs/rate-limits.md says so).
            by_slot: dict[int, list[int]] = {}
            for i, check in enumerate(checks):
                by_slot.setdefault(key_slot(self.rate_key(check).encode()), []).append(i)
            groups = list(by_slot.values())
        results: list[RateResult | None] = [None] * len(checks)
        for group in groups:
            part = [checks[i] for i in group]
            for i, result in zip(group, await self._hit_one_slot(part), strict=True):
                results[i] = result
            if any(
                not r.allowed and not c.shadow
                for r, c in zip((results[i] for i in group), part, strict=True)
                if r
            ):
                break
        # Groups after an enforced refusal were not asked: they count as allowed and uncharged.
        return [r if r is not None else RateResult(True, checks[i].limit, 0.0) for i, r in enumerate(results)]

    async def _hit_one_slot(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        args: list[str | int] = [self._now_arg()]
        for c in checks:
            args += [
                _ALGORITHM_CODES[c.algorithm],
                c.limit,
                round(c.per * MICROS),
                c.burst or 0,
                int(c.shadow),
            ]
        with redis_errors():
            reply = await self._rate_limit(keys=[self.rate_key(c) for c in checks], args=args)
        return [
            RateResult(bool(reply[i]), int(reply[i + 1]), reply[i + 2] / MICROS)
            for i in range(0, len(reply), 3)
        ]

    async def room_state(self, room: RoomPolicy) -> RoomState:
        args = [round(room.window * MICROS), self._now_arg(), round(room.ttl * MICROS)]
        with redis_errors():
            in_window, blocked, active = await self._room_state(keys=self.room_keys(room.name)[:3], args=args)
        return RoomState(int(in_window), blocked / MICROS, int(active))

    async def unblock(self, room: str) -> bool:
        with redis_errors():
            return bool(await self._client.delete(self.room_keys(room)[1]))

    async def overrides(self) -> dict[str, str]:
        with redis_errors():
            raw = await self._client.hgetall(self.overrides_key)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        updates = {k: v for k, v in changes.items() if v is not None}
        removals = [k for k, v in changes.items() if v is None]
        with redis_errors():
            # One key, so one slot: a transaction applies every change at once, also on a Cluster.
            async with self._client.pipeline(transaction=True) as pipe:
                if updates:
                    pipe.hset(self.overrides_key, mapping=updates)
                if removals:
                    pipe.hdel(self.overrides_key, *removals)
                await pipe.execute()

    async def warm(self) -> None:
        """Connect and load the scripts before the first visitor needs them (a replica that starts
        in the middle of a flash crowd should not make its first callers pay for the connection)."""
        if self._fast is not None:
            await self._fast.connect()
        else:
            await self.ping()

    async def ping(self) -> bool:
        with redis_errors():
            return bool(await self._client.ping())

    async def close(self) -> None:
        # Closing the connections to a Redis that is gone is not an error worth reporting.
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
            if self._fast is not None:
                await self._fast.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
