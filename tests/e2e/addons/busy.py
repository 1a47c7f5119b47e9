"""A test addon that stalls mitmproxy's event loop once: 3 s of blocking work on the 50th request,
as a proxy pod starved of CPU (or stopped by a long pause) does in the middle of a burst. Store calls
in flight then cannot have their answers read in time. Loaded before the wait room."""

from __future__ import annotations

import time

from mitmproxy import http

STALL_AT = 50
STALL = 3.0


class Busy:
    def __init__(self) -> None:
        self.seen = 0

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.seen += 1
        if self.seen == STALL_AT:
            time.sleep(STALL)  # blocks the loop on purpose: this is the saturation, not a wait


addons = [Busy()]
