"""Operating a running proxy: metrics, health and readiness, the admin API across replicas, the CLI,
live reload, decision logs and the SIGTERM drain — all against real mitmdump processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SECRET, StartProxy
from tests.support import REPO, Mitmdump, RedisServer, Upstream, free_port, wait_for
from waitroom import __version__

pytestmark = pytest.mark.e2e

TOKEN = "admin-token-for-tests-0123456789"


def config_text(admin_port: int, store: str = "memory://", extra: str = "") -> str:
    return f"""
store: {{url: "{store}", key_prefix: ops}}
admin: {{host: 127.0.0.1, port: {admin_port}, drain: 5s}}
bypass: [/healthz]
rooms:
  - {{name: shop, match: {{path_prefix: /shop}}, new_sessions: 2, window: 60s, block_for: 30s,
     retry_after: 1s}}
rate_limits:
  - {{name: api, match: {{path_prefix: /api}}, key: "header:X-Key", fallback: ip, limit: 3, per: 60s}}
{extra}
"""


class Proxy:
    """A running mitmdump with its admin port."""

    def __init__(self, mitmdump: Mitmdump, admin_port: int) -> None:
        self.mitmdump = mitmdump
        self.admin = f"http://127.0.0.1:{admin_port}"
        wait_for(lambda: _answers(self.admin + "/healthz"), 30, "the admin port")

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.mitmdump.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def api(self, method: str, path: str, token: str | None = TOKEN, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.admin + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start(
    start_proxy: StartProxy,
    upstream: Upstream,
    store: str = "memory://",
    extra: str = "",
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Proxy:
    port = free_port()
    environment = {"WAITROOM_SECRET": SECRET, "WAITROOM_ADMIN_TOKEN": TOKEN, **(env or {})}
    mitmdump = start_proxy(config_text(port, store, extra), upstream.url, env=environment, extra=args)
    return Proxy(mitmdump, port)


def samples(proxy: Proxy) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(proxy.admin + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_scripted_scenario(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start(start_proxy, upstream)
    first = proxy.get("/shop")
    assert proxy.get("/shop").status_code == 200
    assert proxy.get("/shop").status_code == 503  # the window is full: a block starts
    assert proxy.get("/shop").status_code == 503  # blocked
    assert proxy.get("/shop", cookies=first.cookies).status_code == 200  # a session
    assert proxy.get("/healthz").status_code == 200  # bypass
    for _ in range(4):
        proxy.get("/api/x", headers={"X-Key": "k1"})
    proxy.get("/api/x")  # no key: the rule falls back to the client IP

    found = samples(proxy)
    assert value(found, "waitroom_room_requests_total", room="shop", outcome="admitted") == 2
    assert value(found, "waitroom_room_requests_total", room="shop", outcome="waiting") == 2
    assert value(found, "waitroom_room_requests_total", room="shop", outcome="session") == 1
    assert value(found, "waitroom_bypassed_requests_total") == 1
    assert value(found, "waitroom_rate_limit_requests_total", rule="api", outcome="allowed") == 4
    assert value(found, "waitroom_rate_limit_requests_total", rule="api", outcome="limited") == 1
    assert value(found, "waitroom_rate_limit_fallbacks_total", rule="api", reason="missing") == 1
    assert value(found, "waitroom_room_window_admissions", room="shop") == 2
    assert value(found, "waitroom_room_blocked", room="shop") == 1
    assert 28 < value(found, "waitroom_room_block_remaining_seconds", room="shop") <= 30
    assert value(found, "waitroom_room_new_sessions_limit", room="shop") == 2
    assert value(found, "waitroom_room_mode", room="shop", mode="normal") == 1
    assert value(found, "waitroom_rate_limit_limit", rule="api") == 3
    assert value(found, "waitroom_store_up") == 1
    assert value(found, "waitroom_ready") == 1
    assert value(found, "waitroom_decision_duration_seconds_count", kind="room") == 5
    assert value(found, "waitroom_decision_duration_seconds_count", kind="rate_limit") == 5
    # Labels are bounded: no client address, key or token ever becomes one.
    text = httpx.get(proxy.admin + "/metrics", timeout=10).text
    assert "127.0.0.1" not in text
    assert "k1" not in text
    # The metrics are on the admin port only: on the proxied port /metrics is just a path.
    assert "waitroom_room_requests_total" not in proxy.get("/metrics").text


def test_health_and_readiness(start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer) -> None:
    proxy = start(start_proxy, upstream, store=redis_server.url)
    assert proxy.api("GET", "/healthz", token=None).text == "ok\n"
    ready = proxy.api("GET", "/readyz", token=None)
    assert ready.status_code == 200
    config = proxy.mitmdump.config_path
    assert config is not None
    changing = {"config": None, "config_loaded_at": None}
    assert ready.json() | changing == {
        "ready": True,
        "version": __version__,
        **changing,
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest(),  # as `sha256sum` prints it
        "config_reload": {"state": "ok"},
        "store": "ok",
        "draining": False,
        "store_url": "redis://",
        "replicas": 1,  # what `on_error: local` divides limits by (store.replicas outside a cluster)
    }
    redis_server.stop()
    for _ in range(4):  # the breaker opens after 3 failures; `local` decides meanwhile
        proxy.get("/shop")
    failing = proxy.api("GET", "/readyz", token=None)
    # The proxy still serves by its failure policy: ready, and it says so.
    assert failing.status_code == 200
    assert (failing.json()["store"], failing.json()["policy"]) == ("failing", "local")
    found = samples(proxy)
    assert value(found, "waitroom_store_up") == 0
    assert value(found, "waitroom_degraded", policy="local") == 1
    assert value(found, "waitroom_degraded_decisions_total", policy="local") >= 1
    assert value(found, "waitroom_store_errors_total", operation="admit", kind="error") >= 1


def test_admin_api_acts_on_every_replica(
    start_proxy: StartProxy, upstream: Upstream, redis_server: RedisServer
) -> None:
    a = start(start_proxy, upstream, store=redis_server.url)
    b = start(start_proxy, upstream, store=redis_server.url)

    def eventually(check: Callable[[], bool], what: str) -> None:
        wait_for(check, 5, what, interval=0.05)  # every replica re-reads the overrides each second

    # Unauthorised calls are refused and change nothing.
    assert a.api("POST", "/admin/rooms/shop/queue-all", token=None).status_code == 401
    wrong = a.api("POST", "/admin/rooms/shop/queue-all", token="wrong")
    assert (wrong.status_code, wrong.headers["WWW-Authenticate"]) == (401, 'Bearer realm="waitroom"')
    assert a.api("GET", "/admin/rooms/shop").json()["mode"] == "normal"

    # queue-all on A: new visitors wait on B too; a session still passes.
    admitted = b.get("/shop")
    assert a.api("POST", "/admin/rooms/shop/queue-all").json()["mode"] == "queue-all"
    eventually(lambda: b.get("/shop").status_code == 503, "queue-all on B")
    assert b.get("/shop", cookies=admitted.cookies).status_code == 200
    # open: everyone in, more than the limit, on both.
    a.api("POST", "/admin/rooms/shop/open")
    eventually(lambda: b.get("/shop").status_code == 200, "open on B")
    assert [a.get("/shop").status_code for _ in range(5)] == [200] * 5
    # normal again: the window (1 admission so far) fills at 2, then a block starts.
    a.api("POST", "/admin/rooms/shop/normal")
    eventually(lambda: b.get("/shop").status_code == 503, "normal on B")
    blocked = a.api("GET", "/admin/rooms/shop").json()
    assert blocked["blocked_for"] > 0
    # unblock, and a higher limit: new visitors get in again, on both.
    changed = a.api("PATCH", "/admin/rooms/shop", json={"new_sessions": 10, "block_for": "5s"})
    assert changed.status_code == 200
    assert (changed.json()["new_sessions"], changed.json()["block_for"]) == (10, "5s")
    eventually(lambda: b.api("GET", "/admin/rooms/shop").json()["new_sessions"] == 10, "the change on B")
    assert a.api("POST", "/admin/rooms/shop/unblock").json()["blocked_for"] == 0
    eventually(lambda: b.get("/shop").status_code == 200, "the new limit on B")

    # A rule's limit, lowered on A, holds on B.
    assert a.api("PATCH", "/admin/rules/api", json={"limit": 1}).json()["limit"] == 1
    eventually(lambda: b.api("GET", "/admin/rules/api").json()["limit"] == 1, "the rule's limit on B")
    statuses = [b.get("/api/x", headers={"X-Key": "solo"}).status_code for _ in range(2)]
    assert statuses == [200, 429]
    assert a.api("POST", "/admin/rules/api/reset").json()["limit"] == 3

    # Bad input: a clear 4xx, and the state is unchanged.
    before = a.api("GET", "/admin/rooms/shop").json()
    bad = [
        (a.api("POST", "/admin/rooms/nope/open"), 404, "no room named 'nope'"),
        (a.api("POST", "/admin/rooms/shop/explode"), 404, "unknown room action"),
        (a.api("PATCH", "/admin/rooms/shop", json={"new_sessions": -1}), 400, "new_sessions must be"),
        (a.api("PATCH", "/admin/rooms/shop", json={"new_sessions": 5, "colour": "red"}), 400, "unknown room"),
        (a.api("PATCH", "/admin/rooms/shop", json={"block_for": "soon"}), 400, "invalid duration"),
        (a.api("PATCH", "/admin/rooms/shop", content=b"{not json"), 400, "not JSON"),
        (a.api("PATCH", "/admin/rooms/shop", json=[1]), 400, "JSON object"),
        (a.api("PATCH", "/admin/rules/api", json={"limit": 0}), 400, "limit must be"),
        (a.api("PATCH", "/admin/rules/api", json={"limit": "many"}), 400, "limit must be"),
        (a.api("PATCH", "/admin/rules/nope", json={"limit": 5}), 404, "no rate-limit rule"),
        (a.api("PATCH", "/admin/rooms/shop", content=b"x" * 100_000), 413, "larger than"),
        (a.api("GET", "/admin/nothing"), 404, "no such endpoint"),
    ]
    for answer, status, words in bad:
        assert answer.status_code == status, (answer.request.url, answer.text)
        assert words in answer.json()["error"]
    assert a.api("GET", "/admin/rooms/shop").json() | {"in_window": None, "blocked_for": None} == before | {
        "in_window": None,
        "blocked_for": None,
    }
    assert a.api("GET", "/admin/rules/api").json()["limit"] == 3
    # Each change is logged, never with the token.
    log = a.mitmdump.log_text()
    assert "waitroom admin: room shop: mode=queue-all" in log
    assert TOKEN not in log


def test_without_a_token_the_admin_api_is_off(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start(start_proxy, upstream, env={"WAITROOM_ADMIN_TOKEN": ""})
    off = proxy.api("POST", "/admin/rooms/shop/queue-all")
    assert off.status_code == 404
    assert "admin API is off" in off.json()["error"]
    assert proxy.api("GET", "/metrics", token=None).status_code == 200  # probes and metrics stay


def run_cli(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"WAITROOM_ADMIN_TOKEN": token, "PATH": str(Path(sys.executable).parent)}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})  # the code under test
    return subprocess.run(
        [str(Path(sys.executable).with_name("waitroom")), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )


def test_the_cli(start_proxy: StartProxy, upstream: Upstream, tmp_path: Path) -> None:
    proxy = start(start_proxy, upstream)
    status = run_cli("--url", proxy.admin, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("ready: True   store: ok")
    header = next(line for line in lines if line.startswith("ROOM"))
    assert header.split() == [
        "ROOM",
        "MATCH",
        "MODE",
        "LIMIT",
        "IN",
        "WINDOW",
        "BLOCKED",
        "BLOCK",
        "FOR",
        "LINE",
        "INSIDE",
        "EVENT",
        "STORE",
    ]
    assert any(line.split()[:4] == ["shop", "/shop", "normal", "2/1m"] for line in lines)
    assert any(line.split()[:3] == ["api", "header:X-Key", "3/1m"] for line in lines)

    queued = run_cli("--url", proxy.admin, "room", "shop", "queue-all")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.splitlines()[1].split()[:3] == ["shop", "/shop", "queue-all"]
    assert proxy.get("/shop").status_code == 503
    changed = run_cli("--url", proxy.admin, "room", "shop", "set", "new_sessions=7", "block_for=10s")
    assert "7/1m (config 2/1m)" in changed.stdout
    assert run_cli("--url", proxy.admin, "rule", "api", "set", "limit=9").stdout.count("9/1m (config 3)") == 1

    refused = run_cli("--url", proxy.admin, "room", "nope", "open")
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "waitroom: POST /admin/rooms/nope/open: 404 no room named 'nope'",
    )
    unauthorised = run_cli("--url", proxy.admin, "status", token="wrong")
    assert unauthorised.returncode == 1
    assert "401" in unauthorised.stderr
    unreachable = run_cli("--url", f"http://127.0.0.1:{free_port()}", "status")
    assert unreachable.returncode == 1
    assert "cannot reach the admin API" in unreachable.stderr

    good = run_cli("check", str(REPO / "config" / "waitroom.yaml"))
    assert good.returncode == 0
    assert good.stdout.startswith("# ")
    assert "name: demo" in good.stdout
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("rooms:\n  - {name: x, match: {path_prefix: /}, new_sessions: 0}\n")
    bad = run_cli("check", str(bad_file))
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "rooms[0].new_sessions" in bad.stderr


def test_live_reload_keeps_sessions_and_refuses_a_bad_file(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = start(start_proxy, upstream)
    assert proxy.mitmdump.config_path is not None
    path = proxy.mitmdump.config_path
    visitor = proxy.get("/shop")
    proxy.get("/shop")
    assert proxy.get("/shop").status_code == 503  # full and blocked

    # A valid change (e.g. a ConfigMap update): a new room, picked up without a restart.
    path.write_text(
        path.read_text().replace(
            "rooms:\n", "rooms:\n  - {name: blog, match: {path_prefix: /blog}, new_sessions: 1}\n"
        )
    )
    wait_for(lambda: "waitroom: reloaded" in proxy.mitmdump.log_text(), 10, "the reload")
    # What changed: its own log line, written after the "reloaded" one (a read between the two
    # missed it on a busy machine).
    wait_for(lambda: "waitroom:   rooms[blog]: added" in proxy.mitmdump.log_text(), 10, "what changed")
    assert [proxy.get("/blog").status_code for _ in range(2)] == [200, 503]
    assert proxy.get("/shop", cookies=visitor.cookies).status_code == 200  # sessions survive
    assert proxy.get("/shop").status_code == 503  # and so does the block (the store's state)

    # An invalid file: refused with one line, the running config keeps serving.
    good = path.read_text()
    path.write_text(good.replace("new_sessions: 1}", "new_sessions: lots}"))
    wait_for(lambda: "reload refused" in proxy.mitmdump.log_text(), 10, "the refusal")
    refusal = [line for line in proxy.mitmdump.log_text().splitlines() if "reload refused" in line]
    assert len(refusal) == 1
    assert "rooms[0].new_sessions" in refusal[0]
    assert proxy.get("/blog").status_code == 503  # the old config: blog still has its room
    ready = proxy.api("GET", "/readyz", token=None)
    assert ready.status_code == 200  # still serving, by the older config: ready, and says so
    reload = ready.json()["config_reload"]
    assert (reload["state"], reload["file_sha256"]) == (
        "refused",
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert "rooms[0].new_sessions" in reload["error"]
    status = run_cli("--url", proxy.admin, "status").stdout.splitlines()
    assert status[0].startswith("RELOAD REFUSED since ")
    assert "rooms[0].new_sessions" in status[0]
    found = samples(proxy)
    assert value(found, "waitroom_config_reloads_total", result="ok") == 1
    assert value(found, "waitroom_config_reloads_total", result="error") == 1
    assert value(found, "waitroom_config_reload_refused") == 1
    path.write_text(good)  # back to the bytes in force: nothing refused any more
    wait_for(
        lambda: proxy.api("GET", "/readyz", token=None).json()["config_reload"] == {"state": "ok"},
        10,
        "the refusal to clear",
    )


def test_decision_logs_are_json_and_hold_no_secrets(start_proxy: StartProxy, upstream: Upstream) -> None:
    # -q silences mitmproxy's log, never the decision lines (they are the output asked for)
    proxy = start(start_proxy, upstream, extra="decision_log: {format: json, sample: 1.0}", args=["-q"])
    first = proxy.get("/shop?token=secret-in-query")
    proxy.get("/shop", cookies=first.cookies)
    proxy.get("/api/x", headers={"X-Key": "api-key-secret", "Authorization": "Bearer tok-secret"})
    wait_for(lambda: proxy.mitmdump.log_text().count('"event":"waitroom_decision"') >= 3, 10, "decision logs")
    lines = [line for line in proxy.mitmdump.log_text().splitlines() if '"event":"waitroom_decision"' in line]
    entries = [json.loads(line) for line in lines]  # each line one JSON object, nothing else
    assert [(e.get("room"), e.get("outcome"), e.get("rule"), e["status"]) for e in entries] == [
        ("shop", "admitted", None, 200),
        ("shop", "session", None, 200),
        (None, None, "api", 200),
    ]
    assert entries[0]["path"] == "/shop"
    text = proxy.mitmdump.log_text()
    cookie = first.cookies.get("waitroom_shop")
    assert cookie
    for secret in ("secret-in-query", "api-key-secret", "tok-secret", cookie, SECRET, TOKEN):
        assert secret not in "\n".join(lines)
    assert SECRET not in text
    assert TOKEN not in text


def test_sigterm_drains_in_flight_requests(start_proxy: StartProxy, upstream: Upstream) -> None:
    upstream.slow = 1.5
    proxy = start(start_proxy, upstream)
    results: list[int] = []

    def slow_request() -> None:
        results.append(proxy.get("/slow/work").status_code)

    threads = [threading.Thread(target=slow_request) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(upstream.seen) == 3, 10, "three requests in flight")
    proxy.mitmdump.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    wait_for(lambda: proxy.api("GET", "/readyz", token=None).status_code == 503, 5, "readiness false")
    assert time.monotonic() - sent < 1.0  # readiness turned false before the requests finished
    assert proxy.api("GET", "/readyz", token=None).json()["draining"] is True
    for thread in threads:
        thread.join(timeout=10)
    assert results == [200, 200, 200]
    assert proxy.mitmdump.wait_exit(10) == 0
    assert time.monotonic() - sent < 5  # within the drain period (5s)
    assert "SIGTERM: not ready; draining 3 request(s)" in proxy.mitmdump.log_text()


def test_the_dashboard_queries_only_metrics_the_proxy_exports() -> None:
    from waitroom.metrics import METRICS

    exported: set[str] = set()
    for family in METRICS.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        exported |= {family.name + suffix for suffix in suffixes}
    dashboard = json.loads((REPO / "charts" / "waitroom" / "dashboards" / "waitroom.json").read_text())
    assert dashboard["uid"] == "waitroom"
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bwaitroom_[a-z_]+\b", target["expr"]))
            assert names, (panel["title"], target["expr"])
            queried |= names
    variable_queries = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    queried |= {n for q in variable_queries for n in re.findall(r"\bwaitroom_[a-z_]+\b", q)}
    assert queried - exported == set()
    # The panels the operators asked for are there.
    wanted = {
        "waitroom_room_window_admissions",
        "waitroom_room_new_sessions_limit",
        "waitroom_rate_limit_requests_total",
        "waitroom_decision_duration_seconds_bucket",
        "waitroom_store_errors_total",
        "waitroom_degraded",
    }
    assert wanted <= queried
