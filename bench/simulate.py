"""`waitroom simulate`'s speed: an hour of a 50,000-visitor on-sale, simulated.

    python bench/simulate.py [--quick] [--json]

The scenario (docs/sizing.md's): `--crowd "50000 over 5m, then 200/min for 1h"`, a `fifo` room of
250 per 15 s with `retry_after: 5s`, 5 pages over 10 minutes once in, and 20% who leave the line
after 10 minutes. It reports the decisions asked, the polls skipped (parked), the wall and CPU
seconds and the virtual seconds per real second; then the first 2 minutes again, with every poll
asked (`--exact`) and parked, which must let the same visitors in at the same moments. `make bench`
puts the figures in BENCHMARKS.md; nothing asserts them (tests/bench checks that it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from waitroom.sim.crowd import parse_crowd
from waitroom.sim.report import as_json
from waitroom.sim.run import Options, simulate
from waitroom.sim.visitors import Behaviour, parse_patience

CROWD = "50000 over 5m, then 200/min for 1h"
QUICK_CROWD = "2000 over 1m"
CONFIG = """rooms:
  - name: shop
    match: {path_prefix: /shop}
    queue: fifo
    new_sessions: 250
    window: 15s
    retry_after: 5s
"""
BEHAVIOUR = Behaviour(pages=(5.0, 5.0), time_on_site=600.0, patience=parse_patience("20%:10m"))


def _run(config: Path, crowd: str, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    wall, cpu = time.perf_counter(), time.process_time()
    run = asyncio.run(simulate(Options(config, crowd=parse_crowd(crowd), behaviour=BEHAVIOUR, **options)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    fig = run.candidate.figures
    room = fig.rooms["shop"]
    return {
        "visitors": fig.visitors,
        "simulated_s": round(fig.span, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "virtual_per_real": round(fig.span / wall, 1) if wall else math.inf,
        "decisions": fig.decisions,
        "skipped_polls": fig.skipped_polls,
        "parks": fig.probes,
        "admitted": room.admitted,
        "abandoned": room.abandoned,
        "wait_p50_s": round(room.wait.get("p50", 0.0), 1),
        "longest_line": room.longest_line,
        "most_in_window": room.most_in_window,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }, as_json(run)["rooms"]


def measure(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="waitroom-simulate-") as tmp:
        config = Path(tmp) / "shop.yaml"
        config.write_text(CONFIG)
        crowd = QUICK_CROWD if quick else CROWD
        whole, _ = _run(config, crowd)
        first = "1m" if quick else "2m"
        until = 60.0 if quick else 120.0
        exact, exact_rooms = _run(config, crowd, until=until, exact=True)
        parked, parked_rooms = _run(config, crowd, until=until)
    return {
        "crowd": crowd,
        "config": CONFIG,
        "behaviour": BEHAVIOUR.describe(),
        "whole": whole,
        "first": first,
        "exact": exact,
        "parked": parked,
        # Every figure but `outcomes`, the count of requests decided (parked polls are not asked).
        "differing": sorted(
            k for k, v in exact_rooms["shop"].items() if k != "outcomes" and parked_rooms["shop"][k] != v
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f'a small crowd ("{QUICK_CROWD}")')
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args.quick)
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    whole = figures["whole"]
    print(
        f"{figures['crowd']}: {whole['visitors']:,} visitors, "
        f"{whole['simulated_s'] / 60:.0f} min simulated in {whole['wall_s']} s wall, {whole['cpu_s']} s CPU "
        f"({whole['decisions']:,} decisions, "
        f"{whole['skipped_polls']:,} polls skipped; load average {whole['load_average']})"
    )
    for name in ("exact", "parked"):
        row = figures[name]
        print(
            f"first {figures['first']} {name}: {row['wall_s']} s, {row['decisions']:,} decisions, "
            f"admitted {row['admitted']:,}"
        )
    print("exact and parked differ in:", ", ".join(figures["differing"]) or "nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
