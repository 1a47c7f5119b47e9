"""Locust load test for waitroom in front of the request counter.

Each simulated visitor PUTs and GETs random paths, keeps its session cookie like a browser, and when
it meets the wait room (`Waitroom-Status: waiting`) or a rate limit (429) it waits `Retry-After`
seconds with ±30% jitter, as the wait page's script does, before it tries again.

Run the whole stack on this machine:  make load            (see bench/load.py for the options)
Point it at a deployment:             .venv/bin/locust -f bench/locustfile.py --headless \
                                          -u 200 -r 20 -t 2m --host https://shop.example.com

Besides Locust's own table (requests, failures, latency percentiles per request name), the run
ends with a summary of outcomes per second: admitted (answered by the service), waiting (the wait
room), limited (429). Waiting and limited are the product working, not failures; anything else
(5xx other than the wait room, connection errors) is a failure and makes Locust exit non-zero.

Environment: LOAD_PATHS (distinct paths, default 50), LOAD_THINK_MS (pause between a visitor's
requests, default 100..500).
"""

from __future__ import annotations

import atexit
import os
import random
import time
from collections import Counter
from typing import Any

from locust import HttpUser, between, events, task

PATHS = int(os.environ.get("LOAD_PATHS", "50"))
_think = [int(x) / 1000 for x in os.environ.get("LOAD_THINK_MS", "100..500").split("..")]
THINK = (_think[0], _think[-1])
JITTER = 0.3

outcomes: Counter[str] = Counter()
_started = time.monotonic()
_elapsed = 0.0


class Visitor(HttpUser):
    wait_time = between(*THINK)

    def on_start(self) -> None:
        # A per-visitor identity, so that a `header:X-Visitor` rule can limit visitors one by one.
        self.client.headers["X-Visitor"] = f"v{random.getrandbits(48):012x}"

    @task(3)
    def put_a_path(self) -> None:
        self.visit("PUT", f"/load/{random.randrange(PATHS)}", "PUT /load/[n]")

    @task(2)
    def get_a_path(self) -> None:
        self.visit("GET", f"/load/{random.randrange(PATHS)}", "GET /load/[n]")

    @task(1)
    def get_the_total(self) -> None:
        self.visit("GET", "/", "GET /")

    def visit(self, method: str, path: str, name: str) -> None:
        with self.client.request(method, path, name=name, catch_response=True) as response:
            outcome = classify(response.status_code, response.headers)
            outcomes[outcome] += 1
            if outcome == "failed":
                response.failure(f"unexpected {response.status_code}")
                return
            response.success()
        if outcome in ("waiting", "limited"):
            # Back off as told, with jitter so that waiting visitors do not return in one wave.
            retry_after = _seconds(response.headers.get("Retry-After"), default=1.0)
            time.sleep(retry_after * random.uniform(1 - JITTER, 1 + JITTER))  # gevent-patched


def classify(status: int, headers: Any) -> str:
    if headers.get("Waitroom-Status") == "waiting":
        return "waiting"
    if status == 429:
        return "limited"
    if 200 <= status < 300:
        return "admitted"
    return "failed"


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


@events.test_start.add_listener
def _reset(**_: Any) -> None:
    global _started
    outcomes.clear()
    _started = time.monotonic()


@events.test_stop.add_listener
def _stopped(**_: Any) -> None:
    global _elapsed
    _elapsed = time.monotonic() - _started


@atexit.register  # after Locust's own tables, which it prints on the way out
def _summary() -> None:
    if not outcomes:
        return
    elapsed = max(_elapsed or time.monotonic() - _started, 1e-9)
    total = sum(outcomes.values()) or 1
    print(f"\nwaitroom outcomes over {elapsed:.1f}s ({sum(outcomes.values())} answers):")
    for outcome in ("admitted", "waiting", "limited", "failed"):
        n = outcomes[outcome]
        print(f"  {outcome:<9} {n:>8}  {n / elapsed:>8.1f}/s  {100 * n / total:>5.1f}%")
