"""A `fifo` room's line in the embedded store: tickets in order, who asked when, who was called."""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from dataclasses import dataclass, field

MINUTE = 60_000_000
"""µs: the period of tickets_per_ip."""
PRUNE_BATCH = 256
"""Addresses whose minute has passed that one operation forgets, at most (each adds at most one)."""
BIG_TABLE = 4096
"""A table that grew past this many addresses is replaced once empty, so its memory goes back."""


@dataclass(slots=True)
class MemoryLine:
    """A `fifo` room's line, as the Redis keys of room_queue.lua hold it (all times in µs)."""

    numbers: list[int] = field(default_factory=list)
    """Live ticket numbers, ascending: a ticket's position is a bisection."""
    tickets: dict[str, int] = field(default_factory=dict)
    """Session id → ticket number."""
    holders: dict[int, str] = field(default_factory=dict)
    """Ticket number → session id."""
    seen: dict[str, int] = field(default_factory=dict)
    """Session id → when it is due back: its last ask plus the poll interval it was given."""
    dues: list[tuple[int, str]] = field(default_factory=list)
    """A heap of (due back, session id) over `seen`; an entry whose time is no longer the ticket's
    is skipped when it comes up (a refresh pushes a new one)."""
    called: dict[str, int] = field(default_factory=dict)
    """Session id → when its grace starts (its call, or its due-back time if later), in the order
    called (always the head of the line)."""
    calls: int = 0
    """Tickets called, ever (room_queue.lua's served counters)."""
    out: int = 0
    """Tickets that left the line, ever."""
    born: int = 0
    """When the line started (µs): its epoch (room_queue.lua's served "born")."""
    last_called: int = 0
    """The highest ticket number (as shown) called, ever (room_queue.lua's served marks)..."""
    last_lapsed: int = 0
    """... and the highest whose call lapsed or was given up, ever."""
    lapsed: dict[str, int] = field(default_factory=dict)
    """Session id → when its call lapsed: called, not used within grace, and not asked since. It
    keeps its number (room_queue.lua says why) and is not called again before its holder asks."""
    joined: dict[str, int] = field(default_factory=dict)
    last_ask: int = 0
    """When anyone last asked (µs): a silence that says nobody could reach the store (silent())
    moves the calls on."""
    silences: list[tuple[int, int]] = field(default_factory=list)
    """The outages replicas reported, (from, to) µs, the latest first (silences.lua): they count
    towards nobody's abandon_after."""
    counter: int = 0
    tickets_from: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)
    """Client address hash → (tickets this minute, when the minute ends), in the order the minutes
    end: entries whose minute has passed are dropped from the front (as Redis expires them). Ordered
    by a linked list: a plain dict's first key is O(deleted) to find after deletions at the front."""
    _table_grew: bool = False
    """`tickets_from` grew past BIG_TABLE since it was last made."""

    def new_ticket_from(self, client: str, now: int) -> tuple[int, int]:
        """One more new ticket for `client` (tickets_per_ip): its tickets this minute, with this
        one, and when the minute ends."""
        self.forget_passed_minutes(now)
        issued, until = self.tickets_from.get(client, (0, 0))
        if until <= now:  # a new minute goes last, where the latest end is
            self.tickets_from.pop(client, None)
            issued, until = 0, now + MINUTE
        self.tickets_from[client] = (issued + 1, until)  # a running minute keeps its place
        self._table_grew = self._table_grew or len(self.tickets_from) > BIG_TABLE
        return issued + 1, until

    def forget_passed_minutes(self, now: int) -> None:
        """Drop up to PRUNE_BATCH addresses whose minute has passed, from the front: the table
        holds only those that asked in the last minute (as Redis expires their keys), plus a
        backlog that every operation shrinks, and no operation stalls the loop on a big one."""
        table = self.tickets_from
        forget_expired_front(table, now)
        if not table and self._table_grew:  # a dict never gives back its size: a new one does
            self.tickets_from, self._table_grew = OrderedDict(), False

    def give_up(self, sid: str) -> None:
        """A called ticket gives its place up (released): the next in line gets it."""
        if sid in self.called:
            self.last_lapsed = max(self.last_lapsed, shown(self.tickets[sid]))
        self.leave(sid)

    def leave(self, sid: str) -> None:
        number = self.tickets.pop(sid, None)
        if number is not None:
            del self.numbers[bisect.bisect_left(self.numbers, number)]
            del self.holders[number]
            self.out += 1
        self.seen.pop(sid, None)
        self.called.pop(sid, None)
        self.lapsed.pop(sid, None)
        self.joined.pop(sid, None)

    def silent(self, now: int, grace: int, longer: int) -> bool:
        """Nobody could reach the store since the last ask (room_queue.lua's quiet()): nobody asked
        within half the grace after the first ticket due back since then, or with none due, within
        half the grace plus `longer` (what the longest poll interval adds)."""
        silence = now - self.last_ask
        if silence <= grace / 2:
            return False
        quiet = grace / 2 + longer
        first = min((due for due in self.seen.values() if due >= self.last_ask), default=None)
        if first is not None:
            quiet = min(quiet, first - self.last_ask + grace / 2)
        return silence > quiet

    def drop_stale(self, now: int, abandon_after: int, grace: int, longer: int = 0) -> None:
        """Abandoned tickets leave (oldest ask first); called ones left unused lapse (earliest call
        first); and the addresses whose tickets_per_ip minute has passed are forgotten."""
        self.forget_passed_minutes(now)
        if self.last_ask and self.silent(now, grace, longer):  # room_queue.lua says why
            silence = now - self.last_ask
            self.called = {sid: max(at + silence, now) for sid, at in self.called.items()}
        self.last_ask = now
        self.drop_abandoned(now, abandon_after)
        # Graces start at different times (a call, or a later due-back time): a scan of the called
        # tickets, at most new_sessions of them.
        for sid in [sid for sid, at in self.called.items() if at <= now - grace]:
            del self.called[sid]
            self.lapsed[sid] = now
            self.last_lapsed = max(self.last_lapsed, shown(self.tickets[sid]))

    def note_silence(self, start: int, end: int) -> None:
        """A replica reports an outage (silences.lua's silence_note): overlapping reports merge."""
        latest = self.silences[0] if self.silences else None
        if latest and start <= latest[1] and end >= latest[0]:
            self.silences[0] = (min(start, latest[0]), max(end, latest[1]))
        else:
            self.silences = [(start, end), *self.silences][:SILENCES_KEPT]

    def drop_abandoned(self, now: int, abandon_after: int) -> None:
        """Tickets due back more than abandon_after of heard time ago leave (the earliest due
        first)."""
        dues, limit = self.dues, abandon_cutoff(self.silences, now, abandon_after)
        while dues and dues[0][0] <= limit:
            due, sid = heapq.heappop(dues)
            if self.seen.get(sid) == due:
                self.leave(sid)

    def due_back(self, sid: str, at: int, *, later_only: bool = False) -> None:
        """`sid` is due back at `at` (with `later_only`, unless it is due later already)."""
        if later_only and self.seen.get(sid, at) > at:
            return
        self.seen[sid] = at
        heapq.heappush(self.dues, (at, sid))
        if len(self.dues) > 4 * len(self.seen) + 1024:  # superseded entries: rebuild now and then
            self.dues = [(due, member) for member, due in self.seen.items()]
            heapq.heapify(self.dues)

    def call(self, free: int, now: int) -> int:
        """Call the next `free` uncalled tickets, in order (not the lapsed ones); how many were
        called."""
        done = 0
        for number in self.numbers[: len(self.called) + len(self.lapsed) + max(0, free)]:
            sid = self.holders[number]
            if done < free and sid not in self.called and sid not in self.lapsed:
                self.called[sid] = max(now, self.seen.get(sid, now))  # room_queue.lua says why
                self.last_called = max(self.last_called, shown(number))
                done += 1
        self.calls += done
        return done

    def join(self, sid: str, now: int, number: int) -> None:
        self.tickets[sid] = number
        self.holders[number] = sid
        bisect.insort(self.numbers, number)
        self.due_back(sid, now)
        self.joined[sid] = now


SILENCES_KEPT = 8
"""Silences a line remembers (silences.lua)."""


def abandon_cutoff(silences: list[tuple[int, int]], now: int, abandon_after: int) -> int:
    """The due-back time at or before which a ticket is abandoned at `now`: abandon_after of heard
    time back from now, the silences (latest first) not counted (silences.lua)."""
    left, at = abandon_after, now
    for start, end in silences:
        stop = min(end, at)
        if stop > start:
            if at - stop >= left:
                return at - left
            left -= at - stop
            at = start
    return at - left


AFTER_OPENING = 2**48
"""Tickets numbered by the counter come after every pre-queue ticket (numbered by a 48-bit hash)."""


def shown(number: int) -> int:
    """The number a ticket shows (room_queue.lua's shown()): its place in arrival order; 0 for a
    pre-queue ticket, whose number is a hash."""
    return number - AFTER_OPENING if number >= AFTER_OPENING else 0


def forget_expired_front[K, V](table: OrderedDict[K, tuple[V, int]], now: int) -> None:
    """Drop up to PRUNE_BATCH entries `(value, expires)` whose time has passed, from the front of a
    table kept in the order of expiry: no operation stalls the loop on a big backlog."""
    for _ in range(PRUNE_BATCH):
        if not table or next(iter(table.values()))[1] > now:
            break
        table.popitem(last=False)
