"""SIGTERM under continuous load, against a real mitmdump: every request a connection carried to
the proxy gets an answer; connections the proxy no longer accepts are refused, never reset.

Each client classifies every attempt from its own side of the socket:
- `refused`: the connection was never established (refused, or the handshake timed out): nothing
  was sent, and a client may safely go elsewhere;
- an HTTP status: the request was answered;
- `unanswered`: the connection was established and the request written, and then it was reset or
  closed without an answer. The test asserts there are none.
"""

from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import Mitmdump, Upstream, free_port, wait_for

pytestmark = pytest.mark.e2e

SHUTDOWN_DELAY = 1.0
DRAIN = 4.0
MARGIN = 3.0
"""Exit comes within shutdown_delay + drain + this (start-up of the exit, the accept queue)."""
LOAD_TIME_BOUND = 40.0
MAX_ATTEMPTS = 200_000
CONNECT_TIMEOUT = 3.0
"""Longer than one SYN retransmission (1 s): a connect held back by the drain's filter ends refused."""


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    after_sigterm: Counter[str] = field(default_factory=Counter)
    connection_close: int = 0
    unanswered: list[str] = field(default_factory=list)
    sigterm_at: float | None = None
    first_answers: threading.Event = field(default_factory=threading.Event)

    def add(self, kind: str, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[f"{kind}:{outcome}"] += 1
            if self.sigterm_at is not None:
                self.after_sigterm[f"{kind}:{outcome}"] += 1
            if outcome == "unanswered":
                self.unanswered.append(f"{kind}: {detail}")
            if self.outcomes["new:200"] >= 10 and self.outcomes["keepalive:200"] >= 10:
                self.first_answers.set()


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except (ConnectionRefusedError, TimeoutError, OSError):
        return None


def _exchange(sock: socket.socket, path: str) -> http.client.HTTPResponse:
    sock.settimeout(30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
    response = http.client.HTTPResponse(sock, method="GET")
    response.begin()
    response.read()
    return response


def new_connections(port: int, tally: Tally, stop: threading.Event, path: str) -> None:
    """One connection per request, as clients behind a NAT or a new gateway connection do."""
    deadline = time.monotonic() + LOAD_TIME_BOUND
    for _ in range(MAX_ATTEMPTS):
        if stop.is_set() or time.monotonic() > deadline:
            return
        sock = _connect(port)
        if sock is None:
            tally.add("new", "refused")
            continue
        try:
            response = _exchange(sock, path)
            tally.add("new", str(response.status))
        except (OSError, http.client.HTTPException) as e:
            tally.add("new", "unanswered", repr(e))
        finally:
            sock.close()


def keep_alive(port: int, tally: Tally, stop: threading.Event) -> None:
    """Requests back to back on one connection, reconnecting when the proxy says `Connection: close`."""
    deadline = time.monotonic() + LOAD_TIME_BOUND
    sock: socket.socket | None = None
    for _ in range(MAX_ATTEMPTS):
        if stop.is_set() or time.monotonic() > deadline:
            break
        if sock is None:
            sock = _connect(port)
            if sock is None:
                tally.add("keepalive", "refused")
                continue
        try:
            response = _exchange(sock, "/fast")
        except (OSError, http.client.HTTPException) as e:
            tally.add("keepalive", "unanswered", repr(e))
            sock.close()
            sock = None
            continue
        tally.add("keepalive", str(response.status))
        if response.getheader("Connection", "").lower() == "close":
            with tally.lock:
                tally.connection_close += 1
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


@pytest.mark.exact
def test_sigterm_under_load_answers_every_accepted_request(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    upstream.slow = 0.5  # /slow requests are in flight when the listener closes
    admin_port = free_port()
    config = f"""
store: {{url: "memory://"}}
admin: {{host: 127.0.0.1, port: {admin_port}, shutdown_delay: {SHUTDOWN_DELAY}s, drain: {DRAIN}s}}
"""
    proxy: Mitmdump = start_proxy(config, upstream.url, env={"WAITROOM_SECRET": SECRET})
    wait_for(lambda: _status(f"http://127.0.0.1:{admin_port}/readyz") == 200, 30, "the proxy ready")
    tally, stop = Tally(), threading.Event()
    new, port = new_connections, proxy.port
    threads = [
        *(threading.Thread(target=new, args=(port, tally, stop, "/fast")) for _ in range(3)),
        *(threading.Thread(target=new, args=(port, tally, stop, "/slow")) for _ in range(2)),
        *(threading.Thread(target=keep_alive, args=(port, tally, stop)) for _ in range(3)),
    ]
    for thread in threads:
        thread.start()
    try:
        assert tally.first_answers.wait(20), "no answers under load"
        with tally.lock:
            tally.sigterm_at = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        # Readiness fails at once, while the proxy still serves (the shutdown delay).
        wait_for(lambda: _status(f"http://127.0.0.1:{admin_port}/readyz") == 503, 5, "readiness false")
        exit_code = proxy.proc.wait(timeout=SHUTDOWN_DELAY + DRAIN + MARGIN)
        took = time.monotonic() - sent
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CONNECT_TIMEOUT + 35)
    assert not any(thread.is_alive() for thread in threads)
    log = proxy.log_text()
    assert exit_code == 0, log
    assert tally.unanswered == [], (tally.unanswered, tally.outcomes, log[-3000:])
    # It kept serving through the delay (the drain did not end at the first idle instant) ...
    assert took >= SHUTDOWN_DELAY, took
    assert tally.after_sigterm["new:200"] > 0, tally.after_sigterm
    assert tally.after_sigterm["keepalive:200"] > 0, tally.after_sigterm
    # ... told keep-alive clients to go, then refused new connections, and exited in time.
    assert tally.connection_close > 0
    assert tally.after_sigterm["new:refused"] > 0, tally.after_sigterm
    expected = {"new:200", "new:refused", "keepalive:200", "keepalive:refused"}
    assert set(tally.outcomes) <= expected, tally.outcomes
    assert "no longer accepting connections" in log
    assert "drained; exiting" in log


def _status(url: str) -> int | None:
    try:
        connection = http.client.HTTPConnection(url.split("/")[2], timeout=2)
        connection.request("GET", "/" + url.split("/", 3)[3])
        return connection.getresponse().status
    except OSError:
        return None
