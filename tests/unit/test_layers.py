"""The layering rule of docs/design.md ("Layout"), read from the source with `ast`: a module imports
only from its own folder or from folders below it, and no import cycle exists. Every import counts:
module level, inside a function, and under `TYPE_CHECKING`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "waitroom"

LAYERS: list[set[str]] = [
    {"metrics"},
    {"web"},
    {"config"},
    {"store"},
    {"rooms", "ratelimit"},
    {"build"},
    {"sim"},
    {"ops"},
    {"kube"},
    {"addon"},
    {"counter"},
    {"workers"},
    {"serve"},
    {"cli"},
]
"""Bottom first. A folder (or a module at the top of the package) imports only from itself and from
the rows above its own; folders on one row do not import each other."""

RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The folder (or top-level module) a module belongs to: waitroom.rooms.line → rooms."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports_of(module: str) -> set[str]:
    """Every waitroom module `module` imports, at any depth of its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("waitroom"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("waitroom"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in MODULES} - {""}
    assert units <= set(RANK), f"add to LAYERS: {sorted(units - set(RANK))}"


def test_no_module_imports_from_a_folder_above_its_own() -> None:
    upward = []
    for module, imported in GRAPH.items():
        here = unit_of(module)
        for target in imported:
            there = unit_of(target)
            if here and there and here != there and RANK[there] >= RANK[here]:
                upward.append(f"{module} → {target}")
    assert not upward, "imports that go up or sideways in the layers:\n" + "\n".join(sorted(upward))


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
    return found


def test_no_import_cycles() -> None:
    cycles = [sorted(c) for c in strongly_connected(GRAPH) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in strongly_connected(graph) if len(c) > 1] == [["a", "b", "c"]]


ISOLATED_IMPORTS = """
import os, sys
# Third-party packages first (they are not what is tested); then each waitroom module in a fork of
# this interpreter, where no other waitroom module is loaded yet.
import mitmproxy.http, mitmproxy.master, mitmproxy.tools.main, pydantic, redis.asyncio, redis.cluster
import prometheus_client, yaml, jwt, tornado.web, kubernetes.client, kubernetes.watch
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException as e:
            print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print(" ".join(failed))
"""


def test_every_module_imports_on_its_own() -> None:
    """Each in an interpreter where no other waitroom module is loaded: no module works only
    because another one happened to be imported first."""
    done = subprocess.run(
        [sys.executable, "-c", ISOLATED_IMPORTS, *sorted(MODULES)],
        capture_output=True,
        text=True,
        cwd=SRC.parent,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"not importable alone: {done.stdout}\n{done.stderr}"
