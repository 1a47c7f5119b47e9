"""The front door of `waitroom serve` (issue 28, item 5): when the proxy runs behind, a crowd of new
visitors gets the wait page without a ticket at once, and nobody inside or in line is shed.

The proxy is made to run behind for certain: SIGSTOP for longer than `store.max_wait` while the
crowd connects and sends its requests (the kernel completes the connections and queues them), then
SIGCONT: its event loop wakes up that late, with every connection waiting at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.conftest import SECRET, StartProxy
from tests.support import Upstream, free_port

pytestmark = pytest.mark.e2e
ENV = {"WAITROOM_SECRET": SECRET}
CROWD = 150
STOPPED_S = 3.0
"""Longer than store.max_wait (1 s here): the door sheds when the loop runs more than that late."""


def config(admin_port: int) -> str:
    return (
        "store: {max_wait: 1s}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        "bypass: [/static/]\n"
        "rooms:\n"
        "  - {name: shop, match: {path_prefix: /shop}, new_sessions: 1, window: 60s, block_for: 60s,"
        " retry_after: 7s}\n"
        "  - {name: line, match: {path_prefix: /line}, queue: fifo, new_sessions: 1, window: 60s,"
        " retry_after: 7s}\n"
    )


async def _answers(port: int, requests: list[bytes], stopped: int) -> list[bytes]:
    """Open a connection per request while process `stopped` is stopped, send every request, wake it
    up, and read each whole answer (the door closes the connection after it)."""
    os.kill(stopped, signal.SIGSTOP)
    try:
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in requests]
        for (_, writer), request in zip(connections, requests, strict=True):
            writer.write(request)
            await writer.drain()
        await asyncio.sleep(STOPPED_S)  # the proxy is stopped: nothing to wait for but the time
    finally:
        os.kill(stopped, signal.SIGCONT)

    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        try:
            return await reader.read()  # to the end: each answer closes its connection
        finally:
            writer.close()

    async with asyncio.timeout(30):  # every visitor answered: none left hanging
        return await asyncio.gather(*(read(r, w) for r, w in connections))


POST = b"POST /shop/buy HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"


def get(path: str, *headers: str) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: shop.example",
        "Accept-Language: de",
        "Connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_crowd_reaching_a_proxy_behind_gets_wait_pages_and_the_visitors_inside_get_in(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    admin = free_port()
    proxy = start_proxy(config(admin), upstream.url, env=ENV)
    inside = httpx.get(f"{proxy.url}/shop/", timeout=10)
    assert inside.status_code == 200, inside.text[:300]
    session = f"Cookie: waitroom_shop={inside.cookies['waitroom_shop']}"
    in_line = httpx.get(f"{proxy.url}/line/", timeout=10)  # the line's one place
    waiting = httpx.get(f"{proxy.url}/line/", timeout=10)
    assert (in_line.status_code, waiting.status_code) == (200, 503)
    ticket = f"Cookie: waitroom_line={waiting.cookies['waitroom_line']}"

    crowd = [get(f"/shop/item?{i}") for i in range(CROWD)]
    others = [
        get("/shop/cart", session),  # inside: never shed
        get("/line/", ticket),  # in line: asks the store, keeps its place
        get("/static/app.js"),  # bypassed
        get("/about"),  # in no room
        POST,  # a body
    ]
    began = time.monotonic()
    answers = asyncio.run(_answers(proxy.port, crowd + others, proxy.proc.pid))
    took = time.monotonic() - began

    for answer in answers[:CROWD]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"\r\nRetry-After: 7\r\n" in head
        assert b"Set-Cookie" not in head, "a shed answer gives no ticket and no place"
        assert b"Content-Language: de" in head, "in the visitor's language"
        assert b'<html lang="de"' in body
    statuses = [a.split(b"\r\n", 1)[0] for a in answers[CROWD:]]
    assert statuses[0].startswith(b"HTTP/1.1 200"), "inside: let through"
    assert statuses[1].startswith(b"HTTP/1.1 503")
    assert b"waitroom_line=" in answers[CROWD + 1], "in line: its ticket, renewed by the store"
    assert statuses[2].startswith(b"HTTP/1.1 200")  # bypassed
    assert statuses[3].startswith(b"HTTP/1.1 200")  # no room
    assert statuses[4].startswith(b"HTTP/1.1 503"), "a body: mitmproxy's, decided by the room"
    assert took < STOPPED_S + 25

    metrics = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=10).text
    assert f'waitroom_shed_requests_total{{reason="door"}} {CROWD}.0' in metrics, "the door, not the room"
    assert httpx.get(f"{proxy.url}/shop/", timeout=10).status_code == 503  # awake and deciding again
    assert "Traceback" not in proxy.log_text()
