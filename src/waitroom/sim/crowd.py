"""`--crowd`: a synthetic crowd, written as operators say it: "50000 over 5m, then 200/min for 1h".

    crowd    = phase { ("," | ";") [ "then" ] phase }
    phase    = count "over" duration [ "evenly" | "front" | "ramp" ]   N arrivals over D
             | count "at once"                                          N within one second
             | rate "/" ( "s" | "min" | "m" | "h" ) "for" duration      Poisson arrivals at that rate
             | "pause" duration                                         nobody new
    count    = digits [ "k" | "M" ], or digits grouped by "," or "_" (50,000)
    duration = as in the config file: 500ms, 90s, 5m, 1h, 1d

`evenly` (the default) draws each arrival uniformly over the phase, `front` exponentially with a
mean of a quarter of it (cut at its end: most come early), `ramp` with a density that rises
linearly (most come late). Phases follow each other. The draws come from the run's seed.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

from waitroom.config.durations import format_duration, parse_duration

MAX_VISITORS = 10_000_000
MAX_SPAN = 7 * 86400.0

Shape = Literal["evenly", "front", "ramp", "once", "rate", "pause"]
_PER = {"s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<duration>\d+(?:\.\d+)?(?:ms|s|m|h|d)(?![A-Za-z]))
    | (?P<count>\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?:_\d{3})+(?!\d)|\d+(?:\.\d+)?[kM]?(?![A-Za-z]))
    | (?P<word>[A-Za-z]+)
    | (?P<sep>[,;/])
    )""",
    re.VERBOSE,
)


class CrowdError(ValueError):
    """A spec that does not parse: `column` (1-based) is where the trouble is."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


@dataclass(frozen=True, slots=True)
class Phase:
    shape: Shape
    span: float
    """Seconds the phase lasts (at once: 1 s)."""
    count: int = 0
    """Arrivals (a `rate` phase: its expected number)."""
    rate: float = 0.0
    """Arrivals per second (a `rate` phase)."""

    def describe(self) -> str:
        if self.shape == "pause":
            return f"pause {_dur(self.span)}"
        if self.shape == "once":
            return f"{self.count:,} at once"
        if self.shape == "rate":
            return f"{self.rate * 60:g}/min for {_dur(self.span)}"
        return f"{self.count:,} over {_dur(self.span)}" + ("" if self.shape == "evenly" else f" {self.shape}")


@dataclass(frozen=True, slots=True)
class Crowd:
    spec: str
    phases: tuple[Phase, ...]

    @property
    def span(self) -> float:
        return sum(p.span for p in self.phases)

    @property
    def expected(self) -> int:
        return sum(p.count for p in self.phases)

    def times(self, rng: random.Random) -> list[float]:
        """Arrival times, in seconds from the start, ascending."""
        out: list[float] = []
        begin = 0.0
        for phase in self.phases:
            out.extend(begin + t for t in _draw(phase, rng))
            begin += phase.span
        out.sort()
        return out


def _draw(phase: Phase, rng: random.Random) -> list[float]:
    span, n = phase.span, phase.count
    match phase.shape:
        case "pause":
            return []
        case "once":
            return [rng.random() for _ in range(n)]
        case "evenly":
            return [rng.random() * span for _ in range(n)]
        case "ramp":
            return [span * math.sqrt(rng.random()) for _ in range(n)]
        case "front":
            # Exponential with mean span/4, cut at the span: the inverse of its truncated CDF.
            cut = 1.0 - math.exp(-4.0)
            return [-span / 4.0 * math.log1p(-rng.random() * cut) for _ in range(n)]
        case "rate":
            times: list[float] = []
            t = 0.0
            while len(times) < MAX_VISITORS:
                t += rng.expovariate(phase.rate)
                if t >= span:
                    break
                times.append(t)
            return times
    raise AssertionError(phase.shape)


def _dur(seconds: float) -> str:
    return format_duration(seconds)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    column: int


def _tokens(spec: str) -> list[_Token]:
    tokens, at = [], 0
    while at < len(spec):
        if spec[at:].strip() == "":
            break
        m = _TOKEN.match(spec, at)
        if m is None or m.end() == at:
            column = at + len(spec[at:]) - len(spec[at:].lstrip()) + 1
            raise CrowdError(f"unexpected {spec[column - 1]!r}", column)
        kind = m.lastgroup or ""
        tokens.append(_Token(kind, m.group(kind), m.start(kind) + 1))
        at = m.end()
    return tokens


def _count(token: _Token) -> int:
    text = token.text.replace(",", "").replace("_", "")
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    value = float(text.rstrip("kM")) * scale
    if not value.is_integer():
        raise CrowdError(f"{token.text} is not a whole number of visitors", token.column)
    return int(value)


def parse_crowd(spec: str) -> Crowd:
    """The crowd a spec describes; CrowdError (with the column) if it does not parse."""
    if len(spec) > 1000:
        raise CrowdError("the spec is longer than 1000 characters", 1001)
    tokens = _tokens(spec)
    if not tokens:
        raise CrowdError('empty; e.g. "50000 over 5m, then 200/min for 1h"', 1)
    end = _Token("end", "", len(spec) + 1)
    pos = 0

    def peek(offset: int = 0) -> _Token:
        return tokens[pos + offset] if pos + offset < len(tokens) else end

    def take(kind: str, what: str) -> _Token:
        nonlocal pos
        token = peek()
        if token.kind != kind:
            found = f"{token.text!r}" if token.text else "the end"
            raise CrowdError(f"expected {what}, found {found}", token.column)
        pos += 1
        return token

    def duration() -> float:
        token = peek()
        if token.kind == "count" and token.text.isdigit():  # plain seconds
            take("count", "a duration")
            seconds = float(token.text)
        else:
            token = take("duration", "a duration (500ms, 90s, 5m, 1h, 1d)")
            seconds = parse_duration(token.text)
        if seconds <= 0:
            raise CrowdError("a duration must be more than 0", token.column)
        return seconds

    phases: list[Phase] = []
    while True:
        first = peek()
        if first.kind == "word" and first.text.lower() == "pause":
            pos += 1
            phases.append(Phase("pause", duration()))
        else:
            counted = take("count", 'a number of visitors, a rate (200/min) or "pause"')
            n = _count(counted) if peek().text != "/" else 0
            word = peek()
            if word.kind == "sep" and word.text == "/":
                pos += 1
                unit = take("word", "a unit after / (s, min, h)")
                per = _PER.get(unit.text)
                if per is None:
                    raise CrowdError(f"unknown unit {unit.text!r} (s, min, h)", unit.column)
                rate = float(counted.text.replace(",", "").replace("_", "").rstrip("kM")) * {
                    "k": 1_000,
                    "M": 1_000_000,
                }.get(counted.text[-1:], 1)
                if rate <= 0:
                    raise CrowdError("a rate must be more than 0", counted.column)
                token = take("word", '"for" and a duration')
                if token.text.lower() != "for":
                    raise CrowdError(f'expected "for", found {token.text!r}', token.column)
                span = duration()
                phases.append(Phase("rate", span, round(rate / per * span), rate / per))
            elif word.kind == "word" and word.text.lower() == "over":
                pos += 1
                span = duration()
                shape: Shape = "evenly"
                nxt = peek()
                if nxt.kind == "word" and nxt.text.lower() in ("evenly", "front", "ramp"):
                    pos += 1
                    shape = nxt.text.lower()  # type: ignore[assignment]
                phases.append(Phase(shape, span, n))
            elif word.kind == "word" and word.text.lower() == "at":
                pos += 1
                token = take("word", '"once"')
                if token.text.lower() != "once":
                    raise CrowdError(f'expected "at once", found "at {token.text}"', token.column)
                phases.append(Phase("once", 1.0, n))
            else:
                found = f"{word.text!r}" if word.text else "the end"
                raise CrowdError(
                    f'expected "over", "at once" or "/" after {counted.text}, found {found}', word.column
                )
        nxt = peek()
        if nxt is end:
            break
        if nxt.kind != "sep" or nxt.text not in ",;":
            raise CrowdError(f'expected "," or ";" between phases, found {nxt.text!r}', nxt.column)
        pos += 1
        if peek().kind == "word" and peek().text.lower() == "then":
            pos += 1
    crowd = Crowd(spec, tuple(phases))
    if crowd.expected > MAX_VISITORS:
        raise CrowdError(f"{crowd.expected:,} visitors; at most {MAX_VISITORS:,}", 1)
    if crowd.span > MAX_SPAN:
        raise CrowdError(f"lasts {_dur(crowd.span)}; at most 7d", 1)
    return crowd
