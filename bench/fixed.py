"""The shedding ceiling: mitmproxy answering every request itself with a fixed page of the wait
page's size, no decision at all. The wait room's blocked answers are compared with this."""

from pathlib import Path

from mitmproxy import http

PAGE = (Path(__file__).resolve().parents[1] / "static" / "waitroom.html").read_bytes()
HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "Retry-After": "5"}


def request(flow: http.HTTPFlow) -> None:
    flow.response = http.Response.make(503, PAGE, HEADERS)
