"""The cap on active sessions, releases, scheduled openings and tickets per address, on both
stores, same cases (and the pre-queue's order, the same from every replica)."""

from __future__ import annotations

import pytest

from tests.store.conftest import Clock
from tests.support import RedisServer
from waitroom.store import QueuePolicy, RoomPolicy, Store
from waitroom.store.memory import MemoryStore, prequeue_rank
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
    store, _clock = store_and_clock
    room = RoomPolicy("touch", new_sessions=10, window=60.0, block_for=0.0, max_active=5, ttl=TTL)
    for sid in ("a", "b"):
        assert (await store.admit(room, sid)).admitted
    assert await store.release("touch", "a", TTL)
    assert not await store.release("touch", "nobody", TTL)  # held no place
    assert await store.touch("touch", TTL, [("a", 0.0), ("b", 0.0), ("c", 0.0)]) == ["a"]
    # "c" (a session the store had not counted, e.g. from before the cap) is counted now.
    assert (await store.room_state(room)).active == 2


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
