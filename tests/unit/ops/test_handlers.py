"""ops/handlers.py in-process: every admin endpoint, its token, its bodies and its refusals, served
on the test's own event loop by the real routes over a real runtime (tests/ops: the same through a
real mitmdump, across replicas)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.adminport import TOKEN, Proxy, RuntimeOperated, serving
from waitroom.ops.handlers import MAX_BODY
from waitroom.rooms.policy import room_policy
from waitroom.store.base import StoreError

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def call(url: str, method: str, path: str, body: object = None, **kwargs: object) -> httpx.Response:
    headers = kwargs.pop("headers", AUTH)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        content = kwargs.pop("content", None)
        if body is not None:
            content = json.dumps(body)
        return await client.request(method, path, content=content, headers=headers)  # type: ignore[arg-type]


async def test_probes_and_metrics_need_no_token(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        health = await call(url, "GET", "/healthz", headers={})
        assert (health.status_code, health.text, health.headers["Cache-Control"]) == (200, "ok\n", "no-store")
        ready = await call(url, "GET", "/readyz", headers={})
        assert (ready.status_code, ready.json()["ready"]) == (200, True)
        metrics = await call(url, "GET", "/metrics", headers={})
        assert metrics.status_code == 200
        assert "waitroom_ready 1.0" in metrics.text
        admin_proxy.drain.draining = True
        assert (await call(url, "GET", "/readyz", headers={})).status_code == 503


async def test_the_api_wants_the_token_and_is_off_without_one(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = await call(url, "GET", "/admin/status", headers=headers)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"] == 'Bearer realm="waitroom"'
        assert (
            await call(url, "GET", "/admin/status", headers={"Authorization": f"bearer  {TOKEN}"})
        ).is_success
    async with serving(admin_proxy.operated, token=None) as url:
        off = await call(url, "POST", "/admin/rooms/shop/open")
        assert off.status_code == 404
        assert "the admin API is off" in off.json()["error"]
        assert (await call(url, "GET", "/metrics", headers={})).status_code == 200


async def test_status_lists_rooms_and_rules_with_readiness(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        status = (await call(url, "GET", "/admin/status")).json()
        assert (status["ready"], status["store"]) == (True, "ok")
        assert [r["name"] for r in status["rooms"]] == ["shop", "news", "line"]
        assert [r["name"] for r in status["rules"]] == ["api"]
        rooms = (await call(url, "GET", "/admin/rooms")).json()["rooms"]
        assert [r["name"] for r in rooms] == ["shop", "news", "line"]
        assert (await call(url, "GET", "/admin/rooms/news")).json()["match"]["host"] == "news.example"
        missing = await call(url, "GET", "/admin/rooms/nope")
        assert (missing.status_code, missing.json()) == (404, {"error": "no room named 'nope'"})
        nowhere = await call(url, "GET", "/nowhere")
        assert (nowhere.status_code, nowhere.json()) == (404, {"error": "no such endpoint: /nowhere"})


async def test_room_settings_change_the_running_deciders(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        changed = await call(url, "PATCH", "/admin/rooms/shop", {"new_sessions": 7, "block_for": "10s"})
        assert changed.status_code == 200
        assert (changed.json()["new_sessions"], changed.json()["block_for"]) == (7, "10s")
        assert admin_proxy.runtime.overrides.room_mode("shop").value == "normal"
        loaded = admin_proxy.runtime.loaded
        assert loaded is not None
        assert loaded.decider.overrides is admin_proxy.runtime.overrides  # passed in, not called back

        for action, mode in (("queue-all", "queue-all"), ("open", "open"), ("normal", "normal")):
            answer = await call(url, "POST", f"/admin/rooms/shop/{action}")
            assert (answer.status_code, answer.json()["mode"]) == (200, mode)
        reset = (await call(url, "POST", "/admin/rooms/shop/reset")).json()
        assert (reset["mode"], reset["new_sessions"], reset["block_for"]) == ("normal", 2, "30s")
        unknown = await call(url, "POST", "/admin/rooms/shop/explode")
        assert unknown.status_code == 404
        assert "unknown room action 'explode'" in unknown.json()["error"]


async def test_unblock_ends_a_block_in_the_store(admin_proxy: Proxy) -> None:
    store = admin_proxy.runtime.store
    config = admin_proxy.runtime.config
    assert store is not None
    assert config is not None
    for i in range(3):
        await store.admit(room_policy(config.rooms[0]), f"visitor-{i}")
    async with serving(admin_proxy.operated) as url:
        assert (await call(url, "GET", "/admin/rooms/shop")).json()["blocked_for"] == 30.0
        unblocked = await call(url, "POST", "/admin/rooms/shop/unblock")
        assert (unblocked.status_code, unblocked.json()["blocked_for"]) == (200, 0.0)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (
            b"",
            "nothing to change: give any of mode, new_sessions, window, block_for, retry_after, "
            "max_retry_after, max_active, abandon_after, grace, tickets_per_ip, places_per_ip, "
            "draws_per_ip, opens_at, closes_at, proof_of_work, shadow",
        ),
        (
            b"{}",
            "nothing to change: give any of mode, new_sessions, window, block_for, retry_after, "
            "max_retry_after, max_active, abandon_after, grace, tickets_per_ip, places_per_ip, "
            "draws_per_ip, opens_at, closes_at, proof_of_work, shadow",
        ),
        (b"not json", "the body is not JSON"),
        (b"\xff\xfe", "the body is not JSON"),
        (b"[1]", "the body must be a JSON object"),
        (b'{"new_sessions": NaN}', "the body is not JSON"),
        (
            b'{"queue": "fifo"}',
            "unknown room setting 'queue' (known: mode, new_sessions, window, block_for, "
            "retry_after, max_retry_after, max_active, abandon_after, grace, tickets_per_ip, "
            "places_per_ip, draws_per_ip, opens_at, closes_at, proof_of_work, shadow)",
        ),
        (b'{"max_activ": 5}', None),  # "did you mean max_active?"
        (b'{"new_sessions": 0}', None),
        (b'{"block_for": "soon"}', None),
        (b'{"max_active": 0}', None),
        (b'{"retry_after": "0s"}', "room shop: retry_after: must be at least 1s (nothing was changed)"),
        (b'{"tickets_per_ip": 3}', "room shop: tickets_per_ip needs queue: fifo (nothing was changed)"),
        (b'{"proof_of_work": 16}', "room shop: proof_of_work needs queue: fifo (nothing was changed)"),
        (b'{"proof_of_work": {"difficulty": 30}}', None),
        (b'{"proof_of_work": "hard"}', None),
        # issue 27's N9: far-off years and an inverted event are one clear 400
        (b'{"closes_at": "9999-12-31T23:00:00-05:00"}', None),
        (b'{"closes_at": "0001-01-01T00:00:00+01:00"}', None),
        (
            b'{"opens_at": "2030-01-01T10:00:00+00:00"}',
            "room shop: opens_at needs queue: fifo (nothing was changed)",
        ),
    ],
)
async def test_bad_room_bodies_are_400_and_change_nothing(
    admin_proxy: Proxy, content: bytes, error: str | None
) -> None:
    async with serving(admin_proxy.operated) as url:
        answer = await call(url, "PATCH", "/admin/rooms/shop", content=content)
        assert answer.status_code == 400
        if error is not None:
            assert answer.json()["error"] == error
        if b'"max_activ"' in content:
            assert "did you mean max_active?" in answer.json()["error"]
    assert admin_proxy.runtime.overrides.values == {}


async def test_a_body_over_the_bound_is_413(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        big = await call(url, "PATCH", "/admin/rooms/shop", content=b" " * (MAX_BODY + 1))
        assert (big.status_code, big.json()["error"]) == (413, f"the body is larger than {MAX_BODY} bytes")


async def test_rules_set_and_reset_their_limit(admin_proxy: Proxy) -> None:
    async with serving(admin_proxy.operated) as url:
        assert [r["limit"] for r in (await call(url, "GET", "/admin/rules")).json()["rules"]] == [5]
        changed = await call(url, "PATCH", "/admin/rules/api", {"limit": 9})
        assert (changed.status_code, changed.json()["limit"], changed.json()["configured"]) == (
            200,
            9,
            {"limit": 5, "burst": None, "max_delay": "1s", "shadow": False},
        )
        loaded = admin_proxy.runtime.loaded
        assert loaded is not None
        assert loaded.limiter.overrides.rule(loaded.config.rate_limits[0]).limit == 9
        assert (await call(url, "GET", "/admin/rules/api")).json()["limit"] == 9
        assert (await call(url, "PATCH", "/admin/rules/api", {"limit": 9, "per": "1s"})).status_code == 400
        assert (await call(url, "PATCH", "/admin/rules/api", {"limit": 0})).status_code == 400
        shadow = await call(url, "PATCH", "/admin/rules/api", {"shadow": True, "max_delay": "2s"})
        assert (shadow.json()["shadow"], shadow.json()["max_delay"]) == (True, "2s")
        one = await call(url, "POST", "/admin/rules/api/reset", {"knobs": ["shadow"]})
        assert (one.json()["shadow"], one.json()["limit"], one.json()["max_delay"]) == (False, 9, "2s")
        assert (await call(url, "POST", "/admin/rules/api/reset", {"knobs": ["per"]})).status_code == 400
        assert (await call(url, "POST", "/admin/rules/api/reset")).json()["limit"] == 5
        assert (await call(url, "POST", "/admin/rules/api/raise")).status_code == 404
        assert (await call(url, "GET", "/admin/rules/nope")).json() == {
            "error": "no rate-limit rule named 'nope'"
        }


async def test_a_failing_store_changes_nothing_and_says_so(admin_proxy: Proxy) -> None:
    class Failing(RuntimeOperated):
        async def change_overrides(self, changes: dict[str, str | None]) -> None:
            raise StoreError("connection refused")

        @property
        def store(self) -> None:
            return None

    operated = Failing(admin_proxy.runtime, admin_proxy.drain)
    async with serving(operated) as url:
        for method, path, body in (
            ("PATCH", "/admin/rooms/shop", {"new_sessions": 3}),
            ("POST", "/admin/rooms/shop/queue-all", None),
            ("POST", "/admin/rooms/shop/unblock", None),
            ("PATCH", "/admin/rules/api", {"limit": 3}),
        ):
            answer = await call(url, method, path, body)
            assert (answer.status_code, answer.json()) == (
                503,
                {"error": "the store is failing: nothing was changed"},
            )
    assert admin_proxy.runtime.overrides.values == {}
