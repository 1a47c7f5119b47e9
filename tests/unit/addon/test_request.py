"""addon/request.py: what a request is judged as, read from a flow."""

from __future__ import annotations

from mitmproxy.test import tflow

from waitroom.addon import request


def test_cookie_reader_gives_every_value_under_a_name() -> None:
    flow = tflow.tflow()
    flow.request.headers.add("Cookie", 'a=1; b="2"; a=3')
    flow.request.headers.add("Cookie", "b=4;junk; a = 5")
    read = request.cookie_reader(flow.request)
    assert read("a") == ["1", "3", "5"]
    assert read("b") == ["2", "4"]
    assert read("c") == []
