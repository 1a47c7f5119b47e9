"""A fuzz test of the decision path (hypothesis): random bytes in header values, cookies, bearer
tokens, proofs of work, the target and Host, through the real addon. Whatever comes in is decided by
the real logic: never an exception, never the fail-closed path (which would mean a bug), never a forward
that was not decided, and what is forwarded is the canonical target."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow

from tests.conftest import SECRET
from waitroom.addon import WaitRoom, flowmeta
from waitroom.metrics import METRICS
from waitroom.web.target import judge_target

JWT_SECRET = "jwt-secret-0123456789abcdef0123456789"
CONFIG = """
bypass: [/healthz]
rooms:
  - {name: shop, match: {path_prefix: /shop}, new_sessions: 3, window: 60s, block_for: 60s}
  - {name: vip, match: {host: vip.example, path_prefix: /}, new_sessions: 1, window: 60s}
  - {name: pow, match: {path_prefix: /pow}, queue: fifo, new_sessions: 2, proof_of_work: {difficulty: 4}}
rate_limits:
  - {name: api, match: {path_prefix: /api}, key: "header:X-Api-Key", fallback: ip, limit: 5, per: 60s}
  - {name: tenant, match: {path_prefix: /}, key: "jwt:company_id", limit: 1000, per: 1s, shadow: true}
  - {name: global, match: {path_prefix: /shop, host: shop.example}, key: global, limit: 100000, per: 1s}
jwt: {algorithms: [HS256]}
client_ip: {trusted_proxies: 1}
"""

header_bytes = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
paths = st.one_of(
    st.binary(max_size=200).map(lambda b: b"/" + b),
    st.lists(
        st.sampled_from(
            [b"shop", b"api", b"..", b".", b"", b"%2e", b"%2F", b"\\", b"%ff", b"%", b"a?b", b"#"]
        )
    ).map(lambda parts: b"/" + b"/".join(parts)),
    st.sampled_from([b"*", b"", b"shop", b"http://x/shop"]),
)
tokens = st.one_of(
    header_bytes,
    st.tuples(header_bytes, header_bytes, header_bytes).map(lambda t: b"Bearer " + b".".join(t)),
)


@pytest.fixture(scope="module")
def addon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaitRoom]:
    mp = pytest.MonkeyPatch()
    mp.setenv("WAITROOM_SECRET", SECRET)
    mp.setenv("WAITROOM_JWT_SECRET", JWT_SECRET)
    path = Path(tmp_path_factory.mktemp("fuzz")) / "c.yaml"
    path.write_text(CONFIG)
    room = WaitRoom()
    with taddons.context(Proxyserver(), room) as tctx:
        tctx.configure(room, waitroom_config=str(path), keep_host_header=True)
        yield room
    mp.undo()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.one_of(paths, st.sampled_from([b"/shop", b"/api/x", b"/shop/cart", b"/healthz", b"/pow/x"])),
    host=st.one_of(
        st.sampled_from([[b"shop.example"], [b"vip.example"], [b"VIP.example.:80"], [b"other"]]),
        st.lists(header_bytes, max_size=2),
    ),
    api_key=header_bytes,
    token=tokens,
    cookie=header_bytes,
    xff=header_bytes,
    accept=header_bytes,
    method=st.sampled_from([b"GET", b"POST", b"OPTIONS", b"PUT", b"\xff"]),
    poll=st.booleans(),
    proof=st.one_of(header_bytes, st.tuples(header_bytes, header_bytes).map(lambda t: b"w1.pow.%s;%s" % t)),
)
def test_every_input_is_decided(
    addon: WaitRoom,
    path: bytes,
    host: list[bytes],
    api_key: bytes,
    token: bytes,
    cookie: bytes,
    xff: bytes,
    accept: bytes,
    method: bytes,
    poll: bool,
    proof: bytes,
) -> None:
    flow = tflow.tflow()
    req = flow.request
    req.data.path = path
    req.data.method = method
    fields = [(b"Host", h) for h in host] + [
        (b"X-Api-Key", api_key),
        (b"Authorization", token),
        (b"Cookie", b"waitroom_shop=" + cookie + b"; " + cookie),
        (b"X-Forwarded-For", xff),
        (b"Accept", accept),
        (b"Waitroom-Proof", proof),
    ]
    if poll:
        fields.append((b"Waitroom-Poll", b"1"))
    req.headers = http.Headers(fields)
    errors = METRICS.proxy.decision_errors._value.get()
    asyncio.run(addon.requestheaders(flow))  # raises: the test fails
    assert METRICS.proxy.decision_errors._value.get() == errors, "the fail-closed path ran: a bug"
    assert flowmeta.state(flow).decided
    if flow.response is None:  # forwarded: in canonical form
        assert judge_target(req.path).forwarded == req.path
        assert not req.authority
    else:
        assert flow.response.status_code in (200, 400, 414, 429, 431, 503)
