"""Recorded flows as regression fixtures: every recording, replayed through the wait room at its
recorded times, must get exactly the decisions, statuses and headers it got when it was recorded.

When a change of behaviour is deliberate, `make flows` re-records the fixtures and the diff of the
.expected files shows what changed.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.scenario import SECRET, Scenario, expectation_lines, read_flows, replay, scenarios
from tests.support import REPO, RedisServer

pytestmark = pytest.mark.e2e


def expected_lines(scenario: Scenario) -> list[str]:
    return [
        line
        for line in scenario.expected.read_text().splitlines()
        if not line.startswith("#") or line[1:2].isdigit()
    ]


def readable_diff(scenario: Scenario, expected: list[str], actual: list[str]) -> str:
    """Which flow changed, its request line, and the expected against the actual decision."""
    out = [
        f"{scenario.name}: the replay differs from the recording (re-record with `make flows` if intended)"
    ]
    for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            out += [f"  flow {i}:", f"    expected: {want}", f"    actual:   {got}"]
    if len(expected) != len(actual):
        out.append(f"  {len(expected)} flows expected, {len(actual)} replayed")
    out += difflib.unified_diff(expected, actual, "expected", "replayed", lineterm="", n=0)
    return "\n".join(out)


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
def test_every_fixture_is_complete_and_consistent(scenario: Scenario) -> None:
    assert scenario.recording.exists(), f"{scenario.recording.name} is missing: run `make flows`"
    flows = read_flows(scenario.recording)
    assert len(flows) == sum(1 for step in scenario.steps if "sleep" not in step)
    assert all(not flow.live and flow.response is not None for flow in flows)
    # The readable expectations were written from this very recording.
    assert expected_lines(scenario) == expectation_lines(flows)


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
async def test_replay_matches_the_recording(scenario: Scenario, tmp_path: Path) -> None:
    actual = await replay(scenario, tmp_path / "config.yaml")
    expected = expected_lines(scenario)
    assert actual == expected, readable_diff(scenario, expected, actual)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("flows-redis"))
    yield server.url
    server.stop()


async def test_a_redis_recording_replays_on_a_real_redis(redis_url: str, tmp_path: Path) -> None:
    """On Redis the Lua scripts decide, at the recorded times (passed as the clock)."""
    scenario = next(s for s in scenarios() if s.store == "redis")
    actual = await replay(scenario, tmp_path / "config.yaml", {"{redis}": redis_url})
    assert actual == expected_lines(scenario), readable_diff(scenario, expected_lines(scenario), actual)


async def test_a_changed_limit_makes_the_replay_fail(tmp_path: Path) -> None:
    """The harness can fail: one more new visitor per window changes flow #002 and what follows."""
    scenario = next(s for s in scenarios() if s.name == "room-journey")
    scenario.config = scenario.config.replace("new_sessions: 2", "new_sessions: 3")
    actual = await replay(scenario, tmp_path / "config.yaml")
    expected = expected_lines(scenario)
    assert actual != expected
    diff = readable_diff(scenario, expected, actual)
    assert "flow 3:" in diff
    assert "expected: #003 GET /shop -> 503 room shop waiting" in diff
    assert "actual:   #003 GET /shop -> upstream room shop admitted [Set-Cookie: waitroom_shop]" in diff


def test_users_replay_their_own_traffic_with_mitmdump(tmp_path: Path) -> None:
    """The documented command: `mitmdump -nr FILE -s addons/waitroom.py --set waitroom_replay=true`."""
    scenario = next(s for s in scenarios() if s.name == "room-journey")
    config = tmp_path / "config.yaml"
    config.write_text(scenario.config)
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("mitmdump")),
            "-q",  # mitmproxy's log only: the replay's lines are the command's output
            "-nr",
            str(scenario.recording),
            "-s",
            "addons/waitroom.py",
            "--set",
            f"waitroom_config={config}",
            "--set",
            "waitroom_replay=true",
            "--set",
            f"confdir={tmp_path / 'mitmproxy'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "WAITROOM_SECRET": SECRET,
            "PATH": str(Path(sys.executable).parent),
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},  # the code under test
        },
    )
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    replayed = [
        line.split("waitroom replay: ", 1)[1] for line in output.splitlines() if "waitroom replay: #" in line
    ]
    assert replayed == expected_lines(scenario)
    assert "waitroom replay: 14 requests replayed" in output
    assert "waitroom replay:   room shop: waiting 5" in output
    assert "waitroom replay:   room shop: admitted 3" in output
