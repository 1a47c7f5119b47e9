"""Capacity, release and scheduled events end to end: real mitmdump replicas on one real Redis."""

from __future__ import annotations

import asyncio
import base64
import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import RedisServer, Upstream, free_port, wait_for
from waitroom.config.schema import parse_config
from waitroom.rooms.activity import active_ttl
from waitroom.rooms.line import event_seed
from waitroom.rooms.sessions import SessionCodec, keys_from_secret
from waitroom.store.memory_rooms import prequeue_rank

pytestmark = pytest.mark.e2e
ENV = {"WAITROOM_SECRET": SECRET}
JSON = {"Accept": "application/json"}


def config(redis_url: str, room: str, ttl: str = "30m") -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 1s}}
session: {{ttl: {ttl}}}
rooms:
  - {{name: shop, match: {{path_prefix: /}}, {room}}}
"""


def cleared(response: httpx.Response) -> bool:
    return any(
        h.startswith("waitroom_shop=;") and "Max-Age=0" in h for h in response.headers.get_list("set-cookie")
    )


def kept_cookie(cookie: str | None, response: httpx.Response) -> str | None:
    """The room's cookie a client holds after `response`: the one it set, none if it cleared it."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("waitroom_shop="):
            return None if "Max-Age=0" in header else header.split(";")[0].partition("=")[2]
    return cookie


def test_the_service_releases_a_place_and_the_command_never_reaches_the_client(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    proxies = [
        start_proxy(
            config(redis_server.url, "new_sessions: 100, max_active: 1, retry_after: 1s"),
            upstream.url,
            env=ENV,
        )
        for _ in range(2)
    ]
    inside = httpx.Client(base_url=proxies[0].url, timeout=10)
    assert inside.get("/shop").status_code == 200
    session = inside.cookies["waitroom_shop"]
    waiting = httpx.Client(base_url=proxies[1].url, timeout=10)
    assert waiting.get("/shop").status_code == 503  # the rate allows, the cap does not

    done = inside.get("/release/checkout-complete")
    assert done.status_code == 200
    assert "waitroom-command" not in done.headers  # taken off, whatever it said
    assert cleared(done)
    assert upstream.paths()[-1] == "/release/checkout-complete"
    # The place is free at once, for a visitor on the other replica.
    wait_for(lambda: waiting.get("/shop").status_code == 200, 5, "the freed place")
    # The released cookie, replayed, is no session any more: on the replica that released it at
    # once, and on the other with its next flush of activity (a second).
    replay = {"Cookie": f"waitroom_shop={session}"}
    assert httpx.get(f"{proxies[0].url}/shop", headers=replay, timeout=10).status_code == 503
    wait_for(
        lambda: httpx.get(f"{proxies[1].url}/shop", headers=replay, timeout=10).status_code == 503,
        10,
        "the other replica to learn of the release",
    )


def test_a_command_from_the_service_is_stripped_even_without_a_room(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = start_proxy(
        config("memory://", "match: {path_prefix: /shop}, new_sessions: 5").replace(
            "match: {path_prefix: /}, ", ""
        ),
        upstream.url,
        env=ENV,
    )
    answer = httpx.get(f"{proxy.url}/release/elsewhere", timeout=10)
    assert answer.status_code == 200
    assert "waitroom-command" not in answer.headers
    assert "set-cookie" not in answer.headers


def test_leaving_the_line_through_the_leave_path(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    room = "queue: fifo, new_sessions: 1, window: 60s, retry_after: 1s"
    proxy = start_proxy(config(redis_server.url, room), upstream.url, env=ENV)
    assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 200
    first = httpx.Client(base_url=proxy.url, timeout=10)
    second = httpx.Client(base_url=proxy.url, timeout=10)
    assert first.get("/", headers=JSON).json()["position"] == 0
    assert second.get("/", headers=JSON).json()["position"] == 1

    assert first.get("/.waitroom/leave").status_code == 405
    left = first.post("/.waitroom/leave")
    assert (left.status_code, left.json()) == (200, {"status": "left", "rooms": ["shop"]})
    assert cleared(left)
    assert second.get("/", headers=JSON).json()["position"] == 0  # moved up at once
    nothing = httpx.post(f"{proxy.url}/.waitroom/leave", timeout=10)
    assert nothing.json() == {"status": "left", "rooms": []}
    assert not any(p.startswith("/.waitroom") for p in upstream.paths())


@pytest.mark.timeout(200)
@pytest.mark.exact
def test_four_replicas_never_exceed_the_cap(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    """40 visitors for 5 places inside: they come in, browse, and leave by a release or by going
    idle (session.ttl 2s, counted 8 s longer: active.SLACK); the active count in Redis, sampled
    throughout, never passes the cap."""
    cap = 5
    text = config(redis_server.url, f"new_sessions: 1000, max_active: {cap}, retry_after: 1s", ttl="2s")
    proxies = [start_proxy(text, upstream.url, env=ENV) for _ in range(4)]
    redis = redis_server.client()
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seconds, micros = redis.time()
            now = seconds * 1_000_000 + micros
            counted = now - round(active_ttl(2.0) * 1_000_000)  # the store's own bound (active.SLACK)
            samples.append(int(redis.zcount("waitroom:{room:shop}:active", f"({counted}", "+inf")))
            stop.wait(0.02)

    async def visitor(i: int, rng: random.Random) -> None:
        """Waits for a place, browses, then leaves: by a release (even visitors) or by going idle.

        It sends its cookie by hand: httpx's jar (http.cookiejar) counts Max-Age from the current
        second truncated, so it drops a 2 s cookie 1.0-2.0 s after it came, and the proxy would be
        judged on a cookie the client never sent."""
        cookie: str | None = None

        async def get(path: str) -> httpx.Response:
            nonlocal cookie
            headers = {"Cookie": f"waitroom_shop={cookie}"} if cookie else {}
            response = await client.get(f"{rng.choice(proxies).url}{path}", headers=headers)
            client.cookies.clear()
            cookie = kept_cookie(cookie, response)
            return response

        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(2000):  # as a page polls, only faster; bounded
                asked = time.monotonic()
                if (await get("/page")).status_code == 200:
                    break
                await asyncio.sleep(rng.uniform(0.05, 0.15))
            cookie_from = asked  # the session cookie was issued (or renewed) after this
            for _ in range(rng.randint(1, 4)):  # browse
                asked = time.monotonic()
                response = await get("/page")
                if any(h.startswith("waitroom_shop=") for h in response.headers.get_list("set-cookie")):
                    cookie_from = asked
                # A session is honoured for session.ttl (2 s) from its cookie; a busy machine may
                # space a visitor's requests further apart than that: it then waits again.
                assert response.status_code == 200 or time.monotonic() - cookie_from > 2.0, (
                    i,
                    response,
                    dict(response.headers),
                    response.text[:400],
                )
                if response.status_code != 200:
                    return
                await asyncio.sleep(rng.uniform(0.05, 0.2))
            if i % 4:  # three in four are released by the service; the others just stop
                await get("/release/done")

    async def crowd() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(visitor(i, random.Random(i)) for i in range(40))), timeout=150
        )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(crowd())
    finally:
        stop.set()
        sampler.join(5)
    assert len(samples) > 100
    assert max(samples) <= cap, max(samples)
    assert max(samples) == cap  # the cap was reached: the test measured something


def test_a_scheduled_room_before_during_and_after(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    admin = free_port()

    def text(opens_at: datetime) -> str:
        closes = (opens_at + timedelta(seconds=300)).isoformat()
        room = "queue: fifo, new_sessions: 5, window: 10s, retry_after: 1s"
        room += f", opens_at: '{opens_at.isoformat()}', closes_at: '{closes}'"
        return config(redis_server.url, room) + f"admin: {{host: 127.0.0.1, port: {admin}}}\n"

    # Started with the opening an hour away, then moved to 8 s from now: however long the start
    # takes on a busy machine, the first visitor comes before the opening.
    env = {**ENV, "WAITROOM_ADMIN_TOKEN": "t" * 32}
    proxy = start_proxy(text(datetime.now(UTC) + timedelta(hours=1)), upstream.url, env=env)
    assert proxy.config_path is not None
    proxy.config_path.write_text(text(datetime.now(UTC) + timedelta(seconds=8)))
    wait_for(lambda: "waitroom: reloaded" in proxy.log_text(), 10, "the new opening time")
    early = httpx.Client(base_url=proxy.url, timeout=10)
    answer = early.get("/", headers=JSON)
    body = answer.json()
    assert answer.status_code == 503
    assert body["prequeue"] is True
    assert 1 <= body["opens_in"] <= 8
    assert "position" not in body
    assert "eta_seconds" not in body
    page = httpx.get(f"{proxy.url}/", headers={"Accept": "text/html"}, timeout=10)
    assert '"opens_in":' in page.text
    # At the opening the pre-queue goes in.
    wait_for(lambda: early.get("/", headers=JSON).status_code == 200, 15, "the opening")
    assert not upstream.paths() or upstream.paths()[-1] == "/"

    # An operator closes the event early: new visitors get the closed answer, sessions keep going.
    base = f"http://127.0.0.1:{admin}"
    closed = httpx.post(
        f"{base}/admin/rooms/shop/close", headers={"Authorization": "Bearer " + "t" * 32}, timeout=10
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "closed"
    wait_for(lambda: httpx.get(f"{proxy.url}/", timeout=10).status_code == 410, 5, "the close to be seen")
    late = httpx.get(f"{proxy.url}/", headers=JSON, timeout=10)
    assert late.json() == {"status": "closed", "room": "shop", "title": "shop"}
    assert "has closed" in httpx.get(f"{proxy.url}/", timeout=10).text
    assert early.get("/after").status_code == 200


def test_after_close_pass_lets_everyone_through(start_proxy: StartProxy, upstream: Upstream) -> None:
    closes = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    room = f"new_sessions: 1, closes_at: '{closes}', after_close: pass"
    proxy = start_proxy(config("memory://", room), upstream.url, env=ENV)
    assert [httpx.get(f"{proxy.url}/x", timeout=10).status_code for _ in range(3)] == [200, 200, 200]


def test_tickets_per_ip_refuses_a_flood_of_tickets(start_proxy: StartProxy, upstream: Upstream) -> None:
    room = "queue: fifo, new_sessions: 1, window: 60s, tickets_per_ip: 3"
    proxy = start_proxy(config("memory://", room), upstream.url, env=ENV)
    assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 200
    statuses = [httpx.get(f"{proxy.url}/", headers=JSON, timeout=10) for _ in range(5)]
    assert [s.status_code for s in statuses] == [503, 503, 503, 429, 429]
    refused = statuses[-1]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["status"] == 429
    assert "set-cookie" not in refused.headers


def _sid(cookie: str) -> str:
    payload = cookie.split(".", 1)[0]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")[2]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, index in enumerate(order):
            out[index] = float(rank)
        return out

    return statistics.correlation(ranks(a), ranks(b))


@pytest.mark.timeout(240)
@pytest.mark.exact
def test_a_scheduled_opening_shuffles_the_pre_queue_the_same_on_every_replica(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    """200 visitors arrive before the opening, on 4 replicas; at the opening they get in in an
    order unrelated to their arrival, the one the event's seed draws (so every replica drew alike),
    and 20 who come after the opening get in after all of them."""

    def text(opens_at: datetime) -> str:
        room = "queue: fifo, new_sessions: 25, window: 2s, retry_after: 1s"
        return config(redis_server.url, f"{room}, opens_at: '{opens_at.isoformat()}'")

    # The replicas start with the opening far away, then are moved to one 20 s from now: however
    # long four starts take on a busy machine, the visitors have their time before it.
    later = datetime.now(UTC) + timedelta(hours=1)
    proxies = [start_proxy(text(later), upstream.url, env=ENV) for _ in range(4)]
    opens_at = datetime.now(UTC) + timedelta(seconds=20)
    for proxy in proxies:
        assert proxy.config_path is not None
        proxy.config_path.write_text(text(opens_at))
    for proxy in proxies:
        wait_for(lambda p=proxy: "waitroom: reloaded" in p.log_text(), 10, "the new opening time")
    event = {"name": "shop", "match": {"path_prefix": "/"}, "queue": "fifo", "new_sessions": 25}
    room_config = parse_config({"rooms": [{**event, "opens_at": opens_at}]}).rooms[0]
    seed = event_seed(SessionCodec(keys_from_secret(SECRET), 60), room_config)

    async def visit(start: float, rng: random.Random) -> tuple[float, float, str, bool]:
        """(arrived, asked when let in, session id, whether its first answer was a pre-queue draw)"""
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        arrived = time.monotonic()
        headers, sid, drew = dict(JSON), "", None
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(200):  # bounded: the whole event takes well under a minute
                asked = time.monotonic()
                response = await client.get(f"{rng.choice(proxies).url}/", headers=headers)
                if response.status_code == 200:
                    return arrived, asked, sid, bool(drew)
                assert response.status_code == 503, response.text
                drew = response.json().get("state") == "prequeue" if drew is None else drew
                sid = _sid(client.cookies["waitroom_shop"])
                headers = {**JSON, "Waitroom-Poll": "1"}
                await asyncio.sleep(rng.uniform(0.7, 1.3))
        raise AssertionError("never admitted")

    async def everyone() -> list[tuple[float, float, str, bool]]:
        begin = time.monotonic()
        until_opening = opens_at.timestamp() - time.time()
        starts = [begin + 0.5 + (until_opening - 3) * i / 200 for i in range(200)]
        starts += [begin + until_opening + 1 + 0.1 * i for i in range(20)]
        runs = [visit(s, random.Random(i)) for i, s in enumerate(starts)]
        return await asyncio.wait_for(asyncio.gather(*runs), timeout=150)

    results = asyncio.run(everyone())
    # The draw covers those whose first answer came before the opening (on a busy machine a late
    # first answer makes a visitor an arrival after the opening, in arrival order, as it should).
    early = [(arrived, asked, sid) for arrived, asked, sid, drew in results[:200] if drew]
    late = results[200:]
    assert len(early) >= 100, len(early)  # the draw had a crowd to shuffle
    admitted_rank = [asked for _, asked, _ in early]
    arrival_rank = [arrived for arrived, _, _ in early]
    assert abs(spearman(arrival_rank, admitted_rank)) < 0.25
    drawn = [float(prequeue_rank(seed, sid)) for _, _, sid in early]
    assert spearman(drawn, admitted_rank) > 0.95
    assert not any(drew for *_, drew in late)
    assert min(asked for _, asked, _, _ in late) > max(asked for _, asked, _ in early) - 1.5
