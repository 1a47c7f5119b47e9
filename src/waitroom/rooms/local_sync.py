"""Admissions the `local` failure policy made while the store failed, written back to it."""

from __future__ import annotations

from waitroom.config.schema import RoomConfig
from waitroom.rooms.policy import room_policy
from waitroom.store.base import Clock, RoomStore
from waitroom.store.on_error import OnError


class LocalSync:
    """Rooms with admissions the `local` policy made while the store failed, which the shared
    window has not been told of yet; told before the room's next shared decision, so the limit
    holds across the outage (`block` and `fifo` rooms alike: both count in the window's log)."""

    def __init__(self, store: RoomStore, on_error: OnError, clock: Clock) -> None:
        self.store = store
        self.on_error = on_error
        self.clock = clock
        self._unsynced: set[str] = set()

    def admitted_locally(self, room: str) -> None:
        self._unsynced.add(room)

    async def before_shared(self, room: RoomConfig) -> None:
        """Raises StoreError if the store fails again (the policy then decides, as for the call)."""
        if room.name not in self._unsynced:
            return
        admissions = self.on_error.local_store().rooms.room_admissions(room.name)
        if admissions:
            await self.store.record(room_policy(room), admissions, self.clock())
        self._unsynced.discard(room.name)
