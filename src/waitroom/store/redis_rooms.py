"""The Redis store's rooms: each room operation is one Lua script on the room's keys.

Keys are `<key_prefix>:{room:<name>}:log|blocked|active|released` (and, for a `fifo` room's line,
`line|seen|called|joined|tickets`); the hash tag keeps a room's keys in one slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from waitroom.store.base import MICROS, Admission, Clock, QueuePolicy, QueueState, RoomPolicy, RoomState, Turn
from waitroom.store.redis_client import _text, redis_errors


class RedisRooms:
    """The room operations of the Store protocol, which RedisStore inherits. RedisStore's constructor
    sets what they use, the scripts included: they are registered in one place, in one order."""

    _client: Any
    _prefix: str
    _clock: Clock | None
    _admit: Any
    _room_state: Any
    _room_record: Any
    _queue: Any
    _queue_state: Any
    _touch: Any
    _release: Any

    def room_keys(self, room: str) -> list[str]:
        """The admission log, the block, the active sessions, the released ones."""
        tag = f"{self._prefix}:{{room:{room}}}"
        return [f"{tag}:log", f"{tag}:blocked", f"{tag}:active", f"{tag}:released"]

    def queue_keys(self, room: str) -> list[str]:
        """The admission log (shared with `block`: a room may change order), then the line's."""
        tag = f"{self._prefix}:{{room:{room}}}"
        return [
            f"{tag}:log",
            f"{tag}:line",
            f"{tag}:seen",
            f"{tag}:called",
            f"{tag}:joined",
            f"{tag}:tickets",
        ]

    def _queue_args(self, room: QueuePolicy) -> list[int]:
        return [
            room.new_sessions,
            round(room.window * MICROS),
            round(room.abandon_after * MICROS),
            round(room.grace * MICROS),
        ]

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(round(self._clock() * MICROS))

    async def admit(self, room: RoomPolicy, session_id: str) -> Admission:
        args = [
            room.new_sessions,
            round(room.window * MICROS),
            round(room.block_for * MICROS),
            session_id,
            self._now_arg(),
            room.max_active,
            round(room.ttl * MICROS),
        ]
        with redis_errors():
            reply = await self._admit(keys=self.room_keys(room.name)[:3], args=args)
        admitted, blocked_until, started, now = reply
        return Admission(bool(admitted), blocked_until / MICROS, bool(started), now / MICROS)

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        args = [
            *self._queue_args(room),
            session_id,
            "1" if room.hold else "",
            self._now_arg(),
            room.max_active,
            round(room.ttl * MICROS),
            round(room.opens_at * MICROS),
            room.seed,
            room.tickets_per_ip,
        ]
        keys = [*self.queue_keys(room.name), self.room_keys(room.name)[2]]
        if room.tickets_per_ip and client:
            keys.append(f"{self._prefix}:{{room:{room.name}}}:tickets-from:{client}")
        with redis_errors():
            reply = await self._queue(keys=keys, args=args)
        admitted, ticket, position, length, called, slot, now, state = reply
        return Turn(
            bool(admitted),
            int(ticket),
            int(position),
            int(length),
            int(called),
            slot / MICROS,
            now / MICROS,
            prequeue=state == 1,
            refused=state == 2,
            used=state == 3,
        )

    async def touch(self, room: str, ttl: float, seen: Sequence[tuple[str, float]]) -> list[str]:
        args: list[str | int] = [round(ttl * MICROS), self._now_arg()]
        for session_id, ago in seen:
            args += [session_id, max(0, round(ago * MICROS))]
        with redis_errors():
            gone = await self._touch(keys=self.room_keys(room)[2:], args=args)
        return [_text(sid) for sid in gone]

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        keys = [*self.room_keys(room)[2:], *self.queue_keys(room)[1:5]]
        with redis_errors():
            return bool(
                await self._release(keys=keys, args=[session_id, round(ttl * MICROS), self._now_arg()])
            )

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        args = [*self._queue_args(room), self._now_arg()]
        with redis_errors():
            reply = await self._queue_state(keys=self.queue_keys(room.name)[:5], args=args)
        length, called, oldest, in_window, slot, now = reply
        waited = (now - oldest) / MICROS if oldest else 0.0
        return QueueState(
            int(length), int(called), max(0.0, waited), int(in_window), slot / MICROS, now / MICROS
        )

    async def record(self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float) -> None:
        args: list[str | int] = [round(room.window * MICROS), round(now * MICROS), self._now_arg()]
        for session_id, at in admissions:
            args += [session_id, round(at * MICROS)]
        with redis_errors():
            await self._room_record(keys=self.room_keys(room.name)[:1], args=args)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        args = [round(room.window * MICROS), self._now_arg(), round(room.ttl * MICROS)]
        with redis_errors():
            in_window, blocked, active = await self._room_state(keys=self.room_keys(room.name)[:3], args=args)
        return RoomState(int(in_window), blocked / MICROS, int(active))

    async def unblock(self, room: str) -> bool:
        with redis_errors():
            return bool(await self._client.delete(self.room_keys(room)[1]))
