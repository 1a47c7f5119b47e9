"""The decision table through the real WaitRoom addon, with mitmproxy's own test helpers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import ctx, exceptions, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from waitroom.addon import WaitRoom

CONFIG = """
bypass: [/healthz]
session: {ttl: 600s}
rooms:
  - {name: shop, match: {path_prefix: /shop}, new_sessions: 2, window: 60s, block_for: 10s, retry_after: 3s}
  - {name: blog, match: {path_prefix: /blog}, new_sessions: 1}
"""


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def addon(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[WaitRoom]:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    room = WaitRoom(clock=clock)
    with taddons.context(room) as tctx:
        tctx.configure(room, waitroom_config=str(path))
        room.running()
        yield room


def fresh_flow() -> http.HTTPFlow:
    """A test flow that arrived just now (tflow's are dated 2000: the proxy would shed them as
    having queued for decades)."""
    flow = tflow.tflow()
    flow.request.timestamp_start = flow.request.timestamp_end = time.time()
    return flow


async def send(
    addon: WaitRoom, path: str, cookie: str | None = None, *, tls: bool = False, **headers: str
) -> http.HTTPFlow:
    flow = fresh_flow()
    flow.client_conn.timestamp_tls_setup = 1.0 if tls else None
    flow.request.path = path
    if cookie:
        flow.request.headers["Cookie"] = cookie
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    await addon.request(flow)
    if flow.response is None:
        flow.response = http.Response.make(200, b"upstream")
    addon.responseheaders(flow)
    return flow


def cookie_of(flow: http.HTTPFlow) -> str:
    assert flow.response is not None
    return flow.response.headers["Set-Cookie"].split(";")[0]


class CountingStore:
    def __init__(self, inner: object) -> None:
        self.inner, self.calls = inner, 0

    async def admit(self, *args: object) -> object:
        self.calls += 1
        return await self.inner.admit(*args)  # type: ignore[attr-defined]


async def test_decision_table(addon: WaitRoom, clock: Clock) -> None:
    assert addon.loaded is not None
    untouched = await send(addon, "/other")
    assert untouched.response.content == b"upstream"  # type: ignore[union-attr]
    assert "waitroom" not in untouched.metadata
    assert "Set-Cookie" not in untouched.response.headers  # type: ignore[union-attr]

    first = await send(addon, "/shop/a")
    assert first.metadata["waitroom"] == {"room": "shop", "outcome": "admitted"}
    set_cookie = first.response.headers["Set-Cookie"]  # type: ignore[union-attr]
    assert set_cookie.startswith("waitroom_shop=")
    assert "HttpOnly" in set_cookie
    assert "Secure" not in set_cookie
    await send(addon, "/shop/b")

    blocked = await send(addon, "/shop/c")
    assert blocked.metadata["waitroom"]["outcome"] == "waiting"
    assert blocked.response.status_code == 503  # type: ignore[union-attr]
    assert blocked.response.headers["Retry-After"] == "3"  # type: ignore[union-attr]

    # A session passes during the block, without asking the store.
    counting = CountingStore(addon.loaded.decider.store)
    addon.loaded.decider.store = counting  # type: ignore[assignment]
    session = await send(addon, "/shop/x", cookie=cookie_of(first))
    assert session.metadata["waitroom"]["outcome"] == "session"
    assert "Set-Cookie" not in session.response.headers  # type: ignore[union-attr]
    assert counting.calls == 0

    # Another room's cookie opens nothing here; garbage is no cookie.
    blog = await send(addon, "/blog", cookie=cookie_of(first).replace("waitroom_shop", "waitroom_blog"))
    assert blog.metadata["waitroom"]["outcome"] == "admitted"
    garbage = await send(addon, "/shop/x", cookie="waitroom_shop=%%%garbage")
    assert garbage.metadata["waitroom"]["outcome"] == "waiting"

    assert (await send(addon, "/healthz")).response.content == b"upstream"  # type: ignore[union-attr]

    clock.now += 11  # the block is over, but the 60 s window is still full: a new block starts
    assert (await send(addon, "/shop/y")).metadata["waitroom"]["outcome"] == "waiting"
    clock.now += 61  # window and block both over
    assert (await send(addon, "/shop/y")).metadata["waitroom"]["outcome"] == "admitted"


async def test_renewal_is_sent_once_after_half_the_ttl(addon: WaitRoom, clock: Clock) -> None:
    cookie = cookie_of(await send(addon, "/shop"))
    clock.now += 100
    assert "Set-Cookie" not in (await send(addon, "/shop", cookie=cookie)).response.headers  # type: ignore[union-attr]
    clock.now += 250  # past ttl/2
    renewed = await send(addon, "/shop", cookie=cookie)
    new_cookie = cookie_of(renewed)
    assert new_cookie != cookie
    assert "Set-Cookie" not in (await send(addon, "/shop", cookie=new_cookie)).response.headers  # type: ignore[union-attr]
    clock.now += 500  # the old cookie expired (600 s after issue), the renewed one lives on
    assert (await send(addon, "/shop", cookie=cookie)).metadata["waitroom"]["outcome"] != "session"
    assert (await send(addon, "/shop", cookie=new_cookie)).metadata["waitroom"]["outcome"] == "session"


async def test_poll_is_answered_by_the_proxy(addon: WaitRoom) -> None:
    flow = fresh_flow()
    flow.request.path = "/shop"
    flow.request.headers["Accept"] = "application/json"
    flow.request.headers["Waitroom-Poll"] = "1"
    await addon.request(flow)
    assert flow.response is not None
    assert flow.response.status_code == 200
    assert flow.response.json() == {"status": "admitted", "room": "shop"}
    addon.responseheaders(flow)
    assert flow.response.headers["Set-Cookie"].startswith("waitroom_shop=")


async def test_json_wait_answer(addon: WaitRoom) -> None:
    for _ in range(2):
        await send(addon, "/shop")
    flow = await send(addon, "/shop", Accept="application/json")
    assert flow.response is not None
    assert flow.response.json()["status"] == "waiting"


async def test_secure_auto_follows_the_visitors_connection(addon: WaitRoom) -> None:
    over_tls = await send(addon, "/shop", tls=True)
    assert over_tls.response.headers["Set-Cookie"].endswith("; Secure")  # type: ignore[union-attr]


async def test_secure_cookie_when_configured(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("session: {ttl: 600s}", "session: {ttl: 600s, secure: 'true'}"))
    room = WaitRoom(clock=clock)
    with taddons.context(room) as tctx:
        tctx.configure(room, waitroom_config=str(path))
        flow = await send(room, "/shop")
        assert flow.response is not None
        assert flow.response.headers["Set-Cookie"].endswith("; Secure")


async def test_bad_config_at_start_logs_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: r, new_sessions: -1}]\n")
    room = WaitRoom()
    with taddons.context(room) as tctx, caplog.at_level(logging.ERROR):
        tctx.configure(room, waitroom_config=str(path))
    assert room.loaded is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "rooms[0].new_sessions" in errors[0]


async def test_bad_reload_keeps_the_running_config(addon: WaitRoom, tmp_path: Path) -> None:
    before = addon.loaded
    bad = tmp_path / "bad.yaml"
    bad.write_text("rooms: [{name: r, new_sessions: 1, window: never}]\n")
    with pytest.raises(exceptions.OptionsError, match=r"rooms\[0\]\.window"):
        ctx.options.update(waitroom_config=str(bad))  # a run-time change, as from the console
    # mitmproxy puts the old value back (and configures with it again): same file, same store.
    assert addon.loaded is not None
    assert before is not None
    assert addon.loaded.path == before.path
    assert addon.loaded.config == before.config
    assert addon.loaded.decider.store is before.decider.store


async def test_host_rooms_need_keep_host_header(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rooms: [{name: r, new_sessions: 1, match: {host: shop.example.com}}]\n")
    room = WaitRoom()
    with taddons.context(Proxyserver(), room) as tctx, caplog.at_level(logging.ERROR):
        tctx.configure(room, mode=["reverse:http://127.0.0.1:1"], waitroom_config=str(path))
        assert room.loaded is None
        assert "rooms[0].match.host" in caplog.text
        tctx.configure(room, keep_host_header=True)
        assert room.loaded is not None


async def test_shared_store_needs_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WAITROOM_SECRET", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("store: {url: 'redis://127.0.0.1:1/0'}\n")
    room = WaitRoom()
    with taddons.context(room) as tctx, caplog.at_level(logging.ERROR):
        tctx.configure(room, waitroom_config=str(path))
    assert room.loaded is None
    assert "WAITROOM_SECRET" in caplog.text
