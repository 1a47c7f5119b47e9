"""The admin port in the test's own process: a real Runtime on the embedded store, behind the real
routes and handlers, served on a free port of the test's event loop (no mitmdump, no subprocess)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from waitroom.addon.drain import Drain
from waitroom.addon.operations import _Operated as RuntimeOperated  # what the proxy gives its admin port
from waitroom.addon.runtime import Runtime
from waitroom.ops.admin import application
from waitroom.ops.views import Operated

TOKEN = "unit-admin-token"
CONFIG = """
rooms:
  - {name: shop, match: {path_prefix: /shop}, new_sessions: 2, window: 60s, block_for: 30s}
  - {name: news, match: {path_prefix: /news, host: news.example}, new_sessions: 5}
  - {name: line, match: {path_prefix: /line}, new_sessions: 1, queue: fifo}
rate_limits:
  - {name: api, match: {path_prefix: /api}, key: global, limit: 5, per: 1m}
"""


class FakeClock:
    """Time that moves only when a test moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Proxy:
    """What the admin port sees of a running proxy: the runtime, its drain, the adapter between."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.runtime = Runtime(clock=clock)
        self.runtime.load(path)
        self.drain = Drain(self.runtime.drain_timing)
        self.operated: Operated = RuntimeOperated(self.runtime, self.drain)


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "waitroom.yaml"
    path.write_text(text)
    return path


@asynccontextmanager
async def serving(operated: Operated, token: str | None = TOKEN) -> AsyncIterator[str]:
    """The admin port's application on 127.0.0.1:<free port>; yields its base URL."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(application(operated, token))
    server.add_sockets(sockets)
    try:
        yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    finally:
        server.stop()
        await server.close_all_connections()
