"""The embedded store (`memory://`): one process, nothing to install, the same algorithms as Redis."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from waitroom.store.base import Admission, Clock, RoomPolicy


@dataclass(slots=True)
class _RoomState:
    log: deque[float] = field(default_factory=deque)
    """Admission times inside the window, oldest first: O(new_sessions) memory."""
    blocked_until: float = 0.0


class MemoryStore:
    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._rooms: dict[str, _RoomState] = {}

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        # No await inside: on one event loop this whole decision is atomic, like the Lua script.
        now = self._clock()
        state = self._rooms.get(room.name)
        if state is None:
            state = self._rooms[room.name] = _RoomState()
        if now < state.blocked_until:
            return Admission(False, state.blocked_until, False, now)
        # The window is the half-open interval (now - window, now]: an admission exactly one
        # window old no longer counts, so no interval of that length holds more than new_sessions.
        log, cutoff = state.log, now - room.window
        while log and log[0] <= cutoff:
            log.popleft()
        if len(log) < room.new_sessions:
            log.append(now)
            return Admission(True, 0.0, False, now)
        if room.block_for <= 0:  # no block: every new visitor is judged by the window alone
            return Admission(False, 0.0, True, now)
        state.blocked_until = now + room.block_for
        return Admission(False, state.blocked_until, True, now)

    async def close(self) -> None:
        self._rooms.clear()
