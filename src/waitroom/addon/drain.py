"""Graceful shutdown: on SIGTERM nothing that was accepted goes without an answer.

In-flight tracking and the sequence (not ready, keep serving for `admin.shutdown_delay`, stop
accepting without resetting queued connections, drain for `admin.drain`, then 503 and exit) are
described in docs/design.md ("Graceful shutdown") and docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import ctx, http
from mitmproxy.connection import Client

from waitroom.metrics import METRICS, follow

log = logging.getLogger(__name__)

IDLE_GRACE = 1.0
"""Seconds a keep-alive connection may sit idle once the listener is closed before the drain stops
waiting for it: a client under load sends its next request well within this and is answered with
`Connection: close`; one idle longer is closed at exit, as at any keep-alive idle timeout."""
ACCEPT_QUEUE_BOUND = 1.0
"""Longest wait for the kernel's accept queue to empty before the listener is closed."""


@dataclass(frozen=True, slots=True)
class Timing:
    shutdown_delay: float
    drain: float


class Drain:
    """In-flight tracking and the shutdown sequence, as a mitmproxy addon of its own."""

    def __init__(self, timing: Callable[[], Timing], clock: Callable[[], float] = time.monotonic) -> None:
        self._timing = timing
        self._clock = clock
        self.draining = False
        """True from SIGTERM on: readiness fails."""
        self.closing = False
        """True once the listener stops accepting: every HTTP/1 response says `Connection: close`."""
        self.past_bound = False
        """True once `admin.drain` is over: requests still arriving are answered 503."""
        self._inflight: set[str] = set()
        self._flows: dict[str, set[str]] = {}
        """Client connection → its requests in flight: a connection that closes takes them along
        (nobody is left to answer), so the drain never waits for a flow mitmproxy forgot."""
        self._connections: dict[str, float] = {}
        """Open client connections → when they were last active (connected, request, response)."""
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        """Set, once the listener is closed, whenever a request ends or a connection closes."""
        follow(METRICS.proxy.inflight, lambda: len(self._inflight))  # read at scrape time

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # --- hooks -------------------------------------------------------------------------------

    def client_connected(self, client: Client) -> None:
        self._connections[client.id] = self._clock()

    def client_disconnected(self, client: Client) -> None:
        self._connections.pop(client.id, None)
        self._inflight.difference_update(self._flows.pop(client.id, ()))
        if self.closing:
            self._changed.set()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # In flight from the moment its headers are read: a body still uploading has no answer yet.
        if flow.id in self._inflight:
            return
        self._inflight.add(flow.id)
        self._flows.setdefault(flow.client_conn.id, set()).add(flow.id)
        self._touch(flow.client_conn.id)
        if self.past_bound and flow.live and flow.response is None:
            flow.response = http.Response.make(
                503,
                b"shutting down\n",
                {"Content-Type": "text/plain", "Retry-After": "1", "Cache-Control": "no-store"},
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._close_after(flow)  # a streamed response: its headers leave before the `response` hook

    def response(self, flow: http.HTTPFlow) -> None:
        self._close_after(flow)
        self._finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def _close_after(self, flow: http.HTTPFlow) -> None:
        if self.closing and flow.response is not None and flow.request.http_version.startswith("HTTP/1"):
            # HTTP/2 has no Connection header (it would need a GOAWAY, which mitmproxy does not offer).
            flow.response.headers["Connection"] = "close"

    def _finished(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self._inflight:
            return
        self._inflight.discard(flow.id)
        client = flow.client_conn.id
        flows = self._flows.get(client)
        if flows is not None:
            flows.discard(flow.id)
            if not flows:
                del self._flows[client]
        self._touch(client)
        if self.closing:
            self._changed.set()

    def _touch(self, client: str) -> None:
        if client in self._connections:
            self._connections[client] = self._clock()

    def done(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # mitmproxy stops for another reason (SIGINT) while we drain

    # --- the sequence ------------------------------------------------------------------------

    def begin(self) -> None:
        """SIGTERM: readiness fails now; the rest runs as a task."""
        if self.draining:
            return
        self.draining = True
        METRICS.process.ready.set(0)
        timing = self._timing()
        log.info(
            "waitroom: SIGTERM: not ready; draining %d request(s): serving %gs more, then up to %gs",
            len(self._inflight),
            timing.shutdown_delay,
            timing.drain,
        )
        self._task = asyncio.get_running_loop().create_task(self._run(timing), name="waitroom: drain")

    async def _run(self, timing: Timing) -> None:
        try:
            if timing.shutdown_delay > 0:
                await asyncio.sleep(timing.shutdown_delay)
            await self._stop_accepting()
            stopped = self._clock()
            deadline = stopped + timing.drain
            while (wait := self._left_to_wait(stopped)) is not None and (now := self._clock()) < deadline:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, deadline - now)):
                        await self._changed.wait()
            if self._left_to_wait(stopped) is not None:
                self.past_bound = True
                log.warning(
                    "waitroom: drain period over; %d request(s) still in flight are cut", len(self._inflight)
                )
            else:
                log.info("waitroom: drained; exiting")
        except Exception:  # the exit must happen whatever went wrong
            log.exception("waitroom: the drain failed; exiting")
        ctx.master.shutdown()  # type: ignore[no-untyped-call]

    def _left_to_wait(self, stopped: float) -> float | None:
        """None when the drain is done; else how long until it may be (inf: until a request ends).

        Done means: nothing in flight, and every open connection idle for IDLE_GRACE — and at least
        IDLE_GRACE since the listener closed, so that a connection accepted just before the close
        gets that long to send its request, even before mitmproxy has told us it exists."""
        if self._inflight:
            return math.inf
        quiet_from = max([stopped, *self._connections.values()]) + IDLE_GRACE
        left = quiet_from - self._clock()
        return left if left > 0 else None

    async def _stop_accepting(self) -> None:
        addresses = _listen_addresses()
        listeners = _listening_sockets(addresses)
        try:
            filtered = [s for s in listeners if _drop_new_connections(s)]
            deadline = self._clock() + ACCEPT_QUEUE_BOUND
            # The event loop keeps accepting what the kernel queued before the filter; the kernel
            # offers no event for an empty accept queue, so it is looked at every few milliseconds.
            while any(_accept_queue(s) for s in filtered) and self._clock() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        finally:
            for s in listeners:
                s.close()  # our duplicate only; the listener itself is closed by mitmproxy below
        self.closing = True
        ctx.options.update(server=False)  # type: ignore[no-untyped-call]  # mitmproxy's own switch
        log.info("waitroom: no longer accepting connections on %s", ", ".join(addresses) or "-")


# --- Linux: stop new handshakes before the listener closes ------------------------------------

_SO_ATTACH_FILTER = 26
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # classic BPF: `ret #0`, drop every packet


def _listen_addresses() -> list[str]:
    proxyserver = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    addrs = proxyserver.listen_addrs() if proxyserver is not None else []
    return [f"{a[0]}:{a[1]}" for a in addrs]


def _listening_sockets(addresses: list[str]) -> list[socket.socket]:
    """Duplicates of this process's TCP listeners on `addresses` (found by their descriptors, as
    mitmproxy keeps its servers to itself); empty where /proc is not there."""
    if not sys.platform.startswith("linux") or not addresses:
        return []
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError, ValueError):
                fd = os.dup(int(name))
                try:
                    s = socket.socket(fileno=fd)
                except OSError:
                    os.close(fd)
                    continue
                if (
                    s.type == socket.SOCK_STREAM
                    and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and _address(s) in addresses
                ):
                    found.append(s)
                else:
                    s.detach()
                    os.close(fd)
    return found


def _address(s: socket.socket) -> str:
    name = s.getsockname()
    return f"{name[0]}:{name[1]}"


def _drop_new_connections(s: socket.socket) -> bool:
    """Attach a socket filter that drops every packet reaching the listener: new SYNs (and the last
    ACK of a handshake under way) are dropped, connections already queued are untouched."""
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    try:
        s.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.warning("waitroom: cannot hold new connections back (%s); closing the listener at once", e)
        return False
    return True


def _accept_queue(s: socket.socket) -> int:
    """Connections the kernel completed that nobody accepted yet (Linux's tcp_info on a listener)."""
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    return int(struct.unpack_from("8B6I", info)[12])
