"""A whole simulation as a library call: options in, figures and a report out.

`simulate(options)` reads the config(s) and the arrivals, runs the engine on a virtual clock (once
per config, with the same visitors), and returns a `report.Run`; cli.py prints and writes it.
Everything that can be wrong with the input raises SimulationError with one line for the operator.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from waitroom.build import compile_config
from waitroom.config.durations import format_duration
from waitroom.config.fields import ConfigError
from waitroom.config.overrides import check_room_value, room_key
from waitroom.config.schema import Config
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.rooms.sessions import SecretError, SessionCodec, keys_from_environment
from waitroom.sim.arrivals import ArrivalsError, Format, Hit, JsonFields, Reader, VisitorKey
from waitroom.sim.clock import VirtualClock
from waitroom.sim.crowd import Crowd
from waitroom.sim.engine import Change, Engine, Records
from waitroom.sim.figures import compute
from waitroom.sim.replica import Request
from waitroom.sim.report import Run, Side
from waitroom.sim.stores import Outage, RedisKeys, SimStore
from waitroom.sim.visitors import Behaviour
from waitroom.sim.visits import Visit, build_visits
from waitroom.store.base import Store, StoreError
from waitroom.store.memory import MemoryStore

DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
"""Offset 0 of a run with nothing to anchor it (no recording, no scheduled opening): any fixed
moment would do; a fixed one keeps runs reproducible."""
MAX_SPAN = 7 * 86400.0
MAX_REPLICAS = 64


class SimulationError(Exception):
    """Bad input: one line for the operator."""


@dataclass
class Options:
    config: Path
    arrivals: list[Path] = field(default_factory=list)
    crowd: Crowd | None = None
    format: Format = "auto"
    fields: list[str] = field(default_factory=list)
    visitor: str = "ip+ua"
    session_cookie: str | None = None
    as_recorded: bool = False
    start: float | None = None
    until: float | None = None
    """Seconds after the start."""
    behaviour: Behaviour = field(default_factory=Behaviour)
    seed: int = 1
    replicas: int = 1
    store: str = "memory"
    exact: bool = False
    every: float = 10.0
    against: Path | None = None
    path: str | None = None
    host: str | None = None
    changes: list[str] = field(default_factory=list)
    """`AT ROOM FIELD=VALUE`."""
    outage: str | None = None
    """`AT+D`."""


def program_version() -> str:
    try:
        return version("waitroom")
    except PackageNotFoundError:
        return "unknown"


def _load(path: Path) -> tuple[Config, ClaimVerifier | None, str]:
    try:
        config, _, verifier = compile_config(path)
    except ConfigError as e:
        raise SimulationError(str(e)) from None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = ""
    return config, verifier, digest


def _without_proofs(config: Config) -> tuple[Config, list[str]]:
    """The config with its rooms' proof of work taken out, and those rooms' names. A simulated
    visitor counts as having solved each challenge at once: hashing for every visitor of a crowd
    would take longer than the sale, and a browser's solve (a few tenths of a second before its
    first ask, docs/security.md) changes nobody's place."""
    names = [room.name for room in config.rooms if room.proof_of_work is not None]
    if not names:
        return config, []
    rooms = [room.model_copy(update={"proof_of_work": None}) for room in config.rooms]
    return config.model_copy(update={"rooms": rooms}), names


def _live(config: Config) -> tuple[Config, list[str]]:
    """The config with its shadow rooms made live, and their names: a simulation answers what the
    room would do, which is what a shadow room measures (rooms/shadow.py); its visitors then see
    what they would see once it is live."""
    names = [room.name for room in config.rooms if room.shadow]
    if not names:
        return config, []
    rooms = [room.model_copy(update={"shadow": False}) for room in config.rooms]
    return config.model_copy(update={"rooms": rooms}), names


def _codec(config: Config, seed: int, recorded: bool) -> SessionCodec:
    """Recorded cookies verify with the recording's key (WAITROOM_SECRET, as flow replay); else a
    key of the run's own, from its seed."""
    if recorded:
        try:
            keys = keys_from_environment()
        except SecretError as e:
            raise SimulationError(str(e)) from None
        if keys is not None:
            return SessionCodec(keys, config.session.ttl)
    return SessionCodec([hashlib.sha256(f"waitroom simulate {seed}".encode()).digest()], config.session.ttl)


def _start(options: Options, config: Config, hits: list[Hit]) -> float:
    if options.start is not None:
        return options.start
    openings = [r.opens_at.timestamp() for r in config.rooms if r.opens_at is not None]
    if hits:
        return math.floor(hits[0].at)
    if openings:
        return min(openings) - 600.0
    return DEFAULT_START


def _crowd_request(options: Options, config: Config) -> Request:
    path, host = options.path, options.host
    if path is None:
        if config.rooms:
            path, host = config.rooms[0].match.path_prefix, host or config.rooms[0].match.host
        elif config.rate_limits:
            path = config.rate_limits[0].match.path_prefix
        else:
            raise SimulationError(f"{options.config}: no room or rule to simulate")
    return Request("GET", host or "localhost", path, "", "")


def _changes(options: Options, config: Config, start: float) -> list[Change]:
    from waitroom.config.durations import parse_duration

    out = []
    names = {r.name for r in config.rooms}
    for spec in options.changes:
        parts = spec.split()
        if len(parts) != 3 or "=" not in parts[2]:
            raise SimulationError(
                f'--change: {spec!r} is not "AT ROOM FIELD=VALUE" (e.g. "10m shop new_sessions=500")'
            )
        when, room, setting = parts
        field_name, _, value = setting.partition("=")
        try:
            at = parse_duration(when)
        except ValueError as e:
            raise SimulationError(f"--change: {e}") from None
        if room not in names:
            raise SimulationError(f"--change: no room {room!r} in {options.config}")
        typed: object = int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else value
        try:
            stored = check_room_value(field_name, typed)
        except ValueError as e:
            raise SimulationError(f"--change: {e}") from None
        out.append(Change(start + at, room_key(room, field_name), None if stored == "none" else stored))
    return out


def _outage(options: Options, start: float) -> Outage | None:
    if options.outage is None:
        return None
    from waitroom.config.durations import parse_duration

    when, sep, length = options.outage.partition("+")
    if not sep:
        raise SimulationError(f"--outage: {options.outage!r} is not AT+DURATION (e.g. 10m+2m)")
    try:
        at, seconds = parse_duration(when), parse_duration(length)
    except ValueError as e:
        raise SimulationError(f"--outage: {e}") from None
    if seconds <= 0:
        raise SimulationError("--outage: use AT+DURATION, e.g. 10m+2m")
    return Outage(start + at, seconds)


async def _store(options: Options, clock: VirtualClock) -> tuple[Store, RedisKeys | None]:
    if options.store in ("memory", "memory://"):
        return MemoryStore(clock), None
    url = options.store
    shown = url.split("@")[-1]
    if not url.startswith(("redis://", "rediss://")):
        raise SimulationError(f"--store: {shown!r} is neither memory nor redis://HOST:PORT/DB")
    from waitroom.store.redis import RedisStore

    keys = RedisKeys(url)
    try:
        await keys.check()
    except StoreError as e:
        await keys.remove()
        raise SimulationError(f"{shown}: {e}") from None
    # Without GuardedStore: its deadlines and breaker run on the wall clock; calls here are serial.
    return RedisStore.for_url(url, 5.0, keys.prefix, clock), keys


async def _one(
    options: Options,
    config: Config,
    verifier: ClaimVerifier | None,
    hits: list[Hit],
    crowd_times: list[float],
    start: float,
) -> tuple[Records, list[str]]:
    notes: list[str] = []
    clock = VirtualClock(start)
    inner, keys = await _store(options, clock)
    outage = _outage(options, start)
    store = SimStore(inner, clock, outage)
    changes = _changes(options, config, start)
    codec = _codec(config, options.seed, options.as_recorded)
    visits: list[Visit] = []
    recorded: list[Hit] = []
    if options.as_recorded:
        recorded = hits
    else:
        if hits:
            limiter = RateLimiter(config, MemoryStore(clock), verifier, clock)
            try:
                visits = build_visits(hits, config, limiter)
            except ArrivalsError as e:
                raise SimulationError(f"{', '.join(str(p) for p in options.arrivals)}: {e}") from None
        visits += [Visit(start + t, None) for t in crowd_times]
        visits.sort(key=lambda v: v.at)
    crowd_request = _crowd_request(options, config) if crowd_times else None
    if crowd_request is not None:
        from waitroom.rooms.routing import Router

        route = Router(config).route(crowd_request.host, crowd_request.path)
        if route.room is None and not any(
            crowd_request.path.startswith(r.match.path_prefix) for r in config.rate_limits
        ):
            raise SimulationError(
                f"--path {crowd_request.path}: no room or rule of {options.config} covers it"
            )
    quiet = [(outage.at, outage.at + outage.seconds)] if outage else []
    engine = Engine(
        config,
        visits,
        options.behaviour,
        store=store,
        clock=clock,
        codec=codec,
        verifier=verifier,
        crowd_request=crowd_request,
        recorded=recorded,
        replicas=options.replicas,
        seed=options.seed,
        exact=options.exact,
        changes=changes,
        quiet=quiet,
        every=options.every,
    )
    until = start + min(MAX_SPAN, options.until if options.until is not None else MAX_SPAN)
    try:
        records = await engine.run(until)
    finally:
        await store.close()
        if keys is not None:
            await keys.remove()
    lines = []
    if options.as_recorded:
        order = {(h.source, h.line): i for i, h in enumerate(hits)}  # a delayed answer comes late
        records.requests.sort(key=lambda row: order.get((row[0], row[1]), 0))
        for i, (source, line, room, outcome, rule, rule_outcome) in enumerate(records.requests):
            hit = hits[order[(source, line)]] if (source, line) in order else None
            words = []
            if rule:
                words.append(f"rule {rule} {rule_outcome}")
            elif rule_outcome:
                words.append(f"rate-limit {rule_outcome}")
            if room:
                words.append(f"room {room} {outcome}")
            target = f"{hit.method} {hit.path}" if hit else "?"
            lines.append(f"#{i:03d} {target} -> {' '.join(words) or 'untouched'}")
    if keys is not None and records.wall > records.ended - records.started:
        notes.append(
            "note: the run took longer than the time it simulates; Redis key expiries run in real time"
        )
    return records, lines + notes


async def simulate(options: Options) -> Run:
    """Run the candidate (and `--against` config) over the same arrivals; SimulationError on bad input."""
    if not 1 <= options.replicas <= MAX_REPLICAS:
        raise SimulationError(f"--replicas must be between 1 and {MAX_REPLICAS}")
    if options.as_recorded and not options.arrivals:
        raise SimulationError("--as-recorded needs recorded arrivals (flow files or logs)")
    if options.as_recorded and options.crowd is not None:
        raise SimulationError("--as-recorded decides recorded requests; it takes no --crowd")
    if not options.arrivals and options.crowd is None:
        raise SimulationError("give recorded arrivals (.mitm flows, access logs) and/or --crowd SPEC")
    config, verifier, digest = _load(options.config)
    config, proofs = _without_proofs(config)
    config, shadows = _live(config)
    against = _load(options.against) if options.against else None
    if against is not None:
        stripped, other_proofs = _without_proofs(against[0])
        stripped, other_shadows = _live(stripped)
        against, proofs = (stripped, against[1], against[2]), sorted({*proofs, *other_proofs})
        shadows = sorted({*shadows, *other_shadows})
    reader = Reader(
        config,
        options.format,
        JsonFields(options.fields) if options.fields else JsonFields(),
        VisitorKey(options.visitor),
        options.session_cookie,
    )
    try:
        hits = reader.read(options.arrivals)
    except ArrivalsError as e:
        raise SimulationError(str(e)) from None
    if options.arrivals and not hits:
        raise SimulationError(f"{', '.join(map(str, options.arrivals))}: no request could be read")
    start = _start(options, config, hits)
    crowd_times = options.crowd.times(random.Random(options.seed)) if options.crowd else []
    records, lines = await _one(options, config, verifier, hits, crowd_times, start)
    notes = [line for line in lines if line.startswith("note:")]
    requests = [line for line in lines if not line.startswith("note:")]
    candidate = Side(options.config.name, digest, compute(records, config))
    other = None
    if against is not None and options.against is not None:
        other_records, _ = await _one(options, against[0], against[1], hits, crowd_times, start)
        other = Side(options.against.name, against[2], compute(other_records, against[0]))
    sources = [f'{len(crowd_times):,} from crowd "{options.crowd.spec}"'] if options.crowd else []
    sources += [f"{t.name}" for t in reader.tallies]
    moment = datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")
    notes.insert(
        0, f"start {moment}" + (f", until +{format_duration(options.until)}" if options.until else "")
    )
    if proofs:
        notes.append(f"proof of work not simulated ({', '.join(proofs)}): every visitor solves it at once")
    if shadows:
        notes.append(f"shadow rooms simulated live ({', '.join(shadows)}): what they would do once enforced")
    if options.exact:
        notes.append("exact: every poll asked")
    if options.as_recorded:
        notes.append("as recorded: every request decided at its recorded time, no behaviour model")
    return Run(
        candidate,
        other,
        "; ".join(sources),
        reader.tallies,
        options.seed,
        "as recorded" if options.as_recorded else options.behaviour.describe(crowd=options.crowd is not None),
        _options_json(options),
        program_version(),
        notes=notes,
        requests=requests,
        request_rows=[list(r) for r in records.requests] if options.as_recorded else [],
    )


def _options_json(options: Options) -> dict[str, Any]:
    return {
        "format": options.format,
        "visitor": options.visitor,
        "session_cookie": options.session_cookie,
        "as_recorded": options.as_recorded,
        "replicas": options.replicas,
        "store": "redis" if options.store.startswith("redis") else "memory",
        "exact": options.exact,
        "changes": options.changes,
        "outage": options.outage,
    }
