"""gate.py: the request path classifies once, and decides the rate limits before the room."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow

from waitroom.addon import WaitRoom
from waitroom.addon.gate import classify
from waitroom.web.request import RequestFacts

CONFIG = """
bypass: [/healthz]
rooms: [{name: shop, match: {path_prefix: /shop}, new_sessions: 1}]
rate_limits:
  - {name: shop-ip, match: {path_prefix: /shop}, key: ip, limit: 1, per: 60s}
"""


def _facts(path: str) -> RequestFacts:
    return RequestFacts("h", path, "GET", "10.0.0.1", lambda _: None)


async def test_classify_once_and_a_refusal_spends_no_room_admission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    addon = WaitRoom()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, waitroom_config=str(path))
        loaded = addon.loaded
        assert loaded is not None
        assert classify(loaded, _facts("/healthz")).route.bypass
        shop = classify(loaded, _facts("/shop/x"))
        assert shop.route.room is not None
        assert [r.name for r in shop.rules] == ["shop-ip"]

        routes: list[str] = []
        route = loaded.decider.router.route
        monkeypatch.setattr(loaded.decider.router, "route", lambda h, p: routes.append(p) or route(h, p))
        statuses = []
        for _ in range(2):
            flow = tflow.tflow()
            flow.request.timestamp_start = flow.request.timestamp_end = time.time()
            flow.request.path = "/shop/x"
            await addon.request(flow)
            statuses.append(flow.response.status_code if flow.response else "forwarded")
        assert routes == ["/shop/x", "/shop/x"]  # one classification per request
        assert statuses == ["forwarded", 429]  # the second is refused before the room is asked
        state = await loaded.decider.store.room_state(loaded.decider.router.route("h", "/shop").room)  # type: ignore[arg-type]
        assert state.in_window == 1


SHADOW = """
rooms: [{name: shop, match: {path_prefix: /shop}, new_sessions: 1, shadow: true}]
decision_log: {format: json, sample: 1}
"""


async def test_a_shadow_room_forwards_everyone_and_counts_what_it_would_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waitroom.addon import flowmeta
    from waitroom.config.overrides import room_key
    from waitroom.metrics import METRICS

    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(SHADOW)
    addon = WaitRoom()
    would = METRICS.shadow.requests

    def count(verdict: str, outcome: str) -> float:
        return would.labels("shop", verdict, outcome)._value.get()  # type: ignore[no-any-return]

    before = (count("would_admit", "admitted"), count("would_wait", "waiting"))
    with taddons.context(addon) as tctx:
        tctx.configure(addon, waitroom_config=str(path))
        entries = []
        for address in ("10.0.0.1", "10.0.0.2"):
            flow = tflow.tflow()
            flow.client_conn.peername = (address, 1234)
            flow.request.timestamp_start = flow.request.timestamp_end = time.time()
            flow.request.path = "/shop/x"
            await addon.request(flow)
            assert flow.response is None  # forwarded, the wait page never reached the visitor
            state = flowmeta.state(flow)
            assert (state.set_cookie, state.extra_headers) == (None, [])
            assert flowmeta.recorded(flow)["outcome"] == "shadow"
            entries.append(state.log_entry)
        assert [(e["outcome"], e["would"]) for e in entries if e] == [
            ("shadow", "admitted"),
            ("shadow", "waiting"),
        ]
        assert (count("would_admit", "admitted"), count("would_wait", "waiting")) == (
            before[0] + 1,
            before[1] + 1,
        )
        # Switched off at run time: the live room decides, fresh (the shadow's admission is not its own)
        loaded = addon.loaded
        assert loaded is not None
        addon.runtime.apply_overrides({room_key("shop", "shadow"): "false"})
        statuses = []
        for address in ("10.0.0.3", "10.0.0.4"):
            flow = tflow.tflow()
            flow.client_conn.peername = (address, 1234)
            flow.request.timestamp_start = flow.request.timestamp_end = time.time()
            flow.request.path = "/shop/x"
            await addon.request(flow)
            statuses.append(flow.response.status_code if flow.response else "forwarded")
        assert statuses == ["forwarded", 503]
