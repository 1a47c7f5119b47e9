"""Every rendered object against a schema, in every scenario: the core Kubernetes objects with
kubernetes-validate --strict (unknown fields are errors) for the oldest Kubernetes the chart supports
and the newest one known; the Istio and ServiceMonitor objects with cloudcoil's models of their CRDs,
plus a check that no key was dropped as unknown (the models themselves ignore unknown keys)."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from tests.kube.helm import render, values_files
from tests.kube.test_image import BIN

KUBERNETES = ("1.25.0", kubernetes_validate.latest_version())
"""Chart.yaml's kubeVersion floor, and the newest schemas kubernetes-validate ships."""
CUSTOM = {
    ("networking.istio.io/v1", "Gateway"): "cloudcoil.models.istio.networking.v1",
    ("networking.istio.io/v1", "VirtualService"): "cloudcoil.models.istio.networking.v1",
    ("networking.istio.io/v1", "DestinationRule"): "cloudcoil.models.istio.networking.v1",
    ("security.istio.io/v1", "AuthorizationPolicy"): "cloudcoil.models.istio.security.v1",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "cloudcoil.models.prometheus_operator.v1",
}
"""The custom resources the chart renders → the module of cloudcoil's model of their CRD (imported
when a test uses it: the models take seconds to build, which every pytest worker would pay while
collecting)."""


def model(api_version: str, kind: str) -> type[BaseModel]:
    found: type[BaseModel] = getattr(importlib.import_module(CUSTOM[(api_version, kind)]), kind)
    return found


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CUSTOM


def unknown_keys(given: Any, kept: Any, path: str = "") -> list[str]:
    """Keys of `given` that the model's dump of it lost: fields the CRD does not have."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        lost = []
        for key, value in given.items():
            where = f"{path}.{key}"
            if key not in kept:
                lost.append(where)
            else:
                lost += unknown_keys(value, kept[key], where)
        return lost
    if isinstance(given, list) and isinstance(kept, list) and len(given) == len(kept):
        return [
            lost
            for i, (g, k) in enumerate(zip(given, kept, strict=True))
            for lost in unknown_keys(g, k, f"{path}[{i}]")
        ]
    return []


@pytest.mark.parametrize("values_file", values_files())
@pytest.mark.parametrize("version", KUBERNETES)
def test_core_objects_validate_strictly(values_file: str, version: str) -> None:
    core = [o for o in render(values_file) if not is_custom(o)]
    assert len(core) >= 8
    for obj in core:
        kubernetes_validate.validate(obj, version, strict=True)  # raises, naming the field


@pytest.mark.parametrize("values_file", values_files())
def test_istio_and_prometheus_objects_match_their_crds(values_file: str) -> None:
    objects = render(values_file)
    custom = [o for o in objects if is_custom(o)]
    for obj in custom:
        validated = model(obj["apiVersion"], obj["kind"]).model_validate(obj)
        kept = validated.model_dump(by_alias=True, exclude_unset=True)
        assert not unknown_keys(obj, kept), f"{obj['kind']}: unknown fields {unknown_keys(obj, kept)}"
    unexpected = {
        o["kind"] for o in objects if o["apiVersion"].endswith(("istio.io/v1", "coreos.com/v1"))
    } - {kind for _, kind in CUSTOM}
    assert not unexpected, f"no schema check for {unexpected}"


def test_the_checks_catch_a_wrong_field() -> None:
    """The validators used above do fail on the mistakes they are here for."""
    deployment = next(o for o in render("minimal-values.yaml") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES[0], strict=True)
    service = next(o for o in render("production-values.yaml") if o["kind"] == "VirtualService")
    service["spec"]["http"][0]["rewite"] = {"uri": "/"}
    virtual_service = model("networking.istio.io/v1", "VirtualService")
    kept = virtual_service.model_validate(service).model_dump(by_alias=True, exclude_unset=True)
    assert unknown_keys(service, kept) == [".spec.http[0].rewite"]
    service["spec"]["hosts"] = "shop.example.com"  # a string where the CRD wants a list
    with pytest.raises(ValueError, match="hosts"):
        virtual_service.model_validate(service)


def test_kubernetes_validate_cli_on_the_whole_stream(tmp_path: Path) -> None:
    """The same check as a user runs it: the command line on the rendered stream, custom kinds aside."""
    core = [o for o in render("production-values.yaml") if not is_custom(o)]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES[0], str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(core)
