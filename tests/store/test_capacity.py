"""The cap on active sessions, releases, scheduled openings and tickets per address, on both
stores, same cases (and the pre-queue's order, the same from every replica)."""

from __future__ import annotations

import pytest

from tests.store.conftest import Clock
from tests.support import RedisServer
from waitroom.store.base import (
    DEPARTURE_BOUND,
    DEPARTURE_HORIZON,
    RECENT_RELEASES,
    Inside,
    QueuePolicy,
    RoomPolicy,
    Store,
)
from waitroom.store.memory import MemoryStore
from waitroom.store.memory_rooms import prequeue_rank
from waitroom.store.redis import RedisStore

pytestmark = pytest.mark.e2e

TTL = 30.0


async def test_block_room_admits_only_under_the_cap(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("cap", new_sessions=100, window=60.0, block_for=10.0, max_active=2, ttl=TTL)
    assert (await store.admit(room, "a")).admitted
    assert (await store.admit(room, "b")).admitted
    full = await store.admit(room, "c")
    assert (full.admitted, full.block_started, full.blocked_for) == (False, False, 0.0)  # no block
    assert (await store.room_state(room)).active == 2
    # A release frees a place at once.
    assert await store.release("cap", "a", TTL)
    assert (await store.room_state(room)).active == 1
    assert (await store.admit(room, "c")).admitted
    # A session idle for the ttl no longer counts; one that is touched does.
    clock.now += 20
    assert await store.touch("cap", TTL, [("b", 1.0)]) == []
    clock.now += 11  # c idle 31 s, b 12 s
    state = await store.room_state(room)
    assert state.active == 1
    assert (await store.admit(room, "d")).admitted
    assert not (await store.admit(room, "e")).admitted


async def test_touch_names_released_sessions_and_never_revives_them(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("touch", new_sessions=10, window=60.0, block_for=0.0, max_active=5, ttl=TTL)
    for sid in ("a", "b"):
        assert (await store.admit(room, sid)).admitted
    assert await store.release("touch", "a", TTL)
    assert not await store.release("touch", "nobody", TTL)  # held no place
    # The released ones named, then every release of the last RECENT_RELEASES seconds, the latest
    # first: how a replica learns of releases made elsewhere, noted or not.
    assert await store.touch("touch", TTL, [("a", 0.0), ("b", 0.0), ("c", 0.0)]) == ["a", "nobody"]
    # "c" (a session the store had not counted, e.g. from before the cap) is counted now.
    assert (await store.room_state(room)).active == 2
    assert await store.touch("touch", TTL, []) == ["nobody", "a"]
    clock.now += RECENT_RELEASES
    assert await store.touch("touch", TTL, [("a", 0.0)]) == ["a"]  # still released, no longer recent
    assert await store.touch("touch", TTL, []) == []


async def test_a_late_touch_never_recreates_a_place_given_away(store_and_clock: tuple[Store, Clock]) -> None:
    """The cap holds whatever the delay of activity notes: a session the store stopped counting is
    counted again only while there is a free place; otherwise it is answered as gone."""
    store, clock = store_and_clock
    room = RoomPolicy("late", new_sessions=100, window=60.0, block_for=0.0, max_active=2, ttl=TTL)
    assert (await store.admit(room, "a")).admitted
    assert (await store.admit(room, "b")).admitted
    clock.now += TTL + 1  # both idle past the ttl: no longer counted
    assert (await store.admit(room, "c")).admitted
    assert (await store.admit(room, "d")).admitted
    # a's and b's activity, noted before they went idle-looking, arrives late: the room is full.
    assert sorted(await store.touch("late", TTL, [("a", 0.5), ("b", 0.5)], 2)) == ["a", "b"]
    assert (await store.room_state(room)).active == 2
    assert await store.release("late", "c", TTL)
    # One place is free: the first late note takes it, the next finds the room full again (and
    # the release is named, as every recent one).
    assert await store.touch("late", TTL, [("a", 0.5), ("b", 0.5)], 2) == ["b", "c"]
    assert (await store.room_state(room)).active == 2
    # A session still counted is never turned away by its own note, full room or not.
    assert await store.touch("late", TTL, [("a", 0.0), ("d", 0.0)], 2) == ["c"]  # c: a recent release


async def test_fifo_calls_only_when_there_is_a_place_inside(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("fifocap", 100, 60.0, 60.0, 60.0, max_active=1, ttl=TTL)
    assert (await store.queue(room, "in")).admitted
    waiting = await store.queue(room, "next")
    assert (waiting.admitted, waiting.position) == (False, 0)
    clock.now += 1
    assert not (await store.queue(room, "next")).admitted  # the rate allows, the cap does not
    await store.release("fifocap", "in", TTL)
    assert (await store.queue(room, "next")).admitted  # the place inside went to the next in line


async def test_leaving_the_line_gives_the_place_up(store_and_clock: tuple[Store, Clock]) -> None:
    store, _clock = store_and_clock
    room = QueuePolicy("leave", 1, 60.0, 60.0, 60.0)
    await store.queue(room, "in")
    await store.queue(room, "first")
    assert (await store.queue(room, "second")).position == 1
    assert await store.release("leave", "first", TTL)
    assert (await store.queue(room, "second")).position == 0


async def test_before_the_opening_nobody_is_called_then_the_pre_queue_goes_in_hash_order(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    opens = clock.now + 100
    room = QueuePolicy("event", 3, 10.0, 300.0, 300.0, opens_at=opens, seed="s33d")
    early = [f"v{i}" for i in range(12)]
    for sid in early:
        turn = await store.queue(room, sid)
        assert (turn.admitted, turn.prequeue, turn.ticket) == (False, True, 0)
    clock.now = opens + 1
    late = await store.queue(room, "late")
    assert (late.prequeue, late.position) == (False, 12)  # after every early ticket
    expected = sorted(early, key=lambda sid: prequeue_rank("s33d", sid))
    order: list[str] = []
    waiting = [*early, "late"]
    while waiting:
        clock.now += 5
        for sid in list(reversed(waiting)):  # ask in the worst order: the latest first
            if (await store.queue(room, sid)).admitted:
                order.append(sid)
                waiting.remove(sid)
    batches = [set(order[i : i + 3]) for i in range(0, 12, 3)]
    assert batches == [set(expected[i : i + 3]) for i in range(0, 12, 3)]
    assert order[-1] == "late"


async def test_both_stores_draw_the_same_pre_queue_order(shared_redis: RedisServer) -> None:
    clock = Clock()
    stores: list[Store] = [MemoryStore(clock), RedisStore.for_url(shared_redis.url, 2.0, "same-draw", clock)]
    room = QueuePolicy("draw", 1, 10.0, 300.0, 300.0, opens_at=clock.now + 50, seed="event-seed")
    ids = [f"visitor-{i}" for i in range(40)]
    try:
        positions = []
        for store in stores:
            for sid in ids:
                await store.queue(room, sid)
            positions.append([(await store.queue(room, sid)).position for sid in ids])
        assert positions[0] == positions[1]
        assert sorted(positions[0]) == list(range(40))
    finally:
        for store in stores:
            await store.close()


async def test_tickets_per_address(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("perip", 1, 60.0, 60.0, 60.0, tickets_per_ip=2)
    assert (await store.queue(room, "in", "ip-a")).admitted  # no ticket needed: not counted
    assert not (await store.queue(room, "t1", "ip-a")).refused
    assert not (await store.queue(room, "t2", "ip-a")).refused
    third = await store.queue(room, "t3", "ip-a")
    assert third.refused
    assert 0 < third.slot <= 60
    assert not (await store.queue(room, "t4", "ip-b")).refused  # another address
    assert (await store.queue(room, "t1", "ip-a")).position == 0  # a ticket held is not a new one
    clock.now += 61
    assert not (await store.queue(room, "t5", "ip-a")).refused  # a new minute


async def test_departures_from_the_active_set_are_measured(store_and_clock: tuple[Store, Clock]) -> None:
    """Every session that leaves the active set (released, or idle past the ttl) is a departure the
    store counts, over how long it has measured: what the cap's estimate rests on."""
    store, clock = store_and_clock
    room = RoomPolicy("gone", new_sessions=100, window=60.0, block_for=0.0, max_active=2, ttl=TTL)
    assert (await store.admit(room, "a")).admitted  # the record starts at 1000
    assert (await store.admit(room, "b")).admitted
    full = await store.admit(room, "c")
    assert (full.admitted, full.inside) == (False, Inside(2, 0, 0.0))
    clock.now += 10
    assert await store.release("gone", "a", TTL)  # departs at 1010
    assert not await store.release("gone", "a", TTL)  # released twice: one departure
    assert (await store.admit(room, "c")).admitted
    assert (await store.admit(room, "d")).inside == Inside(2, 1, 10.0)
    clock.now += 40  # b idle since 1000 (left at 1030), c since 1010 (left at 1040)
    assert (await store.admit(room, "e")).admitted
    assert (await store.admit(room, "f")).admitted
    assert (await store.admit(room, "g")).inside == Inside(2, 3, 50.0, silent=10.0)  # the last left at 1040
    clock.now += DEPARTURE_HORIZON - 35  # 1015 + the horizon: a's departure no longer counts
    assert (await store.admit(room, "h")).admitted  # e and f idle since 1050: left at 1080
    assert (await store.admit(room, "i")).admitted
    last = await store.admit(room, "j")  # read at 1015 + the horizon, 65 s before it the last left
    assert last.inside == Inside(2, 4, DEPARTURE_HORIZON, silent=DEPARTURE_HORIZON - 65)


async def test_departures_cover_their_pace_not_the_rooms_age(store_and_clock: tuple[Store, Clock]) -> None:
    """A room that filled up long before anyone left: two departures or more are counted from one
    mean gap before the first, not from the record's start, so the pace they show is their own."""
    store, clock = store_and_clock
    room = RoomPolicy("young", new_sessions=100, window=60.0, block_for=0.0, max_active=3, ttl=TTL)
    for sid in "abc":
        assert (await store.admit(room, sid)).admitted  # the record starts at 1000
    clock.now += 20
    assert await store.release("young", "a", TTL)  # 1020
    assert (await store.admit(room, "d")).admitted
    assert (await store.admit(room, "x")).inside == Inside(3, 1, 20.0)  # one: the whole record
    clock.now += 2
    assert await store.release("young", "b", TTL)  # 1022
    clock.now += 2
    assert await store.release("young", "c", TTL)  # 1024
    assert (await store.admit(room, "e")).admitted
    assert (await store.admit(room, "f")).admitted
    # Three departures 2 s apart, read at 1025: from 1018 (a gap before the first), not from 1000.
    clock.now += 1
    assert (await store.admit(room, "y")).inside == Inside(3, 3, 7.0, silent=1.0)


async def test_the_departures_record_is_bounded(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("many", new_sessions=10_000, window=60.0, block_for=0.0, max_active=1, ttl=TTL)
    for i in range(DEPARTURE_BOUND + 10):
        assert (await store.admit(room, f"s{i}")).admitted
        clock.now += 0.5
        assert await store.release("many", f"s{i}", TTL)
    assert (await store.admit(room, "in")).admitted
    # The newest DEPARTURE_BOUND departures, over the time from the oldest kept to now.
    inside = (await store.admit(room, "out")).inside
    assert inside == Inside(1, DEPARTURE_BOUND, (DEPARTURE_BOUND - 1) * 0.5)


async def test_a_waiting_ticket_learns_the_places_inside(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("linecap", 100, 60.0, 60.0, 60.0, max_active=1, ttl=TTL)
    assert (await store.queue(room, "in")).admitted
    first, second = await store.queue(room, "w1"), await store.queue(room, "w2")
    assert (first.admitted, first.inside, second.inside) == (False, Inside(1, 0, 0.0), Inside(1, 0, 0.0))
    # The cap holds them, not the window (99 places free): their window places are free already.
    assert first.slot <= first.now - 60
    assert second.slot <= second.now - 60
    clock.now += 5
    assert await store.release("linecap", "in", TTL)
    assert (await store.queue(room, "w1")).admitted  # called and in at once
    assert (await store.queue(room, "w2")).inside == Inside(1, 1, 5.0)
    assert (await store.queue_state(room)).inside == Inside(1, 1, 5.0)
    # Read without changing anything: a session idle past the ttl counts as departed already.
    clock.now += TTL + 1
    assert (await store.queue_state(room)).inside == Inside(0, 2, TTL + 6, silent=1.0)
    # A room without a cap has nothing inside to read.
    plain = QueuePolicy("linecap", 100, 60.0, 60.0, 60.0, ttl=TTL)
    assert (await store.queue_state(plain)).inside == Inside()
