"""The Helm chart, rendered by a real helm with each values file of charts/waitroom/ci (minimal,
production, external Redis, autoscaling, demo without Istio): lint, what the objects say, and what
the chart refuses to render."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.kube.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES,
    Rendered,
    helm,
    notes,
    render,
    render_error,
    values_files,
)
from waitroom.build import compile_config
from waitroom.config.schema import Config

FULLNAME = f"{RELEASE}-waitroom"
FILES = values_files()
RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


@functools.cache
def rendered(values_file: str) -> Rendered:
    return render(values_file)


def test_every_scenario_has_a_values_file() -> None:
    assert FILES == [
        "autoscaling-values.yaml",
        "demo-values.yaml",
        "external-redis-values.yaml",
        "minimal-values.yaml",
        "production-values.yaml",
    ]


@pytest.mark.parametrize("values_file", FILES)
def test_helm_lint_strict(values_file: str) -> None:
    out = helm("lint", "--strict", str(CHART), "-f", str(VALUES / values_file))
    assert "0 chart(s) failed" in out


def proxy_config(objects: Rendered, tmp_path: Path) -> Config:
    """The ConfigMap's waitroom.yaml, validated as the proxy validates it at start."""
    text = objects.one("ConfigMap", FULLNAME)["data"]["waitroom.yaml"]
    path = tmp_path / "waitroom.yaml"
    path.write_text(text)
    config, _, _ = compile_config(path)
    return config


def proxy_container(objects: Rendered) -> dict[str, Any]:
    pod = objects.one("Deployment", FULLNAME)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- every scenario -----------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", FILES)
def test_recommended_labels_on_every_object(values_file: str) -> None:
    for obj in rendered(values_file):
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED if k not in labels]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


@pytest.mark.parametrize("values_file", FILES)
def test_selectors_match_their_pods(values_file: str) -> None:
    objects = rendered(values_file)
    for obj in objects.all("Deployment") + objects.all("StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), obj["metadata"]["name"]
        assert "app.kubernetes.io/component" in selector  # proxy, redis and counter never mix
    for service in objects.all("Service"):
        pods = [
            o
            for o in objects.all("Deployment") + objects.all("StatefulSet")
            if service["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)} workloads"


@pytest.mark.parametrize("values_file", FILES)
def test_the_proxy_pod_is_locked_down(values_file: str) -> None:
    objects = rendered(values_file)
    pod = objects.one("Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user, not Istio's 1337
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = proxy_container(objects)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp"  # mitmproxy's confdir lives there
    assert "emptyDir" in volumes["tmp"]
    assert env_of(container)["MITMPROXY_CONFDIR"] == "/tmp/mitmproxy"
    # The config: a directory mount of the ConfigMap (a subPath mount would never be updated).
    assert mounts["config"]["mountPath"] == "/etc/waitroom"
    assert "subPath" not in mounts["config"]
    assert volumes["config"]["configMap"]["name"] == FULLNAME
    assert env_of(container)["WAITROOM_CONFIG"] == "/etc/waitroom/waitroom.yaml"


@pytest.mark.parametrize("values_file", FILES)
def test_probes_drain_and_grace_period(values_file: str, tmp_path: Path) -> None:
    objects = rendered(values_file)
    config = proxy_config(objects, tmp_path)
    container = proxy_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http-admin"] == config.admin.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    assert int(sleep[1]) > 0
    grace = objects.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # SIGTERM after the sleep; the shutdown delay, up to 1 s to stop accepting, the drain (at least
    # 1 s) and the exit all fit before the kubelet's SIGKILL.
    assert grace >= int(sleep[1]) + config.admin.shutdown_delay + config.admin.drain + 2
    assert config.admin.shutdown_delay == 0  # the preStop sleep is the shutdown delay


@pytest.mark.parametrize("values_file", FILES)
def test_the_rendered_config_is_one_the_proxy_accepts(values_file: str, tmp_path: Path) -> None:
    objects = rendered(values_file)
    config = proxy_config(objects, tmp_path)
    assert config.admin.host == "0.0.0.0"  # probes and Prometheus come from outside the pod
    assert config.cluster.discover_replicas
    assert config.cluster.service == FULLNAME  # its own Service's EndpointSlices
    service_ports = {p["name"]: p["port"] for p in objects.one("Service", FULLNAME)["spec"]["ports"]}
    assert service_ports["http-admin"] == config.admin.port
    deployment = objects.one("Deployment", FULLNAME)
    hpa = objects.maybe("HorizontalPodAutoscaler")
    least = hpa["spec"]["minReplicas"] if hpa else deployment["spec"]["replicas"]
    assert config.store.replicas == max(1, least)
    assert "@" not in config.store.url  # no credentials in a ConfigMap


@pytest.mark.parametrize("values_file", FILES)
def test_secret_checksum_rolls_pods_but_the_config_does_not(values_file: str) -> None:
    objects = rendered(values_file)
    annotations = objects.one("Deployment", FULLNAME)["spec"]["template"]["metadata"].get("annotations") or {}
    assert not [k for k in annotations if "config" in k and k.startswith("checksum/")]
    secret = objects.maybe("Secret", FULLNAME)
    if secret is None:
        assert "checksum/secret" not in annotations
    else:
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])


def test_the_secret_checksum_follows_the_secret_and_ignores_the_config() -> None:
    def checksum(sets: dict[str, str]) -> str:
        objects = render("production-values.yaml", sets)
        return str(
            objects.one("Deployment", FULLNAME)["spec"]["template"]["metadata"]["annotations"][
                "checksum/secret"
            ]
        )

    base = checksum({})
    assert checksum({"config.rooms[0].new_sessions": "999"}) == base  # a live reload, no rollout
    assert checksum({"secrets.adminToken": "another-token-0123456789"}) != base


@pytest.mark.parametrize("values_file", FILES)
def test_helm_test_pod_curls_readyz_on_the_admin_port(values_file: str) -> None:
    objects = rendered(values_file)
    pods = [p for p in objects.all("Pod") if p["metadata"]["annotations"].get("helm.sh/hook") == "test"]
    assert len(pods) == 1
    (container,) = pods[0]["spec"]["containers"]
    admin_port = next(
        p["port"] for p in objects.one("Service", FULLNAME)["spec"]["ports"] if p["name"] == "http-admin"
    )
    url = f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:{admin_port}/readyz"
    assert container["command"] == ["curl"]
    assert url in container["args"]
    assert "--fail" in container["args"]
    assert pods[0]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


# --- presence rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values_file", "hpa", "pdb"),
    [
        ("minimal-values.yaml", False, False),  # one replica: a PDB would block every drain
        ("production-values.yaml", False, True),  # three replicas
        ("external-redis-values.yaml", False, True),  # two
        ("autoscaling-values.yaml", True, True),  # minReplicas 2
        ("demo-values.yaml", False, False),
    ],
)
def test_hpa_and_pdb_presence(values_file: str, hpa: bool, pdb: bool) -> None:
    objects = rendered(values_file)
    assert ("HorizontalPodAutoscaler" in objects.kinds()) is hpa
    assert ("PodDisruptionBudget" in objects.kinds()) is pdb
    deployment = objects.one("Deployment", FULLNAME)
    assert ("replicas" in deployment["spec"]) is (not hpa)  # the HPA owns the count
    if hpa:
        spec = objects.one("HorizontalPodAutoscaler")["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    if pdb:
        budget = objects.one("PodDisruptionBudget")["spec"]
        assert budget["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_an_autoscaler_starting_at_one_replica_gets_no_pdb() -> None:
    objects = render("autoscaling-values.yaml", {"autoscaling.minReplicas": "1"})
    assert "HorizontalPodAutoscaler" in objects.kinds()
    assert "PodDisruptionBudget" not in objects.kinds()


def test_monitoring_objects_only_when_asked() -> None:
    assert not {"ServiceMonitor"} & rendered("minimal-values.yaml").kinds()
    assert rendered("minimal-values.yaml").maybe("ConfigMap", f"{FULLNAME}-dashboard") is None
    objects = rendered("production-values.yaml")
    monitor = objects.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [
        {"port": "http-admin", "path": "/metrics", "interval": "30s", "scheme": "http"}
    ]
    service = objects.one("Service", FULLNAME)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    dashboard = objects.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    shipped = (CHART / "dashboards" / "waitroom.json").read_text()
    assert json.loads(dashboard["data"]["waitroom.json"]) == json.loads(shipped)
    assert (
        hashlib.sha256(dashboard["data"]["waitroom.json"].encode()).hexdigest()
        == hashlib.sha256(shipped.rstrip("\n").encode()).hexdigest()
    )


# --- stores and secrets -------------------------------------------------------------------------


def test_the_charts_redis(tmp_path: Path) -> None:
    objects = rendered("production-values.yaml")
    config = proxy_config(objects, tmp_path)
    assert config.store.url == f"redis://{FULLNAME}-redis.{NAMESPACE}.svc.cluster.local:6379/0"
    redis = objects.one("StatefulSet", f"{FULLNAME}-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    password = env_of(container)["REDIS_PASSWORD"]["secretKeyRef"]
    assert password == {"name": FULLNAME, "key": "WAITROOM_REDIS_PASSWORD", "optional": True}
    assert "--requirepass" in container["args"][0]
    assert objects.one("Service", f"{FULLNAME}-redis")["spec"]["ports"][0]["port"] == 6379
    policy = objects.one("NetworkPolicy", f"{FULLNAME}-redis")
    sources = [
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policy["spec"]["ingress"][0]["from"]
    ]
    assert sources == ["proxy", "counter"]
    # No PVC without persistence.
    ephemeral = rendered("autoscaling-values.yaml").one("StatefulSet", f"{FULLNAME}-redis")
    assert "volumeClaimTemplates" not in ephemeral["spec"]
    assert {"name": "data", "emptyDir": {}} in ephemeral["spec"]["template"]["spec"]["volumes"]


def test_the_charts_redis_persists_by_default() -> None:
    """Append-only persistence unless switched off: a Redis restart keeps counts, windows, blocks."""
    on = render(
        sets={"upstream": "http://shop:8080", "redis.enabled": "true", "secrets.sessionSecret": "s" * 32}
    )
    (container,) = on.one("StatefulSet", f"{FULLNAME}-redis")["spec"]["template"]["spec"]["containers"]
    command = container["args"][0].split()
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert command[command.index("--dir") + 1] == "/data"
    off = render(
        sets={
            "upstream": "http://shop:8080",
            "redis.enabled": "true",
            "secrets.sessionSecret": "s" * 32,
            "redis.persistence.appendOnly": "false",
        }
    )
    (container,) = off.one("StatefulSet", f"{FULLNAME}-redis")["spec"]["template"]["spec"]["containers"]
    command = container["args"][0].split()
    assert command[command.index("--appendonly") + 1] == "no"


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    objects = rendered("production-values.yaml")
    secret = objects.one("Secret", FULLNAME)
    assert set(secret["data"]) == {"WAITROOM_SECRET", "WAITROOM_ADMIN_TOKEN", "WAITROOM_REDIS_PASSWORD"}
    env = env_of(proxy_container(objects))
    for key in ("WAITROOM_SECRET", "WAITROOM_ADMIN_TOKEN", "WAITROOM_JWT_SECRET", "WAITROOM_REDIS_PASSWORD"):
        assert env[key]["secretKeyRef"] == {"name": FULLNAME, "key": key, "optional": True}
    configmap = objects.one("ConfigMap", FULLNAME)["data"]["waitroom.yaml"]
    for value in ("0123456789abcdef0123456789abcdef", "admin-token-0123456789", "redis-password-0123"):
        assert value not in configmap
    # An existing Secret instead: nothing rendered, the same keys read from it.
    external = rendered("external-redis-values.yaml")
    assert external.maybe("Secret") is None
    env = env_of(proxy_container(external))
    assert env["WAITROOM_SECRET"]["secretKeyRef"]["name"] == "waitroom-secrets"
    assert proxy_config(external, tmp_path).store.url == "rediss://redis.example.internal:6380/0"
    # Nothing given: no Secret, no secret environment (the proxy makes an ephemeral key).
    minimal = rendered("minimal-values.yaml")
    assert minimal.maybe("Secret") is None
    assert "WAITROOM_SECRET" not in env_of(proxy_container(minimal))


def test_client_ip_settings_behind_the_gateway(tmp_path: Path) -> None:
    assert proxy_config(rendered("minimal-values.yaml"), tmp_path).client_ip.trusted_proxies == 1
    assert proxy_config(rendered("production-values.yaml"), tmp_path).client_ip.trusted_proxies == 2
    header = proxy_config(rendered("external-redis-values.yaml"), tmp_path).client_ip
    assert (header.trusted_proxies, header.header) == (0, "X-Envoy-External-Address")
    assert (header.ipv6_prefix, header.ipv4_prefix) == (64, 32)


def test_rbac_reads_endpointslices_and_its_own_configmap() -> None:
    objects = rendered("minimal-values.yaml")
    rules = objects.one("Role")["rules"]
    slices = next(r for r in rules if r["resources"] == ["endpointslices"])
    assert slices["apiGroups"] == ["discovery.k8s.io"]
    assert set(slices["verbs"]) == {"get", "list", "watch"}
    configmaps = next(r for r in rules if r["resources"] == ["configmaps"])
    assert configmaps["resourceNames"] == [FULLNAME]
    assert not {"create", "update", "patch", "delete"} & {v for r in rules for v in r["verbs"]}
    binding = objects.one("RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    pod = objects.one("Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME
    assert pod["automountServiceAccountToken"] is True  # the EndpointSlice watch needs the token
    off = render("minimal-values.yaml", {"cluster.discoverReplicas": "false"})
    assert (
        off.one("Deployment", FULLNAME)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    )


def test_network_policy_lets_in_the_gateway_and_prometheus() -> None:
    policy = rendered("minimal-values.yaml").one("NetworkPolicy", FULLNAME)["spec"]
    proxied, admin = policy["ingress"]
    assert proxied["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert proxied["from"][0]["podSelector"]["matchLabels"] == {"istio": "ingressgateway"}
    assert admin["ports"] == [{"port": "http-admin", "protocol": "TCP"}]
    assert admin["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert "NetworkPolicy" not in rendered("demo-values.yaml").kinds()


# --- Istio ----------------------------------------------------------------------------------------


def routes(objects: Rendered) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in objects.one("VirtualService")["spec"]["http"]}


def test_protected_paths_go_through_the_proxy_and_the_rest_to_the_workload() -> None:
    objects = rendered("production-values.yaml")
    http = routes(objects)
    assert [m["uri"]["prefix"] for m in http["waitroom"]["match"]] == ["/shop", "/checkout/", "/api"]
    proxy = http["waitroom"]["route"][0]["destination"]
    assert proxy == {"host": f"{FULLNAME}.{NAMESPACE}.svc.cluster.local", "port": {"number": 8080}}
    assert "match" not in http["workload"]  # everything else
    assert http["workload"]["route"][0]["destination"] == {
        "host": "shop.shop.svc.cluster.local",
        "port": {"number": 8080},
    }
    assert list(http) == ["waitroom", "workload"]  # order matters: the first match wins
    service = objects.one("VirtualService")["spec"]
    assert service["hosts"] == ["shop.example.com", "www.shop.example.com"]
    assert service["gateways"] == [FULLNAME]
    gateway = objects.one("Gateway")["spec"]
    assert gateway["selector"] == {"istio": "ingressgateway"}
    https = next(s for s in gateway["servers"] if s["port"]["protocol"] == "HTTPS")
    assert https["tls"] == {"mode": "SIMPLE", "credentialName": "shop-example-com-tls"}


def test_a_rule_for_every_path_sends_everything_through_the_proxy() -> None:
    http = routes(rendered("autoscaling-values.yaml"))  # its rate limit has no path_prefix: "/"
    assert list(http) == ["waitroom"]
    assert "match" not in http["waitroom"]


def test_an_existing_gateway_is_used_not_rendered() -> None:
    objects = rendered("external-redis-values.yaml")
    assert "Gateway" not in objects.kinds()
    assert objects.one("VirtualService")["spec"]["gateways"] == ["istio-system/public-gateway"]


def test_only_the_proxy_identity_reaches_the_protected_paths() -> None:
    objects = rendered("production-values.yaml")
    policy = objects.one("AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == "shop"
    spec = policy["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "shop"}}
    assert spec["action"] == "ALLOW"
    proxy_rule, gateway_rule = spec["rules"]
    assert proxy_rule == {
        "from": [{"source": {"principals": [f"cluster.local/ns/{NAMESPACE}/sa/{FULLNAME}"]}}]
    }
    assert "to" not in proxy_rule  # the proxy reaches every path
    assert gateway_rule["from"][0]["source"]["principals"] == [
        "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    ]
    denied = gateway_rule["to"][0]["operation"]["notPaths"]
    assert denied == ["/shop", "/shop/*", "/checkout/", "/checkout/*", "/api", "/api/*"]
    # The ServiceAccount the principal names is the one the proxy runs as.
    assert objects.one("ServiceAccount")["metadata"]["name"] == FULLNAME
    assert "AuthorizationPolicy" not in rendered("minimal-values.yaml").kinds()  # no workload selector


def test_istio_pod_settings() -> None:
    objects = rendered("production-values.yaml")
    template = objects.one("Deployment", FULLNAME)["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    annotations = template["metadata"]["annotations"]
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == "8081"
    assert json.loads(annotations["proxy.istio.io/config"]) == {"holdApplicationUntilProxyStarts": True}
    assert objects.one("DestinationRule")["spec"]["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}
    # Wait-room answers are 503s: the outlier detection must not count them.
    outliers = objects.one("DestinationRule")["spec"]["trafficPolicy"]["outlierDetection"]
    assert outliers["splitExternalLocalOriginErrors"] is True
    assert not {"consecutive5xxErrors", "consecutiveGatewayErrors"} & set(outliers)


def test_without_istio_no_mesh_objects_and_no_mesh_annotations() -> None:
    objects = rendered("demo-values.yaml")
    assert not {"Gateway", "VirtualService", "DestinationRule", "AuthorizationPolicy"} & objects.kinds()
    template = objects.one("Deployment", FULLNAME)["spec"]["template"]
    assert not [k for k in template["metadata"].get("annotations") or {} if "istio" in k]
    assert "sidecar.istio.io/inject" not in template["metadata"]["labels"]


# --- the demo counter -----------------------------------------------------------------------------


def test_the_demo_counter_is_the_same_image_as_the_upstream(tmp_path: Path) -> None:
    objects = rendered("demo-values.yaml")
    counter = objects.one("Deployment", f"{FULLNAME}-counter")
    (container,) = counter["spec"]["template"]["spec"]["containers"]
    assert container["image"] == proxy_container(objects)["image"]
    assert env_of(container)["WAITROOM_MODE"] == "counter"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert objects.one("Service", f"{FULLNAME}-counter")["spec"]["ports"][0]["port"] == 8080
    assert env_of(proxy_container(objects))["UPSTREAM"] == f"http://{FULLNAME}-counter:8080"
    assert proxy_config(objects, tmp_path).rooms[0].name == "demo"
    assert f"{FULLNAME}-counter" not in {
        d["metadata"]["name"] for d in rendered("minimal-values.yaml").all("Deployment")
    }


def test_notes_say_how_to_check_the_release() -> None:
    text = notes("production-values.yaml")
    assert f"helm test {RELEASE} -n {NAMESPACE}" in text
    assert f"port-forward svc/{FULLNAME} 8081:8081" in text
    assert "/readyz" in text
    assert "waitroom status" in text
    assert "/shop, /checkout/, /api" in text


# --- what the chart refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"upstream": ""}, "at '/upstream'"),
        ({"upstream": "shop:8080"}, "at '/upstream'"),
        ({"replicaCount": "-1"}, "at '/replicaCount': minimum: got -1"),
        ({"config.store.on_error": "sometimes"}, "at '/config/store/on_error': value must be one of"),
        ({"image.pullPolicy": "Sometimes"}, "at '/image/pullPolicy'"),
        ({"config.rooms[0].new_sessions": "0"}, "at '/config/rooms/0/new_sessions'"),
        ({"config.store.url": "redis://x:6379"}, "at '/config/store'"),  # the chart sets it
        ({"redis.external.url": "redis://:pw@r:6379/0"}, "at '/redis/external/url'"),
        ({"istio.gateway.principal": "x", "istio.gatway.name": "y"}, "additional properties 'gatway'"),
        ({"proxy.workers": "0"}, "at '/proxy/workers'"),
    ],
)
def test_the_schema_rejects_bad_values(sets: dict[str, str], message: str) -> None:
    error = render_error("minimal-values.yaml", sets)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


def test_a_missing_upstream_is_refused_by_name() -> None:
    error = render_error()  # the chart's own values.yaml leaves upstream empty
    assert "at '/upstream'" in error


@pytest.mark.parametrize(
    ("values_file", "sets", "message"),
    [
        (
            "minimal-values.yaml",
            {"replicaCount": "3"},
            "3 replicas cannot share the embedded store (memory://)",
        ),
        (
            "minimal-values.yaml",
            {"autoscaling.enabled": "true", "autoscaling.minReplicas": "1"},
            "autoscaling needs a shared store",
        ),
        ("minimal-values.yaml", {"redis.enabled": "true"}, "set secrets.sessionSecret"),
        (
            "production-values.yaml",
            {"config.admin.drain": "30s"},
            "terminationGracePeriodSeconds (30) must be at least proxy.preStopSleepSeconds + "
            "config.admin.shutdown_delay + config.admin.drain + 2 (5 + 0 + 30 + 2)",
        ),
        (
            "production-values.yaml",
            {"config.admin.drain": "15s", "config.admin.shutdown_delay": "9s"},
            "(5 + 9 + 15 + 2)",
        ),
        (
            "minimal-values.yaml",
            {"config.rooms[0].match.host": "shop.example.com"},
            "needs proxy.keepHostHeader=true",
        ),
        ("external-redis-values.yaml", {"istio.gateway.name": ""}, "istio.gateway.name"),
        ("minimal-values.yaml", {"proxy.workers": "auto"}, "proxy.workers=auto needs a shared store"),
    ],
)
def test_the_chart_fails_with_a_clear_message(values_file: str, sets: dict[str, str], message: str) -> None:
    assert message in render_error(values_file, sets)


@pytest.mark.parametrize("values_file", FILES)
def test_the_proxy_runs_waitroom_serve(values_file: str) -> None:
    """The image's entry point runs `waitroom serve` for WAITROOM_COMMAND=serve (the default)."""
    objects = rendered(values_file)
    assert env_of(proxy_container(objects))["WAITROOM_COMMAND"] == "serve"
    for counter in objects.all("Deployment"):
        if counter["metadata"]["name"].endswith("-counter"):
            assert env_of(counter["spec"]["template"]["spec"]["containers"][0])["WAITROOM_COMMAND"] == "serve"


def test_workers_follow_the_cpu_request() -> None:
    """proxy.workers reaches the entry point (WORKERS → `--workers`), and `auto` is bounded by the
    CPU request, which the downward API hands over rounded up (WAITROOM_CPUS)."""
    assert env_of(proxy_container(rendered("minimal-values.yaml")))["WORKERS"] == "1"
    container = proxy_container(render("production-values.yaml", {"proxy.workers": "auto"}))
    assert env_of(container)["WORKERS"] == "auto"
    cpus = next(e for e in container["env"] if e["name"] == "WAITROOM_CPUS")
    assert cpus["valueFrom"]["resourceFieldRef"] == {
        "containerName": "proxy",
        "resource": "requests.cpu",
        "divisor": "1",
    }


def test_mitmdump_is_one_value_away_and_nothing_else_is() -> None:
    objects = render("minimal-values.yaml", {"proxy.command": "mitmdump"})
    assert env_of(proxy_container(objects))["WAITROOM_COMMAND"] == "mitmdump"
    assert "proxy.command" in render_error("minimal-values.yaml", {"proxy.command": "mitmweb"}).replace(
        "/", "."
    )


def test_a_host_room_renders_with_keep_host_header(tmp_path: Path) -> None:
    objects = render(
        "minimal-values.yaml",
        {"config.rooms[0].match.host": "shop.example.com", "proxy.keepHostHeader": "true"},
    )
    assert env_of(proxy_container(objects))["KEEP_HOST_HEADER"] == "true"
    assert proxy_config(objects, tmp_path).rooms[0].match.host == "shop.example.com"
