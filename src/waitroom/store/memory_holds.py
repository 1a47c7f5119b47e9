"""What each client address holds in a room (`places_per_ip`), in the embedded store: holds.lua's
keys, one table per room (store/base.py, "holds", says what counts as a place)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from waitroom.store.memory_line import BIG_TABLE, forget_expired_front


@dataclass(slots=True)
class MemoryHolds:
    """Client address hash → (session ids it holds a place under → when given, when the entry
    expires), in the order of expiry (all times µs): as holds.lua's keys, an address's entry goes
    `ttl` after its last ask, and every count drops the ids that are no place any more."""

    table: OrderedDict[str, tuple[dict[str, int], int]] = field(default_factory=OrderedDict)
    _grew: bool = False

    def count(self, client: str, now: int, ttl: int, alive: Callable[[str], bool]) -> int:
        """The places `client` holds now (its entry kept `ttl` µs longer: the address asked)."""
        self.forget_expired(now)
        held, until = self.table.pop(client, ({}, 0))
        if until <= now:
            held = {}
        for sid in [sid for sid in held if not alive(sid)]:
            del held[sid]
        if held:
            self.table[client] = (held, now + ttl)  # to the end: the latest expiry
        return len(held)

    def keep(self, client: str, now: int, ttl: int) -> None:
        """The address asked: its entry stays `ttl` µs longer (as PEXPIRE does)."""
        entry = self.table.pop(client, None)
        if entry is not None and entry[1] > now:
            self.table[client] = (entry[0], now + ttl)

    def add(self, client: str, session_id: str, now: int, ttl: int) -> None:
        held, until = self.table.pop(client, ({}, 0))
        if until <= now:
            held = {}
        held[session_id] = now
        self.table[client] = (held, now + ttl)
        self._grew = self._grew or len(self.table) > BIG_TABLE

    def forget_expired(self, now: int) -> None:
        """Drop up to PRUNE_BATCH expired entries from the front (no operation stalls the loop)."""
        table = self.table
        forget_expired_front(table, now)
        if not table and self._grew:  # a dict never gives back its size: a new one does
            self.table, self._grew = OrderedDict(), False
