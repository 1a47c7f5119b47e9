"""The wait estimate (rooms/estimate.py): the later of what the window and the cap allow, no figure
when the cap is full and nobody leaves; and, through the decider, a `block` room's next place, a
scheduled opening and an operator's hold keeping their own bases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import yaml

from tests.support import visit
from waitroom.config.overrides import Overrides
from waitroom.config.schema import Config, RoomConfig, parse_config
from waitroom.rooms.decider import Decider, Outcome
from waitroom.rooms.estimate import (
    LAPSE,
    MIN_DEPARTURES,
    MIN_SPAN,
    TURNOVER,
    TURNOVER_MOST,
    block_estimate,
    departure_rate,
    departures_wait,
    line_estimate,
    newcomer_estimate,
)
from waitroom.rooms.sessions import SessionCodec, cookie_name, keys_from_secret
from waitroom.store.base import (
    NOBODY_INSIDE,
    Admission,
    Inside,
    QueueState,
    RoomPolicy,
    StoreError,
)
from waitroom.store.memory import MemoryStore
from waitroom.web.wait import DEGRADED, PAUSED, Estimate

KEYS = keys_from_secret("estimate-tests-secret-0123456789")
NOW = 1_900_000_000.0


def room(**fields: object) -> RoomConfig:
    extra = "".join(f"\n    {k}: {v}" for k, v in fields.items())
    text = f"""
rooms:
  - name: shop
    match: {{path_prefix: /}}
    queue: fifo
    new_sessions: 10
    window: 60s
    retry_after: 4s{extra}
"""
    return parse_config(yaml.safe_load(text)).rooms[0]


def config(**fields: object) -> Config:
    extra = "".join(f"\n    {k}: {v}" for k, v in fields.items())
    return parse_config(
        yaml.safe_load(f"""
rooms:
  - name: shop
    match: {{path_prefix: /}}
    new_sessions: 1
    window: 60s
    retry_after: 4s{extra}
""")
    )


def ticket(shop: RoomConfig, position: int, inside: Inside, called: int = 0, slot: float = 0.0) -> Estimate:
    """A ticket's estimate; the window has places now unless `slot` says otherwise."""
    slot = slot or NOW - 60
    return line_estimate(shop, position=position, called=called, slot=slot, now=NOW, inside=inside)


def test_without_a_cap_the_window_alone_decides() -> None:
    shop = room()
    assert ticket(shop, 0, Inside()) == Estimate(2)  # a place now: in at the next poll (4 s / 2)
    assert ticket(shop, 25, Inside()) == Estimate(2 * (60 + 2) + 2)  # two windows' worth ahead
    # Departures are never read without a cap, however few.
    assert ticket(shop, 0, Inside(active=500, departed=0, span=300.0)) == Estimate(2)


def test_a_full_cap_with_nobody_leaving_has_no_figure() -> None:
    shop = room(max_active=5)
    unknown = Estimate(None, "capacity")
    assert ticket(shop, 0, Inside(active=5, departed=0, span=300.0)) == unknown
    assert ticket(shop, 7, Inside(active=5, departed=0, span=12.0)) == unknown
    # The called tickets hold places too: 3 inside + 2 called fill the cap.
    assert ticket(shop, 2, Inside(active=3, departed=0, span=300.0), called=2) == unknown
    assert newcomer_estimate(QueueState(4, 0, 30.0, 5, NOW - 60, NOW, Inside(5, 0, 300.0)), shop) == unknown


def test_a_full_cap_waits_for_the_measured_departures() -> None:
    shop = room(max_active=5)
    inside = Inside(active=5, departed=6, span=60.0)  # one place frees every 10 s
    assert departure_rate(inside) == 0.1
    assert ticket(shop, 0, inside) == Estimate(10 + 2, "capacity")  # one place, then the half poll
    assert ticket(shop, 3, inside) == Estimate(40 + 2, "capacity")  # the 3 ahead and its own
    # The called ticket holds a place already: it is not waited for again.
    assert ticket(shop, 3, Inside(active=4, departed=6, span=60.0), called=1) == Estimate(30 + 2, "capacity")
    # A newcomer goes behind everyone in line.
    state = QueueState(3, 0, 30.0, 5, NOW - 60, NOW, inside)
    assert newcomer_estimate(state, shop) == Estimate(40 + 2, "capacity")


def test_a_cap_with_free_places_holds_only_those_beyond_them() -> None:
    shop = room(max_active=10)
    inside = Inside(active=7, departed=10, span=300.0)  # 3 free; one leaves every 30 s
    assert ticket(shop, 2, inside) == Estimate(2)  # the third free place is this ticket's
    assert ticket(shop, 5, inside) == Estimate(90 + 2, "capacity")  # 6 places needed, 3 free
    # A free place and nobody waiting: in at once, whatever the departures.
    state = QueueState(0, 0, 0.0, 0, NOW - 60, NOW, Inside(active=9, departed=0, span=300.0))
    assert newcomer_estimate(state, shop) == Estimate(0)


def test_the_later_limit_decides() -> None:
    shop = room(max_active=5, new_sessions=1)
    fast = Inside(active=5, departed=300, span=300.0)  # a place inside every second
    # The window lets one in per minute: its figure is the later, and the basis says so.
    assert ticket(shop, 2, fast, slot=NOW - 30) == Estimate(2 * 62 + 30 + 2)
    slow = Inside(active=5, departed=5, span=300.0)  # a place inside every minute
    assert ticket(shop, 2, slow, slot=NOW - 30) == Estimate(180 + 2, "capacity")


def test_departures_at_once_count_over_at_least_the_minimum_span() -> None:
    assert departure_rate(Inside(active=5, departed=3, span=0.5)) == 3 / MIN_SPAN
    assert departure_rate(Inside(active=5, departed=0, span=1.0)) is None


def test_one_departure_is_no_pace() -> None:
    """One place freed says nothing of how often places free up: a full cap has no figure until a
    second departure gives the gap between them."""
    assert MIN_DEPARTURES == 2
    assert departure_rate(Inside(active=5, departed=1, span=300.0)) is None
    assert ticket(room(max_active=5), 0, Inside(active=5, departed=1, span=4.0)) == Estimate(None, "capacity")
    assert departure_rate(Inside(active=5, departed=2, span=4.0)) == 0.5


def test_a_silence_since_the_last_departure_counts_half_as_waiting_and_half_as_a_slower_pace() -> None:
    """Four departures 1.5 s apart (6 s from a gap before the first to the last), then 2 s of
    silence. Waves: the next two are due 3 s after the last, 1 s from now. At random: the
    pace counts the silence (4 in 8 s), the two take 4 s from now. The figure is the middle."""
    waves = Inside(active=3, departed=4, span=8.0, silent=2.0)
    assert departures_wait(waves, 2, 3) == (4.0 + 1.0) / 2
    # Read at the last departure, both readings agree: the pace between departures, from now.
    assert departures_wait(Inside(active=3, departed=4, span=6.0), 2, 3) == 3.0
    # A silence past the waves' due time waits no longer by them; the pace still slows.
    assert departures_wait(Inside(active=3, departed=4, span=12.0, silent=6.0), 2, 3) == (6.0 + 0.0) / 2


def test_a_pace_lapses_when_nobody_has_left_for_long() -> None:
    """Two places; two departures 1 s apart, then silence: the pace they measured (from a gap before the first
    to the last, at least MIN_SPAN) holds for LAPSE times that, then no figure: the full cap's
    visitors are told "we can't estimate your wait yet", not an ever smaller share of a minute."""
    assert LAPSE * MIN_SPAN == 4.0
    assert departures_wait(Inside(active=2, departed=2, span=6.0, silent=4.0), 1, 2) is not None
    assert departures_wait(Inside(active=2, departed=2, span=6.1, silent=4.1), 1, 2) is None
    lapsed = Inside(active=2, departed=2, span=6.1, silent=4.1)
    assert ticket(room(max_active=2), 0, lapsed) == Estimate(None, "capacity")
    # Departures spread over a long span keep their pace as long in proportion.
    assert departures_wait(Inside(active=5, departed=6, span=160.0, silent=100.0), 1, 5) is not None


def test_a_cap_gives_a_figure_once_it_has_turned_over() -> None:
    """The first to leave a cap that filled in a rush are its shortest stays: their pace is no
    promise until as many have left as there are places (TURNOVER); a cap of one needs the two of
    MIN_DEPARTURES, and no cap more than TURNOVER_MOST: a big cap with long stays may never hold
    a whole turnover in the record's 5 minutes."""
    assert TURNOVER == 1.0
    shop = room(max_active=20)
    assert ticket(shop, 0, Inside(active=20, departed=19, span=3.0)) == Estimate(None, "capacity")
    assert ticket(shop, 0, Inside(active=20, departed=20, span=4.0)) == Estimate(3, "capacity")  # 0.2 + 2
    assert departures_wait(Inside(active=3, departed=2, span=2.0), 1, 3) is None
    assert departures_wait(Inside(active=1, departed=2, span=2.0), 1, 1) == 1.0
    assert TURNOVER_MOST == 64
    big = Inside(active=1000, departed=64, span=128.0)
    assert departures_wait(big, 1, 1000) == 2.0
    assert departures_wait(Inside(active=1000, departed=63, span=126.0), 1, 1000) is None


def test_a_reading_later_has_the_silence_grown_by_as_much() -> None:
    reading = Inside(active=3, departed=2, span=5.0, silent=1.0)
    assert reading.later(2.0) == Inside(active=3, departed=2, span=7.0, silent=3.0)
    assert reading.later(0.0) == reading
    # With no departure there is no silence to grow: only the record is older.
    assert Inside(active=3, departed=0, span=5.0).later(2.0) == Inside(active=3, departed=0, span=7.0)


def admission(
    *, blocked_until: float = 0.0, next_free: float = NOW, inside: Inside = NOBODY_INSIDE
) -> Admission:
    return Admission(False, blocked_until, False, NOW, next_free, inside)


def test_a_block_room_tells_when_the_next_place_frees_up() -> None:
    block = room(queue="block", block_for="30s")
    # The window full: its oldest admission leaves it in 20 s.
    assert block_estimate(block, admission(next_free=NOW + 20)) == Estimate(20)
    # A block of 30 s ends after that: its end.
    assert block_estimate(block, admission(blocked_until=NOW + 30, next_free=NOW + 20)) == Estimate(30)
    # A block that ends on a full window starts another: the place comes at the second one's end.
    assert block_estimate(block, admission(blocked_until=NOW + 10, next_free=NOW + 25)) == Estimate(40)
    # No block (block_for: 0): the window alone.
    assert block_estimate(room(queue="block", block_for="0s"), admission(next_free=NOW + 7)) == Estimate(7)


def test_a_block_room_with_a_full_cap() -> None:
    block = room(queue="block", max_active=2)
    assert block_estimate(block, admission(inside=Inside(2, 0, 300.0))) == Estimate(None, "capacity")
    assert block_estimate(block, admission(inside=Inside(2, 3, 60.0))) == Estimate(20, "capacity")
    # The window's place comes later still: the window decides.
    later = admission(next_free=NOW + 50, inside=Inside(2, 3, 60.0))
    assert block_estimate(block, later) == Estimate(50)
    # A free place inside: the window alone.
    assert block_estimate(block, admission(next_free=NOW + 5, inside=Inside(1, 0, 300.0))) == Estimate(5)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def decider_for(cfg: Config) -> tuple[Decider, Callable[..., Callable[[str], list[str]]]]:
    clock = Clock()
    decider = Decider(cfg, MemoryStore(clock), SessionCodec(KEYS, ttl=600), clock)
    name = cookie_name(cfg, cfg.rooms[0])

    def jar(*tokens: str | None) -> Callable[[str], list[str]]:
        return lambda wanted: [t for t in tokens if t] if wanted == name else []

    return decider, jar


async def test_a_block_room_visitor_is_given_the_estimate() -> None:
    decider, jar = decider_for(config(block_for="30s"))
    assert (await visit(decider, "/", jar())).outcome is Outcome.ADMITTED
    waiting = await visit(decider, "/", jar())  # the window is full: a block of 30 s starts
    assert waiting.outcome is Outcome.WAITING
    assert waiting.estimate == Estimate(60)  # the block ends at 30 s on a window full until 60 s


async def test_an_opening_and_a_hold_keep_their_bases_even_with_a_full_cap() -> None:
    opens = datetime.fromtimestamp(NOW + 3600, UTC).isoformat()
    decider, jar = decider_for(config(queue="fifo", max_active=1, opens_at=f'"{opens}"'))
    before = await visit(decider, "/", jar())
    assert before.place is not None
    assert before.place.estimate == Estimate(None, "opening")
    decider, jar = decider_for(config(queue="fifo", max_active=1))
    assert (await visit(decider, "/", jar())).outcome is Outcome.ADMITTED
    full = await visit(decider, "/", jar())
    assert full.place is not None
    assert full.place.estimate == Estimate(None, "capacity")  # nobody has left yet
    decider.set_overrides(Overrides({"room:shop:mode": "queue-all"}))
    held = await visit(decider, "/", jar(full.pending))
    assert held.place is not None
    assert held.place.estimate == PAUSED


class DownStore(MemoryStore):
    async def admit(self, room: RoomPolicy, session_id: str, client: str = "") -> Admission:
        raise StoreError("down")


async def test_no_estimate_when_the_store_did_not_answer_and_the_policy_held_the_visitor() -> None:
    for policy, cap, expected in (
        ("closed", "", DEGRADED),
        ("local", ", max_active: 5", DEGRADED),  # local holds a capped room: nothing was measured
    ):
        cfg = parse_config(
            yaml.safe_load(f"""
store: {{on_error: {policy}}}
rooms:
  - {{name: shop, match: {{path_prefix: /}}, new_sessions: 1, window: 60s{cap}}}
""")
        )
        clock = Clock()
        decider = Decider(cfg, DownStore(clock), SessionCodec(KEYS, ttl=600), clock)
        waiting = await visit(decider, "/")
        assert (waiting.outcome, waiting.estimate) == (Outcome.WAITING, expected), policy
