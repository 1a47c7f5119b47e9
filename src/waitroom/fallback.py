"""What decides while the shared store fails (`store.on_error`), for rooms and rate limits alike.

`open` lets the request through, `closed` refuses it, `local` decides on an in-process window
whose limits are divided by the number of replicas. Overloaded (the proxy's own saturation, see
store/guard.py) is not a store failure: it passes up, and the caller sheds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from waitroom.config import LiveReplicas, StoreConfig, StoreErrorPolicy, unknown_replicas
from waitroom.store import Clock, MemoryStore, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Answer[T]:
    value: T
    degraded: StoreErrorPolicy | None = None
    """The policy that answered because the store failed; None when the store answered."""
    maybe_done: bool = False
    """The store failed, but may have carried out the call all the same (see StoreError)."""


class StoreFallback:
    """Ask the shared store; when it fails, answer by `store.on_error`. One per decider, so that
    each keeps its own local window."""

    def __init__(
        self, config: StoreConfig, clock: Clock, live_replicas: LiveReplicas = unknown_replicas
    ) -> None:
        self.config = config
        self.clock = clock
        self.live_replicas = live_replicas
        """The ready replicas cluster discovery counts (None: unknown); see config.LiveReplicas."""
        self.local: MemoryStore | None = None
        """The in-process window `on_error: local` decides on, made at its first use."""

    async def ask[T](
        self,
        shared: Callable[[], Awaitable[T]],
        *,
        open_: Callable[[], T],
        closed: Callable[[], T],
        local: Callable[[MemoryStore, int], Awaitable[T]],
        what: str,
    ) -> Answer[T]:
        """`shared()` the store's answer; otherwise `open_()`, `closed()` or `local(store, replicas)`
        by the policy, with `replicas` what the limits are divided by now."""
        try:
            return Answer(await shared())
        except StoreError as e:
            policy = self.config.on_error
            maybe_done = e.maybe_done
            # The breaker logs when the store starts and stops failing; one line per request would flood.
            log.debug("store failed (%s); %s decided by on_error=%s", e, what, policy.value)
        if policy is StoreErrorPolicy.OPEN:
            return Answer(open_(), policy, maybe_done)
        if policy is StoreErrorPolicy.CLOSED:
            return Answer(closed(), policy, maybe_done)
        if self.local is None:
            self.local = MemoryStore(self.clock)
        replicas = self.config.local_replicas(self.live_replicas())
        return Answer(await local(self.local, replicas), policy, maybe_done)
