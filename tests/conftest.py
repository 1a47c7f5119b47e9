from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import Mitmdump, RedisServer, Upstream

SECRET = "test-secret-0123456789abcdef"


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
def start_proxy(tmp_path: Path) -> Iterator[StartProxy]:
    """start_proxy(config_text, upstream_url, env=..., extra=..., wait=True) → a running mitmdump."""
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
        proxy = Mitmdump(upstream, tmp_path, path, env=env, extra=extra, scripts=scripts)
        started.append(proxy)
        return proxy.wait_ready() if wait else proxy

    yield start
    for proxy in started:
        proxy.stop()
