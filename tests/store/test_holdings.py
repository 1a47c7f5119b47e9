"""What one client address holds in a room (`places_per_ip`), and credentials that are good for
one session only, on both stores, same cases (issue 27, rows N2, N3, N5)."""

from __future__ import annotations

import pytest

from tests.store.conftest import Clock
from waitroom.store.base import QueuePolicy, RoomPolicy, Store

pytestmark = pytest.mark.e2e

TTL = 30.0


async def test_an_address_holds_at_most_its_places_in_a_line(store_and_clock: tuple[Store, Clock]) -> None:
    """Tickets kept alive by polling count as long as they are in the line, not per minute (N2); a
    direct entry into an empty line counts as well (N3)."""
    store, clock = store_and_clock
    held = QueuePolicy("hold", 1, 60.0, 60.0, 60.0, hold=True, places_per_ip=2)  # nobody is called
    assert (await store.queue(held, "t1", "ip-a")).ticket == 1
    assert (await store.queue(held, "t2", "ip-a")).ticket == 2
    third = await store.queue(held, "t3", "ip-a")
    assert (third.refused, third.slot) == (True, 0.0)  # no clock says when a place frees
    assert (await store.queue(held, "b1", "ip-b")).ticket  # another address
    for _ in range(3):  # minutes pass while the tickets are kept alive: still two places
        clock.now += 50
        assert (await store.queue(held, "t1", "ip-a")).position == 0
        assert (await store.queue(held, "t2", "ip-a")).position == 1
        assert (await store.queue(held, "b1", "ip-b")).ticket
        assert (await store.queue(held, "x", "ip-a")).refused
    # A direct entry into an empty line is a place too; the window's admission counts while it
    # is in the window (no cap: a session is its admission).
    room = QueuePolicy("direct", 1, 60.0, 60.0, 60.0, places_per_ip=2)
    assert (await store.queue(room, "in", "ip-a")).admitted
    assert (await store.queue(room, "w1", "ip-a")).ticket == 1
    assert (await store.queue(room, "w2", "ip-a")).refused
    clock.now += 61
    assert (await store.queue(room, "w1", "ip-a")).admitted  # called and in: still one place
    assert (await store.queue(room, "w3", "ip-a")).ticket  # the entry left the window
    assert (await store.queue(room, "w4", "ip-a")).refused


async def test_places_free_up_when_tickets_leave_or_sessions_end(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    room = QueuePolicy("free", 1, 60.0, 20.0, 60.0, places_per_ip=1, max_active=5, ttl=TTL)
    assert (await store.queue(room, "s1", "ip-a")).admitted
    assert (await store.queue(room, "x", "ip-a")).refused
    assert await store.release("free", "s1", TTL)  # a released session is no place
    assert (await store.queue(room, "t1", "ip-a")).ticket  # the window is full: a ticket
    assert (await store.queue(room, "x", "ip-a")).refused
    assert await store.release("free", "t1", TTL)  # left the line
    assert (await store.queue(room, "t2", "ip-a")).ticket
    clock.now += 21  # abandoned: t2 has not asked for abandon_after
    assert (await store.queue(room, "t3", "ip-b")).ticket  # (the abandoned ticket goes)
    assert (await store.queue(room, "t4", "ip-a")).ticket


async def test_a_session_idle_past_the_ttl_is_no_place(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("idle", 100, 600.0, 0.0, max_active=10, ttl=TTL, places_per_ip=2)
    assert (await store.admit(room, "a", "ip-a")).admitted
    assert (await store.admit(room, "b", "ip-a")).admitted
    refused = await store.admit(room, "c", "ip-a")
    assert (refused.admitted, refused.holding, refused.block_started) == (False, True, False)
    assert (await store.admit(room, "d", "ip-b")).admitted  # another address
    clock.now += 20
    assert await store.touch("idle", TTL, [("a", 0.0)]) == []
    clock.now += 11  # b idle past the ttl, a not
    assert (await store.admit(room, "c", "ip-a")).admitted
    assert (await store.admit(room, "e", "ip-a")).holding


async def test_a_block_room_counts_admissions_in_the_window_without_a_cap(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("blk", 100, 60.0, 10.0, places_per_ip=1)
    assert (await store.admit(room, "a", "ip-a")).admitted
    assert (await store.admit(room, "a", "ip-a")).admitted  # asked again (lost answer): same place
    assert (await store.admit(room, "b", "ip-a")).holding
    assert (await store.admit(room, "b", "")).admitted  # no address known: not counted
    clock.now += 61
    assert (await store.admit(room, "c", "ip-a")).admitted


async def test_one_draw_per_address_before_the_opening(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    opens = clock.now + 100
    room = QueuePolicy(
        "draw", 5, 60.0, 600.0, 60.0, opens_at=opens, seed="s", places_per_ip=3, draws_per_ip=1
    )
    assert (await store.queue(room, "d1", "ip-a")).prequeue
    assert (await store.queue(room, "d2", "ip-a")).refused  # one draw
    assert (await store.queue(room, "d3", "ip-b")).prequeue
    more = QueuePolicy(
        "draw", 5, 60.0, 600.0, 60.0, opens_at=opens, seed="s", places_per_ip=3, draws_per_ip=2
    )
    assert (await store.queue(more, "d2", "ip-a")).prequeue  # the operator allows two
    assert (await store.queue(more, "d4", "ip-a")).refused
    clock.now += 101  # open: up to places_per_ip in all
    assert (await store.queue(room, "d1", "ip-a")).admitted
    assert (await store.queue(room, "n1", "ip-a")).admitted  # d1, d2 (called), n1: three
    assert (await store.queue(room, "n2", "ip-a")).refused


async def test_a_released_session_is_not_started_again_by_its_credential(
    store_and_clock: tuple[Store, Clock],
) -> None:
    """N5: an id already in the window's log (a pending token's, a used ticket's) is let in again
    only while its session lives: not once released, nor once its place was given to someone else."""
    store, clock = store_and_clock
    room = RoomPolicy("once", 100, 60.0, 0.0, max_active=2, ttl=TTL)
    assert (await store.admit(room, "p", "")).admitted
    assert (await store.admit(room, "p", "")).admitted  # the lost answer's retry: same session
    assert await store.release("once", "p", TTL)
    again = await store.admit(room, "p", "")
    assert (again.admitted, again.spent) == (False, True)
    assert (await store.admit(room, "a", "")).admitted
    assert (await store.admit(room, "b", "")).admitted
    assert (await store.room_state(room)).active == 2  # the cap holds
    # No cap: released is enough.
    plain = RoomPolicy("once2", 100, 60.0, 0.0)
    assert (await store.admit(plain, "p", "")).admitted
    assert await store.release("once2", "p", TTL) is False  # held no counted place
    assert (await store.admit(plain, "p", "")).spent
    # A place given away (idle past the ttl, the room full since): not let in again.
    clock.now += 1
    capped = RoomPolicy("once3", 100, 600.0, 0.0, max_active=1, ttl=TTL)
    assert (await store.admit(capped, "q", "")).admitted
    clock.now += TTL + 1
    assert (await store.admit(capped, "r", "")).admitted
    assert (await store.admit(capped, "q", "")).spent


async def test_a_used_ticket_is_not_used_again_after_its_release(
    store_and_clock: tuple[Store, Clock],
) -> None:
    store, _clock = store_and_clock
    room = QueuePolicy("tick", 100, 60.0, 60.0, 60.0, max_active=3, ttl=TTL)
    assert (await store.queue(room, "t")).admitted
    assert (await store.queue(room, "t")).admitted  # within grace: the lost answer's retry
    assert await store.release("tick", "t", TTL)
    spent = await store.queue(room, "t")
    assert (spent.admitted, spent.used) == (False, True)
    plain = QueuePolicy("tick2", 100, 60.0, 60.0, 60.0)
    assert (await store.queue(plain, "t")).admitted
    await store.release("tick2", "t", TTL)
    assert (await store.queue(plain, "t")).used
