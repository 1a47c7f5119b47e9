"""The request counter: the demo workload and load-test target, answered by mitmproxy itself.

    PUT  /a/b   count one more request to /a/b     → {"path": "/a/b", "count": 3}
    GET  /a/b   read it (0 if never seen)           → {"path": "/a/b", "count": 3}
    GET  /      the total over all paths            → {"total": 5}
    HEAD        as GET, without a body; OPTIONS → 204 with Allow; anything else → 405 with Allow

Paths are normalised before they are counted, so `/a/`, `/a?x=1`, `//a` and `/%61` are one path,
and a PUT with an `Idempotency-Key` is counted once per key (`counter_path` and `idempotency_key`
in counterhttp.py); one whose store call timed out after it was sent is answered 504 "may have been
counted", never as if it was not. At most `counter_max_paths` distinct paths are counted: a PUT to a
new path past it gets 507 and counts nothing, and the paths already counted go on counting.
`Accept: text/plain` gets the bare number. Bodies are never read or stored; one over
`counter_max_body` is refused with 413. The upstream is never contacted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.utils import human

from waitroom.addon import flowmeta
from waitroom.config.durations import parse_duration
from waitroom.config.fields import ConfigError
from waitroom.config.schema import load_config
from waitroom.config.store import StoreConfig
from waitroom.counter.counts import MAX_PATHS, Counts, KeyReused, OutcomeUnknown, TooManyPaths, open_counts
from waitroom.counter.http import (
    ALLOW,
    ALLOW_ROOT,
    KEY_HEADER,
    REPLAYED_HEADER,
    BadRequest,
    answer,
    counter_path,
    idempotency_key,
    outcome_unknown,
    problem,
    too_large,
    wants_text,
)
from waitroom.metrics import METRICS
from waitroom.store.base import StoreError
from waitroom.web.answers import Answer

log = logging.getLogger(__name__)

MAX_PATH_LIMIT = 10_000_000
"""The largest counter_max_paths (~100 bytes a path in memory: about 1 GB)."""
STORE_TIMEOUT = 1.0
"""Bound on every counts-store call. The counter is the service, not the proxy's fast path: a second
is generous, and past it the client gets an answer instead of a hang: 503 when the call certainly did
not reach Redis, 504 "may have been counted" for a PUT that may have."""

_METHODS = frozenset({"GET", "HEAD", "PUT", "OPTIONS", "POST", "DELETE", "PATCH"})


class Counter:
    """The counter as a mitmproxy addon; chained after the wait room, it answers what gets past it."""

    def __init__(self) -> None:
        self.counts: Counts | None = None
        self._store_config: StoreConfig | None = None
        self.max_body = 64 * 1024
        self.key_window = 86_400.0
        self.max_paths = MAX_PATHS
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
        loader.add_option(
            "counter_max_paths",
            int,
            MAX_PATHS,
            f"""
            The most distinct paths the counter counts (1 to {MAX_PATH_LIMIT:,}): a PUT to a new path past
            it is refused with 507 and counts nothing; the paths already counted go on counting, and
            the total stays the sum of the paths.
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
                raise _option_error(f"counter_max_body: {e}") from None
            self.max_body = size if size is not None else 64 * 1024
        if "counter_max_paths" in updated:
            wanted = ctx.options.counter_max_paths
            if not 1 <= wanted <= MAX_PATH_LIMIT:
                raise _option_error(f"counter_max_paths: must be between 1 and {MAX_PATH_LIMIT}")
            self.max_paths = wanted
            if self.counts is not None:
                self.counts.max_paths = wanted
        if "counter_idempotency_window" in updated:
            try:
                window = parse_duration(ctx.options.counter_idempotency_window)
            except ValueError as e:
                raise _option_error(f"counter_idempotency_window: {e}") from None
            if window <= 0:
                raise _option_error("counter_idempotency_window: must be longer than 0s")
            self.key_window = window
            if self.counts is not None:
                self.counts.key_window = window  # the counts stay; keys stored from now on use it
        if updated & {"counter_store", "waitroom_config"}:
            wanted = self._wanted_store()
            if wanted != self._store_config:
                if self.counts is not None:
                    log.info("counter: the counts store changed; counting starts again there")
                self.counts = open_counts(wanted, STORE_TIMEOUT, self.key_window, self.max_paths)
                self._store_config = wanted
                log.info("counter: counts in %s", wanted.url.split("@")[-1])  # never log credentials

    def _wanted_store(self) -> StoreConfig:
        url = ctx.options.counter_store
        if url:
            try:
                return StoreConfig(url=url)
            except ValueError as e:
                raise _option_error(f"counter_store: {_first_error(e)}") from None
        waitroom_config = getattr(ctx.options, "waitroom_config", None)
        if waitroom_config is not None:
            from waitroom.config.schema import DEFAULT_CONFIG

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
            flow.response = _response(too_large(self.max_body))

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or self.counts is None:
            return
        if flowmeta.recorded(flow).get("rate_limit", {}).get("outcome") == "rerouted":
            return  # a rate limit sent this request to another upstream: it is not ours
        req = flow.request
        if req.method == "PUT" and len(req.raw_content or b"") > self.max_body:  # chunked bodies
            flow.response = _response(too_large(self.max_body))
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
        METRICS.counter.operations.labels(method, str(response.status_code)).inc()

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
        except TooManyPaths:
            METRICS.counter.paths_refused.inc()
            return problem(
                507,
                "Insufficient Storage",
                f"the counter holds at most {self.counts.max_paths} paths (counter_max_paths); this new "
                "path was not counted. The paths already counted still count",
            )
        except OutcomeUnknown as e:
            log.warning("counter: store did not answer a PUT in time (%s): it may have been counted", e)
            return outcome_unknown(key)
        except StoreError as e:
            log.warning("counter: store unavailable (%s)", e)
            counted = "; nothing was counted" if method == "PUT" else ""
            return problem(
                503, "Service Unavailable", f"the counts store is unavailable{counted}", {"Retry-After": "1"}
            )


def _response(result: Answer) -> http.Response:
    return http.Response.make(result.status, result.body, result.headers)


def _option_error(message: str) -> exceptions.OptionsError:
    """mitmproxy keeps an option's old value when `configure` raises this (its class is untyped)."""
    return exceptions.OptionsError(message)  # type: ignore[no-untyped-call]


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", e))
    return str(e)
