"""What the upstream will receive: the request target and the authority, judged once.

The proxy decides on a path and a host; the upstream serves a path and routes by a host. When the
two can differ, a client can be judged outside a room and served inside it. So a request target is
either put in one canonical form, which is what the proxy judges *and* what it forwards, or it is
refused when no canonical form exists without guessing how the upstream would read it:

- refused (400): dot segments (`.`, `..`, also percent-encoded), backslashes (raw or `%5C`),
  encoded slashes (`%2F`), invalid percent-escapes, bytes that are not UTF-8 once decoded, control
  characters (raw or encoded, NUL included), a fragment; a target longer than MAX_TARGET (414);
- canonicalised (forwarded in this form): runs of `/` fold into one, and each segment is
  re-encoded in one spelling (`%73hop` → `shop`, `é` → `%C3%A9`). The query is forwarded unchanged.

The authority: exactly one Host header (or HTTP/2 `:authority`); an absolute-form target's authority
must agree with Host, and the request goes on in origin form with that one authority. When the
config matches on hosts, a request that names no host at all is refused too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

MAX_TARGET = 8192
"""Longest request target accepted (nginx's default header buffer holds 8 KB)."""
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"
"""RFC 3986 pchar beside unreserved: kept as they are when a segment is re-encoded."""
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Refused(Exception):
    """A request the proxy will not guess about: `status` and a short reason (never the input)."""

    def __init__(self, status: int, reason: str, kind: str = "target") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind
        """What was wrong, as a metric label: target, authority or headers."""


@dataclass(frozen=True, slots=True)
class Target:
    routing: str
    """The decoded path the rooms, bypass prefixes and rules are matched against."""
    forwarded: str
    """The target (path and query) the upstream receives."""


def _decode_segment(segment: str) -> str:
    """A raw path segment, percent-decoded strictly; Refused when it has no single reading."""
    if "\\" in segment:
        raise Refused(400, "backslash in the request path")
    if "%" in segment and segment.count("%") != len(_ESCAPE.findall(segment)):
        raise Refused(400, "invalid percent-escape in the request path")
    # Raw bytes that were not UTF-8 arrive as surrogate escapes (mitmproxy decodes with
    # surrogateescape); encoding them back gives the client's bytes, which must be UTF-8.
    try:
        decoded = _unescape(segment.encode("utf-8", "surrogateescape")).decode("utf-8")
    except (UnicodeError, ValueError):
        raise Refused(400, "the request path is not UTF-8") from None
    if "/" in decoded or "\\" in decoded:
        raise Refused(400, "encoded slash or backslash in the request path")
    if _CONTROL.search(decoded):
        raise Refused(400, "control character in the request path")
    if decoded in (".", ".."):
        raise Refused(400, "dot segment in the request path")
    return decoded


_BYTE_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unescape(raw: bytes) -> bytes:
    return _BYTE_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


def judge_target(target: str) -> Target:
    """The canonical form of a request target (origin form, or `*`); Refused when it has none."""
    if len(target) > MAX_TARGET:
        raise Refused(414, "the request target is too long")
    if target == "*":  # OPTIONS *: the server as a whole; matched as the root
        return Target("/", target)
    if "#" in target:
        raise Refused(400, "fragment in the request target")
    path, sep, query = target.partition("?")
    if not path.startswith("/"):
        raise Refused(400, "the request path does not start with /")
    if _CONTROL.search(query) or " " in query:
        raise Refused(400, "control character in the query")
    segments = [_decode_segment(s) for s in path[1:].split("/")]
    kept = [s for s in segments if s]
    trailing = "/" if kept and path.endswith("/") else ""
    routing = "/" + "/".join(kept) + trailing
    forwarded = "/" + "/".join(quote(s, safe=_PCHAR_SAFE) for s in kept) + trailing + (sep + query)
    return Target(routing, forwarded)


def canonical_prefix(prefix: str) -> str:
    """A config path prefix as routing compares it; ValueError (one line) when it is not already in
    that form, since a prefix no request can take would silently switch its room or rule off."""
    try:
        routing = judge_target(prefix).routing
    except Refused as e:
        raise ValueError(f"not a usable path prefix: {e.reason}") from None
    if routing != prefix:
        raise ValueError(f"not in normal form: write {routing!r}")
    return prefix


def judge_authority(hosts: list[str], absolute: str, *, required: bool) -> str:
    """The one authority a request names: its Host header(s) (`hosts`) and the authority of an
    absolute-form or HTTP/2 target (`absolute`, empty when none). Refused when they disagree, when
    Host is repeated, or (`required`) when there is none."""
    if len(hosts) > 1:
        raise Refused(400, "more than one Host header", "authority")
    host = hosts[0].strip() if hosts else ""
    absolute = absolute.strip()
    if host and absolute and normalize_authority(host) != normalize_authority(absolute):
        raise Refused(400, "the request target's authority and the Host header disagree", "authority")
    authority = absolute or host
    if _CONTROL.search(authority) or " " in authority or len(authority) > 512:
        raise Refused(400, "invalid Host", "authority")
    if required and not authority:
        raise Refused(400, "the request names no host", "authority")
    return authority


def normalize_authority(authority: str) -> str:
    """`Shop.Example.com.:443` → `shop.example.com`; IPv6 literals keep their brackets."""
    host = authority.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return (host.rsplit(":", 1)[0] if ":" in host else host).rstrip(".")


def covers(prefix: str, path: str) -> bool:
    """True when `path` (without query) lies under `prefix`, by whole path segments."""
    if prefix.endswith("/"):
        return path.startswith(prefix) or path == prefix[:-1]
    return path == prefix or path.startswith(prefix + "/")
