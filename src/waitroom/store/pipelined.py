"""One pipelined connection to a single Redis node, for the decisions on the request path.

Every request's command is written at once on the same connection and its reply matched in order
(Redis answers a connection's commands in the order they came). Replies that arrive together are
handed out in one pass of the event loop. A pool that lends one connection per command, as
redis-py's does, costs a socket read, a loop iteration and a pool round per reply; this costs a
list append. Cluster and Sentinel URLs keep redis-py (they need its slot and master discovery).

Errors are redis-py's exception types, so the store treats both clients alike. A caller that stops
waiting (the store timeout) leaves its reply to be read and dropped in turn; a connection whose
oldest unanswered command is older than STALE is dropped and made again.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl as ssl_module
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


class ConnectionLost(RedisConnectionError):
    """The connection closed while commands were waiting for their replies: Redis may have carried
    them out (unlike a connection that could not be made, where nothing was sent)."""


STALE = 5.0
"""Seconds an unanswered command may wait before the connection is presumed dead and replaced."""

Arg = bytes | str | int


def encode(args: tuple[Arg, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future, _ = self.waiting.popleft()
            if future.done():  # its caller stopped waiting
                continue
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionLost(f"connection lost: {exc or 'closed by the server'}")
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        assert self.transport is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((future, time.monotonic()))
        self.transport.write(payload)
        return future


class PipelinedConnection:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        connect_timeout: float = 1.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.tls = tls
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self._attempt: asyncio.Task[_Protocol] | None = None
        self.scripts: list[str] = []
        """Lua sources loaded (SCRIPT LOAD) on every new connection, so that EVALSHA finds them
        at once, also right after a Redis restart: no NOSCRIPT round trip in a burst."""

    @classmethod
    def from_url(cls, url: str, connect_timeout: float) -> PipelinedConnection:
        """`redis://[[user]:password@]host[:port][/db]` or `rediss://...` (TLS)."""
        parts = urlsplit(url)
        db = int(parts.path.strip("/") or 0)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
            connect_timeout=connect_timeout,
        )

    async def execute(self, *args: Arg) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or _stale(protocol):
            protocol = await self.connect()
        return await protocol.send(encode(args))

    async def connect(self) -> _Protocol:
        """The live connection, made if need be. One connection attempt at a time, in a task of its
        own: a caller whose deadline ends does not abort it for the callers behind it (in a flash
        crowd on a fresh replica, every caller's deadline could otherwise cut the same attempt)."""
        task = self._attempt
        if task is None or task.done():
            task = self._attempt = asyncio.get_running_loop().create_task(self._connect())
            task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            current = self._protocol
            if current is not None and current.lost is None and not _stale(current):
                return current  # another caller connected meanwhile
            if current is not None and current.transport is not None:
                current.transport.abort()
            self._protocol = None
            loop = asyncio.get_running_loop()
            context = ssl_module.create_default_context() if self.tls else None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=context)
                    if self.password is not None:
                        auth: tuple[Arg, ...] = (
                            (self.username, self.password) if self.username else (self.password,)
                        )
                        await protocol.send(encode(("AUTH", *auth)))
                    if self.db:
                        await protocol.send(encode(("SELECT", self.db)))
                    if self.scripts:
                        loads = [protocol.send(encode(("SCRIPT", "LOAD", source))) for source in self.scripts]
                        await asyncio.gather(*loads)
            except (OSError, TimeoutError) as e:
                raise RedisConnectionError(f"cannot connect to {self.host}:{self.port}: {e}") from e
            self._protocol = protocol
            return protocol

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


def _retrieve(task: asyncio.Task[_Protocol]) -> None:
    """A connection attempt that failed while nobody awaited it is not worth a warning."""
    if not task.cancelled():
        task.exception()


def _stale(protocol: _Protocol) -> bool:
    return bool(protocol.waiting) and time.monotonic() - protocol.waiting[0][1] > STALE


class PipelinedScript:
    """EVALSHA, and EVAL (which caches the script again) when Redis answers NOSCRIPT after a restart."""

    def __init__(self, connection: PipelinedConnection, source: str) -> None:
        self.connection = connection
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        connection.scripts.append(source)

    async def __call__(self, keys: list[str], args: list[Arg]) -> Any:
        try:
            return await self.connection.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.connection.execute("EVAL", self.source, len(keys), *keys, *args)
