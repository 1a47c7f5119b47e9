"""What the wait room runs on, without mitmproxy's hooks: the loaded config and what is built from it
(deciders, templates, signing keys), the store's lifecycle, the run-time overrides and the clock.

The addons (addon.py) read it and tell it what happened; it never calls back into them, except
through `on_load`, the callbacks run after a config is swapped in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waitroom import __version__
from waitroom.addon.drain import Timing
from waitroom.build import compile_config, config_warnings, host_header_problem, named_files
from waitroom.config import schema as config_module
from waitroom.config.diff import config_changes, redact, summarise
from waitroom.config.fields import ConfigError
from waitroom.config.overrides import Overrides
from waitroom.config.schema import Config
from waitroom.config.store import StoreConfig
from waitroom.kube.watch import ReplicaWatcher
from waitroom.metrics import METRICS, follow
from waitroom.ops.views import ReloadRefusal
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.rooms.decider import Decider
from waitroom.rooms.sessions import SecretError, SessionCodec, keys_from_environment
from waitroom.rooms.shadow import Shadow
from waitroom.store import open_store
from waitroom.store.base import Clock, Store, StoreError
from waitroom.store.guard import BreakerState, GuardedStore
from waitroom.store.memory import MemoryStore
from waitroom.web.template import Pages

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
    pages: Pages
    shadow: Shadow
    """The shadow rooms' decisions (rooms/shadow.py)."""
    """The rooms' templates and the strings of every language."""
    needs_host: bool = False
    """A room or rule matches on host: a request must name exactly one."""
    loaded_at: float = 0.0
    """When it was swapped in (Unix time)."""
    files: tuple[Path, ...] = ()
    """The files the config names (templates, JWT keys): a change to one reloads it too."""
    watched: str = ""
    """watch_print of the config file and `files` when they were read."""


class ReplayClock:
    """The recorded time of the flow being replayed. It stands still while the flow is decided (so
    a replay decides alike however busy the machine is) and moves on only when the decision waits
    (a `delay` action), by exactly the time it waits, without waiting for real."""

    def __init__(self) -> None:
        self.base: float | None = None
        self._waited = 0.0

    def set(self, recorded: float) -> None:
        self.base = recorded
        self._waited = 0.0

    def __call__(self) -> float:
        assert self.base is not None
        return self.base + self._waited

    async def sleep(self, seconds: float) -> None:
        self._waited += max(0.0, seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real wait is


def _workers() -> int:
    """How many workers of `waitroom serve --workers N` this process is one of (workers.py sets it)."""
    try:
        return int(os.environ.get("WAITROOM_WORKERS", "1"))
    except ValueError:
        return 1


def fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes, as `sha256sum` prints it: what the startup line, /readyz and
    `waitroom_config_info` name the config by."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def watch_print(path: Path, files: tuple[Path, ...]) -> str:
    """One digest of the config file's bytes and those of every file it names (a missing one
    counts as missing): what the watcher compares each second."""
    digest = hashlib.sha256(fingerprint(path).encode())
    for named in files:
        inside = sorted(named.glob("*.json")) if named.is_dir() else [named]  # a strings folder
        for one in inside:
            try:
                digest.update(one.read_bytes())
            except OSError:
                digest.update(b"\0missing\0")
            digest.update(str(one).encode() + b"\0")
    return digest.hexdigest()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class Runtime:
    def __init__(self, default_config: Path = config_module.DEFAULT_CONFIG, clock: Clock = time.time) -> None:
        self.default_config = default_config
        self._base_clock = clock
        self.replay_clock = ReplayClock()
        """Set while a recorded flow is decided (replay.py): the clock reads the recorded time."""
        self.replay = False
        """Flows read from a file are decided (the waitroom_replay option): Redis uses our clock."""
        self.keep_host_header = False
        """mitmproxy's keep_host_header, read when it is set (config_watch.py), not per request."""
        self.running = False
        """mitmproxy is running: a bad config set at run time is refused, not logged."""
        self.loaded: Loaded | None = None
        self.overrides = Overrides()
        """Run-time settings from the admin API, read from the store (see overrides.py)."""
        self.cluster: ReplicaWatcher | None = None
        """The replica watch (kube.py) when on; operations.py starts and stops it."""
        self.on_load: list[Callable[[], None]] = []
        """Called after each config is swapped in (the admin port and replica watch follow it)."""
        self.reload_refused: ReloadRefusal | None = None
        """The config file changed and was refused: the older config in force no longer matches it
        (/readyz, `waitroom status` and the metrics say so until a good load)."""
        self.store_reset_at: float | None = None
        """When this replica last found that the store had lost its data (came back empty): /readyz
        and `waitroom status` show it. None: never."""
        self._epoch: tuple[Store, str] | None = None
        """The store, and the epoch this replica knows it by."""
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

    @staticmethod
    def epoch_mark() -> str:
        """A new mark for each read of the epoch, which the store takes as its epoch when it has
        none (OverrideStore.overrides_and_epoch): new each time, so that a store that came back
        empty never gets the epoch it had before, even from the replica that wrote it."""
        return secrets.token_hex(8)

    def saw_epoch(self, store: Store, epoch: str) -> None:
        """The store answered its epoch. Another than the one this replica knew it by: the store
        lost its data (a Redis restarted without persistence, flushed, or failed over to a replica
        that had nothing): logged once, here, with what it cost; shown by /readyz and `status`."""
        known, self._epoch = self._epoch, (store, epoch)
        if known is None or known[0] is not store or known[1] == epoch:
            return  # the first answer, or a new store (a reload changed store.url), or no change
        self.store_reset_at = time.time()
        log.warning(
            "waitroom: Redis came back empty: %s lost, active counts reset",
            _count(len(self.overrides.values), "override"),
        )

    def apply_overrides(self, values: dict[str, str]) -> None:
        """The one way overrides reach the deciders: both take the same value, replaced whole."""
        if values == self.overrides.values:
            return
        self.overrides = Overrides(values)
        if self.loaded is not None:
            self.loaded.decider.set_overrides(self.overrides)
            self.loaded.limiter.set_overrides(self.overrides)
            self.loaded.shadow.set_overrides(self.overrides)

    # --- load and build ---------------------------------------------------------------------

    def load(self, path: Path, *, host_header_replaced: bool = False) -> None:
        """Build everything from the file and swap it in whole; ConfigError leaves all as it was.
        `host_header_replaced`: reverse mode without keep_host_header (rooms cannot match a host).
        The first load logs the version and what was loaded; a later one, what changed."""
        previous = self.loaded
        self.loaded = loaded = self._build(path, host_header_replaced)
        config = loaded.config
        if self.reload_refused is not None:
            log.info("waitroom: the refused config is gone: %s loaded", path)
        self.reload_refused = None
        METRICS.process.config.info({"sha256": loaded.fingerprint})
        METRICS.process.config_reload_refused.set(0)
        METRICS.process.config_reload_success.set(loaded.loaded_at)
        what = (
            f"{_count(len(config.rooms), 'room')}, {_count(len(config.rate_limits), 'rate limit')}, "
            f"store {redact(config.store.url)}"
        )
        if previous is None:
            log.info("waitroom %s: %s (sha256:%s): %s", __version__, path, loaded.fingerprint[:12], what)
        else:
            self._log_changes(previous, loaded, what)
        for warning in config_warnings(config, self.clock()):
            log.warning("waitroom: %s: %s", path, warning)
        for changed in self.on_load:
            changed()
        METRICS.process.replicas.set(self.local_replicas())

    def _log_changes(self, previous: Loaded, loaded: Loaded, what: str) -> None:
        files = {  # a page whose file changed under the same path (a new room's pages are its own news)
            f"rooms[{name}].{field}": was[name] != template
            for field, was, now in (
                ("template", previous.pages.wait, loaded.pages.wait),
                ("closed_template", previous.pages.closed, loaded.pages.closed),
            )
            for name, template in now.items()
            if name in was
        }
        changes = config_changes(previous.config, loaded.config, files)
        log.info(
            "waitroom: reloaded %s (sha256:%s → sha256:%s): %s; %s",
            loaded.path,
            previous.fingerprint[:12],
            loaded.fingerprint[:12],
            _count(len(changes), "change"),
            what,
        )
        for line in summarise(changes):
            log.info("waitroom:   %s", line)

    def refuse(self, path: Path, error: str, file_sha256: str) -> None:
        """The file at `path` changed and does not validate: the running config stays, and
        /readyz, `waitroom status` and the metrics say so (since the first refusal) until a good
        load."""
        since = self.reload_refused.since if self.reload_refused is not None else time.time()
        self.reload_refused = ReloadRefusal(since=since, error=redact(error), file_sha256=file_sha256)
        METRICS.process.config_reload_refused.set(1)

    def _build(self, path: Path, host_header_replaced: bool) -> Loaded:
        try:
            print_ = fingerprint(path)
        except OSError:
            print_ = ""  # load_config reports the unreadable file
        config, pages, verifier = compile_config(path)
        if (workers := _workers()) > 1 and config.store.url.startswith("memory://"):
            # A reload too: N workers each with an embedded store would admit N times the rate.
            raise ConfigError(
                f"{path}: store.url: --workers {workers} needs a shared store (redis://...): the embedded "
                "store lives in one process, and each worker would admit the room's whole rate"
            )
        if host_header_replaced and (problem := host_header_problem(config)) is not None:
            raise ConfigError(f"{path}: {problem}")
        codec = SessionCodec(self._signing_keys(path, config), config.session.ttl)
        store = self._store_for(config)
        decider = Decider(config, store, codec, self.clock, self.live_replicas)
        limiter = RateLimiter(config, store, verifier, self.clock, self.live_replicas, self.sleep)
        jar = self.loaded.shadow.jar if self.loaded is not None else None
        shadow = Shadow(config, store, codec, self.clock, self.live_replicas, jar)
        if jar is None:
            follow(METRICS.shadow.jar, shadow.jar.__len__)  # one jar, kept across reloads
        decider.set_overrides(self.overrides)
        limiter.set_overrides(self.overrides)
        shadow.set_overrides(self.overrides)
        needs_host = decider.router.uses_host or any(r.match.host is not None for r in config.rate_limits)
        files = tuple(named_files(config))
        try:
            watched = watch_print(path, files)
        except OSError:
            watched = ""
        return Loaded(
            path, print_, config, decider, limiter, pages, shadow, needs_host, time.time(), files, watched
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
                else wanted == self._store_config and self._store_replay == self.replay
            )
            if same:
                if isinstance(self._store, MemoryStore):
                    self._store.rates.max_keys = wanted.max_keys  # the keys it holds stay
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
