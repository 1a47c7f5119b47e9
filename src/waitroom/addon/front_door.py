"""The front door: a crowd larger than the proxy answers gets a wait answer, not a silent queue.

A new visitor costs the proxy a connection, mitmproxy's HTTP layers, a store call and a page; a
flash crowd arriving faster than that waits in the kernel's accept queue, where `store.max_wait`
cannot see it, and past the queue's length the kernel drops its first packets: the browser retries
after 1, 3, 7, 15 s and shows a loading page meanwhile (docs/crowds.md).

The door stands before mitmproxy. While the proxy keeps up, every connection goes to mitmproxy as
before. It falls behind when its event loop ran L seconds late (measured every TICK) and L × TURNS,
about what a connection accepted then takes to reach an answer through mitmproxy, is more than
`store.max_wait`. For the next L seconds (and on, while the loop stays that late), a new
connection that finds work of the proxy's own waiting (QUEUED callbacks ready or more: lateness
alone may be a machine busy with other work) is read by the door itself and, for a new visitor of
a room, answered with the room's wait page without a ticket (`Retry-After`, the visitor's
language: the answer `store.max_wait` sheds with), with no store call and no mitmproxy flow; the
door then closes the connection. That costs a small part of a full answer, so the proxy drains a
crowd several times its capacity instead of leaving it unanswered.

Everything else goes on to mitmproxy untouched (the bytes read are put back): a request carrying
the room's cookie (a session, a ticket, a pending admission: nobody inside or in line is shed), a
path in no room or bypassed, a shadow room, a request with a body, an upgrade, a request whose head
did not come in one read, TLS, and every request when a room or rule matches on host (the door does
not judge authorities). Only `waitroom serve` has a door: mitmdump opens its listeners itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any

from waitroom.addon.runtime import Loaded
from waitroom.metrics import METRICS
from waitroom.rooms.sessions import cookie_name
from waitroom.rooms.shadow import is_shadow
from waitroom.web.answers import Answer, wait_answer
from waitroom.web.strings import title_in
from waitroom.web.target import Refused, judge_target
from waitroom.web.wait import DEGRADED

log = logging.getLogger(__name__)

BACKLOG = 4096
"""The listeners' accept queue (the kernel caps it at net.core.somaxconn). With asyncio's default
of 100 the queue fills while the loop is busy with one turn, and the kernel drops the crowd's
connections (the browser retries 1, 3, 7 s later); with room to queue, the loop accepts them all
at its next turn, runs late, and the door answers them."""
READ_LIMIT = 16 * 1024
"""Bytes of a request's head the door reads in one go; a longer head goes to mitmproxy."""
READ_WAIT = 0.5
"""Seconds the door waits for a shed candidate's first bytes before handing it to mitmproxy."""
WRITE_WAIT = 2.0
"""Seconds a shed answer may take to leave before the connection is dropped."""
TICK = 0.1
"""Seconds between two measures of the event loop's lateness."""
TURNS = 8
"""Turns of the event loop a new connection takes from its accept to its answer through mitmproxy
(each turn runs everything ready, so it lasts about as long as the loop's lateness)."""
QUEUED = 64
"""Callbacks ready to run from which a late loop is behind its own work."""

_SHEDDABLE = (b"GET ", b"HEAD ")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FrontDoor:
    """`loaded()`: the config in force (None before the first one loaded)."""

    def __init__(self, loaded: Callable[[], Loaded | None]) -> None:
        self.loaded = loaded
        self.behind_until = 0.0
        """Loop time until which the door sheds (see the module's docstring)."""
        self._ticker: asyncio.Task[None] | None = None
        self._due = 0.0
        """Loop time the ticker's next wake-up is due."""

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="front door lag")

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + TICK
            await asyncio.sleep(TICK)
            now = loop.time()
            self.saw(now - self._due, now)

    def saw(self, lag: float, now: float) -> None:
        """The loop ran `lag` seconds late, found at loop time `now`."""
        loaded = self.loaded()
        if loaded is not None and lag * TURNS > loaded.config.store.max_wait:
            self.behind_until = max(self.behind_until, now + lag)

    def busy(self) -> bool:
        """The proxy is behind its own work: its loop was late lately (or is now: the tick that
        would tell has not run yet), and QUEUED callbacks or more are ready to run (a late loop with
        little of its own to do is a machine busy with other work: nothing to shed)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._ticker is not None and now > self._due:
            self.saw(now - self._due, now)
        return now < self.behind_until and queued(loop) >= QUEUED

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """True when the door answered the connection (and closed it); False: mitmproxy's, with
        every byte the door read put back."""
        if not self.busy():
            return False
        try:
            head = await asyncio.wait_for(reader.read(READ_LIMIT), READ_WAIT)
        except (TimeoutError, OSError):
            return False
        try:
            answer = self.answer(head)
        except Exception as e:  # a bug here must not cost the visitor: mitmproxy decides instead
            log.warning(
                "waitroom: the front door could not judge a request (%s): passed on", type(e).__name__
            )
            answer = None
        if answer is None:
            unread(reader, head)
            return False
        METRICS.store.shed.labels("door").inc()
        try:
            writer.write(answer)
            await asyncio.wait_for(writer.drain(), WRITE_WAIT)
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()
        return True

    def answer(self, head: bytes) -> bytes | None:
        """The shed answer to a new visitor's request `head` (bytes as read), or None: not for the
        door."""
        loaded = self.loaded()
        if loaded is None or loaded.needs_host or not head.startswith(_SHEDDABLE):
            return None
        end = head.find(b"\r\n\r\n")
        if end < 0 or end + 4 != len(head):  # not a whole head, or pipelined: mitmproxy's
            return None
        lines = head[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            return None
        method, target, _ = parts
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return None  # malformed: mitmproxy refuses it with a reason
            headers.setdefault(name.lower(), []).append(value.strip())
        if (
            headers.get("content-length", ["0"]) != ["0"]
            or {"transfer-encoding", "upgrade", "expect"} & headers.keys()
        ):
            return None  # a body, or a change of protocol: mitmproxy's
        try:
            path = judge_target(target).routing
        except Refused:
            return None
        route = loaded.decider.router.route("", path)
        room = route.room
        if room is None or route.bypass:
            return None
        overrides = loaded.decider.overrides
        if is_shadow(room, overrides):
            return None
        room = overrides.room(room)
        if room.closes_at is not None and time.time() >= room.closes_at.timestamp():
            return None
        wanted = cookie_name(loaded.config, room)
        for header in headers.get("cookie", []):
            for pair in header.split(";"):
                if pair.partition("=")[0].strip() == wanted:
                    return None  # inside, in line, or admitted a moment ago: never shed
        first = _first(headers)
        strings = loaded.pages.strings(room.name, first("accept-language"))
        answer = wait_answer(
            template=loaded.pages.wait[room.name],
            strings=strings,
            room=room.name,
            title=title_in(room.title, room.name, strings.tag, loaded.pages.catalog.default),
            status=room.status,
            retry_after=room.retry_after_seconds,
            head_retry_after=room.retry_after_seconds,
            blocked_for=0.0,
            accept=first("accept"),
            estimate=DEGRADED,
        )
        return serialize(answer, head_only=method == "HEAD")


def _first(headers: dict[str, list[str]]) -> Callable[[str], str]:
    def first(name: str) -> str:
        values = headers.get(name)
        return values[0] if values else ""

    return first


def serialize(answer: Answer, head_only: bool = False) -> bytes:
    """An HTTP/1.1 answer that closes the connection."""
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = ""
    lines = [f"HTTP/1.1 {answer.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in answer.headers.items()]
    lines += [f"Content-Length: {len(answer.body)}", "Connection: close", "", ""]
    out = "\r\n".join(lines).encode("latin-1")
    return out if head_only else out + answer.body


def unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Put `data` back in front of what `reader` holds, as if it had not been read."""
    if data:
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        buffer[:0] = data


def queued(loop: asyncio.AbstractEventLoop) -> int:
    """Callbacks ready to run on `loop` (CPython's BaseEventLoop._ready); QUEUED when unknown."""
    ready = getattr(loop, "_ready", None)
    return len(ready) if ready is not None else QUEUED


def door_works() -> bool:
    """The door puts read bytes back through asyncio.StreamReader's buffer, a private attribute of
    CPython's; without it there is no door (mitmproxy reads every connection, as before)."""
    return isinstance(getattr(asyncio.StreamReader(), "_buffer", None), bytearray)


@contextlib.contextmanager
def installed(door: FrontDoor) -> Iterator[None]:
    """mitmproxy's listeners, for the context's lifetime: opened with BACKLOG, and each new
    connection shown to `door` before mitmproxy reads it (ServerInstance.handle_stream, which
    mitmproxy binds when it opens a listener)."""
    from mitmproxy.proxy import mode_servers

    if not door_works():
        log.warning("waitroom: no front door on this Python (asyncio.StreamReader changed)")
        yield
        return
    instance = mode_servers.ServerInstance
    original_stream = instance.handle_stream
    original_start = asyncio.start_server

    async def handle_stream(self: Any, reader: Any, writer: Any = None) -> None:
        if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
            try:
                if await door.handle(reader, writer):
                    return
            except Exception as e:  # a bug at the door: mitmproxy decides, as without one
                log.warning("waitroom: front door: %s: passed on", type(e).__name__)
        await original_stream(self, reader, writer)

    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        kwargs.setdefault("backlog", BACKLOG)
        return await original_start(*args, **kwargs)

    instance.handle_stream = handle_stream  # type: ignore[method-assign]
    asyncio.start_server = start_server
    try:
        yield
    finally:
        instance.handle_stream = original_stream  # type: ignore[method-assign]
        asyncio.start_server = original_start
