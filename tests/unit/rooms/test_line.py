"""The fair queue's pure parts: the wait estimate, the config's bounds, tickets, and the decision
on the embedded store (positions, the ticket cookie, a session once called)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.support import visit
from waitroom.config.fields import ConfigError
from waitroom.config.schema import Config, parse_config
from waitroom.config.store import StoreErrorPolicy
from waitroom.rooms.decider import Decider, Decision, Outcome
from waitroom.rooms.estimate import newcomer_estimate
from waitroom.rooms.estimate import window_wait as estimate_wait
from waitroom.rooms.line_view import LineView
from waitroom.rooms.local_sync import WRITE_BACK_EVERY
from waitroom.rooms.policy import queue_policy
from waitroom.rooms.sessions import SessionCodec, cookie_name, keys_from_secret
from waitroom.store.base import QueueState, StoreError
from waitroom.store.memory import MemoryStore

KEYS = keys_from_secret("unit-test-secret-0123456789")


def test_the_first_in_line_waits_for_the_oldest_admission_to_leave_the_window() -> None:
    # Window 60 s, 10 per window, the oldest admission 45 s ago: its place frees in 15 s; the
    # page notices on average half a retry interval later.
    eta = estimate_wait(
        position=0, called=0, slot=955.0, now=1000.0, new_sessions=10, window=60, retry_after=4
    )
    assert eta == 15 + 2


def test_a_long_line_waits_a_window_per_new_sessions_ahead() -> None:
    # 25 ahead, 10 per window: two whole windows (each stretched by a poll), then the 6th slot.
    eta = estimate_wait(
        position=25, called=0, slot=990.0, now=1000.0, new_sessions=10, window=60, retry_after=4
    )
    assert eta == 2 * (60 + 2) + 50 + 2


def test_called_tickets_ahead_already_hold_their_places() -> None:
    plain = estimate_wait(
        position=3, called=0, slot=990.0, now=1000.0, new_sessions=10, window=60, retry_after=2
    )
    with_called = estimate_wait(
        position=3, called=3, slot=990.0, now=1000.0, new_sessions=10, window=60, retry_after=2
    )
    assert (
        with_called == plain
    )  # the slot already accounts for them; position 3 with 3 called is the next one
    free = estimate_wait(
        position=0, called=0, slot=900.0, now=1000.0, new_sessions=10, window=60, retry_after=2
    )
    assert free == 1  # the place is free already: only the poll


def test_the_estimate_grows_with_the_position() -> None:
    etas = [
        estimate_wait(position=p, called=0, slot=980.0, now=1000.0, new_sessions=5, window=30, retry_after=2)
        for p in range(0, 40, 5)
    ]
    assert etas == sorted(etas)
    assert etas[-1] > etas[0]


def parse(text: str) -> Config:
    return parse_config(yaml.safe_load(text))


def room(**fields: object) -> str:
    extra = "".join(f"\n    {k}: {v}" for k, v in fields.items())
    return f"""
rooms:
  - name: shop
    match: {{path_prefix: /}}
    queue: fifo
    new_sessions: 1
    window: 60s
    retry_after: 4s{extra}
"""


def test_a_newcomer_is_told_zero_when_a_place_is_free() -> None:
    config = parse(room())
    shop = config.rooms[0]
    assert newcomer_estimate(QueueState(0, 0, 0.0, 0, 940.0, 1000.0), shop).seconds == 0
    assert newcomer_estimate(QueueState(0, 0, 0.0, 1, 970.0, 1000.0), shop).seconds == 30 + 2


def test_defaults_and_bounds_of_the_hold_times() -> None:
    shop = parse(room()).rooms[0]
    assert (shop.queue, shop.abandon_after_seconds, shop.grace_seconds) == ("fifo", 16.0, 8.0)
    short = parse(room(retry_after="1s")).rooms[0]
    assert (short.abandon_after_seconds, short.grace_seconds) == (10.0, 5.0)
    assert parse(room(abandon_after="6s", grace="6s")).rooms[0].abandon_after == 6.0
    for field in ("abandon_after", "grace"):
        with pytest.raises(ConfigError, match=rf"rooms\[0\].*{field}.*1.5 × retry_after"):
            parse(room(**{field: "5s"}))
    with pytest.raises(ConfigError, match="queue"):
        parse(room().replace("queue: fifo", "queue: lifo"))
    assert parse(room().replace("    queue: fifo\n", "")).rooms[0].queue == "block"


def test_a_ticket_token_is_bound_to_its_room_and_signature() -> None:
    codec = SessionCodec(KEYS, ttl=600)
    token = codec.issue_ticket("shop", "abc", 7, expires_at=2000)
    ticket = codec.ticket(token, "shop", now=1000)
    assert ticket is not None
    assert (ticket.session_id, ticket.issued_at) == ("abc", 7)
    assert codec.ticket(token, "other", now=1000) is None
    assert codec.ticket(token, "shop", now=2000) is None  # expired
    assert codec.verify(token, "shop", now=1000) is None  # a ticket is not a session
    assert codec.pending(token, "shop", now=1000) is None
    other = SessionCodec(keys_from_secret("another-secret-0123456789"), ttl=600)
    assert other.ticket(token, "shop", now=1000) is None
    session = codec.issue("shop", "abc", 1000)[1]
    assert codec.ticket(session, "shop", now=1000) is None  # and a session is not a ticket
    # Bound to a User-Agent: good with that one only (the token does not carry it).
    bound = codec.issue_ticket("shop", "abc", 7, expires_at=2000, bind="Firefox/140")
    assert codec.ticket(bound, "shop", now=1000, bind="Firefox/140") is not None
    assert codec.ticket(bound, "shop", now=1000, bind="curl/8") is None
    assert codec.ticket(bound, "shop", now=1000) is None
    assert codec.ticket(token, "shop", now=1000, bind="Firefox/140") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_decider_gives_tickets_then_a_session_in_order() -> None:
    config = parse(room())
    clock = Clock()
    codec = SessionCodec(KEYS, ttl=600)
    decider = Decider(config, MemoryStore(clock), codec, clock)
    name = cookie_name(config, config.rooms[0])

    def jar(*tokens: str | None) -> Callable[[str], list[str]]:
        return lambda wanted: [t for t in tokens if t] if wanted == name else []

    first = await visit(decider, "/", jar())
    assert first.outcome is Outcome.ADMITTED
    a = await visit(decider, "/", jar())
    b = await visit(decider, "/", jar())
    assert (a.outcome, b.outcome) == (Outcome.WAITING, Outcome.WAITING)
    assert a.place is not None
    assert b.place is not None
    assert (a.place.position, b.place.position) == (0, 1)
    assert a.pending is not None
    assert b.pending is not None
    # b asks again with its ticket: same place.
    again = await visit(decider, "/", jar(b.pending))
    assert again.place is not None
    assert again.place.position == 1
    # Both keep polling (b always first), each with the ticket its last answer renewed; the first
    # admission leaves the window after 60 s.
    tickets = {"a": a.pending, "b": b.pending}
    for _ in range(20):
        clock.now += 4
        wait = await visit(decider, "/", jar(tickets["b"]))
        assert wait.outcome is Outcome.WAITING
        tickets["b"] = wait.pending
        in_ = await visit(decider, "/", jar(tickets["a"]))
        if in_.outcome is Outcome.ADMITTED:
            break
        tickets["a"] = in_.pending
    assert clock.now == 1060
    assert in_.cookie is not None
    assert codec.verify(in_.cookie, "shop", clock.now) is not None
    # Garbage beside a genuine ticket does not hide it; garbage alone is no ticket.
    mixed = await visit(decider, "/", jar("garbage", tickets["b"]))
    assert mixed.place is not None
    assert mixed.place.position == 0
    alone = await visit(decider, "/", jar("garbage"))
    assert alone.place is not None
    assert alone.place.position == 1


def test_max_retry_after_defaults_to_a_minute_and_never_below_retry_after() -> None:
    assert parse(room()).rooms[0].max_retry_after_seconds == 60.0
    assert (
        parse(room(retry_after="90s", grace="3m", abandon_after="3m")).rooms[0].max_retry_after_seconds
        == 90.0
    )
    assert parse(room(max_retry_after="20s")).rooms[0].max_retry_after_seconds == 20.0
    with pytest.raises(ConfigError, match=r"rooms\[0\].*max_retry_after \(2s\) must be at least retry_after"):
        parse(room(max_retry_after="2s"))
    with pytest.raises(ConfigError, match="max_retry_after needs queue: fifo"):
        parse(room(max_retry_after="20s").replace("    queue: fifo\n", ""))


async def test_far_back_polls_are_answered_by_the_line_view_without_a_store_call() -> None:
    """With a line view (Redis; here forced onto the embedded store), a ticket far back is told to
    come back in max_retry_after and its polls cost no store call; its ticket is renewed with its
    number and mark; the head still asks the store, and a newcomer always does."""
    config = parse(room())
    clock = Clock()
    codec = SessionCodec(KEYS, ttl=600)
    store = MemoryStore(clock)
    decider = Decider(config, store, codec, clock)
    assert decider.line.view is None  # the embedded store needs none
    decider.line.view = LineView(store, clock)
    name = cookie_name(config, config.rooms[0])
    asked: list[str] = []
    queue = store.queue

    async def counted(*args: object, **kwargs: object) -> object:
        asked.append("queue")
        return await queue(*args, **kwargs)  # type: ignore[arg-type]

    store.queue = counted  # type: ignore[method-assign]
    visits = [await visit(decider, "/", lambda wanted: []) for _ in range(30)]
    assert visits[0].outcome is Outcome.ADMITTED
    head, far = visits[1], visits[-1]
    assert (head.retry_after, far.retry_after) == (30, 60)  # the head: half the minute until its place
    assert len(asked) == 30
    clock.now += 1
    again = await visit(decider, "/", lambda wanted: [far.pending] if wanted == name else [])
    assert again.outcome is Outcome.WAITING
    assert len(asked) == 30  # answered by the view
    assert again.retry_after == 60
    assert again.place is not None
    assert again.place.position >= 20
    ticket = codec.ticket(again.pending, "shop", clock.now)
    assert ticket is not None
    assert ticket.mark is not None
    assert ticket.expires_at >= clock.now + 60 + 16 + 8 - 1  # interval + abandon_after + grace
    await visit(decider, "/", lambda wanted: [head.pending] if wanted == name else [])
    assert len(asked) == 31  # the head asks the store
    await decider.line.view.flush()
    glance = await store.still_here(decider.line.view._rooms["shop"].policy, [])
    assert glance.length == 29


class Failing:
    """The embedded store, with its line and its write-back failing while `down` (as Redis would)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.down = False
        self.recorded: list[tuple[str, float]] = []
        self.tries = 0
        """Write-backs tried, failed or not ..."""
        self.refused = 0
        """... and those refused while `down`."""
        self._tried = asyncio.Condition()
        self.unheard: list[float] = []
        """Each ask's unheard_for: the outage the replica lived through, said once."""
        self.queue, self.record = store.queue, store.record
        store.queue = self._queue  # type: ignore[method-assign]
        store.record = self._record  # type: ignore[method-assign]

    async def _queue(self, policy: Any, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreError("down")
        self.unheard.append(policy.unheard_for)
        return await self.queue(policy, *args, **kwargs)

    async def _record(self, room: Any, admissions: Any, now: float, tickets: Any = ()) -> None:
        async with self._tried:
            self.tries += 1
            self._tried.notify_all()
        if self.down:
            self.refused += 1
            raise StoreError("down")
        self.recorded += tickets
        await self.record(room, admissions, now, tickets)

    async def tried(self, tries: int, within: float = 20 * WRITE_BACK_EVERY) -> None:
        """Until the write-back was tried `tries` times in all, bounded (it runs on its own timer)."""
        async with asyncio.timeout(within), self._tried:
            await self._tried.wait_for(lambda: self.tries >= tries)


def failing_replica(config: Config) -> tuple[Clock, SessionCodec, MemoryStore, Failing, Decider, str]:
    """A replica's decider on the embedded store, whose line fails while `Failing.down`; the
    room's cookie name."""
    clock = Clock()
    codec = SessionCodec(KEYS, ttl=600)
    store = MemoryStore(clock)
    failing = Failing(store)
    return (
        clock,
        codec,
        store,
        failing,
        Decider(config, store, codec, clock),
        cookie_name(config, config.rooms[0]),
    )


@pytest.mark.parametrize("policy", ["local", "closed"])
async def test_a_ticket_called_before_the_store_failed_is_let_in_while_it_is_away(policy: str) -> None:
    """The store called `a` just before it stopped answering: `a`'s place is held in the window, so
    its holder is let in at its next poll rather than after the outage, behind later tickets. A
    ticket not called, or whose call may have lapsed, waits; the admission is written back when the
    store answers again, and the line goes on from there."""
    config = parse(
        f"store: {{on_error: {policy}}}\n" + room(new_sessions=2, window="20s", abandon_after="60s")
    )
    clock, codec, store, failing, decider, name = failing_replica(config)

    async def poll(ticket: str | None) -> Decision:
        return await visit(decider, "/", lambda wanted: [ticket] if ticket and wanted == name else [])

    assert (await poll(None)).outcome is Outcome.ADMITTED
    assert (await poll(None)).outcome is Outcome.ADMITTED
    tickets = {sid: (await poll(None)).pending for sid in "abcd"}  # numbers 1 to 4
    clock.now += 18
    for sid in "ad":  # they poll as the page does (places free in 2 s: told to come back in 4)
        tickets[sid] = (await poll(tickets[sid])).pending
    clock.now += 2
    tickets["d"] = (await poll(tickets["d"])).pending  # two places free: a and b are called
    assert decider.line.marks["shop"][1:] == (2, 0)
    failing.down = True
    clock.now += 1
    # Another replica never heard the store call anyone: it learns of the calls from d's ticket.
    other = Decider(config, store, codec, clock)
    assert (
        await visit(other, "/", lambda wanted: [tickets["a"]] if wanted == name else [])
    ).outcome is Outcome.WAITING
    assert (
        await visit(other, "/", lambda wanted: [tickets["d"]] if wanted == name else [])
    ).outcome is Outcome.WAITING
    assert other.line.marks["shop"][1:] == (2, 0)
    in_ = await visit(other, "/", lambda wanted: [tickets["a"]] if wanted == name else [])
    assert (in_.outcome, in_.degraded) == (Outcome.ADMITTED, StoreErrorPolicy(policy))
    assert codec.verify(in_.cookie, "shop", clock.now) is not None
    assert (await poll(tickets["a"])).outcome is Outcome.ADMITTED  # and here: the same session
    assert (await poll(tickets["c"])).outcome is Outcome.WAITING  # not called
    assert (await poll(tickets["d"])).outcome is Outcome.WAITING  # not called
    # b was due back at 1010 and had not come within the grace when the store went silent: its
    # call may have lapsed before (a replica cannot tell: its grace starts at the call, or later).
    assert (await poll(tickets["b"])).outcome is Outcome.WAITING
    clock.now += 10
    failing.down = False
    clock.now += 1
    after = await poll(tickets["d"])  # the store answers again: a's admission is written back first
    a = codec.ticket(tickets["a"], "shop", clock.now)
    assert a is not None
    # Written back by this replica (the other's at its next ask), which tells the store how long
    # it could not reach it.
    assert [sid for sid, _ in failing.recorded] == [a.session_id]
    assert failing.unheard[-1] == 11.0  # since its first failed ask
    assert after.outcome is Outcome.WAITING
    state = await store.queue_state(queue_policy(config.rooms[0]))
    assert (state.in_window, state.called) == (1, 1)  # a in the window; b's call moved on by the outage
    assert (await poll(tickets["b"])).outcome is Outcome.ADMITTED
    assert (await poll(tickets["c"])).outcome is Outcome.WAITING  # the window's two places: a's, b's
    assert failing.unheard[-1] == 0.0  # said once


async def test_a_called_ticket_let_in_while_the_store_was_away_is_written_back_unasked() -> None:
    """Once the store answers again, the admission is written back within WRITE_BACK_EVERY even if
    no visitor of the room asks this replica again: the store gives the call one grace after the
    outage, then its place would go to the next."""
    config = parse(room(new_sessions=1, window="20s", abandon_after="60s"))
    clock, codec, store, failing, decider, name = failing_replica(config)

    async def poll(ticket: str | None) -> Decision:
        return await visit(decider, "/", lambda wanted: [ticket] if ticket and wanted == name else [])

    assert (await poll(None)).outcome is Outcome.ADMITTED
    a, b = (await poll(None)).pending, (await poll(None)).pending
    clock.now += 18
    a, b = (await poll(a)).pending, (await poll(b)).pending  # they poll as the page does
    clock.now += 2
    b = (await poll(b)).pending  # the window's place is free: a is called
    failing.down = True
    clock.now += 1
    assert (await poll(a)).outcome is Outcome.ADMITTED  # let in while the store is away
    await failing.tried(2)  # still away: kept, and tried again
    assert failing.recorded == []
    failing.down = False
    await failing.tried(3)  # nobody asks: written back all the same
    ticket = codec.ticket(a, "shop", clock.now)
    assert ticket is not None
    assert [sid for sid, _ in failing.recorded] == [ticket.session_id]
    state = await store.queue_state(queue_policy(config.rooms[0]))
    assert (state.in_window, state.called, state.length) == (1, 0, 1)  # a in the window; b waits
    writing = decider.sync._writing
    assert writing is not None
    await asyncio.wait_for(writing, 1)
    assert decider.sync._retry is None  # nothing owed any more: no next try
    assert failing.tries - failing.refused == 1


async def test_a_replica_that_never_heard_of_a_call_lets_no_ticket_in_while_the_store_is_away() -> None:
    config = parse(room(new_sessions=1))
    *_, failing, decider, name = failing_replica(config)
    assert (await visit(decider, "/", lambda wanted: [])).outcome is Outcome.ADMITTED
    waiting = await visit(decider, "/", lambda wanted: [])
    failing.down = True
    # This replica never heard the store call anyone: the ticket waits.
    again = await visit(decider, "/", lambda wanted: [waiting.pending] if wanted == name else [])
    assert again.outcome is Outcome.WAITING
