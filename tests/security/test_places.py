"""Issue 27, rows N3, N2, N5 and N11, end to end on both entry points: two replicas on one Redis.

- N3: one address held every place of a room with a cap by sending one request per place;
- N2: one address kept tickets alive by polling and drew as many times as it asked at an opening;
- N5: a used ticket or a pending token, copied, let its holders in again after the session was
  released and its place given to someone else, over the cap;
- N11: a released cookie replayed on another replica was honoured for seconds ("a second or two").

Each fails on the code before the fix (`places_per_ip` did not exist; the store admitted an id of
its window's log without checking the released set or the cap; a replica learnt of a release only
when it noted that session again, at most once per 5 s). The addresses are `X-Forwarded-For` values
behind one trusted hop; every room's requests alternate between the replicas.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream
from waitroom.rooms.activity import FLUSH_EVERY
from waitroom.rooms.sessions import SessionCodec, keys_from_secret, token_session_id

pytestmark = pytest.mark.e2e

STORE_TIMEOUT = 0.5
JSON = {"Accept": "application/json"}
LEAVE = "/.waitroom/leave"
OPENS = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
CONFIG = f"""
store: {{url: "REDIS", timeout: {STORE_TIMEOUT:g}s, on_error: closed}}
client_ip: {{trusted_proxies: 1}}
rooms:
  - {{name: inside, match: {{path_prefix: /inside}}, new_sessions: 100, window: 10m, max_active: 3,
     places_per_ip: 1}}
  - {{name: enter, match: {{path_prefix: /enter}}, queue: fifo, new_sessions: 100, window: 10m,
     max_active: 3, places_per_ip: 1}}
  - {{name: line, match: {{path_prefix: /line}}, queue: fifo, new_sessions: 1, window: 10m,
     places_per_ip: 2}}
  - {{name: draw, match: {{path_prefix: /draw}}, queue: fifo, new_sessions: 5, window: 10m,
     opens_at: "{OPENS}", places_per_ip: 3}}
  - {{name: once, match: {{path_prefix: /once}}, queue: fifo, new_sessions: 100, window: 10m,
     max_active: 1, grace: 10m}}
  - {{name: pend, match: {{path_prefix: /pend}}, new_sessions: 100, window: 10m, max_active: 1}}
  - {{name: replay, match: {{path_prefix: /replay}}, new_sessions: 100, window: 10m, max_active: 1}}
"""


@dataclass
class Pair:
    a: Mitmdump
    b: Mitmdump
    redis: RedisServer

    def visitor(self, address: str, replica: str = "a", agent: str = "test-browser") -> httpx.Client:
        proxy = self.a if replica == "a" else self.b
        headers = {**JSON, "X-Forwarded-For": address, "User-Agent": agent}
        return httpx.Client(base_url=proxy.url, headers=headers, timeout=10)

    def active(self, room: str) -> int:
        return int(self.redis.client().zcard(f"waitroom:{{room:{room}}}:active"))


@pytest.fixture(scope="module")
def pair(entry_point: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    work = tmp_path_factory.mktemp(f"places-{entry_point}")
    redis = RedisServer(work)
    upstream = Upstream()
    (work / "config.yaml").write_text(CONFIG.replace("REDIS", redis.url))
    env = {"WAITROOM_SECRET": SECRET}
    started = [
        Mitmdump(upstream.url, work / name, work / "config.yaml", env=env, entry=entry_point)
        for name in ("a", "b")
        if (work / name).mkdir() or True
    ]
    try:
        for proxy in started:
            proxy.wait_ready()
        yield Pair(started[0], started[1], redis)
    finally:
        for proxy in started:
            proxy.stop()
        upstream.close()
        redis.stop()


def _leave(client: httpx.Client) -> None:
    assert client.post(LEAVE, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_n3_one_address_holds_one_place_inside(pair: Pair) -> None:
    """A room with `max_active: 3`: one address with three requests (fresh clients, as a script
    without cookies) holds one place; the others are refused (429) and the room keeps two places for
    everyone else. The same for a direct entry into a `fifo` room's empty line."""
    for room in ("inside", "enter"):
        statuses = [pair.visitor("198.51.100.3", "ab"[i % 2]).get(f"/{room}").status_code for i in range(3)]
        assert statuses == [200, 429, 429], room
        refused = pair.visitor("198.51.100.3", "b").get(f"/{room}")
        assert refused.headers["Waitroom-Status"] == "refused"
        assert int(refused.headers["Retry-After"]) >= 1
        assert pair.visitor("198.51.100.4", "b").get(f"/{room}").status_code == 200  # someone else
        assert pair.active(room) == 2


def test_n2_tickets_kept_alive_are_still_held(pair: Pair) -> None:
    """`places_per_ip: 2`: two tickets, however long they are kept alive by polling; a third ask
    without a cookie is refused while they live, on either replica."""
    assert pair.visitor("198.51.100.20").get("/line").status_code == 200  # the window's one place
    holders = [pair.visitor("198.51.100.21", "ab"[i]) for i in range(2)]
    for holder in holders:
        assert holder.get("/line").status_code == 503  # a ticket each
    for _ in range(3):
        for holder in holders:
            assert holder.get("/line").json()["state"] == "line"  # kept alive
        assert pair.visitor("198.51.100.21", "b").get("/line").status_code == 429
    _leave(holders[0])
    assert pair.visitor("198.51.100.21", "b").get("/line").status_code == 503  # a place freed: a ticket


def test_n2_one_draw_per_address_at_an_opening(pair: Pair) -> None:
    """Before a scheduled opening each pre-queue ticket is a draw in the opening's shuffle: one
    address (50 User-Agents, both replicas) gets one draw."""
    answers = [
        pair.visitor("198.51.100.30", "ab"[i % 2], f"agent-{i}").get("/draw").status_code for i in range(50)
    ]
    assert (answers.count(503), answers.count(429)) == (1, 49)
    drawn = pair.visitor("198.51.100.31", "b").get("/draw")
    assert (drawn.status_code, drawn.json()["state"]) == (503, "prequeue")  # another address


def test_n5_a_copied_ticket_gets_no_second_session(pair: Pair) -> None:
    """A used ticket (within `grace`), copied to another client after its session was released and
    its place given to someone else, is no ticket: the copy waits like any newcomer; the cap holds."""
    first = pair.visitor("198.51.100.50")
    assert first.get("/once").status_code == 200  # the one place
    holder = pair.visitor("198.51.100.51", "b")
    assert holder.get("/once").status_code == 503  # a ticket
    ticket = holder.cookies["waitroom_once"]
    _leave(first)
    assert holder.get("/once").status_code == 200  # called and in: the ticket is used
    _leave(holder)  # done: released
    assert pair.visitor("198.51.100.52").get("/once").status_code == 200  # the place, given away
    for i in range(3):
        copy = pair.visitor(f"198.51.100.{60 + i}", "ab"[i % 2])
        copy.cookies.set("waitroom_once", ticket)
        assert copy.get("/once").status_code == 503
    assert pair.active("once") == 1


def test_n5_a_copied_pending_token_gets_no_second_session(pair: Pair) -> None:
    """A pending token (what a visitor gets when the store's answer was lost) naming a session that
    was admitted, then released and its place given away, lets nobody in: not the 3 copies."""
    visitor = pair.visitor("198.51.100.70")
    assert visitor.get("/pend").status_code == 200
    session_id = token_session_id(visitor.cookies["waitroom_pend"])
    assert session_id
    codec = SessionCodec(keys_from_secret(SECRET), 1800)
    pending = codec.issue_pending("pend", session_id, time.time(), 600)
    _leave(visitor)
    assert pair.visitor("198.51.100.71", "b").get("/pend").status_code == 200  # the place, given away
    for i in range(3):
        copy = pair.visitor(f"198.51.100.{80 + i}", "ab"[i % 2])
        copy.cookies.set("waitroom_pend", pending)
        assert copy.get("/pend").status_code == 503
    assert pair.active("pend") == 1


def test_n11_a_released_cookie_stops_on_the_other_replica_within_a_flush(pair: Pair) -> None:
    """A session used on replica B, released through replica A, its place given away, then replayed
    on B: B stops honouring it within one activity flush plus one store call."""
    visitor = pair.visitor("198.51.100.90")
    assert visitor.get("/replay").status_code == 200
    cookie = visitor.cookies["waitroom_replay"]
    on_b = pair.visitor("198.51.100.90", "b")
    on_b.cookies.set("waitroom_replay", cookie)
    assert on_b.get("/replay").status_code == 200  # B noted it...
    time.sleep(FLUSH_EVERY + 0.5)  # ...and flushed it: B will not note it again for 5 s
    _leave(visitor)
    released = time.monotonic()
    assert pair.visitor("198.51.100.91").get("/replay").status_code == 200  # the place, given away
    while on_b.get("/replay").status_code == 200:
        assert time.monotonic() - released < 10, "the released cookie is still honoured"
        time.sleep(0.02)
    honoured = time.monotonic() - released
    print(f"released cookie honoured on the other replica for {honoured:.2f} s")
    assert honoured < FLUSH_EVERY + STORE_TIMEOUT + 1.0
    assert pair.active("replay") == 1
