"""`make bench`'s crowd section (issue 28): what a line of 1k to 1M waiting visitors costs, and what a
flash crowd gets.

    python bench/crowd.py [--quick] [--only sim|e2e] [--write] [--json]

Three parts, each side by side under today's policy and issue 28's ("today": every waiting visitor
polls every retry_after and every poll is a Redis call; "new": the server-directed interval, up to
max_retry_after, and the per-replica line view):
- crowd_sim.py: the real deciders and the real Redis scripts in-process, on a virtual clock, with
  lines of 1k, 10k, 100k and 1M visitors who arrived as a flash crowd (10 s);
- crowd_e2e.py: 5,000 real asyncio clients over 2 `waitroom serve` replicas and one Redis;
- crowd_e2e.flash: new visitors arriving faster than the proxies can answer, one connection each:
  every answer must be a ticket or a cheap shed answer, never an error, never a hang.

`make bench` (bench/run.py) runs it and writes its section of BENCHMARKS.md; `--write` runs only
this and rewrites only that section (and bench/results/crowd.json, bench/results/crowd.png).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import crowd_e2e
import crowd_sim
from harness import REPO

SECTION = "## The crowd"
PARTS = ("sim", "e2e", "flash")


def measure(quick: bool = False, only: str = "") -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="waitroom-crowd-") as tmp:
        work = Path(tmp)
        if only in ("", "sim"):
            sizes = crowd_sim.QUICK_SIZES if quick else crowd_sim.SIZES
            out["sim"] = crowd_sim.measure(sizes, work / "sim", quick)
        if only in ("", "e2e"):
            clients = crowd_e2e.QUICK_CLIENTS if quick else crowd_e2e.CLIENTS
            out["e2e"] = crowd_e2e.measure(work / "e2e", clients, quick)
        if only in ("", "flash"):
            arrivals = crowd_e2e.QUICK_FLASH if quick else crowd_e2e.FLASH
            out["flash"] = crowd_e2e.flash_measure(work / "flash", arrivals)
    out["targets"] = targets(out)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def _run(crowd: dict[str, Any], part: str, key: str) -> dict[str, Any] | None:
    found = crowd.get(part, {}).get("runs", {}).get(key)
    if not found or found.get("not_available") or found.get("not_run"):
        return None
    return found


def targets(crowd: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 28's targets, each with the figure measured and today's beside it."""
    out: list[dict[str, Any]] = []
    sizes = crowd.get("sim", {}).get("sizes", [])
    probe = 100_000 if 100_000 in sizes else (max(s for s in sizes if s <= 100_000) if sizes else 0)

    def add(target: str, new: Any, today: Any, met: bool | None, why: str = "") -> None:
        out.append({"target": target, "value": new, "today": today, "met": met, "why": why})

    if probe:
        today, new = _run(crowd, "sim", f"today-{probe}"), _run(crowd, "sim", f"new-{probe}")
        add(
            f"poll requests/s per 1,000 waiting, line of {probe:,} admitting 100/s: <= 30",
            new and new["polls_per_s_per_1k_waiting"],
            today and today["polls_per_s_per_1k_waiting"],
            None if new is None else new["polls_per_s_per_1k_waiting"] <= 30,
            "" if new else "the new policy is not in this checkout",
        )
        far = None if new is None else new["redis_calls_per_far_poll"]
        add(
            f"Redis calls per poll of a ticket that cannot be called yet (line of {probe:,}): <= 0.05",
            far,
            today and today["redis_calls_per_far_poll"],
            None if far is None else far <= 0.05,
            "the new policy is not in this checkout"
            if new is None
            else ("" if far is None or far <= 0.05 else "by distance behind the head: " + _bands(new)),
        )
    news = [(s, _run(crowd, "sim", f"new-{s}")) for s in sizes]
    measured = [(s, r["redis_calls_per_s"]) for s, r in news if r is not None and r["redis_calls_per_s"] > 0]
    if len(measured) >= 2:
        low, high = min(v for _, v in measured), max(v for _, v in measured)
        todays = [
            (s, r["redis_calls_per_s"]) for s in sizes if (r := _run(crowd, "sim", f"today-{s}")) is not None
        ]
        add(
            f"Redis calls/s per room flat within 2x, line of {measured[0][0]:,} to {measured[-1][0]:,}",
            round(high / low, 2),
            round(max(v for _, v in todays) / min(v for _, v in todays), 1) if len(todays) >= 2 else None,
            high / low <= 2,
        )
    every = [
        r
        for part in ("sim", "e2e")
        for r in crowd.get(part, {}).get("runs", {}).values()
        if not (r.get("not_available") or r.get("not_run"))
    ]
    policies = ("new",) if any(r["policy"] == "new" for r in every) else ("today",)
    chosen = [r for r in every if r["policy"] in policies]
    if chosen:
        worst = max(chosen, key=lambda r: r["worst_order_inversion_s"] - r["order_bound_s"])
        add(
            f"worst order inversion <= one head poll interval ({worst['order_bound_s']} s with jitter)",
            worst["worst_order_inversion_s"],
            None,
            worst["worst_order_inversion_s"] <= worst["order_bound_s"],
        )
        errors = [r["eta_median_abs_error"] for r in chosen if r.get("eta_median_abs_error") is not None]
        if errors:
            add("ETA at arrival, median error <= 20% (worst run)", max(errors), None, max(errors) <= 0.2)
        exact = all(r["most_in_window"] <= r["new_sessions"] for r in chosen)
        worst_window = max(chosen, key=lambda r: r["most_in_window"] - r["new_sessions"])
        add(
            "exactly new_sessions per window across replicas (most in any window / new_sessions, worst run)",
            f"{worst_window['most_in_window']} / {worst_window['new_sessions']}",
            None,
            exact,
            "" if exact else "over-admission",
        )
    flash = crowd.get("flash")
    if flash:
        bad = flash["errors"] + flash["hangs"]
        add(
            f"flash crowd of {flash['arrivals']:,} new visitors in {flash['over_s']:g} s: a ticket or a shed "
            "answer each, no error, no hang (errors + hangs)",
            bad,
            None,
            bad == 0,
            ""
            if bad == 0
            else f"{flash['offered_per_s']:,}/s offered, the replicas answered "
            f"{flash['answered_per_s']:,.0f}/s: the rest waited in the kernel's queue, unread, so not shed "
            "(docs/crowds.md)",
        )
    e2e = crowd.get("e2e", {}).get("runs", {})
    if e2e:
        new_e2e = e2e.get("new") if not e2e.get("new", {}).get("not_available") else None
        today_e2e = e2e.get("today", {})
        shown = new_e2e or today_e2e
        add(
            f"{shown['clients']:,} real clients waiting: no error, no hang",
            shown.get("errors"),
            today_e2e.get("errors") if new_e2e else None,
            shown.get("errors") == 0,
        )
    return out


def _bands(run: dict[str, Any]) -> str:
    """Calls per far-back poll by distance band: where the store is still asked."""
    return ", ".join(
        f"{band} {_fmt(row['calls_per_poll'], 3)} ({_fmt(row['polls'])} polls)"
        for band, row in run.get("far_bands", {}).items()
        if row["polls"]
    )


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else (f"{n // 1000}k" if n >= 1000 else str(n))


def chart(crowd: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = crowd["sim"]
    sizes = sim["sizes"]
    figures = (
        ("polls_per_s_per_1k_waiting", "poll requests/s per 1,000 waiting"),
        ("redis_calls_per_s", "Redis calls/s for the room"),
        ("redis_cpu_per_s", "Redis CPU (cores) for the room"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), dpi=100)
    for ax, (key, title) in zip(axes, figures, strict=True):
        for offset, policy, color in ((-0.2, "today", "#b45309"), (0.2, "new", "#047857")):
            xs, ys = [], []
            for i, size in enumerate(sizes):
                run = _run(crowd, "sim", f"{policy}-{size}")
                if run is not None and run.get(key):
                    xs.append(i + offset)
                    ys.append(run[key])
            if xs:
                bars = ax.bar(xs, ys, width=0.4, color=color, label=policy)
                ax.bar_label(
                    bars, labels=[f"{y:,.0f}" if y >= 100 else f"{y:.3g}" for y in ys], padding=1, fontsize=7
                )
        ax.set_xticks(range(len(sizes)), [_size(s) for s in sizes])
        ax.set_xlabel("visitors waiting in line")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "a flash crowd waiting in one fifo room, real deciders and Redis scripts, 2 replicas "
        "(today: every poll at retry_after, a Redis call each; not run above 100k)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(crowd: dict[str, Any] | None) -> str:
    """The crowd section of BENCHMARKS.md (ends with a blank line)."""
    if not crowd:
        return ""
    sim, e2e, flash = crowd.get("sim"), crowd.get("e2e"), crowd.get("flash")
    parts = [f"{SECTION}\n"]
    parts.append(
        "What a line of waiting visitors costs, under today's policy (every visitor polls every "
        "`retry_after`, each poll a Redis call) and issue 28's (each wait answer carries the "
        "visitor's own interval, up to `max_retry_after`; far-back polls answered from each "
        "replica's line view), measured side by side in the same run by "
        "[`bench/crowd.py`](bench/crowd.py). What a crowd larger than the proxies' capacity sees: "
        "[docs/crowds.md](docs/crowds.md).\n"
    )
    targets_ = crowd.get("targets", [])
    if targets_:
        rows = "\n".join(
            f"| {t['target']} | {_fmt(t['value'])} | {_fmt(t['today'])} | "
            f"{'–' if t['met'] is None else ('met' if t['met'] else '**missed**')}"
            f"{(': ' + t['why']) if t.get('why') else ''} |"
            for t in targets_
        )
        parts.append(f"| target | measured (new) | today | |\n| --- | --- | --- | --- |\n{rows}\n")
    if sim:
        available = sim["available"]
        room = sim["room"]
        missing = [k for k, v in available.items() if not v]
        parts.append(
            f"### In-process: the real deciders and Redis scripts\n\n"
            f"A `fifo` room of {room['new_sessions']:,} per {room['window_s']} s (100/s), "
            f"`retry_after: {room['retry_after_s']}s`, new: `max_retry_after: {room['max_retry_after_s']}s` "
            f"and `store.line_view: true`; the line's visitors plus the {room['new_sessions']:,} let in at "
            f"once arrive within {room['arrival_s']:g} s, over {room['replicas']} replicas (the product's "
            "Decider, Line and RedisStore) sharing one dedicated `redis-server`; a virtual clock, so "
            "every per-second figure is per simulated second: what the same crowd costs in real time. "
            "The tick's script calls go to Redis in one pipeline (Redis CPU is therefore a lower bound; "
            "Redis script time, from `INFO commandstats`, is not). Measured after every arrival has "
            "polled once, over one of the policy's longest poll intervals."
            + (f" Not in this checkout: {', '.join(missing)}." if missing else "")
            + "\n\n![crowd](bench/results/crowd.png)\n"
        )
        head = (
            "| waiting | policy | polls/s per 1k waiting | Redis calls/s | Redis CPU | Redis script ms/s "
            "| calls per far poll | let in/s | worst inversion s | ETA error | most in a window "
            "| Redis B/visitor | arrivals: Redis CPU | wall s |"
        )
        rows = []
        for size in sim["sizes"]:
            for policy in ("today", "new"):
                run = sim["runs"].get(f"{policy}-{size}", {})
                if run.get("not_available") or run.get("not_run"):
                    why = (
                        "not available in this checkout"
                        if run.get("not_available")
                        else "not run (see below)"
                    )
                    rows.append(f"| {size:,} | {policy} | {why} |" + " |" * 11)
                    continue
                rows.append(
                    f"| {size:,} | {policy} | {_fmt(run['polls_per_s_per_1k_waiting'], 1)} | "
                    f"{_fmt(run['redis_calls_per_s'], 0)} | {_fmt(run['redis_cpu_per_s'], 3)} | "
                    f"{_fmt(run['redis_script_ms_per_s'], 0)} | {_fmt(run['redis_calls_per_far_poll'], 3)} | "
                    f"{_fmt(run['admitted_per_s'], 1)} | "
                    f"{_fmt(run['worst_order_inversion_s'])} | {_pct(run['eta_median_abs_error'])} | "
                    f"{run['most_in_window']} / {run['new_sessions']} | "
                    f"{_fmt(run['redis_bytes_per_visitor'])} | "
                    f"{_fmt(run['arrival_redis_cpu_per_s'], 2)} | {_fmt(run['wall_s'], 0)} |"
                )
        parts.append(f"{head}\n|{' --- |' * 14}\n" + "\n".join(rows) + "\n")
        parts.append(
            "Calls per far poll: the Redis calls made while answering polls of tickets that cannot be "
            "called yet (more than 2 × new_sessions behind the head), plus every call made outside a "
            "poll (batched heartbeats, the line view's refresh), over those polls. Redis B/visitor: "
            "`INFO memory` before and after the arrivals, over the line's length. Arrivals: Redis CPU "
            "while the flash crowd arrived (a core is 1.0). ETA error: the wait shown at arrival "
            "against the real one, median, of those let in during the run after waiting at least two "
            f"head poll intervals. Today's policy is not run above {crowd_sim.TODAY_UP_TO:,}: its cost is "
            "one Redis call per poll by construction, and 200,000 of them per simulated second would "
            "take this machine minutes per simulated second.\n"
        )
    if e2e:
        rows = []
        for policy in ("today", "new"):
            run = e2e["runs"].get(policy, {})
            if run.get("not_available"):
                rows.append(f"| {policy} | not available in this checkout |" + " |" * 10)
                continue
            rows.append(
                f"| {policy} | {_fmt(run['waiting_mean'])} | "
                f"{_fmt(run['client_polls_per_s_per_1k_waiting'], 1)} | "
                f"{_fmt(run['proxy_requests_per_s_per_1k_waiting'], 1)} | "
                f"{_fmt(run['proxy_store_calls_per_request'], 3)} | {_fmt(run['redis_calls_per_s'], 0)} | "
                f"{_fmt(run['redis_cpu_per_s'], 3)} | {_fmt(run['worst_order_inversion_s'])} | "
                f"{_pct(run['eta_median_abs_error'])} | {run['most_in_window']} / {run['new_sessions']} | "
                f"{_fmt(run['shed'])} | {_fmt(run['errors'])} |"
            )
        room = e2e["room"]
        parts.append(
            f"### End to end: {e2e['runs']['today']['clients']:,} real clients\n\n"
            f"Light asyncio clients (one keep-alive connection each, no client library) arrive within "
            f"{room['arrival_s']:g} s over 2 `waitroom serve` replicas and one `redis-server`, and poll "
            f"as the wait page does after each answer's `Retry-After` (×0.7–1.3), at a `fifo` room of "
            f"{room['new_sessions']} per {room['window_s']} s. Figures from the clients, the proxies' "
            f"own metrics and Redis, over the measured span (open files: {e2e['open_files']:,}).\n\n"
            "| policy | waiting | client polls/s per 1k | proxy requests/s per 1k | store calls per request "
            "| Redis calls/s | Redis CPU | worst inversion s | ETA error | most in a window | shed "
            "| errors |\n"
            f"|{' --- |' * 12}\n" + "\n".join(rows) + "\n"
        )
        today = e2e["runs"].get("today", {})
        if today.get("shed") or today.get("errors"):
            parts.append(
                f"Today's policy asks {today['clients'] / room['retry_after_s']:,.0f} requests per second "
                f"of {today['clients']:,} waiting visitors: more than the 2 replicas answered on this "
                f"machine, so its answers came late or shed ({_fmt(today['shed'])} shed, "
                f"{_fmt(today['errors'])} without an answer within 30 s), and its client-side poll rate is "
                "what got through, not what was asked. The same clients under the new policy ask about a "
                "tenth of that.\n"
            )
    if flash:
        kinds = ", ".join(f"{k}: {v:,}" for k, v in sorted(flash["answers"].items()))
        parts.append(
            f"### A flash crowd beyond the proxies' capacity\n\n"
            f"{flash['arrivals']:,} new visitors arrive within {flash['over_s']:g} s "
            f"({flash['offered_per_s']:,.0f}/s offered), each on a connection of its own, at 2 `waitroom "
            f"serve` replicas and one Redis (the shipped `store.max_wait`, {flash['max_wait_s']:g} s). "
            f"Answers: {kinds}. Answered within: p50 {flash['p50_s']:.2f} s, p99 {flash['p99_s']:.2f} s, "
            f"slowest {flash['max_s']:.2f} s; {flash['answered_per_s']:,.0f} answers/s over the burst. "
            "A shed answer is the wait page without a ticket, with `Retry-After`: no store call; "
            f"{flash.get('shed_at_the_door', 0):,} of the proxies' {flash['shed_by_proxies']:,} were "
            "answered at `waitroom serve`'s front door, before mitmproxy read the request "
            "(docs/crowds.md). The clients count fewer when some gave up before an answer came.\n"
        )
    return "\n".join(parts) + "\n"


def splice(text: str, section: str) -> str:
    """BENCHMARKS.md with its crowd section replaced (or put before *Reproduce*)."""
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## )", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    at = text.find("## Reproduce")
    return text[:at] + section + text[at:] if at >= 0 else text + "\n" + section


def write(crowd: dict[str, Any], out: Path) -> dict[str, Any]:
    """Writes the figures, the chart and the section; a part not measured this time (--only) is kept
    from the last run's bench/results/crowd.json. Returns what was written."""
    results = out / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    previous = results / "crowd.json"
    if previous.exists():
        kept = json.loads(previous.read_text())
        crowd = {**{k: kept[k] for k in PARTS if k in kept and k not in crowd}, **crowd}
        crowd["targets"] = targets(crowd)
    (results / "crowd.json").write_text(json.dumps(crowd, indent=2) + "\n")
    if crowd.get("sim"):
        chart(crowd, results / "crowd.png")
    target = out / "BENCHMARKS.md"
    existing = target.read_text() if target.exists() else "# Benchmarks\n\n## Reproduce\n"
    target.write_text(splice(existing, markdown(crowd)))
    return crowd


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small crowds (the smoke test's)")
    parser.add_argument("--only", choices=PARTS, default="", help="one part only (--write keeps the others)")
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md's crowd section")
    parser.add_argument("--out", type=Path, default=REPO, help="where BENCHMARKS.md and bench/results go")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    crowd = measure(args.quick, args.only)
    if args.write:
        crowd = write(crowd, args.out)
    if args.json:
        print(json.dumps(crowd, indent=1))
    for t in crowd["targets"]:
        state = "n/a   " if t["met"] is None else ("met   " if t["met"] else "MISSED")
        print(f"{state}  {t['target']}: {_fmt(t['value'])} (today {_fmt(t['today'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
