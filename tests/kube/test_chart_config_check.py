"""The chart refuses what the proxy refuses. The three configs of issue 29 (`opens_at` without
`queue: fifo`, a `..` in a path prefix, a `grace` below 1.5 × `retry_after`) rendered without
complaint and then crash-looped an install or left an upgrade's proxies on their old config.

Two halves: the values schema, generated from the config models (config/chartschema.py), refuses
the first two at `helm template`; the pre-install/pre-upgrade hook runs the proxy's own `waitroom
check` on the rendered config and refuses all three. Without a cluster, the hook is proven by
rendering its objects and running exactly its container's command on its ConfigMap's file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES,
    Rendered,
    helm,
    render,
    render_error,
    values_files,
)
from waitroom.config import chartschema

CHECK = f"{RELEASE}-waitroom-config-check"
HEAD = "upstream: http://shop.shop.svc.cluster.local:8080\nconfig:\n  rooms:\n"
BAD = {
    "opens-at-without-fifo": (
        "    - {name: sale, match: {path_prefix: /sale}, new_sessions: 5,"
        " opens_at: '2030-01-01T10:00:00+00:00'}\n",
        "at '/config/rooms/0': missing property 'queue'",
        "rooms[0]: opens_at needs queue: fifo",
    ),
    "dot-segment": (
        "    - {name: shop, match: {path_prefix: /a/../shop}, new_sessions: 5}\n",
        "at '/config/rooms/0/match/path_prefix': '/a/../shop' does not match pattern",
        "rooms[0].match.path_prefix: not a usable path prefix: dot segment in the request path",
    ),
    "grace-too-short": (
        "    - {name: line, match: {path_prefix: /line}, new_sessions: 5, queue: fifo,"
        " retry_after: 10s, grace: 11s}\n",
        None,  # a JSON schema cannot compare two durations: the hook refuses it
        "rooms[0]: grace (11s) must be at least 1.5 × retry_after (15s)",
    ),
}


def render_unchecked(values: Path) -> Rendered:
    """As `helm template --skip-schema-validation`: what the hook gets when the schema lets it by."""
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(values),
        "--skip-schema-validation",
    )
    return Rendered([doc for doc in yaml.safe_load_all(out) if doc])


def run_the_hook(objects: Rendered, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The hook Job's command, run here on its ConfigMap's file (the Job mounts it read-only)."""
    config_map = objects.one("ConfigMap", CHECK)
    job = objects.one("Job", CHECK)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == CHECK
    folder = tmp_path / mount["mountPath"].strip("/")
    folder.mkdir(parents=True)
    for name, text in config_map["data"].items():
        (folder / name).write_text(text)
    command: list[str] = container["command"]
    assert command[0] == "waitroom"
    argv = [str(Path(sys.executable).with_name("waitroom")), *command[1:]]
    argv = [a.replace(mount["mountPath"], str(folder)) for a in argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_hook_runs_before_anything_changes() -> None:
    objects = render("minimal-values.yaml")
    config_map, job = objects.one("ConfigMap", CHECK), objects.one("Job", CHECK)
    for obj, weight in ((config_map, "-10"), (job, "-5")):
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-weight"] == weight  # the ConfigMap first, then the Job
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    proxies = objects.one("ConfigMap", f"{RELEASE}-waitroom")["data"]["waitroom.yaml"]
    assert yaml.safe_load(config_map["data"]["waitroom.yaml"]) == yaml.safe_load(proxies)  # the same config
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 120)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"] == ["waitroom", "check", "--quiet", "/etc/waitroom-check/waitroom.yaml"]
    assert (
        container["image"]
        == objects.one("Deployment", f"{RELEASE}-waitroom")["spec"]["template"]["spec"]["containers"][0][
            "image"
        ]
    )
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    labels = spec["template"]["metadata"]["labels"]
    assert labels["sidecar.istio.io/inject"] == "false"  # a sidecar would keep the Job running
    off = render("minimal-values.yaml", {"configCheck.enabled": "false"})
    assert not [o for o in off if o["metadata"]["name"] == CHECK]


@pytest.mark.parametrize("values_file", values_files())
def test_the_hook_passes_the_charts_own_values(values_file: str, tmp_path: Path) -> None:
    done = run_the_hook(render(values_file), tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_three_configs_of_the_issue_are_refused(case: str, tmp_path: Path) -> None:
    rooms, schema_says, proxy_says = BAD[case]
    values = tmp_path / "values.yaml"
    values.write_text(HEAD + rooms)
    if schema_says is not None:
        error = render_error(str(values))
        assert "values don't meet the specifications of the schema" in error
        assert schema_says in error
    done = run_the_hook(render_unchecked(values), tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.endswith(proxy_says), line


def test_a_host_room_is_checked_as_the_proxy_runs_it(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        HEAD + "    - {name: news, match: {path_prefix: /, host: news.example}, new_sessions: 5}\n"
    )
    objects = render(str(values), {"proxy.keepHostHeader": "true"})
    (container,) = objects.one("Job", CHECK)["spec"]["template"]["spec"]["containers"]
    assert "--keep-host-header" in container["command"]
    done = run_the_hook(objects, tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_schema_is_generated_from_the_models() -> None:
    """`make docs` writes it; a model change without it fails here (as docs/config.md does)."""
    assert chartschema.main(["--check"]) == 0, "charts/waitroom/values.schema.json: run `make docs`"


def test_the_schema_takes_every_room_setting_the_docs_show(tmp_path: Path) -> None:
    """The generated schema must never refuse what the proxy accepts: the shipped example config's
    rooms, bypass prefixes and a rule with every field, as chart values."""
    example = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "waitroom.yaml").read_text())
    values: dict[str, Any] = {
        "upstream": "http://shop:8080",
        "config": {
            "rooms": [
                *example["rooms"],
                {"name": "well-known", "match": {"path_prefix": "/.well-known/x/"}, "new_sessions": 1},
                {"name": "nulls", "match": {"path_prefix": "/n"}, "new_sessions": 1, "max_active": None},
            ],
            "bypass": [*example["bypass"], "/static/"],
            "rate_limits": [
                {
                    "name": "api",
                    "match": {"path_prefix": "/api", "methods": ["get", "POST"]},
                    "key": "header:X-Api-Key",
                    "fallback": "ip",
                    "limit": 5,
                    "per": "1s",
                    "algorithm": "gcra",
                    "burst": 10,
                    "action": "delay",
                    "max_delay": "2s",
                    "shadow": True,
                }
            ],
        },
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    render(str(path))  # no schema error


# --- the NetworkPolicy without Istio ------------------------------------------------------------


def proxied_rule(objects: Rendered) -> dict[str, Any]:
    rule: dict[str, Any] = objects.one("NetworkPolicy", f"{RELEASE}-waitroom")["spec"]["ingress"][0]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    return rule


def test_with_istio_the_gateway_pods_reach_the_proxy() -> None:
    rule = proxied_rule(render("minimal-values.yaml"))
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"] == {"istio": "ingressgateway"}
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "istio-system"}


def test_without_istio_no_istio_only_policy() -> None:
    """`istio.enabled=false` used to render a policy that admitted only the Istio gateway: nothing
    reached the proxy. Now the port rule has no `from`, and NOTES says how to narrow it."""
    sets = {"istio.enabled": "false"}
    rule = proxied_rule(render("minimal-values.yaml", sets))
    assert "from" not in rule
    text = helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--dry-run=client",
        "-f",
        str(VALUES / "minimal-values.yaml"),
        "--set",
        "istio.enabled=false",
    )
    assert "set networkPolicy.proxyFrom to your ingress" in " ".join(text.split())


def test_without_istio_proxy_from_is_used_as_given(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    values.write_text(yaml.safe_dump({"istio": {"enabled": False}, "networkPolicy": {"proxyFrom": [peer]}}))
    objects = render_values("minimal-values.yaml", values)
    assert proxied_rule(objects)["from"] == [peer]


def render_values(values_file: str, extra: Path) -> Rendered:
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "-f",
        str(VALUES / values_file),
        "-f",
        str(extra),
    )
    return Rendered([doc for doc in yaml.safe_load_all(out) if doc])
