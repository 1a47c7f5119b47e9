"""ops/views.py in-process: readiness, the room and rule views and the live gauges, read from a real
runtime on the embedded store (tests/ops drives the same through a real mitmdump)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.adminport import Proxy, RuntimeOperated
from waitroom.config.schema import RoomConfig
from waitroom.metrics import METRICS
from waitroom.ops.views import readiness, refresh_live_metrics, room_views, rule_view
from waitroom.rooms.policy import room_policy
from waitroom.store.base import RoomPolicy, RoomState, StoreError


def gauge(name: str, **labels: str) -> float | None:
    return METRICS.registry.get_sample_value(name, labels)


def room(proxy: Proxy, name: str) -> RoomConfig:
    assert proxy.runtime.config is not None
    return next(r for r in proxy.runtime.config.rooms if r.name == name)


async def fill(proxy: Proxy, name: str, visitors: int) -> None:
    """`visitors` new visitors ask the room's store, as the decider would."""
    store = proxy.runtime.store
    assert store is not None
    for i in range(visitors):
        await store.admit(room_policy(room(proxy, name)), f"visitor-{i}")


def test_ready_with_a_config_and_not_while_draining(admin_proxy: Proxy) -> None:
    body, ready = readiness(admin_proxy.operated)
    assert ready is True
    assert body["store"] == "ok"
    assert body["store_url"] == "memory://"
    assert body["replicas"] == 1
    assert str(body["config"]).endswith("waitroom.yaml")
    assert "policy" not in body  # only while the store fails
    assert gauge("waitroom_ready") == 1

    admin_proxy.drain.draining = True
    body, ready = readiness(admin_proxy.operated)
    assert (ready, body["ready"], body["draining"]) == (False, False, True)
    assert gauge("waitroom_ready") == 0


async def test_room_views_show_config_overrides_and_the_stores_window(admin_proxy: Proxy) -> None:
    await fill(admin_proxy, "shop", 3)  # two admitted, the third finds the window full: blocked
    views = await room_views(admin_proxy.operated)
    assert [v["name"] for v in views] == ["shop", "news", "line"]
    shop = views[0]
    assert shop["match"] == {"path_prefix": "/shop", "host": None}
    assert (shop["mode"], shop["new_sessions"], shop["window"], shop["block_for"]) == (
        "normal",
        2,
        "1m",
        "30s",
    )
    assert (shop["store"], shop["in_window"], shop["blocked_for"]) == ("ok", 2, 30.0)

    await admin_proxy.operated.change_overrides({"room:shop:new_sessions": "7", "room:shop:mode": "open"})
    [shop] = await room_views(admin_proxy.operated, only="shop")
    assert (shop["mode"], shop["new_sessions"]) == ("open", 7)
    assert shop["configured"] == {
        "new_sessions": 2,
        "window": "1m",
        "block_for": "30s",
        "retry_after": "10s",
        "max_retry_after": None,
        "max_active": None,
        "abandon_after": None,
        "grace": None,
        "tickets_per_ip": None,
        "places_per_ip": None,
        "draws_per_ip": None,
        "opens_at": None,
        "closes_at": None,
        "proof_of_work": None,
        "shadow": False,
    }
    assert shop["ignored"] == []


async def test_a_room_whose_store_read_fails_says_so_and_the_others_still_answer(admin_proxy: Proxy) -> None:
    real = admin_proxy.runtime.store
    assert real is not None

    class HalfBroken:
        async def room_state(self, policy: RoomPolicy) -> RoomState:
            if policy.name == "shop":
                raise StoreError("connection refused")
            return await real.room_state(policy)

        async def queue_state(self, policy: Any) -> Any:
            return await real.queue_state(policy)

    class Operated(RuntimeOperated):
        @property
        def store(self) -> object:
            return HalfBroken()

    operated = Operated(admin_proxy.runtime, admin_proxy.drain)
    views = {v["name"]: v for v in await room_views(operated)}
    assert (views["shop"]["store"], views["shop"]["in_window"]) == ("failing", None)
    assert (views["news"]["store"], views["news"]["in_window"]) == ("ok", 0)


async def test_a_fifo_room_shows_its_line(admin_proxy: Proxy) -> None:
    await fill(admin_proxy, "line", 1)  # the one place of the window is taken: nobody waits yet
    [line] = await room_views(admin_proxy.operated, only="line")
    assert (line["order"], line["in_window"], line["admissions_per_minute"]) == ("fifo", 1, 1.0)
    queue = line["queue"]
    assert isinstance(queue, dict)
    assert (queue["length"], queue["called"]) == (0, 0)
    [shop] = await room_views(admin_proxy.operated, only="shop")
    assert (shop["order"], "queue" in shop) == ("block", False)


def test_rule_view_shows_the_limit_in_force_and_the_configured_one(admin_proxy: Proxy) -> None:
    config = admin_proxy.runtime.config
    assert config is not None
    view = rule_view(config.rate_limits[0], admin_proxy.runtime.overrides)
    assert view == {
        "name": "api",
        "key": "global",
        "limit": 5,
        "per": "1m",
        "algorithm": "sliding_window",
        "action": "reject",
        "shadow": False,
        "burst": None,
        "max_delay": "1s",
        "configured": {"limit": 5, "burst": None, "max_delay": "1s", "shadow": False},
        "ignored": [],
    }


async def test_a_scrape_sets_the_live_gauges(admin_proxy: Proxy) -> None:
    await fill(admin_proxy, "shop", 3)
    await admin_proxy.operated.change_overrides({"rule:api:limit": "9", "room:news:mode": "queue-all"})
    await refresh_live_metrics(admin_proxy.operated)
    assert gauge("waitroom_store_up") == 1
    assert gauge("waitroom_room_window_admissions", room="shop") == 2
    assert gauge("waitroom_room_block_remaining_seconds", room="shop") == 30
    assert gauge("waitroom_room_blocked", room="shop") == 1
    assert gauge("waitroom_room_blocked", room="news") == 1  # queue-all: blocked without a block
    assert gauge("waitroom_room_mode", room="news", mode="queue_all") == 1
    assert gauge("waitroom_room_mode", room="news", mode="normal") == 0
    assert gauge("waitroom_rate_limit_limit", rule="api") == 9
    assert gauge("waitroom_degraded", policy="local") == 0


@pytest.mark.parametrize("draining", [False, True])
async def test_no_config_no_rooms_and_not_ready(admin_proxy: Proxy, draining: bool) -> None:
    class Unloaded(RuntimeOperated):
        @property
        def config(self) -> None:
            return None

    admin_proxy.drain.draining = draining
    operated = Unloaded(admin_proxy.runtime, admin_proxy.drain)
    assert await room_views(operated) == []
    body, ready = readiness(operated)
    assert ready is False
    assert "store_url" not in body


async def test_a_shadow_room_shows_and_reports_its_own_figures(admin_proxy: Proxy) -> None:
    from waitroom.rooms.shadow import ShadowStore

    runtime = admin_proxy.runtime
    await runtime.change_overrides({"room:line:shadow": "true", "room:shop:shadow": "true"})
    store = runtime.store
    assert store is not None
    shadow = ShadowStore(store)
    for i in range(3):  # the shadow's window: two admitted, the third starts its block
        await shadow.admit(room_policy(room(admin_proxy, "shop")), f"visitor-{i}")
    await fill(admin_proxy, "news", 1)
    views = {v["name"]: v for v in await room_views(admin_proxy.operated)}
    assert (views["shop"]["shadow"], views["shop"]["in_window"]) == (True, 2)
    assert views["news"]["shadow"] is False
    await refresh_live_metrics(admin_proxy.operated)
    assert gauge("waitroom_shadow_room", room="shop") == 1
    assert gauge("waitroom_shadow_room", room="news") == 0
    assert gauge("waitroom_shadow_window_admissions", room="shop") == 2
    assert gauge("waitroom_shadow_eta_seconds", room="shop") == 30  # the block a newcomer would wait
    assert gauge("waitroom_shadow_queue_length", room="line") == 0
    assert gauge("waitroom_shadow_eta_seconds", room="line") == 0  # a place at once
    # Live again: the room's own (empty) window, and no shadow figures
    await runtime.change_overrides({"room:shop:shadow": None})
    views = {v["name"]: v for v in await room_views(admin_proxy.operated)}
    assert (views["shop"]["shadow"], views["shop"]["in_window"]) == (False, 0)
    await refresh_live_metrics(admin_proxy.operated)
    assert gauge("waitroom_shadow_window_admissions", room="shop") is None
    assert gauge("waitroom_shadow_room", room="shop") == 0
