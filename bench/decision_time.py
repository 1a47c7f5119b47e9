"""The embedded store's decision time as a room's window fills: µs per decision with 1k, 100k and
1M admissions in the window (issue 27, N6). No decision scans the admission log, so the figures
stay flat; `ratio` is the largest size's time over the smallest's (the target: at most 2).

    PYTHONPATH=src .venv/bin/python bench/decision_time.py [--sizes 1000,100000,1000000]

Run by `make bench` (bench/run.py) for BENCHMARKS.md. One process, no network: the store alone.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from waitroom.store.base import QueuePolicy, RoomPolicy
from waitroom.store.memory_rooms import MemoryRooms

SIZES = (1_000, 100_000, 1_000_000)
DECISIONS = 2_000
"""Decisions timed per kind and size (bounded: the whole run takes seconds)."""


def _per_decision(action: Any, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return (time.perf_counter() - started) / count * 1e6


def measure(size: int) -> dict[str, float]:
    """µs per decision with `size` admissions in the window (which is full: newcomers wait)."""
    now = [1_000.0]
    rooms = MemoryRooms(lambda: now[0])
    block = RoomPolicy("block", size, 3600.0, 0.0)
    line = QueuePolicy("line", size, 3600.0, 3600.0, 60.0)
    for i in range(size):
        rooms.admit(block, f"a{i}")
        rooms.queue(line, f"q{i}")  # a place at once: admitted, logged
    for i in range(DECISIONS):
        rooms.queue(line, f"t{i}")  # tickets in line, asked again below
    return {
        "admit_newcomer_us": _per_decision(lambda i: rooms.admit(block, f"n{i}"), DECISIONS),
        "admit_again_us": _per_decision(lambda i: rooms.admit(block, f"a{i * 7 % size}"), DECISIONS),
        "queue_newcomer_us": _per_decision(lambda i: rooms.queue(line, f"m{i}"), DECISIONS),
        "queue_ticket_us": _per_decision(lambda i: rooms.queue(line, f"t{i}"), DECISIONS),
        "room_state_us": _per_decision(lambda i: rooms.room_state(block), DECISIONS),
        "queue_state_us": _per_decision(lambda i: rooms.queue_state(line), 200),
    }


def run(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    figures = {str(size): {k: round(v, 2) for k, v in measure(size).items()} for size in sizes}
    first, last = figures[str(sizes[0])], figures[str(sizes[-1])]
    decisions = ("admit_newcomer_us", "admit_again_us", "queue_newcomer_us", "queue_ticket_us")
    ratio = max(last[k] / first[k] for k in decisions)
    return {"sizes": list(sizes), "figures": figures, "ratio": round(ratio, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    sizes = tuple(int(s) for s in parser.parse_args().sizes.split(","))
    print(json.dumps(run(sizes), indent=2))


if __name__ == "__main__":
    main()
