"""What every store does, whatever holds the state: the protocol and its value types."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]
"""Seconds since the epoch, as `time.time`; injected so tests and flow replay are deterministic."""


@dataclass(frozen=True, slots=True)
class RoomPolicy:
    """The numbers an admission decision needs; the caller may scale them (e.g. per replica)."""

    name: str
    new_sessions: int
    window: float
    block_for: float


@dataclass(frozen=True, slots=True)
class Admission:
    """The store's answer for one new visitor."""

    admitted: bool
    blocked_until: float
    """When the room's block ends (store clock); 0 while the room is not blocked."""
    block_started: bool
    """This visitor found the window full and started the block."""
    now: float
    """The store's clock when it decided; compare `blocked_until` with this, not the local clock."""

    @property
    def blocked_for(self) -> float:
        return max(0.0, self.blocked_until - self.now)


class StoreError(Exception):
    """The store could not answer (unreachable, timed out, refused); the failure policy applies."""


class Store(Protocol):
    """Shared state behind the decisions. Implementations: memory (embedded) and Redis."""

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        """One new visitor asks to enter `room`, all in one atomic step: if the room is blocked,
        refuse; else prune the window's log, and admit (recording `session_id`) if it has room,
        or start a block of `room.block_for` and refuse. Raises StoreError when it cannot answer."""
        ...

    async def close(self) -> None: ...
