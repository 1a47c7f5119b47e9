"""config_watch.ConfigLoader: the config file's watcher (driven by hand: no sleeps)."""

from __future__ import annotations

import hashlib
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
    return METRICS.process.config_reloads.labels(result)._value.get()  # type: ignore[no-any-return]


def test_an_unchanged_file_is_not_reloaded(addon: WaitRoom) -> None:
    before = addon.loaded
    addon.config_watch.check()
    assert addon.loaded is before


def test_a_changed_file_is_reloaded(addon: WaitRoom) -> None:
    assert addon.loaded is not None
    ok = _reloads("ok")
    addon.loaded.path.write_text("rooms: [{name: shop, new_sessions: 7}]\n")
    addon.config_watch.check()
    assert addon.loaded.config.rooms[0].new_sessions == 7
    assert _reloads("ok") == ok + 1


def test_a_bad_file_is_refused_once(addon: WaitRoom, caplog: pytest.LogCaptureFixture) -> None:
    before = addon.loaded
    assert before is not None
    before.path.write_text("rooms: [{name: shop, new_sessions: -1}]\n")
    with caplog.at_level(logging.ERROR):
        addon.config_watch.check()
        addon.config_watch.check()  # the same bad bytes: not refused again
    assert addon.loaded is not None
    assert addon.loaded.config == before.config
    assert len([r for r in caplog.records if "reload refused" in r.getMessage()]) == 1


def test_a_refusal_shows_until_the_file_is_good_again(addon: WaitRoom) -> None:
    loaded = addon.loaded
    assert loaded is not None
    good = loaded.path.read_text()
    loaded.path.write_text("rooms: [{name: shop, new_sessions: 2, window: soon}]\n")
    addon.config_watch.check()
    refused = addon.runtime.reload_refused
    assert refused is not None
    assert refused.error.endswith("rooms[0].window: invalid duration 'soon' (use e.g. 500ms, 60s, 30m)")
    assert refused.file_sha256 == hashlib.sha256(loaded.path.read_bytes()).hexdigest()
    assert METRICS.process.config_reload_refused._value.get() == 1
    loaded.path.write_text("rooms: [{name: shop, new_sessions: 2, window: later}]\n")
    addon.config_watch.check()  # another bad version: still refused, since the first time
    assert addon.runtime.reload_refused is not None
    assert addon.runtime.reload_refused.since == refused.since
    loaded.path.write_text(good)  # back to the bytes in force
    addon.config_watch.check()
    assert addon.runtime.reload_refused is None
    assert METRICS.process.config_reload_refused._value.get() == 0


def test_a_reload_says_what_changed(addon: WaitRoom, caplog: pytest.LogCaptureFixture) -> None:
    loaded = addon.loaded
    assert loaded is not None
    loaded.path.write_text(
        "store: {url: 'memory://'}\nrooms: [{name: shop, new_sessions: 2, max_active: 500, window: 2m},"
        " {name: blog, new_sessions: 1, match: {path_prefix: /blog}}]\n"
    )
    with caplog.at_level(logging.INFO):
        addon.config_watch.check()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waitroom")]
    assert lines[0].startswith(
        f"waitroom: reloaded {loaded.path} (sha256:{loaded.fingerprint[:12]} → sha256:"
    )
    assert "3 changes; 2 rooms, 0 rate limits, store memory://" in lines[0]
    assert lines[1:4] == [
        "waitroom:   rooms[shop].window: 1m → 2m",
        "waitroom:   rooms[shop].max_active: none → 500",
        "waitroom:   rooms[blog]: added",
    ]


def test_a_changed_template_reloads_the_config(addon: WaitRoom, caplog: pytest.LogCaptureFixture) -> None:
    """A ConfigMap that carries the config and its page changes both at once, or only the page."""
    loaded = addon.loaded
    assert loaded is not None
    page = loaded.path.parent / "page.html"
    page.write_text("<p>wait {{ room }}</p>")
    loaded.path.write_text("rooms: [{name: shop, new_sessions: 2, template: page.html}]\n")
    addon.config_watch.check()
    first = addon.loaded
    assert first is not None
    assert first.files == (page.resolve(),)
    page.write_text("<p>please wait, {{ room }}</p>")
    with caplog.at_level(logging.INFO):
        addon.config_watch.check()
    assert "waitroom:   rooms[shop].template: file changed" in caplog.text
    assert addon.loaded is not first
    assert addon.loaded is not None
    assert addon.loaded.pages.wait["shop"] != first.pages.wait["shop"]
    page.write_text("<p>{{ nosuch }}</p>")  # a bad page: refused, the running one stays
    addon.config_watch.check()
    assert addon.runtime.reload_refused is not None
    assert "rooms[0].template" in addon.runtime.reload_refused.error
