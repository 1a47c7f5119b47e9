"""The wait room end to end: a real mitmdump in front of a real upstream, real HTTP clients."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import Upstream, wait_for
from waitroom.rooms.sessions import SessionCodec, keys_from_secret

pytestmark = pytest.mark.e2e

CONFIG = """
bypass: [/healthz]
rooms:
  - name: shop
    match: {path_prefix: /shop}
    new_sessions: 3
    window: 60s
    block_for: 2s
    retry_after: 1s
  - name: flash
    match: {path_prefix: /flash}
    new_sessions: 2
    window: 2s
    block_for: 2s
    retry_after: 1s
"""
ENV = {"WAITROOM_SECRET": SECRET}


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10)


def test_admits_n_then_serves_the_wait_page_and_keeps_sessions(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = start_proxy(CONFIG, upstream.url, env=ENV)
    admitted = [client(proxy.url) for _ in range(3)]
    for c in admitted:
        r = c.get("/shop/item")
        assert r.status_code == 200
        assert r.text.startswith("upstream GET /shop/item")
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("waitroom_shop=")
        for attribute in ("Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=1800"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain http, session.secure: auto
    assert upstream.paths() == ["/shop/item"] * 3

    late = client(proxy.url)
    page = late.get("/shop/item")
    assert page.status_code == 503
    assert page.headers["retry-after"] == "1"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-type"].startswith("text/html")
    assert '<html lang="en" dir="ltr">' in page.text
    assert "shop" in page.text
    assert '<noscript><meta http-equiv="refresh" content="1">' in page.text
    assert "set-cookie" not in page.headers

    answer = late.get("/shop/item", headers={"Accept": "application/json"})
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "waiting"
    assert body["room"] == "shop"
    assert body["retry_after"] == 1
    assert isinstance(body["blocked_for"], int)
    assert upstream.paths() == ["/shop/item"] * 3, "the upstream must not see waiting visitors"

    for c in admitted:  # sessions keep working during the block, with no new cookie each time
        for _ in range(3):
            r = c.get("/shop/cart")
            assert r.status_code == 200
            assert "set-cookie" not in r.headers

    # Untouched during the block: bypass prefixes and paths no room covers.
    assert late.get("/healthz").status_code == 200
    assert late.get("/elsewhere").status_code == 200


def test_block_expires_and_the_window_decides_again(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy(CONFIG, upstream.url, env=ENV)
    assert [client(proxy.url).get("/flash").status_code for _ in range(3)] == [200, 200, 503]
    waiting = client(proxy.url)
    assert waiting.get("/flash").status_code == 503

    poll = {"Accept": "application/json", "Waitroom-Poll": "1"}
    seen_before = len(upstream.seen)
    statuses: list[int] = []

    def admitted() -> bool:
        r = waiting.get("/flash", headers=poll)
        statuses.append(r.status_code)
        return r.status_code == 200

    wait_for(admitted, 10, "the block to lift", interval=0.2)
    last = waiting.get("/flash", headers=poll)  # with the cookie now: still answered by the proxy
    assert last.status_code == 200
    assert last.json() == {"status": "admitted", "room": "flash"}
    assert set(statuses[:-1]) <= {503}
    assert len(upstream.seen) == seen_before, "polls are answered by the proxy, not the upstream"
    assert waiting.get("/flash/page").status_code == 200  # the cookie from the poll lets it in


def test_bad_cookies_are_no_cookie(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy(CONFIG, upstream.url, env=ENV)
    good = client(proxy.url).get("/shop").headers["set-cookie"].split(";")[0].split("=", 1)[1]
    codec = SessionCodec(keys_from_secret(SECRET), 1800)
    expired = codec.encode(codec.issue("shop", "abc", time.time() - 4000)[0])[1]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    other_key = SessionCodec(keys_from_secret("another-secret-0123456789"), 1800).issue(
        "shop", "x", time.time()
    )[1]
    flash_cookie = codec.issue("flash", "y", time.time())[1]
    for value in (forged, expired, good[:10], "garbage", "%%%", "a" * 5000, other_key, flash_cookie):
        r = httpx.get(f"{proxy.url}/shop", cookies={"waitroom_shop": value}, timeout=10)
        assert r.status_code in (200, 503)
        assert "Traceback" not in r.text
        if r.status_code == 200:
            assert "set-cookie" in r.headers, "a bad cookie must take the admission path"
    # The genuine one still works, whatever happened above.
    assert httpx.get(f"{proxy.url}/shop", cookies={"waitroom_shop": good}, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path", ["/shop/../shop", "//shop", "/%73hop", "/healthz/../shop", "/shop/./x", "/SHOP/../shop"]
)
def test_path_tricks_do_not_dodge_a_blocked_room(
    start_proxy: StartProxy, upstream: Upstream, path: str
) -> None:
    proxy = start_proxy(CONFIG.replace("new_sessions: 3", "new_sessions: 1"), upstream.url, env=ENV)
    assert client(proxy.url).get("/shop").status_code == 200
    assert client(proxy.url).get("/shop").status_code == 503  # the block starts
    raw = httpx.Request("GET", f"{proxy.url}/")
    raw.url = raw.url.copy_with(raw_path=path.encode())
    with httpx.Client(timeout=10) as c:
        assert c.send(raw).status_code == 503


def test_a_bad_config_stops_the_start_with_one_line(start_proxy: StartProxy) -> None:
    proxy = start_proxy("rooms:\n  - {name: shop, new_sessions: 3, window: soon}\n", wait=False)
    assert proxy.wait_exit(30) != 0
    log = proxy.log_text()
    lines = [line for line in log.splitlines() if "rooms[0].window" in line]
    assert len(lines) == 1, log
    assert "invalid duration 'soon'" in lines[0]
    assert "Traceback" not in log


def test_a_missing_config_file_stops_the_start(start_proxy: StartProxy, tmp_path: object) -> None:
    proxy = start_proxy(None, extra=["--set", "waitroom_config=/nonexistent/waitroom.yaml"], wait=False)
    assert proxy.wait_exit(30) != 0
    assert "cannot read" in proxy.log_text()
    assert "Traceback" not in proxy.log_text()


def test_the_shipped_config_serves_the_counter_behind_the_demo_room(start_proxy: StartProxy) -> None:
    """What `make run` starts: the wait room and the counter in one process, the shipped config."""
    proxy = start_proxy(None, scripts=["addons/waitroom.py", "addons/counter.py"])
    answers = [client(proxy.url).put(f"/demo/{i}") for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [503]
    assert answers[0].json() == {"path": "/demo/0", "count": 1}
    assert "Waitroom" in answers[5].text or "wait" in answers[5].text.lower()
    admitted = httpx.Client(base_url=proxy.url, cookies=answers[1].cookies, timeout=10)
    assert admitted.get("/").json() == {"total": 5}  # the 6th PUT waited: never counted
    assert "WAITROOM_SECRET is not set" in proxy.log_text()


def test_key_rotation_keeps_sessions(start_proxy: StartProxy, upstream: Upstream) -> None:
    old = start_proxy(CONFIG, upstream.url, env={"WAITROOM_SECRET": "old-key-0123456789abcdef"})
    c = client(old.url)
    assert c.get("/shop").status_code == 200
    old.stop()
    rotated = start_proxy(
        CONFIG.replace("new_sessions: 3", "new_sessions: 1"),
        upstream.url,
        env={"WAITROOM_SECRET": "new-key-0123456789abcdef,old-key-0123456789abcdef"},
    )
    assert client(rotated.url).get("/shop").status_code == 200  # fills the window
    assert client(rotated.url).get("/shop").status_code == 503  # blocked now
    session = httpx.Client(base_url=rotated.url, cookies=c.cookies, timeout=10)
    assert session.get("/shop").status_code == 200  # the old key's cookie still verifies
