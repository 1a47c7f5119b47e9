"""The benchmark's outputs: a table on stdout, bench/results/*.json, a PNG chart, BENCHMARKS.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from crowd import chart as crowd_chart
from crowd import markdown as crowd_markdown

WAITROOM_ORDER = [
    "session",
    "admit-memory",
    "admit-redis",
    "ratelimit-allowed",
    "ratelimit-refused",
    "counter-put",
    "counter-get",
]
ORDER = [
    "bare",
    "lean",
    *WAITROOM_ORDER,
    *(f"serve-{n}" for n in WAITROOM_ORDER),
    "fixed",
    "waiting",
    "serve-waiting",
]
BASELINES = ("bare", "fixed")


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    head = (
        "| scenario | req/s | ratio | vs | p50 ms | p99 ms | +p50 ms | +p99 ms | decision µs "
        "| decision p99 ms | Redis calls/req |"
    )
    lines = [head, "|" + " --- |" * 11]
    for name in ORDER:
        row = report["scenarios"][name]
        lines.append(
            f"| {row['title']} | {_fmt(row['rps'], 0)} | **{_fmt(row['ratio'])}** | {row['baseline']} | "
            f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row['added_p50_ms'])} | "
            f"{_fmt(row['added_p99_ms'])} | {_fmt(row['decision_us'], 1)} | "
            f"{_fmt(row['decision_p99_ms'], 3)} | "
            f"{_fmt(row['redis_calls_per_request'])} |"
        )
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ORDER if n not in BASELINES]
    ratios = [report["scenarios"][n]["ratio"] for n in names]
    colors = [
        ("#047857" if n.startswith("serve-") or n == "lean" else "#1d4ed8") if r >= 0.9 else "#b45309"
        for n, r in zip(names, ratios, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(11, 4.8), dpi=100)
    bars = ax.bar(names, ratios, color=colors)
    ax.axhline(1.0, color="#374151", linewidth=1)
    ax.set_ylabel("throughput / baseline (same run)")
    ax.set_title(
        "throughput relative to bare mitmdump (wait page: to mitmdump's fixed answer);\n"
        "blue: mitmdump -s addons/waitroom.py, green: waitroom serve",
        fontsize=10,
    )
    ax.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], padding=2, fontsize=8)
    ax.set_ylim(0, max(1.2, max(ratios) * 1.1))
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    acc, sw, sc, mem = report["accuracy"], report["sliding_window"], report["scale"], report["redis_memory"]
    targets = "\n".join(
        f"| {t['target']} | {_fmt(t['value'])} | {'met' if t['met'] else '**missed**'} |"
        for t in report["targets"]
    )
    missed = [t for t in report["targets"] if not t["met"]]
    profile = report.get("profile")
    notes = ""
    if missed:
        notes = (
            "\n### Missed targets\n\n"
            + "\n".join(f"- {t['target']}: measured {_fmt(t['value'])}." for t in missed)
            + "\n\nOne Python process, one core, is the ceiling of this architecture. On this "
            "machine the load generator, nginx, Redis and the proxy share "
            f"{m['cpus']} cores, so every figure here is a ratio measured in the same run, not an "
            "absolute capacity.\n" + _what_would_move(missed, report)
        )
    if profile:
        share = profile.get("hooks_share")
        entry = "`waitroom serve`" if profile["scenario"].startswith("serve-") else "mitmdump"
        notes += "\n## Where the time goes\n"
        if share is not None:
            notes += (
                f"\nIn `{profile['scenario']}` ({entry}), waitroom's own hooks (requestheaders, "
                f"request, responseheaders, response, connection events) take {100 * share:.0f}% of "
                "the proxy's time under cProfile, the decision included; the rest is mitmproxy "
                "itself: its HTTP layers and the dispatch of every hook event over each loaded "
                "addon (about 36 built in under mitmdump, 11 under `waitroom serve`).\n"
            )
        notes += (
            f"\ncProfile of the real proxy in `{profile['scenario']}` under the same load:\n\n```\n"
            + profile["text"]
            + "\n```\n"
        )
    return f"""# Benchmarks

What waitroom costs, measured by `make bench` ([`bench/run.py`](bench/run.py)) on {m["date"]}:
{m["cpus"]} CPUs ({m["cpu"]}), {m["platform"]}, Python {m["python"]}, mitmproxy {m["mitmproxy"]},
{m["redis"].split(" sha=")[0]}, {m["wrk"].split(" Copyright")[0]}.
Everything runs on loopback: nginx as the upstream, a private
`redis-server`, `wrk` with 16 connections for {report["seconds"]:g} s per run, {report["rounds"]} rounds
interleaved (medians; a ratio is the median of the rounds' ratios, each to the baseline measured in
the same round). Each wait-room scenario runs on both entry points: `mitmdump -s
addons/waitroom.py` (plain names) and `waitroom serve`, the lean master (`serve-` names); `lean`
is that master with no wait room. Throughput is a **ratio to bare mitmdump in the same run** (the
wait page: to mitmdump answering a fixed page of the same size itself, the shedding ceiling);
latency is what each adds to bare mitmdump's p50/p99 (negative: faster). Decision µs is the mean
time of one decision from the proxy's own histogram, measured in a separate run with one
connection (under load every await also waits for other requests in the event loop); decision p99
is the histogram bucket bound below which 99% of them fall (an upper estimate). Redis calls per
request are the proxy's own round trips.

![throughput ratios](bench/results/ratios.png)

{table(report)}

## Targets

| target | measured | |
| --- | --- | --- |
{targets}
{notes}
## Accuracy across replicas

A gentle load: new visitors offered at {acc["offered_per_s"]:g}/s for {acc["seconds"]:g} s, round
robin over the instances; limit {acc["limit"]} per {acc["window_s"]:g} s window. "Max in any window"
is the most admissions certainly decided within one window's length, timed by
{acc["timed_at"]}: jitter can only hide an over-admission, never invent one.

| set-up | admitted | max in any window | over-admission |
| --- | --- | --- | --- |
| waitroom, 4 replicas sharing Redis (exact sliding log) | {_accuracy_cells(acc["waitroom_4_replicas"])} |
| HAProxy, 2 instances, stick table `gpc0_rate` (classic) | {_accuracy_cells(acc["haproxy_2_instances"])} |

Each HAProxy instance counts only what it sees, so N instances admit up to N times the limit.
{_bursts(report.get("bursts"))}

{_fairness(report.get("fairness"))}
`sliding_window` on a long bursty random trace ({sw["requests"]} requests, limit {sw["limit"]}/s):
the most admitted in any 1 s interval was {sw["max_in_any_interval"]} ({sw["max_error_pct"]}% over the
limit; {sw["admissions_over_limit_pct"]}% of admissions made some interval exceed it). `sliding_log`
and `gcra` are exact (tests/store/test_store_accuracy.py).

## Scale and memory

- New visitors admitted on one Redis: {sc["1_proxies_rps"]:.0f} req/s with 1 proxy,
  {sc["2_proxies_rps"]:.0f} req/s with 2 (×{sc["speedup"]}) — on {m["cpus"]} cores shared with wrk,
  nginx and Redis, so this shows that replicas add capacity, not how much a dedicated core gives.
- Redis memory for rate-limit state: {mem["bytes_per_key"]} bytes per key (`sliding_window`),
  {mem["mb_per_100k_keys"]} MB per 100k keys (measured with {mem["keys"]} keys).
{_decision_time(report.get("decision_time"))}
{_workers(report.get("workers"))}

{_simulation(report.get("simulate"))}
{crowd_markdown(report.get("crowd"))}## Reproduce

```sh
make bench          # about {max(1, round(report["elapsed_s"] / 60))} min here; writes this file,
                    # bench/results/latest.json and bench/results/ratios.png
.venv/bin/python bench/run.py --seconds 10 --rounds 3   # longer, steadier runs
.venv/bin/python bench/crowd.py --write   # the crowd section alone (a few minutes)
```

Raw figures with machine information: [`bench/results/latest.json`](bench/results/latest.json).
"""


def _decision_time(found: dict[str, Any] | None) -> str:
    """The embedded store's decisions as its window fills (bench/decision_time.py)."""
    if not found:
        return ""

    def size(n: int) -> str:
        return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k"

    cells = []
    for n in found["sizes"]:
        row = found["figures"][str(n)]
        cells.append(f"{row['admit_newcomer_us']:.1f} / {row['queue_newcomer_us']:.1f} with {size(n)}")
    return (
        "- Embedded store, µs per decision for a new visitor (block room / `fifo` room) by admissions\n"
        f"  in the window: {', '.join(cells)};\n"
        f"  the largest over the smallest ×{found['ratio']} (no decision scans the log;"
        " `bench/decision_time.py`)."
    )


def _what_would_move(missed: list[dict[str, Any]], report: dict[str, Any]) -> str:
    """Why the missed throughput targets are missed, from this run's own figures."""
    rows = report["scenarios"]
    lean = rows.get("lean", {}).get("ratio")
    lines = []
    if any(not t["target"].startswith("serve-") and " of " in t["target"] for t in missed):
        lines.append(
            "- On mitmdump, the wait room's work is added to mitmdump's own: every hook event is "
            "dispatched over its ~36 built-in addons whatever the wait room does, so a scenario can "
            "only reach bare mitmdump's throughput by the wait room costing nothing. What moves it: "
            "`waitroom serve`, which drops that dispatch"
            + (f" (the lean master alone: {lean:.2f}× bare mitmdump here)" if lean else "")
            + "; on mitmdump, fewer of the wait room's own hooks per request and Redis round trips "
            "(one per new visitor, already)."
        )
    if any(t["target"].startswith("serve-") for t in missed):
        lines.append(
            "- On `waitroom serve`, what is left is mitmproxy's HTTP layers (parsing, the event "
            "machinery, one task per connection) and the decision itself: the lean master without "
            "a wait room bounds what serve can reach"
            + (f" ({lean:.2f}× bare mitmdump in this run)" if lean else "")
            + ". What moves it: a proxy process per core (replicas on one Redis add capacity, see "
            "*Scale* below), or a faster event loop and HTTP parser under mitmproxy."
        )
    return ("\nWhat would move them:\n\n" + "\n".join(lines) + "\n") if lines else ""


BURST_COLUMNS = (
    "visitors at once",
    "replicas",
    "Redis",
    "admitted",
    "limit",
    "over-admission",
    "under-admission",
    "in Redis",
    "store timeouts",
    "degraded decisions",
    "shed",
    "unanswered",
)


def _bursts(bursts: dict[str, Any] | None) -> str:
    """The flash-crowd table: each burst's admissions against the room's limit."""
    if not bursts or not bursts.get("runs"):
        return ""
    rows = []
    for run in bursts["runs"].values():
        redis_at = f"+{run['redis_delay_ms']} ms (relay)" if run["redis_delay_ms"] else "loopback"
        rows.append(
            f"| {run['visitors']} | {run['replicas']} | {redis_at} | {run['admitted']} | {run['limit']} | "
            f"{run['over_admission_pct']}% | {run['under_admission_pct']}% | {run['recorded_in_redis']} | "
            f"{run['store_timeouts']} | {run['degraded_decisions']} | {run['shed']} | "
            f"{run['unanswered']} |"
        )
    return f"""
### Flash crowds

New visitors arriving all at once at a room of {bursts["limit"]} new sessions per
{bursts["window_s"]:g} s window, on one `redis-server`, with the {bursts["store"]}: each visitor
opens a connection, then all send one request without a cookie at the same moment, round robin
over the replicas; a 2xx answer is an admission. Each burst runs on fresh replicas (whose
connection to Redis is already open) with its own keys. "In Redis" is the room's shared window
after the burst; timeouts, degraded decisions (made by the failure policy, not the shared window)
and shed requests are the proxies' own counters.

| {" | ".join(BURST_COLUMNS)} |
|{" --- |" * len(BURST_COLUMNS)}
{chr(10).join(rows)}
"""


def _fairness(fair: dict[str, Any] | None) -> str:
    """The fair queue's figures (bench/fairness.py; tests/e2e/test_fair_queue.py asserts them)."""
    if not fair:
        return ""
    error = _fmt(100 * (fair["eta_median_abs_error"] or 0), 1)
    rows = [
        (
            "admitted / still waiting at the end, of those who kept polling",
            f"{fair['admitted']} / {fair['stayed_not_admitted']}",
            "all in",
        ),
        ("longest wait", f"{fair['longest_wait_s']} s", "–"),
        (
            "worst order inversion: let in after someone with a later ticket (of the"
            f" {fair.get('order_measured_on', 0)} visitors the store heard within the grace)",
            f"{fair['worst_order_inversion_s']} s",
            f"one poll interval, {fair['order_bound_s']:.2f} s",
        ),
        (
            "most admissions in one window",
            fair["most_admissions_in_a_window"],
            f"exactly {fair['new_sessions']}",
        ),
        (
            "a freed place taken after (abandoned tickets included)",
            f"{fair['worst_place_refill_s']} s",
            f"grace + a poll, {fair['refill_bound_s']:.2f} s (< abandon_after)",
        ),
        (
            "wait shown at arrival vs the real wait, median absolute error",
            f"{error} % ({fair['eta_samples']} visitors)",
            "≤ 20 %",
        ),
    ]
    table = "\n".join(f"| {name} | {value} | {bound} |" for name, value, bound in rows)
    return f"""### The fair queue

{fair["visitors"]} visitors arrive over 15 s at a `queue: fifo` room (new_sessions {fair["new_sessions"]} per
2 s window, retry_after 1 s, grace 3 s, abandon_after {fair["abandon_after_s"]:g} s) served by 4 `waitroom
serve` replicas on one `redis-server`; each polls as the wait page does (retry_after ± 30 %), and
{fair["abandoned"]} of them leave the line after their first poll. Measured from the visitors' side
(bench/fairness.py; tests/e2e/test_fair_queue.py asserts the same bounds):

| figure | measured | bound |
| --- | --- | --- |
{table}
"""


def _workers(found: dict[str, Any] | None) -> str:
    """`waitroom serve --workers 1` against `--workers 2` (bench/workers.py)."""
    if not found:
        return ""
    one, two = found["runs"]
    verdict = "met" if found["met"] else "not met"
    return f"""
### One proxy per core: `--workers`

Returning visitors (session cookie, Redis store) through `waitroom serve`, one run each, wrk with
{found["wrk_threads"]} threads and {found["connections"]} connections on the same {found["cpus"]} cores
([`bench/workers.py`](bench/workers.py)):

| | req/s | p50 ms | p99 ms | load average before |
| --- | ---: | ---: | ---: | ---: |
| `--workers 1` | {one["rps"]:.0f} | {one["p50_ms"]} | {one["p99_ms"]} | {one["load_average_before"]} |
| `--workers 2` | {two["rps"]:.0f} | {two["p50_ms"]} | {two["p99_ms"]} | {two["load_average_before"]} |

**×{found["ratio"]}** with two workers (target ×{found["target"]}: {verdict}). wrk, nginx and Redis
share the same cores, so a second worker cannot have a core to itself: on a machine whose proxy has
its cores alone the gain is closer to the number of workers. One run: expect ±15% between runs here.
"""


def _simulation(sim: dict[str, Any] | None) -> str:
    """`waitroom simulate`'s speed (bench/simulate.py)."""
    if not sim:
        return ""
    whole, exact, parked = sim["whole"], sim["exact"], sim["parked"]
    load = ", ".join(f"{x:g}" for x in whole["load_average"])
    same = (
        "the same figures (all but the count of requests decided)"
        if not sim["differing"]
        else f"figures that differ in {', '.join(sim['differing'])}"
    )
    return f"""## Simulation

`waitroom simulate` ([`bench/simulate.py`](bench/simulate.py)): `--crowd "{sim["crowd"]}"` on a `fifo`
room of 250 per 15 s (`retry_after: 5s`), {sim["behaviour"]}. {whole["visitors"]:,} visitors,
{whole["simulated_s"] / 60:.0f} minutes simulated in **{whole["wall_s"]:g} s** ({whole["cpu_s"]:g} s of
CPU; load average {load} while it ran), {whole["virtual_per_real"]:g} simulated seconds per second:
{whole["decisions"]:,} decisions asked of the product's deciders, {whole["skipped_polls"]:,} polls
skipped in {whole["parks"]:,} parks (a visitor far back in the line cannot be called: its polls
would only refresh its ticket). The longest line was {whole["longest_line"]:,}; {whole["admitted"]:,}
were admitted, {whole["abandoned"]:,} abandoned; at most {whole["most_in_window"]} in any 15 s window.

The first {sim["first"]} with every poll asked (`--exact`): {exact["wall_s"]:g} s and
{exact["decisions"]:,} decisions; parked: {parked["wall_s"]:g} s and {parked["decisions"]:,} decisions,
with {same} (tests/unit/sim/test_engine.py checks every visitor's admission is the same instant).
"""


def _accuracy_cells(figures: dict[str, Any]) -> str:
    return f"{figures['admitted']} | {figures['max_in_any_window']} | {figures['over_admission_pct']}%"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    results = out / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (results / "latest.json").write_text(text)
    (results / f"{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    chart(report, results / "ratios.png")
    if report.get("crowd", {}).get("sim"):
        crowd_chart(report["crowd"], results / "crowd.png")
    (out / "BENCHMARKS.md").write_text(markdown(report))
    print()
    print(table(report))
    print()
    for t in report["targets"]:
        print(f"{'met   ' if t['met'] else 'MISSED'}  {t['target']}: {_fmt(t['value'])}")
    print(
        f"\nwrote BENCHMARKS.md, bench/results/latest.json, bench/results/ratios.png ({report['elapsed_s']}s)"
    )
