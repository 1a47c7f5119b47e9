"""act.py: between flows and decisions (cookies read, rerouting, headers added)."""

from __future__ import annotations

from mitmproxy.test import taddons, tflow

from waitroom import act
from waitroom.bounds import auto_max_connections


def test_cookie_reader_gives_every_value_under_a_name() -> None:
    flow = tflow.tflow()
    flow.request.headers.add("Cookie", 'a=1; b="2"; a=3')
    flow.request.headers.add("Cookie", "b=4;junk; a = 5")
    read = act.cookie_reader(flow.request)
    assert read("a") == ["1", "3", "5"]
    assert read("b") == ["2", "4"]
    assert read("c") == []


def test_reroute_keeps_path_and_query_under_the_upstreams_path() -> None:
    flow = tflow.tflow()
    flow.request.path = "/api/x?q=1"
    with taddons.context():
        act.reroute(flow, "https://other.example:8443/base/")
    assert (flow.request.scheme, flow.request.host, flow.request.port) == ("https", "other.example", 8443)
    assert flow.request.path == "/base/api/x?q=1"


def test_add_headers_puts_the_decisions_headers_on_the_answer() -> None:
    flow = tflow.tflow(resp=True)
    flow.metadata[act.SET_COOKIE_KEY] = "waitroom_shop=t; Path=/"
    flow.metadata[act.EXTRA_HEADERS_KEY] = [("RateLimit", '"api";r=1;t=1')]
    act.add_headers(flow)
    assert flow.response is not None
    assert flow.response.headers["Set-Cookie"] == "waitroom_shop=t; Path=/"
    assert flow.response.headers["RateLimit"] == '"api";r=1;t=1'
    assert act.SET_COOKIE_KEY not in flow.metadata


def test_the_automatic_connection_limit_is_at_least_64() -> None:
    assert auto_max_connections() >= 64
