"""The chart rendered by a real helm (scripts/fetch-helm puts it in .tools/bin), parsed into objects."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

HELM = REPO / ".tools" / "bin" / "helm"
CHART = REPO / "charts" / "waitroom"
VALUES = CHART / "ci"
RELEASE = "shopfront"
NAMESPACE = "web"


class HelmError(Exception):
    pass


def helm(*args: str) -> str:
    if not HELM.exists():
        raise RuntimeError(f"{HELM} is missing: `make tools` fetches it (scripts/fetch-helm)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip() or result.stdout.strip())
    return result.stdout


def value_args(values_file: str | None, sets: dict[str, str] | None) -> list[str]:
    args = ["-f", str(VALUES / values_file)] if values_file else []
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


@dataclass
class Rendered:
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} named {name}: {[o['metadata']['name'] for o in found]}"
        return found[0]

    def maybe(self, kind: str, name: str | None = None) -> dict[str, Any] | None:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        return found[0] if found else None

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)


def render(values_file: str | None = None, sets: dict[str, str] | None = None) -> Rendered:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *value_args(values_file, sets))
    return Rendered([doc for doc in yaml.safe_load_all(out) if doc])


def render_error(values_file: str | None = None, sets: dict[str, str] | None = None) -> str:
    try:
        render(values_file, sets)
    except HelmError as e:
        return str(e)
    raise AssertionError(f"helm template rendered {values_file} {sets} without an error")


def notes(values_file: str, sets: dict[str, str] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (client-side dry run: no cluster)."""
    out = helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        *value_args(values_file, sets),
    )
    return out.split("NOTES:", 1)[1]


def values_files() -> list[str]:
    return sorted(p.name for p in Path(VALUES).glob("*.yaml"))
