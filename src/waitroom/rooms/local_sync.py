"""Admissions the `local` failure policy made while the store failed, written back to it."""

from __future__ import annotations

import asyncio
import logging

from waitroom.config.schema import RoomConfig
from waitroom.rooms.policy import room_policy
from waitroom.store.base import Clock, Overloaded, RoomStore, StoreError
from waitroom.store.on_error import OnError

log = logging.getLogger(__name__)

WRITE_BACK_EVERY = 0.25
"""Seconds between tries to write back what is still owed, while anything is: the store answering
again is heard within one (a try meets an open circuit at no cost, and the breaker probes at the
line's pace, store/guard.py), whether or not any visitor of the room asks meanwhile."""


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
        self._rooms: dict[str, RoomConfig] = {}
        """The rooms owed a write-back, as they were configured when it was noted."""
        self._retry: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None

    def admitted_locally(self, room: RoomConfig) -> None:
        self._unsynced.add(room.name)
        self._owed(room)

    def admitted_called(self, room: RoomConfig, session_id: str, at: float) -> None:
        self._called.setdefault(room.name, {}).setdefault(session_id, at)
        self._owed(room)

    def _owed(self, room: RoomConfig) -> None:
        """Write back without waiting for the room's next visitor: a called ticket's call lapses
        one grace after the store hears again, and a write-back that came after it would count the
        ticket in a window that gave its place to the next (tests/e2e/test_faults.py saw 21 of 20)."""
        self._rooms[room.name] = room
        if self._retry is None and (self._writing is None or self._writing.done()):
            self._retry = asyncio.get_running_loop().call_later(WRITE_BACK_EVERY, self._write_back_soon)

    def _write_back_soon(self) -> None:
        self._retry = None
        loop = asyncio.get_running_loop()
        self._writing = loop.create_task(self._write_back(), name="waitroom: write-back")

    async def _write_back(self) -> None:
        for name, room in list(self._rooms.items()):
            try:
                await self.before_shared(room)
            except (StoreError, Overloaded):
                pass  # still owed: the next try
            except Exception as e:  # a bug: what is owed is kept, and tried again
                log.warning("waitroom: writing back room %s failed: %s", name, type(e).__name__)
        owed = self._unsynced | set(self._called)
        for name in [name for name in self._rooms if name not in owed]:
            del self._rooms[name]
        if self._rooms:
            self._retry = asyncio.get_running_loop().call_later(WRITE_BACK_EVERY, self._write_back_soon)

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
