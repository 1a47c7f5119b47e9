"""An honest wait, end to end on `waitroom serve` with a real redis-server: a line held by a full
`max_active` gives no figure (page, JSON, metric and `waitroom status` say "unknown") until
two sessions have left, then one from the measured departures; and a Redis that comes back empty is
noticed, logged once and shown by /readyz and `waitroom status`. On `waitroom serve` only
(tests/conftest.py SERVE_ONLY)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import REPO, Mitmdump, RedisServer, Upstream, free_port, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "honest-wait-admin-token-0123456789"
ENV = {"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": TOKEN}
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html", "Accept-Language": "en"}


def serve(start_proxy: StartProxy, redis: RedisServer, upstream: Upstream, room: str) -> tuple[Mitmdump, str]:
    """One replica with its admin port; (the proxy, the admin port's URL)."""
    admin = free_port()
    config = (
        f"store: {{url: '{redis.url}', timeout: 1s}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin}}}\n"
        f"rooms:\n  - {{name: shop, match: {{path_prefix: /}}, {room}}}\n"
    )
    proxy = start_proxy(config, upstream.url, env=ENV)
    url = f"http://127.0.0.1:{admin}"
    wait_for(lambda: _answers(url + "/healthz"), 30, "the admin port")
    return proxy, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def status(admin: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("waitroom")), "status", "--url", admin],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "WAITROOM_ADMIN_TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def eta_metric(admin: str) -> float:
    metrics = httpx.get(admin + "/metrics", timeout=10).text
    found = re.search(r'^waitroom_queue_eta_seconds\{room="shop"\} (\S+)$', metrics, re.M)
    assert found is not None, metrics
    return float(found.group(1))


def test_a_full_cap_says_it_cannot_estimate_until_sessions_leave(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    proxy, admin = serve(
        start_proxy,
        redis_server,
        upstream,
        "queue: fifo, new_sessions: 100, window: 10s, max_active: 2, retry_after: 1s",
    )
    inside = [httpx.Client(base_url=proxy.url, timeout=10) for _ in range(2)]
    for visitor in inside:
        assert visitor.get("/").status_code == 200
    waiting = [httpx.Client(base_url=proxy.url, timeout=10) for _ in range(3)]
    for visitor in waiting:
        answer = visitor.get("/", headers=JSON)
        assert answer.status_code == 503
        body = answer.json()
        # The rate has room for 100 a window; the cap has none, and nobody has left yet.
        assert (body["state"], body["eta_seconds"], body["eta_basis"]) == ("capacity", None, "capacity")
    page = waiting[1].get("/", headers=HTML).text
    assert "We can&#x27;t estimate your wait yet" in page
    assert "less than a minute" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert eta_metric(admin) == -1  # no figure: -1, which no real wait has
    assert "3 waiting, eta unknown" in status(admin)

    # A visitor inside is done: the service says so, and the place frees up.
    assert inside[0].get("/release/checkout-complete").status_code == 200
    wait_for(lambda: waiting[0].get("/", headers=JSON).status_code == 200, 10, "the freed place")
    # Full again, and one departure is no pace (rooms/estimate.py MIN_DEPARTURES): still no figure.
    body = waiting[1].get("/", headers=JSON).json()
    assert (body["state"], body["eta_seconds"]) == ("capacity", None)
    assert inside[1].get("/release/checkout-complete").status_code == 200
    wait_for(lambda: waiting[1].get("/", headers=JSON).status_code == 200, 10, "the second freed place")
    # Full again, but the store measured two departures: the visitor still waiting gets a number.
    body = waiting[2].get("/", headers=JSON).json()
    assert body["state"] == "capacity"
    assert isinstance(body["eta_seconds"], int)
    assert 1 <= body["eta_seconds"] <= 60  # one place, at two departures in the last seconds
    page = waiting[2].get("/", headers=HTML).text
    assert "We can&#x27;t estimate" not in page
    assert "Your wait:" in page
    assert eta_metric(admin) >= 1
    assert re.search(r"1 waiting, eta \d+s", status(admin))


def test_a_redis_that_came_back_empty_is_noticed_once(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    proxy, admin = serve(start_proxy, redis_server, upstream, "new_sessions: 100, window: 10s, max_active: 5")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    changed = httpx.patch(admin + "/admin/rooms/shop", json={"new_sessions": 7}, headers=auth, timeout=10)
    assert changed.status_code == 200, changed.text
    assert httpx.get(proxy.url + "/", timeout=10).status_code == 200
    ready = httpx.get(admin + "/readyz", timeout=10).json()
    assert "store_reset_at" not in ready
    wait_for(lambda: "sha256" in proxy.log_text(), 10, "the startup line")

    redis_server.stop()  # no persistence: it comes back with nothing
    redis_server.start()
    said = "waitroom: Redis came back empty: 1 override lost, active counts reset"
    wait_for(lambda: said in proxy.log_text(), 30, "the replica to notice")
    ready = httpx.get(admin + "/readyz", timeout=10).json()
    assert ready["store_reset_at"]
    assert "STORE CAME BACK EMPTY at" in status(admin)
    # The override is gone (the room is back to its file's numbers), and it is said once.
    room = httpx.get(admin + "/admin/rooms/shop", headers=auth, timeout=10).json()
    assert room["new_sessions"] == 100
    assert httpx.get(proxy.url + "/", timeout=10).status_code == 200
    time.sleep(3)  # three more polls of the overrides and the epoch
    assert proxy.log_text().count("came back empty") == 1
