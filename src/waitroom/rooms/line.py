"""A `fifo` room: first come, first in, with a place in line and an honest wait estimate.

A visitor who cannot enter at once gets a *ticket* (a signed cookie, see sessions.TICKET) naming a
session id the store keeps in the room's line. An ask of a ticket holder is one store call
(room_queue.lua, or MemoryStore.queue): it keeps the ticket alive, calls the next tickets in order
while the window has places, and answers the visitor's position and when to ask again (its poll
interval, from its place). A ticket far from the head is answered by the replica's line view
(line_view.py) instead, with no store call, when it cannot be called before its next poll.
Places are given at the room's rate (`new_sessions` per `window`), across every replica that shares
the store, and inside the cap (`max_active`); the visitor's estimate is estimate.py's.
docs/concepts.md, "The line", says what is guaranteed and what is not.

Called before an outage: while the store fails, the line is held (nobody is called, every ticket
keeps its number), but a ticket the store had already called holds its place in the window and the
cap, so its holder is let in at its first poll instead of after the outage, behind later tickets
called with it. A replica knows which tickets those are from the line's marks, heard in the store's
answers and in other replicas' tickets: every ticket numbered above `last_lapsed` and at most
`last_called` was called and has not given its place up, as long as its call cannot have lapsed
before the store went silent (_called_before). The admission is written back when the store
answers again (LocalSync, room_record.lua): the ticket leaves the line and takes its place inside.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from waitroom.config.schema import Config, RoomConfig
from waitroom.config.store import StoreErrorPolicy
from waitroom.metrics import METRICS
from waitroom.rooms.activity import active_ttl
from waitroom.rooms.estimate import line_estimate
from waitroom.rooms.line_view import Cached, LineView, mark_of
from waitroom.rooms.local_sync import LocalSync
from waitroom.rooms.policy import queue_policy
from waitroom.rooms.proof import KEY_PURPOSE, ProofOfWork, Result, visitor_binding
from waitroom.rooms.sessions import Session, SessionCodec, new_session_id
from waitroom.store.base import Clock, LineStore, Overloaded, QueuePolicy, StoreError, Turn
from waitroom.web.request import RequestFacts
from waitroom.web.wait import PAUSED, PROOF_HEADER, Challenge, Estimate, Place


def event_seed(codec: SessionCodec, room: RoomConfig) -> str:
    """The key of a scheduled opening's shuffle: the same on every replica (they share the signing
    key), a new one for each event (room and opening time), and unknown to clients, so that nobody
    can tell in advance which ids would come first."""
    return codec.derive(f"pre-queue|{room.name}|{room.opens_at.timestamp() if room.opens_at else 0}")


def client_key(address: str) -> str:
    """A client address as a store key holds it: hashed, never in the clear."""
    return hashlib.sha256(address.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Asked:
    """What the line said to one visitor."""

    admitted: bool
    session_id: str
    place: Place | None = None
    """None when the store could not tell (it failed and the policy decided, or the proxy shed)."""
    ticket: str | None = None
    """A ticket token to set: the visitor's place, kept across asks."""
    degraded: StoreErrorPolicy | None = None
    shed: str | None = None
    refused: int = 0
    """No place (tickets_per_ip, places_per_ip): seconds until the address may ask again."""
    challenge: Challenge | None = None
    """A room with proof of work, a visitor with neither a ticket nor a good proof: solve this
    first. No store call was made."""
    retry_after: int = 0
    """A waiting ticket: whole seconds until it should ask again (0: the room's retry_after)."""


class Line:
    """Asks the store for a `fifo` room's decision; the failure policy's when the store fails."""

    def __init__(
        self,
        config: Config,
        store: LineStore,
        codec: SessionCodec,
        clock: Clock,
        sync: LocalSync,
        new_id: Callable[[], str] = new_session_id,
        released: Callable[[str, str], bool] = lambda room, session_id: False,
    ) -> None:
        self.new_id = new_id
        """New session ids (a replay hands over its recording's)."""
        self.released = released
        """Whether a session of a room was released, as far as this replica knows (Activity)."""
        self.failing_since: float | None = None
        """When the store's answers to this replica's asks started failing (None: it answers)."""
        self.marks: dict[str, tuple[int, int, int]] = {}
        """Room → (line epoch, last_called, last_lapsed): the latest this replica heard, from the
        store's answers to tickets here and from the tickets other replicas issued."""
        self.config = config
        self.store = store
        self.codec = codec
        self.clock = clock
        self.sync = sync
        self.proofs = ProofOfWork(codec.purpose_keys(KEY_PURPOSE))
        """The rooms' proof-of-work challenges (rooms[].proof_of_work)."""
        remote = not config.store.url.startswith("memory://")
        self.view: LineView | None = LineView(store, clock) if remote and config.store.line_view else None
        """The line view (store.line_view); none on the embedded store, whose calls cost no round
        trip."""

    async def ask(self, room: RoomConfig, facts: RequestFacts, tokens: Sequence[str], *, hold: bool) -> Asked:
        """`room` with the run-time settings applied; `tokens`: the request's values of the room's
        cookie; `hold`: an operator holds every new visitor."""
        now = self.clock()
        user_agent = facts.user_agent  # what tickets are bound to
        ticket = next(
            (t for token in tokens if (t := self.codec.ticket(token, room.name, now, user_agent))), None
        )
        held = ticket.session_id if ticket else None
        if ticket is not None and ticket.calls is not None:
            self._learn(room.name, ticket.calls)
        seed = event_seed(self.codec, room) if room.opens_at else ""
        policy = queue_policy(room, hold=hold, ttl=active_ttl(self.config.session.ttl), seed=seed)
        if ticket is not None and self.view is not None:
            cached = self.view.answer(policy, ticket.session_id, ticket.mark)
            if cached is not None:  # far back: no store call (never an admission, never a ticket)
                METRICS.line.polls.labels(room.name, "view").inc()
                return self._cached(room, ticket, cached, now, user_agent)
        session_id = held or self._newcomer(room, facts, now)
        if session_id is None:
            return self._challenge(room, facts, now)
        if facts.waited > self.config.store.max_wait:
            # Saturated: shed without a store call. A ticket holder keeps its cookie (and its place
            # while it asks again within abandon_after); a newcomer tries again later.
            METRICS.store.shed.labels("queue").inc()
            return Asked(False, session_id, shed="queue")
        try:
            per_address = room.tickets_per_ip or room.places_per_ip
            address = client_key(facts.client_ip(self.config.client_ip)) if per_address else ""
            turn, degraded, maybe_done = await self._ask(room, policy, session_id, address)
            if turn is not None and turn.used:  # a spent ticket: a newcomer after all
                fresh = self._newcomer(room, facts, now, spent=session_id)
                if fresh is None:
                    return self._challenge(room, facts, now)
                held, session_id = None, fresh
                turn, degraded, maybe_done = await self._ask(room, policy, session_id, address)
        except Overloaded as e:
            METRICS.store.shed.labels(e.reason).inc()
            # The store may have put a newcomer in the line: keep the id, so the next ask finds it.
            return Asked(
                False,
                session_id,
                ticket=None if held else self._ticket(room, session_id, 0, now, user_agent),
                shed=e.reason,
            )
        if turn is None and ticket is not None and self._called_before(room, ticket, now, degraded):
            METRICS.line.called_in_outage.labels(room.name).inc()
            self.sync.admitted_called(room, ticket.session_id, now)
            return Asked(True, ticket.session_id, degraded=degraded)
        if turn is None:  # closed: wait; a newcomer the store may have put in line keeps the id
            keep = maybe_done and not held
            return Asked(
                False,
                session_id,
                ticket=self._ticket(room, session_id, 0, now, user_agent) if keep else None,
                degraded=degraded,
            )
        self._learn(room.name, (turn.epoch, turn.last_called, turn.last_lapsed))
        if turn.admitted:
            return Asked(True, session_id, degraded=degraded)
        if turn.refused:
            METRICS.line.tickets_refused.labels(room.name).inc()
            # A slot: the address's tickets this minute end then; none: it holds its places_per_ip,
            # which free up when one of them ends, and no clock says when.
            wait = max(1, math.ceil(turn.slot)) if turn.slot else room.retry_after_seconds
            return Asked(False, session_id, refused=wait, degraded=degraded)
        if held:
            METRICS.line.polls.labels(room.name, "store").inc()
        interval = _whole(room, turn.interval)
        mark = None
        if self.view is not None:
            self.view.learn(policy, turn, session_id)
            mark = mark_of(turn)
        calls = self._calls(room.name, turn.epoch)
        token = self._ticket(room, session_id, turn.ticket, now, user_agent, interval, mark, calls)
        if turn.prequeue:
            opens_in = max(1, math.ceil(policy.opens_at - turn.now))
            place = Place(
                turn.position, turn.queue_length, Estimate(None, "opening"), opens_in, policy.opens_at
            )
            return Asked(False, session_id, place, token, degraded=degraded, retry_after=interval)
        # An operator's hold: no figure is honest while it lasts.
        estimate = (
            PAUSED
            if hold
            else line_estimate(
                room,
                position=turn.position,
                called=turn.called,
                slot=turn.slot,
                now=turn.now,
                inside=turn.inside,
            )
        )
        place = Place(turn.position, turn.queue_length, estimate)
        return Asked(False, session_id, place, token, degraded=degraded, retry_after=interval)

    def _called_before(
        self, room: RoomConfig, ticket: Session, now: float, degraded: StoreErrorPolicy | None
    ) -> bool:
        """The store failed and holds the line (`local`, `closed`), and `ticket` was called before:
        numbered within the latest marks known here for its line, and its call cannot have lapsed
        (nor the ticket been dropped) before the store went silent — it went silent less than the
        grace (or abandon_after, when that is shorter) after the ticket was due back (its token's
        expiry less abandon_after and grace, as _ticket sets it). While nobody reaches the store,
        its calls wait (room_queue.lua moves them on by the silence). A pre-queue ticket (number 0)
        is never let in this way."""
        if degraded not in (StoreErrorPolicy.LOCAL, StoreErrorPolicy.CLOSED):
            return False
        epoch, last_called, last_lapsed = self.marks.get(room.name, (0, 0, 0))
        if ticket.calls is None or ticket.calls[0] != epoch:  # numbered in another line's count
            return False
        if not last_lapsed < ticket.issued_at <= last_called:
            return False
        due = ticket.expires_at - room.abandon_after_seconds - room.grace_seconds
        silent_since = self.failing_since or now  # this replica's first failed call, at or before now
        if silent_since >= due + min(room.grace_seconds, room.abandon_after_seconds):
            return False
        return not self.released(room.name, ticket.session_id)

    def _learn(self, room: str, calls: tuple[int, int, int]) -> None:
        """Marks heard (from the store, or a ticket): a newer line's replace the known ones; the same
        line's only ever grow (an older ticket carries older marks); an older line's are ignored."""
        if not calls[0]:  # no line heard of
            return
        known = self.marks.get(room)
        if known is None or calls[0] > known[0]:
            self.marks[room] = calls
        elif calls[0] == known[0]:
            self.marks[room] = (known[0], max(known[1], calls[1]), max(known[2], calls[2]))

    def _calls(self, room: str, epoch: int) -> tuple[int, int, int] | None:
        """What a ticket numbered in the line of `epoch` carries (CALLED): the marks known here for
        that line, to pass on to the replicas it asks next."""
        if not epoch:
            return None
        known = self.marks.get(room, (0, 0, 0))
        return (epoch, known[1], known[2]) if known[0] == epoch else (epoch, 0, 0)

    def _cached(self, room: RoomConfig, ticket: Session, cached: Cached, now: float, bind: str) -> Asked:
        """A ticket's answer from the line view: its place (at least this far ahead), the estimate
        from it, the next interval, and its ticket renewed with the same number."""
        estimate = line_estimate(
            room,
            position=cached.position,
            called=cached.called,
            slot=cached.now - room.window,
            now=cached.now,
            inside=cached.inside,
        )
        session_id, number = ticket.session_id, ticket.issued_at
        calls = self._calls(room.name, ticket.calls[0] if ticket.calls else 0)
        token = self._ticket(room, session_id, number, now, bind, cached.interval, cached.mark, calls)
        place = Place(cached.position, cached.length, estimate)
        return Asked(False, session_id, place, token, retry_after=cached.interval)

    # Proof of work (rooms[].proof_of_work, rooms/proof.py): the one check before a newcomer is
    # given a place of any kind (a ticket, a pre-queue draw, a direct entry into an empty line).

    def _newcomer(self, room: RoomConfig, facts: RequestFacts, now: float, spent: str = "") -> str | None:
        """The session id of a visitor without a ticket: a new one; in a room with proof of work,
        the one its proof names, or None (no good proof, or the proof of a place already used:
        `spent`), and the visitor gets a challenge instead."""
        if room.proof_of_work is None:
            return self.new_id()
        checked = self.proofs.check(facts.header(PROOF_HEADER), room, _binding(self.config, facts), now)
        result = Result.SPENT if spent and checked.session_id == spent else checked.result
        METRICS.line.proofs.labels(room.name, result.value).inc()
        return checked.session_id if result is Result.ACCEPTED else None

    def _challenge(self, room: RoomConfig, facts: RequestFacts, now: float) -> Asked:
        challenge = self.proofs.challenge(room, _binding(self.config, facts), now)
        return Asked(False, "", challenge=challenge)

    def _ticket(
        self,
        room: RoomConfig,
        session_id: str,
        number: int,
        now: float,
        bind: str,
        interval: int = 0,
        mark: tuple[int, int] | None = None,
        calls: tuple[int, int, int] | None = None,
    ) -> str:
        # Alive as long as the store can still hold it (due back after its interval, abandoned
        # abandon_after later, called within grace); renewed with every answer while it waits.
        expires = (
            now + max(interval, room.retry_after_seconds) + room.abandon_after_seconds + room.grace_seconds
        )
        return self.codec.issue_ticket(room.name, session_id, number, expires, bind, mark, calls)

    async def _ask(
        self, room: RoomConfig, policy: QueuePolicy, session_id: str, client: str
    ) -> tuple[Turn | None, StoreErrorPolicy | None, bool]:
        """The store's turn; when the store fails, the `store.on_error` policy's (None: wait), the
        policy, and whether the store may have carried the ask out all the same."""
        if self.failing_since is not None:  # the store does not count an outage against anyone
            policy = replace(policy, unheard_for=max(0.0, self.clock() - self.failing_since))
        try:
            await self.sync.before_shared(room)
            turn = await self.store.queue(policy, session_id, client)
            self.failing_since = None
            return turn, None, False
        except StoreError as e:
            failed = self.sync.on_error.failed(e, f"room {room.name}")
            self.failing_since = self.failing_since or self.clock()
        # `local` holds a line as `closed` does: nobody is called, and every ticket keeps its number
        # in the store for when it answers again. A line per replica would renumber the tickets,
        # call visitors out of order and let each replica fill the window and the cap on its own.
        opened = Turn(True, 0, 0, 0, 0, 0.0, self.clock()) if failed.policy is StoreErrorPolicy.OPEN else None
        return opened, failed.policy, failed.maybe_done


def _whole(room: RoomConfig, interval: float) -> int:
    """A poll interval in the whole seconds of `Retry-After`: rounded down (the store holds the
    ticket due back at the exact time, a little later), never below the room's retry_after."""
    return max(room.retry_after_seconds, math.floor(interval))


def _binding(config: Config, facts: RequestFacts) -> bytes:
    """What a challenge is bound to: the visitor's address in canonical form (an IPv6 client by its
    /64, as every per-address count keys it) and its User-Agent."""
    return visitor_binding(facts.client_ip(config.client_ip), facts.user_agent)
