"""addon/release.py: who may send a leave, and how often (issue 27, N7)."""

from __future__ import annotations

from mitmproxy.test import tutils

from waitroom.addon.release import LeaveLimiter, same_origin


def _request(**headers: str) -> object:
    request = tutils.treq(method=b"POST", path=b"/.waitroom/leave")
    for name, value in headers.items():
        request.headers[name.replace("_", "-")] = value
    return request


def test_a_browser_says_where_a_leave_comes_from() -> None:
    allowed = [
        ({"Sec_Fetch_Site": "same-origin"}, None),
        ({"Sec_Fetch_Site": " Same-Origin "}, None),
        ({}, None),  # no browser's cross-origin request: a service on the visitor's behalf, curl
        ({"Origin": "https://shop.example"}, "shop.example:443"),
        ({"Origin": "https://Shop.Example:443"}, "shop.example"),
        ({"Origin": "https://[2001:db8::1]:8443"}, "[2001:db8::1]:8443"),
    ]
    for headers, authority in allowed:
        assert same_origin(_request(**headers), https=True, authority=authority), headers  # type: ignore[arg-type]
    refused = [
        ({"Sec_Fetch_Site": "same-site"}, "shop.example"),  # a sibling subdomain or port
        ({"Sec_Fetch_Site": "cross-site"}, "shop.example"),
        ({"Sec_Fetch_Site": "none"}, "shop.example"),
        ({"Sec_Fetch_Site": "same-site", "Origin": "https://shop.example"}, "shop.example"),
        ({"Origin": "https://shop.example:8443"}, "shop.example"),
        ({"Origin": "https://other.shop.example"}, "shop.example"),
        ({"Origin": "http://shop.example"}, "shop.example"),  # another scheme: another origin
        ({"Origin": "null"}, "shop.example"),
        ({"Origin": "https://shop.example:99999"}, "shop.example"),
        ({"Origin": "https://shop.example"}, None),  # Host replaced: nothing to compare with
    ]
    for headers, authority in refused:
        assert not same_origin(_request(**headers), https=True, authority=authority), headers  # type: ignore[arg-type]


def test_ten_leaves_a_minute_per_address() -> None:
    now = [100.0]
    limiter = LeaveLimiter(lambda: now[0])
    assert [limiter.wait("10.0.0.1") for _ in range(10)] == [0.0] * 10
    wait = limiter.wait("10.0.0.1")
    assert 5.9 < wait <= 6.0  # one more every 6 s
    assert limiter.wait("10.0.0.2") == 0.0  # another address
    now[0] += 6
    assert limiter.wait("10.0.0.1") == 0.0
    assert limiter.wait("10.0.0.1") > 0


def test_the_limit_remembers_a_bounded_number_of_addresses() -> None:
    now = [100.0]
    limiter = LeaveLimiter(lambda: now[0], size=100)
    for _ in range(10):
        limiter.wait("busy")
    for i in range(1_000):
        limiter.wait(f"a{i}")
        if i % 50 == 0:
            assert limiter.wait("busy") > 0  # seen again: the least recently seen go first
    assert len(limiter._tat) == 100
