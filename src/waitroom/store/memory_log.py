"""A room's admission log in the embedded store: the admissions inside its window, oldest first,
indexed by session id, so that no decision scans it (a window may hold a million admissions)."""

from __future__ import annotations

import bisect

COMPACT_AFTER = 4096
"""Pruned entries kept at the front of the list before it is compacted (amortised O(1) per entry)."""


class AdmissionLog:
    """(admission time in µs, session id), oldest first, as the Redis `log` sorted set holds them.

    "Was this id admitted?" is a dict lookup, the count is `len`, the k-th oldest entry an index:
    each O(1) whatever the window holds. Pruning drops entries from the front of a list (a head
    offset, compacted now and then), so an index stays O(1) where a deque's is O(n) in the middle.
    It has no iterator on purpose: a decision that walked the log would cost O(window)."""

    __slots__ = ("_at", "_entries", "_head")

    def __init__(self) -> None:
        self._entries: list[tuple[int, str]] = []
        self._head = 0
        self._at: dict[str, int] = {}
        """Session id → its admission time, for every entry from `_head` on."""

    def __len__(self) -> int:
        return len(self._entries) - self._head

    def __getitem__(self, index: int) -> tuple[int, str]:
        """The `index`-th oldest entry (0: the oldest)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._entries[self._head + index]

    __iter__ = None
    """Not iterable (an index alone would make it so): use when(), len() and an index."""

    def when(self, session_id: str) -> int | None:
        """When `session_id` was admitted, if it is in the log."""
        return self._at.get(session_id)

    def add(self, at: int, session_id: str) -> None:
        """Log an admission (an id not in the log). In time order: at the end, unless the clock
        stepped back or it was made elsewhere earlier (record), when it is put in its place."""
        entries = self._entries
        if len(entries) > self._head and at < entries[-1][0]:
            bisect.insort(entries, (at, session_id), lo=self._head)
        else:
            entries.append((at, session_id))
        self._at[session_id] = at

    def prune(self, cutoff: int) -> None:
        """Drop the admissions at or before `cutoff` (µs): they have left the window."""
        entries, head = self._entries, self._head
        while head < len(entries) and entries[head][0] <= cutoff:
            at, session_id = entries[head]
            if self._at.get(session_id) == at:
                del self._at[session_id]
            head += 1
        if head > max(COMPACT_AFTER, len(entries) // 2):
            del entries[:head]
            head = 0
        self._head = head

    def entries(self) -> list[tuple[int, str]]:
        """Every entry, oldest first (a copy; for writing the log elsewhere, never for a decision)."""
        return self._entries[self._head :]
