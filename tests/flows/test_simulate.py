"""The simulator agrees with the proxy on the flow fixtures: every recording, decided by
`waitroom simulate --as-recorded` at its recorded times, gets the room and rule outcomes the real
proxy recorded (the .expected lines). The simulator decides on its own path (sim/replica.py, the
gate's order without mitmproxy), so this checks that path against real `mitmdump` recordings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.flows.scenario import PLACEHOLDER_URLS, SECRET, Scenario, environment, scenarios
from tests.flows.test_replay import expected_lines
from waitroom.sim import cli

WORDS = re.compile(r"^#(\d+) (\S+) (\S+) -> \S+ (.*?)(?: \[|$)")


def outcomes(line: str) -> tuple[str, str, str]:
    """(room words, rule words, number) of a replay line: `room shop waiting`, `rule api limited`."""
    m = WORDS.match(line)
    assert m, line
    words = m.group(4)
    room = re.search(r"room (\S+) (\S+)", words)
    rule = re.search(r"(?:rule (\S+)|rate-limit) (\S+)", words)
    return (
        f"{room[1]} {room[2]}" if room else "",
        f"{rule[1] or ''} {rule[2]}".strip() if rule else "",
        m.group(1),
    )


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
def test_simulate_as_recorded_matches_the_fixture(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(scenario.config_text({**PLACEHOLDER_URLS, **scenario.recorded_times()}))
    with environment({"WAITROOM_SECRET": SECRET, **scenario.env}):
        status = cli.main(
            [
                "--config",
                str(config),
                str(scenario.recording),
                "--as-recorded",
                "--no-report",
                "--json",
                str(tmp_path / "r.json"),
                "-q",
            ]
        )
    assert status == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "r.json").read_text())["requests"]
    simulated = [
        (f"{room} {outcome}".strip(), f"{rule} {rule_outcome}".strip())
        for _, _, room, outcome, rule, rule_outcome in rows
    ]
    recorded = [outcomes(line)[:2] for line in expected_lines(scenario)]
    assert simulated == recorded
