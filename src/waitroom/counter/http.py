"""The request counter's HTTP, without mitmproxy: what a request's path counts as, its
`Idempotency-Key`, whether it wants text, and the answers and problem documents (RFC 9457) sent back.
counter.py is the addon that serves them."""

from __future__ import annotations

import json
import re
from typing import Any

from waitroom.web.answers import Answer

MAX_PATH_BYTES = 1024
"""Longest normalised path that is counted (UTF-8 bytes); longer ones get 414."""
ALLOW = "GET, HEAD, PUT, OPTIONS"
ALLOW_ROOT = "GET, HEAD, OPTIONS"
"""`/` is the total: it is read, never PUT."""
MAX_KEY_BYTES = 255
"""Longest `Idempotency-Key` accepted (its characters, unquoted); longer ones get 400."""
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""`true` on the answer to a PUT whose key was seen before: it is the first answer, counted then."""

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE_KEY = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class BadRequest(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}

    def answer(self) -> Answer:
        return problem(self.status, self.title, self.detail, self.headers)


def path_segments(decoded: str) -> list[str]:
    """A decoded path's segments as a server resolves them: empty and `.` segments go, `..` removes
    the one before it (never above the root)."""
    segments: list[str] = []
    for segment in decoded.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return segments


def counter_path(target: str) -> str:
    """The path a request target counts as.

    - the query string and fragment are ignored;
    - percent-escapes are decoded (`%2F` too, so `/a%2Fb` is `/a/b`); an invalid escape, or bytes
      that are not UTF-8, are a 400;
    - empty and `.` segments go, `..` removes the segment before it (never above `/`);
    - a trailing slash goes: `/a/` is `/a`;
    - case is kept: `/A` and `/a` are two paths;
    - the result must be at most MAX_PATH_BYTES bytes (414) and hold no control characters (400).
    """
    raw = target.split("#", 1)[0].split("?", 1)[0].encode("utf-8", "surrogateescape")
    if len(raw) > 4 * MAX_PATH_BYTES:  # refuse before decoding anything huge
        raise BadRequest(414, "URI Too Long", f"the path is longer than {MAX_PATH_BYTES} bytes")
    if _BAD_ESCAPE.search(raw):
        raise BadRequest(400, "Bad Request", "the path has an invalid percent-escape")
    try:
        decoded = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "Bad Request", "the path is not UTF-8 once percent-decoded") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise BadRequest(400, "Bad Request", "the path holds control characters")
    segments = path_segments(decoded)
    path = "/" + "/".join(segments)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise BadRequest(414, "URI Too Long", f"the path is longer than {MAX_PATH_BYTES} bytes")
    return path


def idempotency_key(values: list[str]) -> str | None:
    """The `Idempotency-Key` of a request (IETF httpapi draft): a Structured Field string
    (`"8e03978e-40d5"`); a bare token (`8e03978e-40d5`) is taken too, as many clients send one.
    None without the header; 400 for several headers, an empty, malformed or too long key."""
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(400, "Bad Request", f"send one {KEY_HEADER} header")
    raw = values[0].strip()
    if quoted := _SF_STRING.fullmatch(raw):
        key = re.sub(r"\\(.)", r"\1", quoted.group(1))
    elif _BARE_KEY.fullmatch(raw):
        key = raw
    else:
        raise BadRequest(400, "Bad Request", f"{KEY_HEADER} must be a quoted string of printable ASCII")
    if not key or len(key) > MAX_KEY_BYTES:
        raise BadRequest(400, "Bad Request", f"{KEY_HEADER} must be 1 to {MAX_KEY_BYTES} characters long")
    return key


def wants_text(accept: str) -> bool:
    """True when `Accept` prefers text/plain to application/json (JSON on a tie or no preference)."""
    best = {"application/json": 0.0, "text/plain": 0.0}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        for candidate in best:
            if media == candidate or media == candidate.split("/")[0] + "/*":
                best[candidate] = max(best[candidate], q)
    return best["text/plain"] > best["application/json"]


def answer(data: dict[str, Any], text: bool) -> Answer:
    if text:
        number = data["total"] if "total" in data else data["count"]
        return Answer(200, _headers("text/plain; charset=utf-8"), f"{number}\n".encode())
    return Answer(200, _headers("application/json"), json.dumps(data).encode())


def problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> Answer:
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **(extra or {})}
    )
    return Answer(status, {**_headers("application/problem+json"), **(headers or {})}, body.encode())


def _headers(content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Cache-Control": "no-store"}


def outcome_unknown(key: str | None) -> Answer:
    """The PUT was sent to the store and no answer came in time: it may have been counted already,
    or may be when the store catches up. 504 (the store, our upstream, timed out) says no more than
    that; only with a key is a retry safe, so only then is one invited."""
    if key is None:
        detail = (
            "the counts store did not answer in time: this PUT may have been counted (now or when the "
            f"store catches up); retrying it may count it twice. Send an {KEY_HEADER} to retry safely"
        )
        return problem(504, "Outcome Unknown", detail, extra={"outcome": "unknown"})
    detail = (
        "the counts store did not answer in time: this PUT may have been counted. Retry it with the "
        f"same {KEY_HEADER}: it is counted once, and the retry answers what happened"
    )
    return problem(504, "Outcome Unknown", detail, {"Retry-After": "1"}, extra={"outcome": "unknown"})


def too_large(limit: int) -> Answer:
    return problem(413, "Content Too Large", f"the counter takes bodies of at most {limit} bytes")
