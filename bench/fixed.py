"""The shedding ceiling: mitmproxy answering every request itself with a fixed page of the wait
page's size, no decision at all. The wait room's blocked answers are compared with this."""

from mitmproxy import http

from waitroom.web.answers import wait_answer
from waitroom.web.strings import Catalog
from waitroom.web.template import DEFAULT_TEMPLATE, Template

# The page as a blocked room serves it: the template with its stylesheet, script and strings.
PAGE = wait_answer(
    template=Template.load(DEFAULT_TEMPLATE),
    strings=Catalog.load().languages["en"],
    room="demo",
    title="demo",
    status=503,
    retry_after=5,
    blocked_for=30,
    accept="text/html",
).body
HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store", "Retry-After": "5"}


def request(flow: http.HTTPFlow) -> None:
    flow.response = http.Response.make(503, PAGE, HEADERS)
