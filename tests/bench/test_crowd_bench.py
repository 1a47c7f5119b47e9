"""bench/crowd.py keeps running (issue 28's crowd section in `make bench`): a small line through the
real deciders and Redis scripts, both policies; a small flash crowd over 2 real `waitroom serve`
replicas, every visitor answered with a ticket or a shed answer; the section written into
BENCHMARKS.md. Behaviour only: no figure here depends on the machine's speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO

pytestmark = pytest.mark.e2e
BENCH = REPO / "bench"


def bench(*args: str, timeout: float = 100) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{BENCH}"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout[run.stdout.index("{\n") :])


def test_a_line_through_the_real_deciders_and_redis_under_both_policies() -> None:
    figures = bench("bench/crowd_sim.py", "--quick")
    (size,) = figures["sizes"]
    today = figures["runs"][f"today-{size}"]
    # Every arrival was let in or got a ticket; no decision failed.
    assert today["errors"] == {}, today
    assert set(today["answers"]) <= {"waiting", "admitted", "forwarded"}, today["answers"]
    assert today["waiting_after_arrivals"] >= size  # the window let in new_sessions at most
    # Today: every poll of a far-back ticket is a Redis call, every visitor polls each retry_after.
    assert today["redis_calls_per_far_poll"] == 1.0
    assert set(today["intervals"]) == {"5"}
    assert today["most_in_window"] <= today["new_sessions"]
    new = figures["runs"][f"new-{size}"]
    if new.get("not_available"):
        return
    assert new["errors"] == {}, new
    assert new["most_in_window"] <= new["new_sessions"]
    # Server-directed polling: visitors far back are told to come back later than the head.
    assert max(int(s) for s in new["intervals"]) > 5, new["intervals"]
    assert new["polls_per_s_per_1k_waiting"] < today["polls_per_s_per_1k_waiting"]


def test_a_flash_crowd_gets_tickets_or_shed_answers_never_an_error() -> None:
    flash = bench("bench/crowd_e2e.py", "--flash", "200")
    assert sum(flash["answers"].values()) == 200
    assert set(flash["answers"]) <= {"ticket", "shed", "admitted"}, flash["answers"]
    assert (flash["errors"], flash["hangs"]) == (0, 0)


def test_the_section_is_written_into_benchmarks_md(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import crowd
    finally:
        sys.path.remove(str(BENCH))
    run = {
        "visitors": 1000,
        "policy": "today",
        "polls_per_s_per_1k_waiting": 200.0,
        "redis_calls_per_s": 200.0,
        "redis_cpu_per_s": 0.01,
        "redis_script_ms_per_s": 9.0,
        "redis_calls_per_far_poll": 1.0,
        "worst_order_inversion_s": 1.0,
        "order_bound_s": 6.55,
        "eta_median_abs_error": 0.1,
        "most_in_window": 10,
        "new_sessions": 10,
        "redis_bytes_per_visitor": 300,
        "arrival_redis_cpu_per_s": 0.1,
        "admitted_per_s": 2.0,
        "wall_s": 1.0,
    }
    figures = {
        "sim": {
            "available": {"max_retry_after": False, "line_view": False},
            "room": {
                "new_sessions": 10,
                "window_s": 1,
                "retry_after_s": 5,
                "max_retry_after_s": 60,
                "arrival_s": 10,
                "replicas": 2,
            },
            "sizes": [1000],
            "runs": {
                "today-1000": run,
                "new-1000": {"visitors": 1000, "policy": "new", "not_available": True},
            },
        }
    }
    figures["targets"] = crowd.targets(figures)
    (tmp_path / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\n## Simulation\n\ntext\n\n## Reproduce\n\nmake bench\n"
    )
    crowd.write(figures, tmp_path)
    crowd.write(figures, tmp_path)  # a second run replaces the section
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text.count(crowd.SECTION) == 1
    assert text.index("## Simulation") < text.index(crowd.SECTION) < text.index("## Reproduce")
    assert "not available in this checkout" in text
    assert (tmp_path / "bench" / "results" / "crowd.png").read_bytes()[:4] == b"\x89PNG"
