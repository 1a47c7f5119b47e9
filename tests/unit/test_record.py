"""record.py: the metrics, the decision-log entry and the replay metadata, once per request."""

from __future__ import annotations

import json
import logging

import pytest
from mitmproxy.test import tflow

from waitroom import record
from waitroom.config import DecisionLogConfig, RateLimitConfig, RoomConfig
from waitroom.decide import Decision, Outcome
from waitroom.limits import Fallback, LimitDecision, LimitOutcome
from waitroom.replay import METADATA_KEY
from waitroom.store.base import RateResult

RULE = RateLimitConfig.model_validate(
    {"name": "api", "match": {"path_prefix": "/api"}, "limit": 5, "per": "1s"}
)
ROOM = RoomConfig.model_validate({"name": "shop", "new_sessions": 1})


def test_a_fallback_is_typed_and_reads_as_rule_colon_reason() -> None:
    fallback = Fallback("api", "missing")
    assert (fallback.rule, fallback.reason) == ("api", "missing")
    assert fallback == "api:missing"


def test_one_entry_and_one_sampling_draw_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[float] = []

    def draw() -> float:
        draws.append(0.0)
        return 0.0

    monkeypatch.setattr("random.random", draw)
    flow = tflow.tflow()
    limit = LimitDecision(
        LimitOutcome.ALLOWED, RULE, RateResult(True, 4, 1.0), fallbacks=(Fallback("api", "missing"),)
    )
    decision = Decision(Outcome.ADMITTED, ROOM)
    record.log_decision(flow, DecisionLogConfig(format="json", sample=0.5), "/api/x", limit, decision)
    assert len(draws) == 1
    entry = flow.metadata["waitroom.decision_log"]
    assert (entry["rule"], entry["rate_limit"]) == ("api", "allowed")
    assert (entry["room"], entry["outcome"]) == ("shop", "admitted")
    assert entry["fallbacks"] == ["api:missing"]
    assert type(entry["fallbacks"][0]) is str  # plain text in the log


def test_no_entry_without_a_rule_or_a_room() -> None:
    flow = tflow.tflow()
    record.log_decision(
        flow, DecisionLogConfig(format="json", sample=1.0), "/x", None, Decision(Outcome.NO_ROOM)
    )
    assert "waitroom.decision_log" not in flow.metadata


def test_the_decision_log_line_carries_the_status(caplog: pytest.LogCaptureFixture) -> None:
    flow = tflow.tflow(resp=True)
    record.log_decision(
        flow, DecisionLogConfig(format="json", sample=1.0), "/shop", None, Decision(Outcome.WAITING, ROOM)
    )
    caplog.set_level(logging.INFO)
    record.DecisionLog().response(flow)
    (line,) = [r.getMessage() for r in caplog.records if "waitroom_decision" in r.getMessage()]
    assert json.loads(line)["status"] == flow.response.status_code  # type: ignore[union-attr]
    record.DecisionLog().response(flow)  # written once
    assert len([r for r in caplog.records if "waitroom_decision" in r.getMessage()]) == 1


def test_the_replay_metadata() -> None:
    flow = tflow.tflow()
    record.save_limit(flow, LimitDecision(LimitOutcome.NONE), "/x")
    assert METADATA_KEY not in flow.metadata
    record.save_limit(flow, LimitDecision(LimitOutcome.LIMITED, RULE, RateResult(False, 0, 1.0)), "/api")
    record.save_room(flow, Decision(Outcome.WAITING, ROOM))
    assert flow.metadata[METADATA_KEY] == {
        "rate_limit": {"outcome": "limited", "rule": "api", "shadow_limited": [], "fallbacks": []},
        "room": "shop",
        "outcome": "waiting",
    }
