"""The request path, in one pass (a mitmproxy addon):

    judge → classify → rate limits → room → act → count and log

judge: the host and path decided on are the ones forwarded (act.judge); classify: bypass, room and
matching rules, once, into one `Classified`; decide the rate limits, then (unless they refused or
rerouted) the room; act once (act.act); the metrics and the decision-log entry are written once
(telemetry.py). A request is decided on its headers, before any body is read (early_answer.py); an exception
while deciding is never a free pass: it is answered closed.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import http

from waitroom.addon import early_answer, flowmeta, release, telemetry
from waitroom.addon.apply import act, add_headers, refused, to_response, waiting
from waitroom.addon.connection_limits import ConnectionBounds
from waitroom.addon.request import cookie_reader, judge, peer
from waitroom.addon.runtime import Loaded, Runtime
from waitroom.config.rules import RateLimitConfig
from waitroom.metrics import METRICS
from waitroom.ratelimit.decision import LimitDecision
from waitroom.rooms.decider import Decision
from waitroom.rooms.routing import Route
from waitroom.rooms.shadow import is_shadow
from waitroom.web.answers import limited_answer, problem_answer
from waitroom.web.request import RequestFacts
from waitroom.web.target import Refused

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL = 10.0
"""At most one log line per this many seconds about decisions that raised (the metric counts all)."""


@dataclass(frozen=True, slots=True)
class Classified:
    """What a request is, found once: its room (or bypass) and the rate-limit rules that match it."""

    route: Route
    rules: list[RateLimitConfig]


def classify(loaded: Loaded, facts: RequestFacts) -> Classified:
    return Classified(loaded.decider.router.route(facts.host, facts.path), loaded.limiter.matching(facts))


class Gate:
    def __init__(self, runtime: Runtime, bounds: ConnectionBounds) -> None:
        self.runtime = runtime
        self.bounds = bounds
        self._errors = ErrorLog()
        self.leaves = release.LeaveLimiter(time.monotonic)

    def load(self, loader: object) -> None:
        # The wait answer and 429s go out without reading a request body (see early_answer.py).
        early_answer.install()

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Decide on the request headers, before any body is read: a visitor who waits, or a
        client over its limit, is answered without uploading a body (see early_answer.py)."""
        if not flow.live:
            return  # flows read from a file are decided in `request` (replay.py)
        self.bounds.headers_complete(flow)
        if flow.response or flow.error:
            return
        await self.decide(flow)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """A live request not decided on its headers (none is, but it must not pass undecided).
        Not a coroutine: mitmproxy awaits what a hook returns, and a decided request (all of them)
        then costs no coroutine."""
        if not flow.live or flow.response or flow.error:
            return None
        state = flowmeta.peek(flow)
        if state is not None and state.decided:
            return None  # from a file (replay.py), or decided on its headers already
        return self.decide(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """What the decision adds to the answer. An answer carrying `Waitroom-Command` (release.py)
        is held until the store has been told; mitmproxy awaits what a hook returns, so every
        other answer pays for no coroutine."""
        loaded, response = self.runtime.loaded, flow.response
        if loaded is not None and response is not None and flowmeta.COMMAND_HEADER in response.headers:
            return self._command(flow, loaded)
        add_headers(flow)
        return None

    async def _command(self, flow: http.HTTPFlow, loaded: Loaded) -> None:
        await release.on_response(flow, loaded)
        add_headers(flow)

    async def decide(self, flow: http.HTTPFlow) -> None:
        """The whole request path, top to bottom."""
        loaded = self.runtime.loaded
        if loaded is None:  # only between a failed start and the exit it causes
            early_answer.answer_now(flow, http.Response.make(503, b"waitroom is not configured\n"))
            return
        flowmeta.state(flow).decided = True
        req = flow.request
        # Time spent in the proxy before this decision (a saturated loop queues requests); a flow
        # from a file was not waiting.
        arrived = req.timestamp_end or req.timestamp_start  # the whole request, or its headers
        waited = max(0.0, time.time() - arrived) if flow.live else 0.0
        try:
            host, path = judge(flow, loaded, self.bounds.max_header_bytes, self.runtime.keep_host_header)
        except Refused as e:
            METRICS.proxy.refused_requests.labels(e.kind).inc()
            problem = problem_answer(e.status, e.reason)
            kind = "bad_request" if e.status == 400 else "too_large"
            early_answer.answer_now(flow, to_response(refused(flow, loaded, problem, kind)))
            return
        except Exception as e:  # a bug: nothing is known about the request, so refuse it
            self._fail_closed(flow, loaded, None, e)
            return
        if path == release.LEAVE_PATH:
            try:
                await release.leave(
                    flow, loaded, cookie_reader(req), self.leaves, self.runtime.keep_host_header
                )
            except Exception as e:  # a bug: refused, never forwarded
                self._fail_closed(flow, loaded, None, e)
            return
        facts = RequestFacts(host, path, req.method, peer(flow), req.headers.get, waited, cookie_reader(req))
        found: Classified | None = None
        limit: LimitDecision | None = None
        decision: Decision | None = None
        shadowed: Decision | None = None
        room_stage = False
        try:
            found = classify(loaded, facts)
            if found.route.bypass:
                METRICS.proxy.bypassed.inc()
                return
            if loaded.limiter.rules:
                started = time.perf_counter()
                limit = await loaded.limiter.decide(facts, found.rules)
                telemetry.count_limit(limit, time.perf_counter() - started)
                telemetry.save_limit(flow, limit, path)
            # A refused or rerouted request spends no room admission; CORS preflights carry no
            # cookies: queueing them would break the real request.
            room = found.route.room
            if (limit is None or not limit.ends_request) and req.method != "OPTIONS" and room:
                if is_shadow(room, loaded.decider.overrides):
                    shadowed = await self._shadow(flow, loaded, facts, found.route)
                else:
                    room_stage = True
                    started = time.perf_counter()
                    decision = await loaded.decider.decide(facts, found.route)
                    telemetry.count_room(decision, time.perf_counter() - started)
                    telemetry.save_room(flow, decision)
            act(flow, loaded, limit, decision, self.runtime.keep_host_header)
        except Exception as e:  # a bug must never be a free pass, nor a traceback per request
            self._fail_closed(flow, loaded, found, e, room_stage=room_stage)
        finally:
            telemetry.log_decision(flow, loaded.config.decision_log, path, limit, decision, shadowed)

    async def _shadow(
        self, flow: http.HTTPFlow, loaded: Loaded, facts: RequestFacts, route: Route
    ) -> Decision | None:
        """A shadow room (rooms/shadow.py): decided as the room would, counted and logged, never
        acted on: the request goes on untouched. A shadow that raises forwards all the same (it
        enforces nothing, so forwarding is what the visitor gets either way)."""
        started = time.perf_counter()
        try:
            decision = await loaded.shadow.decide(facts, route)
        except Exception as e:
            METRICS.shadow.errors.labels(route.room.name if route.room else "").inc()
            self._errors.report(e, flow.request.method, "forwarded (shadow room)")
            return None
        telemetry.count_shadow(decision, time.perf_counter() - started)
        telemetry.save_shadow(flow, decision)
        return decision

    def _fail_closed(
        self,
        flow: http.HTTPFlow,
        loaded: Loaded,
        found: Classified | None,
        error: Exception,
        *,
        room_stage: bool = False,
    ) -> None:
        """Answer a request whose decision raised: the refusal of the rule it fell under (while
        the rate limits were being decided), else the wait answer of the room it is in, else 503.
        Never forwarded."""
        METRICS.proxy.decision_errors.inc()
        req = flow.request
        self._errors.report(error, req.method)
        state = flowmeta.state(flow)
        state.set_cookie, state.extra_headers = None, []
        answer = problem_answer(503, "the request could not be decided; try again", retry_after=1)
        try:
            room = found.route.room if found is not None else None
            enforcing = [] if found is None or room_stage else [r for r in found.rules if not r.shadow]
            if enforcing:
                rule = enforcing[0]
                retry = max(1, math.ceil(rule.per))
                problem = limited_answer(rule=rule.name, limit=rule.limit, per=rule.per, retry_after=retry)
                answer = refused(flow, loaded, problem, "rate", retry_after=retry)
            elif room is not None:
                answer = waiting(flow, loaded, room, None)
            else:
                answer = refused(flow, loaded, answer, "unavailable", retry_after=1)
        except Exception:  # the fallback's own trouble: the plain 503 stands
            pass
        early_answer.answer_now(flow, to_response(answer))


class ErrorLog:
    """One line per ERROR_LOG_INTERVAL about decisions that raised, with how many were not logged;
    the exception's type and where it was raised, never its message (it may hold header values)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._next = 0.0
        self._suppressed = 0

    def report(self, error: BaseException, method: str, answered: str = "answered closed") -> None:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        more = f" (and {self._suppressed} more since the last line)" if self._suppressed else ""
        log.error(
            "waitroom: a decision failed with %s at %s; %s (%s request)%s",
            type(error).__name__,
            where,
            answered,
            method if method in telemetry.METHODS else "other",
            more,
        )
        self._next, self._suppressed = now + ERROR_LOG_INTERVAL, 0
