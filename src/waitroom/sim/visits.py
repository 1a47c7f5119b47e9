"""Recorded requests grouped into visits, and crowd visitors: who arrives when, and what they do.

A visit is one visitor key's requests with gaps under `session.ttl`. Its arrival is its first
request that a room or a rule of the candidate config covers, at its recorded time; the rest of the
visit is replayed after admission, at the same offsets, shifted by whatever wait the candidate
imposes. What the recording proxy answered itself (its wait page and the page's polls: the input
says so with `poll`, or a flow's answer carried `Waitroom-Status`; in a log without either, the
requests answered with the room's wait status before the visitor's first 2xx or 3xx there) is
dropped, except the first: the candidate's own page polls instead.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from waitroom.config.schema import Config
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.rooms.routing import Router
from waitroom.sim.arrivals import ArrivalsError, Hit
from waitroom.web.request import RequestFacts

MAX_VISITS = 10_000_000


@dataclass(slots=True)
class Visit:
    at: float
    first: Hit | None
    """The arrival's request; None for a crowd visitor (it asks for the crowd's path)."""
    pages: tuple[tuple[float, Hit], ...] = ()
    """The recorded rest of the visit: (seconds after admission, request)."""
    inside: bool = False
    """It carried the `--session-cookie`: it was inside already (a genuine session)."""


def _covered(hit: Hit, router: Router, limiter: RateLimiter) -> bool:
    route = router.route(hit.host, hit.path)
    if route.bypass:
        return False
    if route.room is not None:
        return True
    facts = RequestFacts(hit.host, hit.path, hit.method, hit.client, lambda _n: None)
    return bool(limiter.matching(facts))


def build_visits(hits: Sequence[Hit], config: Config, limiter: RateLimiter) -> list[Visit]:
    """Visits from recorded requests (ArrivalsError when none falls under a room or rule)."""
    router = Router(config)
    by_visitor: dict[str, list[Hit]] = defaultdict(list)
    seen_paths: Counter[str] = Counter()
    for hit in hits:
        if _covered(hit, router, limiter):
            by_visitor[hit.visitor].append(hit)
        else:
            seen_paths["/" + hit.path.lstrip("/").split("/", 1)[0]] += 1
    gap = config.session.ttl
    visits: list[Visit] = []
    for requests in by_visitor.values():
        start = 0
        for i in range(1, len(requests) + 1):
            if i == len(requests) or requests[i].at - requests[i - 1].at >= gap:
                visits.append(_visit(requests[start:i], router))
                start = i
                if len(visits) > MAX_VISITS:
                    raise ArrivalsError(f"more than {MAX_VISITS:,} visits; split the input")
    if not visits:
        most = ", ".join(f"{path} {n:,}" for path, n in seen_paths.most_common(3)) or "nothing"
        raise ArrivalsError(
            f"no request falls under a room or rule of the config ({len(hits):,} read; most seen: {most})"
        )
    visits.sort(key=lambda v: v.at)
    return visits


def _visit(requests: list[Hit], router: Router) -> Visit:
    first, rest = requests[0], requests[1:]
    told = any(h.poll is not None for h in requests) or any(h.proxy_answered for h in requests)
    if told:
        first_waited = first.proxy_answered
        rest = [h for h in rest if not (h.poll or h.proxy_answered)]
    else:
        room = router.route(first.host, first.path).room
        wait_status = room.status if room is not None else None
        first_waited = wait_status is not None and first.status == wait_status
        kept, inside = [], not first_waited
        for hit in rest:
            if not inside and hit.status == wait_status:
                continue  # the recording proxy's wait answer, or its page's refresh
            if hit.status is not None and 200 <= hit.status < 400:
                inside = True
            kept.append(hit)
        rest = kept
    base = first.at
    if first_waited and rest:  # the recording's own reload once in: the candidate's stands for it
        base, rest = rest[0].at, rest[1:]
    pages = tuple((max(0.0, h.at - base), h) for h in rest)
    return Visit(first.at, first, pages, inside=bool(first.cookie))
