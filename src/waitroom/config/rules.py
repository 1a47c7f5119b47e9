"""The `rate_limits:` rules and what their keys read: the client's address and verified JWT claims."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from waitroom.configfields import NAME_PATTERN, Duration, Match, StrictModel


class ClientIPConfig(StrictModel):
    trusted_proxies: int = Field(0, ge=0, le=16)
    """How many X-Forwarded-For hops were added by proxies we trust (1 behind the Istio gateway)."""
    header: str | None = None
    """A header set by a trusted proxy that holds the client address, e.g. X-Envoy-External-Address."""


class RateLimitMatch(Match):
    methods: list[str] | None = None
    """Only these methods (a rule's `match` must match in all its fields)."""

    @field_validator("methods")
    @classmethod
    def _upper(cls, methods: list[str] | None) -> list[str] | None:
        return None if methods is None else [m.upper() for m in methods]


_KEY = r"^(ip|global|header:[A-Za-z0-9-]+|jwt:[A-Za-z0-9_.-]+)$"


class RateLimitConfig(StrictModel):
    """A rule: at most `limit` requests per `per` for each key, across all replicas sharing a store."""

    name: str = Field(pattern=NAME_PATTERN)
    """Letters, digits, `_` and `-`; shows in headers and logs."""
    match: RateLimitMatch = RateLimitMatch()
    key: str = Field("ip", pattern=_KEY)
    """What is counted: `ip`, `header:NAME`, `jwt:CLAIM` or `global`."""
    fallback: str | None = Field(None, pattern=_KEY)
    """The key to use when `key` has no value (header missing, JWT missing or invalid); without one,
    such requests are not counted by this rule."""
    limit: int = Field(ge=1, le=10_000_000)
    """At most `limit` requests per `per` for each key."""
    per: Duration = Field(1.0, le=86400)
    """The interval `limit` is counted over (at least 1ms)."""
    algorithm: Literal["sliding_window", "sliding_log", "gcra"] = "sliding_window"
    """How requests are counted."""
    burst: int | None = Field(None, ge=1, le=10_000_000)
    """`gcra` only: how many requests may come at once."""
    action: str = Field("reject", pattern=r"^(reject|delay|upstream:https?://\S+)$")
    """`reject` (429), `delay` (hold up to `max_delay`, then 429), or `upstream:URL` (send the request
    to another upstream)."""
    max_delay: Duration = 1.0
    """With `action: delay`, the longest a request is held before it is refused instead (at most 30s)."""
    shadow: bool = False
    """Count and log, never enforce: a dry run for a new rule."""

    @field_validator("per")
    @classmethod
    def _per_positive(cls, seconds: float) -> float:
        if seconds < 0.001:
            raise ValueError("must be at least 1ms")
        return seconds

    @field_validator("max_delay")
    @classmethod
    def _bounded_delay(cls, seconds: float) -> float:
        if seconds > 30:
            raise ValueError("must be at most 30s (a held request holds a connection)")
        return seconds


class JWTConfig(StrictModel):
    header: str = "Authorization"
    """The header holding the token, as `Bearer <token>`."""
    algorithms: list[Literal["HS256", "HS384", "HS512", "RS256", "ES256"]] = ["HS256"]
    """The algorithms a signature may use (`none` can never be allowed)."""
    secret_env: str | None = "WAITROOM_JWT_SECRET"
    """The environment variable holding the secret that HS* tokens are checked with."""
    public_key_file: Path | None = None
    """A PEM public key that RS*/ES* tokens are checked with."""
    jwks_file: Path | None = None
    """A JWKS file that RS*/ES* tokens are checked with (the key chosen by `kid`)."""
    audience: str | None = None
    """When set, the `aud` a token must carry."""
    issuer: str | None = None
    """When set, the `iss` a token must carry."""
    leeway: Duration = Field(30.0, le=3600)
    """Clock leeway for `exp` and `nbf`."""
