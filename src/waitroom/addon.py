"""The mitmproxy addon: options, config (re)loading, and the request/response hooks.

Everything that decides lives in `decide`; everything that answers lives in `responses`. This class
only translates between mitmproxy flows and those plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import resource
import secrets
import signal
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, exceptions, http

from waitroom import config as config_module
from waitroom import early
from waitroom.admin import AdminServer
from waitroom.config import Config, ConfigError, StoreConfig, compile_config
from waitroom.decide import Decider, Decision, Outcome, cookie_name
from waitroom.drain import Drain, Timing
from waitroom.identity import client_is_https
from waitroom.kube import ReplicaWatcher, start_replica_watch
from waitroom.limits import LimitDecision, LimitOutcome, RateLimiter, RequestFacts
from waitroom.metrics import METRICS
from waitroom.overrides import OVERRIDES_REFRESH, Overrides
from waitroom.replay import (
    METADATA_KEY,
    ReplayClock,
    Summary,
    describe,
    not_recorded_answer,
    proxy_answered,
    strip_proxy_headers,
)
from waitroom.responses import (
    POLL_HEADER,
    Answer,
    Template,
    admitted_poll_answer,
    limited_answer,
    problem_answer,
    rate_limit_headers,
    set_cookie,
    wait_answer,
)
from waitroom.routing import normalize_host
from waitroom.sessions import SecretError, SessionCodec, keys_from_environment
from waitroom.store import Clock, Overloaded, Store, StoreError, open_store
from waitroom.store.guard import BreakerState, GuardedStore
from waitroom.target import Refused, judge_authority, judge_target

log = logging.getLogger(__name__)

_SET_COOKIE_KEY = "waitroom.set_cookie"
_EXTRA_HEADERS_KEY = "waitroom.response_headers"
_DECISION_LOG_KEY = "waitroom.decision_log"
_DECIDED_KEY = "waitroom.decided"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The request path's metric series, looked up once: prometheus-client's labels() takes a lock and
# builds a key on every call.
_ROOM_DECISIONS = METRICS.decision_duration.labels("room")
_LIMIT_DECISIONS = METRICS.decision_duration.labels("rate_limit")


@functools.cache
def _room_requests(room: str, outcome: str) -> Any:
    return METRICS.room_requests.labels(room, outcome)  # room names come from the config: bounded


@functools.cache
def _rate_limit_requests(rule: str, outcome: str) -> Any:
    return METRICS.rate_limit_requests.labels(rule, outcome)


WATCH_INTERVAL = 1.0
"""Seconds between two looks at the config file (a Kubernetes ConfigMap update is a file change)."""
ERROR_LOG_INTERVAL = 10.0
"""At most one log line per this many seconds about decisions that raised (the metric counts all)."""


def _auto_max_connections() -> int:
    """Half the open-file limit (each proxied connection may hold an upstream socket too), less a
    reserve for the store, the admin port and the config file; at least 64."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(64, (soft - 128) // 2)


@dataclass(slots=True)
class _Connection:
    """A client connection, for the header timeout: armed while no request is in flight on it."""

    timer: asyncio.TimerHandle | None = None
    open_flows: int = 0
    upgraded: bool = False
    """A WebSocket (or other upgrade): no more HTTP requests will come, so no header timeout."""


class _ErrorLog:
    """One line per ERROR_LOG_INTERVAL about decisions that raised, with how many were not logged;
    the exception's type and where it was raised, never its message (it may hold header values)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = 0.0
        self._suppressed = 0

    def report(self, error: BaseException, method: str) -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        log.error(
            "waitroom: a decision failed with %s at %s; answered closed (%s request)%s",
            type(error).__name__,
            where,
            method if method in _METHODS else "other",
            more,
        )
        self._next, self._suppressed = now + ERROR_LOG_INTERVAL, 0


@dataclass(frozen=True, slots=True)
class _Loaded:
    """Everything built from one config file; swapped whole, so a request sees one config."""

    path: Path
    fingerprint: str
    """SHA-256 of the file's bytes: the watcher reloads only when they change."""
    config: Config
    decider: Decider
    limiter: RateLimiter
    templates: dict[str, Template]
    needs_host: bool = False
    """A room or rule matches on host: a request must name exactly one."""


class WaitRoom:
    def __init__(
        self,
        default_config: Path = config_module.DEFAULT_CONFIG,
        clock: Clock = time.time,
    ) -> None:
        self.default_config = default_config
        self._base_clock = clock
        self._replay_clock = ReplayClock()
        self._replay = False
        self._replay_summary = Summary()
        self.clock: Clock = self._now
        self.loaded: _Loaded | None = None
        self.overrides = Overrides()
        """Run-time settings from the admin API, read from the store (see overrides.py)."""
        self.drain = Drain(self._drain_timing)
        self.addons = [self.drain]
        """mitmproxy runs these after this addon: in-flight tracking and the SIGTERM sequence."""
        self._store: Store | None = None
        self._store_config: StoreConfig | None = None
        self._store_replay = False
        self._closing: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._ephemeral_key: bytes | None = None
        self._running = False
        self._admin: AdminServer | None = None
        self._admin_place: tuple[str, int, str | None] | None = None
        self._cluster: ReplicaWatcher | None = None
        self._cluster_place: tuple[str, str | None] | None = None
        self._errors = _ErrorLog()
        self._connections: dict[str, _Connection] = {}
        self.header_timeout = 30.0
        self.max_connections = 0
        self.max_header_bytes = 65536

    def _now(self) -> float:
        return self._replay_clock() if self._replay_clock.base is not None else self._base_clock()

    async def _sleep(self, seconds: float) -> None:
        if self._replay_clock.base is not None:
            await self._replay_clock.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_config",
            str,
            "",
            """
            Path of the waitroom config file (YAML): rooms, bypass prefixes, session cookie, store.
            Empty means the shipped config/waitroom.yaml. A file that does not validate stops the
            start with one line naming the field; at run time (a changed file, or this option set
            again) it is refused with one line and the running config stays.
            """,
        )

        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_replay",
            bool,
            False,
            """
            Decide flows read from a file (mitmdump -nr FILE) as if they arrived live, each at its
            recorded time, and print what every request would have got and a summary per room and
            rule at the end. Set WAITROOM_SECRET as when the flows were recorded, so that recorded
            session cookies verify.
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_header_timeout",
            int,
            30,
            """
            Seconds a client connection may take to send complete request headers, counted from
            the moment it connects or its previous response ended (so also the keep-alive idle
            time); past it the connection is closed. 1 to 600. mitmproxy's own tcp_timeout still
            bounds any other silence (e.g. a body that stops arriving).
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_max_connections",
            int,
            0,
            """
            Client connections open at once; a new one past this is closed at once. 0 (the
            default): half the process's open-file limit, less a reserve.
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_max_header_bytes",
            int,
            65536,
            """
            Largest request header section (names and values, all fields) the wait room reads;
            a larger one is answered 431 and never forwarded. 1024 to 1048576.
            """,
        )
        # The wait answer and 429s go out without reading a request body (see early.py).
        early.install()

    def configure(self, updated: set[str]) -> None:
        if "waitroom_replay" in updated:
            self._replay = bool(ctx.options.waitroom_replay)
        if "waitroom_header_timeout" in updated:
            self.header_timeout = float(_bounded("waitroom_header_timeout", 1, 600))
        if "waitroom_max_connections" in updated:
            wanted = _bounded("waitroom_max_connections", 0, 1_000_000)
            self.max_connections = wanted or _auto_max_connections()
        if "waitroom_max_header_bytes" in updated:
            self.max_header_bytes = _bounded("waitroom_max_header_bytes", 1024, 1_048_576)
        if not updated & {"waitroom_config", "keep_host_header", "mode", "waitroom_replay"}:
            return
        path = Path(ctx.options.waitroom_config or self.default_config).expanduser()
        try:
            self._load(path)
        except ConfigError as e:
            message = f"waitroom: {e}"
            if self._running:
                raise exceptions.OptionsError(message) from None  # mitmproxy keeps the old value
            # At start an exception would print a traceback; one error line makes mitmproxy's
            # errorcheck stop the process with exit status 1 instead.
            log.error(message)

    def _load(self, path: Path) -> None:
        """Build everything from the file and swap it in whole; ConfigError leaves all as it was."""
        self.loaded = self._build(path)
        config = self.loaded.config
        log.info(
            "waitroom: %s: %d room(s), %d rate limit(s), store %s",
            path,
            len(config.rooms),
            len(config.rate_limits),
            config.store.url.split("@")[-1],  # never log credentials
        )
        if self._running:
            self._start_admin()
            self._start_cluster()
        METRICS.replicas.set(self.local_replicas())

    def running(self) -> None:
        self._running = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline (mitmproxy's test context): no admin port, no watchers
            return
        self._start_admin()
        self._start_cluster()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows' Proactor loop
            loop.add_signal_handler(signal.SIGTERM, self.drain.begin)
        self._tasks = [
            loop.create_task(self._watch_config(), name="waitroom: config watcher"),
            loop.create_task(self._refresh_overrides(), name="waitroom: overrides"),
        ]

    async def done(self) -> None:
        if self._replay and self._replay_summary.flows:
            for line in self._replay_summary.lines():
                log.info("waitroom replay: %s", line)
        for task in self._tasks:
            task.cancel()
        if self._admin is not None:
            await self._admin.stop()
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.stop)
            self._cluster = None
        if self._store is not None:
            await self._store.close()

    # --- operations: admin port, reload, drain, overrides ----------------------------------

    @property
    def draining(self) -> bool:
        return self.drain.draining

    @property
    def config(self) -> Config | None:
        return self.loaded.config if self.loaded else None

    @property
    def config_path(self) -> Path | None:
        return self.loaded.path if self.loaded else None

    @property
    def store(self) -> Store | None:
        return self._store

    def live_replicas(self) -> int | None:
        """The ready replicas cluster discovery counts now; None when it is off or has no count yet."""
        return self._cluster.ready if self._cluster is not None else None

    def local_replicas(self) -> int:
        """What `on_error: local` divides limits by now (the live count, else store.replicas)."""
        config = self.config
        return config.store.local_replicas(self.live_replicas()) if config else 1

    def store_failing(self) -> bool:
        store = self._store
        return isinstance(store, GuardedStore) and store.breaker.state is not BreakerState.CLOSED

    async def change_overrides(self, changes: dict[str, str | None]) -> None:
        if self._store is None:
            raise StoreError("no store")
        await self._store.set_overrides(changes)
        self._apply_overrides(await self._store.overrides())

    def _apply_overrides(self, values: dict[str, str]) -> None:
        if values == self.overrides.values:
            return
        self.overrides = Overrides(values)
        if self.loaded is not None:
            self.loaded.decider.set_overrides(self.overrides)
            self.loaded.limiter.set_overrides(self.overrides)

    async def _refresh_overrides(self) -> None:
        """Every replica re-reads the overrides, so a change made on one reaches all of them."""
        while True:
            if self._store is not None:
                try:
                    self._apply_overrides(await self._store.overrides())
                except (StoreError, Overloaded):
                    pass  # keep the last known; the breaker logs the store's failure
                except Exception:
                    log.exception("waitroom: reading the overrides failed")
            await asyncio.sleep(OVERRIDES_REFRESH)

    def _start_admin(self) -> None:
        """Start the admin port, or move it when a reload changed its address or token."""
        config = self.config
        if config is None:
            return
        token = os.environ.get(config.admin.token_env) or None
        place = (config.admin.host, config.admin.port, token) if config.admin.port else None
        if place == self._admin_place:
            return
        old, self._admin = self._admin, None
        if old is not None:
            self._close_later(old.stop())
        self._admin_place = place
        if place is not None:
            host, port, _ = place
            self._admin = AdminServer(self, token)
            try:
                self._admin.start(host, port)
            except OSError as e:
                log.error("waitroom: admin port %s:%d: %s", host, port, e.strerror or e)
                self._admin, self._admin_place = None, None

    def _start_cluster(self) -> None:
        """Start the replica watch (kube.py), or restart it when a reload changed its Service."""
        config = self.config
        if config is None:
            return
        cluster = config.cluster
        place = (cluster.service or "", cluster.namespace) if cluster.discover_replicas else None
        if place == self._cluster_place:
            return
        old, self._cluster = self._cluster, None
        if old is not None:
            self._close_later(_stop_watch(old))
        self._cluster_place = place
        if place is not None:
            self._cluster = start_replica_watch(place[0], place[1], on_change=self._replicas_changed)
        METRICS.replicas.set(self.local_replicas())

    def _replicas_changed(self, ready: int) -> None:
        """Called in the watcher's thread; the decisions read the count themselves."""
        METRICS.replicas.set(self.local_replicas())

    async def _watch_config(self) -> None:
        """Reload when the config file's bytes change; a file that does not validate is refused
        with one log line and the running config stays."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            loaded = self.loaded
            if loaded is None:
                continue
            try:
                fingerprint = _fingerprint(loaded.path)
            except OSError:
                continue  # a ConfigMap update swaps a symlink: the file may be gone for a moment
            if fingerprint == loaded.fingerprint:
                continue
            try:
                self._load(loaded.path)
            except ConfigError as e:
                METRICS.config_reloads.labels("error").inc()
                log.error("waitroom: reload refused, the running config stays: %s", e)
                # Remember the bad bytes, so the same file is not refused again every second.
                self.loaded = dataclasses.replace(loaded, fingerprint=fingerprint)
                continue
            except Exception:
                METRICS.config_reloads.labels("error").inc()
                log.exception("waitroom: reload failed, the running config stays")
                continue
            METRICS.config_reloads.labels("ok").inc()
            log.info("waitroom: reloaded %s", loaded.path)

    def _drain_timing(self) -> Timing:
        admin = self.config.admin if self.config else None
        return Timing(admin.shutdown_delay, admin.drain) if admin else Timing(0.0, 0.0)

    def _build(self, path: Path) -> _Loaded:
        try:
            fingerprint = _fingerprint(path)
        except OSError:
            fingerprint = ""  # load_config reports the unreadable file
        config, templates, verifier = compile_config(path)
        self._check_host_matching(path, config)
        codec = SessionCodec(self._signing_keys(path, config), config.session.ttl)
        store = self._store_for(config)
        decider = Decider(config, store, codec, self.clock, self.live_replicas)
        limiter = RateLimiter(config, store, verifier, self.clock, self.live_replicas, self._sleep)
        decider.set_overrides(self.overrides)
        limiter.set_overrides(self.overrides)
        needs_host = decider.router.uses_host or any(r.match.host is not None for r in config.rate_limits)
        return _Loaded(path, fingerprint, config, decider, limiter, templates, needs_host)

    def _check_host_matching(self, path: Path, config: Config) -> None:
        reverse = any(str(mode).startswith("reverse:") for mode in ctx.options.mode)
        if not reverse or getattr(ctx.options, "keep_host_header", False):
            return
        for i, room in enumerate(config.rooms):
            if room.match.host is not None:
                raise ConfigError(
                    f"{path}: rooms[{i}].match.host: in reverse mode mitmproxy replaces the Host "
                    "header with the upstream's; add --set keep_host_header=true"
                )

    def _signing_keys(self, path: Path, config: Config) -> list[bytes]:
        try:
            keys = keys_from_environment()
        except SecretError as e:
            raise ConfigError(str(e)) from None
        if keys is not None:
            return keys
        if not config.store.url.startswith("memory://"):
            raise ConfigError(
                f"{path}: store.url: a shared store means several replicas, which must share one "
                "signing key: set WAITROOM_SECRET (e.g. `openssl rand -hex 32`)"
            )
        if self._ephemeral_key is None:
            log.warning(
                "waitroom: WAITROOM_SECRET is not set; using a random key, so sessions end "
                "when this process stops"
            )
            self._ephemeral_key = secrets.token_bytes(32)
        return [self._ephemeral_key]

    def _store_for(self, config: Config) -> Store:
        # Keep the store across reloads that do not change it: the embedded one holds the windows.
        wanted = config.store
        if self._store is not None and self._store_config is not None:
            same = (
                wanted.url == self._store_config.url
                if wanted.url.startswith("memory://")
                else wanted == self._store_config and self._store_replay == self._replay
            )
            if same:
                return self._store
            self._close_later(self._store.close())
        # Replay decides by the recorded times, on Redis too; live, Redis uses its own clock.
        self._store = open_store(wanted, self.clock, redis_clock=self.clock if self._replay else None)
        self._store_config = wanted
        self._store_replay = self._replay
        if isinstance(self._store, GuardedStore) and not self._replay:
            self._close_later(self._store.warm())  # connected before the first visitor needs it
        return self._store

    def _close_later(self, closing: Coroutine[Any, Any, None]) -> None:
        """Close something that was replaced (a store, the admin port, a replica watch) without
        holding up the reload that replaced it; also how a new store connects ahead of time."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (offline tools): nothing is connected to close
            closing.close()
            return
        task = loop.create_task(closing)
        self._closing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._closing.discard)

    # --- hooks on the connection: bounds on what a slow or greedy client can hold ---------

    def client_connected(self, client: connection.Client) -> None:
        if len(self._connections) >= self.max_connections > 0:
            client.error = "waitroom: too many open connections"  # mitmproxy closes it at once
            METRICS.refused_connections.labels("limit").inc()
            return
        self._connections[client.id] = conn = _Connection()
        self._arm(client.id, conn)

    def client_disconnected(self, client: connection.Client) -> None:
        conn = self._connections.pop(client.id, None)
        if conn is not None and conn.timer is not None:
            conn.timer.cancel()

    def _arm(self, client_id: str, conn: _Connection) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline (mitmproxy's test context)
            return
        conn.timer = loop.call_later(self.header_timeout, self._header_timeout, client_id)

    def _header_timeout(self, client_id: str) -> None:
        """No complete request headers in time: close the connection, as mitmproxy's own
        tcp_timeout does (by cancelling its handler task; mitmproxy has no public call for it)."""
        conn = self._connections.get(client_id)
        if conn is None or conn.open_flows or conn.upgraded:
            return
        conn.timer = None
        try:
            handler = ctx.master.addons.get("proxyserver").connections[client_id]
            handler.transports[handler.client].handler.cancel("waitroom: header timeout")
        except Exception:  # gone meanwhile, or another mitmproxy layout: tcp_timeout still applies
            return
        METRICS.refused_connections.labels("header_timeout").inc()

    def _flow_started(self, flow: http.HTTPFlow) -> None:
        conn = self._connections.get(flow.client_conn.id)
        if conn is not None:
            conn.open_flows += 1
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None

    def _flow_ended(self, flow: http.HTTPFlow) -> None:
        conn = self._connections.get(flow.client_conn.id)
        if conn is None or not flow.metadata.pop("waitroom.open", False):
            return
        conn.open_flows = max(0, conn.open_flows - 1)
        if flow.websocket is not None or (flow.response is not None and flow.response.status_code == 101):
            conn.upgraded = True
        if not conn.open_flows and not conn.upgraded and conn.timer is None:
            self._arm(flow.client_conn.id, conn)

    # --- hooks on the request path -------------------------------------------------------

    def response(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)
        if self._replay and not flow.live:
            prefix = self.config.session.cookie if self.config else "waitroom"
            log.info("waitroom replay: %s", describe(self._replay_summary.flows, flow, prefix))
            self._replay_summary.add(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def _finished(self, flow: http.HTTPFlow) -> None:
        self._flow_ended(flow)
        entry = flow.metadata.pop(_DECISION_LOG_KEY, None)
        if entry is not None:
            entry["status"] = flow.response.status_code if flow.response else None
            log.info("%s", json.dumps(entry, separators=(",", ":")))

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Decide on the request headers, before any body is read: a visitor who waits, or a
        client over its limit, is answered without uploading a body (see early.py)."""
        if not flow.live:
            return  # flows read from a file are decided in `request` (replay)
        if flow.client_conn.id in self._connections:
            flow.metadata["waitroom.open"] = True
            self._flow_started(flow)
        if flow.response or flow.error:
            return
        await self._decide(flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        if not flow.live:
            if self._replay:
                await self._replayed_request(flow)
            return
        if flow.response or flow.error or flow.metadata.get(_DECIDED_KEY):
            return  # decided on its headers already
        await self._decide(flow)

    async def _replayed_request(self, flow: http.HTTPFlow) -> None:
        """A flow from a file: decide it at its recorded time, as if it were live. When the proxy
        would have forwarded it, the recorded answer stands in for the upstream's."""
        recorded = flow.response
        answered_by_proxy = proxy_answered(flow)
        flow.response = None
        flow.metadata.pop(METADATA_KEY, None)
        self._replay_clock.set(flow.request.timestamp_start)
        try:
            await self._decide(flow)
        finally:
            self._replay_clock.base = None
            if flow.response is None and recorded is not None:
                if answered_by_proxy:  # forwarded now, answered by the proxy then: no upstream answer
                    flow.response = not_recorded_answer()
                else:
                    strip_proxy_headers(recorded, self.config.session.cookie if self.config else "waitroom")
                    flow.response = recorded

    def _judge(self, flow: http.HTTPFlow, loaded: _Loaded) -> tuple[str, str]:
        """(host, path) as decided on, which are also what the upstream receives: the target is
        put in its canonical form (or refused), and the one authority the request names is the
        one that goes on. Raises Refused. See target.py."""
        req = flow.request
        size = 0
        for name, value in req.headers.fields:
            size += len(name) + len(value) + 4
        if size > self.max_header_bytes:
            raise Refused(431, "the request headers are too large", "headers")
        target = judge_target(req.path)
        keep_host = bool(getattr(ctx.options, "keep_host_header", False))
        http1 = not (req.is_http2 or req.is_http3)
        absolute = req.authority if not http1 or req.authority else ""
        if keep_host or not flow.live:
            hosts = req.headers.get_all("host")
            authority = judge_authority(hosts, absolute, required=loaded.needs_host)
            if http1 and req.authority:
                if not hosts:
                    req.headers["Host"] = authority
                req.authority = ""  # origin form: the upstream sees the authority we judged, once
        else:
            # mitmproxy already put the upstream's name in Host; a client's absolute-form authority
            # is neither judged nor forwarded.
            if http1 and req.authority:
                req.authority = ""
            authority = req.host_header or req.host
        if target.forwarded != req.path:
            req.path = target.forwarded
        return normalize_host(authority), target.routing

    async def _decide(self, flow: http.HTTPFlow) -> None:
        loaded = self.loaded
        if loaded is None:  # only between a failed start and the exit it causes
            early.answer_now(flow, http.Response.make(503, b"waitroom is not configured\n"))
            return
        flow.metadata[_DECIDED_KEY] = True
        req = flow.request
        # Time spent in the proxy before this decision (a saturated loop queues requests); a flow
        # from a file was not waiting.
        arrived = req.timestamp_end or req.timestamp_start  # the whole request, or its headers
        waited = max(0.0, time.time() - arrived) if flow.live else 0.0
        try:
            host, path = self._judge(flow, loaded)
        except Refused as e:
            METRICS.refused_requests.labels(e.kind).inc()
            early.answer_now(flow, _response(problem_answer(e.status, e.reason)))
            return
        except Exception as e:  # a bug: nothing is known about the request, so refuse it
            self._fail_closed(flow, loaded, None, None, e)
            return
        stage = "rate_limit"
        try:
            if loaded.decider.router.bypassed(path):
                METRICS.bypassed.inc()
                return
            if loaded.limiter.rules:
                started = time.perf_counter()
                limit = await loaded.limiter.decide(
                    RequestFacts(host, path, req.method, _peer(flow), req.headers.get, waited)
                )
                if limit.outcome is not LimitOutcome.NONE:
                    _LIMIT_DECISIONS.observe(time.perf_counter() - started)
                self._count_limit(limit)
                self._log_decision(flow, loaded, path, limit=limit)
                if self._limit(flow, limit, path):
                    return  # refused or rerouted: no room admission is spent on it
            stage = "room"
            if req.method == "OPTIONS" or not loaded.decider.router.has_rooms:
                return  # CORS preflights carry no cookies: queueing them would break the real request
            started = time.perf_counter()
            decision = await loaded.decider.decide(host, path, _cookie_reader(req), waited)
            if decision.room is not None:
                _ROOM_DECISIONS.observe(time.perf_counter() - started)
                _room_requests(decision.room.name, decision.outcome.value).inc()
                if decision.degraded is not None:
                    METRICS.degraded_decisions.labels(decision.degraded.value).inc()
                self._log_decision(flow, loaded, path, decision=decision)
            self._act(flow, loaded, decision)
        except Exception as e:  # a bug must never be a free pass, nor a traceback per request
            self._fail_closed(flow, loaded, host, path, e, stage=stage)

    def _fail_closed(
        self,
        flow: http.HTTPFlow,
        loaded: _Loaded,
        host: str | None,
        path: str | None,
        error: Exception,
        *,
        stage: str = "",
    ) -> None:
        """Answer a request whose decision raised: the refusal of the rule it fell under, else
        the wait answer of the room it is in, else 503. Never forwarded."""
        METRICS.decision_errors.inc()
        req = flow.request
        self._errors.report(error, req.method)
        flow.metadata.pop(_SET_COOKIE_KEY, None)
        flow.metadata.pop(_EXTRA_HEADERS_KEY, None)
        answer = problem_answer(503, "the request could not be decided; try again", retry_after=1)
        try:
            if host is not None and path is not None:
                rules = (
                    loaded.limiter.matching(RequestFacts(host, path, req.method, "", lambda _: None))
                    if stage == "rate_limit"
                    else []
                )
                enforcing = [r for r in rules if not r.shadow]
                room = loaded.decider.router.route(host, path).room
                if enforcing:
                    rule = enforcing[0]
                    retry = max(1, math.ceil(rule.per))
                    answer = limited_answer(rule=rule.name, limit=rule.limit, per=rule.per, retry_after=retry)
                elif room is not None:
                    answer = wait_answer(
                        template=loaded.templates[room.name],
                        room=room.name,
                        status=room.status,
                        retry_after=room.retry_after_seconds,
                        blocked_for=0.0,
                        accept=req.headers.get("Accept", ""),
                    )
        except Exception:  # the fallback's own trouble: the plain 503 stands
            pass
        early.answer_now(flow, _response(answer))

    def _count_limit(self, limit: LimitDecision) -> None:
        for fallback in limit.fallbacks:
            rule, _, reason = fallback.partition(":")
            METRICS.rate_limit_fallbacks.labels(rule, reason).inc()
        if limit.degraded is not None:
            METRICS.degraded_decisions.labels(limit.degraded.value).inc()
        for rule in limit.shadow_limited:
            METRICS.rate_limit_requests.labels(rule, LimitOutcome.SHADOW_LIMITED.value).inc()
        if limit.rule is not None and limit.outcome is not LimitOutcome.SHADOW_LIMITED:
            _rate_limit_requests(limit.rule.name, limit.outcome.value).inc()
        elif limit.rule is not None:  # a shadow refusal beside an allowing enforcing rule
            _rate_limit_requests(limit.rule.name, LimitOutcome.ALLOWED.value).inc()

    def _log_decision(
        self,
        flow: http.HTTPFlow,
        loaded: _Loaded,
        path: str,
        *,
        decision: Decision | None = None,
        limit: LimitDecision | None = None,
    ) -> None:
        """A sampled JSON line per decision: no cookie, token, query string or client address."""
        settings = loaded.config.decision_log
        if settings.format == "off" or random.random() >= settings.sample:
            return
        entry: dict[str, object] = flow.metadata.get(_DECISION_LOG_KEY) or {
            "event": "waitroom_decision",
            "time": round(time.time(), 3),
            "method": flow.request.method if flow.request.method in _METHODS else "other",
            "path": path[:256],
        }
        if decision is not None and decision.room is not None:
            entry["room"] = decision.room.name
            entry["outcome"] = decision.outcome.value
            if decision.degraded is not None:
                entry["degraded"] = decision.degraded.value
            if decision.shed is not None:
                entry["shed"] = decision.shed
        if limit is not None and limit.outcome is not LimitOutcome.NONE:
            entry["rule"] = limit.rule.name if limit.rule else None
            entry["rate_limit"] = limit.outcome.value
            if limit.fallbacks:
                entry["fallbacks"] = list(limit.fallbacks)
            if limit.degraded is not None:
                entry["degraded"] = limit.degraded.value
            if limit.shed is not None:
                entry["shed"] = limit.shed
        flow.metadata[_DECISION_LOG_KEY] = entry

    def _limit(self, flow: http.HTTPFlow, limit: LimitDecision, path: str) -> bool:
        """Apply a rate-limit decision; True when the request is answered or sent elsewhere."""
        if limit.outcome is LimitOutcome.NONE:
            return False
        rule, result = limit.rule, limit.result
        flow.metadata.setdefault(METADATA_KEY, {})["rate_limit"] = {
            "outcome": limit.outcome.value,
            "rule": rule.name if rule else None,
            "shadow_limited": list(limit.shadow_limited),
            "fallbacks": list(limit.fallbacks),
        }
        if limit.shadow_limited:
            log.info(
                "waitroom: shadow rate limit %s would refuse %s",
                ",".join(limit.shadow_limited),
                path[:256],
            )
        if rule is None or result is None:
            return False
        if limit.outcome is LimitOutcome.LIMITED:
            answer = limited_answer(
                rule=rule.name, limit=rule.limit, per=rule.per, retry_after=limit.retry_after
            )
            early.answer_now(flow, _response(answer))
            return True
        if limit.outcome is LimitOutcome.REROUTED and limit.upstream:
            _reroute(flow, limit.upstream)
            return True
        headers = rate_limit_headers(rule.name, rule.limit, rule.per, result.remaining, result.reset_after)
        flow.metadata[_EXTRA_HEADERS_KEY] = list(headers.items())
        return False

    def _act(self, flow: http.HTTPFlow, loaded: _Loaded, decision: Decision) -> None:
        room = decision.room
        if room is None:
            return
        flow.metadata.setdefault(METADATA_KEY, {}).update(room=room.name, outcome=decision.outcome.value)
        req = flow.request
        cookie, max_age = decision.cookie, loaded.decider.codec.ttl
        if cookie is None and decision.pending is not None:
            cookie, max_age = decision.pending, max(1, int(room.window))
        if cookie is not None:
            secure = {"true": True, "false": False}.get(loaded.config.session.secure)
            if secure is None:
                secure = client_is_https(
                    loaded.config.client_ip,
                    tls=flow.client_conn.tls_established,
                    forwarded_proto=req.headers.get("X-Forwarded-Proto"),
                )
            flow.metadata[_SET_COOKIE_KEY] = set_cookie(
                cookie_name(loaded.config, room), cookie, max_age, secure
            )
        if decision.outcome is Outcome.WAITING:
            answer = wait_answer(
                template=loaded.templates[room.name],
                room=room.name,
                status=room.status,
                retry_after=room.retry_after_seconds,
                blocked_for=decision.blocked_for,
                accept=req.headers.get("Accept", ""),
            )
            early.answer_now(flow, _response(answer))
        elif req.method == "GET" and POLL_HEADER in req.headers:
            # The wait page asking whether it may come in: answer here, the upstream never sees it.
            early.answer_now(flow, _response(admitted_poll_answer(room.name)))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        cookie = flow.metadata.pop(_SET_COOKIE_KEY, None)
        extra = flow.metadata.pop(_EXTRA_HEADERS_KEY, ())
        if flow.response is None:
            return
        if cookie is not None:
            flow.response.headers.add("Set-Cookie", cookie)
        for name, value in extra:
            flow.response.headers[name] = value


async def _stop_watch(watcher: ReplicaWatcher) -> None:
    await asyncio.to_thread(watcher.stop)


def _reroute(flow: http.HTTPFlow, upstream: str) -> None:
    """Send the request to another upstream (`action: upstream:URL`), keeping its path and query;
    a path in URL is put in front of it. The Host header follows unless keep_host_header is set."""
    target = urlsplit(upstream)
    req = flow.request
    original_host = req.host_header
    req.scheme = target.scheme
    req.host = target.hostname or req.host
    req.port = target.port or (443 if target.scheme == "https" else 80)
    if target.path not in ("", "/"):
        req.path = target.path.rstrip("/") + req.path
    if getattr(ctx.options, "keep_host_header", False) and original_host is not None:
        req.host_header = original_host


def _bounded(option: str, low: int, high: int) -> int:
    value = int(getattr(ctx.options, option))
    if not low <= value <= high:
        raise exceptions.OptionsError(f"{option}: must be from {low} to {high} (got {value})")
    return value


def _cookie_reader(req: http.Request) -> Callable[[str], list[str]]:
    """`name` → every value the Cookie headers carry under it. A plain split, linear in the
    header's size (which max_header_bytes bounds), instead of mitmproxy's full cookie parser."""

    def values(name: str) -> list[str]:
        found = []
        for header in req.headers.get_all("cookie"):
            for pair in header.split(";"):
                key, sep, value = pair.partition("=")
                if sep and key.strip() == name:
                    found.append(value.strip().strip('"'))
        return found

    return values


def _response(answer: Answer) -> http.Response:
    return http.Response.make(answer.status, answer.body, answer.headers)


def _peer(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else ""


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
