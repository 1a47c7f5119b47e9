"""Bounded, fail-fast access to a remote store: mitmproxy disarms its own timeouts while a hook runs,
so every call gets a Deadline that measures Redis and not a busy event loop, and a circuit breaker
skips a failing store. See docs/design.md, Algorithms (timeouts, overload, the breaker).
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
    LineGlance,
    Overloaded,
    QueuePolicy,
    QueueState,
    RateCheck,
    RateResult,
    RoomPolicy,
    RoomState,
    Store,
    StoreError,
    Tickets,
    Turn,
)
from waitroom.store.pipelined import ConnectionLost

log = logging.getLogger(__name__)

LATE = 0.005
"""A timer that runs this much after its time found the event loop busy."""
PROBE_TIMEOUT = 2.0
"""The least time a breaker probe (PING) gets; a healthy but slow Redis answers within it."""
LINE_PROBES = 3
"""An open circuit probes at least this many times per grace of a `fifo` room whose visitors ask:
a called visitor whose polls reach only replicas that stopped asking the store would lose its call
(the grace runs from the store's point of view). With the store back, every replica that hears the
line asks it again within a third of the grace, and a called visitor polling at its interval is
heard in time (a cool_down longer than the grace left one replica deaf while the others had moved
on, and let later tickets in seconds before it)."""
POLL_PROBES = 4
"""... and at least this many times per retry_after: the line's order is promised within one poll
interval, and a replica still deaf after the store came back answers a ticket called meanwhile
"wait" while the replicas that heard it let later tickets in (a probe every third of a 3 s grace
put up to a second of that into the order's inversions). A probe is one PING."""


def _line_probes(room: QueuePolicy) -> float:
    """How long a line's calls let an open circuit wait before a probe (LINE_PROBES, POLL_PROBES)."""
    if room.retry_after > 0:
        return min(room.grace / LINE_PROBES, room.retry_after / POLL_PROBES)
    return room.grace / LINE_PROBES


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

    def probe_due(self, within: float | None = None) -> bool:
        """Open for `cool_down`, or for `within` when that is shorter: time for one probe (the
        caller runs it, then reports)."""
        wait = self.cool_down if within is None else min(self.cool_down, within)
        if self.state is BreakerState.OPEN and self._clock() - self._opened_at >= wait:
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
        self._line_cadence: dict[str, float] = {}
        """How often each room whose line was asked needs a probe (_line_probes): the write-back
        that goes before a line's call (rooms/local_sync.py) probes at the line's pace too. At the
        cool-down's, the replicas that had let called tickets in while the store was away stayed
        deaf for 5 s after it came back, and told visitors called meanwhile to wait while the others
        let later tickets in."""

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        return await self._guarded("admit", self.inner.admit(room, session_id, client))

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        return await self._guarded("queue", self.inner.queue(room, session_id, client), self._line(room))

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        return await self._guarded("queue_state", self.inner.queue_state(room))

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        return await self._guarded("heartbeat", self.inner.heartbeat(room, session_ids), self._line(room))

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        return await self._guarded("still_here", self.inner.still_here(room, beats), self._line(room))

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        return await self._guarded("touch", self.inner.touch(room, ttl, seen, max_active))

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

    async def overrides_and_epoch(self, mark: str) -> tuple[dict[str, str], str]:
        return await self._guarded("overrides", self.inner.overrides_and_epoch(mark))

    async def set_overrides(self, changes: dict[str, str | None]) -> None:
        await self._guarded("set_overrides", self.inner.set_overrides(changes))

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        cadence = self._line_cadence.get(room.name)
        await self._guarded("record", self.inner.record(room, admissions, now, tickets), cadence)

    def _line(self, room: QueuePolicy) -> float:
        cadence = self._line_cadence[room.name] = _line_probes(room)
        return cadence

    async def _guarded[T](
        self, operation: str, call: Coroutine[Any, Any, T], probe_within: float | None = None
    ) -> T:
        """`probe_within`: probe an open circuit at least this often while such calls come."""
        if not self.breaker.allow():
            call.close()  # never awaited: the store is not asked
            if self.breaker.probe_due(probe_within):
                self._start_probe()
            METRICS.store.errors.labels(operation, "circuit_open").inc()
            raise StoreError("circuit open")
        started = time.perf_counter()
        try:
            async with Deadline(self.timeout, self.max_wait):
                result = await call
        except Overloaded:
            METRICS.store.errors.labels(operation, "overloaded").inc()
            raise  # the proxy's own saturation: shed, and not held against the store
        except Exception as e:  # any failure of the store (even a client library bug) is the policy's case
            self.breaker.failed()
            kind = "timeout" if isinstance(e, TimeoutError) else "error"
            METRICS.store.errors.labels(operation, kind).inc()
            raise StoreError(str(e) or type(e).__name__, maybe_done=_maybe_done(e)) from e
        finally:
            METRICS.store.duration.labels(operation).observe(time.perf_counter() - started)
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
