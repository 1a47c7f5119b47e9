"""sim/engine.py: the product's deciders on a virtual clock: the same run for the same seed,
parking that changes no admission, the cap with activity flushed in virtual time, a `delay` rule,
an outage decided by `store.on_error`, and recorded requests decided alike."""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from waitroom.config.schema import Config, parse_config
from waitroom.rooms.sessions import SessionCodec
from waitroom.sim.arrivals import Reader, VisitorKey
from waitroom.sim.clock import VirtualClock
from waitroom.sim.crowd import parse_crowd
from waitroom.sim.engine import DONE, Engine, Records
from waitroom.sim.replica import Request
from waitroom.sim.report import as_json, deterministic
from waitroom.sim.run import Options, simulate
from waitroom.sim.stores import Outage, SimStore
from waitroom.sim.visitors import Behaviour, parse_patience
from waitroom.sim.visits import Visit
from waitroom.store.memory import MemoryStore

START = 1_900_000_000.0


def room(**fields: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "match": {"path_prefix": "/shop"},
        "new_sessions": 20,
        "window": "4s",
        "retry_after": "1s",
        **fields,
    }


async def run(
    config: Config, crowd: str, behaviour: Behaviour, *, seed: int = 3, **kwargs: Any
) -> tuple[Records, Engine]:
    clock = VirtualClock(START)
    codec = SessionCodec([hashlib.sha256(f"waitroom simulate {seed}".encode()).digest()], config.session.ttl)
    visits = [Visit(START + t, None) for t in parse_crowd(crowd).times(random.Random(seed))]
    engine = Engine(
        config,
        visits,
        behaviour,
        store=MemoryStore(clock),
        clock=clock,
        codec=codec,
        seed=seed,
        crowd_request=Request("GET", "localhost", "/shop", "", ""),
        **kwargs,
    )
    return await engine.run(START + 3600), engine


def admissions(records: Records) -> list[float]:
    return [v.admitted for v in records.visitors]


def most_in(times: list[float], window: float) -> int:
    times = sorted(t for t in times)
    return max((sum(1 for u in times[i:] if u < t + window) for i, t in enumerate(times)), default=0)


async def test_same_seed_same_json(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"rooms": [room(queue="fifo")]}))
    options = Options(
        config,
        crowd=parse_crowd("300 over 10s"),
        behaviour=Behaviour(patience=parse_patience("20%:5s-20s"), time_on_site=30),
    )
    first = deterministic(as_json(await simulate(options)))
    assert first == deterministic(as_json(await simulate(options)))
    options.seed = 4
    assert deterministic(as_json(await simulate(options))) != first


@pytest.mark.parametrize("queue", ["fifo", "block"])
async def test_parking_changes_no_admission(queue: str) -> None:
    """Skipping the polls that cannot change anything gives every visitor the same admission, at
    the same instant, as asking every poll; abandoners (20%) leave the line at the same moments.
    The simulated visitors poll at the room's retry_after whatever each answer says: the line's
    own intervals are pinned to it (with longer ones an abandoned ticket is called and lapses at
    whichever ask comes first, which parking moves; the crowd simulation follows the intervals)."""
    pinned = {"max_retry_after": "1s"} if queue == "fifo" else {}
    config = parse_config({"rooms": [room(queue=queue, block_for="3s", **pinned)]})
    behaviour = Behaviour(patience=parse_patience("20%:10s-40s"), time_on_site=20, pages=(3, 3))
    exact, _ = await run(config, "500 over 15s", behaviour, exact=True)
    parked, _ = await run(config, "500 over 15s", behaviour)
    assert parked.skipped_polls > 0
    assert parked.decisions < exact.decisions / 2
    assert [v.admitted for v in exact.visitors] == [v.admitted for v in parked.visitors]
    assert [v.left for v in exact.visitors] == [v.left for v in parked.visitors]
    assert sum(1 for v in parked.visitors if v.left == "abandoned") > 20
    assert sum(not math.isnan(v.admitted) for v in parked.visitors) > 350
    for records in (exact, parked):
        assert most_in(records.admissions["shop"], 4.0) <= 20


async def test_the_cap_holds_with_virtual_flushes() -> None:
    """Two replicas note activity and flush it on the virtual clock (the product's task, made an
    event): the store never counts more sessions than max_active, and releases make room."""
    config = parse_config(
        {"session": {"ttl": "1m"}, "rooms": [room(new_sessions=100, window="10s", max_active=40)]}
    )
    behaviour = Behaviour(pages=(4, 4), time_on_site=40, release=0.5)
    records, _ = await run(config, "200 over 20s", behaviour, replicas=2, every=1.0)
    active = [s.active for s in records.samples if s.active is not None]
    assert max(active) == 40
    assert sum(not math.isnan(v.admitted) for v in records.visitors) > 100  # released places reused
    assert sum(not math.isnan(v.released) for v in records.visitors) > 30
    assert not records.errors


async def test_delay_rule_holds_in_virtual_time() -> None:
    config = parse_config(
        {
            "rate_limits": [
                {
                    "name": "slow",
                    "match": {"path_prefix": "/shop"},
                    "limit": 5,
                    "per": "1s",
                    "key": "global",
                    "algorithm": "gcra",
                    "action": "delay",
                    "max_delay": "5s",
                }
            ]
        }
    )
    records, _ = await run(config, "30 at once", Behaviour(pages=(1, 1)))
    # 5 a second: the first pass, each of the others is held for its own slot (within max_delay).
    assert records.rules[("slow", "delayed")] + records.rules[("slow", "allowed")] == 30
    assert records.rules[("slow", "delayed")] > 20
    assert records.ended - START > 4  # 30 requests at 5 a second, in virtual time
    assert all(v.stage == DONE for v in records.visitors)  # every one answered, none left asleep
    assert not records.errors


@pytest.mark.parametrize(("policy", "during"), [("closed", 0), ("open", 300)])
async def test_outage_uses_on_error(policy: str, during: int) -> None:
    """While the store fails, the config's `store.on_error` decides, as in the proxy; nothing parks
    across the outage."""
    config = parse_config({"store": {"on_error": policy}, "rooms": [room(block_for="2s")]})
    clock = VirtualClock(START)
    store = SimStore(MemoryStore(clock), clock, Outage(START, 20.0))
    codec = SessionCodec([b"k" * 32], config.session.ttl)
    visits = [Visit(START + t, None) for t in parse_crowd("300 at once").times(random.Random(1))]
    engine = Engine(
        config,
        visits,
        Behaviour(pages=(1, 1)),
        store=store,
        clock=clock,
        codec=codec,
        crowd_request=Request("GET", "h", "/shop", "", ""),
        quiet=[(START, START + 20.0)],
    )
    records = await engine.run()
    times = records.admissions["shop"]
    assert sum(1 for t in times if t < START + 20) == during
    assert len(times) == 300
    assert store.calls["admit"] >= 300  # asked, failed, and the policy decided


async def test_model_and_as_recorded_agree_on_the_same_times(tmp_path: Path) -> None:
    """Every request a model run sent, written as JSON lines and decided again as recorded, gets
    the same outcome: the engine's two modes are one decision path."""
    config = parse_config({"rooms": [room(queue="fifo")]})
    behaviour = Behaviour(patience=parse_patience("10%:5s"), time_on_site=10, pages=(2, 2))
    model, engine = await run(config, "200 over 10s", behaviour, exact=True, trace=True)
    assert engine.trace is not None
    log = tmp_path / "trace.jsonl"
    log.write_text("\n".join(json.dumps(line) for line in engine.trace))
    hits = Reader(config, key=VisitorKey("field:visitor")).read([log])
    clock = VirtualClock(START)
    codec = SessionCodec([hashlib.sha256(b"waitroom simulate 3").digest()], config.session.ttl)
    again = await Engine(
        config, [], Behaviour(), store=MemoryStore(clock), clock=clock, codec=codec, seed=3, recorded=hits
    ).run()
    assert [row[3] for row in again.requests] == [line["outcome"] or "" for line in engine.trace]
    assert sorted(admissions(model)) == sorted(v.admitted for v in again.visitors)
