"""Rate-limit decisions for one request, independent of mitmproxy.

match rules → a key per rule (client IP, header, verified JWT claim, global; or the fallback) →
the local "over limit until T" cache → one store round trip for all rules → allowed, limited,
delayed or rerouted. Identities are hashed before they become store keys, so an API key or a token
claim never appears in Redis, logs or metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from waitroom.claims import ClaimVerifier
from waitroom.config import Config, LiveReplicas, RateLimitConfig, StoreErrorPolicy, unknown_replicas
from waitroom.fallback import StoreFallback
from waitroom.limitdecision import Fallback, LimitDecision, LimitOutcome, RequestFacts
from waitroom.metrics import METRICS
from waitroom.overrides import Overrides
from waitroom.ratekeys import KeyReader, OverLimitCache, key_hash
from waitroom.routing import covers
from waitroom.store import Clock, MemoryStore, Overloaded, Store
from waitroom.store.base import RateCheck, RateResult

__all__ = ["Fallback", "LimitDecision", "LimitOutcome", "RateLimiter", "RequestFacts"]


class RateLimiter:
    def __init__(
        self,
        config: Config,
        store: Store,
        verifier: ClaimVerifier | None,
        clock: Clock,
        live_replicas: LiveReplicas = unknown_replicas,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.sleep = sleep
        """How a `delay` action waits: real time live, the recorded clock's time in flow replay."""
        self.rules = config.rate_limits
        self.store = store
        self.verifier = verifier
        self.clock = clock
        self.keys = KeyReader(config, verifier, clock)
        self.overrides = Overrides()
        """Set by the addon from the store (admin API changes); replaced whole, never mutated."""
        self._over = OverLimitCache(clock)
        self.fallback = StoreFallback(config.store, clock, live_replicas)
        """Decides by `store.on_error` while the store fails."""

    def set_overrides(self, overrides: Overrides) -> None:
        """New run-time limits: the over-limit cache was judged by the old ones."""
        if overrides != self.overrides:
            self.overrides = overrides
            self._over.clear()

    def matching(self, facts: RequestFacts) -> list[RateLimitConfig]:
        return [
            rule
            for rule in self.rules
            if covers(rule.match.path_prefix, facts.path)
            and rule.match.host in (None, facts.host)
            and (rule.match.methods is None or facts.method in rule.match.methods)
        ]

    def checks(
        self, facts: RequestFacts, matched: list[RateLimitConfig] | None = None
    ) -> tuple[list[RateCheck], list[RateLimitConfig], list[Fallback]]:
        """The store's questions for every matching rule (`matched`, else matched here) that has a
        key, and the fallbacks used."""
        checks, rules, fallbacks = [], [], []
        for rule in map(self.overrides.rule, self.matching(facts) if matched is None else matched):
            identity, reason = self.keys.identity(rule.key, facts)
            key_form = rule.key
            if identity is None and rule.fallback is not None:
                fallbacks.append(Fallback(rule.name, reason))
                identity, _ = self.keys.identity(rule.fallback, facts)
                key_form = rule.fallback
            if identity is None:
                continue  # no key and no fallback: the rule does not apply to this request
            checks.append(
                RateCheck(
                    rule=rule.name,
                    key=key_hash(f"{key_form}={identity}"),
                    algorithm=rule.algorithm,
                    limit=rule.limit,
                    per=rule.per,
                    burst=rule.burst,
                    shadow=rule.shadow,
                )
            )
            rules.append(rule)
        return checks, rules, fallbacks

    async def decide(
        self, facts: RequestFacts, matched: list[RateLimitConfig] | None = None
    ) -> LimitDecision:
        """`matched`: the rules that match the request, when the caller classified it already."""
        checks, rules, fallbacks = self.checks(facts, matched)
        if not checks:
            return LimitDecision(LimitOutcome.NONE, fallbacks=tuple(fallbacks))
        cached = self._cached_refusal(checks, rules)
        if cached is not None:
            return cached
        if facts.waited > self.config.store.max_wait:
            return self._shed(checks, rules, fallbacks, "queue")
        try:
            results, degraded = await self._hit(checks)
        except Overloaded as e:
            return self._shed(checks, rules, fallbacks, e.reason)
        decision = self._judge(checks, rules, results, fallbacks, degraded)
        if decision.outcome is LimitOutcome.LIMITED and decision.rule and decision.rule.action == "delay":
            return await self._delay(facts, decision, matched)
        return decision

    def _shed(
        self, checks: list[RateCheck], rules: list[RateLimitConfig], fallbacks: list[Fallback], reason: str
    ) -> LimitDecision:
        """Saturated: no answer from the shared window in time, so the first enforcing rule refuses
        (a request is never let through uncounted). Shadow rules alone never refuse."""
        METRICS.shed.labels(reason).inc()
        for check, rule in zip(checks, rules, strict=True):
            if not check.shadow:
                decision = LimitDecision.refused_by(
                    rule, RateResult(False, 0, 1.0), (), None, fallbacks=tuple(fallbacks)
                )
                return dataclasses.replace(decision, shed=reason)
        return LimitDecision(LimitOutcome.ALLOWED, fallbacks=tuple(fallbacks), shed=reason)

    def _cached_refusal(self, checks: list[RateCheck], rules: list[RateLimitConfig]) -> LimitDecision | None:
        for check, rule in zip(checks, rules, strict=True):
            if check.shadow:
                continue
            result = self._over.refused(check)
            if result is None:
                continue
            if rule.action == "delay":
                return None  # a delayed request needs the store's word after its wait
            return LimitDecision.refused_by(rule, result, (), None, cached=True)
        return None

    async def _hit(self, checks: list[RateCheck]) -> tuple[list[RateResult], StoreErrorPolicy | None]:
        async def local(store: MemoryStore, replicas: int) -> list[RateResult]:
            return await store.hit(
                [dataclasses.replace(c, limit=max(1, c.limit // replicas)) for c in checks]
            )

        answer = await self.fallback.ask(
            lambda: self.store.hit(checks),
            open_=lambda: [RateResult(True, c.limit, 0.0) for c in checks],
            closed=lambda: [RateResult(c.shadow, 0, c.per) for c in checks],
            local=local,
            what="rate limits",
        )
        return answer.value, answer.degraded

    def _judge(
        self,
        checks: list[RateCheck],
        rules: list[RateLimitConfig],
        results: list[RateResult],
        fallbacks: list[Fallback],
        degraded: StoreErrorPolicy | None,
    ) -> LimitDecision:
        shadow = tuple(c.rule for c, r in zip(checks, results, strict=True) if c.shadow and not r.allowed)
        for check, rule, result in zip(checks, rules, results, strict=True):
            if not result.allowed and not check.shadow:
                if rule.action != "delay":
                    self._over.remember(check, result)
                return LimitDecision.refused_by(rule, result, shadow, degraded, fallbacks=tuple(fallbacks))
        # Allowed: the headers describe the enforcing rule closest to its limit.
        enforcing = [(r, res) for c, r, res in zip(checks, rules, results, strict=True) if not c.shadow]
        if not enforcing:
            return LimitDecision(
                LimitOutcome.SHADOW_LIMITED if shadow else LimitOutcome.ALLOWED,
                shadow_limited=shadow,
                fallbacks=tuple(fallbacks),
                degraded=degraded,
            )
        rule, result = min(enforcing, key=lambda p: p[1].remaining)
        outcome = LimitOutcome.SHADOW_LIMITED if shadow else LimitOutcome.ALLOWED
        return LimitDecision(
            outcome, rule, result, shadow_limited=shadow, fallbacks=tuple(fallbacks), degraded=degraded
        )

    async def _delay(
        self, facts: RequestFacts, decision: LimitDecision, matched: list[RateLimitConfig] | None
    ) -> LimitDecision:
        """Hold the request until the rule would allow it, if that is within `max_delay`; then ask
        the store once more (others may have taken the slot meanwhile)."""
        rule, result = decision.rule, decision.result
        if rule is None or result is None or result.reset_after > rule.max_delay:
            return decision
        wait = result.reset_after
        await self.sleep(wait)  # bounded by max_delay, which the config caps at 30s
        checks, rules, fallbacks = self.checks(facts, matched)
        try:
            results, degraded = await self._hit(checks)
        except Overloaded as e:
            return self._shed(checks, rules, fallbacks, e.reason)
        again = self._judge(checks, rules, results, fallbacks, degraded)
        if again.outcome in (LimitOutcome.ALLOWED, LimitOutcome.SHADOW_LIMITED):
            return LimitDecision(
                LimitOutcome.DELAYED,
                again.rule,
                again.result,
                delayed_for=wait,
                shadow_limited=again.shadow_limited,
                fallbacks=again.fallbacks,
                degraded=again.degraded,
            )
        return again
