"""The counter served by real mitmdump processes: alone, behind the wait room, and three replicas
sharing one real Redis."""

from __future__ import annotations

import asyncio
import http.client
import random
from collections import Counter as Tally
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import Mitmdump, RedisServer, Upstream

pytestmark = pytest.mark.e2e

COUNTER = ["addons/counter.py"]


def raw(proxy: Mitmdump, method: str, target: str, body: bytes = b"") -> int:
    """Send the request target exactly as written (httpx would resolve `//a` and `..` itself)."""
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        connection.request(method, target, body=body)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def counter(start_proxy: StartProxy, upstream: Upstream) -> Iterator[Mitmdump]:
    # The upstream is a real server that records what reaches it: the counter must never call it.
    proxy = start_proxy(None, upstream.url, scripts=COUNTER, extra=["--set", "body_size_limit=1m"])
    yield proxy
    assert upstream.seen == [], "the counter contacted the upstream"
    assert "Traceback" not in proxy.log_text()


def test_put_get_head_total_and_text(counter: Mitmdump) -> None:
    c = httpx.Client(base_url=counter.url, timeout=10)
    assert c.get("/").json() == {"total": 0}
    assert c.get("/a/b").json() == {"path": "/a/b", "count": 0}
    first = c.put("/a/b")
    assert (first.status_code, first.json()) == (200, {"path": "/a/b", "count": 1})
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Cache-Control"] == "no-store"
    # The same path however it is written; the body is ignored.
    for spelling in ["/a/b/", "/a/b?x=1", "//a//b", "/%61/b", "/a/./c/../b"]:
        assert raw(counter, "PUT", spelling, b"ignored") == 200
    assert c.get("/a/b").json() == {"path": "/a/b", "count": 6}
    c.put("/other")
    assert c.get("/").json() == {"total": 7}
    text = c.get("/a/b", headers={"Accept": "text/plain"})
    assert (text.text, text.headers["Content-Type"]) == ("6\n", "text/plain; charset=utf-8")
    assert c.put("/other", headers={"Accept": "text/plain"}).text == "2\n"
    assert c.get("/", headers={"Accept": "text/plain"}).text == "8\n"
    head = c.head("/a/b")
    assert (head.status_code, head.content) == (200, b"")
    assert int(head.headers["Content-Length"]) == len(c.get("/a/b").content)
    options = c.options("/a/b")
    assert (options.status_code, options.headers["Allow"]) == (204, "GET, HEAD, PUT, OPTIONS")
    assert c.get("/").json() == {"total": 8}  # reads, HEAD and OPTIONS count nothing


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("POST", "/a", 405, "GET, HEAD, PUT, OPTIONS"),
        ("DELETE", "/a", 405, "GET, HEAD, PUT, OPTIONS"),
        ("PATCH", "/a", 405, "GET, HEAD, PUT, OPTIONS"),
        ("PUT", "/", 405, "GET, HEAD, OPTIONS"),  # `/` is the total: read-only
        ("PUT", "/?x", 405, "GET, HEAD, OPTIONS"),
    ],
)
def test_other_methods_get_405_with_allow(
    counter: Mitmdump, method: str, path: str, status: int, allow: str
) -> None:
    c = httpx.Client(base_url=counter.url, timeout=10)
    answer = c.request(method, path)
    assert (answer.status_code, answer.headers["Allow"]) == (status, allow)
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["status"] == status
    assert c.get("/").json() == {"total": 0}


def test_bad_input_gets_a_clear_4xx_and_counts_nothing(counter: Mitmdump) -> None:
    c = httpx.Client(base_url=counter.url, timeout=10)
    cases = [
        (c.put("/a%zz"), 400, "percent-escape"),
        (c.put("/a%ff"), 400, "UTF-8"),
        (c.put("/a%00"), 400, "control"),
        (c.put("/" + "x" * 2000), 414, "longer than"),
        (c.get("/" + "x" * 20_000), 414, "longer than"),
        (c.put("/big", content=b"x" * (64 * 1024 + 1)), 413, "at most"),  # over counter_max_body
        (c.put("/big", content=iter([b"x" * 50_000, b"x" * 50_000])), 413, "at most"),  # chunked
    ]
    for answer, status, words in cases:
        assert answer.status_code == status, answer.text
        assert words in answer.json()["detail"]
    # Over mitmproxy's body_size_limit: refused by mitmproxy before the body is buffered.
    assert c.put("/big", content=b"x" * (2 * 1024 * 1024)).status_code == 413
    assert c.get("/").json() == {"total": 0}
    assert c.get("/big").json()["count"] == 0
    assert c.put("/big", content=b"x" * 1000).json()["count"] == 1  # the proxy still serves


def test_an_unreachable_counts_store_answers_503_fast(
    start_proxy: StartProxy, redis_server: RedisServer
) -> None:
    proxy = start_proxy(None, scripts=COUNTER, extra=["--set", f"counter_store={redis_server.url}"])
    c = httpx.Client(base_url=proxy.url, timeout=10)
    assert c.put("/a").json()["count"] == 1
    redis_server.stop()
    down = c.put("/a")
    assert (down.status_code, down.headers["Retry-After"]) == (503, "1")
    assert "store is unavailable" in down.json()["detail"]
    assert "Traceback" not in proxy.log_text()
    redis_server.start()
    assert c.put("/a").json()["count"] == 1  # a fresh Redis (no persistence): counting starts again


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("counter_store=postgres://x", "unsupported store URL"),
        ("counter_max_body=lots", "counter_max_body: "),
        ("counter_idempotency_window=soon", "counter_idempotency_window: "),
        ("counter_idempotency_window=0s", "counter_idempotency_window: must be longer than 0s"),
        ("counter_max_paths=0", "counter_max_paths: must be between 1 and 10000000"),
    ],
)
def test_a_bad_option_stops_the_start_with_one_line(start_proxy: StartProxy, option: str, words: str) -> None:
    proxy = start_proxy(None, scripts=COUNTER, extra=["--set", option], wait=False)
    assert proxy.wait_exit(30) != 0
    log = proxy.log_text()
    assert f"counter: {option.split('=')[0]}: " in log
    assert words in log
    assert "Traceback" not in log


async def put_all(url: str, paths: list[str]) -> list[int]:
    """PUT every path, 20 at a time, and return the statuses."""
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        gate = asyncio.Semaphore(20)

        async def one(path: str) -> int:
            async with gate:
                return (await c.put(path)).status_code

        return await asyncio.gather(*(one(p) for p in paths))


@pytest.mark.exact
def test_three_replicas_on_one_redis_count_exactly(
    start_proxy: StartProxy, redis_server: RedisServer
) -> None:
    replicas = [
        start_proxy(None, scripts=COUNTER, extra=["--set", f"counter_store={redis_server.url}"])
        for _ in range(3)
    ]
    rnd = random.Random(7)
    plans = [[f"/p{rnd.randrange(50)}" for _ in range(1000)] for _ in replicas]

    async def everyone() -> list[list[int]]:
        return await asyncio.gather(*(put_all(p.url, plan) for p, plan in zip(replicas, plans, strict=True)))

    statuses = asyncio.run(everyone())
    # The counter's contract: 200 counted once, 503 nothing counted, 504 (its store's answer was
    # not read in time, as on a saturated machine) maybe counted. Every replica reads the same counts.
    answers = [
        (path, status)
        for plan, batch in zip(plans, statuses, strict=True)
        for path, status in zip(plan, batch, strict=True)
    ]
    assert {s for _, s in answers} <= {200, 503, 504}
    counted = Tally(path for path, s in answers if s == 200)
    maybe = Tally(path for path, s in answers if s == 504)
    assert counted.total() >= 1000, counted.total()  # the counter mostly answered: it measured something
    for replica in replicas:
        c = httpx.Client(base_url=replica.url, timeout=10)
        total = c.get("/").json()["total"]
        assert counted.total() <= total <= counted.total() + maybe.total()
        for path in counted | maybe:
            assert counted[path] <= c.get(path).json()["count"] <= counted[path] + maybe[path], path


def test_the_counter_shares_the_wait_rooms_store_when_chained(
    start_proxy: StartProxy, redis_server: RedisServer
) -> None:
    """Behind the wait room in one process, with no counter_store: the counts go where the room's
    config says (here Redis), so two such replicas count together."""
    config = f"""
store: {{url: "{redis_server.url}", key_prefix: chained}}
rooms:
  - {{name: all, match: {{path_prefix: /}}, new_sessions: 100, window: 60s}}
"""
    scripts = ["addons/waitroom.py", "addons/counter.py"]
    env = {"WAITROOM_SECRET": SECRET}
    a, b = (start_proxy(config, scripts=scripts, env=env) for _ in range(2))
    assert httpx.put(f"{a.url}/x", timeout=10).json()["count"] == 1
    assert httpx.put(f"{b.url}/x", timeout=10).json()["count"] == 2
    assert httpx.get(f"{a.url}/", timeout=10).json() == {"total": 2}


def test_idempotency_key_counts_once_and_refuses_bad_keys(counter: Mitmdump) -> None:
    c = httpx.Client(base_url=counter.url, timeout=10)
    key = {"Idempotency-Key": '"8e03978e-40d5-43e8-bc93-6894a57f9324"'}
    first = c.put("/k", headers=key)
    assert (first.status_code, first.json()["count"]) == (200, 1)
    assert "Idempotent-Replayed" not in first.headers
    again = c.put("/k/", headers=key)  # the same path, however written
    assert (again.status_code, again.json(), again.headers["Idempotent-Replayed"]) == (
        200,
        {"path": "/k", "count": 1},
        "true",
    )
    assert c.put("/k", headers={"Idempotency-Key": "bare-token-1"}).json()["count"] == 2
    other = c.put("/elsewhere", headers=key)
    assert other.status_code == 422
    assert "another path" in other.json()["detail"]
    for bad in ['""', '"' + "x" * 256 + '"', "two words", '"unterminated']:
        refused = c.put("/k", headers={"Idempotency-Key": bad})
        assert refused.status_code == 400, bad
        assert refused.headers["Content-Type"] == "application/problem+json"
    assert c.get("/").json() == {"total": 2}
