"""loader.ConfigLoader: the config file's watcher (driven by hand: no sleeps)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons

from waitroom.addon import WaitRoom
from waitroom.metrics import METRICS


@pytest.fixture
def addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WaitRoom]:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: shop, new_sessions: 2}]\n")
    room = WaitRoom()
    with taddons.context(room) as tctx:
        tctx.configure(room, waitroom_config=str(path))
        yield room


def _reloads(result: str) -> float:
    return METRICS.config_reloads.labels(result)._value.get()  # type: ignore[no-any-return]


def test_an_unchanged_file_is_not_reloaded(addon: WaitRoom) -> None:
    before = addon.loaded
    addon.loader.check()
    assert addon.loaded is before


def test_a_changed_file_is_reloaded(addon: WaitRoom) -> None:
    assert addon.loaded is not None
    ok = _reloads("ok")
    addon.loaded.path.write_text("rooms: [{name: shop, new_sessions: 7}]\n")
    addon.loader.check()
    assert addon.loaded.config.rooms[0].new_sessions == 7
    assert _reloads("ok") == ok + 1


def test_a_bad_file_is_refused_once(addon: WaitRoom, caplog: pytest.LogCaptureFixture) -> None:
    before = addon.loaded
    assert before is not None
    before.path.write_text("rooms: [{name: shop, new_sessions: -1}]\n")
    with caplog.at_level(logging.ERROR):
        addon.loader.check()
        addon.loader.check()  # the same bad bytes: not refused again
    assert addon.loaded is not None
    assert addon.loaded.config == before.config
    assert len([r for r in caplog.records if "reload refused" in r.getMessage()]) == 1
