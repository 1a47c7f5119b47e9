"""The operator's sections: the admin port and shutdown, cluster awareness, the decision log."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from waitroom.config.fields import Duration, StrictModel


class AdminConfig(StrictModel):
    host: str = "127.0.0.1"
    """Address of the admin port; 0.0.0.0 in a pod, so probes and Prometheus reach it."""
    port: int | None = Field(None, ge=1, le=65535)
    """The admin port (/metrics, /healthz, /readyz, /admin/...); none: no admin server."""
    token_env: str = Field("WAITROOM_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Environment variable holding the admin API's bearer token; unset or empty: the API is off."""
    shutdown_delay: Duration = Field(0.0, le=3600)
    """On SIGTERM: /readyz turns 503 at once and the proxy keeps serving this long, so load balancers
    that poll readiness stop sending; then it stops accepting. 0: the chart's preStop sleep does it."""
    drain: Duration = Field(10.0, le=3600)
    """After the shutdown delay: requests in flight get this long to finish, then the process exits."""


_DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""A Kubernetes object name of the DNS-1123 label kind: Services and namespaces."""


class ClusterConfig(StrictModel):
    """Cluster awareness (kube.py): nothing of it runs outside a Kubernetes pod."""

    discover_replicas: bool = False
    """In a Kubernetes pod, count the proxy's ready replicas from its Service's EndpointSlices;
    `on_error: local` divides limits by that live count instead of the fixed `store.replicas` (which
    stays the fallback). Outside a pod it does nothing."""
    service: str | None = Field(None, pattern=_DNS_LABEL)
    """The proxy's own Service, whose EndpointSlices are watched (required with `discover_replicas`)."""
    namespace: str | None = Field(None, pattern=_DNS_LABEL)
    """The Service's namespace; empty: the pod's own."""

    @model_validator(mode="after")
    def _service_named(self) -> Self:
        if self.discover_replicas and not self.service:
            raise ValueError("cluster.service: discover_replicas needs the name of the proxy's own Service")
        return self


class DecisionLogConfig(StrictModel):
    format: Literal["off", "json"] = "off"
    """With `json`, one JSON line per sampled decision (never cookies, tokens or queries): each line
    is one JSON object and nothing else, for a log shipper."""
    output: Literal["stdout", "stderr"] = "stdout"
    """Where the decision lines go; mitmproxy's own log lines go to stdout too, so `stderr` keeps the
    two apart (`-q` silences mitmproxy's lines, never these)."""
    sample: float = Field(0.01, gt=0, le=1)
    """The share of requests logged, one draw per request (its rule and room together), more than 0
    and at most 1 (waiting and limited answers included at the same rate)."""
