from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ENTRY_POINTS, Mitmdump, RedisServer, Upstream

SECRET = "test-secret-0123456789abcdef"

BOTH_ENTRY_POINTS = (
    "tests/e2e/",
    "tests/ratelimit/test_e2e_ratelimit.py",
    "tests/counter/test_counter_e2e.py",
    "tests/ops/",
    "tests/browser/",
)
"""The end-to-end suite: each of its tests runs against `mitmdump -s addons/waitroom.py` and against
`waitroom serve`, so that neither entry point drifts. Elsewhere a proxy is mitmdump."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "entry_point" not in metafunc.fixturenames:
        return
    where = (
        Path(metafunc.definition.path).resolve().relative_to(Path(__file__).resolve().parents[1]).as_posix()
    )
    if where.startswith(BOTH_ENTRY_POINTS):
        metafunc.parametrize("entry_point", ENTRY_POINTS, indirect=True)


@pytest.fixture
def entry_point(request: pytest.FixtureRequest) -> str:
    """How start_proxy starts a proxy: "mitmdump" or "serve" (see BOTH_ENTRY_POINTS)."""
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
