"""kube.py against an in-memory Kubernetes API (kmock): the ready-replica count follows the
EndpointSlices of the proxy's Service, an expired watch lists again, API and connection errors are
retried with backoff and recovered from, and nothing starts outside a cluster."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import kmock
import pytest
import yaml

from tests.kube.kubeapi import (
    GONE_EVENT,
    NAMESPACE,
    SERVICE,
    Cluster,
    Cuttable,
    discovery_client,
    endpoint_slice,
    kube_api,
    kubeconfig,
)
from tests.support import visit
from waitroom.config.schema import parse_config
from waitroom.kube import in_cluster, pod_namespace, start_replica_watch
from waitroom.kube.slices import count_ready
from waitroom.kube.watch import ReplicaWatcher, WatchState
from waitroom.ratelimit.decision import LimitOutcome
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.rooms.decider import Decider, Outcome
from waitroom.rooms.sessions import SessionCodec, keys_from_secret
from waitroom.store.base import RateCheck, RateResult, StoreError
from waitroom.web.request import RequestFacts

WAIT = 10.0
"""Bound on every wait for the watcher (it reacts in milliseconds; this is only a ceiling)."""


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with kube_api() as api:
        yield api


class Watchers:
    """Starts ReplicaWatchers and stops them all at the end, from a thread (stop() blocks)."""

    def __init__(self) -> None:
        self.started: list[ReplicaWatcher] = []

    def start(self, url: str, changes: list[int] | None = None) -> ReplicaWatcher:
        watcher = ReplicaWatcher(
            discovery_client(url),
            NAMESPACE,
            SERVICE,
            on_change=changes.append if changes is not None else None,
            backoff=(0.02, 0.1),
        )
        watcher.start()
        self.started.append(watcher)
        return watcher

    async def stop_all(self) -> None:
        for watcher in self.started:
            assert await asyncio.to_thread(watcher.stop, 5), "the watcher thread did not stop"


@pytest.fixture
async def start() -> AsyncIterator[Watchers]:
    made = Watchers()
    yield made
    await made.stop_all()


async def until(watcher: ReplicaWatcher, condition: Callable[[ReplicaWatcher], bool], what: str) -> None:
    """Wait (in a thread, so the emulator's loop keeps serving) until the watcher says so."""
    if not await asyncio.to_thread(watcher.wait_for, condition, WAIT):
        raise AssertionError(
            f"timed out after {WAIT}s waiting for {what}: ready={watcher.ready} "
            f"state={watcher.state} stats={watcher.stats}"
        )


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait for something the watcher does not announce (a request reaching the emulator)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        await asyncio.sleep(0.005)  # yields to the emulator's loop; the condition ends the wait


# The emulator replays the existing slices at the start of each watch, then streams changes; a test
# changes slices only once the watcher has received that replay, so that no change can fall between.

# --- counting --------------------------------------------------------------------------------


def test_count_ready_counts_each_pod_once_and_skips_the_not_ready() -> None:
    v4 = endpoint_slice("w-v4", {"p1": True, "p2": True, "p3": False, "p4": None})
    v6 = endpoint_slice("w-v6", {"p1": True, "p2": False, "p3": False}, address_type="IPv6")
    # p1 twice (dual stack), p2 ready in one family, p4 without a condition (read as ready).
    assert count_ready([v4, v6]) == 3
    no_ref = {
        "endpoints": [{"addresses": ["10.9.0.1"]}, {"addresses": ["10.9.0.1"]}, {"addresses": ["10.9.0.2"]}]
    }
    assert count_ready([no_ref]) == 2
    assert count_ready([{"endpoints": None}, {}]) == 0


# --- the watch -------------------------------------------------------------------------------


async def test_count_follows_endpointslice_changes(cluster: Cluster, start: Watchers) -> None:
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True, "p3": False}))
    await cluster.put(endpoint_slice("other-a", {"x1": True, "x2": True}, service="other"))
    changes: list[int] = []
    watcher = start.start(cluster.url, changes)
    await until(watcher, lambda w: w.ready == 2, "the first count")
    assert watcher.state is WatchState.WATCHING

    listed = cluster.k[kmock.action.LIST][0]
    assert listed.params["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"
    await eventually(lambda: cluster.watches() == 1, "the watch request")
    await until(watcher, lambda w: w.stats.events >= 2, "the watch's replay of both slices")
    watched = cluster.k[kmock.action.WATCH][0]
    assert watched.params["labelSelector"] == f"kubernetes.io/service-name={SERVICE}"
    assert watched.params["allowWatchBookmarks"] == "true"
    assert watched.params["resourceVersion"] == "..."  # the emulator's list resourceVersion

    # The IPv6 slice of a dual-stack Service names the same pods: no change. Had it counted them
    # twice, the counts below would never be reached.
    await cluster.put(endpoint_slice("w-a6", {"p1": True, "p2": True}, address_type="IPv6"))
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True, "p3": True}))  # p3 ready
    await until(watcher, lambda w: w.ready == 3, "p3 ready")
    await cluster.put(endpoint_slice("w-b", {"p4": None}))  # a new slice; no condition = ready
    await until(watcher, lambda w: w.ready == 4, "the second slice")
    await cluster.put(endpoint_slice("other-a", {"x1": True, "x2": True, "x3": True}, service="other"))
    # p1 terminating: not ready in both families (one family only would still count it).
    await cluster.put(endpoint_slice("w-a", {"p1": False, "p2": True, "p3": True}))
    await cluster.put(endpoint_slice("w-a6", {"p1": False, "p2": True}, address_type="IPv6"))
    await until(watcher, lambda w: w.ready == 3, "p1 terminating")
    await cluster.delete("w-b")
    await until(watcher, lambda w: w.ready == 2, "the second slice deleted")

    assert changes == [2, 3, 4, 3, 2]
    assert (watcher.stats.lists, watcher.stats.expired, watcher.stats.failures) == (1, 0, 0)


async def test_an_expired_watch_lists_again_and_sees_what_it_missed(
    cluster: Cluster, start: Watchers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.kube")
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True}))
    release = asyncio.Event()

    async def held() -> None:  # the first watch sends nothing until the test says so
        await release.wait()

    cluster.k[kmock.action.WATCH][:1] << (b"", held, GONE_EVENT)
    watcher = start.start(cluster.url)
    await until(watcher, lambda w: w.ready == 2, "the first count")
    await eventually(lambda: cluster.watches() == 1, "the watch request")

    # A change the held watch never delivers: only a new list can see it.
    await cluster.put(endpoint_slice("w-b", {"p3": True}))
    assert watcher.ready == 2
    release.set()  # the watch now ends with ERROR 410 Expired
    await until(watcher, lambda w: w.ready == 3, "the count after the new list")

    assert watcher.stats.expired == 1
    assert watcher.stats.lists == 2
    assert watcher.stats.failures == 0  # an expiry is no failure: no backoff, no warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await eventually(lambda: cluster.watches() == 2, "the second watch")
    await until(watcher, lambda w: w.stats.events >= 2, "the second watch's replay")
    await cluster.put(endpoint_slice("w-b", {"p3": True, "p4": True}))
    await until(watcher, lambda w: w.ready == 4, "events on the second watch")


async def test_a_watch_refused_with_410_lists_again(cluster: Cluster, start: Watchers) -> None:
    await cluster.put(endpoint_slice("w-a", {"p1": True}))
    cluster.k[kmock.action.WATCH][:1] << 410 << {"kind": "Status", "code": 410, "reason": "Expired"}
    watcher = start.start(cluster.url)
    await until(watcher, lambda w: w.stats.expired == 1 and w.stats.lists == 2, "a new list after 410")
    await eventually(lambda: cluster.watches() == 2, "the second watch")
    await until(watcher, lambda w: w.stats.events >= 1, "the second watch's replay")
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True}))
    await until(watcher, lambda w: w.ready == 2, "events on the second watch")
    assert watcher.stats.failures == 0


async def test_api_errors_back_off_then_recover(
    cluster: Cluster, start: Watchers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.kube")
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True, "p3": True}))
    cluster.k[kmock.action.LIST][:3] << 500 << {"kind": "Status", "code": 500, "message": "etcd is down"}
    watcher = start.start(cluster.url)
    await until(watcher, lambda w: w.ready == 3, "the count after the errors")
    assert watcher.stats.failures == 3
    assert watcher.state is WatchState.WATCHING
    messages = [r.getMessage() for r in caplog.records]
    warnings = [m for m in messages if "cannot watch" in m]
    assert len(warnings) == 1, messages  # one line for the state change, not one per retry
    assert "HTTP 500" in warnings[0]
    assert "keeping store.replicas" in warnings[0]  # no count known yet
    assert sum("again" in m for m in messages) == 1


async def test_the_api_server_going_away_keeps_the_count_and_recovers(
    cluster: Cluster, start: Watchers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.kube")
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True}))
    proxy = Cuttable(int(cluster.url.rsplit(":", 1)[1]))
    await proxy.start()
    try:
        watcher = start.start(proxy.url)
        await until(watcher, lambda w: w.ready == 2 and w.state is WatchState.WATCHING, "the first count")
        await eventually(lambda: cluster.watches() == 1, "the watch request")

        await proxy.cut()  # the watch stream breaks; every retry is refused
        await until(watcher, lambda w: w.stats.failures >= 3, "several refused retries")
        assert watcher.state is WatchState.FAILING
        assert watcher.ready == 2  # the last count known stays in force

        await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True, "p3": True}))
        await proxy.restore()
        await until(watcher, lambda w: w.ready == 3 and w.state is WatchState.WATCHING, "recovery")
        messages = [r.getMessage() for r in caplog.records]
        assert await asyncio.to_thread(watcher.stop, 5)  # before the forwarder goes: no new failure
    finally:
        await proxy.close()
    assert sum("cannot watch" in m for m in messages) == 1, messages
    assert any("keeping 2 ready replica(s)" in m for m in messages)
    assert sum("again" in m for m in messages) == 1
    assert any("2 → 3" in m for m in messages)


async def test_stop_ends_a_blocked_watch_at_once(cluster: Cluster) -> None:
    await cluster.put(endpoint_slice("w-a", {"p1": True}))
    watcher = ReplicaWatcher(discovery_client(cluster.url), NAMESPACE, SERVICE)
    watcher.start()
    await until(watcher, lambda w: w.ready == 1, "the first count")
    await eventually(lambda: cluster.watches() == 1, "the watch request")  # now blocked reading
    started = time.monotonic()
    assert await asyncio.to_thread(watcher.stop, 5)
    assert time.monotonic() - started < 2  # the stream's socket was shut, not waited out
    assert watcher.state is WatchState.STOPPED


# --- in a cluster or not ---------------------------------------------------------------------


def test_nothing_starts_outside_a_cluster(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.kube")
    assert not in_cluster({})
    assert start_replica_watch(SERVICE, None, environ={"KUBECONFIG": "/nonexistent"}) is None
    assert "not in a Kubernetes pod" in caplog.text


def test_the_pods_namespace(tmp_path: Path) -> None:
    ns_file = tmp_path / "namespace"
    assert pod_namespace({"POD_NAMESPACE": "from-env"}, ns_file) == "from-env"
    assert pod_namespace({}, ns_file) == "default"
    ns_file.write_text("from-file\n")
    assert pod_namespace({}, ns_file) == "from-file"


async def test_in_a_cluster_it_watches_with_the_configured_credentials(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.put(endpoint_slice("w-a", {"p1": True, "p2": True}))
    config_file = tmp_path / "kubeconfig"
    config_file.write_text(yaml.safe_dump(kubeconfig(cluster.url)))
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBECONFIG": str(config_file),
        "POD_NAMESPACE": NAMESPACE,
    }
    seen: list[int] = []
    watcher = start_replica_watch(SERVICE, None, environ=environ, on_change=seen.append)
    assert watcher is not None
    try:
        await until(watcher, lambda w: w.ready == 2, "the first count")
        assert watcher.namespace == NAMESPACE
        assert seen == [2]
    finally:
        assert await asyncio.to_thread(watcher.stop, 5)


# --- the decisions use the live count ---------------------------------------------------------


class DownStore:
    """A store that always fails, so `on_error: local` decides."""

    async def admit(self, *args: object) -> None:
        raise StoreError("down")

    async def hit(self, checks: list[RateCheck]) -> list[RateResult]:
        raise StoreError("down")

    async def record(self, *args: object) -> None:
        raise StoreError("down")

    async def close(self) -> None:
        pass


async def test_local_policy_divides_room_limits_by_the_live_count() -> None:
    config = parse_config(
        {
            "store": {"on_error": "local", "replicas": 1},
            "rooms": [{"name": "r", "new_sessions": 6, "block_for": 0}],
        }
    )
    live: list[int | None] = [3]
    codec = SessionCodec(keys_from_secret("live-replicas-secret-0123"), 600)
    decider = Decider(config, DownStore(), codec, time.time, lambda: live[0])  # type: ignore[arg-type]

    async def admitted(visitors: int) -> int:
        decisions = [await visit(decider) for _ in range(visitors)]
        assert all(d.degraded is not None for d in decisions)
        return sum(d.outcome is Outcome.ADMITTED for d in decisions)

    assert await admitted(4) == 2  # 6 // 3 replicas
    live[0] = 2
    assert await admitted(4) == 1  # 6 // 2 = 3, two already in the window
    live[0] = None  # discovery knows nothing: the fixed store.replicas (1)
    assert await admitted(4) == 3


async def test_local_policy_divides_rate_limits_by_the_live_count() -> None:
    config = parse_config(
        {
            "store": {"on_error": "local", "replicas": 2},
            "rate_limits": [{"name": "g", "key": "global", "limit": 8}],
        }
    )
    live: list[int | None] = [4]
    limiter = RateLimiter(config, DownStore(), None, time.time, lambda: live[0])  # type: ignore[arg-type]
    facts = RequestFacts("h", "/", "GET", "127.0.0.1", lambda _name: None)
    outcomes = [(await limiter.decide(facts, limiter.matching(facts))).outcome for _ in range(3)]
    assert outcomes == [LimitOutcome.ALLOWED, LimitOutcome.ALLOWED, LimitOutcome.LIMITED]  # 8 // 4
    live[0] = 0  # an empty count is not trusted: store.replicas (2) → 4 per second
    fresh = RateLimiter(config, DownStore(), None, time.time, lambda: live[0])  # type: ignore[arg-type]
    outcomes = [(await fresh.decide(facts, fresh.matching(facts))).outcome for _ in range(5)]
    assert outcomes.count(LimitOutcome.ALLOWED) == 4
