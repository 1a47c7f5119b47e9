"""The mitmproxy addon `-s addons/waitroom.py` loads: the wait room, built from small addons.

`WaitRoom` is the gate (gate.py: the request path, its own hooks) and holds the other parts as
sub-addons, which mitmproxy runs after it, in this order:

- bounds.ConnectionBounds: the header timeout and the connection limit;
- record.DecisionLog: the decision-log line, once a request's answer is known;
- replay.Replay: flows read from a file, decided at their recorded time (`waitroom_replay`);
- loader.ConfigLoader: the `waitroom_config` option and the config file's watcher;
- operations.Operations: the admin port, the replica watch, the overrides refresh, SIGTERM;
- drain.Drain: in-flight tracking and the SIGTERM sequence.

They share one runtime.Runtime (config, deciders, keys, store, overrides), which has no hooks.
"""

from __future__ import annotations

import time
from pathlib import Path

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
        self.drain = Drain(runtime.drain_timing)
        self.replay = Replay(runtime, self)
        self.loader = ConfigLoader(runtime)
        self.operations = Operations(runtime, self.drain)
        self.addons = [self.bounds, DecisionLog(), self.replay, self.loader, self.operations, self.drain]
        """mitmproxy runs these after the gate's own hooks (the replay's option before the loader's
        config, which depends on it)."""

    @property
    def loaded(self) -> Loaded | None:
        """The config in force and what was built from it; None until one loaded."""
        return self.runtime.loaded

    def running(self) -> None:
        self.runtime.running = True

    async def done(self) -> None:
        await self.runtime.close()
