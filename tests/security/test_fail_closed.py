"""Class 1 of issue 16: an exception while deciding is never a free pass, and no byte sequence in
a header, cookie, token or path makes the decision raise. End to end against a real mitmdump (what
the client gets, what the upstream got, what the log says), and through the addon with a bug
injected on purpose (what a bug turns into)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from tests.conftest import SECRET, StartProxy
from tests.security.servers import exchange
from tests.support import Upstream
from waitroom.addon import WaitRoom
from waitroom.metrics import METRICS

JWT_SECRET = "jwt-secret-0123456789abcdef0123456789"
CONFIG = """
rooms:
  - {name: shop, match: {path_prefix: /shop}, new_sessions: 1, window: 60s, block_for: 60s}
rate_limits:
  - {name: api, match: {path_prefix: /api}, key: "header:X-Api-Key", limit: 1, per: 60s}
  - {name: tenant, match: {path_prefix: /t}, key: "jwt:company_id", fallback: ip, limit: 1, per: 60s}
jwt: {algorithms: [HS256]}
"""


def _b64(value: object) -> bytes:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _token(header: object) -> bytes:
    return _b64(header) + b"." + _b64({"company_id": "acme"}) + b"." + _b64(b"x" * 32)


ODD_TOKENS = [
    _token({"alg": ["HS256"]}),
    _token({"alg": {"HS256": 1}}),
    _token({"alg": None}),
    _token([]),
    _token("HS256"),
    _token(1),
    _token({"alg": "HS256", "kid": {"a": [1]}}),
    _token({"alg": "HS256", "crit": ["exp"], "b64": False}),
    _token({"alg": "HS256", "typ": ["JWT"]}),
    _b64(b"[" * 3000) + b".e30.x",
    b"\xff\xfe.\x80\x81.x",
    b"a.b",
    b"..",
    b"\xc3\xa9" * 50,
]


def _request(target: bytes, *headers: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_any_bytes_are_decided_never_a_traceback(start_proxy: StartProxy, upstream: Upstream) -> None:
    proxy = start_proxy(
        CONFIG, upstream.url, env={"WAITROOM_SECRET": SECRET, "WAITROOM_JWT_SECRET": JWT_SECRET}
    )
    port = proxy.port
    # A header a rule keys on, not UTF-8: counted like any other key (allowed once, then 429).
    for key in (b"\xff\xfe\x80", b"caf\xe9", b"\xed\xa0\x80"):
        first = exchange(port, _request(b"/api/x", b"X-Api-Key: " + key))[0]
        second = exchange(port, _request(b"/api/x", b"X-Api-Key: " + key))[0]
        assert (first, second) == (200, 429), key
    # Odd JOSE headers and non-ASCII tokens: no claim, so the `ip` fallback counts them all.
    statuses = [exchange(port, _request(b"/t/x", b"Authorization: Bearer " + t))[0] for t in ODD_TOKENS]
    assert statuses == [200] + [429] * (len(ODD_TOKENS) - 1)
    # Cookies and other headers the room reads, in any bytes: decided (admitted once, then waiting).
    junk_cookies = [
        b"waitroom_shop=\xff\xfe",
        b"waitroom_shop=\x00; a",
        b"=;;=waitroom_shop;\xe9=\xe9",
        b";" * 5000,
    ]
    room = [exchange(port, _request(b"/shop", b"Cookie: " + c, b"Accept: \xff"))[0] for c in junk_cookies]
    assert room == [200, 503, 503, 503]
    # A path in any bytes: refused (or decided), never forwarded undecided.
    for target in (b"/shop\xff", b"/\xed\xa0\x80", b"/shop%ff", b"/%c0%af"):
        assert exchange(port, _request(target))[0] == 400
    log = proxy.log_text()
    assert "Traceback" not in log
    assert "decision failed" not in log
    assert [s.path for s in upstream.seen].count("/shop") == 1


@pytest.fixture
def addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WaitRoom]:
    monkeypatch.setenv("WAITROOM_SECRET", SECRET)
    monkeypatch.setenv("WAITROOM_JWT_SECRET", JWT_SECRET)
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    room = WaitRoom()
    with taddons.context(room) as tctx:
        tctx.configure(room, waitroom_config=str(path))
        yield room


def _flow(path: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.request.path = path
    return flow


class Bug(Exception):
    pass


def _raise(*args: object, **kwargs: object) -> None:
    raise Bug("a bug, with a secret in its message: hunter2")


async def test_a_bug_is_answered_closed(
    addon: WaitRoom, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = addon.loaded
    assert loaded is not None
    monkeypatch.setattr(loaded.limiter, "decide", _raise)
    monkeypatch.setattr(loaded.decider, "decide", _raise)
    errors = METRICS.proxy.decision_errors._value.get()
    caplog.set_level(logging.INFO)
    answers: dict[str, list[int]] = {"/api/x": [], "/shop": [], "/elsewhere": []}
    for _ in range(20):
        for path, got in answers.items():
            flow = _flow(path)
            await addon.requestheaders(flow)
            assert flow.response is not None, path  # never forwarded
            got.append(flow.response.status_code)
    assert set(answers["/api/x"]) == {429}  # the rule's refusal
    assert set(answers["/shop"]) == {503}  # the room's wait answer
    assert set(answers["/elsewhere"]) == {503}  # the limiter's bug: no rule or room known, so 503
    assert METRICS.proxy.decision_errors._value.get() - errors == 60
    lines = [r for r in caplog.records if "decision failed" in r.getMessage()]
    assert len(lines) == 1  # one line per interval, not one per request
    assert "Bug" in lines[0].getMessage()
    assert "hunter2" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_bug_in_routing_is_a_503(addon: WaitRoom, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = addon.loaded
    assert loaded is not None
    monkeypatch.setattr(loaded.decider.router, "bypassed", _raise)
    monkeypatch.setattr(loaded.decider.router, "route", _raise)
    flow = _flow("/elsewhere")
    await addon.requestheaders(flow)
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "1"
