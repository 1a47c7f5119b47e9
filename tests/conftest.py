from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ENTRY_POINTS, Mitmdump, RedisServer, Upstream

SECRET = "test-secret-0123456789abcdef"

BOTH_ENTRY_POINTS = (
    "tests/e2e/test_waitroom_journey.py",
    "tests/ops/test_shutdown.py",
    "tests/ops/test_operations.py",
    "tests/security/test_full_tables.py",
    "tests/security/test_places.py",
    "tests/security/test_addresses.py",
    "tests/security/test_leave.py",
    "tests/browser/test_journey.py",
)
"""Where the entry point matters, each test runs against `mitmdump -s addons/waitroom.py` and
against `waitroom serve`: the journey through every outcome, the drain on SIGTERM (each master
handles signals and shutdown itself), options, reload and the admin port (`waitroom serve` orders
its options differently), the connection limits (they hook each master's server), and issue 27's
rows of places and addresses (each holds on both entry points). The rest of the end-to-end suite
decides the same way on either, through the same addon: it runs once."""

SERVE_ONLY = (
    "tests/e2e/",
    "tests/counter/test_counter_e2e.py",
    "tests/ops/",
    "tests/browser/",
)
"""End-to-end modules that run on `waitroom serve` only (the entry point users are pointed to).
Elsewhere (the rest of tests/security, tests/flows, tests/kube) a proxy is mitmdump."""


BUSY_HOG = "while True: pass"
"""What each busy-mode process runs: pure CPU, no I/O, at the tests' own priority."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--busy",
        action="store_true",
        help="run the tests marked `exact` beside CPU-bound processes taking every core (make test does)",
    )


@pytest.fixture(autouse=True)
def busy_machine(request: pytest.FixtureRequest) -> Iterator[None]:
    """With --busy, a test marked `exact` runs beside CPU-bound processes, one per core (with
    several pytest-xdist workers, each its share), started before the test and stopped after it: a
    guarantee must hold on a saturated machine, because that is when a crowd arrives."""
    if not request.config.getoption("--busy") or request.node.get_closest_marker("exact") is None:
        yield
        return
    # With pytest-xdist each worker brings its share: every core taken when all of them run one.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_HOG]) for _ in range(_hogs(workers))]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _hogs(workers: int) -> int:
    return max(1, (os.cpu_count() or 2) // max(1, workers))


SLOW_FIRST = (
    "tests/bench/test_bench_smoke.py",
    "tests/e2e/test_faults.py",
    "tests/e2e/test_fair_queue.py",
    "tests/e2e/test_capacity.py",
    "tests/e2e/test_flash_crowd.py",
    "tests/e2e/test_estimate_accuracy.py",
    "tests/e2e/test_scalper.py",
    "tests/counter/test_counter_e2e.py",
)
"""The longest modules start first, so that with two workers none of them is the suite's tail."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        where = item.nodeid.split("::", 1)[0]
        return SLOW_FIRST.index(where) if where in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "entry_point" not in metafunc.fixturenames:
        return
    where = (
        Path(metafunc.definition.path).resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
    )
    if where.startswith(BOTH_ENTRY_POINTS):
        # Module scope: a module's tests run on one entry point, then on the other, so a
        # module-scoped fixture may start one proxy per entry point and share it.
        metafunc.parametrize("entry_point", ENTRY_POINTS, indirect=True, scope="module")
    elif where.startswith(SERVE_ONLY):
        metafunc.parametrize("entry_point", ["serve"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def entry_point(request: pytest.FixtureRequest) -> str:
    """How start_proxy starts a proxy: "mitmdump" or "serve" (see BOTH_ENTRY_POINTS, SERVE_ONLY)."""
    return str(getattr(request, "param", "mitmdump"))


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


StartProxy = Callable[..., Mitmdump]


@pytest.fixture
def start_proxy(tmp_path: Path, entry_point: str) -> Iterator[StartProxy]:
    """start_proxy(config_text, upstream_url, env=..., extra=..., wait=True) → a running proxy
    (mitmdump, or `waitroom serve`: entry_point)."""
    started: list[Mitmdump] = []

    def start(
        config: str | None,
        upstream: str = "http://127.0.0.1:9",
        *,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        scripts: list[str] | None = None,
        wait: bool = True,
    ) -> Mitmdump:
        path = None
        if config is not None:
            path = tmp_path / f"config-{len(started)}.yaml"
            path.write_text(config)
        proxy = Mitmdump(upstream, tmp_path, path, env=env, extra=extra, scripts=scripts, entry=entry_point)
        started.append(proxy)
        return proxy.wait_ready() if wait else proxy

    yield start
    for proxy in started:
        proxy.stop()
