"""The fair queue's figures: visitors arriving over time at a `fifo` room served by several replicas
on one Redis, each polling as the wait page does (retry_after ± 30 %), some abandoning the line.

Measured from the visitors' side (`drive`) and judged against the issue's bounds (`figures`):
- order: nobody is let in more than one poll interval after someone holding a later ticket;
- rate: no window holds more than new_sessions admissions, and places are used while people wait;
- abandoned places: a place that frees up is taken within the grace period and one poll interval;
- the wait shown at arrival against the real wait (median absolute error).

tests/e2e/test_fair_queue.py asserts them; `make bench` reports them in BENCHMARKS.md, and
`python bench/fairness.py` prints them alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOM = "line"
NEW_SESSIONS = 20
WINDOW = 2.0
RETRY_AFTER = 1.0
GRACE = 3.0
ABANDON_AFTER = 4.0
VISITORS = 300
ARRIVALS_OVER = 15.0
ABANDON_SHARE = 0.1
POLL_MAX = 1.3 * RETRY_AFTER
"""The page polls every retry_after × U(0.7, 1.3)."""
SLACK = 0.25
"""Client-side timing slack: the event loops of the visitors and of the proxies."""
UNHEARD_ALLOWED = GRACE
"""The longest a visitor near the head may go unheard and still be owed its order: a called
ticket's holder whose asks reach the store within the grace keeps its call."""


def room_config(redis_url: str, extra: str = "") -> str:
    return f"""
store: {{url: "{redis_url}", timeout: 1s, on_error: closed}}
{extra}
rooms:
  - name: {ROOM}
    match: {{path_prefix: /}}
    queue: fifo
    new_sessions: {NEW_SESSIONS}
    window: {WINDOW:g}s
    retry_after: {RETRY_AFTER:g}s
    grace: {GRACE:g}s
    abandon_after: {ABANDON_AFTER:g}s
"""


@dataclass
class Visitor:
    index: int
    abandons: bool
    arrived: float = 0.0
    ticket: int | None = None
    eta: int | None = None
    """The wait shown with the first answer (seconds)."""
    position: int | None = None
    asked: float | None = None
    """When the request that got the visitor in was sent ..."""
    admitted: float | None = None
    """... and when its answer came: the admission happened in between."""
    lag: float = 0.0
    """How long the answer before that one took: a busy proxy delays the next poll by this much."""
    late: float = 0.0
    """How much longer than planned the visitor's last pause took: the test's own event loop, busy
    with 300 visitors, delays the next poll by this much (not the proxy's doing)."""
    unheard: float = 0.0
    """The longest the store may have gone without hearing the visitor while it was near the head
    (it may be called by its next ask): from the send of an answered ask to the answer of the next
    one, since the store heard each somewhere in between. A saturated proxy sitting on a poll and
    the test's own event loop waking a pause late both stretch it, and they add up. Past
    UNHEARD_ALLOWED a call may have lapsed while the visitor was away, and the line owes it no
    order (docs/concepts.md, "The line")."""
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    story: list[tuple[float, float, int, str, int | None, int | None]] = field(default_factory=list)
    """Each request: (sent, seconds it took, replica, status or error, position, ticket), so that a
    figure out of bounds can say whose wait made it and how."""


def ticket_number(cookie: str) -> int | None:
    """The number in a ticket cookie (its payload is readable; only the signature is secret)."""
    payload = cookie.split(".", 1)[0]
    try:
        fields = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")
    except ValueError:
        return None
    known = (fields[0], len(fields)) in {("q1", 5), ("q2", 7), ("q3", 10)}  # rooms/sessions.py
    return int(fields[3]) if known else None


async def _visit(
    visitor: Visitor, start: float, rng: random.Random, *, urls: list[str], deadline: float
) -> None:
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    headers = {"Accept": "application/json"}
    heard_from: float | None = None
    """When the last answered ask near the head was sent (None: not near the head)."""

    def heard(asked: float, near_head: bool) -> None:
        nonlocal heard_from
        if heard_from is not None:
            visitor.unheard = max(visitor.unheard, time.monotonic() - heard_from)
        heard_from = asked if near_head else None

    async with httpx.AsyncClient(timeout=10) as client:
        visitor.arrived = time.monotonic()
        while time.monotonic() < deadline:
            asked = time.monotonic()
            replica = rng.randrange(len(urls))
            try:
                response = await client.get(f"{urls[replica]}/item", headers=headers)
            except httpx.HTTPError as e:
                visitor.errors.append(type(e).__name__)
                visitor.story.append((asked, time.monotonic() - asked, replica, type(e).__name__, None, None))
                await asyncio.sleep(RETRY_AFTER)  # unheard: the gap goes on to the next answer
                continue
            if response.status_code == 200:
                heard(asked, False)
                visitor.asked, visitor.admitted = asked, time.monotonic()
                visitor.story.append((asked, visitor.admitted - asked, replica, "in", 0, visitor.ticket))
                return
            visitor.lag = time.monotonic() - asked
            body = response.json()
            if body.get("status") != "waiting":
                visitor.errors.append(f"status {response.status_code}")
                return
            for name, value in client.cookies.items():
                # 0: a ticket whose number is not known yet (the store's answer was lost).
                if name.endswith(f"_{ROOM}") and (number := ticket_number(value)):
                    visitor.ticket = number
            if visitor.eta is None:
                visitor.eta, visitor.position = body.get("eta_seconds"), body.get("position")
            near_head = (body.get("position") or 0) < 2 * NEW_SESSIONS  # it may be called by its next ask
            heard(asked, near_head)
            visitor.story.append(
                (asked, visitor.lag, replica, "waiting", body.get("position"), visitor.ticket)
            )
            if visitor.abandons and visitor.polls >= 1:
                return  # closes the tab
            visitor.polls += 1
            headers = {"Accept": "application/json", "Waitroom-Poll": "1"}
            pause = RETRY_AFTER * rng.uniform(0.7, 1.3)
            paused = time.monotonic()
            await asyncio.sleep(pause)
            visitor.late = max(0.0, time.monotonic() - paused - pause)


async def drive(
    urls: list[str], *, visitors: int = VISITORS, seed: int = 1, bound: float = 150
) -> list[Visitor]:
    """Every visitor's story: arrivals spread over ARRIVALS_OVER seconds, each request to a random
    replica, ABANDON_SHARE of them leaving after their first poll."""
    rng = random.Random(seed)
    crowd = [Visitor(i, rng.random() < ABANDON_SHARE) for i in range(visitors)]
    begin = time.monotonic() + 0.2
    starts = sorted(begin + rng.uniform(0, ARRIVALS_OVER) for _ in crowd)
    deadline = begin + bound
    rngs = [random.Random(seed * 1000 + v.index) for v in crowd]
    visits = (_visit(*one, urls=urls, deadline=deadline) for one in zip(crowd, starts, rngs, strict=True))
    await asyncio.gather(*visits)
    return crowd


def figures(crowd: list[Visitor], outage: tuple[float, float] | None = None) -> dict[str, Any]:
    """`outage`: when the store stopped answering and when it answered again (monotonic), for the
    one exception to the order (docs/stores.md): see `_called_unheard_of`."""
    stayed = [v for v in crowd if not v.abandons]
    ticketed = [v for v in stayed if v.ticket is not None and v.admitted is not None]

    # Times are the visitors': an admission happened between `asked` and `admitted`. Each figure
    # is taken on the side that a slow proxy cannot inflate, so it is exact on an idle machine and
    # never a false alarm on a busy one.
    done = sorted(
        (v for v in crowd if v.asked is not None and v.admitted is not None), key=lambda v: v.asked or 0
    )

    # Order: how much later than someone holding a later ticket anyone got in (its own last poll's
    # delay by a busy proxy, and by this client's own busy loop, left out).
    # A visitor called in the moment before an outage, whose polls through it reached only
    # replicas that had not heard of its call, gets in at its first poll after it: its order is
    # owed against those let in after the outage, not those let in during it.
    worst_inversion = 0.0
    earliest_after, first_after = float("inf"), None
    after_outage, first_after_outage = float("inf"), None
    worst_pair: tuple[Visitor, Visitor | None] | None = None
    excused = 0
    for v in sorted(ticketed, key=lambda v: v.ticket or 0, reverse=True):
        assert v.asked is not None
        assert v.admitted is not None
        unheard_of = outage is not None and _called_unheard_of(v, *outage)
        excused += unheard_of
        earliest, first = (after_outage, first_after_outage) if unheard_of else (earliest_after, first_after)
        inversion = v.asked - v.lag - v.late - earliest
        if v.unheard <= UNHEARD_ALLOWED and inversion > worst_inversion:
            worst_inversion, worst_pair = inversion, (v, first)
        if v.admitted < earliest_after:
            earliest_after, first_after = v.admitted, v
        if outage is not None and v.admitted >= outage[1] and v.admitted < after_outage:
            after_outage, first_after_outage = v.admitted, v

    # Rate: the most admissions certainly inside one window (asked after its start, answered
    # before its end).
    most_in_window = 0
    for i, first in enumerate(done):
        assert first.asked is not None
        end = first.asked + WINDOW
        most_in_window = max(most_in_window, sum(1 for v in done[i:] if (v.admitted or end) < end))

    # Abandoned places: a place freed by an admission a window later is taken within the grace
    # period and one poll, while anyone still waits.
    last_wait_ends = max((v.admitted for v in stayed if v.admitted is not None), default=0.0)
    worst_refill = 0.0
    for k in range(len(done) - NEW_SESSIONS):
        earlier, later = done[k], done[k + NEW_SESSIONS]
        assert earlier.admitted is not None
        assert later.asked is not None
        freed = earlier.admitted + WINDOW
        if freed < last_wait_ends - GRACE - POLL_MAX:
            worst_refill = max(worst_refill, later.asked - later.lag - later.late - freed)

    errors = [
        abs(v.eta - (v.admitted - v.arrived)) / (v.admitted - v.arrived)
        for v in ticketed
        if v.eta is not None and v.admitted - v.arrived >= 3 * RETRY_AFTER
    ]
    kinds = Counter(error for v in crowd for error in v.errors)
    return {
        "visitors": len(crowd),
        "abandoned": len(crowd) - len(stayed),
        "admitted": sum(1 for v in crowd if v.admitted is not None),
        "stayed_not_admitted": sum(1 for v in stayed if v.admitted is None),
        "errors": sum(len(v.errors) for v in crowd),
        "error_kinds": dict(kinds.most_common()),
        "longest_wait_s": round(max((v.admitted - v.arrived for v in ticketed), default=0.0), 2),
        "worst_order_inversion_s": round(worst_inversion, 3),
        "order_bound_s": POLL_MAX + SLACK,
        "most_admissions_in_a_window": most_in_window,
        "new_sessions": NEW_SESSIONS,
        "worst_place_refill_s": round(worst_refill, 3),
        "refill_bound_s": GRACE + POLL_MAX + SLACK,
        "abandon_after_s": ABANDON_AFTER,
        "eta_median_abs_error": round(statistics.median(errors), 3) if errors else None,
        "eta_samples": len(errors),
        "order_measured_on": sum(1 for v in ticketed if v.unheard <= UNHEARD_ALLOWED),
        "judged_after_outage": excused,
        "unheard_past_grace": sum(1 for v in ticketed if v.unheard > UNHEARD_ALLOWED),
        "worst_inversion_stories": _stories(worst_pair, origin=min((v.arrived for v in crowd), default=0.0)),
    }


def _called_unheard_of(v: Visitor, start: float, end: float) -> bool:
    """Let in after the outage, at its first poll a replica could ask the store for: every poll of
    it from the outage's start until then (one at least) answered without the store (no position:
    the replica could not ask it, and did not know of its call). A replica hears the store again a
    moment after the others (its next probe), so "after the outage" is each replica's own; and the
    poll that got it in may have been sent before the end, and answered once the store was back.
    A visitor called only after the outage fits too, and loses nothing by it: nobody let in
    during the outage holds a later ticket than one not called before it (the store calls in
    ticket order, tests/store/test_line_ops.py)."""
    if v.asked is None or v.admitted is None or v.admitted < end:
        return False
    before_in = [step for step in v.story if start <= step[0] < v.asked]
    return bool(before_in) and all(step[3] != "in" and step[4] is None for step in before_in)


def _stories(pair: tuple[Visitor, Visitor | None] | None, origin: float) -> list[str]:
    """The visitor let in latest after a later ticket, and that later ticket's holder: every
    request, in seconds from the first arrival (sent, took, replica, answer, position, ticket)."""
    lines = []
    for v in pair or ():
        if v is not None:
            steps = " ".join(f"{t - origin:.2f}+{d:.2f}@{r}:{a}/{p}/{n}" for t, d, r, a, p, n in v.story)
            lines.append(f"ticket {v.ticket} late {v.late:.2f} unheard {v.unheard:.2f}: {steps}")
    return lines


def run(work: Path, replicas: int = 4, visitors: int = VISITORS) -> dict[str, Any]:
    """`replicas` proxies (`waitroom serve`, as the image runs it) on one redis-server in front of
    nginx; the figures."""
    from harness import free_port, mitmdump, nginx, ready, redis_server

    with ExitStack() as stack:
        upstream = stack.enter_context(nginx(work))
        redis_port = stack.enter_context(redis_server(work))
        env = {**os.environ, "WAITROOM_SECRET": "bench-secret-0123456789abcdef"}
        urls = []
        for _ in range(replicas):
            admin = free_port()
            config = work / f"fairness-{admin}.yaml"
            config.write_text(room_config(f"redis://127.0.0.1:{redis_port}/0", f"admin: {{port: {admin}}}"))
            options = ["--set", f"waitroom_config={config}"]
            port = stack.enter_context(
                mitmdump(work, upstream, ["addons/waitroom.py"], options, env, entry="serve")
            )
            ready(admin, work)
            urls.append(f"http://127.0.0.1:{port}")
        return figures(asyncio.run(drive(urls, visitors=visitors)))


def main() -> None:
    """`python bench/fairness.py`: the figures alone, printed (`make bench` puts them in BENCHMARKS.md)."""
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as work:
        print(json.dumps(run(Path(work)), indent=2))


if __name__ == "__main__":
    main()
