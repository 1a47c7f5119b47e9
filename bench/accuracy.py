"""Accuracy figures: new visitors admitted per window with 4 waitroom replicas sharing Redis
against 2 HAProxy instances with the classic stick-table limiter, and the sliding_window
algorithm's error against an exact log on a long random trace."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from harness import free_port, mitmdump, need, nginx, process, redis_server

from waitroom import algorithms as alg

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


JITTER = 0.05
"""Admissions are timed where they arrive, at the upstream (nginx's log): forwarding adds a few ms of
jitter after the decision, so windows are counted this much shorter."""


async def drive(urls: list[str]) -> int:
    """New visitors (no cookies) at RATE a second, round robin over `urls`, for SECONDS; how many
    were admitted."""
    admitted = 0
    total = int(RATE * SECONDS)
    async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=64)) as client:
        start = time.monotonic()

        async def one(i: int) -> None:
            nonlocal admitted
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            response = await client.get(urls[i % len(urls)] + "/", headers={"Cookie": ""})
            admitted += response.status_code == 200

        await asyncio.gather(*(one(i) for i in range(total)))
    return admitted


def arrivals(log: Path, since: int) -> list[float]:
    lines = log.read_text().splitlines()[since:]
    return sorted(float(line) for line in lines if line.strip())


def figures(admitted: int, times: list[float]) -> dict[str, Any]:
    worst = max_in_window(times, WINDOW - JITTER)
    return {
        "admitted": admitted,
        "max_in_any_window": worst,
        "over_admission_pct": round(100 * max(0, worst - LIMIT) / LIMIT, 1),
    }


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
        "timed_at": f"the upstream, windows {JITTER * 1000:.0f} ms shorter for forwarding jitter",
    }
    log = work / "arrivals.log"
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work, access_log=log))
        redis_port = stack.enter_context(redis_server(work))
        config = work / "accuracy.yaml"
        config.write_text(
            f"""
store: {{url: "redis://127.0.0.1:{redis_port}/0", timeout: 500ms, key_prefix: accuracy}}
rooms:
  - {{name: all, match: {{path_prefix: /}}, new_sessions: {LIMIT}, window: {WINDOW}s, block_for: 0s}}
"""
        )
        env = {"WAITROOM_SECRET": "bench-secret-0123456789abcdef", "PATH": ""}
        options = ["--set", f"waitroom_config={config}"]
        proxies = [
            stack.enter_context(mitmdump(work, upstream, ["addons/waitroom.py"], options, env))
            for _ in range(4)
        ]
        admitted = asyncio.run(drive([f"http://127.0.0.1:{p}" for p in proxies]))
        results["waitroom_4_replicas"] = figures(admitted, arrivals(log, 0))
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
        admitted = asyncio.run(drive([f"http://127.0.0.1:{p}" for p in haproxies]))
        results["haproxy_2_instances"] = figures(admitted, arrivals(log, seen))
    return results


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
