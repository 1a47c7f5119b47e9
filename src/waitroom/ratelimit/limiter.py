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

from waitroom.config.overrides import Overrides
from waitroom.config.rules import RateLimitConfig
from waitroom.config.schema import Config
from waitroom.config.store import LiveReplicas, StoreErrorPolicy, unknown_replicas
from waitroom.metrics import METRICS
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.ratelimit.decision import Fallback, LimitDecision, LimitOutcome
from waitroom.ratelimit.keys import KeyReader, OverLimitCache, key_hash
from waitroom.store.base import Clock, Overloaded, RateCheck, RateResult, RateStore, StoreError
from waitroom.store.on_error import OnError, share
from waitroom.web.request import RequestFacts
from waitroom.web.target import covers


class RateLimiter:
    def __init__(
        self,
        config: Config,
        store: RateStore,
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
        self.on_error = OnError(config.store, clock, live_replicas)
        """Which `store.on_error` policy decides while the store fails, and its local store."""

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
        self, facts: RequestFacts, matched: list[RateLimitConfig]
    ) -> tuple[list[RateCheck], list[RateLimitConfig], list[Fallback]]:
        """The store's questions for every rule in `matched` (see matching) that has a key, and the
        fallbacks used."""
        checks, rules, fallbacks = [], [], []
        for rule in map(self.overrides.rule, matched):
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
                    max_delay=rule.max_delay if rule.action == "delay" else 0.0,
                )
            )
            rules.append(rule)
        return checks, rules, fallbacks

    async def decide(self, facts: RequestFacts, matched: list[RateLimitConfig]) -> LimitDecision:
        """`matched`: the rules that match the request, as the gate classified it (matching)."""
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
        if decision.outcome is LimitOutcome.DELAYED:
            # The store reserved this request's slot (and charged it): it waits for it, then goes
            # on without asking again. Bounded by max_delay, which the config caps at 30s.
            await self.sleep(decision.delayed_for)
        return decision

    def _shed(
        self, checks: list[RateCheck], rules: list[RateLimitConfig], fallbacks: list[Fallback], reason: str
    ) -> LimitDecision:
        """Saturated: no answer from the shared window in time, so the first enforcing rule refuses
        (a request is never let through uncounted). Shadow rules alone never refuse."""
        METRICS.store.shed.labels(reason).inc()
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
            return LimitDecision.refused_by(rule, result, (), None, cached=True)
        return None

    async def _hit(self, checks: list[RateCheck]) -> tuple[list[RateResult], StoreErrorPolicy | None]:
        """The store's results; when the store fails, the `store.on_error` policy's. Overloaded
        passes up: the caller sheds."""
        try:
            return await self.store.hit(checks), None
        except StoreError as e:
            failed = self.on_error.failed(e, "rate limits")
        match failed.policy:
            case StoreErrorPolicy.OPEN:
                return [RateResult(True, c.limit, 0.0) for c in checks], failed.policy
            case StoreErrorPolicy.CLOSED:
                return [RateResult(c.shadow, 0, c.per) for c in checks], failed.policy
            case StoreErrorPolicy.LOCAL:
                shares = [dataclasses.replace(c, limit=share(c.limit, failed.replicas)) for c in checks]
                return await self.on_error.local_store().hit(shares), failed.policy

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
                self._over.remember(check, result)
                return LimitDecision.refused_by(rule, result, shadow, degraded, fallbacks=tuple(fallbacks))
        enforcing = [(r, res) for c, r, res in zip(checks, rules, results, strict=True) if not c.shadow]
        held = max(enforcing, key=lambda p: p[1].delay, default=None)
        if held is not None and held[1].delay > 0:
            # Reserved: the request waits for the latest of its rules' slots (all are charged).
            rule, result = held
            return LimitDecision(
                LimitOutcome.DELAYED,
                rule,
                result,
                delayed_for=min(result.delay, rule.max_delay),
                shadow_limited=shadow,
                fallbacks=tuple(fallbacks),
                degraded=degraded,
            )
        # Allowed: the headers describe the enforcing rule closest to its limit.
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
