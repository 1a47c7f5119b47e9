"""Issue 27, N8 and N10, end to end on both entry points: tables a client can fill stay bounded,
and a full one is never a shared fate. The store-level cases are in test_embedded_store.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SECRET
from tests.security.servers import Nginx
from tests.support import Mitmdump, RedisServer

pytestmark = pytest.mark.e2e

RATE_CONFIG = """
store: {max_keys: 1000}
rate_limits:
  - {name: per-key, match: {path_prefix: /api}, key: "header:X-Api-Key", limit: 3, per: 10m}
"""


@pytest.fixture(scope="module")
def limited(entry_point: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    work = tmp_path_factory.mktemp(f"rates-{entry_point}")
    upstream = Nginx(work)  # fast on keep-alive: 1,200 requests take a second or two
    (work / "config.yaml").write_text(RATE_CONFIG)
    started = Mitmdump(
        upstream.url, work, work / "config.yaml", env={"WAITROOM_SECRET": SECRET}, entry=entry_point
    )
    try:
        yield started.wait_ready()
    finally:
        started.stop()
        upstream.stop()


def test_a_full_rate_table_never_makes_strangers_share_a_quota(limited: Mitmdump) -> None:
    """A table of 1,000 keys, a victim at its limit, 1,100 fresh keys: 4 new clients then get their
    3 requests each. Today 3 of the 4 were refused: every key past the table shared one count."""
    with httpx.Client(base_url=limited.url, timeout=10) as client:

        def status(key: str) -> int:
            return client.get("/api/x", headers={"X-Api-Key": key}).status_code

        assert [status("victim") for _ in range(4)] == [200, 200, 200, 429]
        assert _pipelined(limited, [f"flood-{i}" for i in range(1_100)]) == [200] * 1_100
        assert [[status(f"new-{c}") for _ in range(3)] for c in range(4)] == [[200] * 3] * 4
        assert status("victim") == 429
    assert "Traceback" not in limited.log_text()


def _pipelined(proxy: Mitmdump, keys: list[str]) -> list[int]:
    """One request per key on one connection, sent at once (HTTP/1.1 pipelining): the proxy answers
    them in order, and the flood costs no round trip per request."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as conn:
        conn.sendall(
            b"".join(b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Api-Key: %s\r\n\r\n" % k.encode() for k in keys)
        )
        reader = conn.makefile("rb")
        statuses = []
        for _ in keys:
            statuses.append(int(reader.readline().split()[1]))
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
        return statuses


@pytest.fixture(scope="module")
def redis_for_counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("counter-redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def counter(
    request: pytest.FixtureRequest,
    entry_point: str,
    tmp_path_factory: pytest.TempPathFactory,
    redis_for_counter: RedisServer,
) -> Iterator[Mitmdump]:
    work = tmp_path_factory.mktemp(f"counter-{entry_point}-{request.param}")
    store = []
    if request.param == "redis":
        redis_for_counter.client().flushall()  # our own server: each entry point starts from no paths
        store = ["--set", f"counter_store={redis_for_counter.url}"]
    started = Mitmdump(
        "http://127.0.0.1:9",
        work,
        None,
        scripts=["addons/counter.py"],
        extra=["--set", "counter_max_paths=100", *store],
        entry=entry_point,
    )
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def test_counter_paths_are_bounded(counter: Mitmdump) -> None:
    """Today every new path was kept forever (+105 MB per 100k paths)."""
    with httpx.Client(base_url=counter.url, timeout=10) as client:
        answers = [client.put(f"/p{i}") for i in range(150)]
        assert [a.status_code for a in answers] == [200] * 100 + [507] * 50
        refused = answers[-1]
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert "100 paths" in refused.json()["detail"]
        assert client.put("/p0").json() == {"path": "/p0", "count": 2}  # an old path still counts
        assert client.get("/p120").json() == {"path": "/p120", "count": 0}
        assert client.get("/").json() == {"total": 101}  # the sum of the paths
