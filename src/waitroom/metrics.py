"""Prometheus metrics, served on the admin port (never on the proxied port).

One registry per process: the wait room, the store guard and the counter all record into it, and
the admin server exposes it. Label values are bounded by the config (room and rule names, outcomes,
operations, reasons); a client IP, key or token never becomes a label.

The metrics are declared by concern, one frozen dataclass each, and a call site names the concern
it records for: `METRICS.rooms.requests`, `METRICS.store.errors`. /metrics lists them in that order.
Gauges that describe live state (a room's window fill, its block, the store's health) are set just
before each scrape by the admin server (ops/views.py), from one store read per room.

Under `waitroom serve --workers N` each worker records into prometheus-client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by workers.py) and the supervisor adds them up: counters and
histograms sum over every worker that ever ran; each gauge says how (`multiprocess_mode`): the
state of the store or the config is the most recent value any live worker wrote, a process's own
state (in flight, ready, the store's health from its side) is summed, or the worst one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from waitroom import build_info

# A counter's `_created` twin (its creation time, one more series per counter and label set) is a
# series nobody queries: Prometheus gets a counter's resets from the counter itself.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Decisions are fast: microseconds for a session, a Redis round trip (~0.1-1 ms) for a new visitor.
_DECISION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


@dataclass(frozen=True)
class RoomMetrics:
    """A room's decisions, and its window, limit, mode and block in force (set before each scrape)."""

    requests: Counter
    window_admissions: Gauge
    admissions_per_minute: Gauge
    new_sessions_limit: Gauge
    mode: Gauge
    blocked: Gauge
    block_remaining: Gauge

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> RoomMetrics:
        return cls(
            requests=Counter(
                "waitroom_room_requests",
                "Requests a room decided, by outcome: admitted (a new visitor let in), session (a valid "
                "session cookie), waiting (the wait-room page).",
                ["room", "outcome"],
                registry=registry,
            ),
            window_admissions=Gauge(
                "waitroom_room_window_admissions",
                "New visitors admitted in the window ending now (all replicas, with a shared store).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            admissions_per_minute=Gauge(
                "waitroom_room_admissions_per_minute",
                "New visitors admitted per minute, measured over the room's window ending now.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            new_sessions_limit=Gauge(
                "waitroom_room_new_sessions_limit",
                "The room's limit of new visitors per window in force (config or admin override).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            mode=Gauge(
                "waitroom_room_mode",
                "1 for the room's mode in force: normal, open (everyone admitted) or queue_all "
                "(everyone waits).",
                ["room", "mode"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            blocked=Gauge(
                "waitroom_room_blocked",
                "1 while the room is blocked (or in queue-all mode).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            block_remaining=Gauge(
                "waitroom_room_block_remaining_seconds",
                "Seconds the room's block still lasts.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class LineMetrics:
    """A fifo room's line: who waits, for how long, the tickets it refused and the proofs of work."""

    length: Gauge
    oldest_wait: Gauge
    eta: Gauge
    tickets_refused: Counter
    proofs: Counter
    polls: Counter
    view_heartbeats: Counter
    called_in_outage: Counter

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> LineMetrics:
        return cls(
            length=Gauge(
                "waitroom_queue_length",
                "A fifo room: visitors waiting in line with a live ticket (all replicas, with a shared "
                "store).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            oldest_wait=Gauge(
                "waitroom_queue_oldest_wait_seconds",
                "A fifo room: seconds the first visitor in line has waited.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            eta=Gauge(
                "waitroom_queue_eta_seconds",
                "A fifo room: the estimated wait a visitor arriving now is shown (0: a place at once; "
                "-1: no honest figure, the cap full and nobody leaving).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            tickets_refused=Counter(
                "waitroom_tickets_refused",
                "New places (tickets, entries, draws) refused to a client address: its tickets_per_ip this "
                "minute, or the places_per_ip it holds.",
                ["room"],
                registry=registry,
            ),
            proofs=Counter(
                "waitroom_proofs",
                "A room with proof_of_work: newcomers' proofs by result (challenged: none sent, a "
                "challenge answered; accepted; invalid; expired; spent: its place was used already).",
                ["room", "result"],
                registry=registry,
            ),
            polls=Counter(
                "waitroom_queue_polls",
                "A fifo room: polls of waiting tickets, by who answered (view: this replica's line view, "
                "no store call; store).",
                ["room", "answered_by"],
                registry=registry,
            ),
            view_heartbeats=Counter(
                "waitroom_queue_view_heartbeats",
                "A fifo room: heartbeats of tickets answered from the line view, by outcome (sent: in "
                "the batched call per room per second; failed: the call failed, their next polls ask "
                "the store).",
                ["room", "outcome"],
                registry=registry,
            ),
            called_in_outage=Counter(
                "waitroom_queue_called_in_outage",
                "A fifo room: tickets let in while the store was away, because it had called them "
                "before (their places are held in the window and the cap; written back when it answers).",
                ["room"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class CapacityMetrics:
    """A room's cap on active sessions, the releases that free a place, and its scheduled opening."""

    active: Gauge
    max_active: Gauge
    releases: Counter
    leaves_refused: Counter
    prequeue_length: Gauge
    opens_in: Gauge

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> CapacityMetrics:
        return cls(
            active=Gauge(
                "waitroom_room_active_sessions",
                "A room with max_active: sessions active now (admitted, not idle for session.ttl, not "
                "released).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            max_active=Gauge(
                "waitroom_room_max_active",
                "A room's cap on active sessions (max_active); absent when it has none.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            releases=Counter(
                "waitroom_releases",
                "Sessions or tickets ended before their time: by the upstream's Waitroom-Command: release "
                "(header) or the leave path (leave).",
                ["room", "source"],
                registry=registry,
            ),
            leaves_refused=Counter(
                "waitroom_leave_refused",
                "Requests to the leave path refused before any cookie was read, by reason: origin (not "
                "sent by this site's own pages, 403), rate (too many from one address, 429).",
                ["reason"],
                registry=registry,
            ),
            prequeue_length=Gauge(
                "waitroom_prequeue_length",
                "A room with a scheduled opening: visitors in the pre-queue before it opens (0 after).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            opens_in=Gauge(
                "waitroom_room_opens_in_seconds",
                "A room with a scheduled opening: seconds until it opens (0 once open).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class ShadowMetrics:
    """A shadow room (rooms[].shadow): what it would have done, while it forwards everyone; the
    gauges are set before each scrape from the shadow's own state (its keys, not the live room's)."""

    requests: Counter
    errors: Counter
    active: Gauge
    window_admissions: Gauge
    blocked_for: Gauge
    length: Gauge
    eta: Gauge
    jar: Gauge

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> ShadowMetrics:
        return cls(
            requests=Counter(
                "waitroom_shadow_requests",
                "Requests a shadow room decided and forwarded, by what the live room would have done "
                "(would: would_admit, would_wait, would_refuse) and its outcome (as waitroom_room_requests: "
                "admitted, session, waiting, refused, closed).",
                ["room", "would", "outcome"],
                registry=registry,
            ),
            errors=Counter(
                "waitroom_shadow_errors",
                "Requests whose shadow decision raised (a bug): forwarded all the same, not counted above.",
                ["room"],
                registry=registry,
            ),
            active=Gauge(
                "waitroom_shadow_room",
                "1 while the room is a shadow (config or admin API), 0 while it is live.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            window_admissions=Gauge(
                "waitroom_shadow_window_admissions",
                "A shadow room: visitors it would have admitted in the window ending now.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            blocked_for=Gauge(
                "waitroom_shadow_block_remaining_seconds",
                "A shadow `block` room: seconds its block would still last (a newcomer would wait so long).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            length=Gauge(
                "waitroom_shadow_queue_length",
                "A shadow `fifo` room: visitors who would be waiting in line now.",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            eta=Gauge(
                "waitroom_shadow_eta_seconds",
                "A shadow room: the wait a visitor arriving now would be told (fifo: the line's estimate; "
                "block: the block's remaining seconds; 0: admitted at once).",
                ["room"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            jar=Gauge(
                "waitroom_shadow_identities",
                "Shadow identities (address and User-Agent) this process remembers the room's cookies for.",
                multiprocess_mode="livesum",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class RateLimitMetrics:
    """A rule's decisions, the requests it keyed by its fallback, and its limit in force."""

    requests: Counter
    fallbacks: Counter
    limit: Gauge

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> RateLimitMetrics:
        return cls(
            requests=Counter(
                "waitroom_rate_limit_requests",
                "Requests a rate-limit rule decided, by outcome: allowed, limited, shadow_limited, delayed, "
                "rerouted. The rule is the one that refused, or the one closest to its limit.",
                ["rule", "outcome"],
                registry=registry,
            ),
            fallbacks=Counter(
                "waitroom_rate_limit_fallbacks",
                "Requests a rule keyed by its fallback because its key had no value, by rule and reason: "
                "missing (no header or token), and for JWTs malformed, algorithm, signature, expired, "
                "invalid, claim; no_jwt_config.",
                ["rule", "reason"],
                registry=registry,
            ),
            limit=Gauge(
                "waitroom_rate_limit_limit",
                "The rule's limit in force (config or admin override), requests per `per`.",
                ["rule"],
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class StoreMetrics:
    """The store's calls and health, and what its failures and slowness cost the requests."""

    duration: Histogram
    errors: Counter
    up: Gauge
    degraded: Gauge
    degraded_decisions: Counter
    shed: Counter
    key_overflows: Counter
    key_evictions: Counter

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> StoreMetrics:
        return cls(
            duration=Histogram(
                "waitroom_store_duration_seconds",
                "Time of each call to a remote store (Redis), by operation.",
                ["operation"],
                buckets=_DECISION_BUCKETS,
                registry=registry,
            ),
            errors=Counter(
                "waitroom_store_errors",
                "Remote store calls that failed, by operation and kind: timeout, error, circuit_open.",
                ["operation", "kind"],
                registry=registry,
            ),
            up=Gauge(
                "waitroom_store_up",
                "1 when the store answered the last scrape's reads; 0 while it fails (the policy decides).",
                multiprocess_mode="livemin",
                registry=registry,
            ),
            degraded=Gauge(
                "waitroom_degraded",
                "1 for the failure policy in force while the store is failing (open, closed or local).",
                ["policy"],
                multiprocess_mode="livemax",
                registry=registry,
            ),
            degraded_decisions=Counter(
                "waitroom_degraded_decisions",
                "Decisions made by the failure policy because the store could not answer, by policy.",
                ["policy"],
                registry=registry,
            ),
            shed=Counter(
                "waitroom_shed_requests",
                "Requests shed because the proxy was too busy to get the store's answer in time: the wait "
                "answer or the rule's refusal, never an admission. reason: queue (waited store.max_wait "
                "before asking), store_wait (the answer not read within store.max_wait), door (answered at "
                "waitroom serve's front door: the loop ran more than store.max_wait late).",
                ["reason"],
                registry=registry,
            ),
            key_overflows=Counter(
                "waitroom_store_key_overflows",
                "Rate-limit hits the embedded store counted in a rule's shared overflow key, because its "
                "key table was full of keys at their limit (see MAX_KEYS in store/memory.py).",
                registry=registry,
            ),
            key_evictions=Counter(
                "waitroom_store_key_evictions",
                "Rate-limit keys the embedded store evicted, least recently used first, to make room for a "
                "new key in its full table; a key at its limit is never evicted.",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class ProxyMetrics:
    """The proxy's connections and requests, whichever decider answers them."""

    refused_connections: Counter
    refused_requests: Counter
    bypassed: Counter
    inflight: Gauge
    decision_duration: Histogram
    decision_errors: Counter
    client_ip_invalid: Counter

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> ProxyMetrics:
        return cls(
            refused_connections=Counter(
                "waitroom_refused_connections",
                "Client connections closed by the proxy's own bounds, by reason: limit (too many open "
                "connections), header_timeout (no complete request headers in time).",
                ["reason"],
                registry=registry,
            ),
            refused_requests=Counter(
                "waitroom_refused_requests",
                "Requests refused before any decision, by reason: target (ambiguous path, 400/414), "
                "authority (missing, repeated or conflicting host, 400), headers (too large, 431).",
                ["reason"],
                registry=registry,
            ),
            bypassed=Counter(
                "waitroom_bypassed_requests",
                "Requests under a bypass prefix: never queued.",
                registry=registry,
            ),
            inflight=Gauge(
                "waitroom_inflight_requests",
                "Requests being handled now.",
                multiprocess_mode="livesum",
                registry=registry,
            ),
            decision_duration=Histogram(
                "waitroom_decision_duration_seconds",
                "Time to decide a request, store round trip included, by kind: room or rate_limit.",
                ["kind"],
                buckets=_DECISION_BUCKETS,
                registry=registry,
            ),
            decision_errors=Counter(
                "waitroom_decision_errors",
                "Requests whose decision raised (a bug): answered with the room's wait answer, the "
                "rule's refusal, or 503 (fail closed); never forwarded undecided.",
                registry=registry,
            ),
            client_ip_invalid=Counter(
                "waitroom_client_ip_invalid",
                "Readings of a client address from a trusted forwarded header (client_ip) whose value "
                "was no address: the TCP peer was counted instead.",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class ProcessMetrics:
    """The process as operators run it: its build, the config in force, readiness, the replicas it
    counts, reloads and admin changes."""

    build: Info
    config: Info
    config_reload_refused: Gauge
    config_reload_success: Gauge
    ready: Gauge
    replicas: Gauge
    config_reloads: Counter
    admin_actions: Counter

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> ProcessMetrics:
        build = Info(
            "waitroom_build",
            "The running build: waitroom's version, mitmproxy's and Python's (always 1).",
            registry=registry,
        )
        build.info(build_info())
        return cls(
            build=build,
            config=Info(
                "waitroom_config",
                "The config file in force: the SHA-256 of its bytes (compare with `sha256sum FILE`).",
                registry=registry,
            ),
            config_reload_refused=Gauge(
                "waitroom_config_reload_refused",
                "1 while the config file on disk was refused and an older config is in force; 0 after a "
                "good load.",
                multiprocess_mode="livemax",
                registry=registry,
            ),
            config_reload_success=Gauge(
                "waitroom_config_last_reload_success_timestamp_seconds",
                "When the config in force was loaded (Unix time).",
                multiprocess_mode="livemin",
                registry=registry,
            ),
            ready=Gauge(
                "waitroom_ready",
                "1 when /readyz answers 200 (config loaded, not draining).",
                multiprocess_mode="livemin",
                registry=registry,
            ),
            replicas=Gauge(
                "waitroom_replicas",
                "What on_error: local divides limits by: the ready replicas counted in the cluster "
                "(cluster.discover_replicas), else store.replicas.",
                multiprocess_mode="livemostrecent",
                registry=registry,
            ),
            config_reloads=Counter(
                "waitroom_config_reloads",
                "Config loads after the start, by result: ok or error (the old config stays).",
                ["result"],
                registry=registry,
            ),
            admin_actions=Counter(
                "waitroom_admin_actions",
                "Changes made through the admin API, by action.",
                ["action"],
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class CounterMetrics:
    """The request-counter workload, when it runs in the process."""

    operations: Counter
    paths_refused: Counter

    @classmethod
    def declare(cls, registry: CollectorRegistry) -> CounterMetrics:
        return cls(
            operations=Counter(
                "waitroom_counter_operations",
                "Requests the request-counter workload answered, by method and status code.",
                ["method", "status"],
                registry=registry,
            ),
            paths_refused=Counter(
                "waitroom_counter_paths_refused",
                "PUTs to a new path the request counter refused (507) because it held counter_max_paths "
                "paths already.",
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class Metrics:
    """The process's registry and its metrics, by concern."""

    registry: CollectorRegistry
    rooms: RoomMetrics
    line: LineMetrics
    capacity: CapacityMetrics
    shadow: ShadowMetrics
    rate_limits: RateLimitMetrics
    store: StoreMetrics
    proxy: ProxyMetrics
    process: ProcessMetrics
    counter: CounterMetrics

    @classmethod
    def declare(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            rooms=RoomMetrics.declare(registry),
            line=LineMetrics.declare(registry),
            capacity=CapacityMetrics.declare(registry),
            shadow=ShadowMetrics.declare(registry),
            rate_limits=RateLimitMetrics.declare(registry),
            store=StoreMetrics.declare(registry),
            proxy=ProxyMetrics.declare(registry),
            process=ProcessMetrics.declare(registry),
            counter=CounterMetrics.declare(registry),
        )


_FOLLOWED: dict[int, tuple[Gauge, Callable[[], float]]] = {}


def follow(gauge: Gauge, read: Callable[[], float]) -> None:
    """`gauge.set_function(read)`, kept where prometheus-client's multiprocess mode (`waitroom serve
    --workers N`) reads the values from files, where a function is never called: `settle_followed`
    writes its value there before each scrape."""
    gauge.set_function(read)
    _FOLLOWED[id(gauge)] = (gauge, read)


def settle_followed() -> None:
    """Write every followed gauge's value now (a no-op for the scrape of a single process, where
    the function is read at scrape time anyway)."""
    for gauge, read in _FOLLOWED.values():
        gauge.set(read())


METRICS = Metrics.declare()
"""The process's metrics; import this, never declare another Metrics in production code."""
