"""The classic HAProxy set-up, through a real mitmdump and a real Redis: a global and a per-user rule."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import RedisServer, Upstream

pytestmark = pytest.mark.e2e


def config(redis_url: str, per_user_action: str = "reject") -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 1s}}
rate_limits:
  - {{name: global, key: global, limit: 10, per: 1s, algorithm: sliding_log}}
  - {{name: per-user, key: "header:X-User", fallback: ip, limit: 3, per: 1s, algorithm: sliding_log,
      action: "{per_user_action}"}}
"""


def hammer(
    url: str, users: list[str], per_user: int, seconds: float
) -> list[tuple[str, float, httpx.Response]]:
    """Each user sends `per_user` requests spread over `seconds`; bounded in count and time."""

    def one(user: str) -> list[tuple[str, float, httpx.Response]]:
        out = []
        with httpx.Client(timeout=5) as c:
            start = time.monotonic()
            for i in range(per_user):
                target = start + i * seconds / per_user
                if (delay := target - time.monotonic()) > 0:
                    time.sleep(delay)  # pacing the load, not synchronisation
                out.append((user, time.monotonic(), c.get(f"{url}/api/x", headers={"X-User": user})))
        return out

    with ThreadPoolExecutor(len(users)) as pool:
        return [r for rs in pool.map(one, users) for r in rs]


def test_global_and_per_user_limits_hold(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    proxy = start_proxy(config(redis_server.url), upstream.url, env={"WAITROOM_SECRET": SECRET})
    results = hammer(proxy.url, ["alice", "bob", "carol"], per_user=60, seconds=3.0)
    assert {r.status_code for _, _, r in results} <= {200, 429}
    # Server side: what reached the upstream, in any 1-second sliding interval.
    arrivals = sorted((s.at, s.headers.get("X-User", "")) for s in upstream.seen)
    for i, (t, _) in enumerate(arrivals):
        window = [u for at, u in arrivals[i:] if at < t + 0.95]  # 50 ms slack for proxy→upstream jitter
        assert len(window) <= 10
        assert max(Counter(window).values()) <= 3
    assert len(arrivals) >= 10  # the limits admit, not only refuse
    refused = [r for _, _, r in results if r.status_code == 429]
    assert refused
    sample = refused[0]
    assert int(sample.headers["Retry-After"]) >= 1
    assert sample.headers["RateLimit-Policy"] in ('"global";q=10;w=1', '"per-user";q=3;w=1')
    assert sample.headers["RateLimit"].endswith("r=0;t=1")
    assert sample.headers["Content-Type"] == "application/problem+json"
    assert sample.json()["status"] == 429
    allowed = next(r for _, _, r in results if r.status_code == 200)
    assert "RateLimit" in allowed.headers


def test_heavy_user_goes_to_the_slow_backend(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    slow = Upstream(name="slow")
    try:
        proxy = start_proxy(
            config(redis_server.url, f"upstream:{slow.url}"), upstream.url, env={"WAITROOM_SECRET": SECRET}
        )
        with httpx.Client(timeout=5) as c:
            bodies = [c.get(f"{proxy.url}/api/x", headers={"X-User": "heavy"}).text for _ in range(8)]
        assert bodies[:3] == ["upstream GET /api/x\n"] * 3
        assert set(bodies[3:]) == {"slow GET /api/x\n"}
        assert len(slow.seen) == 5
    finally:
        slow.close()


def test_spoofed_forwarded_for_does_not_change_the_bucket(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = start_proxy(
        "rate_limits: [{name: per-ip, key: ip, limit: 2, per: 10s, algorithm: sliding_log}]\n", upstream.url
    )
    statuses = [
        httpx.get(f"{proxy.url}/x", headers={"X-Forwarded-For": f"198.51.100.{i}"}, timeout=5).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


def test_shadow_rule_counts_but_never_refuses(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy(
        "rate_limits: [{name: trial, key: global, limit: 1, per: 10s, shadow: true}]\n", upstream.url
    )
    assert [httpx.get(f"{proxy.url}/x", timeout=5).status_code for _ in range(3)] == [200, 200, 200]
    assert "shadow rate limit trial would refuse /x" in proxy.log_text()
