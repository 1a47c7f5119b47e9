"""`make bench` keeps working: its quick mode runs every scenario end to end (seconds, not minutes)
and writes the table, the JSON, the chart and BENCHMARKS.md. No figure is asserted on wall-clock
speed; the accuracy figure is, because it is not a matter of speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)  # every scenario on both entry points: longer than the suite's 120 s
def test_the_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "results" / "latest.json").read_text())
    scenarios = report["scenarios"]
    names = {"session", "admit-redis", "waiting", "ratelimit-refused", "counter-put"}
    # Every scenario on both entry points, beside bare mitmdump and the lean master without the room.
    assert set(scenarios) >= {"bare", "lean", "fixed", *names, *(f"serve-{n}" for n in names)}
    for name, row in scenarios.items():
        assert row["rps"] > 0, (name, row)
        assert row["errors"] == 0, (name, row)
    admit = scenarios["admit-redis"]
    assert admit["redis_calls_per_request"] == pytest.approx(1.0, abs=0.05), admit
    assert scenarios["serve-admit-redis"]["redis_calls_per_request"] == pytest.approx(1.0, abs=0.05)
    assert scenarios["ratelimit-refused"]["redis_calls_per_request"] == 0  # the over-limit cache
    simulated = report["simulate"]
    assert simulated["whole"]["visitors"] == 2000
    assert simulated["differing"] == []  # parked and exact: the same figures
    assert "## Where the time goes" in (tmp_path / "BENCHMARKS.md").read_text()
    two = report["workers"]["runs"][1]  # `--workers 2` served and its /metrics added the workers up
    assert two["workers"] == 2
    assert two["sessions_counted"] > 0
    accuracy = report["accuracy"]
    assert accuracy["waitroom_4_replicas"]["over_admission_pct"] == 0, accuracy
    assert accuracy["haproxy_2_instances"]["over_admission_pct"] > 50, accuracy  # per-instance tables
    fair = report["fairness"]  # the fair queue, small: every visitor who kept polling got in
    assert (fair["errors"], fair["stayed_not_admitted"]) == (0, 0), fair
    assert fair["most_admissions_in_a_window"] <= fair["new_sessions"], fair
    bursts = report["bursts"]["runs"]
    assert bursts
    for name, burst in bursts.items():  # every visitor of a flash crowd answered and accounted for
        assert burst["unanswered"] == 0, (name, burst)
        assert burst["admitted"] + burst["waiting"] + burst["other_status"] == burst["visitors"], (
            name,
            burst,
        )
        assert burst["recorded_in_redis"] <= burst["limit"], (name, burst)  # the shared window is exact
        assert burst["over_admission_pct"] == 0, (name, burst)  # and no replica admits beside it
    assert (tmp_path / "bench" / "results" / "ratios.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| target | measured |" in markdown
    assert "make bench" in markdown
