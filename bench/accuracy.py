"""Accuracy figures: new visitors admitted per window with 4 waitroom replicas sharing Redis
against 2 HAProxy instances with the classic stick-table limiter at a gentle load; flash crowds
(50, 200, 400 new visitors at once on 1 and 4 replicas, and behind 20 and 80 ms of Redis latency)
against a room's limit; and the sliding_window algorithm's error against an exact log on a long
random trace."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from harness import counter, free_port, mitmdump, need, nginx, process, ready, redis_server, relay, scrape

from waitroom.store import algorithms as alg

LIMIT = 20
WINDOW = 2.0
RATE = 100.0  # new visitors a second, spread over the instances
SECONDS = 6.0


def haproxy_config(port: int, upstream: int) -> str:
    """The classic per-instance limiter: a stick table counting admitted requests on one key over
    the window (gpc0_rate), denying once LIMIT is reached. Each instance has its own table."""
    return f"""
global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:{port}
  stick-table type string len 8 size 1k expire 30s store gpc0,gpc0_rate({int(WINDOW * 1000)})
  http-request track-sc0 str(room)
  http-request deny deny_status 503 if {{ sc_gpc0_rate(0) ge {LIMIT} }}
  http-request sc-inc-gpc0(0)
  default_backend be
backend be
  server up 127.0.0.1:{upstream}
"""


VISIT = "X-Bench-Visit"
"""Each gentle-load visitor's number, logged by the upstream beside the request's arrival time."""


@dataclass
class Driven:
    sent: dict[int, float]
    """Each visitor's number -> the time (epoch seconds) just before its request was sent."""
    failed: int
    """Requests that got no answer (a connection error): their visitors count as not admitted by
    the visitor's side, but an admission the upstream saw still counts (see figures)."""


async def drive(urls: list[str]) -> Driven:
    """New visitors (no cookies) at RATE a second, round robin over `urls`, for SECONDS, each on a
    new connection (a new browser; no kept-alive connection that the server may be closing)."""
    sent: dict[int, float] = {}
    failed = 0
    total = int(RATE * SECONDS)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=5, limits=limits) as client:
        start = time.monotonic()

        async def one(i: int) -> None:
            nonlocal failed
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            sent[i] = time.time()
            try:
                await client.get(urls[i % len(urls)] + "/", headers={"Cookie": "", VISIT: str(i)})
            except httpx.TransportError:
                failed += 1

        await asyncio.gather(*(one(i) for i in range(total)))
    return Driven(sent, failed)


def arrivals(log: Path, since: int) -> dict[int, float]:
    """Visitor number -> when its request reached the upstream (nginx's log, epoch seconds)."""
    out: dict[int, float] = {}
    for line in log.read_text().splitlines()[since:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[int(parts[1])] = float(parts[0]) + ARRIVAL_RESOLUTION
    return out


ARRIVAL_RESOLUTION = 0.001
"""nginx logs milliseconds: an arrival is taken as late as it can have been."""


def figures(driven: Driven, arrived: dict[int, float]) -> dict[str, Any]:
    """The upstream sees exactly the admitted requests. Each admission was decided between its
    visitor's send and its arrival at the upstream; the most admissions *certainly* decided within
    one window are the most whose intervals all fit in an interval shorter than the window. No
    allowance for forwarding jitter is needed (a slow forward widens an interval, it never invents
    an over-admission), so on a busy machine a correct limiter reads exactly the limit, and more
    means more admissions than the limit."""
    spans = sorted((driven.sent[i], at) for i, at in arrived.items() if i in driven.sent)
    worst = max_certainly_within(spans, WINDOW)
    return {
        "admitted": len(arrived),
        "max_in_any_window": worst,
        "over_admission_pct": round(100 * max(0, worst - LIMIT) / LIMIT, 1),
        "failed_requests": driven.failed,
    }


def max_certainly_within(spans: list[tuple[float, float]], window: float) -> int:
    """The most spans (start, end) that all lie in some interval shorter than `window`, for spans
    sorted by start: anchored at each start, those that start no earlier and end before start +
    window."""
    best = 0
    for i, (anchor, _) in enumerate(spans):
        best = max(best, sum(1 for _, end in spans[i:] if end < anchor + window))
    return best


def max_in_window(times: list[float], window: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def replicas_vs_haproxy(work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "limit": LIMIT,
        "window_s": WINDOW,
        "offered_per_s": RATE,
        "seconds": SECONDS,
        "timed_at": "the visitor's send and the upstream's arrival (each decision lies between the two)",
    }
    log = work / "arrivals.log"
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work, access_log=log))
        redis_port = stack.enter_context(redis_server(work))
        env = {"WAITROOM_SECRET": SECRET, "PATH": ""}
        proxies, admins = [], []
        for _ in range(4):
            admin = free_port()
            config = work / f"accuracy-{admin}.yaml"
            config.write_text(
                f"""
store: {{url: "redis://127.0.0.1:{redis_port}/0", timeout: 500ms, key_prefix: accuracy}}
admin: {{port: {admin}}}
rooms:
  - {{name: all, match: {{path_prefix: /}}, new_sessions: {LIMIT}, window: {WINDOW}s, block_for: 0s}}
"""
            )
            options = ["--set", f"waitroom_config={config}"]
            proxies.append(
                stack.enter_context(mitmdump(work, upstream, ["addons/waitroom.py"], options, env))
            )
            ready(admin, work)
            admins.append(admin)
        driven = asyncio.run(drive([f"http://127.0.0.1:{p}" for p in proxies]))
        metrics = [scrape(admin) for admin in admins]
        results["waitroom_4_replicas"] = {
            **figures(driven, arrivals(log, 0)),
            # Decisions the failure policy made instead of the shared window: what can over-admit.
            "degraded_decisions": round(sum(counter(m, "waitroom_degraded_decisions") for m in metrics)),
            "store_timeouts": round(
                sum(counter(m, "waitroom_store_errors", 'kind="timeout"') for m in metrics)
            ),
        }
        seen = len(log.read_text().splitlines())
        haproxies = []
        for i in range(2):
            port = free_port()
            cfg = work / f"haproxy-{i}.cfg"
            cfg.write_text(haproxy_config(port, upstream))
            stack.enter_context(
                process([need("haproxy"), "-f", str(cfg)], work / f"haproxy-{i}.log", port=port)
            )
            haproxies.append(port)
        driven = asyncio.run(drive([f"http://127.0.0.1:{p}" for p in haproxies]))
        results["haproxy_2_instances"] = figures(driven, arrivals(log, seen))
    return results


SECRET = "bench-secret-0123456789abcdef"

# --- flash crowds -------------------------------------------------------------------------------

BURST_LIMIT = 25
BURST_WINDOW = 60.0
BURST_SIZES = (50, 200, 400)
BURST_REPLICAS = (1, 4)
DELAYS_MS = (20, 80)
"""Redis this far away (bench/relay.py), for a burst of DELAYED_BURST visitors."""
DELAYED_BURST = 200
BURST_TIMEOUT = 45.0
"""Bound on one burst, connecting included: well inside the window, so every answer counts in one."""


@dataclass(frozen=True)
class Burst:
    visitors: int
    replicas: int
    delay_ms: int = 0
    """Added Redis round-trip time (0: Redis on loopback, no relay)."""

    @property
    def name(self) -> str:
        where = f"redis_{self.delay_ms}ms" if self.delay_ms else "redis"
        return f"burst_{self.visitors}_{self.replicas}_replicas_{where}"


def bursts_to_run(quick: bool) -> list[Burst]:
    """Every burst size on 1 and 4 replicas with Redis on loopback, then DELAYED_BURST visitors
    with Redis DELAYS_MS away. Quick mode (CI, about 10 s): one burst on loopback and one with Redis
    away, on one replica, so the measurement itself keeps working (tests/e2e/test_flash_crowd.py
    runs bursts on 4 replicas)."""
    if quick:  # one replica each: starting four is most of a burst's time, and the e2e tests do it
        return [Burst(DELAYED_BURST, 1), Burst(50, 1, DELAYS_MS[-1])]
    return [Burst(n, r) for r in BURST_REPLICAS for n in BURST_SIZES] + [
        Burst(DELAYED_BURST, r, d) for d in DELAYS_MS for r in BURST_REPLICAS
    ]


def flash_crowds(work: Path, quick: bool = False) -> dict[str, Any]:
    """New visitors arriving all at once at a room of BURST_LIMIT per BURST_WINDOW on one real
    redis-server, with the shipped default store settings (timeout, failure policy, breaker): what
    a user gets. Each burst on fresh replicas and its own key prefix, so no burst inherits another's
    window or breaker."""
    out: dict[str, Any] = {
        "limit": BURST_LIMIT,
        "window_s": BURST_WINDOW,
        "store": "shipped default store settings (store.timeout, on_error and breaker left unset)",
        "runs": {},
    }
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work))
        redis_port = stack.enter_context(redis_server(work))
        for i, burst in enumerate(bursts_to_run(quick)):
            print(
                f"bench:   {burst.visitors} new visitors at once, {burst.replicas} replica(s), "
                f"Redis +{burst.delay_ms} ms",
                flush=True,
            )
            out["runs"][burst.name] = run_burst(burst, work, upstream, redis_port, f"burst{i}")
    return out


def run_burst(burst: Burst, work: Path, upstream: int, redis_port: int, prefix: str) -> dict[str, Any]:
    with ExitStack() as stack:
        store_port = redis_port
        if burst.delay_ms:
            store_port = stack.enter_context(relay(redis_port, burst.delay_ms, work))
        env = {**os.environ, "WAITROOM_SECRET": SECRET}
        replicas: list[tuple[int, int]] = []
        for _ in range(burst.replicas):
            admin = free_port()
            config = work / f"{prefix}-{admin}.yaml"
            config.write_text(
                f"""
store: {{url: "redis://127.0.0.1:{store_port}/0", key_prefix: {prefix}}}
admin: {{port: {admin}}}
rooms:
  - {{name: warm, match: {{path_prefix: /warm/}}, new_sessions: 1000000, window: 60s}}
  - {{name: burst, match: {{path_prefix: /}}, new_sessions: {BURST_LIMIT}, window: {BURST_WINDOW:g}s}}
"""
            )
            options = ["--set", f"waitroom_config={config}"]
            port = stack.enter_context(mitmdump(work, upstream, ["addons/waitroom.py"], options, env))
            ready(admin, work)
            # As in production, the replica has met Redis before the crowd: its connection is open
            # and its scripts are loaded.
            httpx.get(f"http://127.0.0.1:{port}/warm/", timeout=10)
            replicas.append((port, admin))
        before = [scrape(admin) for _, admin in replicas]
        started = time.monotonic()
        statuses = asyncio.run(crowd([port for port, _ in replicas], "/", burst.visitors))
        elapsed = time.monotonic() - started
        after = [scrape(admin) for _, admin in replicas]
        with redis.Redis(port=redis_port) as client:  # the room's shared window, as Redis holds it
            recorded = int(client.zcard(f"{prefix}:{{room:burst}}:log"))
    admitted = sum(1 for s in statuses if 200 <= s < 300)
    expected = min(BURST_LIMIT, burst.visitors)

    def total(name: str, only: str = "") -> int:
        return round(
            sum(counter(a, name, only) - counter(b, name, only) for a, b in zip(after, before, strict=True))
        )

    return {
        "visitors": burst.visitors,
        "replicas": burst.replicas,
        "redis_delay_ms": burst.delay_ms,
        "admitted": admitted,
        "limit": expected,
        "over_admission_pct": round(100 * max(0, admitted - expected) / expected, 1),
        "under_admission_pct": round(100 * max(0, expected - admitted) / expected, 1),
        "waiting": sum(1 for s in statuses if s == 503),
        "other_status": sum(1 for s in statuses if s and not 200 <= s < 300 and s != 503),
        "unanswered": sum(1 for s in statuses if not s),
        "recorded_in_redis": recorded,
        "store_timeouts": total("waitroom_store_errors", 'kind="timeout"'),
        "store_errors": total("waitroom_store_errors", 'kind="error"'),
        "circuit_open": total("waitroom_store_errors", 'kind="circuit_open"'),
        "degraded_decisions": total("waitroom_degraded_decisions"),
        "shed": total("waitroom_shed_requests"),
        "seconds": round(elapsed, 2),
    }


async def crowd(ports: list[int], path: str, visitors: int) -> list[int]:
    """`visitors` new visitors (no cookie, one request each), round robin over `ports`: every
    connection is opened first, then every request is written at once. Returns each visitor's
    status (0: no answer within BURST_TIMEOUT, or the connection failed)."""
    deadline = asyncio.get_running_loop().time() + BURST_TIMEOUT
    opening = asyncio.Semaphore(64)  # the proxy's accept backlog is 100

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with opening:
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return None

    async with asyncio.timeout_at(deadline):
        connections = await asyncio.gather(*(connect(ports[i % len(ports)]) for i in range(visitors)))
    await asyncio.sleep(0.2)  # let the proxies accept every connection before the crowd moves
    go = asyncio.Event()

    async def visit(i: int) -> int:
        connection = connections[i]
        if connection is None:
            return 0
        reader, writer = connection
        port = ports[i % len(ports)]
        try:
            await go.wait()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            parts = (await reader.readline()).split()
            return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        except OSError:
            return 0
        finally:
            writer.close()

    tasks = [asyncio.create_task(visit(i)) for i in range(visitors)]
    go.set()
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [task.result() if task in done else 0 for task in tasks]


def sliding_window_error(requests: int = 200_000, limit: int = 100, per: float = 1.0) -> dict[str, Any]:
    """Bursty random arrivals through sliding_window; the most admitted in any interval of length
    `per`, against the limit (sliding_log would give exactly `limit`)."""
    rnd = random.Random(42)
    state, now, admitted = alg.WindowCounters(), 0.0, []
    for _ in range(requests):
        # Alternating calm and bursts, so windows see uneven traffic (the approximation's worst case).
        now += rnd.expovariate(400.0 if int(now / 3) % 2 else 40.0)
        if alg.check_sliding_window(state, now, limit, per).allowed:
            alg.charge_sliding_window(state, now, per)
            admitted.append(now)
    worst = max_in_window(admitted, per)
    in_windows: deque[float] = deque()
    over = 0
    for t in admitted:  # how often an admission made some interval exceed the limit
        in_windows.append(t)
        while in_windows[0] <= t - per:
            in_windows.popleft()
        over += len(in_windows) > limit
    return {
        "requests": requests,
        "limit": limit,
        "max_in_any_interval": worst,
        "max_error_pct": round(100 * (worst - limit) / limit, 1),
        "admissions_over_limit_pct": round(100 * over / max(1, len(admitted)), 2),
    }
