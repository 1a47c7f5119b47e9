"""The drain's bookkeeping, without processes: what counts as in flight, when the drain may end,
which responses say `Connection: close`, and the 503 past the bound. (The whole sequence against a
real mitmdump under load is tests/ops/test_shutdown.py.)"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.test import tflow

from waitroom.addon.drain import IDLE_GRACE, Drain, Timing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Drain, Clock]:
    clock = Clock()
    return Drain(lambda: Timing(0.0, 10.0), clock), clock


def test_in_flight_from_request_headers_to_response_or_error() -> None:
    drain, _ = make()
    a, b = tflow.tflow(), tflow.tflow()
    drain.client_connected(a.client_conn)
    drain.requestheaders(a)
    drain.requestheaders(b)
    assert drain.inflight == 2
    a.response = http.Response.make(200)
    drain.response(a)
    b.error = None
    drain.error(b)
    assert drain.inflight == 0
    drain.response(a)  # a second end changes nothing
    assert drain.inflight == 0


def test_a_closed_connection_takes_its_requests_along() -> None:
    drain, _ = make()
    flow = tflow.tflow()
    drain.client_connected(flow.client_conn)
    drain.requestheaders(flow)
    drain.client_disconnected(flow.client_conn)
    assert drain.inflight == 0


def test_the_drain_ends_only_when_quiet_for_the_idle_grace() -> None:
    drain, clock = make()
    stopped = clock.now
    assert drain._left_to_wait(stopped) == IDLE_GRACE  # never at the instant the listener closed
    flow = tflow.tflow()
    drain.client_connected(flow.client_conn)
    drain.requestheaders(flow)
    clock.now += 5
    assert drain._left_to_wait(stopped) == float("inf")  # a request in flight: wait for it
    flow.response = http.Response.make(200)
    drain.response(flow)
    assert drain._left_to_wait(stopped) == IDLE_GRACE  # its keep-alive client may send another
    clock.now += IDLE_GRACE
    assert drain._left_to_wait(stopped) is None


def test_connection_close_once_closing_on_http1_only() -> None:
    drain, _ = make()
    before = tflow.tflow(resp=True)
    drain.response(before)
    assert "Connection" not in before.response.headers
    drain.closing = True
    after = tflow.tflow(resp=True)
    drain.responseheaders(after)
    assert after.response.headers["Connection"] == "close"
    h2 = tflow.tflow(resp=True)
    h2.request.http_version = "HTTP/2.0"
    drain.response(h2)
    assert "Connection" not in h2.response.headers


def test_past_the_bound_a_new_request_gets_503_with_connection_close() -> None:
    drain, _ = make()
    drain.closing = drain.past_bound = True
    flow = tflow.tflow()
    drain.requestheaders(flow)
    assert flow.response is not None
    assert flow.response.status_code == 503
    assert flow.response.headers["Retry-After"] == "1"
    drain.response(flow)
    assert flow.response.headers["Connection"] == "close"
