"""An in-memory Kubernetes API (kmock's emulator) on loopback, EndpointSlices as the controller
writes them, and a TCP forwarder that can cut every connection to simulate the API server going away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
from kubernetes import client

NAMESPACE = "shop"
SERVICE = "waitroom"
RESOURCE = "discovery.k8s.io/v1/endpointslices"
COLLECTION = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"

GONE_EVENT = {
    "type": "ERROR",
    "object": {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": 410,
        "reason": "Expired",
        "message": "too old resource version: 1 (9)",
    },
}


def endpoint_slice(
    name: str,
    pods: dict[str, bool | None],
    *,
    service: str = SERVICE,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice with one endpoint per pod; `ready` None leaves the condition out."""
    endpoints = []
    for i, (pod, ready) in enumerate(pods.items()):
        conditions: dict[str, bool] = {} if ready is None else {"ready": ready}
        address = f"10.1.0.{i + 1}" if address_type == "IPv4" else f"fd00::{i + 1}"
        endpoints.append(
            {
                "addresses": [address],
                "conditions": conditions,
                "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": pod},
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


class Cluster:
    """The emulator plus the calls a test makes on it, as the EndpointSlice controller would."""

    def __init__(self, emulator: kmock.KubernetesEmulator, url: str) -> None:
        self.k = emulator
        self.url = url
        self.names: set[str] = set()

    async def put(self, body: dict[str, Any]) -> None:
        """Create the slice (ADDED) or replace its endpoints (MODIFIED)."""
        name = body["metadata"]["name"]
        if name in self.names:
            async with self.k.patch(f"{COLLECTION}/{name}", json=body) as changed:
                assert changed.status == 200, await changed.text()
        else:
            async with self.k.post(COLLECTION, json=body) as made:
                assert made.status == 200, await made.text()
            self.names.add(name)

    async def delete(self, name: str) -> None:
        async with self.k.delete(f"{COLLECTION}/{name}") as gone:
            assert gone.status == 200, await gone.text()
        self.names.discard(name)

    def lists(self) -> int:
        return len(self.k[kmock.action.LIST])

    def watches(self) -> int:
        return len(self.k[kmock.action.WATCH])


@contextlib.asynccontextmanager
async def kube_api() -> AsyncIterator[Cluster]:
    async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources[RESOURCE] = {"kind": "EndpointSlice", "namespaced": True}
        yield Cluster(emulator, str(server.url).rstrip("/"))


def kubeconfig(url: str) -> dict[str, object]:
    """A kubeconfig for the emulator: what KUBECONFIG points the proxy at in the tests."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mock", "cluster": {"server": url}}],
        "users": [{"name": "proxy", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "proxy"}}],
        "current-context": "mock",
    }


def discovery_client(url: str) -> client.DiscoveryV1Api:
    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = 0  # a refused connection is the watcher's to retry, not urllib3's
    return client.DiscoveryV1Api(client.ApiClient(configuration))


class Cuttable:
    """A TCP forwarder to `target_port` on loopback that can drop every connection and refuse new
    ones (`cut`), then listen again on the same port (`restore`): the API server going away."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
