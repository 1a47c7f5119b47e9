"""The addon in a real mitmdump, "in a cluster" whose API is kmock's emulator: the replica count it
discovers is what `on_error: local` divides the room's limit by, and it follows the EndpointSlices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import SECRET, StartProxy
from tests.kube.kubeapi import NAMESPACE, SERVICE, Cluster, endpoint_slice, kube_api, kubeconfig
from tests.support import Upstream, free_port

pytestmark = pytest.mark.e2e

WAIT = 15.0


def config_text(admin_port: int, discover: bool = True) -> str:
    # Nothing listens on port 1: every store call fails at once and `local` decides.
    return f"""
store: {{url: "redis://127.0.0.1:1/0", on_error: local, replicas: 2}}
admin: {{host: 127.0.0.1, port: {admin_port}}}
cluster: {{discover_replicas: {str(discover).lower()}, service: {SERVICE}}}
rooms:
  - {{name: shop, match: {{path_prefix: /}}, new_sessions: 6, window: 60s, block_for: 0}}
"""


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with kube_api() as api:
        yield api


async def readiness(client: httpx.AsyncClient, admin: str) -> dict[str, object]:
    answer = await client.get(admin + "/readyz", timeout=5)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


async def replicas_become(client: httpx.AsyncClient, admin: str, wanted: int) -> None:
    deadline = time.monotonic() + WAIT
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = (await readiness(client, admin)).get("replicas")
        except httpx.ConnectError as e:  # the admin port opens just after the proxy's
            last = e
        if last == wanted:
            return
        await asyncio.sleep(0.02)  # lets the emulator serve; the answer ends the wait
    raise AssertionError(f"/readyz never said replicas={wanted} within {WAIT}s; last: {last!r}")


async def admitted(url: str, visitors: int) -> int:
    """New visitors (each its own client: no cookies), one after the other; how many got in."""
    statuses = []
    for _ in range(visitors):
        async with httpx.AsyncClient() as visitor:
            statuses.append((await visitor.get(url + "/", timeout=10)).status_code)
    assert set(statuses) <= {200, 503}, statuses
    return statuses.count(200)


async def test_local_limits_follow_the_discovered_replicas(
    cluster: Cluster, start_proxy: StartProxy, upstream: Upstream, tmp_path: Path
) -> None:
    await cluster.put(endpoint_slice("waitroom-a", {"p1": True, "p2": True, "p3": True}))
    config_file = tmp_path / "kubeconfig"
    config_file.write_text(yaml.safe_dump(kubeconfig(cluster.url)))
    admin_port = free_port()
    env = {
        "WAITROOM_SECRET": SECRET,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBECONFIG": str(config_file),
        "POD_NAMESPACE": NAMESPACE,
    }
    proxy = await asyncio.to_thread(start_proxy, config_text(admin_port), upstream.url, env=env)
    admin = f"http://127.0.0.1:{admin_port}"
    async with httpx.AsyncClient() as client:
        await replicas_become(client, admin, 3)
        assert await admitted(proxy.url, 4) == 2  # 6 new sessions // 3 replicas

        await cluster.put(endpoint_slice("waitroom-a", {"p1": True, "p2": True, "p3": False}))
        await replicas_become(client, admin, 2)
        assert await admitted(proxy.url, 4) == 1  # 6 // 2 = 3, two in the window already
        metrics = (await client.get(admin + "/metrics", timeout=5)).text
        assert "\nwaitroom_replicas 2.0\n" in metrics
    log = proxy.log_text()
    assert f"service {NAMESPACE}/{SERVICE} has 3 ready replica(s)" in log
    assert "3 → 2" in log


async def test_outside_a_cluster_the_fixed_number_applies(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    admin_port = free_port()
    env = {"WAITROOM_SECRET": SECRET, "KUBERNETES_SERVICE_HOST": ""}
    proxy = await asyncio.to_thread(start_proxy, config_text(admin_port), upstream.url, env=env)
    async with httpx.AsyncClient() as client:
        await replicas_become(client, f"http://127.0.0.1:{admin_port}", 2)  # store.replicas
        assert await admitted(proxy.url, 4) == 3
    assert "not in a Kubernetes pod" in proxy.log_text()
