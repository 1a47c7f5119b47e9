"""runtime.Runtime and config_watch.ConfigLoader: build, swap, overrides and reload, without the hooks."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from waitroom.addon.runtime import Runtime
from waitroom.config.fields import ConfigError
from waitroom.config.overrides import Overrides
from waitroom.store.memory import MemoryStore

CONFIG = """
rooms: [{name: shop, match: {path_prefix: /shop}, new_sessions: 2}]
rate_limits: [{name: api, match: {path_prefix: /api}, key: global, limit: 5, per: 1s}]
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    return path


def test_a_load_builds_both_deciders_on_one_store(config_file: Path) -> None:
    runtime = Runtime()
    called: list[bool] = []
    runtime.on_load.append(lambda: called.append(True))
    runtime.load(config_file)
    loaded = runtime.loaded
    assert loaded is not None
    assert loaded.decider.store is loaded.limiter.store is runtime.store
    assert set(loaded.pages.wait) == set(loaded.pages.closed) == {"shop"}  # wait page, closed page
    assert called == [True]
    runtime.load(config_file)  # a reload keeps the embedded store and its windows
    assert runtime.loaded is not loaded
    assert runtime.store is loaded.decider.store


def test_a_bad_file_leaves_everything_as_it_was(config_file: Path, tmp_path: Path) -> None:
    runtime = Runtime()
    runtime.load(config_file)
    before = runtime.loaded
    bad = tmp_path / "bad.yaml"
    bad.write_text("rooms: [{name: r, new_sessions: -1}]\n")
    with pytest.raises(ConfigError, match=r"rooms\[0\]\.new_sessions"):
        runtime.load(bad)
    assert runtime.loaded is before


def test_rooms_on_a_host_need_the_host_header(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: r, new_sessions: 1, match: {host: shop.example}}]\n")
    with pytest.raises(ConfigError, match="keep_host_header"):
        Runtime().load(path, host_header_replaced=True)
    Runtime().load(path)


def test_overrides_reach_both_deciders_alike(config_file: Path) -> None:
    runtime = Runtime()
    runtime.load(config_file)
    loaded = runtime.loaded
    assert loaded is not None
    runtime.apply_overrides({"rule:api:limit": "1", "room:shop:mode": "queue-all"})
    assert loaded.decider.overrides is runtime.overrides
    assert loaded.limiter.overrides is runtime.overrides
    assert runtime.overrides == Overrides({"rule:api:limit": "1", "room:shop:mode": "queue-all"})
    runtime.load(config_file)  # a new build starts from the overrides in force
    assert runtime.loaded is not None
    assert runtime.loaded.limiter.overrides is runtime.overrides


def test_replicas_come_from_the_watch_else_the_config(config_file: Path) -> None:
    runtime = Runtime()
    runtime.load(config_file)
    assert runtime.live_replicas() is None
    assert runtime.local_replicas() == 1


async def test_the_replay_clock_stands_in_for_the_real_one() -> None:
    runtime = Runtime(clock=lambda: 5.0)
    assert runtime.clock() == 5.0
    runtime.replay_clock.set(100.0)
    await runtime.sleep(2.5)
    assert runtime.clock() == 102.5
    runtime.replay_clock.base = None
    assert runtime.clock() == 5.0


def test_a_store_that_lost_its_data_is_said_once_with_what_it_cost(caplog: pytest.LogCaptureFixture) -> None:
    runtime = Runtime()
    store = MemoryStore()
    runtime.apply_overrides({"room:shop:mode": "queue-all", "room:shop:new_sessions": "5"})
    with caplog.at_level(logging.WARNING, logger="waitroom"):
        runtime.saw_epoch(store, "first")  # what this replica knows the store by
        runtime.saw_epoch(store, "first")
        assert runtime.store_reset_at is None
        runtime.saw_epoch(store, "second")  # another replica's mark: the data was lost
        runtime.saw_epoch(store, "second")
        runtime.saw_epoch(MemoryStore(), "other")  # a new store (store.url reloaded): nothing lost
    said = [r.getMessage() for r in caplog.records if "came back empty" in r.getMessage()]
    assert said == ["waitroom: Redis came back empty: 2 overrides lost, active counts reset"]
    assert runtime.store_reset_at is not None
    assert abs(runtime.store_reset_at - time.time()) < 60
