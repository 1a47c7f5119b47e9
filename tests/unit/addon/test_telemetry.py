"""telemetry.py: the metrics, the decision-log entry and the replay metadata, once per request."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import tflow

from waitroom.addon import flowmeta, telemetry
from waitroom.addon.flowmeta import RECORD_KEY
from waitroom.config.ops import DecisionLogConfig
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import RoomConfig
from waitroom.ratelimit.decision import Fallback, LimitDecision, LimitOutcome
from waitroom.rooms.decider import Decision, Outcome
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
    telemetry.log_decision(flow, DecisionLogConfig(format="json", sample=0.5), "/api/x", limit, decision)
    assert len(draws) == 1
    entry = flowmeta.state(flow).log_entry
    assert entry is not None
    assert (entry["rule"], entry["rate_limit"]) == ("api", "allowed")
    assert (entry["room"], entry["outcome"]) == ("shop", "admitted")
    assert entry["fallbacks"] == ["api:missing"]
    assert type(entry["fallbacks"][0]) is str  # plain text in the log


def test_no_entry_without_a_rule_or_a_room() -> None:
    flow = tflow.tflow()
    telemetry.log_decision(
        flow, DecisionLogConfig(format="json", sample=1.0), "/x", None, Decision(Outcome.NO_ROOM)
    )
    assert "waitroom.decision_log" not in flow.metadata


def test_the_decision_log_line_is_pure_json_and_carries_the_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flow = tflow.tflow(resp=True)
    telemetry.log_decision(
        flow, DecisionLogConfig(format="json", sample=1.0), "/shop", None, Decision(Outcome.WAITING, ROOM)
    )
    telemetry.DecisionLog().response(flow)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["status"] == flow.response.status_code  # type: ignore[union-attr]
    telemetry.DecisionLog().response(flow)  # written once
    assert capsys.readouterr().out == ""
    assert telemetry.decisions.propagate is False  # never through mitmproxy's log (its prefix, -q)


def test_the_output_is_stdout_or_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    flow = tflow.tflow(resp=True)
    settings = DecisionLogConfig(format="json", sample=1.0, output="stderr")
    telemetry.log_decision(flow, settings, "/shop", None, Decision(Outcome.WAITING, ROOM))
    telemetry.DecisionLog.use(settings)
    try:
        telemetry.DecisionLog().response(flow)
    finally:
        telemetry.DecisionLog.use(DecisionLogConfig())
    out, err = capsys.readouterr()
    assert (out, json.loads(err)["room"]) == ("", "shop")


def test_a_shadow_entry_names_its_rule() -> None:
    """A request only a shadow rule would have refused: `rule` names it, `shadow` lists them all."""
    flow = tflow.tflow()
    shadow = LimitDecision(LimitOutcome.SHADOW_LIMITED, None, shadow_limited=("new-api", "strict"))
    telemetry.log_decision(flow, DecisionLogConfig(format="json", sample=1.0), "/api", shadow, None)
    entry = flowmeta.state(flow).log_entry
    assert entry is not None
    assert (entry["rule"], entry["rate_limit"], entry["shadow"]) == (
        "new-api",
        "shadow_limited",
        ["new-api", "strict"],
    )
    enforcing = LimitDecision(
        LimitOutcome.ALLOWED, RULE, RateResult(True, 4, 1.0), shadow_limited=("strict",)
    )
    telemetry.log_decision(flow, DecisionLogConfig(format="json", sample=1.0), "/api", enforcing, None)
    entry = flowmeta.state(flow).log_entry
    assert entry is not None
    assert (entry["rule"], entry["shadow"]) == ("api", ["strict"])


def test_the_replay_metadata() -> None:
    flow = tflow.tflow()
    telemetry.save_limit(flow, LimitDecision(LimitOutcome.NONE), "/x")
    assert RECORD_KEY not in flow.metadata
    telemetry.save_limit(flow, LimitDecision(LimitOutcome.LIMITED, RULE, RateResult(False, 0, 1.0)), "/api")
    telemetry.save_room(flow, Decision(Outcome.WAITING, ROOM))
    assert flow.metadata[RECORD_KEY] == {
        "rate_limit": {"outcome": "limited", "rule": "api", "shadow_limited": [], "fallbacks": []},
        "room": "shop",
        "outcome": "waiting",
    }
