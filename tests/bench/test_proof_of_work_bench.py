"""bench/proof_of_work.py keeps running as documented (docs/security.md): its quick mode prints the
proxy's costs and the solvers' time per ticket, and writes them as JSON. No figure is asserted on
speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e


def test_the_proof_of_work_figures_run(tmp_path: Path) -> None:
    out = tmp_path / "pow.json"
    run = subprocess.run(
        [sys.executable, "bench/proof_of_work.py", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "| script, Python hashlib, 1 core |" in run.stdout
    report = json.loads(out.read_text())
    assert set(report["proxy"]) >= {"issue_challenge_us", "check_good_proof_us", "challenge_page_us"}
    python = report["solvers"]["script, Python hashlib, 1 core"]
    assert python["hashes_per_s"] > 0
    assert python["ms_at_16"] == pytest.approx(python["ms_at_12"] * 16)
