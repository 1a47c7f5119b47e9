"""addon/apply.py: what a decision does to a flow (rerouting, headers added, the answer in the
visitor's language and form)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from waitroom.addon import WaitRoom, apply, flowmeta


def test_reroute_keeps_path_and_query_under_the_upstreams_path() -> None:
    flow = tflow.tflow()
    flow.request.path = "/api/x?q=1"
    with taddons.context():
        apply.reroute(flow, "https://other.example:8443/base/")
    assert (flow.request.scheme, flow.request.host, flow.request.port) == ("https", "other.example", 8443)
    assert flow.request.path == "/base/api/x?q=1"


def test_add_headers_puts_the_decisions_headers_on_the_answer() -> None:
    flow = tflow.tflow(resp=True)
    state = flowmeta.state(flow)
    state.set_cookie = "waitroom_shop=t; Path=/"
    state.extra_headers = [("RateLimit", '"api";r=1;t=1')]
    apply.add_headers(flow)
    assert flow.response is not None
    assert flow.response.headers["Set-Cookie"] == "waitroom_shop=t; Path=/"
    assert flow.response.headers["RateLimit"] == '"api";r=1;t=1'
    assert state.set_cookie is None
    assert not state.extra_headers


PAGES_CONFIG = """
rooms:
  - {name: shop, title: {en: Summer sale, de: Sommerschlussverkauf}, match: {path_prefix: /shop},
     new_sessions: 1, window: 60s, block_for: 60s}
rate_limits:
  - {name: pages, match: {path_prefix: /limited}, key: ip, limit: 1, per: 60s}
"""
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def pages_addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WaitRoom]:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(PAGES_CONFIG)
    room = WaitRoom()
    with taddons.context(room) as tctx:
        tctx.configure(room, waitroom_config=str(path))
        room.running()
        yield room


async def ask(addon: WaitRoom, path: str, method: str = "GET", **headers: str) -> http.Response:
    flow = tflow.tflow()
    flow.request.timestamp_start = flow.request.timestamp_end = time.time()
    flow.request.method, flow.request.path = method, path
    flow.request.headers.update({name.replace("_", "-"): value for name, value in headers.items()})
    await addon.request(flow)
    return flow.response or http.Response.make(200, b"upstream")  # forwarded


async def test_a_refusal_is_a_page_for_a_browser_and_problem_json_for_others(pages_addon: WaitRoom) -> None:
    await ask(pages_addon, "/limited/a")
    api = await ask(pages_addon, "/limited/a", Accept="*/*")
    assert (api.status_code, api.headers["Content-Type"]) == (429, "application/problem+json")
    page = await ask(pages_addon, "/limited/a", Accept=BROWSER, Accept_Language="de-AT,de;q=0.9")
    assert (page.status_code, page.headers["Content-Type"]) == (429, "text/html; charset=utf-8")
    assert page.headers["Retry-After"] == api.headers["Retry-After"]
    assert page.headers["RateLimit-Policy"] == api.headers["RateLimit-Policy"]
    assert "<h1>Zu viele Anfragen</h1>" in page.get_text()
    posted = await ask(pages_addon, "/limited/a", "POST", Accept=BROWSER)
    assert 'http-equiv="refresh"' not in posted.get_text()
    assert "Your form was not sent." in posted.get_text()


async def test_the_wait_page_shows_the_title_never_the_name(pages_addon: WaitRoom) -> None:
    await ask(pages_addon, "/shop")
    page = (await ask(pages_addon, "/shop", Accept=BROWSER, Accept_Language="de")).get_text()
    assert "Warteraum: Sommerschlussverkauf" in page
    assert "shop" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the data keeps `room`


async def test_a_failed_decision_says_the_line_cannot_be_checked(
    pages_addon: WaitRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = pages_addon.loaded
    assert loaded is not None

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(loaded.decider, "decide", broken)
    page = await ask(pages_addon, "/shop", Accept=BROWSER)
    assert page.status_code == 503
    assert "We cannot check the line right now." in page.get_text()
    assert "So many people" not in re.sub(r"<script.*?</script>", "", page.get_text(), flags=re.S)
