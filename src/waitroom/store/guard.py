"""Bounded, fail-fast access to a remote store: a timeout on every call and a circuit breaker.

mitmproxy disarms its own timeouts while a hook runs, so without this bound a slow Redis would hold
the visitor for as long as it likes. After `failures` failures in a row the breaker opens: calls fail at
once (the failure policy decides) for `cool_down`; then one call probes, and a success closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from enum import StrEnum
from typing import Any

from waitroom.metrics import METRICS
from waitroom.store.base import (
    Admission,
    Clock,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, cool_down: float, clock: Clock = time.monotonic) -> None:
        self.threshold = failures
        self.cool_down = cool_down
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go to the store now? In half-open state only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.cool_down:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.warning("waitroom: store reachable again; circuit closed")
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            if self.state is BreakerState.CLOSED:
                log.warning("waitroom: store failing; circuit open for %.1fs", self.cool_down)
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()

    def abandoned(self) -> None:
        """A call ended without an answer either way (the visitor went away): free the probe slot."""
        self._probing = False


class GuardedStore:
    """Wraps a remote store: every call bounded by `timeout`, every failure a StoreError."""

    def __init__(self, inner: Store, timeout: float, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.timeout = timeout
        self.breaker = breaker

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        return await self._guarded("admit", self.inner.admit(room, session_id))

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        return await self._guarded("hit", self.inner.hit(checks))

    async def room_state(self, room: RoomPolicy) -> RoomState:
        return await self._guarded("room_state", self.inner.room_state(room))

    async def unblock(self, room: str) -> bool:
        return await self._guarded("unblock", self.inner.unblock(room))

    async def overrides(self) -> dict[str, str]:
        return await self._guarded("overrides", self.inner.overrides())

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        await self._guarded("set_overrides", self.inner.set_overrides(changes))

    async def _guarded[T](self, operation: str, call: Coroutine[Any, Any, T]) -> T:
        if not self.breaker.allow():
            call.close()  # never awaited: the store is not asked
            METRICS.store_errors.labels(operation, "circuit_open").inc()
            raise StoreError("circuit open")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                result = await call
        except Exception as e:  # any failure of the store (even a client library bug) is the policy's case
            self.breaker.failed()
            kind = "timeout" if isinstance(e, TimeoutError) else "error"
            METRICS.store_errors.labels(operation, kind).inc()
            raise StoreError(str(e) or type(e).__name__) from e
        except BaseException:
            self.breaker.abandoned()
            raise
        finally:
            METRICS.store_duration.labels(operation).observe(time.perf_counter() - started)
        self.breaker.succeeded()
        return result

    async def close(self) -> None:
        await self.inner.close()
