"""The mitmproxy addon `-s addons/waitroom.py` loads (and `waitroom serve` builds in): the wait
room, built from small parts that share one runtime.Runtime (config, deciders, keys, store,
overrides; no hooks):

- gate.Gate: the request path (judge, classify, rate limits, room, act, count and log);
- connection_limits.ConnectionBounds: the header timeout and the connection limit;
- telemetry.DecisionLog: the decision-log line, once a request's answer is known;
- replay.Replay: flows read from a file, decided at their recorded time (`waitroom_replay`);
- config_watch.ConfigLoader: the `waitroom_config` option and the config file's watcher;
- operations.Operations: the admin port, the replica watch, the overrides refresh, SIGTERM;
- drain.Drain: in-flight tracking and the SIGTERM sequence.

The parts are not mitmproxy sub-addons: mitmproxy looks every hook event (and the `update` event
that follows each flow event) up on every addon it holds, whether or not it implements it, so each
sub-addon would cost a lookup per event on every request. `WaitRoom` implements each hook once and
calls the parts that take it, in the order above, so a request costs one dispatch per event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from pathlib import Path

from mitmproxy import ctx, http
from mitmproxy.connection import Client

from waitroom.addon.config_watch import ConfigLoader
from waitroom.addon.connection_limits import ConnectionBounds
from waitroom.addon.drain import Drain
from waitroom.addon.gate import Gate
from waitroom.addon.operations import Operations
from waitroom.addon.replay import Replay
from waitroom.addon.runtime import Loaded, Runtime
from waitroom.addon.telemetry import DecisionLog
from waitroom.config import schema as config_module
from waitroom.store.base import Clock

log = logging.getLogger(__name__)


class WaitRoom:
    def __init__(self, default_config: Path = config_module.DEFAULT_CONFIG, clock: Clock = time.time) -> None:
        self.runtime = runtime = Runtime(default_config, clock)
        self.bounds = ConnectionBounds()
        self.gate = Gate(runtime, self.bounds)
        self.decision_log = DecisionLog()
        runtime.on_load.append(self._config_loaded)
        self.drain = Drain(runtime.drain_timing)
        self.replay = Replay(runtime, self.gate)
        self.config_watch = ConfigLoader(runtime)
        self.operations = Operations(runtime, self.drain)

    def _config_loaded(self) -> None:
        if self.runtime.config is not None:
            self.decision_log.use(self.runtime.config.decision_log)

    @property
    def loaded(self) -> Loaded | None:
        """The config in force and what was built from it; None until one loaded."""
        return self.runtime.loaded

    # --- lifecycle: the options, in the parts' order (the replay's before the config watch's,
    # which depends on it) -----------------------------------------------------------------------

    def load(self, loader: object) -> None:
        self.gate.load(loader)
        self.bounds.load(loader)
        self.replay.load(loader)
        self.config_watch.load(loader)
        self.operations.load(loader)

    def configure(self, updated: set[str]) -> None:
        self.bounds.configure(updated)
        self.replay.configure(updated)
        self.config_watch.configure(updated)
        self.operations.configure(updated)

    def running(self) -> None:
        self.runtime.running = True
        if not any(str(mode).startswith("reverse:") for mode in ctx.options.mode):
            # `waitroom serve` refuses to start so; mitmdump's other modes may be what a test wants.
            log.warning(
                "waitroom: no --mode reverse:URL: the wait room admits visitors to no service "
                "(run it as a reverse proxy in front of one)"
            )
        self.bounds.running()
        self.config_watch.running()
        self.operations.running()

    async def done(self) -> None:
        await self.runtime.close()
        self.replay.done()
        self.config_watch.done()
        await self.operations.done()
        self.drain.done()

    # --- connections and flows ----------------------------------------------------------------

    def client_connected(self, client: Client) -> None:
        self.bounds.client_connected(client)
        self.drain.client_connected(client)

    def client_disconnected(self, client: Client) -> None:
        self.bounds.client_disconnected(client)
        self.drain.client_disconnected(client)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        await self.gate.requestheaders(flow)
        self.drain.requestheaders(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not flow.live and self.runtime.replay:
            return self.replay.request(flow)
        return self.gate.request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        command = self.gate.responseheaders(flow)  # an answer with Waitroom-Command waits for the store
        if command is not None:
            return self._after_command(command, flow)
        self.drain.responseheaders(flow)
        return None

    async def _after_command(self, command: Awaitable[None], flow: http.HTTPFlow) -> None:
        await command
        self.drain.responseheaders(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.bounds.response(flow)
        self.decision_log.response(flow)
        self.replay.response(flow)
        self.drain.response(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.bounds.error(flow)
        self.decision_log.error(flow)
        self.drain.error(flow)
