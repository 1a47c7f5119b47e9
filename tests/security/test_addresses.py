"""Issue 27, N4, end to end on both entry points: one client address spelled many ways, or many
addresses of one IPv6 /64, is one client for `tickets_per_ip` and for `ip` rate limits; a forwarded
value that is no address counts as the TCP peer. Addresses come from X-Forwarded-For through one
trusted hop (the test is that hop). One proxy per entry point for the module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, Upstream

pytestmark = pytest.mark.e2e

CONFIG = """
client_ip: {trusted_proxies: 1}
rooms:
  - {name: line, match: {path_prefix: /line}, queue: fifo, new_sessions: 1, window: 10m,
     tickets_per_ip: 1}
rate_limits:
  - {name: per-ip, match: {path_prefix: /api}, key: ip, limit: 1, per: 10m}
"""
JSON = {"Accept": "application/json"}

V6_SPELLINGS = [
    "2001:DB8::1",
    "2001:0db8::0001",
    "[2001:db8::1]:443",
    "2001:db8::1%eth0",
    '"[2001:db8::1]"',
    "2001:db8::ffff:1",  # another address of the same /64
]
V4_SPELLINGS = ["::ffff:10.9.9.9", "10.9.9.9", "::FFFF:0a09:0909", "10.9.9.9:8080", "[::ffff:10.9.9.9]:80"]


@pytest.fixture(scope="module")
def proxy(entry_point: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    upstream = Upstream()
    work = tmp_path_factory.mktemp(f"addresses-{entry_point}")
    (work / "config.yaml").write_text(CONFIG)
    started = Mitmdump(
        upstream.url, work, work / "config.yaml", env={"WAITROOM_SECRET": SECRET}, entry=entry_point
    )
    try:
        yield started.wait_ready()
    finally:
        started.stop()
        upstream.close()


def _from(proxy: Mitmdump, path: str, address: str) -> int:
    headers = {**JSON, "X-Forwarded-For": f"198.51.100.99, {address}"}  # the left one: client-written
    return httpx.get(f"{proxy.url}{path}", headers=headers, timeout=10).status_code


def test_spellings_and_one_64_share_one_ticket_allowance(proxy: Mitmdump) -> None:
    """Today every spelling got a ticket of its own: 8 allowances for 2 clients."""
    assert _from(proxy, "/line", "192.0.2.1") == 200  # the window's one place: the line starts
    assert [_from(proxy, "/line", a) for a in V6_SPELLINGS] == [503] + [429] * (len(V6_SPELLINGS) - 1)
    assert [_from(proxy, "/line", a) for a in V4_SPELLINGS] == [503] + [429] * (len(V4_SPELLINGS) - 1)
    assert _from(proxy, "/line", "2001:db8:0:1::1") == 503  # the next /64 is another client
    # No address: the TCP peer (127.0.0.1), never a client of its own.
    assert [_from(proxy, "/line", a) for a in ("unknown", "010.9.9.9", "127.0.0.1")] == [503, 429, 429]


def test_ip_rate_limit_keys_are_canonical(proxy: Mitmdump) -> None:
    assert [_from(proxy, "/api", a) for a in V6_SPELLINGS] == [200] + [429] * (len(V6_SPELLINGS) - 1)
    assert [_from(proxy, "/api", a) for a in V4_SPELLINGS] == [200] + [429] * (len(V4_SPELLINGS) - 1)
    assert _from(proxy, "/api", "2001:db8:0:1::1") == 200
    assert [_from(proxy, "/api", a) for a in ("_hidden", "1.2.3", "127.0.0.1")] == [200, 429, 429]
