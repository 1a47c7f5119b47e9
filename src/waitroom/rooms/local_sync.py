"""Admissions the `local` failure policy made while the store failed, written back to it."""

from __future__ import annotations

from waitroom.config.schema import RoomConfig
from waitroom.rooms.policy import room_policy
from waitroom.store.base import Clock, RoomStore
from waitroom.store.on_error import OnError


class LocalSync:
    """Rooms with admissions made while the store failed, which the shared window has not been told
    of yet: the `local` policy's, and the called tickets let in (rooms/line.py, "Called before an
    outage"). Told before the room's next shared decision, so the limit holds across the outage
    (`block` and `fifo` rooms alike: both count in the window's log), and a called ticket takes the
    place its call held."""

    def __init__(self, store: RoomStore, on_error: OnError, clock: Clock, ttl: float = 0.0) -> None:
        self.store = store
        self.on_error = on_error
        self.clock = clock
        self.ttl = ttl
        """How long the store counts an idle session inside (activity.active_ttl)."""
        self._unsynced: set[str] = set()
        self._called: dict[str, dict[str, float]] = {}
        """Room → called tickets' session ids let in → when."""

    def admitted_locally(self, room: str) -> None:
        self._unsynced.add(room)

    def admitted_called(self, room: str, session_id: str, at: float) -> None:
        self._called.setdefault(room, {}).setdefault(session_id, at)

    async def before_shared(self, room: RoomConfig) -> None:
        """Raises StoreError if the store fails again (the policy then decides, as for the call):
        what was not written back is kept for the next call, and what other requests add while
        this one waits for the store is sent by the next."""
        local = room.name in self._unsynced
        called = dict(self._called.get(room.name, {}))
        if not local and not called:
            return
        admissions = self.on_error.local_store().rooms.room_admissions(room.name) if local else []
        self._unsynced.discard(room.name)
        try:
            if admissions or called:
                policy = room_policy(room, ttl=self.ttl)
                await self.store.record(policy, admissions, self.clock(), list(called.items()))
        except BaseException:  # failed, shed or cancelled: nothing was written back for sure
            if local:
                self._unsynced.add(room.name)
            raise
        left = self._called.get(room.name, {})
        for session_id in called:
            left.pop(session_id, None)
        if not left:
            self._called.pop(room.name, None)
