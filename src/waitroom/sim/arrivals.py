"""Where the simulated visitors come from: recorded flows, access logs, or a crowd (crowd.py).

Every reader yields `Hit`s and counts what it read and skipped in a `Tally`; a line it cannot read
is counted by reason and skipped, never raised. The formats and the fields each one reads:

- `mitm`: mitmproxy flow files (`mitmdump -w`, the files flow replay reads): the request's time
  (`timestamp_start`), the client (the TCP peer, or X-Forwarded-For as `client_ip` says), method,
  Host, path, User-Agent, the Cookie header, the answer's status and what the recording proxy
  decided (flow metadata).
- `combined`: nginx's and Apache's combined format (`common` too; trailing fields are ignored):
  `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
  "$http_user_agent"`. Times are whole seconds: the n requests of one second are spread over it.
- `envoy`: Envoy's default access log format, and Istio's default (the ingress gateway's): the
  start time, request line, response code, X-Forwarded-For, User-Agent and :authority; Istio's
  downstream remote address when it is there.
- `jsonl`: one JSON object per line (Envoy's or Istio's JSON encoding, Fluent Bit, your own); the
  first key present wins, `--field NAME=KEY` names another (see FIELDS).

Paths go through the proxy's own target rules (web/target.py): a path the proxy would refuse is
counted as `path refused`, and hosts are normalised as the proxy does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

from waitroom.config.schema import Config
from waitroom.web.client import request_ip
from waitroom.web.target import Refused, judge_target, normalize_authority

Format = Literal["auto", "mitm", "combined", "envoy", "jsonl"]
FORMATS: tuple[str, ...] = ("auto", "mitm", "combined", "envoy", "jsonl")
MAX_LINE = 64 * 1024
MAX_LINES = 2_000_000
"""Lines (or flows) read per run, over all inputs (about 200 bytes of memory each): what is left
is not read, and the tally says so."""
SNIFF_LINES = 20
SNIFF_BYTES = 64 * 1024


class ArrivalsError(Exception):
    """An input that cannot be used at all: one line for the operator."""


@dataclass(slots=True)
class Hit:
    """One recorded request."""

    at: float
    visitor: str
    """The visitor's key (see VisitorKey); never printed."""
    method: str
    host: str
    path: str
    status: int | None
    user_agent: str
    client: str
    cookie: bool | None = None
    """It carried the `--session-cookie` (None: the input does not say)."""
    poll: bool | None = None
    """The wait page's poll (None: the input does not say)."""
    proxy_answered: bool = False
    """The recording proxy answered it itself (its wait page, its poll answer): mitm only."""
    cookie_header: str = ""
    """The recorded Cookie header (mitm: used as recorded by --as-recorded)."""
    headers: dict[str, str] | None = None
    """Other request headers (lower-case), for rules keyed on them (mitm)."""
    recorded_ids: tuple[str, ...] = ()
    """Session ids the recorded answer gave out (mitm), handed to the deciders as replay does."""
    command: str | None = None
    """The upstream's `Waitroom-Command` in the recording (mitm)."""
    flow: bool = False
    """From a flow file: --as-recorded sends its recorded cookies."""
    source: int = 0
    """Which input it came from (index)."""
    line: int = 0


@dataclass(slots=True)
class Tally:
    """What one input gave: lines read, lines skipped by reason (with the first of each)."""

    name: str
    format: str = ""
    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_bad: dict[str, int] = field(default_factory=dict)
    truncated: str | None = None
    """Why reading stopped early (a truncated flow file, the line bound)."""

    def skip(self, reason: str, line: int) -> None:
        self.skipped[reason] += 1
        self.first_bad.setdefault(reason, line)

    @property
    def used(self) -> int:
        return self.read - sum(self.skipped.values())

    def describe(self) -> str:
        text = f"{self.name}: {self.read:,} {'flows' if self.format == 'mitm' else 'lines'} ({self.format})"
        if self.skipped:
            parts = [
                f"{n:,} {reason}" + (f": first at line {self.first_bad[reason]:,}" if n else "")
                for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            ]
            text += f"; {sum(self.skipped.values()):,} skipped ({'; '.join(parts)})"
        if self.truncated:
            text += f"; {self.truncated}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "read": self.read,
            "skipped": dict(self.skipped),
            "first_bad_line": self.first_bad,
            "truncated": self.truncated,
        }


# --- keys ----------------------------------------------------------------------------------------

FIELDS: dict[str, tuple[str, ...]] = {
    "time": ("time", "timestamp", "start_time", "@timestamp", "ts"),
    "client": ("client", "client_ip", "remote_addr", "downstream_remote_address"),
    "x_forwarded_for": ("x_forwarded_for", "forwarded_for", "http_x_forwarded_for"),
    "method": ("method", "request_method"),
    "host": ("host", "authority", "http_host"),
    "path": ("path", "uri", "request_uri", "url"),
    "request": ("request",),
    "status": ("status", "response_code", "status_code"),
    "user_agent": ("user_agent", "http_user_agent", "ua"),
    "cookie": ("cookie", "has_cookie"),
    "cookies": ("cookies",),
    "visitor": ("visitor", "session"),
    "poll": ("poll",),
}
"""JSON lines: each field is read from the first of its keys present (`--field NAME=KEY` puts KEY
first). `time`: RFC 3339, or Unix seconds (milliseconds above 1e11); `client`: a port is dropped;
without it, the first X-Forwarded-For hop; `path`: a query is dropped; `request`: "GET /x HTTP/1.1"
when there is no method and path; `cookie`: true when the request carried the --session-cookie;
`cookies`: the names it carried; `visitor`: an explicit visitor key (hashed at once); `poll`: true
for the wait page's polls (dropped in the behaviour model: the candidate's own page polls)."""


class VisitorKey:
    """How recorded requests are grouped into visitors: `ip+ua` (default), `ip`, or `field:NAME`
    (a JSON-lines field, e.g. `field:visitor`)."""

    def __init__(self, spec: str = "ip+ua") -> None:
        if spec not in ("ip+ua", "ip") and not (spec.startswith("field:") and len(spec) > 6):
            raise ArrivalsError(f"--visitor: {spec!r} is not ip+ua, ip or field:NAME")
        self.spec = spec
        self.field = spec[6:] if spec.startswith("field:") else None

    def key(self, client: str, user_agent: str, explicit: str | None) -> str:
        if self.field is not None:
            return _hashed(explicit) if explicit else client + "\0" + user_agent
        return client if self.spec == "ip" else client + "\0" + user_agent


def _hashed(value: str) -> str:
    return hashlib.blake2b(value.encode(), digest_size=12).hexdigest()


# --- lines -----------------------------------------------------------------------------------------


def _open(path: Path) -> BinaryIO:
    try:
        f = path.open("rb")
    except OSError as e:
        raise ArrivalsError(f"{path}: cannot read: {e.strerror or e}") from None
    if f.read(2) == b"\x1f\x8b":
        f.close()
        return cast(BinaryIO, gzip.GzipFile(path, "rb"))
    f.seek(0)
    return f


def _lines(f: IO[bytes], tally: Tally, budget: list[int]) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-empty lines; too long or not UTF-8: counted, skipped."""
    number = 0
    try:
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # the rest of the line, in bounded pieces
                    raw = f.readline(MAX_LINE + 1)
                tally.read += 1
                tally.skip("too long (>64 KiB)", number)
                continue
            if not raw.strip():
                continue
            if budget[0] <= 0:
                tally.truncated = f"stopped after {MAX_LINES:,} lines in all"
                return
            budget[0] -= 1
            tally.read += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                tally.skip("not UTF-8", number)
                continue
            yield number, text.rstrip("\r\n")
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        tally.truncated = f"reading stopped at line {number + 1:,}: {e}"


# --- formats ----------------------------------------------------------------------------------------

_COMBINED = re.compile(
    r'^(?P<client>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\S+) \S+'
    r'(?: "(?P<referer>[^"]*)" "(?P<ua>[^"]*)")?'
)
_ENVOY = re.compile(r'^\[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\S+) (?P<rest>.*)$')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}


@dataclass(slots=True)
class Fields:
    """One log line's fields, before judging."""

    at: float
    whole_second: bool
    client: str
    method: str
    target: str
    status: int | None
    user_agent: str = ""
    host: str = ""
    forwarded_for: str | None = None
    cookie: bool | None = None
    visitor: str | None = None
    poll: bool | None = None


class LineError(Exception):
    """A line this format cannot read; the message is the reason it is counted under."""


def _request_line(text: str) -> tuple[str, str]:
    parts = text.split(" ")
    if len(parts) < 2 or not parts[0].isalpha():
        raise LineError("bad request line")
    return parts[0].upper(), parts[1]


def _status(text: Any) -> int | None:
    if text in ("-", None, ""):
        return None
    try:
        status = int(text)
    except (TypeError, ValueError):
        raise LineError("bad status") from None
    if not 100 <= status <= 599:
        raise LineError("bad status")
    return status


_time_cache: dict[str, float] = {}


def _clf_time(text: str) -> float:
    """`10/Oct/2000:13:55:36 -0700` → Unix time."""
    cached = _time_cache.get(text)
    if cached is not None:
        return cached
    m = re.fullmatch(r"(\d{1,2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", text)
    if m is None or m.group(2) not in _MONTHS:
        raise LineError("bad time")
    try:
        moment = datetime(
            int(m.group(3)),
            _MONTHS[m.group(2)],
            int(m.group(1)),
            int(m.group(4)),
            int(m.group(5)),
            int(m.group(6)),
            tzinfo=UTC,
        )
    except ValueError:
        raise LineError("bad time") from None
    offset = (int(m.group(8)) * 3600 + int(m.group(9)) * 60) * (1 if m.group(7) == "+" else -1)
    value = moment.timestamp() - offset
    if len(_time_cache) > 100_000:
        _time_cache.clear()
    _time_cache[text] = value
    return value


def _iso_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LineError("bad time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_combined(line: str) -> Fields:
    m = _COMBINED.match(line)
    if m is None:
        raise LineError("not combined")
    method, target = _request_line(m.group("request"))
    return Fields(
        _clf_time(m.group("time")),
        True,
        m.group("client"),
        method,
        target,
        _status(m.group("status")),
        user_agent=_dash(m.group("ua") or ""),
    )


def parse_envoy(line: str) -> Fields:
    """Envoy's default format, or Istio's (which adds fields: the downstream remote address)."""
    m = _ENVOY.match(line)
    if m is None:
        raise LineError("not envoy")
    method, target = _request_line(m.group("request"))
    rest = m.group("rest")
    quoted = _QUOTED.findall(rest)
    if len(quoted) >= 6:  # Istio: "upstream failure" "xff" "ua" "id" "authority" "upstream host" …
        xff, ua, authority = quoted[1], quoted[2], quoted[4]
        tail = rest[rest.rfind('"') + 1 :].split()
        peer = _without_port(tail[3]) if len(tail) >= 4 else ""
    elif len(quoted) >= 4:  # Envoy: "xff" "ua" "id" "authority" "upstream host"
        xff, ua, authority = quoted[0], quoted[1], quoted[3]
        peer = ""
    else:
        raise LineError("not envoy")
    xff = _dash(xff)
    if not peer:
        hops = [h.strip() for h in xff.split(",") if h.strip()]
        peer = hops[-1] if hops else ""
    return Fields(
        _iso_time(m.group("time")),
        False,
        peer,
        method,
        target,
        _status(m.group("status")),
        user_agent=_dash(ua),
        host=_dash(authority),
        forwarded_for=xff or None,
    )


def _dash(text: str) -> str:
    return "" if text == "-" else text


def _without_port(address: str) -> str:
    if address.startswith("["):  # [::1]:443
        return address[1 : address.find("]")] if "]" in address else address
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else address


class JsonFields:
    """Which key each field is read from in JSON lines (FIELDS, with `--field` overrides first)."""

    def __init__(self, overrides: Sequence[str] = ()) -> None:
        self.keys = {name: list(keys) for name, keys in FIELDS.items()}
        for spec in overrides:
            name, sep, key = spec.partition("=")
            if not sep or name not in FIELDS or not key:
                raise ArrivalsError(f"--field: {spec!r} is not NAME=KEY with NAME one of {', '.join(FIELDS)}")
            self.keys[name].insert(0, key)

    def get(self, record: dict[str, Any], name: str) -> Any:
        for key in self.keys[name]:
            value = record.get(key)
            if value is not None:
                return value
        return None


def parse_jsonl(line: str, fields: JsonFields, session_cookie: str | None) -> Fields:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        raise LineError("not jsonl") from None
    if not isinstance(record, dict):
        raise LineError("not jsonl")
    raw_time = fields.get(record, "time")
    if isinstance(raw_time, bool) or raw_time is None:
        raise LineError("bad time")
    if isinstance(raw_time, int | float):
        at = float(raw_time) / 1000 if raw_time > 1e11 else float(raw_time)
        if not 0 < at < 1e11:
            raise LineError("bad time")
    elif isinstance(raw_time, str):
        at = _iso_time(raw_time)
    else:
        raise LineError("bad time")
    method, target = _text(fields.get(record, "method")), _text(fields.get(record, "path"))
    if not target:
        request = _text(fields.get(record, "request"))
        if not request:
            raise LineError("no path")
        method, target = _request_line(request)
    xff = _text(fields.get(record, "x_forwarded_for")) or None
    client = _without_port(_text(fields.get(record, "client")))
    if not client and xff:
        client = xff.split(",")[0].strip()
    cookie = fields.get(record, "cookie")
    names = fields.get(record, "cookies")
    carried: bool | None = cookie if isinstance(cookie, bool) else None
    if session_cookie and isinstance(names, list):
        carried = session_cookie in names
    elif session_cookie and isinstance(names, str):
        carried = session_cookie in [n.strip() for n in names.replace(";", ",").split(",")]
    poll = fields.get(record, "poll")
    visitor = fields.get(record, "visitor")
    return Fields(
        at,
        False,
        client,
        (method or "GET").upper(),
        target,
        _status(fields.get(record, "status")),
        user_agent=_text(fields.get(record, "user_agent")),
        host=_text(fields.get(record, "host")),
        forwarded_for=xff,
        cookie=carried,
        visitor=str(visitor) if visitor is not None else None,
        poll=poll if isinstance(poll, bool) else None,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- reading --------------------------------------------------------------------------------------------


@dataclass
class Reader:
    """Reads every input of a run into hits (merged by time) and one tally per input."""

    config: Config
    format: Format = "auto"
    fields: JsonFields = field(default_factory=JsonFields)
    key: VisitorKey = field(default_factory=VisitorKey)
    session_cookie: str | None = None
    tallies: list[Tally] = field(default_factory=list)
    _budget: list[int] = field(default_factory=lambda: [MAX_LINES])

    def read(self, paths: Sequence[Path]) -> list[Hit]:
        hits: list[Hit] = []
        for source, path in enumerate(paths):
            tally = Tally(str(path))
            self.tallies.append(tally)
            fmt = self.format if self.format != "auto" else sniff(path)
            tally.format = fmt
            if fmt == "mitm":
                hits.extend(self._mitm(path, source, tally))
            else:
                hits.extend(self._log(path, fmt, source, tally))
            if tally.read and not tally.used:
                first = min(tally.first_bad.items(), key=lambda kv: kv[1])
                raise ArrivalsError(
                    f"{path}: no line could be read as {fmt} ({tally.read:,} read; the first, line "
                    f"{first[1]:,}, is {first[0]}); use --format"
                )
        hits.sort(key=lambda h: (h.at, h.source, h.line))
        return hits

    def _log(self, path: Path, fmt: str, source: int, tally: Tally) -> list[Hit]:
        out: list[Hit] = []
        with _open(path) as f:
            for number, text in _lines(f, tally, self._budget):
                try:
                    if fmt == "combined":
                        parsed = parse_combined(text)
                    elif fmt == "envoy":
                        parsed = parse_envoy(text)
                    else:
                        parsed = parse_jsonl(text, self.fields, self.session_cookie)
                except LineError as e:
                    tally.skip(str(e), number)
                    continue
                hit = self._hit(parsed, source, number, tally)
                if hit is not None:
                    out.append(hit)
        if fmt == "combined":
            spread_seconds(out)
        return out

    def _hit(self, parsed: Fields, source: int, number: int, tally: Tally) -> Hit | None:
        try:
            path = judge_target(parsed.target).routing
        except Refused:
            tally.skip("path refused", number)
            return None
        header = {"x-forwarded-for": parsed.forwarded_for} if parsed.forwarded_for else {}
        client = request_ip(self.config.client_ip, parsed.client, lambda n: header.get(n.lower()))
        return Hit(
            parsed.at,
            self.key.key(client, parsed.user_agent, parsed.visitor),
            sys.intern(parsed.method),
            sys.intern(normalize_authority(parsed.host)) if parsed.host else "",
            sys.intern(path),  # a log repeats a few paths and agents many times: kept once each
            parsed.status,
            sys.intern(parsed.user_agent),
            client,
            cookie=parsed.cookie,
            poll=parsed.poll,
            headers=header or None,
            source=source,
            line=number,
        )

    def _mitm(self, path: Path, source: int, tally: Tally) -> list[Hit]:
        from mitmproxy import http, io
        from mitmproxy.exceptions import FlowReadException

        out: list[Hit] = []
        try:
            f = path.open("rb")
        except OSError as e:
            raise ArrivalsError(f"{path}: cannot read: {e.strerror or e}") from None
        with f:
            try:
                for flow in io.FlowReader(f).stream():
                    if self._budget[0] <= 0:
                        tally.truncated = f"stopped after {MAX_LINES:,} flows in all"
                        break
                    self._budget[0] -= 1
                    tally.read += 1
                    if not isinstance(flow, http.HTTPFlow):
                        tally.skip("not an HTTP flow", tally.read)
                        continue
                    hit = self._flow(flow, source, tally)
                    if hit is not None:
                        out.append(hit)
            except FlowReadException as e:
                if not tally.read:
                    raise ArrivalsError(f"{path}: not a mitmproxy flow file ({e})") from None
                tally.truncated = f"truncated after {tally.read:,} flows ({e})"
            except Exception as e:  # mitmproxy's reader on bytes it did not expect
                if not tally.read:
                    raise ArrivalsError(f"{path}: not a mitmproxy flow file ({type(e).__name__})") from None
                tally.truncated = f"truncated after {tally.read:,} flows ({type(e).__name__})"
        return out

    def _flow(self, flow: Any, source: int, tally: Tally) -> Hit | None:
        req, number = flow.request, tally.read
        try:
            path = judge_target(req.path).routing
        except Refused:
            tally.skip("path refused", number)
            return None
        headers = {k.lower(): v for k, v in req.headers.items(multi=False) if k.lower() != "cookie"}
        peer = flow.client_conn.peername[0] if flow.client_conn and flow.client_conn.peername else ""
        client = request_ip(self.config.client_ip, str(peer), lambda n: headers.get(n.lower()))
        ua = headers.get("user-agent", "")
        cookie_header = "; ".join(req.headers.get_all("cookie"))
        response = flow.response
        meta = flow.metadata.get("waitroom") or {}
        set_cookies = response.headers.get_all("Set-Cookie") if response is not None else []
        recorded_ids = tuple(_recorded_ids(set_cookies, self.config.session.cookie))
        answered = bool(
            meta.get("outcome") == "waiting"
            or (meta.get("rate_limit") or {}).get("outcome") == "limited"
            or (response is not None and "Waitroom-Status" in response.headers)
        )
        names = [pair.split("=", 1)[0].strip() for pair in cookie_header.split(";") if "=" in pair]
        return Hit(
            float(req.timestamp_start),
            self.key.key(client, ua, None),
            req.method.upper(),
            normalize_authority(req.host_header or req.authority or req.host or ""),
            path,
            response.status_code if response is not None else None,
            ua,
            str(peer),
            cookie=(self.session_cookie in names) if self.session_cookie else None,
            poll=req.headers.get("Waitroom-Poll") == "1",
            proxy_answered=answered,
            cookie_header=cookie_header,
            headers=headers,
            recorded_ids=recorded_ids,
            command=meta.get("command"),
            flow=True,
            source=source,
            line=number,
        )


def _recorded_ids(set_cookies: Sequence[str], prefix: str) -> Iterator[str]:
    from waitroom.rooms.sessions import token_session_id

    for header in set_cookies:
        if header.startswith(prefix + "_"):
            token = header.split("=", 1)[1].split(";", 1)[0]
            sid = token_session_id(token)
            if sid:
                yield sid


def spread_seconds(hits: list[Hit]) -> None:
    """Whole-second times: the n requests of one second are placed at i/n of it, in their order."""
    i = 0
    while i < len(hits):
        j = i
        second = hits[i].at
        while j < len(hits) and hits[j].at == second:
            j += 1
        n = j - i
        for k in range(i, j):
            hits[k].at = second + (k - i) / n
        i = j


def sniff(path: Path) -> str:
    """The format of a file: by its extension, then by its first lines."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".mitm", ".flows", ".flow")):
        return "mitm"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    with _open(path) as f:
        try:
            head = f.read(SNIFF_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise ArrivalsError(f"{path}: cannot read: {e}") from None
    if re.match(rb"\d{1,12}:", head):  # a tnetstring: mitmproxy's flow file
        return "mitm"
    lines = [line for line in head.decode("utf-8", "replace").splitlines() if line.strip()][:SNIFF_LINES]
    if not lines:
        raise ArrivalsError(f"{path}: empty")
    scores = {"combined": 0, "envoy": 0, "jsonl": 0}
    jf = JsonFields()
    for text in lines:
        for fmt in scores:
            try:
                if fmt == "combined":
                    parse_combined(text)
                elif fmt == "envoy":
                    parse_envoy(text)
                else:
                    parse_jsonl(text, jf, None)
                scores[fmt] += 1
            except LineError:
                pass
    best = max(scores, key=lambda k: scores[k])
    if scores[best] == 0:
        raise ArrivalsError(
            f"{path}: not a format simulate reads (first line: {lines[0][:80]!r}); use --format"
        )
    return best
