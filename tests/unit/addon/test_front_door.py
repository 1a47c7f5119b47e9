"""front_door.FrontDoor: which requests the door answers when the proxy runs behind, and with what;
when it is behind. The door on a real `waitroom serve`: tests/e2e/test_front_door.py."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from waitroom.addon import front_door
from waitroom.addon.front_door import QUEUED, TURNS, FrontDoor, serialize, unread
from waitroom.addon.runtime import Loaded, Runtime
from waitroom.web.answers import Answer

CONFIG = """
store: {max_wait: 2s}
bypass: [/shop/static/]
rooms:
  - name: shop
    match: {path_prefix: /shop}
    new_sessions: 2
    retry_after: 7s
    title: {en: The Shop, de: Der Laden}
  - {name: quiet, match: {path_prefix: /quiet}, new_sessions: 2, shadow: true}
"""


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loaded:
    monkeypatch.setenv("WAITROOM_SECRET", "unit-test-secret-0123456789")
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    runtime = Runtime()
    runtime.load(path)
    assert runtime.loaded is not None
    return runtime.loaded


def head(first: str, *headers: str) -> bytes:
    return ("\r\n".join([first, "Host: shop.example", *headers]) + "\r\n\r\n").encode()


def test_a_new_visitor_of_a_room_gets_the_wait_page_without_a_ticket(loaded: Loaded) -> None:
    door = FrontDoor(lambda: loaded)
    answer = door.answer(head("GET /shop/item?x=1 HTTP/1.1", "Accept-Language: de-CH,de;q=0.9"))
    assert answer is not None
    top, _, body = answer.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    assert "Retry-After: 7" in lines
    assert "Content-Language: de" in lines
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert not any(line.lower().startswith("set-cookie") for line in lines)
    assert b"Der Laden" in body


def test_json_for_the_page_script_and_no_body_for_head(loaded: Loaded) -> None:
    door = FrontDoor(lambda: loaded)
    polled = door.answer(head("GET /shop/ HTTP/1.1", "Accept: application/json"))
    assert polled is not None
    assert b"Content-Type: application/json" in polled
    assert b'"status": "waiting"' in polled
    only_head = door.answer(head("HEAD /shop/ HTTP/1.0"))
    assert only_head is not None
    assert only_head.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "request_head",
    [
        head("GET /shop/ HTTP/1.1", "Cookie: a=b; waitroom_shop=anything"),  # inside or in line
        head("GET /shop/static/app.js HTTP/1.1"),  # bypassed
        head("GET /about HTTP/1.1"),  # in no room
        head("GET /quiet/ HTTP/1.1"),  # a shadow room decides nothing
        head("POST /shop/buy HTTP/1.1", "Content-Length: 3"),  # a body
        head("GET /shop/ HTTP/1.1", "Transfer-Encoding: chunked"),
        head("GET /shop/ HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"),
        head("GET /shop/ HTTP/2.0"),
        head("GET /shop/%zz HTTP/1.1"),  # no canonical form: mitmproxy refuses it with a reason
        head("GET  /shop/ HTTP/1.1"),
        head("GET /shop/ HTTP/1.1", " folded: header"),
        head("GET /shop/ HTTP/1.1")[:-2],  # the head is not whole yet
        head("GET /shop/ HTTP/1.1") + head("GET /shop/ HTTP/1.1"),  # pipelined
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"",
    ],
)
def test_everything_else_goes_on_to_mitmproxy(loaded: Loaded, request_head: bytes) -> None:
    assert FrontDoor(lambda: loaded).answer(request_head) is None


def test_nothing_before_a_config_and_nothing_when_rooms_match_on_host(loaded: Loaded) -> None:
    assert FrontDoor(lambda: None).answer(head("GET /shop/ HTTP/1.1")) is None
    on_host = dataclasses.replace(loaded, needs_host=True)
    assert FrontDoor(lambda: on_host).answer(head("GET /shop/ HTTP/1.1")) is None


async def test_behind_while_the_loop_is_late_with_its_own_work(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.max_wait 2 s: behind when TURNS turns of a late loop pass it, while QUEUED callbacks
    are ready; a late loop with little of its own to do is a busy machine, not a proxy behind."""
    door = FrontDoor(lambda: loaded)
    ready = [QUEUED]
    monkeypatch.setattr(front_door, "queued", lambda loop: ready[0])
    now = asyncio.get_running_loop().time()
    assert not door.busy()
    door.saw(2.0 / TURNS, now)  # exactly max_wait: not behind
    assert not door.busy()
    door.saw(1.0, now)
    assert door.busy()
    assert door.behind_until == now + 1.0
    ready[0] = QUEUED - 1  # starved of CPU by other processes, its own queue short
    assert not door.busy()
    ready[0] = QUEUED
    door.saw(0.01, now)  # a later on-time turn does not forget the work queued
    assert door.busy()
    door.behind_until = now - 0.001
    assert not door.busy()


async def test_put_back_bytes_are_read_first() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b" world")
    unread(reader, b"hello")
    assert await reader.read(100) == b"hello world"


def test_an_answer_on_the_wire() -> None:
    wire = serialize(Answer(429, {"Retry-After": "3"}, b"slow down"))
    assert wire == (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
        b"slow down"
    )
