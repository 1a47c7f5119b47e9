"""How a replica learns of releases made elsewhere (issue 27, N11): every flush answers the room's
recent releases, and a room whose sessions make requests is flushed even with nothing to note."""

from __future__ import annotations

from waitroom.rooms.activity import FLUSH_EVERY, Activity
from waitroom.store.base import RECENT_RELEASES, RECENT_RELEASES_MAX, RoomPolicy
from waitroom.store.memory import MemoryStore
from waitroom.store.redis_client import load_lua

TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_release_elsewhere_is_learnt_by_the_next_flush_noted_or_not() -> None:
    clock = Clock()
    store = MemoryStore(clock)  # the shared store; `here` and `there` are two replicas on it
    flushes: list[str] = []
    here = Activity(store, TTL, clock, schedule_flush=lambda: flushes.append("here"))
    there = Activity(store, TTL, clock)
    assert (await store.admit(RoomPolicy("r", 10, 60.0, 0.0, max_active=5, ttl=TTL), "s")).admitted
    here.seen("r", "s", clock.now, 5)  # noted: it will not be noted again for TOUCH_EVERY
    await here.flush()
    clock.now += FLUSH_EVERY
    await there.release("r", "s", "leave")
    here.seen("r", "s", clock.now, 5)  # not noted (too soon), yet a flush is due
    assert flushes == ["here", "here"]
    await here.flush()
    assert here.released("r", "s")


def test_the_scripts_recent_releases_are_the_stores() -> None:
    """room_touch.lua names the same span and bound as the embedded store (store/base.py)."""
    source = load_lua("room_touch.lua")
    expected = (
        f"RECENT_RELEASES, RECENT_RELEASES_MAX = {round(RECENT_RELEASES * 1_000_000)}, {RECENT_RELEASES_MAX}"
    )
    assert f"local {expected}" in source
