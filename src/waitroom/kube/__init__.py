"""Cluster awareness: how many proxy replicas are ready, from the EndpointSlices of the proxy's Service,
which `store.on_error: local` divides every limit by (docs/kubernetes.md).

This module finds the API and starts the watch (watch.py); without `KUBERNETES_SERVICE_HOST` (outside
a pod) nothing starts. Why the config file needs no API watch: docs/kubernetes.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from waitroom.kube.watch import EndpointSliceLister, ReplicaWatcher, describe_error

__all__ = [
    "NAMESPACE_FILE",
    "ReplicaWatcher",
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
        log.error(
            "waitroom: cluster: no Kubernetes API client (%s); store.replicas applies", describe_error(e)
        )
        return None
    watcher = ReplicaWatcher(api, namespace or pod_namespace(environ), service, on_change=on_change)
    watcher.start()
    return watcher
