"""Issue 27's scalper, end to end: two `waitroom serve` replicas on one real redis-server, one
address with 50 User-Agents (a script posing as 50 browsers behind one address) and 20 visitors of
their own addresses, against a `fifo` room with a cap and a scheduled opening, with proof of work
(`sale`) and without (`plain`). Before the opening the script draws as often as it can; after it,
everyone polls with their tickets and the script's refused agents ask again as newcomers. It holds
at most its allowance: one draw (`draws_per_ip` by default), and `places_per_ip` places at any time.
The figures are printed (`-s`) and reported in docs/security.md's threat table (N2, N3)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream, wait_for
from waitroom.rooms.line import client_key
from waitroom.rooms.proof import solve

pytestmark = pytest.mark.e2e

JSON = {"Accept": "application/json"}
SCALPER = "203.0.113.66"
AGENTS = 50
VISITORS = 20
PLACES = 2
LEAD = 15.0
"""Seconds from writing the config to the opening: two replicas start, and everyone draws."""


@dataclass
class Client:
    http: httpx.Client
    scalper: bool
    statuses: list[int] = field(default_factory=list)
    state: str = ""
    admitted: bool = False

    def ask(self, path: str) -> None:
        answer = self.http.get(path)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        if body.get("state") == "challenge":
            work = body["proof_of_work"]
            proof = f"{work['challenge']};{solve(work['challenge'], work['difficulty'])}"
            answer = self.http.get(path, headers={"Waitroom-Proof": proof})
            body = answer.json() if answer.status_code != 200 else {}
        self.statuses.append(answer.status_code)
        self.state = "in" if answer.status_code == 200 else str(body.get("state") or answer.status_code)
        self.admitted = self.admitted or answer.status_code == 200

    def holds(self) -> bool:
        """A place now: a session (let in, not released) or a live ticket (any wait answer: a
        `fifo` room's 503 carries the ticket; a challenge is no place)."""
        return self.admitted or (self.statuses[-1] == 503 and self.state != "challenge")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[Mitmdump], RedisServer, float]]:
    """Two replicas on one Redis, both rooms opening LEAD seconds from now (one test uses one)."""
    work = tmp_path
    redis = RedisServer(work)
    upstream = Upstream()

    def config(opens: datetime) -> str:
        room = (
            "queue: fifo, new_sessions: 10, window: 60s, max_active: 10, retry_after: 1s, grace: 30s, "
            f'opens_at: "{opens.isoformat()}", places_per_ip: {PLACES}'
        )
        return f"""
store: {{url: "{redis.url}", timeout: 1s, on_error: closed}}
client_ip: {{trusted_proxies: 1}}
rooms:
  - {{name: sale, match: {{path_prefix: /sale}}, {room}, proof_of_work: {{difficulty: 12}}}}
  - {{name: plain, match: {{path_prefix: /plain}}, {room}}}
"""

    # Started with the opening an hour away, then moved to LEAD seconds from now once both serve:
    # however long the starts take on a busy machine, the draws have their time before it.
    (work / "config.yaml").write_text(config(datetime.now(UTC) + timedelta(hours=1)))
    started = []
    for name in ("a", "b"):
        (work / name).mkdir()
        started.append(
            Mitmdump(
                upstream.url,
                work / name,
                work / "config.yaml",
                env={"WAITROOM_SECRET": SECRET},
                entry="serve",
            )
        )
    try:
        for proxy in started:
            proxy.wait_ready()
        opens = datetime.now(UTC) + timedelta(seconds=LEAD)
        (work / "config.yaml").write_text(config(opens))
        for proxy in started:
            wait_for(lambda p=proxy: "waitroom: reloaded" in p.log_text(), 10, "the opening time")
        yield started, redis, opens.timestamp()
    finally:
        for proxy in started:
            proxy.stop()
        upstream.close()
        redis.stop()


@pytest.mark.parametrize("room", ["sale", "plain"])
def test_one_address_with_50_agents_holds_its_allowance(
    replicas: tuple[list[Mitmdump], RedisServer, float], room: str
) -> None:
    proxies, redis, opens = replicas
    clients = [
        Client(
            httpx.Client(
                base_url=proxies[i % 2].url,
                headers={**JSON, "X-Forwarded-For": SCALPER, "User-Agent": f"Mozilla/5.0 agent-{i}"},
                timeout=10,
            ),
            scalper=True,
        )
        for i in range(AGENTS)
    ] + [
        Client(
            httpx.Client(
                base_url=proxies[i % 2].url,
                headers={**JSON, "X-Forwarded-For": f"198.51.100.{i + 1}", "User-Agent": "Mozilla/5.0"},
                timeout=10,
            ),
            scalper=False,
        )
        for i in range(VISITORS)
    ]
    path = f"/{room}/tickets"
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda c: c.ask(path), clients))  # before the opening: everyone draws
        assert time.time() < opens, "the draws took longer than the lead: raise LEAD"
        drawn = sum(1 for c in clients if c.scalper and c.state == "prequeue")
        refused = sum(1 for c in clients if c.scalper and c.statuses[-1] == 429)
        honest = sum(1 for c in clients if not c.scalper and c.state == "prequeue")
        draw_time = time.monotonic() - started
        while time.time() < opens - 2:  # the pre-queue pages poll; the refused agents try again
            time.sleep(1)
            list(pool.map(lambda c: c.ask(path), clients))
            assert sum(1 for c in clients if c.scalper and c.state == "prequeue") <= 1
        time.sleep(max(0.0, opens - time.time()) + 0.5)
        most = 0
        for _ in range(6):  # after it: tickets polled, refused agents ask again as newcomers
            list(pool.map(lambda c: c.ask(path), clients))
            most = max(most, sum(1 for c in clients if c.scalper and c.holds()))
            time.sleep(1)
    holds = redis.client().zcard(f"waitroom:{{room:{room}}}:holds:{client_key(SCALPER)}")
    inside = sum(1 for c in clients if c.scalper and c.admitted)
    honest_in = sum(1 for c in clients if not c.scalper and c.admitted)
    print(
        f"{room}: the script drew {drawn} of {drawn + honest} draws ({refused} agents refused, "
        f"{draw_time:.1f} s for all draws); at most {most} places held at once (a session and "
        f"tickets), {inside} sessions let in; visitors let in {honest_in} of {VISITORS}; "
        f"holds in the store {holds}"
    )
    assert (drawn, refused, honest) == (1, AGENTS - 1, VISITORS)
    assert most <= PLACES
    assert inside <= PLACES
    assert holds <= PLACES
    assert honest_in == 10 - inside  # the cap's places went to the draws
    assert inside <= 1  # its one draw, if it was among the first 10 of 21: no place else is free
