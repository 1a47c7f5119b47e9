"""`store.on_error`: what decides while the shared store fails, for rooms and rate limits alike.

The deciders ask the store and, when it raises StoreError, ask `OnError.failed` which policy
decides and carry it out themselves: `open` lets the request through, `closed` refuses it,
`local` decides on an in-process store whose limits are divided by the number of replicas.
Overloaded (the proxy's own saturation, see guard.py) is not a store failure: the deciders shed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from waitroom.config.store import LiveReplicas, StoreConfig, StoreErrorPolicy, unknown_replicas
from waitroom.store.base import Clock, StoreError
from waitroom.store.memory import MemoryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreFailed:
    """The store could not answer; `policy` decides instead."""

    policy: StoreErrorPolicy
    maybe_done: bool
    """The store may have carried out the call all the same (see StoreError)."""
    replicas: int
    """What `local` divides the limits by now."""


def share(limit: int, replicas: int) -> int:
    """One replica's share of a limit under `local`: never 0, so that every replica can still admit."""
    return max(1, limit // replicas)


class OnError:
    """One per decider, so that each keeps its own local store."""

    def __init__(
        self, config: StoreConfig, clock: Clock, live_replicas: LiveReplicas = unknown_replicas
    ) -> None:
        self.config = config
        self.clock = clock
        self.live_replicas = live_replicas
        """The ready replicas cluster discovery counts (None: unknown); see config.store.LiveReplicas."""
        self.local: MemoryStore | None = None
        """The in-process store `local` decides on, made at its first use."""

    def failed(self, error: StoreError, what: str) -> StoreFailed:
        policy = self.config.on_error
        # The breaker logs when the store starts and stops failing; one line per request would flood.
        log.debug("store failed (%s); %s decided by on_error=%s", error, what, policy.value)
        replicas = self.config.local_replicas(self.live_replicas())
        return StoreFailed(policy, error.maybe_done, replicas)

    def local_store(self) -> MemoryStore:
        if self.local is None:
            self.local = MemoryStore(self.clock, self.config.max_keys)
        return self.local
