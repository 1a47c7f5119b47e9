"""A manual check (not in `make test`): a `fifo` line of a million tickets in a real redis-server
answers each call in bounded time, and what a waiting ticket costs in Redis memory.

    PYTHONPATH=src .venv/bin/python bench/line_million.py [--tickets 1000000]

The line is filled through room_queue.lua's own keys in pipelined batches (a million asks one by one
would take minutes), then timed: an ask at the head, one at the end, a newcomer, the batched
heartbeat of 1,000 tickets, the line's state; and `INFO memory` per ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tests.support import RedisServer
from waitroom.store.base import QueuePolicy
from waitroom.store.redis import RedisStore
from waitroom.store.redis_client import client_from_url

AFTER_OPENING = 2**48


async def main(tickets: int) -> None:
    server = RedisServer(Path(tempfile.mkdtemp()))
    try:
        store = RedisStore.for_url(server.url, 10.0, "m")
        room = QueuePolicy("big", 100, 60.0, 600.0, 600.0, retry_after=5.0, max_retry_after=60.0)
        await store.queue(room, "first")  # admitted: creates the keys
        client = client_from_url(server.url, 10.0)
        before = int((await client.info("memory"))["used_memory"])
        tag = "m:{room:big}"
        now = int(time.time() * 1_000_000)
        for start in range(0, tickets, 10_000):
            pipe = client.pipeline(transaction=False)
            ids = [f"t{i:07d}-xxxxxxxxxxxxxxxx" for i in range(start, min(tickets, start + 10_000))]
            pipe.zadd(f"{tag}:line", {sid: AFTER_OPENING + start + k + 1 for k, sid in enumerate(ids)})
            pipe.zadd(f"{tag}:seen", {sid: now + 60_000_000 for sid in ids})
            pipe.hset(f"{tag}:joined", mapping=dict.fromkeys(ids, now))
            await pipe.execute()
        await client.set(f"{tag}:tickets", tickets)
        after = int((await client.info("memory"))["used_memory"])
        print(f"{tickets} tickets: {(after - before) / tickets:.0f} bytes of Redis memory per waiting ticket")
        for what, call in (
            ("ask at the head", lambda: store.queue(room, "t0000000-xxxxxxxxxxxxxxxx")),
            ("ask at the end", lambda: store.queue(room, f"t{tickets - 1:07d}-xxxxxxxxxxxxxxxx")),
            ("a newcomer", lambda: store.queue(room, f"new-{time.monotonic_ns()}")),
            (
                "heartbeat x1000",
                lambda: store.still_here(
                    room,
                    [
                        (f"t{i:07d}-xxxxxxxxxxxxxxxx", 60.0)
                        for i in range(0, tickets, max(1, tickets // 1000))
                    ],
                ),
            ),
            ("queue_state", lambda: store.queue_state(room)),
        ):
            spent = []
            for _ in range(20):
                begin = time.perf_counter()
                await call()
                spent.append(time.perf_counter() - begin)
            spent.sort()
            print(f"{what:>16}: median {spent[10] * 1000:.2f} ms, worst {spent[-1] * 1000:.2f} ms")
        stats = await client.info("commandstats")
        for name, row in stats.items():
            if name.startswith("cmdstat_evalsha") or name.startswith("cmdstat_eval"):
                print(f"{name}: {row}")
        await client.aclose()
        await store.close()
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().tickets))
