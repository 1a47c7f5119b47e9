"""What a page says, in the visitor's language: the heading and message for the state of the wait,
the place, the estimate and the countdown, for the first render. The page's script
(pages/client.js) says the same again after each poll, from the same strings: the two are written
to agree, and the browser tests hold them to it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from waitroom.web.strings import Strings
from waitroom.web.wait import Estimate, Place, WaitState

CLIENT_KEYS = (
    "wait.heading",
    "wait.blocked",
    "wait.line",
    "wait.capacity",
    "wait.paused",
    "wait.degraded",
    "wait.challenge",
    "prequeue.heading",
    "prequeue.heading_day",
    "prequeue.body",
    "prequeue.countdown",
    "prequeue.opening",
    "prequeue.after",
    "place.position",
    "block.no_line",
    "block.soon",
    "block.minutes",
    "block.hours",
    "eta.soon",
    "eta.minutes",
    "eta.hours",
    "eta.unknown",
    "eta.paused",
    "eta.closing",
    "status.waiting",
    "status.prequeue",
    "status.checking",
    "status.still",
    "status.trouble",
    "status.entering",
    "status.solving",
    "next_try",
)
"""The strings the wait page's script says after a poll: sent with the page, not with each poll."""
REFUSED_CLIENT_KEYS = ("next_try", "refused.wait", "refused.ready")
"""The strings a refusal page's countdown says."""


def duration(strings: Strings, prefix: str, seconds: int) -> str:
    """`prefix.soon` under a minute, whole minutes up to 119, then hours (rounded half up)."""
    if seconds < 60:
        return strings.text(f"{prefix}.soon")
    minutes = math.floor(seconds / 60 + 0.5)
    if minutes < 120:
        return strings.text(f"{prefix}.minutes", minutes)
    return strings.text(f"{prefix}.hours", math.floor(seconds / 3600 + 0.5))


def clock(seconds: int) -> str:
    """A countdown: `12:03`, or `1:02:03` from an hour on."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def opening(strings: Strings, title: str, place: Place) -> str:
    """The pre-queue's heading with the opening time, in UTC (the script shows the visitor's own
    time zone): the time alone on the day of the opening, else with its date."""
    if place.opens_at is None or place.opens_in is None:
        return strings.text("prequeue.heading", title=title, time="")
    at = datetime.fromtimestamp(place.opens_at, UTC)
    today = datetime.fromtimestamp(place.opens_at - place.opens_in, UTC).date() == at.date()
    if today:
        return strings.text("prequeue.heading", title=title, time=f"{at:%H:%M} UTC")
    return strings.text("prequeue.heading_day", title=title, time=f"{at:%Y-%m-%d %H:%M} UTC")


def eta(strings: Strings, state: WaitState, estimate: Estimate | None) -> str:
    """The estimate's sentence; empty when none is offered (a `block` room before the estimate
    exists, or a store that did not answer, which the message explains)."""
    if estimate is None or state is WaitState.DEGRADED:
        return ""
    if state is WaitState.PAUSED:
        return strings.text("eta.paused")
    if state is WaitState.PREQUEUE:
        after = estimate.after_opening_max
        return "" if after is None else strings.text("prequeue.after", max(1, math.ceil(after / 60)))
    if estimate.seconds is None:
        return strings.text("eta.unknown")
    text = duration(strings, "block" if state is WaitState.BLOCKED else "eta", estimate.seconds)
    return f"{text} {strings.text('eta.closing')}" if estimate.past_closing else text


def place_text(strings: Strings, state: WaitState, place: Place | None) -> str:
    if state is WaitState.PREQUEUE and place is not None and place.opens_in is not None:
        if place.opens_in > 0:
            return strings.text("prequeue.countdown", clock=clock(place.opens_in))
        return strings.text("prequeue.opening")
    if state is WaitState.BLOCKED:
        return strings.text("block.no_line")
    if place is not None and state is not WaitState.DEGRADED:
        return strings.text("place.position", place.position + 1)
    return ""


def wait_copy(
    strings: Strings,
    *,
    title: str,
    state: WaitState,
    place: Place | None,
    estimate: Estimate | None,
    retry_after: int,
) -> dict[str, str]:
    """The wait page's words (plain text; the caller escapes them)."""
    if state is WaitState.CHALLENGE:  # no place yet: nothing to count or estimate
        return {
            "page_title": strings.text("title.wait", title=title),
            "heading": strings.text("wait.heading"),
            "message": strings.text("wait.challenge", title=title),
            "place": "",
            "eta": "",
            "status_text": strings.text("status.solving"),
            "next_try": "",
            "noscript": strings.text("challenge.noscript"),
            "footer": strings.text("footer", title=title),
        }
    prequeue = state is WaitState.PREQUEUE and place is not None
    return {
        "page_title": strings.text("title.wait", title=title),
        "heading": opening(strings, title, place) if prequeue and place else strings.text("wait.heading"),
        "message": strings.text("prequeue.body" if prequeue else f"wait.{state.value}", title=title),
        "place": place_text(strings, state, place),
        "eta": eta(strings, state, estimate),
        "status_text": strings.text("status.prequeue" if prequeue else "status.waiting"),
        "next_try": strings.text("next_try", retry_after),
        "noscript": strings.text("noscript", retry_after),
        "footer": strings.text("footer", title=title),
    }


def closed_copy(strings: Strings, *, title: str) -> dict[str, str]:
    return {
        "page_title": strings.text("title.closed", title=title),
        "heading": strings.text("closed.heading", title=title),
        "message": strings.text("closed.body", title=title),
        "footer": strings.text("footer", title=title),
    }


REFUSALS = {
    "rate": ("refused.heading", "refused.rate"),
    "tickets": ("refused.heading", "refused.tickets"),
    "bad_request": ("error.heading", "error.bad_request"),
    "too_large": ("error.heading", "error.too_large"),
    "unavailable": ("error.heading", "error.unavailable"),
}
"""The refusals a browser can meet, as (heading, message) keys."""


def refusal_copy(
    strings: Strings, kind: str, *, title: str, retry_after: int | None, reload: bool
) -> dict[str, str]:
    """A refusal page's words. With `retry_after`, a countdown: to a reload by itself when the
    request can be repeated (GET, HEAD); else to the moment the visitor may go back and send the
    form again (an automatic reload would send it again)."""
    heading, message = REFUSALS[kind]
    copy = {
        "page_title": strings.text(heading),
        "heading": strings.text(heading),
        "message": strings.text(message, title=title),
        "place": "",
        "next_try": "",
        "footer": strings.text("footer", title=title) if title else "",
    }
    if retry_after is not None and reload:
        copy["next_try"] = strings.text("next_try", retry_after)
    elif retry_after is not None:
        copy["place"] = strings.text("refused.post")
        copy["next_try"] = strings.text("refused.wait", retry_after)
    return copy
