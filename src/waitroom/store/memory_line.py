"""A `fifo` room's line in the embedded store: tickets in order, who asked when, who was called.

Its own module so that memory_rooms.py, which runs the line, stays readable (issue 17)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Line:
    """A `fifo` room's line, as the Redis keys of room_queue.lua hold it (all times in µs)."""

    numbers: list[int] = field(default_factory=list)
    """Live ticket numbers, ascending: a ticket's position is a bisection."""
    tickets: dict[str, int] = field(default_factory=dict)
    """Session id → ticket number."""
    holders: dict[int, str] = field(default_factory=dict)
    """Ticket number → session id."""
    seen: dict[str, int] = field(default_factory=dict)
    """Session id → last ask, in the order of the last ask (refreshing moves it to the end)."""
    called: dict[str, int] = field(default_factory=dict)
    """Session id → when its turn came, in the order called (always the head of the line)."""
    joined: dict[str, int] = field(default_factory=dict)
    counter: int = 0
    tickets_from: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Client address hash → (tickets this minute, when the minute ends)."""

    def leave(self, sid: str) -> None:
        number = self.tickets.pop(sid, None)
        if number is not None:
            del self.numbers[bisect.bisect_left(self.numbers, number)]
            del self.holders[number]
        self.seen.pop(sid, None)
        self.called.pop(sid, None)
        self.joined.pop(sid, None)

    def drop_stale(self, now: int, abandon_after: int, grace: int) -> None:
        """Abandoned tickets (oldest ask first), then called ones left unused (earliest call first)."""
        for table, limit in ((self.seen, now - abandon_after), (self.called, now - grace)):
            stale = []
            for sid, at in table.items():
                if at > limit:
                    break
                stale.append(sid)
            for sid in stale:
                self.leave(sid)

    def call(self, free: int, now: int) -> int:
        """Call the next `free` uncalled tickets, in order; how many were called."""
        done = 0
        for number in self.numbers[: len(self.called) + max(0, free)]:
            sid = self.holders[number]
            if done < free and sid not in self.called:
                self.called[sid] = now
                done += 1
        return done

    def join(self, sid: str, now: int, number: int) -> None:
        self.tickets[sid] = number
        self.holders[number] = sid
        bisect.insort(self.numbers, number)
        self.seen[sid] = now
        self.joined[sid] = now
