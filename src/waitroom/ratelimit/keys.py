"""What a rate-limit rule counts by, and whom it already refused.

`KeyReader` finds a request's identity for a key form (`global`, `ip`, `header:NAME`,
`jwt:CLAIM`); `key_hash` makes it a store key, so an API key or a token claim never appears in Redis,
logs or metrics. `OverLimitCache` remembers clients over their limit until the window lets them in
again, so that refusing them again costs no store call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from waitroom.config.schema import Config
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.store.base import Clock, RateCheck, RateResult
from waitroom.web.client import request_ip
from waitroom.web.request import RequestFacts

OVER_LIMIT_CACHE_SIZE = 100_000
"""Clients remembered as over their limit; past this, expired entries are dropped first."""


def key_hash(value: str) -> str:
    # Header values that were not UTF-8 arrive with surrogate escapes: any str must hash.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class KeyReader:
    def __init__(self, config: Config, verifier: ClaimVerifier | None, clock: Callable[[], float]) -> None:
        self.config = config
        self.verifier = verifier
        self.clock = clock

    def identity(self, key: str, facts: RequestFacts) -> tuple[str | None, str]:
        """(identity, reason): None when this key form has no value for the request."""
        if key == "global":
            return "*", "ok"
        if key == "ip":
            return request_ip(self.config.client_ip, facts.peer, facts.header), "ok"
        kind, _, name = key.partition(":")
        if kind == "header":
            value = (facts.header(name) or "").strip()
            return (value or None), ("ok" if value else "missing")
        if self.verifier is None:
            return None, "no_jwt_config"
        auth = facts.header(self.verifier.config.header)
        claim = self.verifier.claim(auth, name, self.clock())
        return claim.value, claim.reason


class OverLimitCache:
    """(rule, key) → the time until which the store said no; bounded by OVER_LIMIT_CACHE_SIZE."""

    def __init__(self, clock: Clock, size: int = OVER_LIMIT_CACHE_SIZE) -> None:
        self.clock = clock
        self.size = size
        self._over: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        self._over.clear()

    def refused(self, check: RateCheck) -> RateResult | None:
        """The remembered refusal for `check`, while it lasts: until one request would pass, or for
        a delay rule until one could be held for its slot (`max_delay` before that)."""
        until = self._over.get((check.rule, check.key))
        if until is None:
            return None
        now = self.clock()
        if until - check.max_delay <= now:
            del self._over[(check.rule, check.key)]
            return None
        return RateResult(False, 0, until - now)

    def remember(self, check: RateCheck, result: RateResult) -> None:
        if len(self._over) >= self.size:
            now = self.clock()
            self._over = {k: v for k, v in self._over.items() if v > now}
            if len(self._over) >= self.size:
                self._over.clear()
        self._over[(check.rule, check.key)] = self.clock() + result.reset_after
