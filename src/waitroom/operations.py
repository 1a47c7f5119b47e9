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

from waitroom.admin import AdminServer
from waitroom.config import Config
from waitroom.drain import Drain
from waitroom.kube import ReplicaWatcher, start_replica_watch
from waitroom.metrics import METRICS
from waitroom.overrides import OVERRIDES_REFRESH, Overrides
from waitroom.runtime import Runtime
from waitroom.store import Overloaded, Store, StoreError

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
        """Every replica re-reads the overrides, so a change made on one reaches all of them."""
        while True:
            store = self.runtime.store
            if store is not None:
                try:
                    self.runtime.apply_overrides(await store.overrides())
                except (StoreError, Overloaded):
                    pass  # keep the last known; the breaker logs the store's failure
                except Exception:
                    log.exception("waitroom: reading the overrides failed")
            await asyncio.sleep(OVERRIDES_REFRESH)

    def _start_admin(self) -> None:
        """Start the admin port, or move it when a reload changed its address or token."""
        config = self.runtime.config
        if config is None:
            return
        token = os.environ.get(config.admin.token_env) or None
        place = (config.admin.host, config.admin.port, token) if config.admin.port else None
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
        METRICS.replicas.set(self.runtime.local_replicas())

    def _replicas_changed(self, ready: int) -> None:
        """Called in the watcher's thread; the decisions read the count themselves."""
        METRICS.replicas.set(self.runtime.local_replicas())


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
