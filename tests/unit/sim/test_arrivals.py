"""sim/arrivals.py and sim/visits.py: every format's fields, the tally of what was skipped and why,
one clear line for an input that cannot be used, and recorded requests grouped into visits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waitroom.config.schema import parse_config
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.sim.arrivals import ArrivalsError, JsonFields, Reader, VisitorKey, sniff
from waitroom.sim.visits import build_visits
from waitroom.store.memory import MemoryStore

FLOWS = Path(__file__).resolve().parents[2] / "flows"
CONFIG = parse_config(
    {
        "rooms": [
            {
                "name": "shop",
                "match": {"path_prefix": "/shop"},
                "new_sessions": 2,
                "window": "10s",
                "status": 503,
            }
        ],
        "rate_limits": [{"name": "api", "match": {"path_prefix": "/api"}, "limit": 5, "per": "1m"}],
    }
)
COMBINED = (
    '203.0.113.7 - - [10/Oct/2026:13:55:36 -0700] "GET /shop/item?id=3 HTTP/1.1" 200 2326 '
    '"https://example.com/" "Mozilla/5.0 (X11)"'
)
COMMON = '198.51.100.2 - frank [10/Oct/2026:13:55:37 -0700] "POST /shop/cart HTTP/1.0" 303 0'
ENVOY = (
    '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" '
    '"nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"'
)
ISTIO = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" '
    '"curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" '
    "outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 "
    "- default"
)


def read(tmp_path: Path, name: str, text: str | bytes, **options: object) -> tuple[list, Reader]:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    reader = Reader(CONFIG, **options)  # type: ignore[arg-type]
    return reader.read([path]), reader


def test_combined_and_common_lines(tmp_path: Path) -> None:
    hits, reader = read(tmp_path, "access.log", f"{COMBINED}\n{COMMON}\n")
    first, second = hits
    assert reader.tallies[0].format == "combined"
    assert (first.method, first.path, first.status, first.client) == ("GET", "/shop/item", 200, "203.0.113.7")
    assert first.user_agent == "Mozilla/5.0 (X11)"
    assert first.at == 1791665736.0  # 13:55:36 -0700 is 20:55:36Z
    assert (second.method, second.path, second.status, second.user_agent) == ("POST", "/shop/cart", 303, "")


def test_envoy_and_istio_default_lines(tmp_path: Path) -> None:
    hits, reader = read(tmp_path, "envoy.log", f"{ENVOY}\n{ISTIO}\n")
    assert reader.tallies[0].format == "envoy"
    envoy, istio = hits
    assert (envoy.method, envoy.path, envoy.status, envoy.user_agent) == (
        "POST",
        "/api/v1/locations",
        204,
        "nsq2http",
    )
    assert (envoy.client, envoy.host, envoy.at) == ("10.0.35.28", "locations", 1460751420.31)
    assert (istio.client, istio.host, istio.user_agent, istio.status) == (
        "10.44.1.23",
        "httpbin",  # judged as the proxy judges an authority: without the port
        "curl/7.73.0-DEV",
        418,
    )


def test_jsonl_aliases_and_field_overrides(tmp_path: Path) -> None:
    lines = [
        {
            "time": "2026-10-10T20:55:36.5Z",
            "client_ip": "192.0.2.1:5555",
            "method": "GET",
            "path": "/shop?x=1",
            "status": 200,
            "user_agent": "UA",
            "cookies": ["app", "waitroom_shop"],
            "poll": False,
        },
        {
            "@timestamp": 1791665737000,
            "remote_addr": "192.0.2.2",
            "request": "PUT /shop/cart HTTP/1.1",
            "response_code": "503",
            "http_user_agent": "UA2",
            "authority": "Shop.Example:443",
        },
        {"ts": 1791665738.25, "x_forwarded_for": "192.0.2.3, 10.0.0.1", "uri": "/api/x", "visitor": "u-17"},
        {"when": 1791665739, "where": "/shop/other", "who": "192.0.2.4"},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    hits, reader = read(
        tmp_path,
        "events.jsonl",
        text,
        fields=JsonFields(["time=when", "path=where", "client=who"]),
        session_cookie="app",
        key=VisitorKey("field:visitor"),
    )
    a, b, c, d = hits
    assert (a.at, a.client, a.path, a.status, a.cookie, a.poll) == (
        1791665736.5,
        "192.0.2.1",
        "/shop",
        200,
        True,
        False,
    )
    assert (b.at, b.method, b.path, b.status, b.user_agent, b.host) == (
        1791665737.0,
        "PUT",
        "/shop/cart",
        503,
        "UA2",
        "shop.example",
    )
    assert (c.at, c.client, c.path) == (1791665738.25, "192.0.2.3", "/api/x")
    assert c.visitor != "u-17"
    assert len(c.visitor) == 24
    assert (d.at, d.path, d.client) == (1791665739.0, "/shop/other", "192.0.2.4")
    assert not reader.tallies[0].skipped


def test_same_second_requests_are_spread_evenly(tmp_path: Path) -> None:
    lines = [COMBINED.replace("/shop/item?id=3", f"/shop/{i}") for i in range(4)] + [COMMON]
    hits, _ = read(tmp_path, "access.log", "\n".join(lines))
    assert [h.at - 1791665736 for h in hits] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [h.path for h in hits[:4]] == ["/shop/0", "/shop/1", "/shop/2", "/shop/3"]


def test_bad_lines_are_counted_by_reason_and_skipped(tmp_path: Path) -> None:
    lines = [
        COMBINED,
        "garbage",
        COMBINED.replace("10/Oct/2026", "40/Foo/2026"),
        COMBINED.replace('" 200 ', '" 9999 '),
        COMBINED.replace("/shop/item?id=3", "/shop/../../etc"),
        "x" * 70_000,
        COMMON,
        "",
    ]
    raw = "\n".join(lines).encode() + b"\n\xff\xfe not utf-8\n"
    hits, reader = read(tmp_path, "access.log", raw, format="combined")
    tally = reader.tallies[0]
    assert len(hits) == 2
    assert tally.read == 8
    assert dict(tally.skipped) == {
        "not combined": 1,
        "bad time": 1,
        "bad status": 1,
        "path refused": 1,
        "too long (>64 KiB)": 1,
        "not UTF-8": 1,
    }
    assert tally.first_bad["not combined"] == 2
    text = tally.describe()
    assert "\n" not in text
    assert "6 skipped" in text
    assert "not combined: first at line 2" in text


def test_inputs_that_cannot_be_used_get_one_line(tmp_path: Path) -> None:
    cases = {
        "missing.log": None,
        "garbage.log": b"hello\nworld\n",
        "empty.log": b"",
        "flows.mitm": b"this is not a flow file",
        "all-bad.log": (COMBINED.replace("10/Oct", "99/Oct") + "\n").encode() * 3,
    }
    messages = {}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ArrivalsError) as caught:
            Reader(CONFIG, format="combined" if name == "all-bad.log" else "auto").read([path])
        messages[name] = str(caught.value)
    assert all("\n" not in m and m.startswith(str(tmp_path)) for m in messages.values())
    assert messages["missing.log"].endswith("cannot read: No such file or directory")
    assert messages["garbage.log"].endswith("not a format simulate reads (first line: 'hello'); use --format")
    assert messages["empty.log"].endswith("empty")
    assert "not a mitmproxy flow file" in messages["flows.mitm"]
    assert (
        "no line could be read as combined (3 read; the first, line 1, is bad time)"
        in messages["all-bad.log"]
    )


def test_flows_and_a_truncated_flow_file(tmp_path: Path) -> None:
    whole = (FLOWS / "room-journey.mitm").read_bytes()
    hits, reader = read(tmp_path, "journey.mitm", whole)
    assert len(hits) == 14
    assert reader.tallies[0].truncated is None
    assert [h.proxy_answered for h in hits[:6]] == [False, False, False, True, True, True]
    assert hits[5].poll is True
    assert all(h.flow for h in hits)
    cut, reader = read(tmp_path, "cut.mitm", whole[: len(whole) // 2])
    assert 0 < len(cut) < 14
    assert reader.tallies[0].truncated
    assert reader.tallies[0].truncated.startswith("truncated after")


def test_gzip_and_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "access.log.gz"
    path.write_bytes(gzip.compress(f"{COMBINED}\n{COMMON}\n".encode()))
    assert sniff(path) == "combined"
    assert len(Reader(CONFIG).read([path])) == 2
    (tmp_path / "x.txt").write_text(ENVOY)
    assert sniff(tmp_path / "x.txt") == "envoy"
    (tmp_path / "x.log").write_text(json.dumps({"time": 1, "path": "/"}))
    assert sniff(tmp_path / "x.log") == "jsonl"
    (tmp_path / "flows").write_bytes((FLOWS / "release.mitm").read_bytes())
    assert sniff(tmp_path / "flows") == "mitm"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), fmt=st.sampled_from(["auto", "combined", "envoy", "jsonl", "mitm"]))
def test_no_bytes_make_a_reader_raise(tmp_path: Path, data: bytes, fmt: str) -> None:
    path = tmp_path / "input.log"
    path.write_bytes(data)
    message = ""
    try:
        Reader(CONFIG, format=fmt).read([path])  # type: ignore[arg-type]
    except ArrivalsError as e:
        message = str(e)
    assert "\n" not in message


def limiter() -> RateLimiter:
    return RateLimiter(CONFIG, MemoryStore(), None, lambda: 0.0)


def test_old_proxy_answers_are_dropped_but_the_arrival(tmp_path: Path) -> None:
    """A log without `poll`: the recording proxy's 503s before the visitor's first 2xx are its wait
    page and refreshes; the first stays (the arrival), the rest of the visit follows admission."""
    line = '192.0.2.9 - - [10/Oct/2026:13:55:{s:02d} -0700] "GET {p} HTTP/1.1" {st} 10 "-" "UA"'
    lines = [
        line.format(s=0, p="/", st=200),  # covered by nothing: not part of the visit
        line.format(s=1, p="/shop", st=503),  # the arrival
        line.format(s=6, p="/shop", st=503),  # the old page's refreshes: dropped
        line.format(s=11, p="/shop", st=503),
        line.format(s=16, p="/shop", st=200),  # in, at the old proxy: the candidate's reload stands for it
        line.format(s=20, p="/shop/cart", st=200),
        line.format(s=25, p="/shop/pay", st=503),  # after being in: a page like any other
    ]
    hits, _ = read(tmp_path, "access.log", "\n".join(lines))
    (visit,) = build_visits(hits, CONFIG, limiter())
    assert visit.first is not None
    assert visit.first.path == "/shop"
    assert visit.at == hits[1].at
    assert [(offset, hit.path) for offset, hit in visit.pages] == [(4.0, "/shop/cart"), (9.0, "/shop/pay")]


def test_visits_split_on_session_ttl_and_need_a_room_or_rule(tmp_path: Path) -> None:
    line = '192.0.2.9 - - [10/Oct/2026:{h:02d}:00:00 -0700] "GET {p} HTTP/1.1" 200 10 "-" "UA"'
    hits, _ = read(tmp_path, "a.log", "\n".join(line.format(h=h, p="/shop") for h in (10, 11)))
    assert len(build_visits(hits, CONFIG, limiter())) == 2  # an hour apart: session.ttl is 30m
    hits, _ = read(tmp_path, "b.log", "\n".join(line.format(h=10, p=p) for p in ("/", "/about", "/about")))
    with pytest.raises(
        ArrivalsError,
        match=r"no request falls under a room or rule of the config \(3 read; most seen: /about 2, / 1\)",
    ):
        build_visits(hits, CONFIG, limiter())
