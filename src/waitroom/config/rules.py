"""The `rate_limits:` rules and what their keys read: the client's address and verified JWT claims."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from waitroom.config.fields import NAME_PATTERN, Duration, Match, StrictModel


class ClientIPConfig(StrictModel):
    trusted_proxies: int = Field(0, ge=0, le=16)
    """How many X-Forwarded-For hops were added by proxies we trust (1 behind the Istio gateway)."""
    header: str | None = None
    """A header set by a trusted proxy that holds the client address, e.g. X-Envoy-External-Address."""
    ipv6_prefix: int = Field(64, ge=32, le=128)
    """The network an IPv6 client is counted by (`ip` rate-limit keys, `tickets_per_ip`): one household
    or phone gets a /64, so the addresses within it are one client."""
    ipv4_prefix: int = Field(32, ge=16, le=32)
    """The network an IPv4 client is counted by (32: its address); lower it only for carrier-grade NAT
    ranges you trust to be one client each."""


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
    """`reject` (429), `delay` (hold a request until its turn, if that comes within `max_delay`;
    otherwise 429 at once), or `upstream:URL` (send the request to another upstream)."""
    max_delay: Duration = 1.0
    """With `action: delay`, the longest a request is held for its turn (at most 30s); a request
    whose turn would come later is refused at once."""
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

    @model_validator(mode="after")
    def _delay_fits_the_window(self) -> Self:
        # A sliding window keeps held requests' counts per future window: a bounded few.
        if self.action == "delay" and self.algorithm == "sliding_window" and self.max_delay > 64 * self.per:
            raise ValueError(
                f"max_delay ({self.max_delay:g}s) is more than 64 × per ({self.per:g}s) for a "
                "sliding_window; use algorithm: gcra to hold requests that long"
            )
        return self


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
