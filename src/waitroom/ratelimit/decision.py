"""What a rate-limit decision says, independent of mitmproxy and of how it is made: the outcome,
the fallbacks used, and the decision the gate acts on. limiter.py makes it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from waitroom.config.rules import RateLimitConfig
from waitroom.config.store import StoreErrorPolicy
from waitroom.store.base import RateResult


class LimitOutcome(StrEnum):
    NONE = "none"
    """No rule matched."""
    ALLOWED = "allowed"
    LIMITED = "limited"
    SHADOW_LIMITED = "shadow_limited"
    """A shadow rule would have refused; the request goes on."""
    DELAYED = "delayed"
    REROUTED = "rerouted"


class Fallback(str):
    """A rule whose key came from its `fallback`, and why (`missing`, or a JWT's reason). Its text
    is `rule:reason`, as the decision log and recorded flows carry it."""

    rule: str
    reason: str

    def __new__(cls, rule: str, reason: str) -> Fallback:
        self = super().__new__(cls, f"{rule}:{reason}")
        self.rule, self.reason = rule, reason
        return self


@dataclass(frozen=True, slots=True)
class LimitDecision:
    outcome: LimitOutcome
    rule: RateLimitConfig | None = None
    """The rule that refused (or, when allowed, the one closest to its limit: its headers go out)."""
    result: RateResult | None = None
    upstream: str | None = None
    delayed_for: float = 0.0
    shadow_limited: tuple[str, ...] = ()
    fallbacks: tuple[Fallback, ...] = field(default=())
    """Rules whose key came from the fallback (e.g. a missing or invalid JWT), with the reason."""
    degraded: StoreErrorPolicy | None = None
    cached: bool = False
    """Refused from the local over-limit cache, without asking the store."""
    shed: str | None = None
    """Refused because the proxy was too busy to get the store's answer in time (see guard.py)."""

    @classmethod
    def refused_by(
        cls,
        rule: RateLimitConfig,
        result: RateResult,
        shadow: tuple[str, ...],
        degraded: StoreErrorPolicy | None,
        *,
        cached: bool = False,
        fallbacks: tuple[Fallback, ...] = (),
    ) -> LimitDecision:
        """`rule` refused: limited, or rerouted when its action is `upstream:URL`."""
        rerouted = rule.action.startswith("upstream:")
        return cls(
            LimitOutcome.REROUTED if rerouted else LimitOutcome.LIMITED,
            rule,
            result,
            upstream=rule.action.removeprefix("upstream:") if rerouted else None,
            shadow_limited=shadow,
            fallbacks=fallbacks,
            degraded=degraded,
            cached=cached,
        )

    @property
    def ends_request(self) -> bool:
        """Refused, or sent to another upstream: the request goes no further (no room is asked)."""
        if self.rule is None or self.result is None:
            return False
        return self.outcome is LimitOutcome.LIMITED or (
            self.outcome is LimitOutcome.REROUTED and bool(self.upstream)
        )

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.result.reset_after)) if self.result else 1
