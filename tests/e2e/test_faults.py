"""Issue 26: the line and the cap keep their promises through store faults, under the shipped
default policy (`store.on_error: local`), on 4 real `waitroom serve` replicas sharing real Redis,
beside CPU hogs in `make test` (--busy).

Each scenario runs both at once on the same replicas: a `fifo` room (`/item`) where 150 visitors
arrive and poll as the page does (bench/fairness.py), and a capped room (`/`) where 40 visitors
come in, browse and leave, while Redis fails once:

- stopped 3 s (SIGSTOP), killed and restarted with its data (AOF), restarted empty;
- 80 ms away for the whole run (a relay in front of it);
- failed over: the master killed, one of three redis-sentinels promotes the replica.

The line: no window admits more than new_sessions, everyone who kept polling gets in, and — where
the store kept its data — nobody is let in more than one poll interval after someone holding a
later ticket. The cap: the count inside, sampled in Redis whenever it answers and counted from the
visitors' side, never passes max_active. docs/stores.md has the table of what each policy promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis as redis_py

from bench import fairness
from tests.conftest import SECRET, StartProxy
from tests.support import DelayRelay, RedisSentinel, RedisServer, Upstream
from waitroom.rooms.activity import active_ttl

pytestmark = [pytest.mark.e2e, pytest.mark.exact]
ENV = {"WAITROOM_SECRET": SECRET}
KEEP_DATA = ["--appendonly", "yes", "--appendfsync", "always"]
FAULT_AT = 6.0
"""Seconds into the crowds when Redis fails: the line is long and the room full by then."""
CAP = 5
TTL = 2.0


@dataclass
class Setup:
    """What the replicas talk to, the fault, and who holds the data now."""

    url: str
    fault: Callable[[], None]
    primary: Callable[[], RedisServer]
    stop: Callable[[], None]
    keeps_data: bool = True
    breaks: bool = True
    """False where Redis never stops answering (only slower): no outage, no exception to the order."""
    """False where the store loses its data (restarted empty): the line's order is not promised,
    and a session already inside is let in until its replica hears it is no longer counted."""


def stopped_3s(tmp_path: Path) -> Setup:
    server = RedisServer(tmp_path, extra=KEEP_DATA)

    def fault() -> None:
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3.0)  # the fault's length, in the fault's own thread
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)

    return Setup(server.url, fault, lambda: server, server.stop)


def restarted(tmp_path: Path, *, keep: bool) -> Setup:
    server = RedisServer(tmp_path, extra=KEEP_DATA if keep else None)

    def fault() -> None:
        server.kill()
        time.sleep(2.0)  # down for 2 s, in the fault's own thread
        server.start()

    return Setup(server.url, fault, lambda: server, server.stop, keeps_data=keep)


def slowed_80ms(tmp_path: Path) -> Setup:
    server = RedisServer(tmp_path)
    relay = DelayRelay(server.port, 80)

    def stop() -> None:
        relay.stop()
        server.stop()

    return Setup(relay.url, lambda: None, lambda: server, stop, breaks=False)


def failed_over(tmp_path: Path) -> Setup:
    sentinel = RedisSentinel(tmp_path, sentinels=3)
    return Setup(sentinel.url(), sentinel.fail_over, sentinel.primary, sentinel.stop)


SCENARIOS: dict[str, Callable[[Path], Setup]] = {
    "stopped-3s": stopped_3s,
    "killed-restarted": lambda tmp: restarted(tmp, keep=True),
    "restarted-empty": lambda tmp: restarted(tmp, keep=False),
    "slowed-80ms": slowed_80ms,
    "failed-over": failed_over,
}


def config(redis_url: str) -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 250ms}}
session: {{ttl: {TTL:g}s}}
rooms:
  - name: {fairness.ROOM}
    match: {{path_prefix: /item}}
    queue: fifo
    new_sessions: {fairness.NEW_SESSIONS}
    window: {fairness.WINDOW:g}s
    retry_after: {fairness.RETRY_AFTER:g}s
    grace: {fairness.GRACE:g}s
    abandon_after: 20s
  - {{name: shop, match: {{path_prefix: /}}, new_sessions: 1000, max_active: {CAP}, retry_after: 1s}}
"""


@dataclass
class Stay:
    """A visitor of the capped room, from its side: certainly inside from the answer that let it
    in until it sent its last request that was let in (a page or its release)."""

    entered: float = 0.0
    left: float = 0.0


async def cap_visitor(
    i: int, rng: random.Random, urls: list[str], stays: list[Stay], errors: list[str]
) -> None:
    """Arrives within the first 15 s, waits for a place, browses, then leaves: by a release (three
    in four) or by going idle. A request that fails is asked again later, as a page does."""

    async def status(client: httpx.AsyncClient, path: str) -> int:
        try:
            return (await client.get(f"{rng.choice(urls)}{path}")).status_code
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
            return 0

    await asyncio.sleep(rng.uniform(0, 15))
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(600):  # as a page polls, only faster; bounded
            if await status(client, "/page") == 200:
                break
            await asyncio.sleep(rng.uniform(0.1, 0.3))
        else:
            return
        stay = Stay(entered=time.monotonic())
        stays.append(stay)
        paths = ["/page"] * rng.randint(1, 4) + (["/release/done"] if i % 4 else [])
        for path in paths:  # browse, then maybe say it is done
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            sent = time.monotonic()
            if await status(client, path) == 200:
                stay.left = sent


def most_inside(stays: list[Stay]) -> int:
    """The most visitors certainly inside at one moment, from their own side."""
    # A stay with no later request let in was certainly inside only at the instant it entered.
    events = sorted([(s.entered, 1) for s in stays] + [(max(s.left, s.entered), -1) for s in stays])
    inside = most = 0
    for _, step in events:  # at equal times a departure (-1) sorts first: not counted together
        inside += step
        most = max(most, inside)
    return most


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_line_and_the_cap_keep_their_promises_through_a_redis_fault(
    start_proxy: StartProxy, upstream: Upstream, tmp_path: Path, scenario: str
) -> None:
    setup = SCENARIOS[scenario](tmp_path)
    samples: list[int] = []
    windows: list[int] = []
    stays: list[Stay] = []
    cap_errors: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        """The count inside, as Redis sees it, whenever the primary answers."""
        while not stop.is_set():
            with contextlib.suppress(redis_py.RedisError, OSError):
                redis = setup.primary().client()
                seconds, micros = redis.time()
                now = seconds * 1_000_000 + micros
                counted = now - round(active_ttl(TTL) * 1_000_000)
                samples.append(int(redis.zcount("waitroom:{room:shop}:active", f"({counted}", "+inf")))
                since = now - round(fairness.WINDOW * 1_000_000)
                windows.append(
                    int(redis.zcount(f"waitroom:{{room:{fairness.ROOM}}}:log", f"({since}", "+inf"))
                )
            stop.wait(0.05)

    async def crowds(urls: list[str]) -> list[fairness.Visitor]:
        capped = (cap_visitor(i, random.Random(i), urls, stays, cap_errors) for i in range(40))
        line, *_ = await asyncio.wait_for(
            asyncio.gather(fairness.drive(urls, visitors=150, bound=150), *capped), timeout=200
        )
        return line

    try:
        proxies = [start_proxy(config(setup.url), upstream.url, env=ENV) for _ in range(4)]
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        outage: list[float] = []

        def fault() -> None:  # when Redis stopped answering, and when it could answer again
            outage.append(time.monotonic())
            setup.fault()
            outage.append(time.monotonic())

        injected = threading.Timer(FAULT_AT, fault)
        injected.start()
        try:
            crowd = asyncio.run(crowds([p.url for p in proxies]))
        finally:
            injected.join(60)
            stop.set()
            sampler.join(5)
    finally:
        setup.stop()
    figures = fairness.figures(crowd, (outage[0], outage[1]) if setup.breaks else None)
    print(figures, {"samples": len(samples), "most_sampled": max(samples, default=0)}, most_inside(stays))

    # The line. Each visitor's poll met the outage at most once or twice: not errors. On a
    # saturated machine a proxy may accept a connection late (the visitor asks again, as the page
    # does): counted apart, as in tests/e2e/test_fair_queue.py.
    assert figures["errors"] == figures["error_kinds"].get("ConnectTimeout", 0), figures
    assert figures["stayed_not_admitted"] == 0, figures  # the line moved on from where it stopped
    # The window, as the store counts it (sampled in Redis whenever it answers), and from the
    # visitors' side. A visitor whose admission's answer was lost in the outage's backlog (a call
    # that timed out after Redis ran it) is let in at its next ask within the grace, as the same
    # session: the store counted it when it ran, the visitor's side sees it later. The visitor-side
    # figure may then count it in a later window too (issue 26: one run in six showed 22 of 20
    # there through the 3 s stop), so it is printed, and the store's own count is the bound.
    assert windows
    assert max(windows) <= fairness.NEW_SESSIONS, max(windows)
    if figures["most_admissions_in_a_window"] > fairness.NEW_SESSIONS:
        print("visitor-side window above new_sessions:", figures["most_admissions_in_a_window"])
    # The cap, in Redis and from the visitors' side; and it was reached: the test measured something.
    assert len(samples) > 50
    assert max(samples) <= CAP, samples
    assert max(samples) == CAP
    assert len(stays) == 40
    assert set(cap_errors) <= {"ConnectTimeout"}, cap_errors
    if setup.keeps_data:
        assert most_inside(stays) <= CAP, stays
    if not setup.keeps_data:
        return  # the line's order went with the store's data: not promised (docs/stores.md)
    # The order: nobody let in more than one poll interval after a later ticket, with the one
    # exception docs/stores.md states: a ticket called in the moment before the outage, whose polls
    # through it reached only replicas that had not heard of its call, gets in at its first poll
    # after the outage, within one poll interval of everyone let in after it (fairness.figures).
    stories = " | ".join(figures["worst_inversion_stories"])
    assert figures["worst_order_inversion_s"] <= figures["order_bound_s"], stories
