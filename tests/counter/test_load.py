"""The load test runs end to end: `make load`'s runner starts the stack, Locust drives it headless."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_the_load_test_runs_headless_and_exits_0(store: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "bench/load.py",
            "--users",
            "3",
            "--spawn-rate",
            "3",
            "--duration",
            "3s",
            "--store",
            store,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Response time percentiles" in output
    summary = output[output.index("waitroom outcomes") :]
    admitted = int(summary.split("admitted")[1].split()[0])
    failed = int(summary.split("failed")[1].split()[0])
    assert admitted > 0, summary
    assert failed == 0, summary
