"""What a decision leaves behind, written in one place, once per request: the metrics, the sampled
decision-log line (written when the answer is known, with its status), and the decision saved in
the flow's metadata for replay (replay.py reads it)."""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from typing import Any

from mitmproxy import http

from waitroom.config import DecisionLogConfig
from waitroom.decide import Decision
from waitroom.limits import LimitDecision, LimitOutcome
from waitroom.metrics import METRICS
from waitroom.replay import METADATA_KEY

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods named as they are in logs; any other is `other` (a client chooses it: unbounded)."""
_LOG_KEY = "waitroom.decision_log"
# The request path's metric series, looked up once: prometheus-client's labels() takes a lock and
# builds a key on every call.
_ROOM_DECISIONS = METRICS.decision_duration.labels("room")
_LIMIT_DECISIONS = METRICS.decision_duration.labels("rate_limit")


@functools.cache
def _room_requests(room: str, outcome: str) -> Any:
    return METRICS.room_requests.labels(room, outcome)  # room names come from the config: bounded


@functools.cache
def _rate_limit_requests(rule: str, outcome: str) -> Any:
    return METRICS.rate_limit_requests.labels(rule, outcome)


def count_limit(limit: LimitDecision, seconds: float) -> None:
    """The metrics of one rate-limit decision that took `seconds`."""
    if limit.outcome is not LimitOutcome.NONE:
        _LIMIT_DECISIONS.observe(seconds)
    for fallback in limit.fallbacks:
        METRICS.rate_limit_fallbacks.labels(fallback.rule, fallback.reason).inc()
    if limit.degraded is not None:
        METRICS.degraded_decisions.labels(limit.degraded.value).inc()
    for rule in limit.shadow_limited:
        METRICS.rate_limit_requests.labels(rule, LimitOutcome.SHADOW_LIMITED.value).inc()
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
        METRICS.degraded_decisions.labels(decision.degraded.value).inc()


def save_limit(flow: http.HTTPFlow, limit: LimitDecision, path: str) -> None:
    """The rate-limit decision in the flow's metadata (saved with `mitmdump -w`, read by replay),
    and a log line when a shadow rule would have refused."""
    if limit.outcome is LimitOutcome.NONE:
        return
    if limit.shadow_limited:
        log.info("waitroom: shadow rate limit %s would refuse %s", ",".join(limit.shadow_limited), path[:256])
    flow.metadata.setdefault(METADATA_KEY, {})["rate_limit"] = {
        "outcome": limit.outcome.value,
        "rule": limit.rule.name if limit.rule else None,
        "shadow_limited": list(limit.shadow_limited),
        "fallbacks": [str(f) for f in limit.fallbacks],
    }


def save_room(flow: http.HTTPFlow, decision: Decision) -> None:
    if decision.room is not None:
        flow.metadata.setdefault(METADATA_KEY, {}).update(
            room=decision.room.name, outcome=decision.outcome.value
        )


def log_decision(
    flow: http.HTTPFlow,
    settings: DecisionLogConfig,
    path: str,
    limit: LimitDecision | None,
    decision: Decision | None,
) -> None:
    """The request's decision-log entry, one sampling draw: no cookie, token, query string or client
    address. `limit` is None when no rule is configured; an entry is made when a rule is configured
    or a room decided. DecisionLog writes it once the answer's status is known."""
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
        entry["rule"] = limit.rule.name if limit.rule else None
        entry["rate_limit"] = limit.outcome.value
        if limit.fallbacks:
            entry["fallbacks"] = [str(f) for f in limit.fallbacks]
        if limit.degraded is not None:
            entry["degraded"] = limit.degraded.value
        if limit.shed is not None:
            entry["shed"] = limit.shed
    if decision is not None and decision.room is not None:  # the room's degraded/shed win
        entry["room"] = decision.room.name
        entry["outcome"] = decision.outcome.value
        if decision.degraded is not None:
            entry["degraded"] = decision.degraded.value
        if decision.shed is not None:
            entry["shed"] = decision.shed
    flow.metadata[_LOG_KEY] = entry


class DecisionLog:
    """mitmproxy addon: writes a request's decision-log entry once its answer is known."""

    def response(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._write(flow)

    def _write(self, flow: http.HTTPFlow) -> None:
        entry = flow.metadata.pop(_LOG_KEY, None)
        if entry is not None:
            entry["status"] = flow.response.status_code if flow.response else None
            log.info("%s", json.dumps(entry, separators=(",", ":")))
