"""The crowd in-process: a flash crowd of waiting visitors driven through the real deciders and the
real Redis scripts, with no HTTP (issue 28).

    python bench/crowd_sim.py [--sizes 10000,100000] [--quick] [--json]

Each visitor arrives within ARRIVAL_S (a flash crowd), gets a ticket from one of two replicas
(`waitroom.sim.replica.Replica`: the product's Decider, its Line and its RedisStore, on one
dedicated `redis-server`), then polls at the interval each wait answer carries (jittered as the
wait page does, ×0.7–1.3) until it is admitted. The clock is virtual (the scripts get it as their
"now"), so a minute of a million visitors is simulated as fast as Python and Redis go; every per
second figure is per *simulated* second, which is what the same load would cost in real time.

Each size runs twice on a fresh room, side by side: "today" (max_retry_after = retry_after, no line
view) and "new" (max_retry_after MAX_RETRY_AFTER, the line view on). Where this checkout has no
such knobs yet, "new" is reported as not available. Figures, each over the measured span (after
the arrivals):
- poll requests per second, per 1,000 waiting visitors;
- Redis calls (INFO commandstats: EVALSHA/EVAL) and Redis CPU (INFO cpu) per simulated second;
- Redis calls per poll of a ticket that cannot be called yet (its place is beyond what the room
  can call before its next poll), calls made outside any poll (batched heartbeats, the view's
  refresh) shared over those polls;
- the worst order inversion (someone let in after a later ticket), ETA error at arrival (median,
  over the visitors admitted during the run), most admissions in any window (across replicas);
- Redis memory per waiting visitor (INFO memory before and after the arrivals; MEMORY USAGE of
  the line's keys).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import hashlib
import heapq
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from harness import redis_server

from waitroom.config.schema import Config, RoomConfig, StoreConfig
from waitroom.rooms.sessions import SessionCodec, cookie_name
from waitroom.sim.clock import VirtualClock
from waitroom.sim.engine import crowd_address
from waitroom.sim.replica import Kind, Replica, Request
from waitroom.store.redis import RedisStore

ROOM = "crowd"
NEW_SESSIONS = 1000
WINDOW_S = 10
"""1,000 per 10 s: the issue's line "admitting 100/s" (called tickets hold places until used)."""
RETRY_AFTER = 5
"""The shipped poll interval of the issue's figures: 0.2 polls per second per waiting visitor."""
MAX_RETRY_AFTER = 60
ARRIVAL_S = 10.0
"""The flash crowd: every visitor arrives within this many seconds."""
MEASURE_S = {"today": 2 * RETRY_AFTER, "new": MAX_RETRY_AFTER + 10}
"""How long each policy is measured after the arrivals: at least one of its longest poll intervals
(×1.3 jitter), so that every waiting visitor polls in it."""
SETTLE_S = 1.3 * RETRY_AFTER
"""After the arrivals, before measuring: every arrival's first poll under today's policy."""
TICK = 0.05
"""Requests due within one tick are decided concurrently (their Redis calls pipelined), at the tick's
time: the figures' time resolution."""
FAR_BANDS = (("2k-5k", 5_000), ("5k-10k", 10_000), ("10k+", 10**12))
"""Far-back polls by how far behind the head (tickets), for the calls they cost."""
VIEW_FLUSH_EVERY = 1.0
"""As the proxy's line view flushes its heartbeats (rooms/line_view.FLUSH_EVERY)."""
SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (3_000,)
QUICK_MEASURE_S = {"today": 7.0, "new": 15.0}
"""--quick (the smoke test's): the machinery, not the figures."""
TODAY_UP_TO = 100_000
"""Larger lines run the new policy only: today's would be 200,000 polls per simulated second, every
one a Redis call by construction (1.0 per poll), for minutes of this machine per simulated second."""
SEED = 28

_poll_kind: contextvars.ContextVar[str] = contextvars.ContextVar("poll_kind", default="")
"""What the request being decided is ("far": a poll of a ticket that cannot be called yet; "near";
"arrival"): the store wrapper counts each Redis call under it ("" outside any request)."""


def knobs() -> dict[str, bool]:
    """What this checkout offers of issue 28's item 1 and 2."""
    return {
        "max_retry_after": "max_retry_after" in RoomConfig.model_fields,
        "line_view": "line_view" in StoreConfig.model_fields,
    }


def room_settings(policy: str, available: dict[str, bool]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The room's and the store's settings of a policy: "today" (every poll at retry_after, every
    poll a store call) or "new" (issue 28's defaults); None: "new" cannot be expressed here."""
    room: dict[str, Any] = {}
    store: dict[str, Any] = {}
    if policy == "today":
        if available["max_retry_after"]:
            room["max_retry_after"] = f"{RETRY_AFTER}s"
        if available["line_view"]:
            store["line_view"] = False
        return room, store
    if not (available["max_retry_after"] or available["line_view"]):
        return None
    if available["max_retry_after"]:
        room["max_retry_after"] = f"{MAX_RETRY_AFTER}s"
    if available["line_view"]:
        store["line_view"] = True
    return room, store


def config(redis_url: str, policy: str, available: dict[str, bool]) -> Config | None:
    """The room under test; None: the policy cannot be expressed in this checkout."""
    settings = room_settings(policy, available)
    if settings is None:
        return None
    room_extra, store_extra = settings
    room: dict[str, Any] = {
        "name": ROOM,
        "match": {"path_prefix": "/"},
        "queue": "fifo",
        "new_sessions": NEW_SESSIONS,
        "window": f"{WINDOW_S}s",
        "retry_after": f"{RETRY_AFTER}s",
        **room_extra,
    }
    store = {"url": redis_url, "key_prefix": f"crowd-{policy}", **store_extra}
    return Config.model_validate({"store": store, "rooms": [room]})


class BatchedRedis:
    """The store's scripts, counted and sent in pipelines: each script call is counted under the
    request that made it (_poll_kind), and waits until the tick's requests have all made theirs or
    finished; then one pipeline carries them (flush). The product's own pipelined connection does
    the same per event-loop turn; this makes a tick of thousands of requests one round trip, so a
    million visitors take a minute of this machine rather than several."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.calls: dict[str, int] = {}
        self.pending: list[tuple[str, list[Any], list[Any], asyncio.Future[Any]]] = []
        self.sources: dict[str, str] = {}

    def wrap(self, store: RedisStore) -> None:
        rooms = store.rooms
        for name, value in list(vars(rooms).items()):
            if name.startswith("_") and callable(value) and hasattr(value, "sha"):
                self.sources[value.sha] = value.source
                self.client.script_load(value.source)
                setattr(rooms, name, self._batched(value.sha))

    def _batched(self, sha: str) -> Any:
        async def call(keys: list[Any], args: list[Any]) -> Any:
            kind = _poll_kind.get()
            self.calls[kind] = self.calls.get(kind, 0) + 1
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.pending.append((sha, keys, args, future))
            return await future

        call.sha = sha  # type: ignore[attr-defined]
        return call

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        with self.client.pipeline(transaction=False) as pipe:
            for sha, keys, args, _ in pending:
                pipe.evalsha(sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
        for (_, _, _, future), reply in zip(pending, replies, strict=True):
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


@dataclass
class Visitors:
    """The crowd, one list entry per visitor (a million objects would cost more than the lists)."""

    arrived: list[float]
    jar: list[str] = field(default_factory=list)
    ticket: list[int] = field(default_factory=list)
    eta: list[float] = field(default_factory=list)
    admitted: list[float] = field(default_factory=list)
    interval: list[int] = field(default_factory=list)
    """The last wait answer's Retry-After."""

    def __post_init__(self) -> None:
        n = len(self.arrived)
        self.jar = [""] * n
        self.ticket = [0] * n
        self.eta = [-1.0] * n
        self.admitted = [-1.0] * n
        self.interval = [0] * n


def _redis_figures(client: redis.Redis) -> dict[str, float]:
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    scripts = [stats.get(f"cmdstat_{c}", {}) for c in ("evalsha", "eval", "evalsha_ro", "eval_ro")]
    return {
        "calls": float(sum(s.get("calls", 0) for s in scripts)),
        "script_usec": float(sum(s.get("usec", 0) for s in scripts)),
        "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "memory": float(client.info("memory")["used_memory"]),
    }


def _ticket_number(codec: SessionCodec, token: str, now: float) -> int:
    found = codec.ticket(token, ROOM, now + 1, "crowd")
    return int(found.issued_at) if found is not None else 0


class CrowdReplica(Replica):
    """The simulator's replica, as the proxy runs it: its Line keeps its line view (the simulator
    drops it, its flushes being on real-time timers: here they run on the simulated clock, see
    Run.until), and a waiting ticket is answered with its own poll interval (the Decision's
    retry_after, which the proxy puts in Retry-After) rather than the room's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        line = self.decider.line
        if getattr(self.config.store, "line_view", False) and not self.config.store.url.startswith(
            "memory://"
        ):
            from waitroom.rooms.line_view import LineView  # not in a checkout without issue 28

            line.view = LineView(line.store, line.clock)

    def _room_reply(self, reply: Any, request: Request, room: RoomConfig, decision: Any) -> None:
        super()._room_reply(reply, request, room, decision)
        if reply.kind is Kind.WAITING and getattr(decision, "retry_after", 0):
            reply.retry_after = decision.retry_after


class Run:
    """One size under one policy: the crowd, two replicas, the store, the virtual clock."""

    def __init__(self, size: int, policy: str, cfg: Config, redis_port: int, quick: bool = False) -> None:
        self.size, self.policy, self.config = size, policy, cfg
        self.spans = QUICK_MEASURE_S if quick else MEASURE_S
        self.client = redis.Redis(port=redis_port)
        self.client.flushall()
        self.clock = VirtualClock(1_800_000_000.0)
        self.start = self.clock.now
        self.store = RedisStore.from_config(cfg.store, self.clock)
        self.counting = BatchedRedis(self.client)
        self.counting.wrap(self.store)
        self.codec = SessionCodec([hashlib.sha256(b"crowd bench").digest()], cfg.session.ttl)
        ids = iter(range(1, 10**9))
        self.replicas = [
            CrowdReplica(
                i,
                cfg,
                self.store,
                self.codec,
                None,
                self.clock,
                replicas=2,
                ids=lambda: f"c{next(ids)}",
                sleep=self._sleep,
                schedule_flush=lambda _replica: None,
            )
            for i in range(2)
        ]
        # The line views' batched heartbeats run on the simulated clock (flush_views), not on a
        # real-time timer.
        self.views = [v for r in self.replicas if (v := getattr(r.decider.line, "view", None)) is not None]
        for view in self.views:
            view.schedule_flush = lambda: None
        self.next_flush = self.start + VIEW_FLUSH_EVERY
        self.room = cfg.rooms[0]
        self.cookie = cookie_name(cfg, self.room)
        rng = random.Random(SEED)
        self.rng = rng
        # A line of `size`: the first new_sessions of the crowd go straight in. Then newcomers keep
        # coming at the room's rate, so that the line keeps its length while it is measured (a line
        # of 1k admitting 100/s would otherwise be gone in 10 s).
        crowd = size + NEW_SESSIONS
        flash = sorted(self.start + rng.uniform(0, ARRIVAL_S) for _ in range(crowd))
        rate = NEW_SESSIONS / WINDOW_S
        steady = int(rate * (SETTLE_S + self.spans[policy]))
        then = [self.start + ARRIVAL_S + k / rate for k in range(steady)]
        self.crowd = Visitors(flash + then)
        self.due: list[tuple[float, int]] = [(t, i) for i, t in enumerate(self.crowd.arrived)]
        heapq.heapify(self.due)
        self.admissions: list[float] = []
        self.head = 0
        """Tickets below this number are all admitted (the head of the line, as ground truth)."""
        self._admitted_numbers: set[int] = set()
        self.errors: dict[str, int] = {}
        self.answers: dict[str, int] = {}
        self.polls: dict[str, int] = {}
        self.measuring = False
        self._kept = time.monotonic()
        self.intervals: dict[int, int] = {}
        """Wait answers by the poll interval they gave."""

    async def _sleep(self, seconds: float) -> None:  # a `delay` rule's: none here
        return None

    def _distance(self, i: int) -> str:
        """ "near", or a band of "far": a ticket the room cannot call before this poll is answered,
        more than twice new_sessions behind the head (the window's places and the called tickets
        are at most new_sessions in all)."""
        number = self.crowd.ticket[i]
        behind = number - self.head
        if number <= 0 or behind <= 2 * NEW_SESSIONS:
            return "near"
        return next(f"far:{band}" for band, upto in FAR_BANDS if behind <= upto)

    async def _one(self, i: int) -> None:
        c = self.crowd
        first = c.jar[i] == ""
        kind = "arrival" if first else self._distance(i)
        if self.measuring and not first:
            self.polls[kind] = self.polls.get(kind, 0) + 1
        _poll_kind.set(kind)
        request = Request("GET", "shop.test", "/", "crowd", crowd_address(i), poll=not first)
        token = c.jar[i]
        replica = self.replicas[i % 2]
        try:
            reply = await replica.answer(
                request, lambda name: (token,) if token and name == self.cookie else ()
            )
        except Exception as e:  # counted, never a crash of the bench: the figure says it
            self.errors[type(e).__name__] = self.errors.get(type(e).__name__, 0) + 1
            return
        now = self.clock.now
        self.answers[reply.kind.value] = self.answers.get(reply.kind.value, 0) + 1
        if reply.kind is Kind.FAILED:
            self.errors[reply.error or "failed"] = self.errors.get(reply.error or "failed", 0) + 1
            heapq.heappush(self.due, (now + RETRY_AFTER, i))
            return
        if reply.kind in (Kind.ADMITTED, Kind.FORWARDED):
            c.admitted[i] = now
            self.admissions.append(now)
            self._admitted_numbers.add(c.ticket[i])
            while self.head + 1 in self._admitted_numbers:
                self.head += 1
                self._admitted_numbers.discard(self.head)
            return
        for name, value, _ in reply.cookies:
            if name == self.cookie and value:
                c.jar[i] = value
                if c.ticket[i] == 0:
                    c.ticket[i] = _ticket_number(self.codec, value, now)
        if first and reply.place is not None and reply.place.estimate.seconds is not None:
            c.eta[i] = float(reply.place.estimate.seconds)
        interval = max(1, reply.retry_after or RETRY_AFTER)
        c.interval[i] = interval
        self.intervals[interval] = self.intervals.get(interval, 0) + 1
        heapq.heappush(self.due, (now + interval * (0.7 + 0.6 * self.rng.random()), i))

    async def _batch(self, batch: Sequence[int]) -> None:
        await self._together([self._one(i) for i in batch])

    async def _together(self, work: Sequence[Any]) -> None:
        """Coroutines at once; their script calls in one pipeline each time all of them are either
        waiting for their call's answer or done."""
        tasks = [asyncio.ensure_future(w) for w in work]
        idle = 0
        while True:
            await asyncio.sleep(0)
            running = sum(not t.done() for t in tasks)
            pending = len(self.counting.pending)
            if not running and not pending:
                break
            if pending and pending >= running:
                self.counting.flush()
                idle = 0
                continue
            idle += 1
            if idle > 3:
                if pending:
                    self.counting.flush()
                else:  # waiting for something else (a real-time timer, another connection)
                    await asyncio.wait([t for t in tasks if not t.done()], timeout=0.001)
                idle = 0
        for task in tasks:
            task.result()

    async def until(self, end: float) -> None:
        """Decide every request due before `end`, a tick at a time."""
        while self.due and self.due[0][0] < end:
            if self.views and self.next_flush <= self.due[0][0]:
                self.clock.advance(self.next_flush)
                self.next_flush += VIEW_FLUSH_EVERY
                await self._together([view.flush() for view in self.views])
                continue
            tick = self.due[0][0] + TICK
            batch = []
            while self.due and self.due[0][0] < tick:
                batch.append(heapq.heappop(self.due)[1])
            self.clock.advance(tick)
            await self._batch(batch)
            self._keep_keys()
        self.clock.advance(end)

    def _keep_keys(self) -> None:
        """Redis expires keys in real time, and a simulated second can take longer than a real one
        (a million visitors): the room's keys, whose expiry every script call renews in simulated
        terms, are kept here as the same calls would keep them in real time. Every few real seconds,
        never more: ~10 keys (the line's visitors are members of them, not keys)."""
        wall = time.monotonic()
        if wall - self._kept < 2.0:
            return
        self._kept = wall
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.client.scan_iter(match=f"crowd-{self.policy}:*", count=1000):
                pipe.execute_command("PEXPIRE", key, 120_000, "GT")
            pipe.execute()

    def waiting(self) -> int:
        """Visitors arrived and not let in."""
        now = self.clock.now
        return sum(
            1 for t, a in zip(self.crowd.arrived, self.crowd.admitted, strict=True) if t < now and a < 0
        )

    async def run(self) -> dict[str, Any]:
        wall = time.perf_counter()
        before = _redis_figures(self.client)
        arrivals_end = self.start + ARRIVAL_S
        await self.until(arrivals_end)
        arrived = _redis_figures(self.client)
        waiting_after_arrivals = self.waiting()
        line_keys = [k for k in self.client.scan_iter(match=f"crowd-{self.policy}:*", count=10_000)]
        line_bytes = sum(int(self.client.memory_usage(k, samples=0) or 0) for k in line_keys)
        measure_from = arrivals_end + SETTLE_S
        await self.until(measure_from)
        waiting_at_start = self.waiting()
        calls0 = dict(self.counting.calls)
        self.measuring = True
        start = _redis_figures(self.client)
        span = self.spans[self.policy]
        await self.until(measure_from + span)
        end = _redis_figures(self.client)
        self.measuring = False
        waiting_at_end = self.waiting()
        await self.store.close()
        calls = {k: v - calls0.get(k, 0) for k, v in self.counting.calls.items()}
        mean_waiting = (waiting_at_start + waiting_at_end) / 2
        polls = sum(self.polls.values())
        far = sum(n for k, n in self.polls.items() if k.startswith("far"))
        far_calls = sum(n for k, n in calls.items() if k.startswith("far"))
        outside = calls.get("", 0)
        bands = {
            band: {
                "polls": self.polls.get(f"far:{band}", 0),
                "calls_per_poll": round(calls.get(f"far:{band}", 0) / self.polls[f"far:{band}"], 4)
                if self.polls.get(f"far:{band}")
                else None,
            }
            for band, _ in FAR_BANDS
        }
        in_window = _most_in_window(self.admissions, WINDOW_S)
        figures = {
            "visitors": self.size,
            "policy": self.policy,
            "measured_s": span,
            "waiting_mean": round(mean_waiting),
            "polls_per_s": round(polls / span, 1),
            "polls_per_s_per_1k_waiting": round(1000 * polls / span / mean_waiting, 2)
            if mean_waiting
            else None,
            "redis_calls_per_s": round((end["calls"] - start["calls"]) / span, 1),
            "redis_cpu_per_s": round((end["cpu"] - start["cpu"]) / span, 4),
            "redis_script_ms_per_s": round((end["script_usec"] - start["script_usec"]) / span / 1000, 2),
            "far_polls": far,
            "redis_calls_per_far_poll": round((far_calls + outside) / far, 4) if far else None,
            "redis_calls_in_far_polls": far_calls,
            "far_bands": bands,
            "redis_calls_outside_polls": outside,
            "arrival_redis_cpu_per_s": round((arrived["cpu"] - before["cpu"]) / ARRIVAL_S, 3),
            "arrival_redis_calls_per_s": round((arrived["calls"] - before["calls"]) / ARRIVAL_S, 1),
            "redis_bytes_per_visitor": round((arrived["memory"] - before["memory"]) / self.size),
            "line_keys_bytes_per_visitor": round(line_bytes / self.size),
            "flash_arrivals": self.size + NEW_SESSIONS,
            "then_arrivals_per_s": NEW_SESSIONS / WINDOW_S,
            "waiting_after_arrivals": waiting_after_arrivals,
            "admitted": len(self.admissions),
            "admitted_per_s": round(sum(1 for t in self.admissions if t >= measure_from) / span, 1),
            "most_in_window": in_window,
            "new_sessions": NEW_SESSIONS,
            "worst_order_inversion_s": _worst_inversion(self.crowd),
            "order_bound_s": round(1.3 * RETRY_AFTER + TICK, 2),
            **_eta_error(self.crowd),
            "answers": self.answers,
            "errors": self.errors,
            "intervals": {str(k): v for k, v in sorted(self.intervals.items())},
            "wall_s": round(time.perf_counter() - wall, 1),
        }
        return figures


def _most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    for j, t in enumerate(times):
        i = bisect.bisect_right(times, t - window)
        best = max(best, j - i + 1)
    return best


def _worst_inversion(crowd: Visitors) -> float:
    """The longest anyone was let in after a visitor with a later ticket (admissions only)."""
    pairs = sorted((n, a) for n, a in zip(crowd.ticket, crowd.admitted, strict=True) if n > 0 and a >= 0)
    worst, earliest_later = 0.0, float("inf")
    for _, admitted in reversed(pairs):
        worst = max(worst, admitted - earliest_later)
        earliest_later = min(earliest_later, admitted)
    return round(worst, 2)


def _eta_error(crowd: Visitors) -> dict[str, Any]:
    """The wait shown at arrival against the real wait, of those admitted after waiting at least two
    head poll intervals (a shorter wait is within one poll's jitter of any estimate)."""
    errors = []
    for arrived, eta, admitted in zip(crowd.arrived, crowd.eta, crowd.admitted, strict=True):
        waited = admitted - arrived
        if admitted >= 0 and eta >= 0 and waited >= 2 * RETRY_AFTER:
            errors.append(abs(eta - waited) / waited)
    return {
        "eta_median_abs_error": round(statistics.median(errors), 3) if errors else None,
        "eta_samples": len(errors),
    }


def measure(sizes: Sequence[int], work: Path, quick: bool = False) -> dict[str, Any]:
    available = knobs()
    runs: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        port = stack.enter_context(redis_server(work))
        url = f"redis://127.0.0.1:{port}/0"
        for size in sizes:
            for policy in ("today", "new"):
                key = f"{policy}-{size}"
                cfg = config(url, policy, available)
                if cfg is None:
                    runs[key] = {"visitors": size, "policy": policy, "not_available": True}
                    continue
                if policy == "today" and size > TODAY_UP_TO:
                    runs[key] = {"visitors": size, "policy": policy, "not_run": True}
                    continue
                print(f"crowd: {size:,} visitors, {policy} ...", flush=True)
                runs[key] = asyncio.run(Run(size, policy, cfg, port, quick).run())
                print(f"crowd:   {json.dumps(_short(runs[key]))}", flush=True)
    return {
        "available": available,
        "quick": quick,
        "room": room_report(NEW_SESSIONS, WINDOW_S, ARRIVAL_S),
        "sizes": list(sizes),
        "runs": runs,
    }


def room_report(new_sessions: int, window_s: float, arrival_s: float) -> dict[str, Any]:
    """The room a crowd part ran against, as its report states it (2 replicas, both policies' knobs)."""
    return {
        "new_sessions": new_sessions,
        "window_s": window_s,
        "retry_after_s": RETRY_AFTER,
        "max_retry_after_s": MAX_RETRY_AFTER,
        "arrival_s": arrival_s,
        "replicas": 2,
    }


def _short(run: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "polls_per_s_per_1k_waiting",
        "redis_calls_per_s",
        "redis_cpu_per_s",
        "redis_calls_per_far_poll",
        "worst_order_inversion_s",
        "eta_median_abs_error",
        "most_in_window",
        "redis_bytes_per_visitor",
        "errors",
        "wall_s",
    )
    return {k: run.get(k) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", help="comma-separated crowd sizes (default: 1k, 10k, 100k, 1M)")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    sizes = (
        tuple(int(s) for s in args.sizes.split(",")) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    )
    with tempfile.TemporaryDirectory(prefix="waitroom-crowd-") as tmp:
        figures = measure(sizes, Path(tmp), args.quick)
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
