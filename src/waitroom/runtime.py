"""What the wait room runs on, without mitmproxy's hooks: the loaded config and what is built from it
(deciders, templates, signing keys), the store's lifecycle, the run-time overrides and the clock.

The addons (addon.py) read it and tell it what happened; it never calls back into them, except
through `on_load`, the callbacks run after a config is swapped in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waitroom import config as config_module
from waitroom.config import Config, ConfigError, StoreConfig, compile_config
from waitroom.decide import Decider
from waitroom.drain import Timing
from waitroom.kube import ReplicaWatcher
from waitroom.limits import RateLimiter
from waitroom.metrics import METRICS
from waitroom.overrides import Overrides
from waitroom.replay import ReplayClock
from waitroom.responses import Template
from waitroom.sessions import SecretError, SessionCodec, keys_from_environment
from waitroom.store import Clock, Store, StoreError, open_store
from waitroom.store.guard import BreakerState, GuardedStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
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


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Runtime:
    def __init__(self, default_config: Path = config_module.DEFAULT_CONFIG, clock: Clock = time.time) -> None:
        self.default_config = default_config
        self._base_clock = clock
        self.replay_clock = ReplayClock()
        """Set while a recorded flow is decided (replay.py): the clock reads the recorded time."""
        self.replay = False
        """Flows read from a file are decided (the waitroom_replay option): Redis uses our clock."""
        self.running = False
        """mitmproxy is running: a bad config set at run time is refused, not logged."""
        self.loaded: Loaded | None = None
        self.overrides = Overrides()
        """Run-time settings from the admin API, read from the store (see overrides.py)."""
        self.cluster: ReplicaWatcher | None = None
        """The replica watch (kube.py) when on; operations.py starts and stops it."""
        self.on_load: list[Callable[[], None]] = []
        """Called after each config is swapped in (the admin port and replica watch follow it)."""
        self._store: Store | None = None
        self._store_config: StoreConfig | None = None
        self._store_replay = False
        self._ephemeral_key: bytes | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def clock(self) -> float:
        return self.replay_clock() if self.replay_clock.base is not None else self._base_clock()

    async def sleep(self, seconds: float) -> None:
        if self.replay_clock.base is not None:
            await self.replay_clock.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    # --- what the admin port and the operations read ----------------------------------------

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
        return self.cluster.ready if self.cluster is not None else None

    def local_replicas(self) -> int:
        """What `on_error: local` divides limits by now (the live count, else store.replicas)."""
        config = self.config
        return config.store.local_replicas(self.live_replicas()) if config else 1

    def store_failing(self) -> bool:
        store = self._store
        return isinstance(store, GuardedStore) and store.breaker.state is not BreakerState.CLOSED

    def drain_timing(self) -> Timing:
        admin = self.config.admin if self.config else None
        return Timing(admin.shutdown_delay, admin.drain) if admin else Timing(0.0, 0.0)

    # --- overrides --------------------------------------------------------------------------

    async def change_overrides(self, changes: dict[str, str | None]) -> None:
        if self._store is None:
            raise StoreError("no store")
        await self._store.set_overrides(changes)
        self.apply_overrides(await self._store.overrides())

    def apply_overrides(self, values: dict[str, str]) -> None:
        """The one way overrides reach the deciders: both take the same value, replaced whole."""
        if values == self.overrides.values:
            return
        self.overrides = Overrides(values)
        if self.loaded is not None:
            self.loaded.decider.set_overrides(self.overrides)
            self.loaded.limiter.set_overrides(self.overrides)

    # --- load and build ---------------------------------------------------------------------

    def load(self, path: Path, *, host_header_replaced: bool = False) -> None:
        """Build everything from the file and swap it in whole; ConfigError leaves all as it was.
        `host_header_replaced`: reverse mode without keep_host_header (rooms cannot match a host)."""
        self.loaded = self._build(path, host_header_replaced)
        config = self.loaded.config
        log.info(
            "waitroom: %s: %d room(s), %d rate limit(s), store %s",
            path,
            len(config.rooms),
            len(config.rate_limits),
            config.store.url.split("@")[-1],  # never log credentials
        )
        for changed in self.on_load:
            changed()
        METRICS.replicas.set(self.local_replicas())

    def _build(self, path: Path, host_header_replaced: bool) -> Loaded:
        try:
            print_ = fingerprint(path)
        except OSError:
            print_ = ""  # load_config reports the unreadable file
        config, templates, verifier = compile_config(path)
        if host_header_replaced:
            for i, room in enumerate(config.rooms):
                if room.match.host is not None:
                    raise ConfigError(
                        f"{path}: rooms[{i}].match.host: in reverse mode mitmproxy replaces the Host "
                        "header with the upstream's; add --set keep_host_header=true"
                    )
        codec = SessionCodec(self._signing_keys(path, config), config.session.ttl)
        store = self._store_for(config)
        decider = Decider(config, store, codec, self.clock, self.live_replicas)
        limiter = RateLimiter(config, store, verifier, self.clock, self.live_replicas, self.sleep)
        decider.set_overrides(self.overrides)
        limiter.set_overrides(self.overrides)
        needs_host = decider.router.uses_host or any(r.match.host is not None for r in config.rate_limits)
        return Loaded(path, print_, config, decider, limiter, templates, needs_host)

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
                else wanted == self._store_config and self._store_replay == self.replay
            )
            if same:
                return self._store
            self.close_later(self._store.close())
        # Replay decides by the recorded times, on Redis too; live, Redis uses its own clock.
        self._store = open_store(wanted, self.clock, redis_clock=self.clock if self.replay else None)
        self._store_config = wanted
        self._store_replay = self.replay
        if isinstance(self._store, GuardedStore) and not self.replay:
            self.close_later(self._store.warm())  # connected before the first visitor needs it
        return self._store

    def close_later(self, closing: Coroutine[Any, Any, None]) -> None:
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

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
