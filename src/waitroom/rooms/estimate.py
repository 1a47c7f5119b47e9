"""How long a waiting visitor will wait: the one model behind the wait page, the JSON answer's
`eta_seconds`, the `waitroom_queue_eta_seconds` metric and `waitroom status`. Pure: the numbers
come from the store (a Turn, a QueueState, an Admission), the answer is an Estimate.

Two limits hold a line, and the estimate is the later of what each allows:

- the window: `new_sessions` places per `window`, freeing up as the admissions in the window's log
  grow older than the window (`window_wait`);
- the cap (`max_active`): a place inside frees up only when a session leaves (released, or idle past
  the ttl). The store measures those departures (store/base.py Inside); the time the places the
  visitor needs take to free up at the measured pace (`departures_wait`), plus the half poll it
  takes to come in, is the cap's figure. When the cap holds the line and no pace holds (fewer than
  two sessions, or than there are places, left within the record, DEPARTURE_HORIZON; or
  nobody has left for much longer than the departures measured cover), no honest figure exists:
  the estimate is `seconds=None` on the basis "capacity" ("we can't estimate your wait yet"),
  never a number.

A scheduled room before its opening ("opening") and an operator's hold ("paused") are said by the
line itself (rooms/line.py), not here.
"""

from __future__ import annotations

import math

from waitroom.config.schema import RoomConfig
from waitroom.store.base import Admission, Inside, QueueState
from waitroom.web.wait import Estimate

MIN_DEPARTURES = 2
"""Departures it takes to measure a pace: one says that a place freed, not how often places do (a
room whose first session left after a minute may free the next ones every second, or never). With
fewer, a full cap has no figure."""
MIN_SPAN = 2.0
"""Seconds a departure rate is measured over at the least: departures that came all at once (a
batch going idle together, releases a moment apart) would otherwise promise a rate nobody has
seen."""
TURNOVER = 1.0
"""Share of the places inside whose departures it takes, beyond MIN_DEPARTURES and up to
TURNOVER_MOST, before their pace says anything: a cap that filled in a rush empties first
through its shortest stays, and the pace climbs until the cap has turned over once. Counted
sooner (a quarter of the places), `waitroom simulate` with 20 places, 300 visitors over 30 s and
10 s on site told 23 of 267 waiting visitors less than half their wait, and 4 of 254 more than
twice it; after a whole turnover, none."""
TURNOVER_MOST = 64
"""Departures that measure a pace whatever the cap: the record keeps only DEPARTURE_HORIZON, and a
large cap with long stays never holds a whole turnover in it (1000 places, 30-minute stays: about
165 departures in 5 minutes)."""
LAPSE = 2.0
"""A measured pace no longer holds once nobody has left for this many times the span its departures
cover (at least MIN_SPAN): the sessions inside stay on, and the past says nothing of when they go."""


def window_wait(
    *,
    position: int,
    called: int,
    slot: float,
    now: float,
    new_sessions: int,
    window: float,
    retry_after: float,
) -> int:
    """Seconds until a ticket `position` places from the head is let in by the window, if everyone
    ahead keeps waiting (anyone who leaves the line makes it shorter).

    The tickets at the head whose turn has come hold places already; each of the others needs a
    place of the window to free up. The first `new_sessions` of those places free up when the
    admissions now in the window's log leave it (`slot`: measured admission times, not the
    configured rate), the next ones a window after the admissions that fill them, and so on. A
    called visitor comes in at its page's next poll, on average half a retry interval later."""
    come_in = retry_after / 2
    waiting_ahead = max(0, position - called)
    cycles = waiting_ahead // max(1, new_sessions)
    first = max(0.0, slot + window - now)
    return math.ceil(cycles * (window + come_in) + first + come_in)


def departure_rate(inside: Inside) -> float | None:
    """Places inside freed per second, as measured: the departures over the time they cover (from
    one mean gap before the first to now, store/base.py Inside.span); None with fewer than
    MIN_DEPARTURES within the record."""
    if inside.departed < MIN_DEPARTURES:
        return None
    return inside.departed / max(inside.span, MIN_SPAN)


def departures_wait(inside: Inside, places: int, max_active: int) -> float | None:
    """Seconds until `places` more sessions have left, at the pace measured; None when no pace holds
    (fewer departures within the record than MIN_DEPARTURES, or than TURNOVER of `max_active` up
    to TURNOVER_MOST, or a silence of LAPSE times what they cover).

    The silence since the last departure reads two ways, and the figure is the middle of them.
    Departures that come in waves (every place cycles through much the same stay, so they bunch)
    make the next one due a mean gap after the last: the silence is part of the wait, and the pace
    is the one between departures. Departures at random make the silence a sign of a slower pace:
    the pace counts it, and the wait starts now. Either alone is off by the wave's length when the
    other holds; a visitor asking at the end of a wave's silence was told twice its wait."""
    rate = departure_rate(inside)
    if rate is None or inside.departed < min(math.ceil(TURNOVER * max_active), TURNOVER_MOST):
        return None
    between = max(inside.span - inside.silent, MIN_SPAN)  # from one gap before the first to the last
    if inside.silent > LAPSE * between:
        return None
    waves = max(0.0, places * between / inside.departed - inside.silent)
    return (places / rate + waves) / 2


def places_needed(max_active: int | None, inside: Inside, *, called: int, ahead: int) -> int:
    """Places inside that must free up before a visitor with `ahead` uncalled tickets before it can
    be called: none when the cap does not hold it (no cap, or enough places free)."""
    if not max_active:
        return 0
    free = max(0, max_active - inside.active - called)
    return max(0, ahead + 1 - free)


def line_estimate(
    room: RoomConfig, *, position: int, called: int, slot: float, now: float, inside: Inside
) -> Estimate:
    """A ticket's wait, `position` live tickets from the head (`called` of them called): the
    window's figure, or the cap's when the cap holds the line and its figure is the later."""
    window = window_wait(
        position=position,
        called=called,
        slot=slot,
        now=now,
        new_sessions=room.new_sessions,
        window=room.window,
        retry_after=room.retry_after,
    )
    needed = places_needed(room.max_active, inside, called=called, ahead=max(0, position - called))
    if needed == 0:
        return Estimate(window)
    departures = departures_wait(inside, needed, room.max_active or 0)
    if departures is None:  # full, and no pace holds (nobody left for a while): no honest figure
        return Estimate(None, "capacity")
    cap = math.ceil(departures + room.retry_after / 2)
    return Estimate(cap, "capacity") if cap >= window else Estimate(window)


def newcomer_estimate(state: QueueState, room: RoomConfig) -> Estimate:
    """What a visitor arriving now would be told (0: there is a place at once)."""
    waiting = state.length - state.called
    cap_free = places_needed(room.max_active, state.inside, called=state.called, ahead=0) == 0
    if waiting == 0 and state.in_window + state.called < room.new_sessions and cap_free:
        return Estimate(0)
    return line_estimate(
        room, position=state.length, called=state.called, slot=state.slot, now=state.now, inside=state.inside
    )


def block_estimate(room: RoomConfig, admission: Admission) -> Estimate:
    """A `block` room's refused visitor: when the next place should free up. There is no line, so
    this is the next place, not the visitor's own: whoever asks first after it frees gets in.

    The window's next place frees when the oldest admission that fills it leaves the window
    (Admission.next_free). While a block lasts nobody gets in; a block that ends on a window still
    full is started again by the next visitor, so the place is taken at the end of the first block
    (of `block_for` each, one after another) that ends after the window has it. With a cap that is
    full, a place inside must free up too: at the measured pace, or no figure at all when none holds
    (departures_wait)."""
    now = admission.now
    at = max(now, admission.next_free)
    if admission.blocked_until > now:
        end = admission.blocked_until
        if at > end and room.block_for > 0:
            end += math.ceil((at - end) / room.block_for) * room.block_for
        at = max(at, end)
    seconds = math.ceil(at - now)
    if not room.max_active or admission.inside.active < room.max_active:
        return Estimate(seconds)
    departures = departures_wait(admission.inside, 1, room.max_active)
    if departures is None:
        return Estimate(None, "capacity")
    cap = math.ceil(departures)
    return Estimate(cap, "capacity") if cap >= seconds else Estimate(seconds)
