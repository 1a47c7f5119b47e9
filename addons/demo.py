"""A stand-in demo service for `make run`: answers every request that reaches it with a small page.

Chained after addons/waitroom.py in one mitmdump, it plays the upstream, so the demo needs nothing
else running.
"""

import html
import time

from mitmproxy import http

PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Demo service</title></head>
<body style="font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem">
<h1>Demo service</h1><p>You got in: the wait room let this request through to <code>{path}</code>
at {now}.</p><p>Open this address in a few private windows (or clear your cookies): after 5 new
visitors in a minute, the next one sees the wait room.</p></body></html>"""


def request(flow: http.HTTPFlow) -> None:
    if flow.response is not None:  # the wait room answered already
        return
    body = PAGE.format(path=html.escape(flow.request.path), now=time.strftime("%H:%M:%S"))
    flow.response = http.Response.make(200, body, {"Content-Type": "text/html; charset=utf-8"})
