"""The store deadline measures the store, not the proxy's event loop (store/guard.py).

Pure asyncio: a fake store that answers after a set time, and a loop kept busy by a callback that
blocks it, as a burst of requests does in mitmdump."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from waitroom.store.base import Admission, Overloaded, QueuePolicy, RoomPolicy, StoreError, Tickets, Turn
from waitroom.store.guard import BreakerState, CircuitBreaker, Deadline, GuardedStore

ROOM = RoomPolicy("r", 10, 60, 10)


class FakeStore:
    """Answers `admit` after `delay` seconds of loop time (a reply on the wire), or never."""

    def __init__(self, delay: float | None, ping_delay: float = 0.0) -> None:
        self.delay = delay
        self.ping_delay = ping_delay
        self.asked = 0

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        self.asked += 1
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay or 0)
        return Admission(True, 0.0, False, time.time())

    async def ping(self) -> bool:
        await asyncio.sleep(self.ping_delay)
        return True

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        pass

    async def close(self) -> None:
        pass


def block_loop(seconds: float) -> None:
    """What hundreds of requests do to the loop between two of its turns."""
    time.sleep(seconds)


def guarded(inner: Any, timeout: float = 0.05, max_wait: float = 2.0, failures: int = 3) -> GuardedStore:
    return GuardedStore(inner, timeout, CircuitBreaker(failures, 0.2), max_wait)


async def test_an_answer_that_waited_for_a_busy_loop_is_not_a_timeout() -> None:
    store = guarded(FakeStore(delay=0.01), timeout=0.05)
    loop = asyncio.get_running_loop()
    # The store answers after 10 ms, but the loop is blocked for 200 ms right after the call is
    # sent: a plain 50 ms timeout would call that a store failure.
    loop.call_soon(block_loop, 0.2)
    admission = await store.admit(ROOM, "a")
    assert admission.admitted
    assert store.breaker.state is BreakerState.CLOSED


async def test_a_silent_store_times_out_on_an_idle_loop() -> None:
    store = guarded(FakeStore(delay=None), timeout=0.05)
    started = time.monotonic()
    with pytest.raises(StoreError):
        await store.admit(ROOM, "a")
    assert 0.05 <= time.monotonic() - started < 0.05 + 0.25


async def test_a_silent_store_times_out_even_after_the_loop_was_busy() -> None:
    """The busy loop only moves the deadline: once the loop is free, the store gets `timeout`."""
    store = guarded(FakeStore(delay=None), timeout=0.05)
    asyncio.get_running_loop().call_soon(block_loop, 0.15)
    started = time.monotonic()
    with pytest.raises(StoreError):
        await store.admit(ROOM, "a")
    assert time.monotonic() - started < 0.15 + 0.05 + 0.25


async def test_a_loop_that_never_catches_up_sheds_without_counting_a_store_failure() -> None:
    store = guarded(FakeStore(delay=None), timeout=0.05, max_wait=0.3, failures=1)
    loop = asyncio.get_running_loop()
    stop = loop.time() + 1.0

    def keep_busy() -> None:  # 40 ms of work on every turn, for at most a second
        if loop.time() < stop:
            block_loop(0.04)
            loop.call_soon(keep_busy)

    loop.call_soon(keep_busy)
    started = time.monotonic()
    with pytest.raises(Overloaded) as shed:
        await store.admit(ROOM, "a")
    assert shed.value.sent
    assert shed.value.reason == "store_wait"
    assert 0.3 <= time.monotonic() - started < 0.3 + 0.3
    assert store.breaker.state is BreakerState.CLOSED, "saturation is not Redis's fault"


async def test_a_deadline_that_did_not_fire_leaves_cancellation_alone() -> None:
    async def cancelled_from_outside() -> None:
        async with Deadline(1.0, 2.0):
            await asyncio.Event().wait()

    task = asyncio.ensure_future(cancelled_from_outside())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_breaker_is_closed_by_a_probe_also_when_the_store_is_slower_than_the_timeout() -> None:
    inner = FakeStore(delay=None, ping_delay=0.1)  # healthy, but 100 ms away; timeout 50 ms
    store = guarded(inner, timeout=0.05, failures=1)
    with pytest.raises(StoreError):
        await store.admit(ROOM, "a")
    assert store.breaker.state is BreakerState.OPEN
    asked = inner.asked
    with pytest.raises(StoreError, match="circuit open"):
        await store.admit(ROOM, "b")
    assert inner.asked == asked, "an open breaker does not ask the store"
    await asyncio.sleep(0.25)  # cool_down 0.2 s: the next call starts a probe (a PING, 100 ms)
    with pytest.raises(StoreError, match="circuit open"):
        await store.admit(ROOM, "c")
    assert store._probe is not None
    await asyncio.wait_for(store._probe, 2)
    assert store.breaker.state is BreakerState.CLOSED
    inner.delay = 0.0
    assert (await store.admit(ROOM, "d")).admitted


def test_an_open_circuit_probes_within_a_third_of_a_lines_grace() -> None:
    """A line's calls probe the store well inside the grace (store/guard.py, LINE_PROBES), however
    long the cool-down: a replica that stayed deaf for the cool-down, after the others were back,
    let a called visitor's grace run out while it was polling."""
    now = [0.0]
    breaker = CircuitBreaker(1, 5.0, clock=lambda: now[0])
    breaker.failed()
    now[0] = 0.9
    assert not breaker.probe_due(3.0 / 3)  # a line with a 3 s grace: a probe each second
    assert not breaker.probe_due()  # other calls keep the cool-down
    now[0] = 1.0
    assert breaker.probe_due(3.0 / 3)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.failed()  # the probe failed: open again, for the cool-down or the line's third
    now[0] = 1.5
    assert not breaker.probe_due(3.0 / 3)
    assert not breaker.probe_due()
    now[0] = 6.0
    assert breaker.probe_due()  # a room with no line waits for the cool-down


async def test_the_write_back_before_a_lines_call_probes_at_the_lines_pace() -> None:
    """A replica that let called tickets in while the store was away writes them back before its
    next call for that line (rooms/local_sync.py), so that write-back is the only call the line
    makes while the circuit is open: it probes at the line's pace, not the 5 s cool-down. Two of
    four replicas stayed deaf that long after a 3 s stop, and told the visitors called meanwhile
    to wait while the other two let later tickets in."""

    class Line(FakeStore):
        failing = False

        async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
            if self.failing:
                raise ConnectionError("refused")
            return Turn(False, 1, 1, 1, 0, 0.0, time.time())

        async def ping(self) -> bool:
            if self.failing:
                raise ConnectionError("refused")
            return True

    inner = Line(delay=0.0)
    now = [0.0]
    store = GuardedStore(inner, 0.05, CircuitBreaker(1, 5.0, clock=lambda: now[0]))
    line = QueuePolicy("line", 10, 60.0, 20.0, 3.0, retry_after=0.4)  # a probe every 0.1 s
    await store.queue(line, "a")
    inner.failing = True
    with pytest.raises(StoreError):
        await store.queue(line, "a")
    assert store.breaker.state is BreakerState.OPEN
    inner.failing = False  # the store is back
    now[0] += 0.15
    with pytest.raises(StoreError, match="circuit open"):  # the write-back meets the open circuit
        await store.record(RoomPolicy("line", 10, 60.0, 0.0), [("x", time.time())], time.time())
    assert store._probe is not None, "a probe at the line's pace, not the 5 s cool-down"
    await asyncio.wait_for(store._probe, 2)
    assert store.breaker.state is BreakerState.CLOSED
    store._probe = None
    other = RoomPolicy("no-line", 10, 60.0, 10.0)  # a room whose line was never asked: the cool-down
    store.breaker.failed()
    now[0] += 0.15
    with pytest.raises(StoreError, match="circuit open"):
        await store.record(other, [("y", time.time())], time.time())
    assert store._probe is None
