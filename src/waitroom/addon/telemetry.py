"""What a decision leaves behind, written in one place, once per request: the metrics, the sampled
decision-log line (written when the answer is known, with its status), and the decision saved in
the flow's metadata for replay (replay.py reads it).

Decision-log lines are JSON lines for a log shipper: the `waitroom.decisions` logger writes each
entry alone on its line, on stdout (or stderr: `decision_log.output`), without mitmproxy's
`[hh:mm:ss.mmm]` prefix, under `waitroom serve` and mitmdump alike, and `-q` does not hide them
(they are the output asked for, not the proxy's chatter)."""

from __future__ import annotations

import functools
import json
import logging
import random
import sys
import time
from typing import Any

from mitmproxy import http

from waitroom.addon import flowmeta
from waitroom.config.ops import DecisionLogConfig
from waitroom.metrics import METRICS
from waitroom.ratelimit.decision import LimitDecision, LimitOutcome
from waitroom.rooms.decider import Decision, Outcome
from waitroom.rooms.shadow import would

log = logging.getLogger(__name__)


class _JsonLines(logging.Handler):
    """Each record's message alone on a line, on the stream named when it is written (so that a
    test's or a process's own stdout, swapped in later, gets it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stream = "stdout"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            out = getattr(sys, self.stream)
            out.write(record.getMessage() + "\n")
            out.flush()
        except Exception:
            self.handleError(record)


_LINES = _JsonLines()
decisions = logging.getLogger("waitroom.decisions")
"""The decision log: add handlers of your own to it; it does not propagate to mitmproxy's log."""
decisions.addHandler(_LINES)
decisions.setLevel(logging.INFO)
decisions.propagate = False

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods named as they are in logs; any other is `other` (a client chooses it: unbounded)."""
# The request path's metric series, looked up once: prometheus-client's labels() takes a lock and
# builds a key on every call.
_ROOM_DECISIONS = METRICS.proxy.decision_duration.labels("room")
_LIMIT_DECISIONS = METRICS.proxy.decision_duration.labels("rate_limit")


@functools.cache
def _room_requests(room: str, outcome: str) -> Any:
    return METRICS.rooms.requests.labels(room, outcome)  # room names come from the config: bounded


@functools.cache
def _rate_limit_requests(rule: str, outcome: str) -> Any:
    return METRICS.rate_limits.requests.labels(rule, outcome)


def count_limit(limit: LimitDecision, seconds: float) -> None:
    """The metrics of one rate-limit decision that took `seconds`."""
    if limit.outcome is not LimitOutcome.NONE:
        _LIMIT_DECISIONS.observe(seconds)
    for fallback in limit.fallbacks:
        METRICS.rate_limits.fallbacks.labels(fallback.rule, fallback.reason).inc()
    if limit.degraded is not None:
        METRICS.store.degraded_decisions.labels(limit.degraded.value).inc()
    for rule in limit.shadow_limited:
        METRICS.rate_limits.requests.labels(rule, LimitOutcome.SHADOW_LIMITED.value).inc()
    if limit.rule is not None and limit.outcome is not LimitOutcome.SHADOW_LIMITED:
        _rate_limit_requests(limit.rule.name, limit.outcome.value).inc()
    elif limit.rule is not None:  # a shadow refusal beside an allowing enforcing rule
        _rate_limit_requests(limit.rule.name, LimitOutcome.ALLOWED.value).inc()


def count_room(decision: Decision, seconds: float) -> None:
    """The metrics of one room decision that took `seconds` (none when no room covers the request)."""
    if decision.room is None:
        return
    _ROOM_DECISIONS.observe(seconds)
    _room_requests(decision.room.name, decision.outcome.value).inc()
    if decision.degraded is not None:
        METRICS.store.degraded_decisions.labels(decision.degraded.value).inc()


def count_shadow(decision: Decision, seconds: float) -> None:
    """The metrics of one shadow room's decision (what the room would have done)."""
    if decision.room is None:
        return
    METRICS.proxy.decision_duration.labels("shadow").observe(seconds)
    _shadow_requests(decision.room.name, decision.outcome).inc()


@functools.cache
def _shadow_requests(room: str, outcome: Outcome) -> Any:
    return METRICS.shadow.requests.labels(room, would(outcome).value, outcome.value)


def save_limit(flow: http.HTTPFlow, limit: LimitDecision, path: str) -> None:
    """The rate-limit decision in the flow's metadata (saved with `mitmdump -w`, read by replay),
    and a log line when a shadow rule would have refused."""
    if limit.outcome is LimitOutcome.NONE:
        return
    if limit.shadow_limited:
        log.info("waitroom: shadow rate limit %s would refuse %s", ",".join(limit.shadow_limited), path[:256])
    flowmeta.record(flow)["rate_limit"] = {
        "outcome": limit.outcome.value,
        "rule": limit.rule.name if limit.rule else None,
        "shadow_limited": list(limit.shadow_limited),
        "fallbacks": [str(f) for f in limit.fallbacks],
    }


def save_room(flow: http.HTTPFlow, decision: Decision) -> None:
    if decision.room is not None:
        flowmeta.record(flow).update(room=decision.room.name, outcome=decision.outcome.value)


def save_shadow(flow: http.HTTPFlow, decision: Decision) -> None:
    """A shadow room's decision in the flow's metadata: outcome `shadow` (it was forwarded), and
    what the room would have done."""
    if decision.room is not None:
        flowmeta.record(flow).update(room=decision.room.name, outcome="shadow", would=decision.outcome.value)


def log_decision(
    flow: http.HTTPFlow,
    settings: DecisionLogConfig,
    path: str,
    limit: LimitDecision | None,
    decision: Decision | None,
    shadowed: Decision | None = None,
) -> None:
    """The request's decision-log entry, one sampling draw: no cookie, token, query string or client
    address. `limit` is None when no rule is configured; an entry is made when a rule is configured
    or a room decided. `shadowed`: a shadow room's decision (the request was forwarded): `outcome`
    is `shadow` and `would` what the room would have done. DecisionLog writes it once the answer's
    status is known."""
    if shadowed is not None and shadowed.room is not None:
        decision = shadowed
    room = decision is not None and decision.room is not None
    if (limit is None and not room) or settings.format == "off" or random.random() >= settings.sample:
        return
    entry: dict[str, object] = {
        "event": "waitroom_decision",
        "time": round(time.time(), 3),
        "method": flow.request.method if flow.request.method in METHODS else "other",
        "path": path[:256],
    }
    if limit is not None and limit.outcome is not LimitOutcome.NONE:
        # A shadow refusal names its rule: the enforcing rule when one decided, else the first
        # shadow rule that would have refused; `shadow` lists every one.
        rule = limit.rule.name if limit.rule else (limit.shadow_limited or (None,))[0]
        entry["rule"] = rule
        entry["rate_limit"] = limit.outcome.value
        if limit.shadow_limited:
            entry["shadow"] = list(limit.shadow_limited)
        if limit.fallbacks:
            entry["fallbacks"] = [str(f) for f in limit.fallbacks]
        if limit.degraded is not None:
            entry["degraded"] = limit.degraded.value
        if limit.shed is not None:
            entry["shed"] = limit.shed
    if decision is not None and decision.room is not None:  # the room's degraded/shed win
        entry["room"] = decision.room.name
        entry["outcome"] = "shadow" if decision is shadowed else decision.outcome.value
        if decision is shadowed:
            entry["would"] = decision.outcome.value
        if decision.degraded is not None:
            entry["degraded"] = decision.degraded.value
        if decision.shed is not None:
            entry["shed"] = decision.shed
    flowmeta.state(flow).log_entry = entry


class DecisionLog:
    """mitmproxy addon: writes a request's decision-log entry once its answer is known."""

    @staticmethod
    def use(settings: DecisionLogConfig) -> None:
        """Write to the stream the config names (stdout or stderr)."""
        _LINES.stream = settings.output

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        state = flowmeta.peek(flow)
        if state is None or state.log_entry is None:
            return
        entry, state.log_entry = state.log_entry, None
        entry["status"] = flow.response.status_code if flow.response else None
        decisions.info("%s", json.dumps(entry, separators=(",", ":")))
