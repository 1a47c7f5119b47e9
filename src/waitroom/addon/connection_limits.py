"""Bounds on what a slow or greedy client can hold: the time to send request headers, the number
of open connections, and the size of a header section (which the gate checks; see gate.py)."""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass

from mitmproxy import connection, ctx, exceptions, http

from waitroom.addon import flowmeta
from waitroom.metrics import METRICS

log = logging.getLogger(__name__)


def auto_max_connections() -> int:
    """Half the open-file limit (each proxied connection may hold an upstream socket too), less a
    reserve for the store, the admin port and the config file; at least 64."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, (soft - 128) // 2)


def bounded(option: str, low: int, high: int) -> int:
    value = int(getattr(ctx.options, option))
    if not low <= value <= high:
        raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
            f"{option}: must be from {low} to {high} (got {value})"
        )
    return value


@dataclass(slots=True)
class _Connection:
    """A client connection, for the header timeout: armed while no request is in flight on it."""

    timer: asyncio.TimerHandle | None = None
    open_flows: int = 0
    upgraded: bool = False
    """A WebSocket (or other upgrade): no more HTTP requests will come, so no header timeout."""


class ConnectionBounds:
    """mitmproxy addon: the header timeout and the connection limit.

    A request's headers are complete when the gate starts deciding it: the gate calls
    `headers_complete` first, so that the timer never fires while a decision is under way."""

    def __init__(self) -> None:
        self._connections: dict[str, _Connection] = {}
        self.header_timeout = 30.0
        self.max_connections = 0
        self.max_header_bytes = 65536

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_header_timeout",
            int,
            30,
            """
            Seconds a client connection may take to send complete request headers, counted from
            the moment it connects or its previous response ended (so also the keep-alive idle
            time); past it the connection is closed. 1 to 600. mitmproxy's own tcp_timeout still
            bounds any other silence (e.g. a body that stops arriving).
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_max_connections",
            int,
            0,
            """
            Client connections open at once; a new one past this is closed at once. 0 (the
            default): half the process's open-file limit, less a reserve.
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_max_header_bytes",
            int,
            65536,
            """
            Largest request header section (names and values, all fields) the wait room reads;
            a larger one is answered 431 and never forwarded. 1024 to 1048576.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if "waitroom_header_timeout" in updated:
            self.header_timeout = float(bounded("waitroom_header_timeout", 1, 600))
        if "waitroom_max_connections" in updated:
            wanted = bounded("waitroom_max_connections", 0, 1_000_000)
            self.max_connections = wanted or auto_max_connections()
        if "waitroom_max_header_bytes" in updated:
            self.max_header_bytes = bounded("waitroom_max_header_bytes", 1024, 1_048_576)

    def running(self) -> None:
        """The bounds in force, once at the start: the same under `waitroom serve` and mitmdump."""
        log.info(
            "waitroom: client connections: at most %d open, request headers within %gs and %d bytes",
            self.max_connections,
            self.header_timeout,
            self.max_header_bytes,
        )

    def client_connected(self, client: connection.Client) -> None:
        if len(self._connections) >= self.max_connections > 0:
            client.error = "waitroom: too many open connections"  # mitmproxy closes it at once
            METRICS.proxy.refused_connections.labels("limit").inc()
            return
        self._connections[client.id] = conn = _Connection()
        self._arm(client.id, conn)

    def client_disconnected(self, client: connection.Client) -> None:
        conn = self._connections.pop(client.id, None)
        if conn is not None and conn.timer is not None:
            conn.timer.cancel()

    def headers_complete(self, flow: http.HTTPFlow) -> None:
        """A live request's headers arrived: no header timeout while it is in flight."""
        conn = self._connections.get(flow.client_conn.id)
        if conn is None:
            return
        flowmeta.state(flow).in_flight = True
        conn.open_flows += 1
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def response(self, flow: http.HTTPFlow) -> None:
        self._flow_ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._flow_ended(flow)

    def _flow_ended(self, flow: http.HTTPFlow) -> None:
        conn = self._connections.get(flow.client_conn.id)
        state = flowmeta.peek(flow)
        if conn is None or state is None or not state.in_flight:
            return
        state.in_flight = False
        conn.open_flows = max(0, conn.open_flows - 1)
        if flow.websocket is not None or (flow.response is not None and flow.response.status_code == 101):
            conn.upgraded = True
        if not conn.open_flows and not conn.upgraded and conn.timer is None:
            self._arm(flow.client_conn.id, conn)

    def _arm(self, client_id: str, conn: _Connection) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline (mitmproxy's test context)
            return
        conn.timer = loop.call_later(self.header_timeout, self._header_timeout, client_id)

    def _header_timeout(self, client_id: str) -> None:
        """No complete request headers in time: close the connection, as mitmproxy's own
        tcp_timeout does (by cancelling its handler task; mitmproxy has no public call for it)."""
        conn = self._connections.get(client_id)
        if conn is None or conn.open_flows or conn.upgraded:
            return
        conn.timer = None
        try:
            handler = ctx.master.addons.get("proxyserver").connections[client_id]  # type: ignore[no-untyped-call]
            handler.transports[handler.client].handler.cancel("waitroom: header timeout")
        except Exception:  # gone meanwhile, or another mitmproxy layout: tcp_timeout still applies
            return
        METRICS.proxy.refused_connections.labels("header_timeout").inc()
