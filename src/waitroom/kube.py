"""Cluster awareness: how many proxy replicas are ready, from the EndpointSlices of the proxy's Service.

`store.on_error: local` divides every limit by the number of replicas, so that the replicas together
still admit about the limit while the shared store is down. A fixed `store.replicas` is wrong as soon
as an HPA scales the Deployment or a pod is rolled; with `cluster.discover_replicas` the proxy counts
the ready endpoints of its own Service instead, as kube-proxy and the Istio sidecars see them
(replicawatch.py: the list, the watch and how endpoints are counted). This module finds the API and
starts the watch.

Nothing here runs outside a pod: without `KUBERNETES_SERVICE_HOST` the proxy does not start the
watcher (and so needs no API access when it runs on a laptop or in the tests).

The config file needs no API watch of its own. The chart mounts the ConfigMap as a volume, and the
kubelet updates the mounted file (an atomic symlink swap) when the ConfigMap changes; the addon
already re-reads the file every second and swaps a config in only when its bytes changed and it
validates. Watching the ConfigMap through the API would need more RBAC, a second code path that can
disagree with the file, and would still have to wait for the kubelet for the templates and keys
mounted beside it. (A ConfigMap mounted with `subPath` is never updated: the chart does not use one.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from waitroom.endpointslices import SERVICE_NAME_LABEL, count_ready
from waitroom.replicawatch import (
    GONE,
    REQUEST_TIMEOUT,
    WATCH_TIMEOUT,
    EndpointSliceLister,
    ReplicaWatcher,
    WatchExpired,
    WatchState,
    WatchStats,
    describe,
)

__all__ = [
    "GONE",
    "NAMESPACE_FILE",
    "REQUEST_TIMEOUT",
    "SERVICE_NAME_LABEL",
    "WATCH_TIMEOUT",
    "EndpointSliceLister",
    "ReplicaWatcher",
    "WatchExpired",
    "WatchState",
    "WatchStats",
    "count_ready",
    "discovery_api",
    "in_cluster",
    "pod_namespace",
    "start_replica_watch",
]

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster(environ: Mapping[str, str] = os.environ) -> bool:
    """True in a pod: the kubelet sets KUBERNETES_SERVICE_HOST in every container."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST"))


def pod_namespace(environ: Mapping[str, str] = os.environ, namespace_file: Path = NAMESPACE_FILE) -> str:
    """The pod's namespace: POD_NAMESPACE (the chart sets it from the downward API), else the
    service account's namespace file, else `default`."""
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return namespace_file.read_text().strip() or "default"
    except OSError:
        return "default"


def discovery_api(environ: Mapping[str, str] = os.environ) -> EndpointSliceLister:
    """An API client with the pod's service account; or, when KUBECONFIG names a file, with that
    file's current context (a proxy run by hand against a cluster, and the tests)."""
    from kubernetes import client, config  # imported here: a proxy outside a cluster never needs it

    configuration = client.Configuration()
    if environ.get("KUBECONFIG"):
        config.load_kube_config(config_file=environ["KUBECONFIG"], client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.DiscoveryV1Api(client.ApiClient(configuration))


def start_replica_watch(
    service: str,
    namespace: str | None,
    *,
    environ: Mapping[str, str] = os.environ,
    on_change: Callable[[int], None] | None = None,
) -> ReplicaWatcher | None:
    """Start watching when running in a pod; None (and nothing started) anywhere else."""
    if not in_cluster(environ):
        log.info(
            "waitroom: cluster: not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST); "
            "discover_replicas is off and store.replicas applies"
        )
        return None
    try:
        api = discovery_api(environ)
    except Exception as e:
        log.error("waitroom: cluster: no Kubernetes API client (%s); store.replicas applies", describe(e))
        return None
    watcher = ReplicaWatcher(api, namespace or pod_namespace(environ), service, on_change=on_change)
    watcher.start()
    return watcher
