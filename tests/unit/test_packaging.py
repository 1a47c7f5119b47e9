"""What the wheel must carry and declare, read from the source (the wheel itself is built and
installed by tests/ops/test_wheel.py): every shipped file matched by the package data, every
third-party import a declared dependency, and the checkout's config/ a link into the package."""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "waitroom"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_shipped_file_is_package_data() -> None:
    """A page, a strings file, a Lua script or the example config missing from the globs works in
    a checkout and fails in every installed copy."""
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["waitroom"]
    shipped = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    ]
    assert "web/pages/waitroom.html" in shipped
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"


def test_the_checkouts_config_links_into_the_package() -> None:
    """Every documented command line names config/waitroom.yaml; it is the packaged example, not a
    copy that could drift from what `waitroom example-config` and an installed proxy use."""
    link = REPO / "config" / "waitroom.yaml"
    assert link.is_symlink()
    assert link.resolve() == (PACKAGE / "config" / "waitroom.yaml").resolve()


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _provided(requirements: list[str]) -> set[str]:
    """The declared distributions, and what each brings with the extras asked for (`redis[hiredis]`
    brings hiredis, `PyJWT[crypto]` cryptography, pydantic its core): one level down."""
    found = set()
    for text in requirements:
        requirement = Requirement(text)
        found.add(_name(requirement.name))
        for sub in metadata.requires(requirement.name) or []:
            dependency = Requirement(sub)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras):
                found.add(_name(dependency.name))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """The wheel test installs its dependencies from the test venv, which also holds the dev tools:
    a runtime import of a dev-only package would pass there and fail in `pipx install`."""
    declared = _provided(PYPROJECT["project"]["dependencies"])
    distributions = metadata.packages_distributions()
    imported: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"waitroom", "__future__"})
    undeclared = []
    for module in third_party:
        dists = {_name(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared.append(f"{module} ({', '.join(sorted(dists))})")
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def _make(*args: str) -> str:
    """`make` itself, but only targets that install nothing, or `-n` (print, do not run)."""
    done = subprocess.run(["make", "-s", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_lists_its_targets_and_the_demo_needs_only_the_runtime() -> None:
    listed = _make()  # `help` is the default goal
    for target in ("run", "test", "setup", "docs", "help", "kube", "bench"):
        assert f"make {target} " in listed, target
    assert "PORT=8080" in listed
    run = _make("-n", "-B", "run", "PORT=9090", "ADMIN_PORT=9091")  # -B: as if nothing were set up
    assert "pip install --progress-bar on -e .\n" in run  # no [dev,bench]: the demo's deps only
    assert "-q -e" not in run  # pip's progress shows
    assert "--listen-port 9090" in run
    assert "--set waitroom_admin_port=9091" in run
    assert "WAITROOM_ADMIN_TOKEN=demo" in run
