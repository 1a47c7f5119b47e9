"""A `fifo` room's line on both stores, same cases: order, abandoned tickets, the grace period,
positions and the slot the wait estimate starts from, and replicas sharing one Redis."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tests.store.conftest import Clock
from tests.support import RedisServer, visit
from waitroom.config.schema import parse_config
from waitroom.metrics import METRICS
from waitroom.rooms.decider import Decider, Outcome
from waitroom.rooms.sessions import SessionCodec, cookie_name, keys_from_secret
from waitroom.store.base import QueuePolicy, RoomPolicy, Store
from waitroom.store.redis import RedisStore
from waitroom.store.redis_client import client_from_url

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
    for step in (1.0, 1.0, 1.0, 0.9):  # "next" polls as a page does; slow does not come
        clock.now += step
        assert not (await store.queue(room, "next")).admitted  # still slow's, within the grace
    clock.now += 0.2  # past the grace: slow's place lapses to the next in line
    turn = await store.queue(room, "next")
    assert turn.admitted
    # Slow's holder is back (a store outage or a stalled page kept it away): it keeps its number,
    # first in line, and is called at the next free place, never sent to the end of the line.
    later = await store.queue(room, "later")
    late = await store.queue(room, "slow")
    assert (late.admitted, late.ticket, late.position) == (False, 1, 0)
    clock.now += 10  # the next place
    assert not (await store.queue(room, "later")).admitted  # slow is called first
    assert (await store.queue(room, "slow")).admitted
    assert later.ticket == 3


async def one_called(store: Store, clock: Clock, name: str, called: str, behind: str) -> QueuePolicy:
    """A room of one place a window (4 s of grace): `called` is called by `behind`'s ask, a window
    after the one admission."""
    room = QueuePolicy(name, new_sessions=1, window=10.0, abandon_after=60.0, grace=4.0)
    assert (await store.queue(room, "in")).admitted
    await store.queue(room, called)
    await store.queue(room, behind)
    clock.now += 10
    await store.queue(room, behind)
    return room


async def test_a_lapsed_ticket_is_not_called_again_before_its_holder_asks(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    room = await one_called(store, clock, "lapsed", "gone", "next")  # "gone" never comes
    for _ in range(3):  # "next" polls as a page does
        clock.now += 1
        assert not (await store.queue(room, "next")).admitted
    clock.now += 1.1  # gone's call lapses: next is called and gets in
    assert (await store.queue(room, "next")).admitted
    waiting = await store.queue(room, "after")
    clock.now += 10  # the next place goes to "after", not to the silent lapsed ticket
    assert waiting.position == 1
    assert (await store.queue(room, "after")).admitted


async def test_a_called_slow_poller_gets_in_within_the_grace(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("slowpoll", new_sessions=1, window=10.0, abandon_after=60.0, grace=4.0)
    assert (await store.queue(room, "in")).admitted
    await store.queue(room, "slow")
    clock.now += 10
    await store.queue(room, "someone-else")  # calls "slow"
    clock.now += 3.5
    assert (await store.queue(room, "slow")).admitted


async def test_a_silent_store_does_not_eat_the_grace(store_and_clock: tuple[Store, Clock]) -> None:
    """Nobody reached the store for longer than half the grace (it was stopped, or restarted with
    its data): the called tickets' grace waits, and their holders still get in when they come back."""
    store, clock = store_and_clock
    room = await one_called(store, clock, "silent", "called", "behind")
    clock.now += 6  # an outage: nobody's ask reached the store
    assert not (await store.queue(room, "behind")).admitted  # the place is still "called"'s
    clock.now += 1
    assert (await store.queue(room, "called")).admitted


async def test_a_call_that_lived_through_a_silence_keeps_a_whole_grace_after_it(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """A call with a moment of its grace left when the store went silent: a replica may have let its
    holder in meanwhile (rooms/line.py), and must have time to write that back before the call
    lapses and its place goes to the next (room_record.lua would then count it in a full window)."""
    store, clock = store_and_clock
    room = await one_called(store, clock, "after", "called", "behind")  # its grace ends in 4 s
    clock.now += 1.9
    await store.queue(room, "behind")  # the last ask heard: 2.1 s of the grace left
    clock.now += 10  # silent: nobody's ask reached the store
    assert not (await store.queue(room, "behind")).admitted  # "called" keeps its place...
    for _ in range(3):  # ...for a whole grace after the silence, not the 2.1 s it had left
        clock.now += 1.3
        assert not (await store.queue(room, "behind")).admitted
    clock.now += 0.2
    assert (await store.queue(room, "behind")).admitted  # then it lapses to the next


@pytest.mark.parametrize("first", ["ask", "heartbeat"])
async def test_an_outage_longer_than_abandon_after_drops_nobody_who_kept_polling(
    store_and_clock: tuple[Store, Clock], first: str
) -> None:
    """No replica reached the store for 20 s (abandon_after is 12 s): the holders polled all along,
    unheard, and the replicas say so at their first ask after it, so the tickets keep their numbers,
    whether an ask or a line view's heartbeat comes first. Heard time still counts: a holder gone
    for 12 s after the outage is dropped; and a line merely silent (everyone left) drops them all."""
    store, clock = store_and_clock
    room = QueuePolicy("long", new_sessions=1, window=100.0, abandon_after=12.0, grace=4.0)
    assert (await store.queue(room, "in")).admitted
    assert [(await store.queue(room, sid)).ticket for sid in ("a", "b", "c")] == [1, 2, 3]
    clock.now += 2
    for sid in ("a", "b", "c"):
        await store.queue(room, sid)
    clock.now += 20  # an outage: nobody's ask reached the store
    if first == "heartbeat":
        glance = await store.still_here(room, [])
        assert glance.length == 3
    after = replace(room, unheard_for=20.0)  # as each replica's first ask after the outage says
    turns = [await store.queue(after, sid) for sid in ("a", "b")]
    assert [(t.ticket, t.position) for t in turns] == [(1, 0), (2, 1)]
    for _ in range(13):  # heard time: a polls as the page does, b and c never ask again
        clock.now += 1
        await store.queue(room, "a")
    turn = await store.queue(room, "c")
    assert (turn.ticket, turn.position) == (4, 1)  # b and c were dropped: c is a newcomer behind a
    clock.now += 30  # everyone leaves: a silence no replica reports
    late = await store.queue(room, "late")
    assert (late.position, late.queue_length) == (0, 1)  # a was dropped: nobody ahead


async def test_waiting_answers_mark_the_called_and_the_lapsed_tickets(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """Every waiting ticket's answer carries the highest number called and the highest whose call
    lapsed or was given up: the tickets between them hold their places (rooms/line.py, "Called
    before an outage")."""
    store, clock = store_and_clock
    room = QueuePolicy("marks", new_sessions=2, window=10.0, abandon_after=60.0, grace=4.0)
    for sid in ("a", "b"):
        assert (await store.queue(room, sid)).admitted
    tickets = {sid: (await store.queue(room, sid)).ticket for sid in ("c", "d", "e", "f", "g")}
    assert tickets == {"c": 1, "d": 2, "e": 3, "f": 4, "g": 5}
    first = await store.queue(room, "g")
    assert (first.last_called, first.last_lapsed) == (0, 0)
    clock.now += 10  # two places: c and d are called
    turn = await store.queue(room, "g")
    assert (turn.last_called, turn.last_lapsed) == (2, 0)
    clock.now += 2
    entered = await store.queue(room, "c")  # c gets in (its answer carries the marks too); d never comes
    assert (entered.admitted, entered.last_called, entered.epoch > 0) == (True, 2, True)
    for _ in range(3):  # g polls as a page does; d's call lapses after the grace: e is called
        clock.now += 1
        turn = await store.queue(room, "g")
    assert (turn.last_called, turn.last_lapsed) == (3, 2)
    assert await store.release(room.name, "e", 60.0)  # e, called, gives its place up: f gets it
    turn = await store.queue(room, "g")
    assert (turn.last_called, turn.last_lapsed) == (4, 3)


async def test_a_called_ticket_let_in_during_an_outage_takes_its_held_place(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """The write-back of a called ticket let in while the store was away: it leaves the line, counts
    in the window at the time it got in, and is counted inside in the place its call held; the
    next in line is not called into that place."""
    store, clock = store_and_clock
    room = QueuePolicy(
        "back", new_sessions=2, window=10.0, abandon_after=60.0, grace=4.0, max_active=2, ttl=30.0
    )
    block = RoomPolicy("back", new_sessions=2, window=10.0, block_for=0.0, max_active=2, ttl=30.0)
    for sid in ("a", "b"):
        assert (await store.queue(room, sid)).admitted
    await store.queue(room, "c")
    await store.queue(room, "d")
    clock.now += 10
    assert await store.release(room.name, "a", 30.0)  # one place inside, and two in the window
    turn = await store.queue(room, "d")
    assert (turn.admitted, turn.last_called, turn.called) == (False, 1, 1)  # c is called
    clock.now += 2  # c was let in by a replica while the store was away, 1 s ago; written back now
    gone = ("lost", clock.now - 1)  # a ticket the line does not hold (a store restarted empty)
    await store.record(block, [], clock.now, [("c", clock.now - 1), gone])
    state = await store.room_state(block)
    assert (state.in_window, state.active) == (
        1,
        2,
    )  # c: in the window and inside, no longer in line; not "lost"
    turn = await store.queue(room, "d")
    # The room is full: d waits, first in line, uncalled.
    assert (turn.admitted, turn.position, turn.queue_length, turn.called) == (False, 0, 1, 0)
    again = await store.queue(room, "c")  # c's ticket again: the session it got, no second place
    assert again.admitted
    assert (await store.room_state(block)).active == 2


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


async def test_heartbeat_keeps_a_waiting_ticket_and_changes_nothing_else(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """`heartbeat` (what `waitroom simulate` sends for the polls it skips): a ticket still in the line
    counts as seen now; a dropped one stays dropped; nobody is called by it."""
    store, clock = store_and_clock
    for sid in "ab":
        assert (await store.queue(ROOM, sid)).admitted
    for sid in "cde":
        assert not (await store.queue(ROOM, sid)).admitted
    assert await store.heartbeat(ROOM, []) == 0
    clock.now += 9
    assert await store.heartbeat(ROOM, ["d", "zz"]) == 1  # "zz" was never in line
    clock.now += 0.5  # a and b have left the window: the places wait for an ask to call anyone
    state = await store.queue_state(ROOM)
    assert (state.length, state.called) == (3, 0)
    clock.now += 3  # c and e were last seen 12.5 s ago (abandon_after 12 s); d 3.5 s ago
    # c and e are dropped; d is called (one place), and the other place goes to f at once.
    assert await ask(store, "f") == (True, 0, 0, 1)
    assert await store.heartbeat(ROOM, ["c", "e"]) == 0  # dropped tickets are not brought back
    assert (await store.queue(ROOM, "d")).admitted


PACED = QueuePolicy(
    "paced", new_sessions=2, window=10.0, abandon_after=12.0, grace=4.0, retry_after=2.0, max_retry_after=30.0
)


async def test_each_ticket_is_told_its_own_poll_interval(store_and_clock: tuple[Store, Clock]) -> None:
    """The head polls at retry_after; further back, half the earliest its turn can come (a window
    per new_sessions ahead), at most max_retry_after; both stores alike."""
    store, _ = store_and_clock
    for sid in "ab":
        assert (await store.queue(PACED, sid)).admitted
    turns = [await store.queue(PACED, f"w{i}") for i in range(12)]
    intervals = [turn.interval for turn in turns]
    assert intervals == sorted(intervals)
    # w0, w1: their places free when a and b leave the window (10 s): 5 s; w2, w3: 10 s later.
    assert intervals[:6] == [5.0, 5.0, 10.0, 10.0, 15.0, 15.0]
    assert intervals[-1] == 30.0
    assert [(t.calls, t.out, t.lapsed, t.in_window) for t in turns[:1]] == [(0, 0, 0, 2)]
    assert (await store.queue(replace(PACED, retry_after=0.0), "w11")).interval == 0.0  # as before


async def test_the_ticket_behind_a_called_one_polls_at_retry_after(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """A called ticket's place may come back at any moment (its call lapses, its holder leaves), so
    the next ticket is told retry_after, not the window a place would take to free up."""
    store, clock = store_and_clock
    for sid in "ab":
        assert (await store.queue(PACED, sid)).admitted
    assert [(await store.queue(PACED, sid)).interval for sid in ("w0", "w1")] == [5.0, 5.0]
    clock.now += 10  # a and b leave the window: the next ask calls w0 and w1
    behind = await store.queue(PACED, "w2")
    assert (behind.admitted, behind.called, behind.position) == (False, 2, 2)
    assert behind.interval == 2.0
    assert (await store.queue(PACED, "w3")).interval == 2.0  # either call may give its place back
    assert (await store.queue(PACED, "w4")).interval == 5.0  # a whole window of places ahead


async def test_a_ticket_is_abandoned_only_after_its_own_interval(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """A far-back ticket told to come back in 30 s is still in line 12 s (abandon_after) after its
    ask; a ticket is dropped when its due-back time is abandon_after past."""
    store, clock = store_and_clock
    for sid in "ab":
        await store.queue(PACED, sid)
    far = [await store.queue(PACED, f"w{i}") for i in range(12)]
    assert far[-1].interval == 30.0
    clock.now += 20  # past abandon_after for a ticket due back at once, not for one due in 30 s
    state = await store.queue_state(PACED)
    assert state.length == 12 - 2  # w0, w1 were due back in 5 s: 5 + 12 < 20, gone; w2 (10 s) not
    clock.now += 30
    assert (await store.queue_state(PACED)).length == 0


async def test_heartbeats_keep_far_back_tickets_alive(store_and_clock: tuple[Store, Clock]) -> None:
    """The line view's batched heartbeat: each ticket still in line is due back later (never
    earlier), the answer says its place and the line's counters; a gone ticket stays gone."""
    store, clock = store_and_clock
    for sid in "ab":
        await store.queue(PACED, sid)
    for i in range(6):
        await store.queue(PACED, f"w{i}")
    for _ in range(40):  # every second, far past abandon_after: kept alive by heartbeats alone
        clock.now += 1
        glance = await store.still_here(PACED, [("w4", 5.0), ("w5", 5.0), ("zz", 5.0)])
        assert glance.ranks[2] is None
        assert None not in glance.ranks[:2]
    # w0..w3 were abandoned (the heartbeat's own bounded pruning dropped them); w4, w5 live on.
    assert (glance.ranks, glance.length, glance.called, glance.lapsed, glance.out) == (
        (0, 1, None),
        2,
        0,
        0,
        4,
    )
    ranks = []
    for _ in range(20):  # w5 alone now: w4 is abandoned abandon_after after it was last due back
        clock.now += 1
        ranks.append((await store.still_here(PACED, [("w5", 5.0)])).ranks)
    assert ranks[0] == (1,)
    assert ranks[-1] == (0,)  # w4 was abandoned
    # A heartbeat after a silence that may be an outage drops nobody: the replicas that lived
    # through it say so at their next ask (room_queue.lua).
    clock.now += 60
    assert (await store.still_here(PACED, [])).length == 1
    assert (await store.queue(PACED, "w5")).position == 0


async def test_every_line_key_expires(shared_redis: RedisServer) -> None:
    """No key without a TTL, the ticket counter and the served counters included: they expire with
    the line, so no number is given twice while a ticket exists."""
    clock = Clock()
    store = RedisStore.for_url(shared_redis.url, 2.0, "ttl-line", clock)
    try:
        for i in range(5):
            await store.queue(PACED, f"v{i}")
        await store.still_here(PACED, [("v4", 3.0)])
        await store.release("paced", "v3", 30.0)
        client = client_from_url(shared_redis.url, 2.0)
        keys = await client.keys("ttl-line:*")
        assert any(key.endswith(b":tickets") for key in keys)
        assert any(key.endswith(b":served") for key in keys)
        ttls = {key: await client.pttl(key) for key in keys}
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        await client.aclose()
    finally:
        await store.close()


async def test_a_quiet_line_of_long_intervals_still_lapses_an_abandoned_call(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """Far-back tickets ask seldom, each when it is due back: a long silence before anyone is due is
    no outage, so a called ticket whose holder left still lapses after its grace and the next one,
    asking when told, is called."""
    store, clock = store_and_clock
    room = QueuePolicy(
        "quiet", 1, 60.0, abandon_after=300.0, grace=4.0, retry_after=2.0, max_retry_after=60.0
    )
    assert (await store.queue(room, "a")).admitted
    assert (await store.queue(room, "b")).interval == 30.0  # then b leaves without a word
    turn = await store.queue(room, "c")
    asks = []
    while not turn.admitted and len(asks) < 10:
        clock.now += turn.interval  # c asks again when it is told to
        asks.append(clock.now - 1_000)
        turn = await store.queue(room, "c")
    assert turn.admitted
    # b is called when a's admission leaves the window (60 s), at c's ask; c, next in line, is told
    # retry_after; b's call lapses 4 s after it was made, and c is called and let in at its next ask.
    assert asks[-1] == 64.0, asks


async def test_an_outage_moves_the_calls_on_although_far_back_tickets_ask_seldom(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """The head of a line asks every retry_after: when nobody asks within half the grace after the
    first ticket due back, nobody could reach the store, whatever max_retry_after is; a called
    ticket's grace then waits for the outage (issue 26: a 3 s outage lapsed the calls of visitors
    who had polled through it, and later tickets got in first)."""
    store, clock = store_and_clock
    room = QueuePolicy(
        "outage", 1, 10.0, abandon_after=300.0, grace=4.0, retry_after=2.0, max_retry_after=60.0
    )
    assert (await store.queue(room, "a")).admitted
    assert not (await store.queue(room, "b")).admitted
    clock.now += 10
    called = await store.queue(room, "c")  # a's place is free: b is called
    assert (called.called, called.interval) == (1, 2.0)
    clock.now += 2
    assert not (await store.queue(room, "c")).admitted  # c is heard; b's holder is not
    clock.now += 5  # nobody reaches the store for 5 s: c was due back 2 s after its ask
    assert not (await store.queue(room, "c")).admitted  # b's call waited for the outage: c is behind
    assert (await store.queue(room, "b")).admitted


async def test_two_replicas_with_line_views_on_one_redis_keep_the_order_and_the_rate(
    shared_redis: RedisServer,
) -> None:
    """Two replicas' deciders (each its own connection and line view) share one Redis; every poll
    goes to either at random and comes back when told. Far-back polls are answered by the views, and
    still: exactly ticket order, at most new_sessions per window, everyone in."""
    clock = Clock()
    config = parse_config(
        {
            "store": {"url": shared_redis.url, "key_prefix": "views"},
            "rooms": [
                {
                    "name": "shop",
                    "match": {"path_prefix": "/"},
                    "queue": "fifo",
                    "new_sessions": 2,
                    "window": "10s",
                    "retry_after": "1s",
                    "max_retry_after": "20s",
                }
            ],
        }
    )
    codec = SessionCodec(keys_from_secret("unit-test-secret-0123456789"), ttl=600)
    stores = [RedisStore.for_url(shared_redis.url, 2.0, "views", clock) for _ in range(2)]
    deciders = [Decider(config, store, codec, clock) for store in stores]
    assert all(d.line.view is not None for d in deciders)
    name = cookie_name(config, config.rooms[0])
    rng = random.Random(5)
    try:
        tickets: dict[int, tuple[str, float]] = {}  # visitor → (ticket, when it comes back)
        numbers: dict[int, int] = {}
        admitted: list[tuple[float, int]] = []
        before = METRICS.line.polls.labels("shop", "view")._value.get()
        for v in range(40):
            decision = await visit(rng.choice(deciders), "/", lambda wanted: [])
            if decision.outcome is Outcome.ADMITTED:
                admitted.append((clock.now, v))
            else:
                assert decision.pending is not None
                tickets[v] = (decision.pending, clock.now + decision.retry_after)
                numbers[v] = codec.ticket(decision.pending, "shop", clock.now).issued_at  # type: ignore[union-attr]
        while tickets and clock.now < 1_400:
            clock.now += 0.5
            for v, (token, due) in sorted(tickets.items()):
                if due > clock.now:
                    continue
                decision = await visit(
                    rng.choice(deciders), "/", lambda wanted, t=token: [t] if wanted == name else []
                )
                if decision.outcome is Outcome.ADMITTED:
                    admitted.append((clock.now, v))
                    del tickets[v]
                else:
                    assert decision.pending is not None
                    tickets[v] = (decision.pending, clock.now + decision.retry_after)
            if clock.now % 1 == 0:
                for decider in deciders:
                    assert decider.line.view is not None
                    await decider.line.view.flush()
        assert not tickets  # everyone got in
        # The views answered about a quarter of the polls (78 of ~330 in this run), with no store call.
        assert METRICS.line.polls.labels("shop", "view")._value.get() > before + 40
        called = [numbers[v] for _, v in admitted if v in numbers]
        assert called == sorted(called)  # ticket order, exactly
        times = [t for t, _ in admitted]
        assert max(sum(1 for u in times if t <= u < t + 10) for t in times) <= 2
    finally:
        for store in stores:
            await store.close()
