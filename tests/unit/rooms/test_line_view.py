"""The replica's line view (rooms/line_view.py) against the store's own answers (embedded store):
it never answers from the view a ticket that the store could call before its next poll, and goes to
the store whenever it cannot be sure."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from waitroom.rooms.line_view import FRESH, LineView, mark_of
from waitroom.store.base import QueuePolicy, StoreError, Turn
from waitroom.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def policy(new_sessions: int, window: float, max_retry: float) -> QueuePolicy:
    return QueuePolicy(
        "line",
        new_sessions=new_sessions,
        window=window,
        abandon_after=200.0,
        grace=200.0,
        retry_after=1.0,
        max_retry_after=max_retry,
    )


@settings(max_examples=40, deadline=None)
@given(
    new_sessions=st.integers(1, 4),
    window=st.sampled_from([2.0, 5.0, 10.0]),
    max_retry=st.sampled_from([1.0, 10.0, 30.0]),
    length=st.integers(1, 60),
    subject=st.integers(0, 59),
    age=st.floats(0, FRESH),
)
def test_the_view_never_answers_a_ticket_that_could_be_called_before_its_next_poll(
    new_sessions: int, window: float, max_retry: float, length: int, subject: int, age: float
) -> None:
    asyncio.run(_check(policy(new_sessions, window, max_retry), length, subject % length, age))


async def _check(room: QueuePolicy, length: int, subject: int, age: float) -> None:
    clock = Clock()
    store = MemoryStore(clock)
    view = LineView(store, clock)
    turns: dict[str, Turn] = {}
    for i in range(length + room.new_sessions):
        turn = await store.queue(room, f"v{i}")
        if not turn.admitted:
            turns[f"v{i}"] = turn
            view.learn(room, turn, f"v{i}")
    sid = list(turns)[subject]
    clock.now += age
    cached = view.answer(room, sid, mark_of(turns[sid]))
    if cached is None:
        return
    assert cached.interval >= 1
    # Everyone else polls every second and comes in when called, nobody leaves: the subject must
    # not be called before its next poll, however late the page is (30 % of retry_after).
    deadline = clock.now + cached.interval + 0.3
    line = store.rooms._rooms["line"].line
    while clock.now < deadline:
        clock.now = min(deadline, clock.now + 0.5)
        for other in [s for s in turns if s != sid]:
            if (await store.queue(room, other)).admitted:
                del turns[other]
        assert sid not in line.called
    # ... and the store, asked now, still says the same ticket waits.
    assert not (await store.queue(room, sid)).admitted


async def test_a_stale_view_or_a_failed_flush_sends_the_poll_to_the_store() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    room = policy(1, 10.0, 60.0)
    view = LineView(store, clock)
    turns = {f"v{i}": await store.queue(room, f"v{i}") for i in range(40)}
    for sid, turn in turns.items():
        if not turn.admitted:
            view.learn(room, turn, sid)
    far = turns["v39"]
    cached = view.answer(room, "v39", mark_of(far))
    assert cached is not None
    assert cached.interval == 60
    assert cached.position >= 30
    assert view.answer(room, "v39", None) is None  # no mark: the store
    assert view.answer(room, "v2", mark_of(turns["v2"])) is None  # near the head: the store
    clock.now += FRESH + 0.1
    assert view.answer(room, "v39", mark_of(far)) is None  # the view is too old: the store

    class Failing(MemoryStore):
        async def still_here(self, room: QueuePolicy, beats: object) -> object:  # type: ignore[override]
            raise StoreError("down")

    failing = LineView(Failing(clock), clock)
    failing.learn(room, far, "v39")
    assert failing.answer(room, "v39", mark_of(far)) is not None
    await failing.flush()  # fails: the ticket's next poll goes to the store
    assert failing.answer(room, "v39", mark_of(far)) is None
    failing.learn(room, far, "v39")  # the store answered it again
    assert failing.answer(room, "v39", mark_of(far)) is not None


async def test_the_views_answer_reads_the_places_inside_as_old_as_the_view() -> None:
    """The places inside, as the store last told them, are read as many seconds later as the view
    is old: a silence since the last departure grows with it (rooms/estimate.py reads it)."""
    clock = Clock()
    store = MemoryStore(clock)
    room = QueuePolicy(
        "line", 1, 10.0, 200.0, 200.0, retry_after=1.0, max_retry_after=60.0, max_active=1, ttl=600.0
    )
    assert (await store.queue(room, "in")).admitted
    clock.now += 5
    assert await store.release("line", "in", 600.0)  # a departure
    turns = {f"v{i}": await store.queue(room, f"v{i}") for i in range(40)}
    far = turns["v39"]
    view = LineView(store, clock)
    view.learn(room, far, "v39")
    clock.now += 1.0
    cached = view.answer(room, "v39", mark_of(far))
    assert cached is not None
    assert far.inside.departed == 1
    assert cached.inside == far.inside.later(1.0)
    assert (cached.inside.span, cached.inside.silent) == (far.inside.span + 1.0, far.inside.silent + 1.0)


async def test_heartbeats_from_the_view_keep_far_back_tickets_alive_and_learn_their_places() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    room = QueuePolicy("line", 1, 10.0, abandon_after=20.0, grace=20.0, retry_after=1.0, max_retry_after=60.0)
    view = LineView(store, clock)
    turns = {f"v{i}": await store.queue(room, f"v{i}") for i in range(40)}
    far = turns.pop("v39")
    del turns["v0"]  # in at once
    answered = 0
    for _ in range(10):  # 150 s: far past due back (60 s) + abandon_after (20 s)
        clock.now += 15
        for sid in list(turns):  # everyone else asks the store (and comes in when called)
            turn = await store.queue(room, sid)
            if turn.admitted:
                del turns[sid]
            else:
                view.learn(room, turn, sid)
        assert view.answer(room, "v39", mark_of(far)) is not None
        answered += 1
        await view.flush()
    glance = await store.still_here(room, [("v39", 0.0)])
    assert answered == 10
    assert glance.ranks[0] is not None
    assert glance.ranks[0] == len(turns)  # and its place learnt
