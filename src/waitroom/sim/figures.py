"""A run's numbers: what the summary, the JSON and the charts show, computed from its records.

Definitions (docs/sizing.md says them in words):
- *admitted*: visitors let in, at once or after waiting (a visitor whose session later ended and
  who came in again counts once; every admission counts in the window figures);
- *wait*: from the visitor's first wait answer to its admission; 0 for those let in at once;
- *inside*: a session from its admission to its last request plus `session.ttl`, or to its release
  (the product's definition);
- *line*: a `fifo` room's live tickets as the store counts them (sampled); in a `block` room, the
  visitors on the wait page;
- *ETA error*: |shown − actual| / actual for the first estimate a visitor was shown, over those who
  waited at least three retry intervals (shorter waits are dominated by the poll's own jitter);
- *guarantees*: the most admissions in any window of the room's length (at most `new_sessions`),
  and the worst order inversion of a `fifo` room (how much earlier than someone holding an earlier
  ticket anyone got in; at most one poll interval, 1.3 × retry_after).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from waitroom.config.schema import Config, RoomConfig
from waitroom.sim.engine import Records, Visitor

MAX_POINTS = 2_000
"""ETA points kept for the scatter chart."""


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0–100) of sorted values, nearest rank; nan for none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def most_in_window(times: list[float], window: float) -> tuple[int, float]:
    """The most admissions in any window (t − window, t], and its end t (times sorted)."""
    best, at, start = 0, 0.0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        if end - start + 1 > best:
            best, at = end - start + 1, t
    return best, at


def order_inversion(pairs: list[tuple[int, float]]) -> float:
    """The worst `admitted(i) − admitted(j)` over tickets i < j: how much later than someone who
    held a later ticket anyone got in (0: in ticket order)."""
    worst, earliest = 0.0, math.inf
    for _, admitted in sorted(pairs, reverse=True):
        worst = max(worst, admitted - earliest)
        earliest = min(earliest, admitted)
    return worst


@dataclass
class Series:
    """Per minute of the run (t: minutes from its start)."""

    t: list[float] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)
    admitted: list[int] = field(default_factory=list)
    line: list[int] = field(default_factory=list)
    inside: list[int] = field(default_factory=list)
    eta_newcomer: list[int | None] = field(default_factory=list)
    wait_t: list[float] = field(default_factory=list)
    """Arrival times (minutes) of the wait figures: bins of 1/60 of the arrivals' span, at least 5 s."""
    wait_p50: list[float | None] = field(default_factory=list)
    """Of the visitors who arrived in that bin and were let in."""
    wait_p90: list[float | None] = field(default_factory=list)


@dataclass
class RoomFigures:
    name: str
    queue: str
    new_sessions: int
    window: float
    retry_after: int
    max_active: int | None
    visitors: int = 0
    admitted: int = 0
    at_once: int = 0
    after_waiting: int = 0
    inside_already: int = 0
    most_per_minute: int = 0
    limit_per_minute: float = 0.0
    wait: dict[str, float] = field(default_factory=dict)
    waited_wait: dict[str, float] = field(default_factory=dict)
    eta: dict[str, float | int | None] = field(default_factory=dict)
    eta_points: list[tuple[int, float]] = field(default_factory=list)
    """(shown, actual) seconds."""
    wait_cdf: list[tuple[float, float]] = field(default_factory=list)
    longest_line: int = 0
    longest_line_at: float = 0.0
    line_empty_from: float | None = None
    most_inside: int = 0
    most_inside_at: float = 0.0
    cap_full: tuple[float, float] | None = None
    abandoned: int = 0
    gave_up: int = 0
    still_waiting: int = 0
    refused: int = 0
    closed: int = 0
    most_in_window: int = 0
    window_limit: int = 0
    """The most new_sessions in force during the run."""
    unchecked: str = ""
    """Why the guarantees were not checked over the whole run, if they were not."""
    worst_inversion: float | None = None
    inversion_bound: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    series: Series = field(default_factory=Series)

    @property
    def broken(self) -> list[str]:
        """The guarantees this run saw broken (a product bug, never expected)."""
        out = []
        if self.most_in_window > self.window_limit:
            out.append(
                f"{self.most_in_window} admissions in one {self.window:g}s window "
                f"(at most {self.window_limit})"
            )
        if self.worst_inversion is not None and self.worst_inversion > self.inversion_bound + 1e-6:
            out.append(f"order inversion {self.worst_inversion:.1f}s (bound {self.inversion_bound:.1f}s)")
        return out

    def as_json(self) -> dict[str, Any]:
        s = self.series
        return {
            "queue": self.queue,
            "new_sessions": self.new_sessions,
            "window": self.window,
            "retry_after": self.retry_after,
            "max_active": self.max_active,
            "visitors": self.visitors,
            "admitted": {
                "total": self.admitted,
                "at_once": self.at_once,
                "after_waiting": self.after_waiting,
                "inside_already": self.inside_already,
                "most_per_minute": self.most_per_minute,
                "limit_per_minute": self.limit_per_minute,
            },
            "wait": self.wait,
            "wait_of_those_who_waited": self.waited_wait,
            "eta": self.eta,
            "line": {
                "longest": self.longest_line,
                "longest_at": self.longest_line_at,
                "empty_from": self.line_empty_from,
            },
            "inside": {
                "most": self.most_inside,
                "most_at": self.most_inside_at,
                "cap_full": list(self.cap_full) if self.cap_full else None,
            },
            "abandoned": self.abandoned,
            "gave_up": self.gave_up,
            "still_waiting": self.still_waiting,
            "refused": {"tickets_per_ip": self.refused, "closed": self.closed},
            "guarantees": {
                "most_in_window": self.most_in_window,
                "limit": self.window_limit,
                "not_checked": self.unchecked or None,
                "worst_order_inversion": self.worst_inversion,
                "inversion_bound": self.inversion_bound,
                "held": not self.broken,
            },
            "outcomes": self.outcomes,
            "series": {
                "t_minutes": s.t,
                "arrivals": s.arrivals,
                "admitted": s.admitted,
                "line": s.line,
                "inside": s.inside,
                "eta_newcomer": s.eta_newcomer,
                "wait_t_minutes": s.wait_t,
                "wait_p50": s.wait_p50,
                "wait_p90": s.wait_p90,
            },
        }


@dataclass
class Figures:
    started: float
    ended: float
    rooms: dict[str, RoomFigures]
    rules: dict[str, dict[str, int]]
    visitors: int
    decisions: int
    skipped_polls: int
    probes: int
    heartbeats: int
    wall: float
    errors: dict[str, int]
    unroomed: int = 0
    """Visitors whose arrival no room covers (rules only)."""

    @property
    def span(self) -> float:
        return self.ended - self.started


def compute(records: Records, config: Config) -> Figures:
    rooms = {room.name: _room(room, records, config) for room in config.rooms}
    rules: dict[str, dict[str, int]] = {r.name: {} for r in config.rate_limits}
    for (rule, outcome), n in sorted(records.rules.items()):
        rules.setdefault(rule, {})[outcome] = n
    return Figures(
        records.started,
        records.ended,
        rooms,
        rules,
        len(records.visitors),
        records.decisions,
        records.skipped_polls,
        records.probes,
        records.heartbeats,
        records.wall,
        dict(records.errors),
        unroomed=sum(1 for v in records.visitors if v.room is None),
    )


def _room(room: RoomConfig, records: Records, config: Config) -> RoomFigures:
    start, end = records.started, max(records.ended, records.started + 60.0)
    figures = RoomFigures(
        room.name,
        room.queue,
        room.new_sessions,
        room.window,
        room.retry_after_seconds,
        room.max_active,
        limit_per_minute=room.new_sessions * 60.0 / room.window,
        inversion_bound=1.3 * room.retry_after_seconds,
    )
    visitors = [v for v in records.visitors if v.room is not None and v.room.name == room.name]
    figures.visitors = len(visitors)
    figures.outcomes = {o: n for (r, o), n in sorted(records.rooms.items()) if r == room.name}
    figures.refused = figures.outcomes.get("refused", 0)
    admitted = [v for v in visitors if not math.isnan(v.admitted) and v.first_answer != "inside"]
    figures.inside_already = sum(1 for v in visitors if v.first_answer == "inside")
    figures.admitted = len(admitted)
    waits = sorted(max(0.0, v.admitted - v.wait_from) for v in admitted)
    waited = [w for w in waits if w > 0]
    figures.after_waiting = sum(1 for v in admitted if v.first_answer == "waiting")
    figures.at_once = figures.admitted - figures.after_waiting
    figures.wait = _quantiles(waits)
    figures.waited_wait = _quantiles(waited)
    figures.abandoned = sum(1 for v in visitors if v.left == "abandoned")
    figures.gave_up = sum(1 for v in visitors if v.left in ("gave up", "refused"))
    figures.closed = sum(1 for v in visitors if v.left == "closed")
    figures.still_waiting = sum(1 for v in visitors if v.waiting)
    figures.wait_cdf = _cdf(waits)
    _eta(figures, admitted, room)
    times = sorted(records.admissions.get(room.name, []))
    figures.window_limit = records.limits.get(room.name, room.new_sessions)
    figures.unchecked = records.unchecked.get(room.name, "")
    checked = times
    if records.outages:  # `store.on_error` decided meanwhile: its bounds are not the window's
        figures.unchecked = "during the outage and one window after it"
        checked = [t for t in times if not any(a <= t < b + room.window for a, b in records.outages)]
    if figures.unchecked.startswith("an operator"):
        checked = []
    figures.most_in_window, _ = most_in_window(checked, room.window) if checked else (0, 0.0)
    if room.queue == "fifo" and not records.outages and not figures.unchecked:
        pairs = [(v.entry_ticket, v.admitted) for v in admitted if v.entry_ticket > 0]
        figures.worst_inversion = order_inversion(pairs) if pairs else 0.0
    _series(figures, room, visitors, admitted, times, records, config, start, end)
    return figures


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": values[-1],
        "mean": sum(values) / len(values),
    }


def _cdf(sorted_waits: list[float], points: int = 200) -> list[tuple[float, float]]:
    n = len(sorted_waits)
    if not n:
        return []
    step = max(1, n // points)
    out = [(sorted_waits[i], (i + 1) / n) for i in range(0, n, step)]
    if out[-1][1] < 1.0:
        out.append((sorted_waits[-1], 1.0))
    return out


def _eta(figures: RoomFigures, admitted: list[Visitor], room: RoomConfig) -> None:
    shown = [v for v in admitted if v.eta >= 0 and v.first_answer == "waiting"]
    pairs = [(v.eta, v.admitted - v.wait_from) for v in shown]
    waited = sum(1 for v in admitted if v.first_answer == "waiting")
    figures.eta = {
        "shown": len(shown),
        "not_shown": waited - len(shown),
        "cannot_estimate": sum(1 for v in admitted if v.eta == -2 and v.first_answer == "waiting"),
        **eta_accuracy(pairs, 3 * room.retry_after_seconds),
    }
    if len(pairs) > MAX_POINTS:
        step = len(pairs) / MAX_POINTS
        pairs = [pairs[int(i * step)] for i in range(MAX_POINTS)]
    figures.eta_points = pairs


def eta_accuracy(pairs: Sequence[tuple[float, float]], min_wait: float) -> dict[str, float | int | None]:
    """How the estimates shown compare with the waits that followed: `pairs` of (estimate, wait) in
    seconds, judged only where the wait was at least `min_wait` (a wait of a poll or two is all
    rounding). `over_twice` and `under_half` count the visitors told more than twice, or less than
    half, their wait: the bound the product's estimate is held to."""
    judged = [(e, a) for e, a in pairs if a >= min_wait and a > 0]
    errors = sorted(abs(e - a) / a for e, a in judged)
    return {
        "median_error": percentile(errors, 50) if errors else None,
        "within_20_percent": (sum(1 for e in errors if e <= 0.2) / len(errors)) if errors else None,
        "over_twice": sum(1 for e, a in judged if e > 2 * a),
        "under_half": sum(1 for e, a in judged if e < a / 2),
        "worst_under_estimate": max((a - e for e, a in judged), default=None),
        "worst_over_estimate": max((e - a for e, a in judged), default=None),
    }


def _series(
    figures: RoomFigures,
    room: RoomConfig,
    visitors: list[Visitor],
    admitted: list[Visitor],
    admissions: list[float],
    records: Records,
    config: Config,
    start: float,
    end: float,
) -> None:
    minutes = max(1, math.ceil((end - start) / 60.0))
    series = figures.series
    series.t = [float(m) for m in range(minutes + 1)]
    arrivals = Counter(int((v.visit.at - start) // 60) for v in visitors)
    per_minute = Counter(int((t - start) // 60) for t in admissions)
    series.arrivals = [arrivals.get(m, 0) for m in range(minutes + 1)]
    series.admitted = [per_minute.get(m, 0) for m in range(minutes + 1)]
    full_minutes = [per_minute.get(m, 0) for m in range(minutes) if (m + 1) * 60 <= end - start + 1e-9]
    figures.most_per_minute = max(full_minutes or series.admitted or [0])
    # The line and the newcomer's estimate: the last sample in each minute.
    samples = [s for s in records.samples if s.room == room.name]
    line: dict[int, int] = {}
    eta: dict[int, int | None] = {}
    for sample in samples:
        m = int((sample.at - start) // 60)
        line[m] = max(line.get(m, 0), sample.line)
        eta[m] = sample.eta
        if sample.line > figures.longest_line:
            figures.longest_line, figures.longest_line_at = sample.line, sample.at - start
    series.line = [line.get(m, 0) for m in range(minutes + 1)]
    series.eta_newcomer = [eta.get(m) for m in range(minutes + 1)]
    if samples and figures.longest_line:
        after = [s for s in samples if s.at - start >= figures.longest_line_at]
        empty = next((s.at - start for s in after if s.line == 0), None)
        figures.line_empty_from = empty
    # Inside: each session from its admission to its last request + ttl, or to its release.
    ttl = config.session.ttl
    events: list[tuple[float, int]] = []
    for began, last, released in records.sessions.get(room.name, []):
        events.append((began, 1))
        events.append((released if not math.isnan(released) else last + ttl, -1))
    events.sort()
    inside, current, k = [], 0, 0
    for m in range(minutes + 1):
        moment = start + m * 60
        while k < len(events) and events[k][0] <= moment:
            current += events[k][1]
            if current > figures.most_inside:
                figures.most_inside, figures.most_inside_at = current, events[k][0] - start
            k += 1
        inside.append(current)
    series.inside = inside
    if room.max_active:
        full = [m for m, n in enumerate(inside) if n >= room.max_active]
        figures.cap_full = (float(full[0]), float(full[-1])) if full else None
    # Wait by arrival time.
    if admitted:
        first = min(v.visit.at for v in admitted)
        last = max(v.visit.at for v in admitted)
        size = max(5.0, (last - first) / 60)
        bins: dict[int, list[float]] = {}
        for v in admitted:
            bins.setdefault(int((v.visit.at - start) // size), []).append(max(0.0, v.admitted - v.wait_from))
        for b in sorted(bins):
            waits = sorted(bins[b])
            series.wait_t.append(round((b + 0.5) * size / 60, 4))
            series.wait_p50.append(percentile(waits, 50))
            series.wait_p90.append(percentile(waits, 90))
