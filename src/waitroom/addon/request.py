"""What a request is judged as, read from a mitmproxy flow: its target and authority (in the form
the upstream receives), its cookies and its peer."""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import http

from waitroom.addon.runtime import Loaded
from waitroom.web.target import Refused, judge_authority, judge_target, normalize_authority


def judge(flow: http.HTTPFlow, loaded: Loaded, max_header_bytes: int, keep_host: bool) -> tuple[str, str]:
    """(host, path) as decided on, which are also what the upstream receives: the target is
    put in its canonical form (or refused), and the one authority the request names is the
    one that goes on. `keep_host`: mitmproxy's keep_host_header. Raises Refused (web/target.py)."""
    req = flow.request
    size = 0
    for name, value in req.headers.fields:
        size += len(name) + len(value) + 4
    if size > max_header_bytes:
        raise Refused(431, "the request headers are too large", "headers")
    target = judge_target(req.path)
    http1 = not (req.is_http2 or req.is_http3)
    absolute = req.authority if not http1 or req.authority else ""
    if keep_host or not flow.live:
        hosts = req.headers.get_all("host")
        authority = judge_authority(hosts, absolute, required=loaded.needs_host)
        if http1 and req.authority:
            if not hosts:
                req.headers["Host"] = authority
            req.authority = ""  # origin form: the upstream sees the authority we judged, once
    else:
        # mitmproxy already put the upstream's name in Host; a client's absolute-form authority
        # is neither judged nor forwarded.
        if http1 and req.authority:
            req.authority = ""
        authority = req.host_header or req.host
    if target.forwarded != req.path:
        req.path = target.forwarded
    return normalize_authority(authority), target.routing


def cookie_reader(req: http.Request) -> Callable[[str], list[str]]:
    """`name` → every value the Cookie headers carry under it. A plain split, linear in the
    header's size (which max_header_bytes bounds), instead of mitmproxy's full cookie parser."""

    def values(name: str) -> list[str]:
        found = []
        for header in req.headers.get_all("cookie"):
            for pair in header.split(";"):
                key, sep, value = pair.partition("=")
                if sep and key.strip() == name:
                    found.append(value.strip().strip('"'))
        return found

    return values


def peer(flow: http.HTTPFlow) -> str:
    address = flow.client_conn.peername
    return str(address[0]) if address else ""
