"""A `fifo` room's line on both stores, same cases: order, abandoned tickets, the grace period,
positions and the slot the wait estimate starts from, and replicas sharing one Redis."""

from __future__ import annotations

import random

import pytest

from tests.store.conftest import Clock
from tests.support import RedisServer
from waitroom.store import QueuePolicy, Store
from waitroom.store.redis import RedisStore

pytestmark = pytest.mark.e2e

ROOM = QueuePolicy("line", new_sessions=2, window=10.0, abandon_after=12.0, grace=4.0)


async def ask(store: Store, sid: str, room: QueuePolicy = ROOM) -> tuple[bool, int, int, int]:
    """(admitted, ticket, position, queue length)."""
    turn = await store.queue(room, sid)
    return turn.admitted, turn.ticket, turn.position, turn.queue_length


async def test_places_go_in_ticket_order(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    # The window has room: in at once, no ticket.
    assert await ask(store, "a") == (True, 0, 0, 0)
    assert await ask(store, "b") == (True, 0, 0, 0)
    # Full: tickets, in order, each told how many are ahead.
    assert await ask(store, "c") == (False, 1, 0, 1)
    assert await ask(store, "d") == (False, 2, 1, 2)
    assert await ask(store, "e") == (False, 3, 2, 3)
    clock.now += 1
    assert await ask(store, "d") == (False, 2, 1, 3)  # asking again keeps the place
    clock.now += 9  # a and b leave the window: two places, called in ticket order (c, d)
    # e asks first, but c and d hold the places: e is still third, and a newcomer goes last.
    assert await ask(store, "e") == (False, 3, 2, 3)
    assert await ask(store, "f") == (False, 4, 3, 4)
    assert await ask(store, "d") == (True, 2, 0, 3)
    assert await ask(store, "c") == (True, 1, 0, 2)
    assert await ask(store, "e") == (False, 3, 0, 2)
    # A ticket used is gone: asking with it again is a newcomer at the end (no second place).
    assert await ask(store, "c") == (True, 0, 0, 2)  # its admission is in the log: not counted twice
    clock.now += 10  # c and d leave the window: e and f are called
    assert await ask(store, "f") == (True, 4, 0, 1)
    assert await ask(store, "e") == (True, 3, 0, 0)


def assert_called_in_order(tickets: list[int], new_sessions: int) -> None:
    """Tickets are called in order; those called together (at most new_sessions) come in the order
    their holders ask. So an admission may pass an earlier ticket only if both were called at once."""
    assert sorted(tickets) == list(range(tickets and min(tickets), tickets and max(tickets) + 1))
    for i, later in enumerate(tickets):
        for earlier in tickets[i + 1 :]:
            assert later - earlier < new_sessions, tickets


async def test_exactly_new_sessions_per_window(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("rate", new_sessions=5, window=10.0, abandon_after=30.0, grace=30.0)
    admitted_at: list[float] = []
    visitors = [f"v{i}" for i in range(40)]
    waiting = list(visitors)
    rng = random.Random(7)
    for _ in range(200):  # 100 s in 0.5 s steps; everyone asks in a random order each step
        rng.shuffle(waiting)
        for sid in list(waiting):
            if (await store.queue(room, sid)).admitted:
                admitted_at.append(clock.now)
                waiting.remove(sid)
        clock.now += 0.5
    assert not waiting
    for start in admitted_at:
        assert sum(1 for t in admitted_at if start <= t < start + 10) <= 5


async def test_order_is_ticket_order_whatever_order_they_ask(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("fair", new_sessions=3, window=5.0, abandon_after=30.0, grace=30.0)
    for i in range(3):
        assert (await store.queue(room, f"first{i}")).admitted
    tickets = {}
    for i in range(30):
        turn = await store.queue(room, f"w{i}")
        tickets[f"w{i}"] = turn.ticket
    rng = random.Random(3)
    order: list[str] = []
    waiting = list(tickets)
    while waiting:
        clock.now += 0.5
        rng.shuffle(waiting)
        for sid in list(waiting):
            if (await store.queue(room, sid)).admitted:
                order.append(sid)
                waiting.remove(sid)
    assert_called_in_order([tickets[sid] for sid in order], room.new_sessions)


async def test_an_abandoned_ticket_is_skipped(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("abandon", new_sessions=2, window=60.0, abandon_after=6.0, grace=4.0)
    await ask(store, "a", room)
    await ask(store, "b", room)
    assert await ask(store, "gone", room) == (False, 1, 0, 1)
    assert await ask(store, "stays", room) == (False, 2, 1, 2)
    clock.now += 5
    assert await ask(store, "stays", room) == (False, 2, 1, 2)
    clock.now += 1  # "gone" was last seen 6 s ago: abandon_after
    assert await ask(store, "stays", room) == (False, 2, 0, 1)
    # Its holder coming back has lost the place: a new ticket at the end.
    assert await ask(store, "gone", room) == (False, 3, 1, 2)


async def test_a_called_ticket_keeps_its_place_for_the_grace_period(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("grace", new_sessions=1, window=10.0, abandon_after=60.0, grace=4.0)
    assert (await store.queue(room, "in")).admitted
    slow = await store.queue(room, "slow")
    nxt = await store.queue(room, "next")
    assert (slow.ticket, nxt.ticket) == (1, 2)
    clock.now += 10  # the place frees: "slow" is called by the next ask
    assert (await store.queue(room, "next")).position == 1
    clock.now += 3.9
    assert not (await store.queue(room, "next")).admitted  # still slow's, within the grace
    clock.now += 0.2  # past the grace: slow's place lapses to the next in line
    turn = await store.queue(room, "next")
    assert turn.admitted
    late = await store.queue(room, "slow")
    assert (late.admitted, late.ticket) == (False, 3)


async def test_a_called_slow_poller_gets_in_within_the_grace(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("slowpoll", new_sessions=1, window=10.0, abandon_after=60.0, grace=4.0)
    assert (await store.queue(room, "in")).admitted
    await store.queue(room, "slow")
    clock.now += 10
    await store.queue(room, "someone-else")  # calls "slow"
    clock.now += 3.5
    assert (await store.queue(room, "slow")).admitted


async def test_hold_keeps_the_line_and_calls_nobody(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    held = QueuePolicy("held", new_sessions=2, window=10.0, abandon_after=30.0, grace=30.0, hold=True)
    assert await ask(store, "a", held) == (False, 1, 0, 1)  # even an empty window admits nobody
    assert await ask(store, "b", held) == (False, 2, 1, 2)
    clock.now += 1
    released = QueuePolicy("held", new_sessions=2, window=10.0, abandon_after=30.0, grace=30.0)
    assert await ask(store, "c", released) == (False, 3, 2, 3)  # a and b were called first
    assert (await store.queue(released, "b")).admitted
    assert (await store.queue(released, "a")).admitted


async def test_positions_slots_and_state(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("pos", new_sessions=2, window=10.0, abandon_after=6.0, grace=4.0)
    start = clock.now
    await ask(store, "a", room)  # admitted at start
    clock.now += 2
    await ask(store, "b", room)  # admitted at start + 2
    clock.now += 1
    first = await store.queue(room, "c")
    second = await store.queue(room, "d")
    third = await store.queue(room, "e")
    # The first waiting ticket takes the place a's admission frees, the second b's, the third the
    # place the first will take (a window after it enters: beyond this window's log).
    assert first.slot == pytest.approx(start)
    assert second.slot == pytest.approx(start + 2)
    assert (third.position, third.called) == (2, 0)
    state = await store.queue_state(room)
    assert (state.length, state.called, state.in_window) == (3, 0, 2)
    assert state.oldest_wait == pytest.approx(0.0)
    clock.now += 4
    state = await store.queue_state(room)
    assert state.oldest_wait == pytest.approx(4.0)
    # Tickets not seen for abandon_after are not counted, even before the next ask drops them.
    await ask(store, "e", room)
    clock.now += 3
    state = await store.queue_state(room)
    assert (state.length, state.in_window) == (1, 1)
    assert state.oldest_wait == pytest.approx(7.0)  # e joined at start + 3


async def test_an_empty_room_state(store_and_clock: tuple[Store, Clock]) -> None:
    store, _clock = store_and_clock
    state = await store.queue_state(QueuePolicy("nobody", 3, 10.0, 30.0, 30.0))
    assert (state.length, state.called, state.oldest_wait, state.in_window) == (0, 0, 0.0, 0)


async def test_replicas_sharing_one_redis_keep_one_line(shared_redis: RedisServer) -> None:
    clock = Clock()
    replicas = [RedisStore.for_url(shared_redis.url, 2.0, "shared-line", clock) for _ in range(4)]
    try:
        room = QueuePolicy("shared", new_sessions=3, window=5.0, abandon_after=30.0, grace=30.0)
        rng = random.Random(11)
        tickets: dict[str, int] = {}
        admitted_in_order: list[str] = []
        for i in range(24):  # each visitor reaches a random replica on every ask
            sid = f"v{i}"
            turn = await rng.choice(replicas).queue(room, sid)
            if turn.admitted:
                admitted_in_order.append(sid)
            else:
                tickets[sid] = turn.ticket
        assert len(admitted_in_order) == 3
        assert sorted(tickets.values()) == list(range(1, 22))
        waiting = list(tickets)
        while waiting:
            clock.now += 0.5
            rng.shuffle(waiting)
            for sid in list(waiting):
                if (await rng.choice(replicas).queue(room, sid)).admitted:
                    admitted_in_order.append(sid)
                    waiting.remove(sid)
        assert_called_in_order([tickets[sid] for sid in admitted_in_order[3:]], room.new_sessions)
    finally:
        for store in replicas:
            await store.close()


async def test_a_used_ticket_gets_no_second_place(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("used", new_sessions=1, window=10.0, abandon_after=30.0, grace=4.0)
    assert (await store.queue(room, "first")).admitted
    assert not (await store.queue(room, "holder")).admitted
    clock.now += 10
    await store.queue(room, "someone")  # calls "holder"
    assert (await store.queue(room, "holder")).admitted
    clock.now += 3
    again = await store.queue(room, "holder")  # its answer was lost: asked again within the grace
    assert (again.admitted, again.used) == (True, False)
    clock.now += 2
    copy = await store.queue(room, "holder")  # a kept copy of the ticket, later
    assert (copy.admitted, copy.used) == (False, True)
