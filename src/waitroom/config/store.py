"""The `store:` section: where state lives, how long it may take, and what decides when it fails."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, field_validator

from waitroom.config.fields import Duration, StrictModel


class StoreErrorPolicy(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCAL = "local"


class BreakerConfig(StrictModel):
    failures: int = Field(3, ge=1, le=1000)
    """Consecutive store failures that open the circuit."""
    cool_down: Duration = Field(5.0, le=3600)
    """How long an open circuit skips the store before a probe (a `PING`) asks it again (at most a
    third of the grace and a quarter of `retry_after`, while a `fifo` room's visitors ask)."""


LiveReplicas = Callable[[], int | None]
"""The ready replicas that cluster discovery counted right now, or None when it does not know
(what StoreConfig.local_replicas takes; the decisions ask it when the store fails)."""


def unknown_replicas() -> int | None:
    return None


class StoreConfig(StrictModel):
    url: str = "memory://"
    """Where state lives: `memory://`, `redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://`."""
    timeout: Duration = Field(0.25, le=10)
    """How long Redis may take to answer one call, from when it is sent, on a proxy free to read the
    answer (store/guard.py judges that). Past it the store is failing and `on_error` decides."""
    max_wait: Duration = Field(2.0, le=60)
    """The most a request waits for the store in all, including time the proxy's own event loop was
    too busy to read the answer, and time it queued before asking. Past it the proxy is saturated
    and the request is shed (wait answer, or the rule's refusal), never admitted. `waitroom serve`'s
    front door sheds a room's new visitors before mitmproxy reads them when a connection would take
    longer than this to be answered."""
    on_error: StoreErrorPolicy = StoreErrorPolicy.LOCAL
    """What decides when the store fails."""
    key_prefix: str = Field("waitroom", pattern=r"^[A-Za-z0-9_:.-]{1,64}$")
    """Prefix of every Redis key, so several deployments can share one Redis."""
    replicas: int = Field(1, ge=1, le=10_000)
    """How many proxy replicas share the store; `on_error: local` divides limits by it (with
    `cluster.discover_replicas`, only until the live count is known)."""
    breaker: BreakerConfig = BreakerConfig()
    max_keys: int = Field(100_000, ge=1_000, le=10_000_000)
    """The embedded store's (and the `local` fallback's) rate-limit table: keys held at once, about
    400 bytes each. When it is full, the least recently used key with quota left makes room; a key
    at its limit is never evicted. Redis keeps every key for its window."""
    password_env: str = Field("WAITROOM_REDIS_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the Redis password for a `url` that carries none, so that the
    config file (a ConfigMap) holds no secret."""
    line_view: bool = True
    """`fifo` rooms on Redis: each replica keeps a view of each busy line and answers the polls of
    tickets that cannot be called before their next poll from it, with no store call, sending their
    "still here" in one batched call per room per second (docs/concepts.md, "The line"). `false`:
    every poll asks the store. The embedded store has no view (its calls cost no round trip)."""

    def url_with_password(self, environ: Mapping[str, str] = os.environ) -> str:
        """`url`, with the password from `password_env` when it is set and the URL has no credentials."""
        password = environ.get(self.password_env)
        parts = urlsplit(self.url)
        if not password or self.url.startswith("memory://") or "@" in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=f":{quote(password, safe='')}@{parts.netloc}"))

    def local_replicas(self, live: int | None) -> int:
        """What `on_error: local` divides limits by: the ready replicas that cluster discovery
        counted when it knows them (see kube.py), else the fixed `replicas`; never less than 1."""
        return max(1, live) if live else self.replicas

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        schemes = ("memory://", "redis://", "rediss://", "redis+sentinel://", "redis+cluster://")
        if not url.startswith(schemes):
            raise ValueError(f"unsupported store URL {url!r} (use one of: {', '.join(schemes)})")
        return url

    @field_validator("timeout", "max_wait")
    @classmethod
    def _positive_timeout(cls, seconds: float) -> float:
        if seconds <= 0:
            raise ValueError("must be greater than 0")
        return seconds
