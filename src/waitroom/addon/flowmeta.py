"""What the wait room keeps about one flow between its hooks, and what it saves with the flow.

Two homes, on purpose:

- `state(flow)`: a typed `FlowState`, for one request's life in this process (decided, the cookie
  and headers to add, the session a release would end, the decision-log entry). It is kept beside
  the flow, not in `flow.metadata`: mitmproxy saves metadata with the flow (`mitmdump -w`) and
  can store only plain values.
- `flow.metadata[RECORD_KEY]`: the decision in plain values (room, outcome, rate limit, the
  upstream's command), saved with the flow; flow replay reads it back from recorded files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from mitmproxy import http

RECORD_KEY = "waitroom"
"""flow.metadata[RECORD_KEY]: the proxy's decision, saved with the flow (`mitmdump -w`)."""
COMMAND_HEADER = "Waitroom-Command"
"""The upstream's command to the proxy (`release`); the proxy takes it off every answer."""


@dataclass(slots=True)
class FlowState:
    decided: bool = False
    """The gate decided this request (on its headers, or in `request`)."""
    answered_early: bool = False
    """Answered from its headers: the body that follows is dropped unread (early.py)."""
    in_flight: bool = False
    """Counted as in flight on its connection: no header timeout meanwhile (bounds.py)."""
    set_cookie: str | None = None
    """A Set-Cookie header the decision adds to the answer."""
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    """Headers the decision adds to the answer (RateLimit-Policy, RateLimit)."""
    session: tuple[str, str] | None = None
    """(room, session id) of a request that passes with a session: what a release ends."""
    log_entry: dict[str, Any] | None = None
    """The decision-log entry, written once the answer's status is known."""


_STATES: WeakKeyDictionary[http.HTTPFlow, FlowState] = WeakKeyDictionary()


def state(flow: http.HTTPFlow) -> FlowState:
    """The flow's state, made at its first use; it goes with the flow."""
    found = _STATES.get(flow)
    if found is None:
        found = _STATES[flow] = FlowState()
    return found


def peek(flow: http.HTTPFlow) -> FlowState | None:
    """The flow's state if it has one (a flow the wait room never saw has none)."""
    return _STATES.get(flow)


def record(flow: http.HTTPFlow) -> dict[str, Any]:
    """The saved decision of the flow, in plain values (see RECORD_KEY)."""
    return flow.metadata.setdefault(RECORD_KEY, {})  # type: ignore[no-any-return]


def recorded(flow: http.HTTPFlow) -> dict[str, Any]:
    """The saved decision as read (empty when there is none); not created."""
    return flow.metadata.get(RECORD_KEY) or {}
