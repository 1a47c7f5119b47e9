"""The Redis store's rooms: each room operation is one Lua script on the room's keys.

Keys are `<key_prefix>:{room:<name>}:log|blocked|active|released|departed` (and, for a `fifo` room's
line, `line|seen|called|joined|tickets|lapsed|served`; per client address, `tickets-from:<hash>` and
`holds:<hash>`); the hash tag keeps a room's keys in one slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from waitroom.store.base import (
    MICROS,
    NOBODY_INSIDE,
    Admission,
    Clock,
    Inside,
    LineGlance,
    QueuePolicy,
    QueueState,
    RoomPolicy,
    RoomState,
    Tickets,
    Turn,
)
from waitroom.store.redis_client import load_lua, redis_errors, script_time, text


class RedisRooms:
    """The room operations of the Store protocol on Redis; RedisStore holds one."""

    def __init__(
        self, client: Any, register: Callable[[str], Any], key_prefix: str, clock: Clock | None
    ) -> None:
        """`register(source)`: a callable script, on the connection the request path uses;
        `clock`: None for the Redis server's own (see script_time)."""
        self._client = client
        self._prefix = key_prefix
        self._clock = clock
        self._admit = register(load_lua("room_admit.lua"))
        self._room_state = register(load_lua("room_state.lua"))
        self._room_record = register(load_lua("room_record.lua"))
        self._queue = register(load_lua("room_queue.lua"))
        self._queue_state = register(load_lua("room_queue_state.lua"))
        self._heartbeat = register(load_lua("room_heartbeat.lua"))
        self._touch = register(load_lua("room_touch.lua"))
        self._release = register(load_lua("room_release.lua"))

    def room_keys(self, room: str) -> list[str]:
        """The admission log, the block, the active sessions, the released ones, the departures."""
        tag = f"{self._prefix}:{{room:{room}}}"
        return [f"{tag}:log", f"{tag}:blocked", f"{tag}:active", f"{tag}:released", f"{tag}:departed"]

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

    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        args: list[str | int] = [
            room.new_sessions,
            round(room.window * MICROS),
            round(room.block_for * MICROS),
            session_id,
            script_time(self._clock),
            room.max_active,
            round(room.ttl * MICROS),
            room.places_per_ip,
            client if room.places_per_ip else "",
        ]
        log, blocked, active, released, departed = self.room_keys(room.name)
        keys = [log, blocked, active, departed, released, self._holds_key(room.name, client)]
        with redis_errors():
            reply = await self._admit(keys=keys, args=args)
        admitted, blocked_until, started, now = reply[:4]
        if len(reply) == 4:
            return Admission(bool(admitted), blocked_until / MICROS, bool(started), now / MICROS)
        return Admission(
            bool(admitted),
            blocked_until / MICROS,
            bool(started),
            now / MICROS,
            next_free=reply[4] / MICROS,
            inside=_inside(reply[5:9]),
            holding=len(reply) > 9 and reply[9] == 1,
            spent=len(reply) > 9 and reply[9] == 2,
        )

    def _holds_key(self, room: str, client: str) -> str:
        """An address's holds (holds.lua); with no address, a name no script writes to."""
        return f"{self._prefix}:{{room:{room}}}:holds:{client}"

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        args = [
            *self._queue_args(room),
            session_id,
            "1" if room.hold else "",
            script_time(self._clock),
            room.max_active,
            round(room.ttl * MICROS),
            round(room.opens_at * MICROS),
            room.seed,
            room.tickets_per_ip,
            room.places_per_ip,
            room.draws_per_ip,
            client,
            round(room.retry_after * MICROS),
            round(room.max_retry_after * MICROS),
            round(room.unheard_for * MICROS),
        ]
        room_keys = self.room_keys(room.name)
        tag = f"{self._prefix}:{{room:{room.name}}}"
        keys = [
            *self.queue_keys(room.name),
            room_keys[2],
            room_keys[4],
            f"{tag}:lapsed",
            room_keys[3],
            f"{tag}:tickets-from:{client}",
            self._holds_key(room.name, client),
            f"{tag}:served",
        ]
        with redis_errors():
            reply = await self._queue(keys=keys, args=args)
        admitted, ticket, position, length, called, slot, now, state = reply[:8]
        waiting = reply[8:16] if len(reply) >= 16 else (0,) * 8
        interval, calls, out, lapsed, in_window, last_called, last_lapsed, epoch = waiting
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
            inside=_inside(reply[16:20]),
            interval=interval / MICROS,
            calls=int(calls),
            out=int(out),
            lapsed=int(lapsed),
            in_window=int(in_window),
            last_called=int(last_called),
            last_lapsed=int(last_lapsed),
            epoch=int(epoch),
        )

    async def touch(
        self, room: str, ttl: float, seen: Sequence[tuple[str, float]], max_active: int = 0
    ) -> list[str]:
        args: list[str | int] = [round(ttl * MICROS), script_time(self._clock), max_active]
        for session_id, ago in seen:
            args += [session_id, max(0, round(ago * MICROS))]
        with redis_errors():
            gone = await self._touch(keys=self.room_keys(room)[2:5], args=args)
        return [text(sid) for sid in gone]

    async def release(self, room: str, session_id: str, ttl: float) -> bool:
        active, released, departed = self.room_keys(room)[2:5]
        keys = [active, released, *self.queue_keys(room)[1:5], departed, self._served(room)]
        with redis_errors():
            return bool(
                await self._release(
                    keys=keys, args=[session_id, round(ttl * MICROS), script_time(self._clock)]
                )
            )

    async def queue_state(self, room: QueuePolicy) -> QueueState:
        ttl = round(room.ttl * MICROS) if room.max_active else 0  # no cap: no places inside to read
        args = [*self._queue_args(room), script_time(self._clock), ttl]
        room_keys = self.room_keys(room.name)
        keys = [*self.queue_keys(room.name)[:5], room_keys[2], room_keys[4]]
        with redis_errors():
            reply = await self._queue_state(keys=keys, args=args)
        length, called, oldest, in_window, slot, now = reply[:6]
        waited = (now - oldest) / MICROS if oldest else 0.0
        return QueueState(
            int(length),
            int(called),
            max(0.0, waited),
            int(in_window),
            slot / MICROS,
            now / MICROS,
            _inside(reply[6:10]) if room.max_active else NOBODY_INSIDE,
        )

    def _served(self, room: str) -> str:
        return f"{self._prefix}:{{room:{room}}}:served"

    async def heartbeat(self, room: QueuePolicy, session_ids: Sequence[str]) -> int:
        if not session_ids:
            return 0
        glance = await self.still_here(room, [(sid, 0.0) for sid in session_ids])
        return sum(1 for rank in glance.ranks if rank is not None)

    async def still_here(self, room: QueuePolicy, beats: Sequence[tuple[str, float]]) -> LineGlance:
        abandon, grace = self._queue_args(room)[2:4]
        args: list[str | int] = [
            abandon,
            grace,
            round(max(room.retry_after, room.max_retry_after) * MICROS),
            script_time(self._clock),
            round(room.window * MICROS),
            round(room.retry_after * MICROS),
        ]
        for session_id, due_in in beats:
            args += [session_id, max(0, round(due_in * MICROS))]
        log, line, seen, called, joined, counter = self.queue_keys(room.name)
        tag = f"{self._prefix}:{{room:{room.name}}}"
        keys = [line, seen, called, joined, counter, self._served(room.name), f"{tag}:lapsed", log]
        with redis_errors():
            reply = await self._heartbeat(keys=keys, args=args)
        now, length, ncalled, lapsed, in_window, calls, out = (int(v) for v in reply[:7])
        ranks = tuple(None if int(rank) < 0 else int(rank) for rank in reply[7:])
        return LineGlance(now / MICROS, length, ncalled, lapsed, in_window, calls, out, ranks)

    async def record(
        self, room: RoomPolicy, admissions: Sequence[tuple[str, float]], now: float, tickets: Tickets = ()
    ) -> None:
        args: list[str | int] = [
            round(room.window * MICROS),
            round(now * MICROS),
            script_time(self._clock),
            room.max_active,
            round(room.ttl * MICROS),
            len(tickets),
        ]
        for session_id, at in [*tickets, *admissions]:
            args += [session_id, round(at * MICROS)]
        log, line, seen, called, joined, _ = self.queue_keys(room.name)
        _, _, active, released, departed = self.room_keys(room.name)
        tag = f"{self._prefix}:{{room:{room.name}}}"
        lapsed, served = f"{tag}:lapsed", self._served(room.name)
        keys = [log, line, seen, called, joined, lapsed, served, active, released, departed]
        with redis_errors():
            await self._room_record(keys=keys, args=args)

    async def room_state(self, room: RoomPolicy) -> RoomState:
        args = [round(room.window * MICROS), script_time(self._clock), round(room.ttl * MICROS)]
        with redis_errors():
            in_window, blocked, active = await self._room_state(keys=self.room_keys(room.name)[:3], args=args)
        return RoomState(int(in_window), blocked / MICROS, int(active))

    async def unblock(self, room: str) -> bool:
        with redis_errors():
            return bool(await self._client.delete(self.room_keys(room)[1]))


def _inside(reply: list[int]) -> Inside:
    """A script's {active, departures, µs covered, µs since the last} (none: a room without
    max_active)."""
    if len(reply) < 4:
        return NOBODY_INSIDE
    active, departed, span, silent = reply
    return Inside(int(active), int(departed), span / MICROS, silent / MICROS)
