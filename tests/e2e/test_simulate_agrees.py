"""The simulator agrees with the proxy: the same visitors, sent over HTTP to a real `waitroom serve`
and decided by `waitroom simulate` at the times they were sent, get in alike; and a simulation on
a real Redis (its scripts given the virtual time) matches one on the embedded store."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream
from waitroom.config.schema import parse_config
from waitroom.sim.crowd import parse_crowd
from waitroom.sim.http import drive
from waitroom.sim.report import as_json, deterministic
from waitroom.sim.run import Options, simulate
from waitroom.sim.visitors import Behaviour, parse_patience

pytestmark = pytest.mark.e2e

NEW_SESSIONS, WINDOW, RETRY = 25, 2.0, 1
CONFIG = f"""
client_ip: {{trusted_proxies: 1}}
session: {{ttl: 1m}}
rooms:
  - {{name: shop, match: {{path_prefix: /shop}}, queue: fifo, new_sessions: {NEW_SESSIONS},
     window: {WINDOW:g}s, retry_after: {RETRY}s}}
"""
CROWD = "200 over 4s"
BEHAVIOUR = Behaviour(pages=(2, 2), time_on_site=2.0, patience=parse_patience("10%:3s-6s"))


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    folder = tmp_path_factory.mktemp("agree")
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    upstream = Upstream()
    proxy = Mitmdump(upstream.url, folder, config, env={"WAITROOM_SECRET": SECRET}, entry="serve")
    try:
        yield proxy.wait_ready()
    finally:
        proxy.stop()
        upstream.close()


def admissions(rows: list[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """visitor → (index of its admitting request among its own, sent at, answered at)."""
    seen: dict[str, int] = defaultdict(int)
    found: dict[str, tuple[int, float, float]] = {}
    for row in rows:
        key = row["visitor"]
        if row["outcome"] == "admitted" and key not in found:
            found[key] = (seen[key], row["time"], row["answered"])
        seen[key] += 1
    return found


def most_in_a_window(spans: list[tuple[float, float]]) -> int:
    """The most admissions certainly inside one window: decided after its start (sent) and before
    its end (answered)."""
    spans = sorted(spans)
    best = 0
    for i, (start, _) in enumerate(spans):
        best = max(
            best, sum(1 for sent, answered in spans[i:] if answered < start + WINDOW and sent >= start)
        )
    return best


@pytest.mark.timeout(180)
def test_a_seeded_crowd_gets_in_alike_through_serve_and_simulate(proxy: Mitmdump, tmp_path: Path) -> None:
    config = parse_config(json.loads(json.dumps(__import__("yaml").safe_load(CONFIG))))
    _records, trace = asyncio.run(drive([proxy.url], config, parse_crowd(CROWD), BEHAVIOUR, seed=7))
    assert not [r for r in trace if r["status"] == 0], "the proxy did not answer"
    log = tmp_path / "sent.jsonl"
    log.write_text("\n".join(json.dumps(row) for row in trace) + "\n")
    candidate = tmp_path / "config.yaml"
    candidate.write_text(CONFIG)
    run = asyncio.run(
        simulate(Options(candidate, arrivals=[log], as_recorded=True, visitor="field:visitor", seed=7))
    )
    assert run.tallies[0].used == len(trace)
    simulated = [
        {"visitor": row["visitor"], "outcome": outcome or None, "time": row["time"], "answered": row["time"]}
        for row, (_, _, _, outcome, _, _) in zip(trace, run.request_rows, strict=True)
    ]
    proxy_in, sim_in = admissions(trace), admissions(simulated)
    print(f"{len(trace)} requests; admitted: proxy {len(proxy_in)}, simulate {len(sim_in)}")

    # The same visitors got in, each at the same request, give or take one (a place that freed up
    # within the proxy's own latency of a request): their waits differ by one of their polls at most.
    assert proxy_in.keys() == sim_in.keys()
    assert len(proxy_in) > 160
    sent: dict[str, list[float]] = defaultdict(list)
    for row in trace:
        sent[row["visitor"]].append(row["time"])
    moved = 0
    for key, (index, at, _) in proxy_in.items():
        other, other_at, _ = sim_in[key]
        assert abs(index - other) <= 1, (key, index, other)
        polls = sent[key]
        longest = max((b - a for a, b in itertools.pairwise(polls)), default=0.0)
        assert abs(at - other_at) <= longest, (key, at, other_at)
        moved += index != other
    print(f"{moved} of {len(proxy_in)} visitors got in one request apart")
    # Admissions over time: the simulator's count never strays from the proxy's by more than the
    # visitors let in one request apart.
    proxy_times = sorted(at for _, at, _ in proxy_in.values())
    sim_times = sorted(at for _, at, _ in sim_in.values())
    for t in proxy_times + sim_times:
        assert abs(bisect.bisect_right(proxy_times, t) - bisect.bisect_right(sim_times, t)) <= moved
    # Neither lets more than new_sessions in within one window.
    assert most_in_a_window([(sent, answered) for _, sent, answered in proxy_in.values()]) <= NEW_SESSIONS
    assert run.candidate.figures.rooms["shop"].most_in_window <= NEW_SESSIONS
    # The model, for whoever reads the log: the same plans, decided in this process alone.
    model = asyncio.run(simulate(Options(candidate, crowd=parse_crowd(CROWD), behaviour=BEHAVIOUR, seed=7)))
    waits = sorted(
        sent - min(r["time"] for r in trace if r["visitor"] == key) for key, (_, sent, _) in proxy_in.items()
    )
    print(
        "model: admitted",
        model.candidate.figures.rooms["shop"].admitted,
        "wait p50",
        model.candidate.figures.rooms["shop"].wait.get("p50"),
        "| proxy: admitted",
        len(proxy_in),
        "wait p50",
        waits[len(waits) // 2] if waits else math.nan,
    )


@pytest.mark.timeout(120)
def test_redis_and_the_embedded_store_agree(tmp_path: Path) -> None:
    """The Lua scripts, given the virtual time, decide as the embedded store does: the same report."""
    server = RedisServer(tmp_path)
    try:
        candidate = tmp_path / "config.yaml"
        candidate.write_text(CONFIG)
        options = Options(candidate, crowd=parse_crowd("400 over 10s"), behaviour=BEHAVIOUR, seed=3)
        memory = deterministic(as_json(asyncio.run(simulate(options))))
        options.store = server.url
        redis = deterministic(as_json(asyncio.run(simulate(options))))
        assert redis["input"]["options"].pop("store") == "redis"
        assert memory["input"]["options"].pop("store") == "memory"
        assert redis == memory
        assert not server.client().keys("sim:*")  # the run's keys are gone
    finally:
        server.stop()
