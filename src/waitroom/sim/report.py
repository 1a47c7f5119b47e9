"""What a run says: the summary printed, `--json`, and the self-contained HTML report.

The HTML report is one file: an inline style sheet, a Content-Security-Policy that allows nothing
to load (`default-src 'none'`), no script, every chart an inline SVG with its numbers in a table
beside it; light and dark, printable. Every text that comes from input goes through html.escape.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from waitroom.config.durations import format_duration
from waitroom.sim import charts
from waitroom.sim.arrivals import Tally
from waitroom.sim.charts import Line
from waitroom.sim.figures import Figures, RoomFigures

JSON_VERSION = 1


@dataclass
class Side:
    """One config's run: its name (the file), its hash, its figures."""

    name: str
    sha256: str
    figures: Figures


@dataclass
class Run:
    candidate: Side
    against: Side | None
    arrivals: str
    """What came in, in words (the crowd spec and/or the inputs)."""
    tallies: list[Tally]
    seed: int
    behaviour: str
    options: dict[str, Any]
    version: str
    notes: list[str] = field(default_factory=list)
    """Lines for the operator (a shadow room simulated as live, a slow Redis, …)."""
    requests: list[str] = field(default_factory=list)
    """--as-recorded: one line per request."""
    request_rows: list[list[Any]] = field(default_factory=list)


# --- words ----------------------------------------------------------------------------------------


def human(seconds: float | None) -> str:
    """`24m10s`, `44m`, `6.5s`, `1h04m`; `–` for none."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m" if not secs or hours >= 10 else f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"


def count(n: float) -> str:
    if n >= 10_000_000:
        return f"{n / 1e6:.1f}M"
    return f"{n:,.0f}"


def share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "0%"


def pct(value: float | int | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def at(seconds: float | None) -> str:
    return "–" if seconds is None else f"+{human(seconds)}"


def _room_head(room: RoomFigures) -> str:
    text = f"{room.queue} {room.new_sessions}/{format_duration(room.window)}"
    if room.max_active:
        text += f", max_active {room.max_active:,}"
    return text


ROWS: list[tuple[str, Callable[[RoomFigures], str], Callable[[RoomFigures], float | None]]] = [
    ("visitors", lambda r: count(r.visitors), lambda r: r.visitors),
    ("admitted", lambda r: count(r.admitted), lambda r: r.admitted),
    ("  at once", lambda r: count(r.at_once), lambda r: r.at_once),
    ("  after waiting", lambda r: count(r.after_waiting), lambda r: r.after_waiting),
    ("most a minute", lambda r: count(r.most_per_minute), lambda r: r.most_per_minute),
    ("wait p50", lambda r: human(r.wait.get("p50")), lambda r: r.wait.get("p50")),
    ("wait p90", lambda r: human(r.wait.get("p90")), lambda r: r.wait.get("p90")),
    ("wait p99", lambda r: human(r.wait.get("p99")), lambda r: r.wait.get("p99")),
    ("wait max", lambda r: human(r.wait.get("max")), lambda r: r.wait.get("max")),
    ("ETA median error", lambda r: pct(r.eta.get("median_error")), lambda r: _num(r.eta.get("median_error"))),
    ("longest line", lambda r: count(r.longest_line), lambda r: r.longest_line),
    ("most inside", lambda r: count(r.most_inside), lambda r: r.most_inside),
    ("abandoned", lambda r: count(r.abandoned), lambda r: r.abandoned),
    ("refused (tickets_per_ip)", lambda r: count(r.refused), lambda r: r.refused),
    ("closed", lambda r: count(r.closed), lambda r: r.closed),
]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _delta(name: str, new: float | None, old: float | None) -> str:
    if new is None or old is None or (isinstance(new, float) and math.isnan(new)):
        return ""
    diff = new - old
    if name.startswith("wait"):
        return ("+" if diff > 0 else "−" if diff < 0 else "") + human(abs(diff)) if diff else "0"
    if name.startswith("ETA"):
        return f"{100 * diff:+.0f} pts"
    return f"{diff:+,.0f}"


def summary_text(run: Run, report_path: str | None = None) -> str:
    fig = run.candidate.figures
    lines = [
        f"waitroom simulate: {run.candidate.name} — {count(fig.visitors)} visitors "
        f"({run.arrivals}, seed {run.seed})",
        f"{human(fig.span)} simulated in {fig.wall:.1f} s ({count(fig.decisions)} decisions, "
        f"{count(fig.skipped_polls)} polls skipped in {count(fig.probes)} parks)",
    ]
    for tally in run.tallies:
        lines.append(f"input {tally.describe()}")
    lines.append(f"visitors: {run.behaviour}")
    lines += run.notes
    if run.against is not None:
        lines += _compared(run)
    else:
        for room in fig.rooms.values():
            lines += _room_lines(room, fig)
    for rule, outcomes in fig.rules.items():
        parts = "  ".join(f"{o} {count(n)}" for o, n in outcomes.items()) or "no request matched"
        lines.append(f"rule {rule}  {parts}")
    lines += _guarantees(fig)
    if fig.errors:
        lines.append(
            "DECISIONS FAILED: " + ", ".join(f"{k} × {v}" for k, v in fig.errors.items()) + " (a product bug)"
        )
    if report_path:
        lines.append(f"report: {report_path}")
    return "\n".join(lines)


def _room_lines(room: RoomFigures, fig: Figures) -> list[str]:
    out = [f"room {room.name}  {_room_head(room)}"]
    if room.inside_already:
        out.append(f"  inside     {count(room.inside_already)} already inside (session cookie)")
    out.append(
        f"  admitted   {count(room.admitted)}: {count(room.at_once)} at once, "
        f"{count(room.after_waiting)} after waiting; at most {count(room.most_per_minute)} a minute "
        f"(limit {room.limit_per_minute:,.0f})"
    )
    if room.wait:
        w = room.wait
        out.append(
            f"  wait       p50 {human(w['p50'])}   p90 {human(w['p90'])}   "
            f"p99 {human(w['p99'])}   max {human(w['max'])}"
        )
    eta = room.eta
    if room.queue == "fifo" and eta.get("shown"):
        under = eta.get("worst_under_estimate")
        out.append(
            f"  eta shown  median error {pct(eta.get('median_error'))}; {pct(eta.get('within_20_percent'))} "
            f"within 20%; {count(_num(eta.get('over_twice')) or 0)} over twice the wait, "
            f"{count(_num(eta.get('under_half')) or 0)} under half; "
            f"worst under-estimate {human(_num(under)) if under is not None else '–'} "
            f"(no estimate shown: {eta.get('not_shown', 0)})"
        )
    if room.longest_line:
        empty = (
            f"; empty from {at(room.line_empty_from)}"
            if room.line_empty_from is not None
            else "; never empty"
        )
        out.append(f"  line       longest {count(room.longest_line)} at {at(room.longest_line_at)}{empty}")
    inside = f"  inside     most {count(room.most_inside)}"
    if room.max_active:
        full = room.cap_full
        inside += f" (cap {room.max_active:,}" + (
            f" full +{full[0]:g}m to +{full[1]:g}m)" if full else " never full)"
        )
    out.append(inside)
    if room.abandoned or room.gave_up:
        out.append(
            f"  abandoned  {count(room.abandoned)} ({share(room.abandoned, room.visitors)})"
            + (f"; {count(room.gave_up)} gave up after errors" if room.gave_up else "")
        )
    if room.still_waiting:
        out.append(f"  waiting    {count(room.still_waiting)} still in line when the run ended")
    out.append(f"  refused    tickets_per_ip {count(room.refused)}; closed {count(room.closed)}")
    return out


def _compared(run: Run) -> list[str]:
    assert run.against is not None
    new, old = run.candidate.figures, run.against.figures
    out = []
    for name, room in new.rooms.items():
        other = old.rooms.get(name)
        out.append(
            f"room {name}: candidate {_room_head(room)}; current "
            + (_room_head(other) if other else f"(no room {name})")
        )
        out.append(f"{'':<30}{'candidate':>14}{'current':>16}{'Δ':>14}")
        for label, text, value in ROWS:
            theirs = text(other) if other else "–"
            delta = _delta(label, value(room), value(other)) if other else ""
            out.append(f"  {label:<28}{text(room):>14}{theirs:>16}{delta:>14}".rstrip())
    for name in old.rooms:
        if name not in new.rooms:
            out.append(f"room {name}: only in {run.against.name}")
    return out


def _guarantees(fig: Figures) -> list[str]:
    broken = [f"room {r.name}: {what}" for r in fig.rooms.values() for what in r.broken]
    if broken:
        return ["GUARANTEE BROKEN (a product bug): " + "; ".join(broken)]
    parts = []
    for room in fig.rooms.values():
        text = (
            f"room {room.name}: at most {room.most_in_window} per {format_duration(room.window)} window "
            f"(limit {room.window_limit})"
        )
        if room.unchecked:
            text += f" (not checked {room.unchecked})" if room.unchecked.startswith("during") else ""
            if not room.unchecked.startswith("during"):
                text = f"room {room.name}: not checked ({room.unchecked})"
        if room.worst_inversion is not None:
            text += (
                f", worst order inversion {human(room.worst_inversion)} (bound {human(room.inversion_bound)})"
            )
        parts.append(text)
    return ["guarantees held: " + "; ".join(parts)] if parts else []


# --- JSON ------------------------------------------------------------------------------------------


def _side_json(side: Side) -> dict[str, Any]:
    fig = side.figures
    return {
        "config": side.name,
        "config_sha256": side.sha256,
        "visitors": fig.visitors,
        "rooms": {name: room.as_json() for name, room in fig.rooms.items()},
        "rules": fig.rules,
        "simulated_seconds": fig.span,
    }


def as_json(run: Run) -> dict[str, Any]:
    fig = run.candidate.figures
    data: dict[str, Any] = {
        "version": JSON_VERSION,
        "tool": {"name": "waitroom simulate", "version": run.version},
        "input": {
            "arrivals": run.arrivals,
            "files": [t.as_json() for t in run.tallies],
            "seed": run.seed,
            "behaviour": run.behaviour,
            "options": run.options,
        },
        **_side_json(run.candidate),
        "against": _side_json(run.against) if run.against else None,
        "notes": run.notes,
        "run": {
            "wall_seconds": round(fig.wall, 3),
            "decisions": fig.decisions,
            "skipped_polls": fig.skipped_polls,
            "parks": fig.probes,
            "heartbeats": fig.heartbeats,
            "decision_errors": fig.errors,
        },
    }
    if run.request_rows:
        data["requests"] = run.request_rows
    cleaned: dict[str, Any] = _clean(data)
    return cleaned


def _clean(value: Any) -> Any:
    """JSON without NaN or infinities (null instead), tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def deterministic(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON without what differs from run to run (the wall clock): for comparisons."""
    return {k: v for k, v in data.items() if k != "run"}


# --- HTML ------------------------------------------------------------------------------------------

STYLE = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--card:#f6f8fa;
--c1:#1d4ed8;--c2:#c2410c;--c3:#047857;--c4:#7c3aed;--mark:#6b7280}
@media (prefers-color-scheme:dark){:root{--bg:#0f1115;--fg:#e6edf3;--muted:#9da7b3;--line:#30363d;
--card:#161b22;--c1:#79a8ff;--c2:#f0883e;--c3:#3fb950;--c4:#c297ff;--mark:#8b949e}}
*{box-sizing:border-box}
body{margin:0;padding:1.5rem;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1400px;margin:0 auto}
h1{font-size:1.5rem;margin:0 0 .25rem}
h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid var(--line)}
p.meta,.muted{color:var(--muted);margin:.25rem 0}
table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.2rem .6rem;border-bottom:1px solid var(--line);text-align:right}
th:first-child,td:first-child{text-align:left}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,540px),1fr));gap:1rem}
figure{margin:0;padding:.75rem;background:var(--card);border:1px solid var(--line);border-radius:8px}
figcaption{font-weight:600;margin-bottom:.25rem}
svg{width:100%;height:auto;display:block;font-size:11px}
svg text{fill:var(--muted)}svg .label{fill:var(--fg)}
svg .grid{stroke:var(--line);stroke-width:1}svg .axis,svg .tick{stroke:var(--muted);stroke-width:1}
svg .mark{stroke:var(--mark);stroke-width:1;stroke-dasharray:3 3}svg .mark-label{fill:var(--mark)}
svg .series{fill:none;stroke-width:1.8}
svg .c1{stroke:var(--c1);fill:var(--c1)}svg .c2{stroke:var(--c2);fill:var(--c2)}
svg .c3{stroke:var(--c3);fill:var(--c3)}svg .c4{stroke:var(--c4);fill:var(--c4)}
svg path.series{fill:none}svg .legend line{stroke-width:2.5}svg .legend text{fill:var(--fg)}
details{margin-top:.5rem}summary{cursor:pointer;color:var(--muted)}
details table{font-size:12px}
.ok{color:var(--c3)}.bad{color:var(--c2);font-weight:700}
pre{background:var(--card);padding:.75rem;border-radius:6px;overflow:auto;font-size:12px}
@media print{body{padding:0}figure{break-inside:avoid}details{display:none}}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def html_report(run: Run) -> str:
    fig = run.candidate.figures
    title = f"waitroom simulate: {run.candidate.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(count(fig.visitors))} visitors: {e(run.arrivals)}; seed {run.seed}; '
        f"{e(human(fig.span))} simulated"
        + (f"; compared with <b>{e(run.against.name)}</b> (dashed)" if run.against else "")
        + "</p>",
        f'<p class="meta">visitors: {e(run.behaviour)}</p>',
    ]
    for tally in run.tallies:
        parts.append(f'<p class="meta">input {e(tally.describe())}</p>')
    for note in run.notes:
        parts.append(f'<p class="meta">{e(note)}</p>')
    guarantees = _guarantees(fig)
    if guarantees:
        css = "bad" if guarantees[0].startswith("GUARANTEE") else "ok"
        parts.append(f'<p class="{css}">{e(guarantees[0])}</p>')
    if fig.errors:
        parts.append(f'<p class="bad">decisions failed: {e(fig.errors)} (a product bug)</p>')
    for name, room in fig.rooms.items():
        other = run.against.figures.rooms.get(name) if run.against else None
        parts += _room_html(run, room, other)
    if fig.rules:
        parts.append(
            "<h2>Rate-limit rules</h2><table><tr><th>rule</th><th>outcome</th><th>requests</th></tr>"
        )
        for rule, outcomes in fig.rules.items():
            for outcome, n in outcomes.items() or [("no request matched", 0)]:
                parts.append(f"<tr><td>{e(rule)}</td><td>{e(outcome)}</td><td>{n:,}</td></tr>")
        parts.append("</table>")
    parts.append(
        f'<p class="meta">{e(run.candidate.name)} sha256 {e(run.candidate.sha256[:16])}…'
        + (f"; {e(run.against.name)} sha256 {e(run.against.sha256[:16])}…" if run.against else "")
        + f"; waitroom {e(run.version)}; {count(fig.decisions)} decisions in {fig.wall:.1f} s</p>"
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _figures_table(room: RoomFigures, other: RoomFigures | None, against: str | None) -> str:
    head = "<tr><th></th><th>candidate</th>" + (f"<th>{e(against)}</th><th>Δ</th>" if other else "") + "</tr>"
    rows = [head]
    for label, text, value in ROWS:
        row = f"<tr><td>{e(label.strip())}</td><td>{e(text(room))}</td>"
        if other is not None:
            row += f"<td>{e(text(other))}</td><td>{e(_delta(label, value(room), value(other)))}</td>"
        rows.append(row + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _numbers(headers: Sequence[str], rows: Sequence[Sequence[object]], limit: int = 2_000) -> str:
    cells = "".join(
        "<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>" for row in rows[:limit]
    )
    more = f"<p class='muted'>{len(rows) - limit:,} more rows in --json</p>" if len(rows) > limit else ""
    return (
        "<details><summary>numbers</summary><table><tr>"
        + "".join(f"<th>{e(h)}</th>" for h in headers)
        + f"</tr>{cells}</table>{more}</details>"
    )


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if not value.is_integer() else f"{int(value)}"
    return str(value)


def _room_html(run: Run, room: RoomFigures, other: RoomFigures | None) -> list[str]:
    against = run.against.name if run.against else None
    heads = _room_head(room) + (f"; {against}: {_room_head(other)}" if other is not None else "")
    out = [f"<h2>Room {e(room.name)} <span class='muted'>({e(heads)})</span></h2>"]
    out.append(_figures_table(room, other, against))
    s, o = room.series, other.series if other else None
    figures = []

    def figure(caption: str, svg: str, table: str) -> None:
        figures.append(f"<figure><figcaption>{e(caption)}</figcaption>{svg}{table}</figure>")

    lines = [
        Line("arrivals", s.t, s.arrivals, "c2", step=True),
        Line("admitted", s.t, s.admitted, "c1", step=True),
    ]
    if o is not None:
        lines.append(Line(f"admitted ({against})", o.t, o.admitted, "c1", dashed=True, step=True))
    figure(
        "Arrivals and admissions per minute",
        charts.line_chart(
            f"Room {room.name}: arrivals and admissions per minute",
            "minutes",
            "visitors per minute",
            lines,
            marks=[(room.limit_per_minute, f"limit {room.limit_per_minute:,.0f}/min")],
        ),
        _numbers(["minute", "arrivals", "admitted"], list(zip(s.t, s.arrivals, s.admitted, strict=False))),
    )
    lines = [Line("line", s.t, s.line, "c4")]
    if o is not None:
        lines.append(Line(f"line ({against})", o.t, o.line, "c4", dashed=True))
    figure(
        "Line length" if room.queue == "fifo" else "Visitors on the wait page",
        charts.line_chart(f"Room {room.name}: line length", "minutes", "waiting", lines),
        _numbers(
            ["minute", "waiting", "newcomer's ETA (s)"], list(zip(s.t, s.line, s.eta_newcomer, strict=False))
        ),
    )
    lines = [Line("inside", s.t, s.inside, "c3")]
    if o is not None:
        lines.append(Line(f"inside ({against})", o.t, o.inside, "c3", dashed=True))
    marks = [(float(room.max_active), f"max_active {room.max_active:,}")] if room.max_active else []
    figure(
        "Inside (sessions)",
        charts.line_chart(f"Room {room.name}: sessions inside", "minutes", "inside", lines, marks=marks),
        _numbers(["minute", "inside"], list(zip(s.t, s.inside, strict=False))),
    )
    p50 = [None if w is None else w / 60 for w in s.wait_p50]
    p90 = [None if w is None else w / 60 for w in s.wait_p90]
    lines = [Line("p50", s.wait_t, p50, "c1"), Line("p90", s.wait_t, p90, "c2")]
    if o is not None:
        lines.append(
            Line(
                f"p50 ({against})",
                o.wait_t,
                [None if w is None else w / 60 for w in o.wait_p50],
                "c1",
                dashed=True,
            )
        )
        lines.append(
            Line(
                f"p90 ({against})",
                o.wait_t,
                [None if w is None else w / 60 for w in o.wait_p90],
                "c2",
                dashed=True,
            )
        )
    figure(
        "Wait by arrival time",
        charts.line_chart(
            f"Room {room.name}: wait by arrival time", "arrived at (minutes)", "wait (minutes)", lines
        ),
        _numbers(
            ["arrived at (minute)", "p50 (s)", "p90 (s)"],
            list(zip(s.wait_t, s.wait_p50, s.wait_p90, strict=False)),
        ),
    )
    groups = [("candidate", "c1", [(shown / 60, actual / 60) for shown, actual in room.eta_points])]
    if other is not None and other.eta_points:
        groups.append((against or "current", "c2", [(a / 60, b / 60) for a, b in other.eta_points]))
    figure(
        "ETA shown against the wait that followed",
        charts.scatter_chart(
            f"Room {room.name}: estimated wait shown against the actual wait",
            "shown (minutes)",
            "actual (minutes)",
            groups,
        ),
        _numbers(["shown (s)", "actual (s)"], [(a, round(b, 1)) for a, b in room.eta_points]),
    )
    cdf = room.wait_cdf
    lines = [Line("candidate", [w / 60 for w, _ in cdf], [100 * f for _, f in cdf], "c1")]
    if other is not None:
        lines.append(
            Line(
                against or "current",
                [w / 60 for w, _ in other.wait_cdf],
                [100 * f for _, f in other.wait_cdf],
                "c2",
                dashed=True,
            )
        )
    figure(
        "Wait distribution",
        charts.line_chart(
            f"Room {room.name}: share admitted within a wait", "wait (minutes)", "% of admitted", lines
        ),
        _numbers(["wait (s)", "share"], [(round(w, 1), f"{100 * f:.1f}%") for w, f in cdf]),
    )
    out.append('<div class="charts">' + "".join(figures) + "</div>")
    return out
