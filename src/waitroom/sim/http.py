"""The same visitors, sent to a real proxy over HTTP: the engine paced by the wall clock.

`drive(...)` runs the engine's visitors (the same plans, polls and pages as a simulation) against
running proxies instead of the deciders in this process, one request at a time in event order, and
returns the trace of what was sent when: JSON lines that `waitroom simulate --as-recorded
--visitor field:visitor` reads back. Serial on purpose: the proxy then decides in the order the
requests were sent, so the same requests decided by the simulator at the same times must get the
same answers (tests/e2e/test_simulate_agrees.py); the proxy's own latency is the only difference
left. A busy driver sends late, never out of order, and the trace holds the times actually sent.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from waitroom.config.schema import Config
from waitroom.rooms.sessions import SessionCodec
from waitroom.sim.clock import VirtualClock
from waitroom.sim.crowd import Crowd
from waitroom.sim.engine import Engine, Records, Visitor
from waitroom.sim.replica import Kind, Reply, Request
from waitroom.sim.visitors import Behaviour
from waitroom.sim.visits import Visit
from waitroom.store.memory import MemoryStore
from waitroom.web.wait import Estimate, Place

_DATA = re.compile(r'<script type="application/json" id="waitroom-data">(.*?)</script>', re.S)
_KINDS = {"waiting": Kind.WAITING, "admitted": Kind.ADMITTED, "closed": Kind.CLOSED, "refused": Kind.REFUSED}


class HttpTransport:
    """Requests to proxies in reverse mode (`urls`), one keep-alive connection each."""

    def __init__(self, urls: Sequence[str], config: Config, timeout: float = 10.0) -> None:
        self.targets = [urlsplit(u) for u in urls]
        self.config = config
        self.timeout = timeout
        self._connections: dict[int, http.client.HTTPConnection] = {}
        self.errors = 0

    def _connection(self, replica: int) -> http.client.HTTPConnection:
        index = replica % len(self.targets)
        found = self._connections.get(index)
        if found is None:
            target = self.targets[index]
            found = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port or 80, timeout=self.timeout
            )
            self._connections[index] = found
        return found

    async def send(self, visitor: Visitor, request: Request, replica: int, release: bool) -> Reply:
        headers = {
            "Host": request.host,
            "User-Agent": request.user_agent,
            "Accept": "application/json" if request.poll else "text/html",
        }
        if request.poll:
            headers["Waitroom-Poll"] = "1"
        if request.client:  # believed by a proxy with client_ip.trusted_proxies: 1
            headers["X-Forwarded-For"] = request.client
        cookie = visitor.jar.header(time.time())
        if cookie:
            headers["Cookie"] = cookie
        for attempt in range(2):  # a keep-alive connection the proxy closed: once more, on a new one
            connection = self._connection(replica)
            try:
                connection.request(request.method, request.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connections.pop(replica % len(self.targets), None)
                if attempt:
                    self.errors += 1
                    return Reply(Kind.FAILED, 0, retry_after=1, error="connection")
        return self._reply(visitor, response, body)

    def _reply(self, visitor: Visitor, response: http.client.HTTPResponse, body: bytes) -> Reply:
        status = response.status
        said = response.getheader("Waitroom-Status", "")
        kind = _KINDS.get(said)
        if kind is None:
            kind = Kind.LIMITED if status == 429 else Kind.FAILED if status >= 500 else Kind.FORWARDED
        reply = Reply(kind, status, retry_after=int(response.getheader("Retry-After", "0") or 0))
        prefix = self.config.session.cookie + "_"
        for header in response.msg.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value, _, attributes = rest.partition(";")
            age = re.search(r"Max-Age=(\d+)", attributes)
            reply.cookies.append((name.strip(), value.strip(), int(age[1]) if age else 86400))
            if name.startswith(prefix):
                reply.room = name[len(prefix) :]
        if kind is Kind.WAITING:
            data = _waiting_data(body)
            reply.retry_after = int(data.get("retry_after") or reply.retry_after or 1)
            reply.blocked_for = float(data.get("blocked_for") or 0)
            reply.room = str(data.get("room") or reply.room or "")
            reply.outcome = "waiting"
            seconds = data.get("eta_seconds")
            estimate = Estimate(
                seconds if isinstance(seconds, int) else None, data.get("eta_basis") or "window"
            )
            if isinstance(data.get("position"), int):
                reply.place = Place(data["position"], int(data.get("queue_length", 0)), estimate)
            elif isinstance(data.get("opens_in"), int):
                opens_in = data["opens_in"]
                reply.place = Place(0, int(data.get("queue_length", 0)), estimate, opens_in=opens_in)
        elif kind is Kind.CLOSED:
            reply.outcome = "closed"
        elif kind is Kind.REFUSED:
            reply.outcome = "refused"
        else:
            reply.outcome = _session_outcome(visitor, reply)
        return reply

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


def _waiting_data(body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", "replace")
    found = _DATA.search(text)
    try:
        data = json.loads(found[1] if found else text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _session_id(token: str) -> tuple[str, str] | None:
    """(kind, session id) of one of our tokens, read without checking it."""
    payload = token.split(".", 1)[0]
    try:
        fields = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")
    except ValueError:
        return None
    return (fields[0], fields[2]) if len(fields) == 5 else None


def _session_outcome(visitor: Visitor, reply: Reply) -> str | None:
    """A forwarded answer's room outcome, as far as HTTP tells it: a new session cookie is an
    admission; otherwise a visitor holding a session was let through on it."""
    for name, value, age in reply.cookies:
        held = _session_id(value) if age > 0 else None
        if held is not None and held[0] == "v1":
            current = visitor.jar.cookies.get(name)
            before = _session_id(current[0]) if current else None
            return "admitted" if before is None or before != held else "session"
    for name in visitor.jar.cookies:
        current = visitor.jar.cookies[name]
        held = _session_id(current[0])
        if held is not None and held[0] == "v1":
            return "session"
    return None


async def drive(
    urls: Sequence[str],
    config: Config,
    crowd: Crowd,
    behaviour: Behaviour,
    *,
    seed: int = 1,
    path: str | None = None,
    host: str = "localhost",
    lead: float = 0.5,
) -> tuple[Records, list[dict[str, Any]]]:
    """Send `crowd` (its plans drawn from `seed`, as `waitroom simulate` draws them) to the
    proxies at `urls`, and return the records and the trace (one dict per request sent, with
    when its answer came). Each visitor's own address goes in X-Forwarded-For: a proxy with
    `client_ip: {trusted_proxies: 1}` sees what the simulator sees."""
    start = time.time() + lead
    times = crowd.times(random.Random(seed))
    visits = [Visit(start + t, None) for t in times]
    clock = VirtualClock(time.time())
    transport = HttpTransport(urls, config)
    target = path or (config.rooms[0].match.path_prefix if config.rooms else "/")
    engine = Engine(
        config,
        visits,
        behaviour,
        store=MemoryStore(clock),
        clock=clock,
        codec=SessionCodec([b"\0" * 32], config.session.ttl),  # unused: the proxies decide
        crowd_request=Request("GET", host, target, "", ""),
        seed=seed,
        transport=transport,
        realtime=True,
        trace=True,
    )
    try:
        records = await engine.run()
    finally:
        transport.close()
    assert engine.trace is not None
    return records, engine.trace
