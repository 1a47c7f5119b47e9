"""Flow replay: what waitroom would have done with recorded traffic.

`mitmdump -nr traffic.mitm -s addons/waitroom.py --set waitroom_replay=true` decides every recorded
request as if it arrived live, at the time it was recorded, and prints one line per request and a
summary per room and rule. The regression suite (tests/flows) replays its fixtures the same way and
compares these lines with the recorded ones.

A line reads:  #003 GET /shop -> 503 room shop waiting [Retry-After: 1] [no cookie]

The lines are the command's output, printed on stdout: `-q` (which silences mitmproxy's log) does
not hide them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mitmproxy import ctx, http

from waitroom.addon import flowmeta
from waitroom.addon.flowmeta import COMMAND_HEADER, RECORD_KEY
from waitroom.rooms.sessions import token_session_id

if TYPE_CHECKING:
    from waitroom.addon.gate import Gate
    from waitroom.addon.runtime import Runtime


RATE_LIMIT_HEADERS = ("Retry-After", "RateLimit-Policy", "RateLimit")


def decision_of(flow: http.HTTPFlow) -> str:
    """The decisions the proxy recorded in the flow's metadata, in words."""
    meta = flowmeta.recorded(flow)
    words = []
    limit = meta.get("rate_limit")
    if limit:
        rule = limit.get("rule")
        words.append(f"rule {rule} {limit.get('outcome')}" if rule else f"rate-limit {limit.get('outcome')}")
        if limit.get("fallbacks"):
            words.append(f"fallback {','.join(limit['fallbacks'])}")
        if limit.get("shadow_limited"):
            words.append(f"shadow {','.join(limit['shadow_limited'])}")
    if meta.get("room"):
        words.append(f"room {meta['room']} {meta.get('outcome')}")
    if meta.get("command"):
        words.append(f"upstream said {meta['command']}")
    return " ".join(words) or "untouched"


def describe(index: int, flow: http.HTTPFlow, cookie_prefix: str = "waitroom") -> str:
    """One readable line: the request, the answer's status, the decision and the headers that
    carry it. Values that differ on every run (cookie contents, dates) are left out."""
    req = flow.request
    status: object = flow.response.status_code if flow.response else "no-response"
    if flow.response is not None and NOT_RECORDED in flow.response.headers:
        status = "upstream"
    parts = [f"#{index:03d} {req.method} {req.path} -> {status} {decision_of(flow)}"]
    if flow.response is not None:
        headers = flow.response.headers
        for name in RATE_LIMIT_HEADERS:
            if name in headers:
                parts.append(f"[{name}: {headers[name]}]")
        cookies = [c.split("=", 1)[0] for c in headers.get_all("Set-Cookie") if c.startswith(cookie_prefix)]
        parts.append(f"[Set-Cookie: {','.join(cookies)}]" if cookies else "[no cookie]")
    return " ".join(parts)


NOT_RECORDED = "Waitroom-Replay"
"""Marks a stand-in answer: the replay forwards a request whose recorded answer came from the proxy."""


def proxy_answered(flow: http.HTTPFlow) -> bool:
    """Did the proxy itself answer this recorded flow (wait page, poll answer, 429)?"""
    meta = flowmeta.recorded(flow)
    limit = meta.get("rate_limit") or {}
    if limit.get("outcome") == "limited" or meta.get("outcome") == "waiting":
        return True
    return flow.response is not None and "Waitroom-Status" in flow.response.headers


def not_recorded_answer() -> http.Response:
    return http.Response.make(200, b"", {NOT_RECORDED: "upstream answer not recorded"})


def strip_proxy_headers(response: http.Response, cookie_prefix: str) -> None:
    """A recorded answer that came from the upstream, without what the proxy added to it: the
    replay adds its own."""
    kept = [c for c in response.headers.get_all("Set-Cookie") if not c.startswith(cookie_prefix)]
    response.headers.set_all("Set-Cookie", kept)
    for name in ("RateLimit-Policy", "RateLimit"):
        response.headers.pop(name, None)


class Summary:
    def __init__(self) -> None:
        self.rooms: Counter[tuple[str, str]] = Counter()
        self.rules: Counter[tuple[str, str]] = Counter()
        self.flows = 0

    def add(self, flow: http.HTTPFlow) -> None:
        self.flows += 1
        meta = flowmeta.recorded(flow)
        if meta.get("room"):
            self.rooms[(meta["room"], str(meta.get("outcome")))] += 1
        limit = meta.get("rate_limit")
        if limit and limit.get("rule"):
            self.rules[(limit["rule"], str(limit.get("outcome")))] += 1

    def lines(self) -> Iterable[str]:
        yield f"{self.flows} request{'' if self.flows == 1 else 's'} replayed"
        for (room, outcome), n in sorted(self.rooms.items()):
            yield f"  room {room}: {outcome} {n}"
        for (rule, outcome), n in sorted(self.rules.items()):
            yield f"  rule {rule}: {outcome} {n}"


class Replay:
    """mitmproxy addon: with `waitroom_replay`, flows read from a file (`mitmdump -nr FILE`) are
    decided by the gate as if they arrived live, each at its recorded time, with one line per flow
    and a summary per room and rule at the end."""

    def __init__(self, runtime: Runtime, gate: Gate) -> None:
        self.runtime = runtime
        self.gate = gate
        self.summary = Summary()

    def load(self, loader: object) -> None:
        loader.add_option(  # type: ignore[attr-defined]
            "waitroom_replay",
            bool,
            False,
            """
            Decide flows read from a file (mitmdump -nr FILE) as if they arrived live, each at its
            recorded time, and print what every request would have got and a summary per room and
            rule at the end. Set WAITROOM_SECRET as when the flows were recorded, so that recorded
            session cookies verify.
            """,
        )

    def configure(self, updated: set[str]) -> None:
        # Before the config loads (loader.py comes after this addon): the store depends on it.
        if "waitroom_replay" in updated:
            self.runtime.replay = bool(ctx.options.waitroom_replay)

    async def request(self, flow: http.HTTPFlow) -> None:
        """A flow from a file: decide it at its recorded time, as if it were live. When the proxy
        would have forwarded it, the recorded answer stands in for the upstream's."""
        if flow.live or not self.runtime.replay:
            return
        recorded = flow.response
        answered_by_proxy = proxy_answered(flow)
        command = (flowmeta.recorded(flow)).get("command")
        flow.response = None
        flow.metadata.pop(RECORD_KEY, None)
        clock = self.runtime.replay_clock
        clock.set(flow.request.timestamp_start)
        loaded = self.runtime.loaded
        if loaded is not None and recorded is not None:
            # The ids the recording gave out, so that later recorded cookies name what this replay knows.
            prefix = self._cookie_prefix() + "_"
            set_cookies = [h for h in recorded.headers.get_all("Set-Cookie") if h.startswith(prefix)]
            tokens = [h.split("=", 1)[1].split(";", 1)[0] for h in set_cookies]
            loaded.decider.new_id.recorded = [sid for token in tokens if (sid := token_session_id(token))]
        try:
            await self.gate.decide(flow)
        finally:
            clock.base = None
            if loaded is not None:
                loaded.decider.new_id.recorded = []
            if flow.response is None and recorded is not None:
                if answered_by_proxy:  # forwarded now, answered by the proxy then: no upstream answer
                    flow.response = not_recorded_answer()
                else:
                    strip_proxy_headers(recorded, self._cookie_prefix())
                    if command:  # the upstream's own word, which the proxy took off the answer
                        recorded.headers[COMMAND_HEADER] = command
                    flow.response = recorded

    def response(self, flow: http.HTTPFlow) -> None:
        if self.runtime.replay and not flow.live:
            _say(describe(self.summary.flows, flow, self._cookie_prefix()))
            self.summary.add(flow)

    def done(self) -> None:
        if self.runtime.replay and self.summary.flows:
            for line in self.summary.lines():
                _say(line)

    def _cookie_prefix(self) -> str:
        config = self.runtime.config
        return config.session.cookie if config else "waitroom"


def _say(line: str) -> None:
    print(f"waitroom replay: {line}", flush=True)
