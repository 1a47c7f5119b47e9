"""Bounded, fail-fast access to a remote store: a deadline on every call and a circuit breaker.

mitmproxy disarms its own timeouts while a hook runs, so without a bound a slow Redis would hold the
visitor for as long as it likes. The bound must measure Redis, not the proxy: in a burst, hundreds of
requests share one event loop, and a reply that came back in a millisecond can wait 100 ms in the
socket before the loop gets to read it. A plain `asyncio.timeout` counts that wait as Redis's, calls
Redis failed when it was not, and hands the busiest minute to the failure policy.

So a call's deadline (`store.timeout`) is judged by a timer that knows whether the loop was free:
- the timer fires on time (the loop was idle enough to run it) and the call has no answer: Redis is
  slow or gone. That is a store failure: the failure policy decides and the breaker counts it.
- the timer fires late (the loop was busy, so the answer may be sitting unread): the deadline moves
  to `timeout` after now, so Redis gets its full time on a loop that can read it.
- but no call waits for more than `max_wait` in all: past it the proxy is saturated, and the request
  is *shed* (`Overloaded`): never a failure of the store, never an admission without the shared window.

The breaker opens after `failures` store failures in a row and then skips the store for `cool_down`.
It is closed again by a probe (a PING with a generous bound, not a visitor's decision), so a Redis that
is healthy but slower than `timeout` still brings it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Any

from waitroom.metrics import METRICS
from waitroom.store.base import (
    Admission,
    Clock,
    Overloaded,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Store,
    StoreError,
    Turn,
)
from waitroom.store.pipelined import ConnectionLost

log = logging.getLogger(__name__)

LATE = 0.005
"""A timer that runs this much after its time found the event loop busy."""
PROBE_TIMEOUT = 2.0
"""The least time a breaker probe (PING) gets; a healthy but slow Redis answers within it."""


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

    def allow(self) -> bool:
        """May a call go to the store now? Not while open: a probe decides when it closes."""
        return self.state is BreakerState.CLOSED

    def probe_due(self) -> bool:
        """Open for `cool_down`: time for one probe (the caller runs it, then reports)."""
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cool_down:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def succeeded(self) -> None:
        if self.state is not BreakerState.CLOSED:
            log.warning("waitroom: store answers again; circuit closed")
        self.state = BreakerState.CLOSED
        self._failures = 0

    def failed(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            if self.state is BreakerState.CLOSED:
                log.warning("waitroom: store failing; circuit open, probing every %.1fs", self.cool_down)
            self.state = BreakerState.OPEN
            self._opened_at = self._clock()


class Deadline:
    """`async with Deadline(timeout, max_wait):` — TimeoutError when the store did not answer within
    `timeout` of loop time that was free to read its answer, Overloaded past `max_wait` in all.

    Like `asyncio.timeout`, it cancels the task on expiry and turns that cancellation into its own
    exception; unlike it, a timer that finds the loop busy moves the deadline instead of expiring."""

    __slots__ = (
        "_cancelling",
        "_due",
        "_expired",
        "_handle",
        "_loop",
        "_start",
        "_task",
        "max_wait",
        "timeout",
    )

    def __init__(self, timeout: float, max_wait: float) -> None:
        self.timeout = timeout
        self.max_wait = max(max_wait, timeout)
        self._expired: str | None = None

    async def __aenter__(self) -> Deadline:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "Deadline needs a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._start = self._loop.time()
        self._arm(self._start + self.timeout)
        return self

    def _arm(self, when: float) -> None:
        self._due = when
        self._handle: asyncio.Handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        now = self._loop.time()
        late = now - self._due > LATE
        if late and now - self._start < self.max_wait:
            self._arm(min(now + self.timeout, self._start + self.max_wait))
            return
        # An answer read in this same turn of the loop has woken the task, but the task runs only
        # in the next turn: expire after it, so an answer that came in time is never thrown away.
        self._handle = self._loop.call_soon(self._expire, "overloaded" if late else "timeout")

    def _expire(self, kind: str) -> None:
        self._expired = kind
        self._task.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handle.cancel()
        if self._expired is None:
            return
        if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            if self._expired == "overloaded":
                raise Overloaded("store_wait", sent=True) from error
            raise TimeoutError from error


def _maybe_done(error: BaseException) -> bool:
    """Could the store have carried out a call that failed this way? Yes after a timeout or a
    connection lost while waiting; no when it refused the connection or answered with an error."""
    while error is not None:
        if isinstance(error, TimeoutError | ConnectionLost):
            return True
        error = error.__cause__  # type: ignore[assignment]
    return False


class GuardedStore:
    """Wraps a remote store: every call under a Deadline, every failure a StoreError."""

    def __init__(self, inner: Store, timeout: float, breaker: CircuitBreaker, max_wait: float = 2.0) -> None:
        self.inner = inner
        self.timeout = timeout
        self.max_wait = max_wait
        self.breaker = breaker
        self._probe: asyncio.Task[None] | None = None

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        return await self._guarded("admit", self.inner.admit(room, session_id))

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        return await self._guarded("queue", self.inner.queue(room, session_id, client))

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        return await self._guarded("queue_state", self.inner.queue_state(room))

    async def touch(self, room: str, ttl: float, seen: Sequence[tuple[str, float]]) -> list[str]:
        return await self._guarded("touch", self.inner.touch(room, ttl, seen))

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        return await self._guarded("release", self.inner.release(room, session_id, ttl))

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

    async def record(self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float) -> None:
        await self._guarded("record", self.inner.record(room, admissions, now))

    async def _guarded[T](self, operation: str, call: Coroutine[Any, Any, T]) -> T:
        if not self.breaker.allow():
            call.close()  # never awaited: the store is not asked
            if self.breaker.probe_due():
                self._start_probe()
            METRICS.store_errors.labels(operation, "circuit_open").inc()
            raise StoreError("circuit open")
        started = time.perf_counter()
        try:
            async with Deadline(self.timeout, self.max_wait):
                result = await call
        except Overloaded:
            METRICS.store_errors.labels(operation, "overloaded").inc()
            raise  # the proxy's own saturation: shed, and not held against the store
        except Exception as e:  # any failure of the store (even a client library bug) is the policy's case
            self.breaker.failed()
            kind = "timeout" if isinstance(e, TimeoutError) else "error"
            METRICS.store_errors.labels(operation, kind).inc()
            raise StoreError(str(e) or type(e).__name__, maybe_done=_maybe_done(e)) from e
        finally:
            METRICS.store_duration.labels(operation).observe(time.perf_counter() - started)
        self.breaker.succeeded()
        return result

    def _start_probe(self) -> None:
        self._probe = asyncio.get_running_loop().create_task(self._run_probe(), name="waitroom: store probe")

    async def _run_probe(self) -> None:
        """One PING, bounded generously: an answer closes the breaker, anything else keeps it open."""
        ping = getattr(self.inner, "ping", None)
        try:
            async with asyncio.timeout(max(PROBE_TIMEOUT, 4 * self.timeout)):
                if ping is not None:
                    await ping()
                else:
                    await self.inner.overrides()
        except Exception:
            self.breaker.failed()
            return
        self.breaker.succeeded()

    async def warm(self) -> None:
        """Connect ahead of the first call; a failure here is only logged at debug level (the
        first real call meets it again, under the failure policy)."""
        warm = getattr(self.inner, "warm", None)
        if warm is None:
            return
        try:
            async with asyncio.timeout(max(PROBE_TIMEOUT, 4 * self.timeout)):
                await warm()
        except Exception as e:
            log.debug("waitroom: connecting to the store ahead of time failed: %s", type(e).__name__)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.inner.close()
