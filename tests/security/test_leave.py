"""Issue 27, N7, end to end on both entry points: the leave path obeys only this site's own pages
and is rate-limited per address, before any cookie is read. A page on another origin of the same
site (a sibling port or subdomain: the cookie's SameSite=Lax lets its requests carry the cookie)
made a visitor leave the line. One proxy per entry point for the module, with keep_host_header
(so that Origin can be compared with the Host the visitor sent)."""

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
  - {name: shop, match: {path_prefix: /shop}, queue: fifo, new_sessions: 1, window: 10m}
"""
JSON = {"Accept": "application/json"}
LEAVE = "/.waitroom/leave"


@pytest.fixture(scope="module")
def proxy(entry_point: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    upstream = Upstream()
    work = tmp_path_factory.mktemp(f"leave-{entry_point}")
    (work / "config.yaml").write_text(CONFIG)
    started = Mitmdump(
        upstream.url,
        work,
        work / "config.yaml",
        env={"WAITROOM_SECRET": SECRET},
        extra=["--set", "keep_host_header=true"],
        entry=entry_point,
    )
    try:
        yield started.wait_ready()
    finally:
        started.stop()
        upstream.close()


def _visitor(proxy: Mitmdump, address: str) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, headers={**JSON, "X-Forwarded-For": address}, timeout=10)


def test_a_leave_from_another_origin_is_refused(proxy: Mitmdump) -> None:
    _visitor(proxy, "192.0.2.1").get("/shop")  # the window's one place: a line starts
    visitor = _visitor(proxy, "192.0.2.2")
    waiting = visitor.get("/shop")
    assert waiting.status_code == 503
    position = waiting.json()["position"]
    here = f"http://127.0.0.1:{proxy.port}"
    for headers in (
        {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{proxy.port + 1}"},  # a sibling port
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Origin": f"http://127.0.0.1:{proxy.port + 1}"},  # a browser without Sec-Fetch-Site
        {"Origin": "null"},  # a sandboxed frame, a data: page
        {"Sec-Fetch-Site": "same-site", "Origin": here},  # Sec-Fetch-Site is believed first
    ):
        refused = visitor.post(LEAVE, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert "set-cookie" not in refused.headers  # the cookie stays
    still = visitor.get("/shop")
    assert (still.status_code, still.json()["position"]) == (503, position)  # still in line
    left = visitor.post(LEAVE, headers={"Sec-Fetch-Site": "same-origin", "Origin": here})
    assert (left.status_code, left.json()) == (200, {"status": "left", "rooms": ["shop"]})


def test_a_leave_naming_this_origin_is_obeyed(proxy: Mitmdump) -> None:
    visitor = _visitor(proxy, "192.0.2.3")
    assert visitor.get("/shop").status_code == 503
    here = f"http://127.0.0.1:{proxy.port}"
    left = visitor.post(LEAVE, headers={"Origin": here})  # Origin alone (Safari before 16.4)
    assert left.json()["rooms"] == ["shop"]
    # A service on the visitor's behalf sends neither header: obeyed.
    service = _visitor(proxy, "192.0.2.4")
    assert service.get("/shop").status_code == 503
    assert service.post(LEAVE).json()["rooms"] == ["shop"]


def test_leaves_are_rate_limited_per_address(proxy: Mitmdump) -> None:
    """Today the 11th leave in a minute was obeyed like the first."""
    flood = _visitor(proxy, "2001:db8:7::1")
    answers = [flood.post(LEAVE, headers={"X-Forwarded-For": f"2001:db8:7::{i:x}"}) for i in range(11)]
    assert [a.status_code for a in answers] == [200] * 10 + [429]  # one /64: one address
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 6
    page = flood.post(LEAVE, headers={"Accept": "text/html", "X-Forwarded-For": "2001:db8:7::99"})
    assert (page.status_code, page.headers["Content-Type"]) == (429, "text/html; charset=utf-8")  # a form
    assert _visitor(proxy, "192.0.2.5").post(LEAVE).status_code == 200  # another address
