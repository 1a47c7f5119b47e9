"""mitmproxy addon: what an operator runs beside the request path: the admin port (admin.py), the
Kubernetes replica watch (kube.py), the overrides every replica re-reads from the store, and SIGTERM
starting the drain (drain.py). Each follows a config reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions

from waitroom.addon.drain import Drain
from waitroom.addon.runtime import Runtime
from waitroom.config.overrides import OVERRIDES_REFRESH, Overrides
from waitroom.config.schema import Config
from waitroom.kube import start_replica_watch
from waitroom.kube.watch import ReplicaWatcher
from waitroom.metrics import METRICS
from waitroom.ops.admin import AdminServer
from waitroom.ops.views import ReloadRefusal
from waitroom.store.base import Overloaded, Store, StoreError

log = logging.getLogger(__name__)


class Operations:
    def __init__(self, runtime: Runtime, drain: Drain) -> None:
        self.runtime = runtime
        self.drain = drain
        self._admin: AdminServer | None = None
        self._admin_place: tuple[str, int, str | None] | None = None
        self._cluster_place: tuple[str, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        runtime.on_load.append(self._reloaded)

    # --- hooks ------------------------------------------------------------------------------

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_admin_port",
            int,
            0,
            """
            The admin port (/metrics, /healthz, /readyz, the admin API) of this process: 0 (the
            default) takes admin.port from the config file, -1 turns it off. Replicas on one host
            share one config file and each get their own port this way.
            """,
        )
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_admin_host",
            str,
            "",
            """
            The admin port's address for this process; empty (the default) takes admin.host from
            the config file.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"waitroom_admin_port", "waitroom_admin_host"}:
            port = int(_option("waitroom_admin_port", 0))
            if not -1 <= port <= 65535:
                raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
                    f"waitroom_admin_port: must be from 1 to 65535, 0 (the config's) or -1 (off); got {port}"
                )
            if self.runtime.running:
                self._start_admin()

    def running(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # offline (mitmproxy's test context): no admin port, no watchers
            return
        self._start_admin()
        self._start_cluster()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows' Proactor loop
            loop.add_signal_handler(signal.SIGTERM, self.drain.begin)
        self._task = loop.create_task(self._refresh_overrides(), name="waitroom: overrides")

    async def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._admin is not None:
            await self._admin.stop()
        cluster, self.runtime.cluster = self.runtime.cluster, None
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)

    def _reloaded(self) -> None:
        if self.runtime.running:
            self._start_admin()
            self._start_cluster()

    async def _refresh_overrides(self) -> None:
        """Every replica re-reads the overrides, so a change made on one reaches all of them; the
        same round trip reads the store's epoch, which tells when the store lost its data."""
        while True:
            store = self.runtime.store
            if store is not None:
                try:
                    values, epoch = await store.overrides_and_epoch(self.runtime.epoch_mark())
                    self.runtime.saw_epoch(store, epoch)  # before the overrides it may have lost
                    self.runtime.apply_overrides(values)
                except (StoreError, Overloaded):
                    pass  # keep the last known; the breaker logs the store's failure
                except Exception:
                    log.exception("waitroom: reading the overrides failed")
            await asyncio.sleep(OVERRIDES_REFRESH)

    def _start_admin(self) -> None:
        """Start the admin port, or move it when a reload (or `--set waitroom_admin_*`) changed its
        address or token. The options are read here, when the port starts, not in `configure`:
        the file and the options each may change without the other."""
        config = self.runtime.config
        if config is None:
            return
        token = os.environ.get(config.admin.token_env) or None
        port_option = int(_option("waitroom_admin_port", 0))
        host = str(_option("waitroom_admin_host", "")) or config.admin.host
        port = config.admin.port if port_option == 0 else (None if port_option < 0 else port_option)
        place = (host, port, token) if port else None
        if place == self._admin_place:
            return
        old, self._admin = self._admin, None
        if old is not None:
            self.runtime.close_later(old.stop())
        self._admin_place = place
        if place is not None:
            host, port, _ = place
            self._admin = AdminServer(_Operated(self.runtime, self.drain), token)
            try:
                self._admin.start(host, port)
            except OSError as e:
                log.error("waitroom: admin port %s:%d: %s", host, port, e.strerror or e)
                self._admin, self._admin_place = None, None

    def _start_cluster(self) -> None:
        """Start the replica watch (kube.py), or restart it when a reload changed its Service."""
        config = self.runtime.config
        if config is None:
            return
        cluster = config.cluster
        place = (cluster.service or "", cluster.namespace) if cluster.discover_replicas else None
        if place == self._cluster_place:
            return
        old, self.runtime.cluster = self.runtime.cluster, None
        if old is not None:
            self.runtime.close_later(_stop_watch(old))
        self._cluster_place = place
        if place is not None:
            self.runtime.cluster = start_replica_watch(place[0], place[1], on_change=self._replicas_changed)
        METRICS.process.replicas.set(self.runtime.local_replicas())

    def _replicas_changed(self, ready: int) -> None:
        """Called in the watcher's thread; the decisions read the count themselves."""
        METRICS.process.replicas.set(self.runtime.local_replicas())


def _option(name: str, default: Any) -> Any:
    """An option's value; `default` outside mitmproxy (a Runtime driven by a test or a tool)."""
    try:
        return getattr(ctx.options, name)
    except AttributeError:
        return default


async def _stop_watch(watcher: ReplicaWatcher) -> None:
    await asyncio.to_thread(watcher.stop)


class _Operated:
    """What the admin port reads (admin.Operated): the runtime's state, and the drain's."""

    def __init__(self, runtime: Runtime, drain: Drain) -> None:
        self._runtime = runtime
        self._drain = drain

    @property
    def config(self) -> Config | None:
        return self._runtime.config

    @property
    def config_path(self) -> Path | None:
        return self._runtime.config_path

    @property
    def config_sha256(self) -> str | None:
        return self._runtime.loaded.fingerprint if self._runtime.loaded else None

    @property
    def config_loaded_at(self) -> float | None:
        return self._runtime.loaded.loaded_at if self._runtime.loaded else None

    @property
    def reload_refused(self) -> ReloadRefusal | None:
        return self._runtime.reload_refused

    @property
    def store_reset_at(self) -> float | None:
        return self._runtime.store_reset_at

    @property
    def store(self) -> Store | None:
        return self._runtime.store

    @property
    def overrides(self) -> Overrides:
        return self._runtime.overrides

    @property
    def draining(self) -> bool:
        return self._drain.draining

    def local_replicas(self) -> int:
        return self._runtime.local_replicas()

    def store_failing(self) -> bool:
        return self._runtime.store_failing()

    async def change_overrides(self, changes: dict[str, str | None]) -> None:
        await self._runtime.change_overrides(changes)
