"""ratelimit/decision.py: what a refusing rule's decision says, and when it ends the request."""

from __future__ import annotations

from waitroom.config.rules import RateLimitConfig
from waitroom.config.store import StoreErrorPolicy
from waitroom.ratelimit.decision import Fallback, LimitDecision, LimitOutcome
from waitroom.store.base import RateResult


def rule(action: str = "reject") -> RateLimitConfig:
    return RateLimitConfig(name="r", limit=1, action=action)


def test_a_refusal_is_limited_or_rerouted_by_the_rules_action() -> None:
    refused = RateResult(False, 0, 2.5)
    limited = LimitDecision.refused_by(rule(), refused, ("s",), StoreErrorPolicy.LOCAL, cached=True)
    assert (limited.outcome, limited.upstream, limited.shadow_limited) == (LimitOutcome.LIMITED, None, ("s",))
    assert (limited.degraded, limited.cached, limited.retry_after) == (StoreErrorPolicy.LOCAL, True, 3)
    assert limited.ends_request

    fallbacks = (Fallback("r", "missing"),)
    rerouted = LimitDecision.refused_by(
        rule("upstream:http://slow:8080"), refused, (), None, fallbacks=fallbacks
    )
    assert (rerouted.outcome, rerouted.upstream) == (LimitOutcome.REROUTED, "http://slow:8080")
    assert rerouted.fallbacks == fallbacks
    assert rerouted.ends_request


def test_allowed_and_unmatched_requests_go_on() -> None:
    assert not LimitDecision(LimitOutcome.NONE).ends_request
    assert not LimitDecision(LimitOutcome.ALLOWED, rule(), RateResult(True, 3, 0.0)).ends_request
    assert LimitDecision(LimitOutcome.NONE).retry_after == 1


def test_a_fallback_reads_as_rule_and_reason() -> None:
    used = Fallback("api", "jwt_expired")
    assert (used, used.rule, used.reason) == ("api:jwt_expired", "api", "jwt_expired")
