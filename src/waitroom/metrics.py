"""Prometheus metrics, served on the admin port (never on the proxied port).

One registry per process: the wait room, the store guard and the counter all record into it, and
the admin server exposes it. Label values are bounded by the config (room and rule names, outcomes,
operations, reasons); a client IP, key or token never becomes a label.

Gauges that describe live state (a room's window fill, its block, the store's health) are set just
before each scrape by the admin server (see adminviews.py), from one store read per room.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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


class Metrics:
    # Declared by _declare_event_metrics and _declare_line_metrics, which keep this class short.
    releases: Counter
    tickets_refused: Counter
    queue_length: Gauge
    queue_oldest_wait: Gauge
    queue_eta: Gauge
    room_admissions_per_minute: Gauge
    room_active: Gauge
    room_max_active: Gauge
    prequeue_length: Gauge
    opens_in: Gauge

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.room_requests = Counter(
            "waitroom_room_requests",
            "Requests a room decided, by outcome: admitted (a new visitor let in), session (a valid "
            "session cookie), waiting (the wait-room page).",
            ["room", "outcome"],
            registry=registry,
        )
        self.decision_errors = Counter(
            "waitroom_decision_errors",
            "Requests whose decision raised (a bug): answered with the room's wait answer, the "
            "rule's refusal, or 503 (fail closed); never forwarded undecided.",
            registry=registry,
        )
        self.refused_requests = Counter(
            "waitroom_refused_requests",
            "Requests refused before any decision, by reason: target (ambiguous path, 400/414), "
            "authority (missing, repeated or conflicting host, 400), headers (too large, 431).",
            ["reason"],
            registry=registry,
        )
        self.refused_connections = Counter(
            "waitroom_refused_connections",
            "Client connections closed by the proxy's own bounds, by reason: limit (too many open "
            "connections), header_timeout (no complete request headers in time).",
            ["reason"],
            registry=registry,
        )
        self.store_key_overflows = Counter(
            "waitroom_store_key_overflows",
            "Rate-limit hits the embedded store counted in a rule's shared overflow key, because its "
            "key table was full of live state (see MAX_KEYS in store/memory.py).",
            registry=registry,
        )
        self.bypassed = Counter(
            "waitroom_bypassed_requests", "Requests under a bypass prefix: never queued.", registry=registry
        )
        self.rate_limit_requests = Counter(
            "waitroom_rate_limit_requests",
            "Requests a rate-limit rule decided, by outcome: allowed, limited, shadow_limited, delayed, "
            "rerouted. The rule is the one that refused, or the one closest to its limit.",
            ["rule", "outcome"],
            registry=registry,
        )
        self.decision_duration = Histogram(
            "waitroom_decision_duration_seconds",
            "Time to decide a request, store round trip included, by kind: room or rate_limit.",
            ["kind"],
            buckets=_DECISION_BUCKETS,
            registry=registry,
        )
        self.store_duration = Histogram(
            "waitroom_store_duration_seconds",
            "Time of each call to a remote store (Redis), by operation.",
            ["operation"],
            buckets=_DECISION_BUCKETS,
            registry=registry,
        )
        self.store_errors = Counter(
            "waitroom_store_errors",
            "Remote store calls that failed, by operation and kind: timeout, error, circuit_open.",
            ["operation", "kind"],
            registry=registry,
        )
        self.degraded_decisions = Counter(
            "waitroom_degraded_decisions",
            "Decisions made by the failure policy because the store could not answer, by policy.",
            ["policy"],
            registry=registry,
        )
        _declare_event_metrics(self, registry)  # here: /metrics lists them in this order
        self.shed = Counter(
            "waitroom_shed_requests",
            "Requests shed because the proxy was too busy to get the store's answer in time: the wait "
            "answer or the rule's refusal, never an admission. reason: queue (waited store.max_wait "
            "before asking), store_wait (the answer not read within store.max_wait).",
            ["reason"],
            registry=registry,
        )
        self.rate_limit_fallbacks = Counter(
            "waitroom_rate_limit_fallbacks",
            "Requests a rule keyed by its fallback because its key had no value, by rule and reason: "
            "missing (no header or token), and for JWTs malformed, algorithm, signature, expired, "
            "invalid, claim; no_jwt_config.",
            ["rule", "reason"],
            registry=registry,
        )
        self.counter_operations = Counter(
            "waitroom_counter_operations",
            "Requests the request-counter workload answered, by method and status code.",
            ["method", "status"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "waitroom_config_reloads",
            "Config loads after the start, by result: ok or error (the old config stays).",
            ["result"],
            registry=registry,
        )
        self.admin_actions = Counter(
            "waitroom_admin_actions",
            "Changes made through the admin API, by action.",
            ["action"],
            registry=registry,
        )
        # Live state, set before each scrape.
        self.room_blocked = Gauge(
            "waitroom_room_blocked",
            "1 while the room is blocked (or in queue-all mode).",
            ["room"],
            registry=registry,
        )
        self.room_block_remaining = Gauge(
            "waitroom_room_block_remaining_seconds",
            "Seconds the room's block still lasts.",
            ["room"],
            registry=registry,
        )
        self.room_window_admissions = Gauge(
            "waitroom_room_window_admissions",
            "New visitors admitted in the window ending now (all replicas, with a shared store).",
            ["room"],
            registry=registry,
        )
        _declare_line_metrics(self, registry)  # here: /metrics lists them in this order
        self.room_new_sessions_limit = Gauge(
            "waitroom_room_new_sessions_limit",
            "The room's limit of new visitors per window in force (config or admin override).",
            ["room"],
            registry=registry,
        )
        self.room_mode = Gauge(
            "waitroom_room_mode",
            "1 for the room's mode in force: normal, open (everyone admitted) or queue_all (everyone waits).",
            ["room", "mode"],
            registry=registry,
        )
        self.rule_limit = Gauge(
            "waitroom_rate_limit_limit",
            "The rule's limit in force (config or admin override), requests per `per`.",
            ["rule"],
            registry=registry,
        )
        self.store_up = Gauge(
            "waitroom_store_up",
            "1 when the store answered the last scrape's reads; 0 while it fails (the policy decides).",
            registry=registry,
        )
        self.degraded = Gauge(
            "waitroom_degraded",
            "1 for the failure policy in force while the store is failing (open, closed or local).",
            ["policy"],
            registry=registry,
        )
        self.ready = Gauge(
            "waitroom_ready", "1 when /readyz answers 200 (config loaded, not draining).", registry=registry
        )
        self.inflight = Gauge("waitroom_inflight_requests", "Requests being handled now.", registry=registry)
        self.replicas = Gauge(
            "waitroom_replicas",
            "What on_error: local divides limits by: the ready replicas counted in the cluster "
            "(cluster.discover_replicas), else store.replicas.",
            registry=registry,
        )


def _declare_event_metrics(metrics: Metrics, registry: CollectorRegistry) -> None:
    """The counters of releases and refused tickets (issue 19's events)."""
    metrics.releases = Counter(
        "waitroom_releases",
        "Sessions or tickets ended before their time: by the upstream's Waitroom-Command: release "
        "(header) or the leave path (leave).",
        ["room", "source"],
        registry=registry,
    )
    metrics.tickets_refused = Counter(
        "waitroom_tickets_refused",
        "New tickets refused because the client address had its tickets_per_ip this minute.",
        ["room"],
        registry=registry,
    )


def _declare_line_metrics(metrics: Metrics, registry: CollectorRegistry) -> None:
    """The gauges of fifo lines, admission rates, capacity (max_active) and scheduled openings."""
    metrics.queue_length = Gauge(
        "waitroom_queue_length",
        "A fifo room: visitors waiting in line with a live ticket (all replicas, with a shared store).",
        ["room"],
        registry=registry,
    )
    metrics.queue_oldest_wait = Gauge(
        "waitroom_queue_oldest_wait_seconds",
        "A fifo room: seconds the first visitor in line has waited.",
        ["room"],
        registry=registry,
    )
    metrics.queue_eta = Gauge(
        "waitroom_queue_eta_seconds",
        "A fifo room: the estimated wait a visitor arriving now is shown (0: a place at once).",
        ["room"],
        registry=registry,
    )
    metrics.room_admissions_per_minute = Gauge(
        "waitroom_room_admissions_per_minute",
        "New visitors admitted per minute, measured over the room's window ending now.",
        ["room"],
        registry=registry,
    )
    metrics.room_active = Gauge(
        "waitroom_room_active_sessions",
        "A room with max_active: sessions active now (admitted, not idle for session.ttl, not released).",
        ["room"],
        registry=registry,
    )
    metrics.room_max_active = Gauge(
        "waitroom_room_max_active",
        "A room's cap on active sessions (max_active); absent when it has none.",
        ["room"],
        registry=registry,
    )
    metrics.prequeue_length = Gauge(
        "waitroom_prequeue_length",
        "A room with a scheduled opening: visitors in the pre-queue before it opens (0 after).",
        ["room"],
        registry=registry,
    )
    metrics.opens_in = Gauge(
        "waitroom_room_opens_in_seconds",
        "A room with a scheduled opening: seconds until it opens (0 once open).",
        ["room"],
        registry=registry,
    )


METRICS = Metrics()
"""The process's metrics; import this, never build another Metrics in production code."""
