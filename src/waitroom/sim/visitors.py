"""Who the simulated visitors are and how they behave: their plans, their polling, their cookies.

Each visitor draws everything it decides from a generator of its own, seeded by the run's seed and
its number: its patience, its pages and the pauses between them, whether its browser runs scripts,
and each poll's jitter. The same visitor therefore does the same under `--against` (the candidate
and the current config meet the same people: the difference is the config's, not noise) and in
the HTTP driver (http.py), which sends the same plans to a real proxy.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from waitroom.config.durations import format_duration, parse_duration

# The wait page's script (web/pages/waitroom.html, `schedule` and `trouble`); a unit test reads the
# page and checks these against it.
JITTER_LOW = 0.7
JITTER_SPAN = 0.6
"""A poll comes `max(1, retry_after) × (0.7 + 0.6u)` seconds after a wait answer."""
TROUBLE_CAP = 120.0
TROUBLE_DOUBLINGS = 4
"""After a 429 or 5xx that is not the room's: `min(120, retry_after × 2^min(failures, 4))`, jittered."""
PAGE_RETRIES = 3
"""A page (not the wait page's poll) refused with a 429 or 5xx is loaded again after its
Retry-After, at most this many times; then the visitor gives up."""

PollStyle = Literal["page", "retry-after"]


def page_poll_delay(retry_after: float, failures: int, u: float, head: float = 0.0) -> float:
    """Seconds until the wait page polls again: after a wait answer (`failures` 0) or after the
    `failures`-th answer in a row that was not the room's (`retry_after`: the page's own value).
    The jitter spans ±30 % of the interval, or of the room's `head` interval (the answer's
    `head_retry_after`) when that is shorter."""
    seconds = max(
        1.0,
        retry_after
        if failures == 0
        else min(TROUBLE_CAP, retry_after * 2 ** min(failures, TROUBLE_DOUBLINGS)),
    )
    spread = min(seconds, head) if head > 0 else seconds
    return seconds - spread + spread * (JITTER_LOW + JITTER_SPAN * u)


@dataclass(frozen=True, slots=True)
class Patience:
    """`share` of the visitors leave the line if still waiting after `low` (to `high`) seconds."""

    share: float
    low: float
    high: float

    def describe(self) -> str:
        span = format_duration(self.low) + (f"-{format_duration(self.high)}" if self.high > self.low else "")
        return f"{self.share * 100:g}%:{span}"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What visitors do, as options say (`waitroom simulate --help`)."""

    pages: tuple[float, float] = (5.0, 5.0)
    """After admission: (mean, mean) for a geometric count with that mean, or (low, high) uniform."""
    pages_uniform: bool = False
    time_on_site: float = 300.0
    """Seconds from the first page to the last, on average (exponential, at most 3 times it)."""
    patience: tuple[Patience, ...] = ()
    release: float = 0.0
    """The share whose last page ends the session (the upstream's `Waitroom-Command: release`)."""
    no_js: float = 0.0
    """The share whose browser runs no script: the page refreshes itself every retry_after."""
    poll: PollStyle = "page"
    """`page`: as waitroom.html polls; `retry-after`: exactly every Retry-After."""

    def describe(self, crowd: bool = True) -> str:
        """In words; `crowd`: some visitors are synthetic (recorded ones browse as recorded)."""
        low, high = self.pages
        pages = f"{low:g}-{high:g}" if self.pages_uniform else f"{low:g}"
        parts = [f"pages {pages} over {format_duration(self.time_on_site)}" if crowd else "pages as recorded"]
        if self.patience:
            parts.append("patience " + ",".join(p.describe() for p in self.patience))
        if self.release:
            parts.append(f"release {self.release * 100:g}%")
        if self.no_js:
            parts.append(f"no-js {self.no_js * 100:g}%")
        if self.poll != "page":
            parts.append(f"poll {self.poll}")
        return ", ".join(parts)


class BehaviourError(ValueError):
    pass


def parse_share(text: str, what: str) -> float:
    """`20%` or `0.2`."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise BehaviourError(f"{what}: {text!r} is not a share (e.g. 20% or 0.2)") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise BehaviourError(f"{what}: {text!r} is not between 0% and 100%")
    return value


def parse_pages(text: str) -> tuple[tuple[float, float], bool]:
    """`5` (a geometric count with mean 5, at least 1) or `3-8` (uniform)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+))?\s*", text)
    if m is None:
        raise BehaviourError(f"--pages: {text!r} is not N or A-B (e.g. 5 or 3-8)")
    low = float(m.group(1))
    if m.group(2) is None:
        if low < 1 or low > 10_000:
            raise BehaviourError(f"--pages: the mean must be between 1 and 10000, not {text}")
        return (low, low), False
    high = float(m.group(2))
    if not low.is_integer() or low < 1 or high < low or high > 10_000:
        raise BehaviourError(f"--pages: {text!r} must be whole numbers 1 <= A <= B <= 10000")
    return (low, high), True


def parse_patience(text: str) -> tuple[Patience, ...]:
    """`20%:10m`, `20%:5m-15m`, several separated by commas; the shares add up to at most 100%."""
    out = []
    for part in text.split(","):
        share_text, sep, span = part.strip().partition(":")
        if not sep:
            raise BehaviourError(f"--patience: {part.strip()!r} is not SHARE:DURATION (e.g. 20%:10m)")
        share = parse_share(share_text.strip(), "--patience")
        low_text, _, high_text = span.strip().partition("-")
        try:
            low = parse_duration(low_text)
            high = parse_duration(high_text) if high_text else low
        except ValueError as e:
            raise BehaviourError(f"--patience: {e}") from None
        if high < low:
            raise BehaviourError(f"--patience: {span.strip()!r} ends before it starts")
        out.append(Patience(share, low, high))
    if sum(p.share for p in out) > 1 + 1e-9:
        raise BehaviourError("--patience: the shares add up to more than 100%")
    return tuple(out)


@dataclass(slots=True)
class Plan:
    """One visitor's draws, made before the run, in a fixed order that no config changes."""

    patience: float
    """Seconds it waits in line before it leaves (inf: it never leaves)."""
    pauses: tuple[float, ...]
    """Seconds between its pages once admitted: one fewer than its pages."""
    no_js: bool
    release: bool
    seed: int
    """The seed of its own poll jitter and replica choice."""


def visitor_seed(seed: int, index: int) -> int:
    return (seed & 0xFFFFFFFF) << 40 | index


def draw_plan(behaviour: Behaviour, seed: int, index: int) -> Plan:
    rng = random.Random(visitor_seed(seed, index))
    patience = math.inf
    pick = rng.random()
    spread = rng.random()
    for cls in behaviour.patience:
        if pick < cls.share:
            patience = cls.low + (cls.high - cls.low) * spread
            break
        pick -= cls.share
    low, high = behaviour.pages
    if behaviour.pages_uniform:
        pages = rng.randint(int(low), int(high))
    else:  # geometric on 1, 2, …, with mean `low`
        p = 1.0 / low
        pages = 1 if p >= 1 else 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
    pages = min(pages, 10_000)
    # The time from the first page to the last: exponential around time_on_site (at most three
    # times it), cut into `pages` pages at random moments.
    stay = (
        min(3 * behaviour.time_on_site, rng.expovariate(1.0 / behaviour.time_on_site)) if pages > 1 else 0.0
    )
    moments = sorted(rng.random() * stay for _ in range(pages - 2))
    marks = [0.0, *moments, stay] if pages > 1 else [0.0]
    pauses = tuple(b - a for a, b in itertools.pairwise(marks))
    no_js = rng.random() < behaviour.no_js
    release = rng.random() < behaviour.release
    return Plan(patience, pauses, no_js, release, visitor_seed(seed, index) ^ 0x5EED)


@dataclass(slots=True)
class CookieJar:
    """One visitor's cookies, as a browser keeps them: a new cookie replaces the old one of its name,
    cookies expire (on the run's clock), and `Max-Age=0` deletes."""

    cookies: dict[str, tuple[str, float]] = field(default_factory=dict)

    def set(self, name: str, value: str, max_age: float, now: float) -> None:
        if max_age <= 0:
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = (value, now + max_age)

    def values(self, name: str, now: float) -> Sequence[str]:
        found = self.cookies.get(name)
        if found is None:
            return ()
        if found[1] <= now:
            del self.cookies[name]
            return ()
        return (found[0],)

    def header(self, now: float) -> str:
        """A Cookie header for the HTTP driver."""
        live = [(n, v) for n, (v, exp) in self.cookies.items() if exp > now]
        return "; ".join(f"{n}={v}" for n, v in live)

    def clear(self) -> None:
        self.cookies.clear()
