"""The request counter: the demo workload and load-test target, answered by mitmproxy itself.

    PUT  /a/b   count one more request to /a/b     → {"path": "/a/b", "count": 3}
    GET  /a/b   read it (0 if never seen)           → {"path": "/a/b", "count": 3}
    GET  /      the total over all paths            → {"total": 5}
    HEAD        as GET, without a body; OPTIONS → 204 with Allow; anything else → 405 with Allow

Paths are normalised before they are counted (see `counter_path`), so `/a/`, `/a?x=1`, `//a` and
`/%61` are one path. A PUT with an `Idempotency-Key` is counted once per key (see `idempotency_key`);
one whose store call timed out after it was sent is answered 504 "may have been counted", never as
if it was not. `Accept: text/plain` gets the bare number. Bodies are never read or stored;
one over `counter_max_body` is refused with 413. The upstream is never contacted.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.utils import human

from waitroom.config import ConfigError, StoreConfig, load_config
from waitroom.durations import parse_duration
from waitroom.metrics import METRICS
from waitroom.routing import path_segments
from waitroom.store.base import StoreError
from waitroom.store.counts import Counts, KeyReused, OutcomeUnknown, open_counts

log = logging.getLogger(__name__)

MAX_PATH_BYTES = 1024
"""Longest normalised path that is counted (UTF-8 bytes); longer ones get 414."""
ALLOW = "GET, HEAD, PUT, OPTIONS"
ALLOW_ROOT = "GET, HEAD, OPTIONS"
"""`/` is the total: it is read, never PUT."""
STORE_TIMEOUT = 1.0
"""Bound on every counts-store call. The counter is the service, not the proxy's fast path: a second
is generous, and past it the client gets an answer instead of a hang: 503 when the call certainly did
not reach Redis, 504 "may have been counted" for a PUT that may have."""

MAX_KEY_BYTES = 255
"""Longest `Idempotency-Key` accepted (its characters, unquoted); longer ones get 400."""
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
"""`true` on the answer to a PUT whose key was seen before: it is the first answer, counted then."""

_METHODS = frozenset({"GET", "HEAD", "PUT", "OPTIONS", "POST", "DELETE", "PATCH"})
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_BARE_KEY = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class BadRequest(Exception):
    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}

    def answer(self) -> Answer:
        return problem(self.status, self.title, self.detail, self.headers)


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


class Counter:
    """The counter as a mitmproxy addon; chained after the wait room, it answers what gets past it."""

    def __init__(self) -> None:
        self.counts: Counts | None = None
        self._store_config: StoreConfig | None = None
        self.max_body = 64 * 1024
        self.key_window = 86_400.0
        self._running = False

    def load(self, loader: Any) -> None:
        loader.add_option(
            "counter_store",
            str,
            "",
            """
            Where the request counter keeps its counts: memory:// (this process only) or a Redis URL
            in any form the wait room's store.url accepts (counts are then shared by every replica).
            Empty: the store of the wait room's config when the wait room runs in the same process,
            otherwise memory://.
            """,
        )
        loader.add_option(
            "counter_max_body",
            str,
            "64k",
            """
            Largest request body the counter accepts (bodies are never read or stored; a bigger one
            is refused with 413). Sizes as mitmproxy writes them: 512, 64k, 1m. Set mitmproxy's own
            body_size_limit as well so that huge bodies are not buffered at all.
            """,
        )

        loader.add_option(
            "counter_idempotency_window",
            str,
            "24h",
            """
            How long the counter remembers a PUT's Idempotency-Key: a PUT with the same key within
            this window is not counted again and gets the first answer (on every replica that shares
            the counts store). Durations as 30s, 15m, 24h.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        try:
            self._configure(updated)
        except exceptions.OptionsError as e:
            if self._running:
                raise  # mitmproxy keeps the old value
            # At start an exception would print a traceback; one error line makes mitmproxy's
            # errorcheck stop the process with exit status 1 instead.
            log.error("counter: %s", e)

    def running(self) -> None:
        self._running = True

    def _configure(self, updated: set[str]) -> None:
        if "counter_max_body" in updated:
            try:
                size = human.parse_size(ctx.options.counter_max_body)
            except ValueError as e:
                raise exceptions.OptionsError(f"counter_max_body: {e}") from None
            self.max_body = size if size is not None else 64 * 1024
        if "counter_idempotency_window" in updated:
            try:
                window = parse_duration(ctx.options.counter_idempotency_window)
            except ValueError as e:
                raise exceptions.OptionsError(f"counter_idempotency_window: {e}") from None
            if window <= 0:
                raise exceptions.OptionsError("counter_idempotency_window: must be longer than 0s")
            self.key_window = window
            if self.counts is not None:
                self.counts.key_window = window  # the counts stay; keys stored from now on use it
        if updated & {"counter_store", "waitroom_config"}:
            wanted = self._wanted_store()
            if wanted != self._store_config:
                if self.counts is not None:
                    log.info("counter: the counts store changed; counting starts again there")
                self.counts = open_counts(wanted, STORE_TIMEOUT, self.key_window)
                self._store_config = wanted
                log.info("counter: counts in %s", wanted.url.split("@")[-1])  # never log credentials

    def _wanted_store(self) -> StoreConfig:
        url = ctx.options.counter_store
        if url:
            try:
                return StoreConfig(url=url)
            except ValueError as e:
                raise exceptions.OptionsError(f"counter_store: {_first_error(e)}") from None
        waitroom_config = getattr(ctx.options, "waitroom_config", None)
        if waitroom_config is not None:
            from waitroom.config import DEFAULT_CONFIG

            try:
                return load_config(Path(waitroom_config or DEFAULT_CONFIG)).store
            except ConfigError:
                pass  # the wait room reports its own config errors
        return StoreConfig()

    async def done(self) -> None:
        if self.counts is not None:
            await self.counts.close()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Refuse an oversized body before it is read into the answer (mitmproxy still drains it)."""
        if flow.response or flow.request.method != "PUT":
            return
        length = flow.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_body:
            flow.response = _response(_too_large(self.max_body))

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.counts is None:
            return
        if flow.metadata.get("waitroom", {}).get("rate_limit", {}).get("outcome") == "rerouted":
            return  # a rate limit sent this request to another upstream: it is not ours
        req = flow.request
        if req.method == "PUT" and len(req.raw_content or b"") > self.max_body:  # chunked bodies
            flow.response = _response(_too_large(self.max_body))
            return
        try:
            result = await self.serve(
                req.method, req.path, req.headers.get("Accept", ""), req.headers.get_all(KEY_HEADER)
            )
        except Exception:  # a bug must not become a traceback for the client
            log.exception("counter: %s %s failed", req.method, req.path)
            result = problem(500, "Internal Server Error", "the counter failed; see its log")
        response = _response(result)
        if req.method == "HEAD":
            length = len(response.content or b"")
            response.content = b""
            response.headers["Content-Length"] = str(length)
        flow.response = response
        method = req.method if req.method in _METHODS else "other"  # a label never takes client text
        METRICS.counter_operations.labels(method, str(response.status_code)).inc()

    async def serve(self, method: str, target: str, accept: str, keys: list[str] | None = None) -> Answer:
        assert self.counts is not None
        key = None
        try:
            path = counter_path(target)
            allow = ALLOW_ROOT if path == "/" else ALLOW
            if method == "OPTIONS":
                return Answer(204, {"Allow": allow, "Cache-Control": "no-store"}, b"")
            text = wants_text(accept)
            if method in ("GET", "HEAD"):
                if path == "/":
                    return answer({"total": await self.counts.total()}, text)
                return answer({"path": path, "count": await self.counts.get(path)}, text)
            if method == "PUT" and path != "/":
                key = idempotency_key(keys or [])
                put = await self.counts.put(path, key)
                result = answer({"path": path, "count": put.count}, text)
                if put.replayed:
                    result.headers[REPLAYED_HEADER] = "true"
                return result
            raise BadRequest(
                405,
                "Method Not Allowed",
                f"{method} is not allowed on {'/' if path == '/' else 'a path'}",
                {"Allow": allow},
            )
        except BadRequest as e:
            return e.answer()
        except KeyReused:
            return problem(
                422,
                "Unprocessable Content",
                f"this {KEY_HEADER} was first used for another path; nothing was counted",
            )
        except OutcomeUnknown as e:
            log.warning("counter: store did not answer a PUT in time (%s): it may have been counted", e)
            return _unknown(key)
        except StoreError as e:
            log.warning("counter: store unavailable (%s)", e)
            counted = "; nothing was counted" if method == "PUT" else ""
            return problem(
                503, "Service Unavailable", f"the counts store is unavailable{counted}", {"Retry-After": "1"}
            )


def _unknown(key: str | None) -> Answer:
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


def _too_large(limit: int) -> Answer:
    return problem(413, "Content Too Large", f"the counter takes bodies of at most {limit} bytes")


def _response(result: Answer) -> http.Response:
    return http.Response.make(result.status, result.body, result.headers)


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", e))
    return str(e)
