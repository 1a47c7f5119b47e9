"""The crowd end to end: thousands of real waiting clients over 2 `waitroom serve` replicas and one
`redis-server`, on loopback (issue 28).

    python bench/crowd_e2e.py [--clients 5000] [--quick] [--json]

Each client is a light asyncio one (a raw keep-alive HTTP/1.1 connection, no client library): it
arrives within ARRIVAL_S (a flash crowd, round robin over the replicas), keeps the ticket cookie it
is given, and polls as the wait page does (`Waitroom-Poll: 1`, JSON) after the `Retry-After` of each
answer, jittered ×0.7–1.3, until it is let in. Every answer is classified: a ticket (a wait answer
that sets the room's ticket), shed (a wait answer without a ticket, with `Retry-After`), admitted,
another status (an error), or no answer within ANSWER_TIMEOUT_S (a hang).

Both policies run side by side as in crowd_sim.py ("today", and "new" where this checkout has the
knobs), each on fresh replicas and keys. Figures over the measured span, from the clients, from the
proxies' own metrics (/metrics on their admin ports) and from Redis (INFO).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from crowd_sim import MAX_RETRY_AFTER, RETRY_AFTER, knobs, room_report, room_settings
from fairness import ticket_number
from harness import (
    WAITROOM_SCRIPT,
    counter,
    histogram_count,
    mitmdump,
    nginx,
    ready,
    redis_server,
    scrape,
)

ROOM = "crowd"
NEW_SESSIONS = 50
WINDOW_S = 10
"""5 per second: the line of a few thousand stays a line for the whole run."""
ARRIVAL_S = 30.0
"""Within the replicas' rate of new visitors on this machine: the figures are of a line, not of a
flash crowd (flash_measure is)."""
MEASURE_S = {"today": 2 * RETRY_AFTER, "new": MAX_RETRY_AFTER + 10}
SETTLE_S = 1.3 * RETRY_AFTER
QUICK_ARRIVAL_S, QUICK_MEASURE_S = 2.0, 7
"""--quick: the machinery, not figures (the new policy's far-back polls come every minute)."""
ANSWER_TIMEOUT_S = 30.0
SECRET = "bench-secret-0123456789abcdef012"
CLIENTS = 5000
QUICK_CLIENTS = 300
FLASH, FLASH_S = 20_000, 10.0
QUICK_FLASH, QUICK_FLASH_S = 200, 2.0
"""New visitors of the flash crowd, each on a connection of its own (item 5 asks 100k in ~10 s: more
than this machine's open files and 2 cores can offer from one client process)."""


def raise_open_files(wanted: int) -> int:
    """The soft limit on open files raised towards `wanted` (up to the hard limit): each client is a
    connection here, and the replicas (started from this process) inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def config_text(redis_port: int, admin: int, policy: str, available: dict[str, bool]) -> str | None:
    settings = room_settings(policy, available)
    if settings is None:
        return None
    room_extra, store_extra = settings
    room = {
        "name": ROOM,
        "match": {"path_prefix": "/"},
        "queue": "fifo",
        "new_sessions": NEW_SESSIONS,
        "window": f"{WINDOW_S}s",
        "retry_after": f"{RETRY_AFTER}s",
        **room_extra,
    }
    store = {"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": f"e2e-{policy}", **store_extra}
    # JSON is YAML.
    return json.dumps({"store": store, "admin": {"port": admin}, "rooms": [room]})


@dataclass
class Client:
    index: int
    arrives: float
    ticket: int | None = None
    eta: float | None = None
    eta_at: float = 0.0
    admitted: float | None = None
    """When the answer that let it in came ..."""
    asked: float | None = None
    """... and when its request was sent: the admission happened in between."""
    polls: list[float] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)
    waiting: bool = True

    def count(self, kind: str) -> None:
        self.answers[kind] = self.answers.get(kind, 0) + 1


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened when the proxy closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, headers: dict[str, str]) -> tuple[int, dict[str, list[str]], bytes]:
        """One request; on a kept-alive connection the proxy closed meanwhile (idle between two
        polls a minute apart), sent again once on a new one, as browsers do."""
        reused = self.writer is not None and not self.writer.is_closing()
        try:
            return await self._get(headers)
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        return await self._get(headers)

    async def _get(self, headers: dict[str, str]) -> tuple[int, dict[str, list[str]], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        assert self.writer is not None
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"GET /item HTTP/1.1\r\nHost: shop.test\r\n{lines}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        found: dict[str, list[str]] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                found.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(found.get("content-length", ["0"])[0])
        body = await self.reader.readexactly(length) if length else b""
        if any(v.lower() == "close" for v in found.get("connection", [])):
            self.close()
        return int(status_line.split()[1]), found, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


async def visit(client: Client, port: int, cookie_name: str, rng: random.Random, deadline: float) -> None:
    await asyncio.sleep(max(0.0, client.arrives - time.monotonic()))
    connection = Connection(port)
    cookie = ""
    try:
        while time.monotonic() < deadline:
            headers = {"Accept": "application/json"}
            if cookie:
                headers["Cookie"] = f"{cookie_name}={cookie}"
                headers["Waitroom-Poll"] = "1"
                client.polls.append(time.monotonic())
            asked = time.monotonic()
            try:
                status, found, body = await asyncio.wait_for(connection.get(headers), ANSWER_TIMEOUT_S)
            except TimeoutError:
                client.count("hang")
                connection.close()
                await asyncio.sleep(RETRY_AFTER)
                continue
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                client.count("connection error")
                connection.close()
                await asyncio.sleep(RETRY_AFTER)
                continue
            if status == 200:
                client.count("admitted")
                client.asked, client.admitted = asked, time.monotonic()
                client.waiting = False
                return
            retry_after = found.get("retry-after", [""])[0]
            try:
                data = json.loads(body) if body else {}
            except ValueError:
                data = {}
            new_ticket = ""
            for value in found.get("set-cookie", []):
                name, _, rest = value.partition("=")
                if name.strip() == cookie_name:
                    new_ticket = rest.split(";", 1)[0]
            if data.get("status") != "waiting" or not retry_after.isdigit():
                client.count(f"status {status}")
                await asyncio.sleep(RETRY_AFTER)
                continue
            if new_ticket:
                cookie = new_ticket
                client.count("ticket")
                if client.ticket is None:
                    client.ticket = ticket_number(new_ticket)
                    if data.get("eta_seconds") is not None:
                        client.eta, client.eta_at = float(data["eta_seconds"]), time.monotonic()
            else:
                client.count("shed" if not cookie else "wait, ticket kept")
            await asyncio.sleep(int(retry_after) * rng.uniform(0.7, 1.3))
    finally:
        connection.close()


@contextmanager
def replicas(
    work: Path, upstream: int, redis_port: int, policy: str, available: dict[str, bool]
) -> Iterator[list[tuple[int, int]] | None]:
    """Two `waitroom serve` replicas: [(proxy port, admin port)]; None when the policy is not
    available in this checkout."""
    from harness import free_port

    with ExitStack() as stack:
        found = []
        for _ in range(2):
            admin = free_port()
            text = config_text(redis_port, admin, policy, available)
            if text is None:
                yield None
                return
            path = work / f"crowd-{policy}-{admin}.yaml"
            path.write_text(text)
            env = {**os.environ, "WAITROOM_SECRET": SECRET}
            options = ["--set", f"waitroom_config={path}"]
            port = stack.enter_context(
                mitmdump(work, upstream, [WAITROOM_SCRIPT], options, env, None, "serve")
            )
            ready(admin, work)
            found.append((port, admin))
        yield found


def _redis(client: redis.Redis) -> dict[str, float]:
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    scripts = [stats.get(f"cmdstat_{c}", {}) for c in ("evalsha", "eval")]
    return {
        "calls": float(sum(s.get("calls", 0) for s in scripts)),
        "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "memory": float(client.info("memory")["used_memory"]),
    }


def _proxies(admins: list[int], patience: float = 0) -> dict[str, float]:
    texts = [_scrape(a, patience) for a in admins]
    return {
        "requests": sum(counter(t, "waitroom_room_requests") for t in texts),
        "store_calls": sum(histogram_count(t, "waitroom_store_duration_seconds") for t in texts),
        "shed": sum(counter(t, "waitroom_shed_requests") for t in texts),
        "door": sum(counter(t, "waitroom_shed_requests", 'reason="door"') for t in texts),
    }


def _scrape(admin: int, patience: float) -> str:
    """A proxy's metrics, asking again for up to `patience` seconds while it is too busy to answer."""
    give_up = time.monotonic() + patience
    while True:
        try:
            return scrape(admin)
        except httpx.HTTPError:
            if time.monotonic() > give_up:
                raise


async def drive(
    ports: list[int], admins: list[int], redis_port: int, clients: int, policy: str, quick: bool = False
) -> dict[str, Any]:
    rng = random.Random(28)
    begin = time.monotonic() + 0.5
    arrival = QUICK_ARRIVAL_S if quick else ARRIVAL_S
    crowd = [Client(i, begin + rng.uniform(0, arrival)) for i in range(clients)]
    measure_from = begin + arrival + SETTLE_S
    span = QUICK_MEASURE_S if quick else MEASURE_S[policy]
    deadline = measure_from + span
    cookie = f"waitroom_{ROOM}"
    r = redis.Redis(port=redis_port)
    before = _redis(r)
    tasks = [
        asyncio.ensure_future(visit(c, ports[c.index % 2], cookie, random.Random(c.index), deadline))
        for c in crowd
    ]
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    arrived = _redis(r)
    waiting_start = sum(c.waiting for c in crowd)
    r0, p0 = _redis(r), _proxies(admins)
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    r1, p1 = _redis(r), _proxies(admins)
    waiting_end = sum(c.waiting for c in crowd)
    await asyncio.wait(tasks, timeout=ANSWER_TIMEOUT_S + 5)
    for task in tasks:
        task.cancel()
    waiting = (waiting_start + waiting_end) / 2
    polls = sum(1 for c in crowd for t in c.polls if measure_from <= t < deadline)
    answers: dict[str, int] = {}
    for c in crowd:
        for kind, n in c.answers.items():
            answers[kind] = answers.get(kind, 0) + n
    admitted = [(c.asked, c.admitted) for c in crowd if c.asked is not None and c.admitted is not None]
    return {
        "clients": clients,
        "policy": policy,
        "measured_s": span,
        "waiting_mean": round(waiting),
        "client_polls_per_s_per_1k_waiting": round(1000 * polls / span / waiting, 2) if waiting else None,
        "proxy_requests_per_s": round((p1["requests"] - p0["requests"]) / span, 1),
        "proxy_requests_per_s_per_1k_waiting": (
            round(1000 * (p1["requests"] - p0["requests"]) / span / waiting, 2) if waiting else None
        ),
        "proxy_store_calls_per_request": (
            round((p1["store_calls"] - p0["store_calls"]) / (p1["requests"] - p0["requests"]), 3)
            if p1["requests"] > p0["requests"]
            else None
        ),
        "redis_calls_per_s": round((r1["calls"] - r0["calls"]) / span, 1),
        "redis_cpu_per_s": round((r1["cpu"] - r0["cpu"]) / span, 4),
        "redis_bytes_per_visitor": round((arrived["memory"] - before["memory"]) / clients),
        "shed": int(p1["shed"]),
        "answers": answers,
        "errors": sum(
            n for k, n in answers.items() if k not in ("ticket", "shed", "admitted", "wait, ticket kept")
        ),
        "admitted": len(admitted),
        "most_in_window": _most_certainly_in_window(admitted, WINDOW_S),
        "new_sessions": NEW_SESSIONS,
        "worst_order_inversion_s": _worst_inversion(crowd),
        "order_bound_s": round(1.3 * RETRY_AFTER + 0.5, 2),
        "eta_median_abs_error": _eta_error(crowd),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _most_certainly_in_window(admitted: list[tuple[float, float]], window: float) -> int:
    """The most admissions certainly made within one window's length: each was made between its
    request and its answer, so one counts in [t, t + window) when both are in it. Client-side
    timing can only hide an over-admission, never invent one."""
    return max(
        (sum(1 for a, b in admitted if a >= start and b < start + window) for start, _ in admitted),
        default=0,
    )


def _worst_inversion(crowd: list[Client]) -> float:
    """The longest anyone was certainly let in after a visitor with a later ticket: its request's
    time (its admission came after) against the later ticket's answer (its admission came before)."""
    pairs = sorted(
        (c.ticket, c.asked, c.admitted)
        for c in crowd
        if c.ticket and c.asked is not None and c.admitted is not None
    )
    worst, earliest_later = 0.0, float("inf")
    for _, asked, admitted in reversed(pairs):
        worst = max(worst, asked - earliest_later)
        earliest_later = min(earliest_later, admitted)
    return round(worst, 2)


def _eta_error(crowd: list[Client]) -> float | None:
    """The wait shown with the first ticket against the wait from then, median, of those let in
    after at least two head poll intervals."""
    errors = [
        abs(c.eta - (c.admitted - c.eta_at)) / (c.admitted - c.eta_at)
        for c in crowd
        if c.eta is not None and c.admitted is not None and c.admitted - c.eta_at >= 2 * RETRY_AFTER
    ]
    return round(statistics.median(errors), 3) if errors else None


def measure(work: Path, clients: int, quick: bool = False) -> dict[str, Any]:
    available = knobs()
    open_files = raise_open_files(2 * clients + 2000)
    runs: dict[str, Any] = {}
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work))
        for policy in ("today", "new"):
            redis_port = stack.enter_context(redis_server(work / policy))
            with replicas(work, upstream, redis_port, policy, available) as found:
                if found is None:
                    runs[policy] = {"clients": clients, "policy": policy, "not_available": True}
                    continue
                print(f"crowd e2e: {clients:,} clients, {policy} ...", flush=True)
                ports, admins = [p for p, _ in found], [a for _, a in found]
                runs[policy] = asyncio.run(drive(ports, admins, redis_port, clients, policy, quick))
                print(f"crowd e2e:   {json.dumps(runs[policy])}", flush=True)
    return {
        "available": available,
        "quick": quick,
        "open_files": open_files,
        "room": room_report(NEW_SESSIONS, WINDOW_S, ARRIVAL_S),
        "runs": runs,
    }


async def _arrive(at: float, port: int, cookie_name: str, out: list[tuple[str, float]]) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    sent = time.monotonic()
    connection = Connection(port)
    kind = ""
    try:
        status, found, body = await asyncio.wait_for(
            connection.get({"Accept": "application/json"}), ANSWER_TIMEOUT_S
        )
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        ticket = any(v.partition("=")[0].strip() == cookie_name for v in found.get("set-cookie", []))
        if status == 200:
            kind = "admitted"
        elif data.get("status") == "waiting" and found.get("retry-after", [""])[0].isdigit():
            kind = "ticket" if ticket else "shed"
        else:
            kind = f"status {status}"
    except TimeoutError:
        kind = "hang"
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        kind = f"connection error ({type(e).__name__})"
    finally:
        connection.close()
    out.append((kind, time.monotonic() - sent))


async def _flash(ports: list[int], arrivals: int, over: float) -> tuple[list[tuple[str, float]], float]:
    rng = random.Random(5)
    begin = time.monotonic() + 0.5
    out: list[tuple[str, float]] = []
    times = sorted(begin + rng.uniform(0, over) for _ in range(arrivals))
    await asyncio.gather(*(_arrive(t, ports[i % 2], f"waitroom_{ROOM}", out) for i, t in enumerate(times)))
    return out, time.monotonic() - begin


def flash_measure(work: Path, arrivals: int) -> dict[str, Any]:
    """Item 5: new visitors faster than the proxies answer; what each one gets."""
    from waitroom.config.store import StoreConfig

    over = QUICK_FLASH_S if arrivals <= QUICK_FLASH else FLASH_S
    over = float(os.environ.get("CROWD_FLASH_S", over))
    available = knobs()
    open_files = raise_open_files(arrivals + 2000)
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work))
        redis_port = stack.enter_context(redis_server(work))
        policy = "new" if room_settings("new", available) is not None else "today"
        found = stack.enter_context(replicas(work, upstream, redis_port, policy, available))
        assert found is not None
        ports, admins = [p for p, _ in found], [a for _, a in found]
        print(f"crowd flash: {arrivals:,} new visitors in {over:g} s ...", flush=True)
        out, took = asyncio.run(_flash(ports, arrivals, over))
        # The proxies may still be answering connections whose clients gave up: wait for them.
        proxies = _proxies(admins, patience=120)
    answers: dict[str, int] = {}
    for kind, _ in out:
        answers[kind] = answers.get(kind, 0) + 1
    latencies = sorted(t for _, t in out)
    good = ("ticket", "shed", "admitted")
    figures = {
        "arrivals": arrivals,
        "over_s": over,
        "offered_per_s": round(arrivals / over),
        "policy": policy,
        "open_files": open_files,
        "max_wait_s": StoreConfig.model_fields["max_wait"].default,
        "answers": answers,
        "errors": sum(n for k, n in answers.items() if k not in good and k != "hang"),
        "hangs": answers.get("hang", 0),
        "shed_by_proxies": int(proxies["shed"]),
        "shed_at_the_door": int(proxies["door"]),
        "p50_s": round(latencies[len(latencies) // 2], 3),
        "p99_s": round(latencies[int(len(latencies) * 0.99)], 3),
        "max_s": round(latencies[-1], 3),
        "answered_per_s": round(len(out) / took, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"crowd flash:   {json.dumps(figures)}", flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIENTS} clients")
    parser.add_argument("--flash", type=int, help="only the flash crowd, of this many new visitors")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    clients = QUICK_CLIENTS if args.quick else args.clients
    with tempfile.TemporaryDirectory(prefix="waitroom-crowd-e2e-") as tmp:
        figures = (
            flash_measure(Path(tmp), args.flash) if args.flash else measure(Path(tmp), clients, args.quick)
        )
    if args.json:
        print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
