"""Issue 27 on the embedded store (`memory://`), where the proxy's entry point plays no part: the
store's own tables stay bounded and fast however a client floods them.

N6: no decision scans the admission log. N4: per-address entries go when their minute has passed.
N8: a full rate-limit table never makes strangers share one quota, and never frees a refused client.
"""

from __future__ import annotations

import tracemalloc

import pytest

from waitroom.store.base import QueuePolicy, RateCheck, RoomPolicy
from waitroom.store.memory import MemoryStore
from waitroom.store.memory_line import PRUNE_BATCH
from waitroom.store.memory_log import AdmissionLog


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class _Unscannable(AdmissionLog):
    """The log a decision may look things up in, never walk through."""

    __slots__ = ()

    def entries(self) -> list[tuple[int, str]]:
        raise AssertionError("a decision read the whole log")


def test_no_decision_scans_the_admission_log() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    block = RoomPolicy("block", 20_000, 3600.0, 0.0)
    line = QueuePolicy("line", 20_000, 3600.0, 3600.0, 60.0)
    for i in range(10_000):
        assert store.rooms.admit(block, f"a{i}").admitted
        assert store.rooms.queue(line, f"q{i}").admitted
    for name in ("block", "line"):
        state = store.rooms._rooms[name]
        state.log.__class__ = _Unscannable  # the deque of today's code cannot even be swapped
        with pytest.raises(TypeError):
            iter(state.log)  # type: ignore[call-overload]
    clock.now += 1
    # Every decision and every read the proxy makes per request or per scrape:
    assert store.rooms.admit(block, "a5").admitted  # already admitted: asked again
    assert store.rooms.admit(block, "new").admitted
    assert store.rooms.queue(line, "q5").admitted
    assert store.rooms.queue(line, "new").admitted
    assert store.rooms.room_state(block).in_window == 10_001
    assert store.rooms.queue_state(line).in_window == 10_001
    store.rooms.record(block, [("elsewhere", clock.now), ("a7", clock.now)], clock.now)
    assert store.rooms.room_state(block).in_window == 10_002
    # And the window still ends: an hour later the log is empty.
    clock.now += 3600
    assert store.rooms.room_state(block).in_window == 0


def test_the_log_keeps_its_order_and_index_as_it_is_pruned() -> None:
    log = AdmissionLog()
    for i in range(10_000):
        log.add(i, f"s{i}")
    log.add(5, "late")  # recorded from elsewhere, or a clock that stepped back: in its place
    assert [log[5], log[6]] == [(5, "late"), (5, "s5")]
    log.prune(4_999)  # far enough to compact the list
    assert (len(log), log[0]) == (5_000, (5_000, "s5000"))
    assert [log.when("s4999"), log.when("late"), log.when("s5000")] == [None, None, 5_000]
    with pytest.raises(IndexError):
        log[5_000]


def test_per_address_entries_go_when_their_minute_has_passed() -> None:
    """N4: 300,000 addresses asked for a ticket once, and their entries stayed (59 MB) an hour
    later. Now the operations after their minute drop them, a bounded batch each (no stall), and
    the table's memory goes back."""
    clock = Clock()
    store = MemoryStore(clock)
    room = QueuePolicy("perip", 1, 3600.0, 3600.0, 60.0, tickets_per_ip=1, hold=True)
    tracemalloc.start()
    for i in range(30_000):
        store.rooms.queue(room, f"s{i}", f"address-{i}")
    line = store.rooms._rooms["perip"].line
    assert len(line.tickets_from) == 30_000
    with_entries = tracemalloc.get_traced_memory()[0]
    clock.now += 61  # the tickets are still in line (abandon_after: 1h); the minute has passed
    operations = 0
    while line.tickets_from and operations < 30_000 // PRUNE_BATCH + 1:
        assert not store.rooms.queue(room, "s1", "address-1").refused  # a ticket held: asks again
        operations += 1
    assert len(line.tickets_from) == 0, operations
    dropped = with_entries - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert dropped > 3 * 1024 * 1024, dropped  # ~200 bytes an address
    # The count itself is unchanged: a second new ticket within the minute is refused.
    assert not store.rooms.queue(room, "n1", "address-x").refused
    assert store.rooms.queue(room, "n2", "address-x").refused


def _check(key: str, limit: int = 3) -> RateCheck:
    return RateCheck("api", key, "sliding_window", limit, 60.0, None, False)


def test_a_full_rate_table_never_makes_strangers_share_a_quota() -> None:
    """N8: a table of 1,000 keys, a victim at its limit, 1,200 new keys; then 4 new clients get
    their 3 requests each (today 3 of the 4 were refused: they shared one overflow count)."""
    clock = Clock()
    rates = MemoryStore(clock, max_keys=1_000).rates
    assert [rates.hit([_check("victim")])[0].allowed for _ in range(4)] == [True, True, True, False]
    for i in range(1_200):
        clock.now += 0.001
        assert rates.hit([_check(f"flood-{i}")])[0].allowed
    for client in range(4):
        assert [rates.hit([_check(f"new-{client}")])[0].allowed for _ in range(3)] == [True] * 3
    assert not rates.hit([_check("victim")])[0].allowed  # never freed
    assert rates.overflowed == 0
    assert len(rates) <= 1_000


def test_eviction_takes_the_least_recently_used_key_with_quota_left() -> None:
    clock = Clock()
    rates = MemoryStore(clock, max_keys=3).rates
    rates.hit([_check("a")])
    rates.hit([_check("b")])
    rates.hit([_check("c")])
    rates.hit([_check("a")])  # a used last: b is the least recently used
    rates.hit([_check("d")])
    assert [rates.hit([_check("a")])[0].remaining, rates.hit([_check("c")])[0].remaining] == [0, 1]
    assert rates.hit([_check("b")])[0].remaining == 2  # evicted: it starts afresh


def test_when_every_key_is_at_its_limit_newcomers_share_the_overflow_key() -> None:
    """The last resort: a table full of refused clients frees none of them."""
    clock = Clock()
    rates = MemoryStore(clock, max_keys=1_000).rates
    for i in range(1_000):
        for _ in range(3):
            rates.hit([_check(f"k{i}")])
    assert [rates.hit([_check("new")])[0].allowed for _ in range(4)] == [True, True, True, False]
    assert [rates.hit([_check("other")])[0].allowed for _ in range(1)] == [False]  # shares it
    assert all(not rates.hit([_check(f"k{i}")])[0].allowed for i in range(0, 1_000, 97))
    # Once their windows have passed the keys are idle and swept: a newcomer gets its own again.
    clock.now += 121
    assert rates.hit([_check("later")])[0].remaining == 2
