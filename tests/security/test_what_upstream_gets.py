"""Class 2 and 3 of issue 16: the path and the host the proxy judges are the ones the upstream
serves and routes by. Real mitmdump in front of real nginx, a Werkzeug app and a plain server;
each payload goes out as raw bytes, so no client library normalises it first."""

from __future__ import annotations

import pytest

from tests.conftest import SECRET, StartProxy
from tests.security.servers import Nginx, WerkzeugApp, get
from tests.support import Upstream
from waitroom.web.target import Refused, covers, judge_target

ROOM = """
rooms:
  - {name: shop, match: {path_prefix: /shop}, new_sessions: 1, window: 60s, block_for: 60s}
"""

PATH_PAYLOADS = [
    "/shop/../static",
    "/static/../shop",
    "/static/../shop/cart",
    "/%73hop",
    "/sh%6fp/cart",
    "//shop",
    "///shop//cart",
    "/./shop",
    "/%2e/shop",
    "/static/%2e%2e/shop",
    "/static/.%2e/shop",
    "/static%2f..%2fshop",
    "/shop%2f..%2fstatic",
    "/static/..%2fshop",
    "/shop/%2e%2e%2fstatic",
    "/static\\..\\shop",
    "/shop\\..\\static",
    "/static%5c..%5cshop",
    "/shop/.",
    "/shop/..",
    "/shop%00",
    "/%ff/../shop",
    "/shop%",
    "/shop?x=/../static",
    "/shop#frag",
    "/static/../shop?q=1",
]


def _blocked_room(start_proxy: StartProxy, upstream_url: str) -> int:
    proxy = start_proxy(ROOM, upstream_url, env={"WAITROOM_SECRET": SECRET})
    assert get(proxy.port, "/shop")[0] == 200  # the one admission of the window
    status, headers, _ = get(proxy.port, "/shop")
    assert status == 503
    assert headers["waitroom-status"] == "waiting"
    return proxy.port


def _judged_correctly(status: int, headers: dict[str, str], body: bytes) -> None:
    """A new visitor while the room is blocked: refused, or waiting, or served outside the room."""
    if status == 503:
        assert headers.get("waitroom-status") == "waiting"
    elif status in (400, 404, 308, 301):  # our refusal, or the upstream's own not-found/redirect
        assert b"ROOM" not in body
    else:
        assert status == 200, (status, body)
        assert b"ROOM" in body or b"OUT" in body
        assert b"ROOM" not in body, body


def test_nginx_never_serves_the_room_to_a_new_visitor(start_proxy: StartProxy, nginx: Nginx) -> None:
    port = _blocked_room(start_proxy, nginx.url)
    for payload in PATH_PAYLOADS:
        _judged_correctly(*get(port, payload))


def test_werkzeug_never_serves_the_room_to_a_new_visitor(
    start_proxy: StartProxy, werkzeug_app: WerkzeugApp
) -> None:
    port = _blocked_room(start_proxy, werkzeug_app.url)
    for payload in PATH_PAYLOADS:
        status, headers, body = get(port, payload)
        _judged_correctly(status, headers, body)


def test_plain_upstream_receives_only_canonical_paths_outside_the_room(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    port = _blocked_room(start_proxy, upstream.url)
    before = len(upstream.seen)
    answers = {payload: get(port, payload)[0] for payload in PATH_PAYLOADS}
    received = upstream.paths()[before:]
    for path in received:
        assert judge_target(path).forwarded == path  # canonical: nothing left to interpret
        assert not covers("/shop", path.split("?")[0]), path
    # Each ambiguous payload was refused, and the harmless spellings of the room waited.
    assert answers["/static/../shop"] == 400
    assert answers["/static\\..\\shop"] == 400
    assert answers["/static%2f..%2fshop"] == 400
    assert answers["/%73hop"] == 503
    assert answers["//shop"] == 503
    assert answers["/shop?x=/../static"] == 503


def test_forwarded_target_is_the_judged_one(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy(ROOM, upstream.url, env={"WAITROOM_SECRET": SECRET})
    for sent, forwarded in [
        ("//static//a.css", "/static/a.css"),
        ("/st%61tic/%C3%A9?x=%2F..", "/static/%C3%A9?x=%2F.."),
        ("/caf\xc3\xa9", "/caf%C3%A9"),
        ("/a%20b/", "/a%20b/"),
    ]:
        assert get(proxy.port, sent)[0] == 200
        assert upstream.paths()[-1] == forwarded
    for refused in ["/a/../b", "/a%00b", "/a%zzb", "/x" + "a" * 9000]:
        status, _, body = get(proxy.port, refused)
        assert status in (400, 414)
        assert b"a" * 100 not in body
        assert b"%zz" not in body
    with pytest.raises(Refused):
        judge_target("/a/../b")


HOST_ROOM = """
rooms:
  - {name: shop, match: {host: shop.example, path_prefix: /}, new_sessions: 1, window: 60s, block_for: 60s}
"""


def test_host_judged_is_the_host_nginx_routes_by(start_proxy: StartProxy, nginx: Nginx) -> None:
    proxy = start_proxy(
        HOST_ROOM, nginx.url, env={"WAITROOM_SECRET": SECRET}, extra=["--set", "keep_host_header=true"]
    )
    port = proxy.port
    assert get(port, "/", host="shop.example")[0] == 200  # admitted: the window is full
    assert get(port, "/", host="shop.example")[0] == 503
    cases: list[tuple[bytes, bytes, bytes, set[int]]] = [
        # (target, Host, extra header lines, acceptable statuses)
        (b"http://shop.example/", b"other.example", b"", {400}),
        (b"http://other.example/", b"shop.example", b"", {400}),
        (b"http://shop.example/", b"", b"", {503}),
        (b"http://shop.example/", b"shop.example", b"", {503}),
        (b"http://SHOP.example:80/x", b"shop.example", b"", {503}),
        (b"/", b"SHOP.EXAMPLE.", b"", {503}),
        (b"/", b"shop.example:80", b"", {503}),
        (b"/", b"other.example", b"Host: shop.example\r\n", {400}),
        (b"/", b"shop.example", b"Host: other.example\r\n", {400}),
    ]
    for target, host, extra, statuses in cases:
        status, _, body = get(port, target, host=host, extra=extra)
        assert status in statuses, (target, host, extra, status, body)
        assert b"VHOST-SHOP" not in body
    # HTTP/1.0 without Host: refused, not sent to the upstream's default virtual host.
    status, _, body = get(port, b"/", host=b"", version=b"HTTP/1.0")
    assert status == 400
    assert b"nginx" not in body
    # Another host is forwarded, in origin form, with its own Host.
    status, _, body = get(port, b"http://other.example/page", host=b"other.example")
    assert status == 200
    assert b"nginx OUT" in body
    assert b"raw=/page " in body
    assert b"host=other.example" in body
