"""Answer a request from its headers, without reading its body.

mitmproxy 12 lets an addon set `flow.response` in the `requestheaders` hook, but then still reads
the whole request body (buffered, up to `body_size_limit`) before it sends that answer. A visitor
the wait room holds back, or a client over its rate limit, must not get to upload a body first.

`answer_now` marks the flow and asks mitmproxy to stream the body (`request.stream = True`). The
only code path that then runs is `HttpStream.start_request_stream`, which mitmproxy itself refuses
(NotImplementedError) when a response is already set; `install` wraps that method so that for a
marked flow it sends the answer instead, drops whatever body follows unread, and (HTTP/1, where
the unread body would otherwise be parsed as the next request) closes the connection. Unmarked
flows, i.e. every forwarded request, take mitmproxy's own path untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import http

from waitroom.addon import flowmeta

log = logging.getLogger(__name__)

_installed = False


def answer_now(flow: http.HTTPFlow, response: http.Response) -> None:
    """Answer `flow` from the requestheaders hook, without reading a body that may follow. (When
    none follows, mitmproxy ignores the stream flag and sends the answer as usual.)"""
    flow.response = response
    if _installed and flow.live:  # a flow read from a file has no connection to spare a body on
        flowmeta.state(flow).answered_early = True
        flow.request.stream = True
        # No "100 Continue" (mitmproxy sends one after this hook): the client is not to send it.
        flow.request.headers.pop("expect", None)


def install() -> bool:
    """Wrap mitmproxy's HttpStream.start_request_stream once; False when this mitmproxy has no such
    method (then a marked answer is sent after the body, as mitmproxy does by itself)."""
    global _installed
    if _installed:
        return True
    try:
        from mitmproxy.proxy import commands
        from mitmproxy.proxy.layers.http import HttpStream
        from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook
    except ImportError:  # pragma: no cover - another mitmproxy layout
        log.warning("waitroom: cannot answer before the request body on this mitmproxy version")
        return False
    original: Callable[..., Generator[Any, Any, None]] | None = getattr(
        HttpStream, "start_request_stream", None
    )
    if original is None:  # pragma: no cover
        log.warning("waitroom: cannot answer before the request body on this mitmproxy version")
        return False

    def start_request_stream(self: Any) -> Generator[Any, Any, None]:
        flow = self.flow
        state = flowmeta.peek(flow)
        if flow.response is None or state is None or not state.answered_early:
            return (yield from original(self))
        flow.request.stream = False
        # The body that follows is dropped unread: this state consumes every event silently.
        self.client_state = self.state_errored
        flow.response.timestamp_start = time.time()
        yield HttpResponseHeadersHook(flow)
        if (yield from self.check_killed(True)):
            return None
        yield from self.send_response()
        if not (flow.request.is_http2 or flow.request.is_http3):
            # HTTP/1: the unread body would be parsed as the next request; close instead.
            yield commands.CloseConnection(self.context.client)
        yield from self.flow_done()  # the stream is finished: mitmproxy forgets it
        return None

    HttpStream.start_request_stream = start_request_stream  # type: ignore[method-assign]
    _installed = True
    return True
