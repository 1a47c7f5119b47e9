"""`waitroom simulate`: what would my visitors have seen with this config? (run.py does the work.)

Exit status: 0 done, 1 bad input (one line on stderr, never a traceback), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from waitroom.config.durations import parse_duration
from waitroom.sim.arrivals import FIELDS, FORMATS
from waitroom.sim.crowd import CrowdError, parse_crowd
from waitroom.sim.report import as_json, html_report, summary_text
from waitroom.sim.run import MAX_REPLICAS, Options, SimulationError, simulate
from waitroom.sim.visitors import Behaviour, BehaviourError, parse_pages, parse_patience, parse_share

DEFAULT_REPORT = "waitroom-simulate.html"

EPILOG = f"""
arrivals: .mitm flow files (mitmdump -w), access logs (nginx/Apache combined, Envoy's or Istio's
default format, JSON lines; plain or .gz) and/or --crowd. JSON-lines fields and the keys they are
read from (the first present wins; --field NAME=KEY puts yours first):
{chr(10).join(f"  {name:<16} {', '.join(keys)}" for name, keys in FIELDS.items())}

crowd:    "50000 over 5m, then 200/min for 1h"; "1,000 at once; pause 30s, 2k over 10m front";
          phases: N over D [evenly|front|ramp], N at once, RATE/s|min|h for D, pause D.
examples:
  waitroom simulate --config candidate.yaml access.log --against current.yaml
  waitroom simulate --config candidate.yaml --crowd "50000 over 5m, then 200/min for 1h" --patience 20%:10m
Every number is explained in docs/sizing.md.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="waitroom simulate",
        description="What would your visitors have seen with this config? Runs the wait room's own "
        "deciders and store on a virtual clock over recorded or synthetic arrivals, and reports "
        "admissions, the line, waits, the wait estimate, refusals and abandonment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, type=Path, help="the config to try (the candidate)")
    p.add_argument("arrivals", nargs="*", type=Path, help=".mitm flows and/or access logs, merged by time")
    p.add_argument(
        "--crowd", metavar="SPEC", help='a synthetic crowd, e.g. "50000 over 5m, then 200/min for 1h"'
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="of the arrivals (auto: by extension, then by the first lines)",
    )
    p.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=KEY",
        help="JSON lines: read field NAME from KEY",
    )
    p.add_argument(
        "--visitor",
        default="ip+ua",
        metavar="ip+ua|ip|field:NAME",
        help="how recorded requests group into visitors (default ip+ua)",
    )
    p.add_argument(
        "--session-cookie",
        metavar="NAME",
        help="a visitor whose first request carries this cookie was inside already",
    )
    p.add_argument(
        "--as-recorded",
        action="store_true",
        help="decide every recorded request at its time, with no behaviour model",
    )
    p.add_argument(
        "--start",
        metavar="ISO8601",
        help="the run's moment 0 (default: the first recorded request, else 10m before an opens_at, "
        "else 2030-01-01Z)",
    )
    p.add_argument(
        "--until",
        metavar="DURATION",
        help="stop this long after the start (default: when nobody is left; at most 7d)",
    )
    g = p.add_argument_group("visitors")
    g.add_argument(
        "--pages",
        default="5",
        metavar="N|A-B",
        help="pages per visit once in: a mean (geometric) or a range (default 5)",
    )
    g.add_argument(
        "--time-on-site",
        default="5m",
        metavar="DURATION",
        help="from the first page to the last, on average (default 5m)",
    )
    g.add_argument(
        "--patience",
        default="",
        metavar="SHARE:D[-D2][,...]",
        help='e.g. "20%%:10m": 20%% leave the line if still waiting after 10 minutes',
    )
    g.add_argument(
        "--release",
        default="0",
        metavar="SHARE",
        help="whose last page ends the session (Waitroom-Command: release)",
    )
    g.add_argument(
        "--no-js",
        default="0",
        metavar="SHARE",
        help="whose browser runs no script (the page refreshes itself)",
    )
    g.add_argument(
        "--poll",
        choices=("page", "retry-after"),
        default="page",
        help="as waitroom.html polls (default), or Retry-After to the letter",
    )
    g.add_argument("--path", help="the path crowd visitors ask for (default: the first room's prefix)")
    g.add_argument(
        "--host", help="the host crowd visitors ask for (default: the first room's, else localhost)"
    )
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=1, help="same input and seed, same report (default 1)")
    r.add_argument(
        "--replicas",
        type=int,
        default=1,
        help=f"deciders sharing the store, as proxy replicas (1-{MAX_REPLICAS})",
    )
    r.add_argument(
        "--store",
        default="memory",
        metavar="memory|redis://HOST:PORT/DB",
        help="the embedded store, or a real Redis (keys of the run's own, removed after)",
    )
    r.add_argument(
        "--change",
        action="append",
        default=[],
        metavar='"AT ROOM FIELD=VALUE"',
        help='an operator\'s change during the run, e.g. "10m shop new_sessions=500"',
    )
    r.add_argument(
        "--outage", metavar="AT+D", help="the store fails from AT for D (store.on_error decides), e.g. 10m+2m"
    )
    r.add_argument(
        "--exact",
        action="store_true",
        help="ask every poll (slower; the default skips polls that cannot change anything)",
    )
    r.add_argument(
        "--every", default="10s", metavar="DURATION", help="how often the line is sampled (default 10s)"
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--against",
        type=Path,
        metavar="CURRENT.yaml",
        help="run the same visitors on this config too, side by side",
    )
    o.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        metavar="FILE.html",
        help=f"the HTML report (default {DEFAULT_REPORT})",
    )
    o.add_argument("--no-report", action="store_true", help="write no HTML report")
    o.add_argument("--json", metavar="FILE|-", help="the figures as JSON, to a file or - (stdout)")
    o.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def options_from(args: argparse.Namespace) -> Options:
    """Options from the command line; SimulationError (one line) for a value that does not parse."""
    try:
        pages, uniform = parse_pages(args.pages)
        behaviour = Behaviour(
            pages=pages,
            pages_uniform=uniform,
            time_on_site=_duration("--time-on-site", args.time_on_site, positive=True),
            patience=parse_patience(args.patience) if args.patience else (),
            release=parse_share(args.release, "--release"),
            no_js=parse_share(args.no_js, "--no-js"),
            poll=args.poll,
        )
    except BehaviourError as e:
        raise SimulationError(str(e)) from None
    crowd = None
    if args.crowd is not None:
        try:
            crowd = parse_crowd(args.crowd)
        except CrowdError as e:
            raise SimulationError(f"--crowd {args.crowd!r}: {e}") from None
    start = None
    if args.start:
        try:
            moment = datetime.fromisoformat(args.start)
        except ValueError:
            raise SimulationError(
                f"--start: {args.start!r} is not ISO 8601 (e.g. 2026-12-01T10:00:00+01:00)"
            ) from None
        if moment.tzinfo is None:
            raise SimulationError(f"--start: {args.start!r} needs a zone (e.g. Z or +01:00)")
        start = moment.timestamp()
    return Options(
        config=args.config,
        arrivals=list(args.arrivals),
        crowd=crowd,
        format=args.format,
        fields=list(args.field),
        visitor=args.visitor,
        session_cookie=args.session_cookie,
        as_recorded=args.as_recorded,
        start=start,
        until=_duration("--until", args.until, positive=True) if args.until else None,
        behaviour=behaviour,
        seed=args.seed,
        replicas=args.replicas,
        store=args.store,
        exact=args.exact,
        every=_duration("--every", args.every, positive=True),
        against=args.against,
        path=args.path,
        host=args.host,
        changes=list(args.change),
        outage=args.outage,
    )


def _duration(name: str, text: str, *, positive: bool = False) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise SimulationError(f"{name}: {e}") from None
    if positive and seconds <= 0:
        raise SimulationError(f"{name}: must be more than 0")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        options = options_from(args)
        run = asyncio.run(simulate(options))
    except SimulationError as e:
        print(f"waitroom simulate: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("waitroom simulate: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: one line, with what to report, rather than a traceback
        where = e.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        place = f" at {Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}" if where else ""
        print(
            f"waitroom simulate: internal error {type(e).__name__}{place} (a bug in waitroom: please "
            "report it with the command line)",
            file=sys.stderr,
        )
        return 1
    report = None if args.no_report else Path(args.report)
    if report is not None:
        try:
            report.write_text(html_report(run), encoding="utf-8")
        except OSError as e:
            print(f"waitroom simulate: {report}: cannot write: {e.strerror or e}", file=sys.stderr)
            return 1
    if args.json:
        text = json.dumps(as_json(run), indent=1, allow_nan=False)
        if args.json == "-":
            print(text)
        else:
            try:
                Path(args.json).write_text(text + "\n", encoding="utf-8")
            except OSError as e:
                print(f"waitroom simulate: {args.json}: cannot write: {e.strerror or e}", file=sys.stderr)
                return 1
    if not args.quiet and args.json != "-":
        try:
            for line in run.requests:
                print(line)
            print(summary_text(run, str(report) if report else None))
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
