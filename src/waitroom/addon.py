"""The mitmproxy addon `-s addons/waitroom.py` loads (and `waitroom serve` builds in): the wait
room, built from small parts.

`WaitRoom` is the gate (gate.py: the request path, its own hooks) and holds the other parts:

- bounds.ConnectionBounds: the header timeout and the connection limit;
- record.DecisionLog: the decision-log line, once a request's answer is known;
- replay.Replay: flows read from a file, decided at their recorded time (`waitroom_replay`);
- loader.ConfigLoader: the `waitroom_config` option and the config file's watcher;
- operations.Operations: the admin port, the replica watch, the overrides refresh, SIGTERM;
- drain.Drain: in-flight tracking and the SIGTERM sequence.

They share one runtime.Runtime (config, deciders, keys, store, overrides), which has no hooks.

The parts are not mitmproxy sub-addons: mitmproxy looks every hook event (and the `update` event
that follows each flow event) up on every addon it holds, whether or not it implements it, so six
sub-addons cost six lookups per event on every request. `WaitRoom` implements each hook once and
calls the parts that take it, in the order mitmproxy would have (the gate first, then the parts in
the order above), so a request costs one dispatch per event.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from pathlib import Path

from mitmproxy import http
from mitmproxy.connection import Client

from waitroom import config as config_module
from waitroom.bounds import ConnectionBounds
from waitroom.drain import Drain
from waitroom.gate import Gate
from waitroom.loader import ConfigLoader
from waitroom.operations import Operations
from waitroom.record import DecisionLog
from waitroom.replay import Replay
from waitroom.runtime import Loaded, Runtime
from waitroom.store import Clock


class WaitRoom(Gate):
    def __init__(self, default_config: Path = config_module.DEFAULT_CONFIG, clock: Clock = time.time) -> None:
        runtime = Runtime(default_config, clock)
        super().__init__(runtime, ConnectionBounds())
        self.decision_log = DecisionLog()
        self.drain = Drain(runtime.drain_timing)
        self.replay = Replay(runtime, self)
        self.loader = ConfigLoader(runtime)
        self.operations = Operations(runtime, self.drain)

    @property
    def loaded(self) -> Loaded | None:
        """The config in force and what was built from it; None until one loaded."""
        return self.runtime.loaded

    # --- lifecycle: the options, in the parts' order (the replay's before the loader's config,
    # which depends on it) -----------------------------------------------------------------------

    def load(self, loader: object) -> None:
        super().load(loader)
        self.bounds.load(loader)
        self.replay.load(loader)
        self.loader.load(loader)

    def configure(self, updated: set[str]) -> None:
        self.bounds.configure(updated)
        self.replay.configure(updated)
        self.loader.configure(updated)

    def running(self) -> None:
        self.runtime.running = True
        self.loader.running()
        self.operations.running()

    async def done(self) -> None:
        await self.runtime.close()
        self.replay.done()
        self.loader.done()
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
        await super().requestheaders(flow)
        self.drain.requestheaders(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if not flow.live and self.runtime.replay:
            return self.replay.request(flow)
        return super().request(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        command = super().responseheaders(flow)  # an answer with Waitroom-Command waits for the store
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
