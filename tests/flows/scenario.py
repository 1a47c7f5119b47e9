"""The flow fixtures: scenarios (readable YAML), their recordings (.mitm) and expectations (.expected).

tests/flows/NAME.yaml       what the scenario shows, its config and its steps (hand-written)
tests/flows/NAME.mitm       the flows a real mitmdump recorded with `-w` (make flows)
tests/flows/NAME.expected   one line per request, from the recording (make flows): the diff
                            to review when behaviour changes on purpose
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mitmproxy import http, io
from mitmproxy.eventsequence import iterate
from mitmproxy.test import taddons

from waitroom.addon import WaitRoom
from waitroom.addon.replay import describe
from waitroom.config.durations import parse_duration

FLOWS = Path(__file__).resolve().parent
SECRET = "flows-secret-0123456789abcdef0123"
"""WAITROOM_SECRET when recording and replaying: recorded session cookies must verify."""
TIMES_HEADER = "# times: "
PLACEHOLDER_URLS = {"{redis}": "redis://127.0.0.1:1/0", "{other}": "http://127.0.0.1:1"}
"""What `{redis}` and `{other}` become when a scenario is replayed: nothing is contacted then."""


@dataclass
class Scenario:
    name: str
    description: str
    store: str
    config: str
    steps: list[dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    """`{name}` placeholders for moments of the recording: seconds after the config is written
    (e.g. a scheduled opening). The recording's moments are kept in the .expected header."""
    upstream: str = "counter"
    """What answers behind the proxy when recording: `counter` (the request counter, in the same
    mitmdump) or `other` (tests.support.Upstream, which says `Waitroom-Command: release` under
    /release)."""

    @classmethod
    def load(cls, path: Path) -> Scenario:
        data = yaml.safe_load(path.read_text())
        return cls(
            name=path.stem,
            description=data["description"],
            store=data.get("store", "memory"),
            config=data["config"],
            steps=data["steps"],
            env={k: str(v) for k, v in (data.get("env") or {}).items()},
            times={k: parse_duration(v) for k, v in (data.get("times") or {}).items()},
            upstream=data.get("upstream", "counter"),
        )

    def recorded_times(self) -> dict[str, str]:
        """`{name}` → the moment (ISO 8601) the recording used, from the .expected header."""
        for line in self.expected.read_text().splitlines():
            if line.startswith(TIMES_HEADER):
                pairs = (item.split("=", 1) for item in line[len(TIMES_HEADER) :].split())
                return {f"{{{name}}}": value for name, value in pairs}
        return {}

    @property
    def recording(self) -> Path:
        return FLOWS / f"{self.name}.mitm"

    @property
    def expected(self) -> Path:
        return FLOWS / f"{self.name}.expected"

    def config_text(self, urls: dict[str, str]) -> str:
        text = self.config
        for placeholder, url in urls.items():
            text = text.replace(placeholder, url)
        return text


def scenarios() -> list[Scenario]:
    return [Scenario.load(p) for p in sorted(FLOWS.glob("*.yaml"))]


def read_flows(path: Path) -> list[http.HTTPFlow]:
    with path.open("rb") as f:
        return [flow for flow in io.FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]


def expectation_lines(flows: list[http.HTTPFlow]) -> list[str]:
    return [describe(i, flow) for i, flow in enumerate(flows)]


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def replay(scenario: Scenario, config_path: Path, urls: dict[str, str] | None = None) -> list[str]:
    """Replay the scenario's recording through the wait room in-process, in order, each flow at its
    recorded time (flows from a file arrive with `live == False` and their recorded answer; the
    addon's replay mode clears it, decides, and keeps it only where the proxy forwarded), and
    return one line per request."""
    placeholders = {**(urls or PLACEHOLDER_URLS), **scenario.recorded_times()}
    config_path.write_text(scenario.config_text(placeholders))  # noqa: ASYNC240 - a test file
    lines = []
    with environment({"WAITROOM_SECRET": SECRET, **scenario.env}):
        addon = WaitRoom()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, waitroom_config=str(config_path), waitroom_replay=True)
            try:
                for i, flow in enumerate(read_flows(scenario.recording)):
                    for event in iterate(flow):
                        await tctx.master.addons.handle_lifecycle(event)
                    lines.append(describe(i, flow))
            finally:
                await addon.done()
    return lines
