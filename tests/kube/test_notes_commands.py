"""The commands the chart's notes print after every install run as printed: each `waitroom ...` and
`curl ...` line (and what a `kubectl exec ... --` runs in the pod) against a real proxy's admin
port — the port-forward's localhost:8081 is the docs test's demo (tests/docs/runner.py). The
`kubectl` and `helm` lines need a cluster: they are only parsed. `waitroom status --url` after the
command failed for everyone who followed them (issue 29)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.docs.runner import Block, DocsEnv
from tests.kube.helm import CHART, notes

pytestmark = pytest.mark.e2e


def runnable(text: str) -> list[str]:
    """The notes' command lines (indented, as a terminal shows them), to run here."""
    found = []
    for line in text.splitlines():
        if not line.startswith("  "):
            continue  # prose
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "kubectl" and "--" in words and "exec" in words:
            found.append(shlex.join(words[words.index("--") + 1 :]))  # what runs in the pod
        elif words[0] in ("waitroom", "curl"):
            found.append(shlex.join(words))
        elif words[0] == "export" and "WAITROOM_ADMIN_TOKEN=$(kubectl" in line:
            continue  # the runner's environment holds the demo's token
    return found


@pytest.mark.parametrize("values_file", ["production-values.yaml", "minimal-values.yaml"])
def test_the_notes_commands_run(values_file: str, tmp_path: Path) -> None:
    text = notes(values_file, {"secrets.adminToken": "notes-test-token-0123456789"})
    commands = runnable(text)
    assert any(c.startswith("waitroom status --url http://localhost:8081") for c in commands), text
    assert any(c.startswith("curl -s localhost:8081/readyz") for c in commands), text
    env = DocsEnv(tmp_path).start()
    try:
        env.run(Block(CHART / "templates" / "NOTES.txt", 1, "sh", ["run"], "\n".join(commands) + "\n"))
    finally:
        env.stop()
