"""Shadow rooms end to end (`waitroom serve` only): a live room and a shadow room of the same name,
on two replicas sharing one real Redis, fed the same visitors. The shadow forwards everyone and
sets nothing, and reports what the live room did; switched off (reload, admin API) it is live at
once, from its own keys."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SECRET, StartProxy
from tests.support import Mitmdump, RedisServer, Upstream, free_port, wait_for

pytestmark = pytest.mark.e2e
TOKEN = "shadow-admin-token-0123456789"
ENV = {"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": TOKEN}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Accept": "application/json"}
VISITS = ["v1", "v2", "v3", "v1", "v4", "v2", "v3", "v5", "v4", "v1"]
"""Who asks, in order: v1 and v2 get the two places, v3, v4 and v5 wait in line."""


def config(redis_url: str, shadow: bool) -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 1s}}
client_ip: {{trusted_proxies: 1}}
decision_log: {{format: json, sample: 1}}
rooms:
  - name: shop
    match: {{path_prefix: /}}
    queue: fifo
    new_sessions: 2
    window: 10m
    retry_after: 1s
    shadow: {"true" if shadow else "false"}
"""


class Replica:
    def __init__(self, proxy: Mitmdump, admin: int) -> None:
        self.proxy = proxy
        self.admin = f"http://127.0.0.1:{admin}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.admin}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def by_outcome(self, name: str) -> dict[str, float]:
        """A counter of room `shop`, summed by outcome."""
        found: dict[str, float] = {}
        for (metric, labels), value in self.metrics().items():
            named = dict(labels)
            if metric == name and named.get("room") == "shop":
                found[named["outcome"]] = found.get(named["outcome"], 0) + value
        return found

    def gauge(self, name: str) -> float | None:
        return self.metrics().get((name, (("room", "shop"),)))


@pytest.fixture
def replicas(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> tuple[Replica, Replica]:
    """The live room's replica and the shadow's (tests/e2e runs on `waitroom serve`)."""
    started = []
    for shadow in (False, True):
        admin = free_port()
        extra = ["--set", f"waitroom_admin_port={admin}", "--set", "waitroom_admin_host=127.0.0.1"]
        proxy = start_proxy(config(redis_server.url, shadow), upstream.url, env=ENV, extra=extra)
        assert proxy.entry == "serve"
        wait_for(functools.partial(_up, admin), 10, "the admin port")
        started.append(Replica(proxy, admin))
    return started[0], started[1]


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def visitor(base: str, name: str) -> httpx.Client:
    """A JSON client behind the trusted hop, at its own address with its own browser."""
    number = name.removeprefix("v")
    headers = {**JSON, "X-Forwarded-For": f"198.51.100.{number}", "User-Agent": f"browser/{number}"}
    return httpx.Client(base_url=base, headers=headers, timeout=10)


def reload(replica: Replica, redis_url: str, shadow: bool) -> None:
    path = replica.proxy.config_path
    assert path is not None
    reloads = replica.proxy.log_text().count("waitroom: reloaded")
    path.write_text(config(redis_url, shadow) + f"# shadow {shadow}\n")
    wait_for(lambda: replica.proxy.log_text().count("waitroom: reloaded") > reloads, 10, "waitroom: reloaded")


@pytest.mark.timeout(120)
def test_a_shadow_room_forwards_everyone_and_reports_what_the_live_room_did(
    replicas: tuple[Replica, Replica], upstream: Upstream, redis_server: RedisServer
) -> None:
    live, shadow = replicas
    browsers = {name: visitor(live.proxy.url, name) for name in set(VISITS)}
    live_statuses, shadow_statuses = [], []
    for n, name in enumerate(VISITS):
        live_statuses.append(browsers[name].get(f"/live/{n}").status_code)
        seen = len(upstream.paths())
        with visitor(shadow.proxy.url, name) as plain:  # no cookie ever: none is set to keep
            answer = plain.get(f"/shadowed/{n}")
        shadow_statuses.append(answer.status_code)
        assert answer.status_code == 200, answer.text
        assert upstream.paths()[seen:] == [f"/shadowed/{n}"]  # forwarded, as it was sent
        assert "set-cookie" not in answer.headers
        assert "waitroom-status" not in answer.headers
    assert live_statuses == [200, 200, 503, 200, 503, 200, 503, 503, 503, 200]

    # The shadow counted what the live room did, request for request.
    live_counts = live.by_outcome("waitroom_room_requests_total")
    assert live_counts == {"admitted": 2, "session": 3, "waiting": 5}
    assert shadow.by_outcome("waitroom_shadow_requests_total") == live_counts
    woulds: dict[str, float] = {}
    for (metric, labels), value in shadow.metrics().items():
        if metric == "waitroom_shadow_requests_total":
            woulds[dict(labels)["would"]] = woulds.get(dict(labels)["would"], 0) + value
    assert woulds == {"would_admit": 5, "would_wait": 5}  # admitted and sessions, the waits
    # Its line and window are its own (one Redis, two key spaces): the same figures, not twice them.
    assert live.gauge("waitroom_queue_length") == shadow.gauge("waitroom_shadow_queue_length") == 3
    assert live.gauge("waitroom_room_window_admissions") == 2
    assert shadow.gauge("waitroom_shadow_window_admissions") == 2
    live_eta = live.gauge("waitroom_queue_eta_seconds")
    shadow_eta = shadow.gauge("waitroom_shadow_eta_seconds")
    assert live_eta is not None
    assert shadow_eta is not None
    assert abs(live_eta - shadow_eta) <= 2  # the same line; its admissions a few ms apart
    assert shadow.gauge("waitroom_shadow_room") == 1
    assert live.gauge("waitroom_shadow_room") == 0
    keys = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "--scan", "--pattern", "*room:shadow:shop*"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.split()
    assert any(k.endswith("{room:shadow:shop}:line") for k in keys)

    # The decision log says what the room would have done.
    logged = [
        json.loads(line)
        for line in shadow.proxy.log_text().splitlines()
        if line.startswith('{"event":"waitroom_decision"')
    ]
    assert [(e["outcome"], e["would"]) for e in logged][:3] == [
        ("shadow", "admitted"),
        ("shadow", "admitted"),
        ("shadow", "waiting"),
    ]

    # `waitroom status` shows it as a shadow, with the line it would have.
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("waitroom")), "--url", shadow.admin, "status"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "WAITROOM_ADMIN_TOKEN": TOKEN},
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert "shadow normal" in cli.stdout
    assert "3 waiting, eta" in cli.stdout

    # Switched off by a reload: live at once, from the live room's keys (v1, admitted by the
    # shadow, is a newcomer there, behind the live line of three).
    reload(shadow, redis_server.url, shadow=False)
    with visitor(shadow.proxy.url, "v1") as v1:
        now_live = v1.get("/after-reload")
    assert (now_live.status_code, now_live.json()["position"]) == (503, 3)
    assert "waitroom_shop" in now_live.cookies

    # Back to a shadow by a reload, then switched off by the admin API: live at once.
    reload(shadow, redis_server.url, shadow=True)
    with visitor(shadow.proxy.url, "v6") as v6:
        assert v6.get("/shadowed-again").status_code == 200
        changed = httpx.patch(
            f"{shadow.admin}/admin/rooms/shop", json={"shadow": False}, headers=AUTH, timeout=10
        )
        assert (changed.status_code, changed.json()["shadow"]) == (200, False), changed.text
        assert v6.get("/after-api").status_code == 503
