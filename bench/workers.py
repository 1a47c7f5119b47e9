"""`waitroom serve --workers 1` against `--workers 2`: returning visitors' throughput on this machine.

    python bench/workers.py [--seconds 4] [--json]

Returning visitors (a valid session cookie: no store call) through `waitroom serve` on a Redis
store, first with one worker, then with two sharing the port (SO_REUSEPORT), each loaded by wrk at
the same concurrency (2 threads, 32 connections: enough for the kernel to spread them over both
workers), one run each, in the same process so that both sides see the same machine. Requests are
counted by wrk; the proxy's own /metrics (the supervisor's, added up over the workers) says how many
it decided. The target is 1.4x; on a 2-core machine wrk and nginx take their share of the cores too,
which the report says with the machine's load. `make bench` puts the figures in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from harness import BIN, counter, free_port, nginx, process, ready, redis_server, scrape, wrk

SECRET = "bench-secret-0123456789abcdef0123"
TARGET = 1.4
CONNECTIONS = 32
THREADS = 2
CONFIG = """
store: {{url: "redis://127.0.0.1:{redis}/0", timeout: 200ms, key_prefix: workers}}
admin: {{port: {admin}}}
rooms:
  - {{name: bench, match: {{path_prefix: /}}, new_sessions: 10000000, window: 60s}}
"""


@contextmanager
def serve(work: Path, upstream: int, redis_port: int, workers: int) -> Iterator[tuple[str, int]]:
    """`waitroom serve --workers N` with the wait room on Redis, quiet as in production; ready once
    every worker is (the supervisor's /readyz lists them)."""
    port, admin = free_port(), free_port()
    config = work / f"workers-{workers}-{admin}.yaml"
    config.write_text(CONFIG.format(redis=redis_port, admin=admin))
    args = [
        str(BIN / "waitroom"),
        "serve",
        "--workers",
        str(workers),
        "--mode",
        f"reverse:http://127.0.0.1:{upstream}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--set",
        f"confdir={work / 'mitmproxy'}",
        "--set",
        f"waitroom_config={config}",
        "-q",
    ]
    env = {**os.environ, "WAITROOM_SECRET": SECRET}
    with process(
        args,
        work / f"serve-workers-{workers}-{port}.log",
        env=env,
        port=port,
        what="waitroom serve",
        graceful=False,
    ):
        ready(admin, work, timeout=60)
        deadline = time.monotonic() + 60
        while (
            workers > 1
            and httpx.get(f"http://127.0.0.1:{admin}/readyz").text.count('"ready": true') <= workers
        ):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {workers} workers did not all become ready within 60 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", admin


def one(work: Path, upstream: int, redis_port: int, workers: int, seconds: float) -> dict[str, Any]:
    with serve(work, upstream, redis_port, workers) as (url, admin):
        with httpx.Client(timeout=10) as client:
            first = client.get(url + "/")
            cookie = "; ".join(f"{k}={v}" for k, v in first.cookies.items())
        headers = {"Cookie": cookie}
        if seconds > 1:  # not in `make bench --quick` (CI), which only shows that it runs
            wrk(url + "/", 1, connections=CONNECTIONS, threads=THREADS, headers=headers, work=work)
        load_before = os.getloadavg()[0]
        result = wrk(url + "/", seconds, connections=CONNECTIONS, threads=THREADS, headers=headers, work=work)
        sessions = counter(scrape(admin), "waitroom_room_requests", 'outcome="session"')
        return {
            "workers": workers,
            "rps": round(result.rps, 1),
            "p50_ms": round(result.p50_ms, 3),
            "p99_ms": round(result.p99_ms, 3),
            "errors": result.errors,
            "non_2xx": result.non_2xx,
            "sessions_counted": int(sessions),
            "load_average_before": round(load_before, 2),
        }


def measure(work: Path, upstream: int, redis_port: int, seconds: float) -> dict[str, Any]:
    """One run with 1 worker, then one with 2, on the same nginx and Redis."""
    runs = [one(work, upstream, redis_port, n, seconds) for n in (1, 2)]
    ratio = runs[1]["rps"] / runs[0]["rps"] if runs[0]["rps"] else 0.0
    return {
        "cpus": os.cpu_count(),
        "seconds": seconds,
        "connections": CONNECTIONS,
        "wrk_threads": THREADS,
        "runs": runs,
        "ratio": round(ratio, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured wrk run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="waitroom-workers-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(nginx(work))
        redis_port = stack.enter_context(redis_server(work))
        figures = measure(work, upstream, redis_port, options.seconds)
    if options.json:
        print(json.dumps(figures, indent=1))
    else:
        for run in figures["runs"]:
            print(f"--workers {run['workers']}: {run['rps']:.0f} req/s, p99 {run['p99_ms']} ms")
        print(f"ratio {figures['ratio']} (target {TARGET}: {'met' if figures['met'] else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
