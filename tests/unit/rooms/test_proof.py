"""rooms/proof.py and its one hook in the line: a challenge is verified without a store call, bound
to its room, its time and its visitor; one proof is one place, whatever way in (a direct entry into
an empty line, a ticket, a pre-queue draw), and sending it again names that place or, once the place
was used, brings a new challenge. On the embedded store with an injected clock."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import REPO, visit
from waitroom.config.fields import ConfigError
from waitroom.config.overrides import Overrides, check_room_value
from waitroom.config.schema import Config, RoomConfig, parse_config
from waitroom.metrics import METRICS
from waitroom.rooms.decider import Decider, Decision, Outcome
from waitroom.rooms.proof import KEY_PURPOSE, ProofOfWork, Result, solve, visitor_binding, work_done
from waitroom.rooms.sessions import SessionCodec, cookie_name, keys_from_secret
from waitroom.store.base import QueuePolicy, Turn
from waitroom.store.memory import MemoryStore
from waitroom.web.request import RequestFacts
from waitroom.web.wait import PROOF_HEADER, Challenge

KEYS = keys_from_secret("unit-test-secret-0123456789")
OLD_KEYS = keys_from_secret("an-older-secret-0123456789")
NOW = 1_800_000_000.0
VISITOR = visitor_binding("203.0.113.7", "Firefox/140")


def room_config(difficulty: int = 8, **fields: object) -> Config:
    room: dict[str, object] = {
        "name": "shop",
        "match": {"path_prefix": "/"},
        "queue": "fifo",
        "new_sessions": 1,
        "window": "60s",
        "retry_after": "4s",
        "proof_of_work": {"difficulty": difficulty},
    }
    room.update(fields)
    return parse_config({"rooms": [room]})


SHOP = room_config().rooms[0]
POW = ProofOfWork(SessionCodec(KEYS, 600).purpose_keys(KEY_PURPOSE))


def solved(challenge: Challenge) -> str:
    return f"{challenge.token};{solve(challenge.token, challenge.difficulty)}"


def with_room(room: RoomConfig, **changes: object) -> RoomConfig:
    return room.model_copy(update=changes)


def test_a_solved_challenge_is_a_place_that_every_replica_names_alike() -> None:
    challenge = POW.challenge(SHOP, VISITOR, NOW)
    assert (challenge.difficulty, challenge.expires_in) == (8, 30)
    assert len(challenge.token) < 140
    proof = solved(challenge)
    checked = POW.check(proof, SHOP, VISITOR, NOW + 1)
    assert checked.result is Result.ACCEPTED
    assert checked.session_id is not None
    assert len(checked.session_id) == 16
    replica = ProofOfWork(SessionCodec(KEYS, 600).purpose_keys(KEY_PURPOSE))
    assert replica.check(proof, SHOP, VISITOR, NOW + 2) == checked  # the same place, no shared state
    other = POW.challenge(SHOP, VISITOR, NOW)
    assert POW.check(solved(other), SHOP, VISITOR, NOW).session_id != checked.session_id
    # Spaces around the parts are no reason to refuse a genuine proof.
    token, nonce = proof.split(";")
    assert POW.check(f" {token} ; {nonce} ", SHOP, VISITOR, NOW).result is Result.ACCEPTED


def test_a_proof_is_bound_to_its_room_its_visitor_and_our_keys() -> None:
    challenge = POW.challenge(SHOP, VISITOR, NOW)
    proof = solved(challenge)
    other_room = with_room(SHOP, name="other")
    assert POW.check(proof, other_room, VISITOR, NOW).result is Result.INVALID
    for visitor in (visitor_binding("203.0.113.7", "curl/8"), visitor_binding("203.0.113.8", "Firefox/140")):
        assert POW.check(proof, SHOP, visitor, NOW) == (None, Result.INVALID)
    stranger = ProofOfWork(SessionCodec(OLD_KEYS, 600).purpose_keys(KEY_PURPOSE))
    assert stranger.check(proof, SHOP, VISITOR, NOW).result is Result.INVALID
    # Any field changed (and solved again, so the work is right) breaks the signature.
    version, name, issued, difficulty, salt, mac = challenge.token.split(".")
    for changed in (
        [version, name, str(int(issued) + 60_000), difficulty, salt, mac],  # a later time
        [version, name, issued, "9", salt, mac],  # harder than asked: still not ours
        [version, name, issued, difficulty, salt[::-1], mac],  # another place
    ):
        token = ".".join(changed)
        assert POW.check(f"{token};{solve(token, 8)}", SHOP, VISITOR, NOW).result is Result.INVALID


def test_a_rotated_key_still_verifies_the_challenges_it_signed() -> None:
    old = ProofOfWork(SessionCodec(OLD_KEYS, 600).purpose_keys(KEY_PURPOSE))
    both = ProofOfWork(SessionCodec(KEYS + OLD_KEYS, 600).purpose_keys(KEY_PURPOSE))
    proof = solved(old.challenge(SHOP, VISITOR, NOW))
    assert both.check(proof, SHOP, VISITOR, NOW).result is Result.ACCEPTED


def test_not_enough_work_is_no_proof() -> None:
    hard = room_config(difficulty=16).rooms[0]
    challenge = POW.challenge(hard, VISITOR, NOW)
    nonce = solve(challenge.token, 16)
    assert POW.check(f"{challenge.token};{nonce}", hard, VISITOR, NOW).result is Result.ACCEPTED
    wrong = next(n for n in range(nonce + 1, nonce + 100_000) if not work_done(challenge.token, n, 16))
    assert POW.check(f"{challenge.token};{wrong}", hard, VISITOR, NOW).result is Result.INVALID


def test_a_proof_expires_and_a_raised_difficulty_voids_easier_ones() -> None:
    proof = solved(POW.challenge(SHOP, VISITOR, NOW))
    assert POW.check(proof, SHOP, VISITOR, NOW + 30).result is Result.ACCEPTED
    assert POW.check(proof, SHOP, VISITOR, NOW + 30.001) == (None, Result.EXPIRED)
    # Dated ahead of this replica's clock: a few seconds of skew pass, more is no proof.
    assert POW.check(proof, SHOP, VISITOR, NOW - 4).result is Result.ACCEPTED
    assert POW.check(proof, SHOP, VISITOR, NOW - 6).result is Result.INVALID
    short = room_config(proof_of_work={"difficulty": 8, "ttl": "10s"}).rooms[0]
    assert POW.check(proof, short, VISITOR, NOW + 11).result is Result.EXPIRED
    narrow = room_config(window="12s").rooms[0]  # the default ttl is never longer than the window
    assert narrow.proof_ttl_seconds == 12
    harder = room_config(difficulty=9).rooms[0]
    assert POW.check(proof, harder, VISITOR, NOW).result is Result.EXPIRED


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_header_value_is_a_result_never_an_exception(value: str) -> None:
    assert POW.check(value, SHOP, VISITOR, NOW).session_id is None


def test_shapes_that_are_no_proof() -> None:
    token = POW.challenge(SHOP, VISITOR, NOW).token
    nonce = solve(token, 8)
    for value in (
        None,
        "",
        token,  # no nonce
        f"{token};",
        f"{token};-1",
        f"{token};{2**32 + nonce}",
        f"{token};0x10",
        f"{token};{nonce};{nonce}",
        f"{token}.x;{nonce}",
        f"w2{token[2:]};{nonce}",
        f"{token};{nonce}" + " " * 300,
        f"{token.replace('.', '..', 1)};{nonce}",
    ):
        assert POW.check(value, SHOP, VISITOR, NOW).session_id is None, value
    assert POW.check(f"{token};{nonce}", room_config().rooms[0], VISITOR, NOW).session_id is not None
    no_proof_room = with_room(SHOP, proof_of_work=None)
    assert POW.check(f"{token};{nonce}", no_proof_room, VISITOR, NOW).session_id is None


def test_the_solver_in_the_docs_runs_and_agrees() -> None:
    text = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    found = re.search(r"\*\*JSON clients\*\*.*?```python\n(.*?)```", text, re.S)
    assert found is not None, "docs/security.md: the reference solver is gone"
    space: dict[str, Any] = {}
    exec(found.group(1), space)  # the documented code, as a reader would paste it
    challenge = POW.challenge(SHOP, VISITOR, NOW)
    nonce = space["solve"](challenge.token, challenge.difficulty)
    assert nonce == solve(challenge.token, challenge.difficulty)
    assert POW.check(f"{challenge.token};{nonce}", SHOP, VISITOR, NOW).result is Result.ACCEPTED


def test_the_reference_solver_and_the_check_agree_on_the_puzzle() -> None:
    token = "w1.shop.1800000000000.12.AAAAAAAAAAAAAAAA.x"
    nonce = solve(token, 12)
    seed = hashlib.sha256(token.encode()).digest()
    digest = hashlib.sha256(seed + nonce.to_bytes(4, "big")).digest()
    assert int.from_bytes(digest, "big") < 2 ** (256 - 12)
    assert all(not work_done(token, n, 12) for n in range(nonce))  # the first one
    assert work_done(token, nonce, 12)


# --- through the decider, on the embedded store --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Visitor:
    """One client: its cookies for the room, its User-Agent, and the proof it sends."""

    def __init__(self, decider: Decider, user_agent: str = "Firefox/140") -> None:
        self.decider = decider
        self.user_agent = user_agent
        self.cookie: str | None = None
        self.proof: str | None = None

    async def ask(self, *, proof: str | None = None) -> Decision:
        name = cookie_name(self.decider.config, self.decider.config.rooms[0])
        headers = {"user-agent": self.user_agent}
        if proof or self.proof:
            headers[PROOF_HEADER.lower()] = proof or self.proof or ""
        facts = RequestFacts(
            "h",
            "/",
            "GET",
            "127.0.0.1",
            lambda wanted: headers.get(wanted.lower()),
            0.0,
            lambda wanted: [self.cookie] if wanted == name and self.cookie else [],
        )
        decision = await self.decider.decide(facts, self.decider.router.route("h", "/"))
        self.cookie = decision.cookie or decision.pending or self.cookie
        return decision

    async def solve_and_ask(self) -> Decision:
        first = await self.ask()
        assert first.challenge is not None, first
        self.proof = solved(first.challenge)
        return await self.ask()


def decider_for(config: Config, clock: Clock, store: MemoryStore | None = None) -> Decider:
    return Decider(config, store or MemoryStore(clock), SessionCodec(KEYS, 600), clock)


class NoQueueCalls(MemoryStore):
    """A store that must not be asked for a place."""

    async def queue(self, room: QueuePolicy, session_id: str, client: str = "") -> Turn:
        raise AssertionError("the store was asked without a proof")


async def test_without_a_proof_a_newcomer_gets_a_challenge_and_the_store_is_not_asked() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock, NoQueueCalls(clock))
    before = METRICS.line.proofs.labels("shop", "challenged")._value.get()
    for proof in (None, "garbage", "w1.shop.1.8.AAAAAAAAAAAAAAAA.x;1"):
        decision = await Visitor(decider).ask(proof=proof)
        assert (decision.outcome, decision.cookie, decision.pending) == (Outcome.WAITING, None, None)
        assert decision.challenge is not None
        assert decision.challenge.difficulty == 8
    assert METRICS.line.proofs.labels("shop", "challenged")._value.get() == before + 1


async def test_every_way_in_needs_the_proof() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock)
    first = Visitor(decider)
    direct = await first.solve_and_ask()  # an empty line: a direct entry, after the proof
    assert direct.outcome is Outcome.ADMITTED
    second = Visitor(decider)
    ticket = await second.solve_and_ask()  # the window is full: a ticket, after the proof
    assert ticket.outcome is Outcome.WAITING
    assert ticket.place is not None
    here = visitor_binding("127.0.0.1", "Firefox/140")
    assert ticket.session_id == POW.check(second.proof, SHOP, here, NOW).session_id
    # Before a scheduled opening: a pre-queue draw, after the proof.
    later = (datetime.fromtimestamp(NOW, UTC) + timedelta(hours=1)).isoformat()
    event = decider_for(room_config(opens_at=later), clock)
    draw = await Visitor(event).solve_and_ask()
    assert draw.place is not None
    assert draw.place.opens_in is not None


async def test_a_ticket_holder_needs_no_new_proof() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock)
    await Visitor(decider).solve_and_ask()  # takes the window's one place
    holder = Visitor(decider)
    first = await holder.solve_and_ask()
    holder.proof = None
    for _ in range(14):
        clock.now += 4
        again = await holder.ask()
        assert again.challenge is None
        assert (again.outcome, again.session_id) == (Outcome.WAITING, first.session_id)
    clock.now += 4  # the window's place frees up: in, on the ticket alone
    assert (await holder.ask()).outcome is Outcome.ADMITTED


async def test_one_proof_is_one_place() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock)
    await Visitor(decider).solve_and_ask()
    scalper = Visitor(decider)
    first = await scalper.solve_and_ask()
    assert first.place is not None
    # The same proof from fresh clients (no cookie), again and again: the same ticket, the line
    # does not grow.
    for _ in range(3):
        copy = Visitor(decider)
        again = await copy.ask(proof=scalper.proof)
        assert again.session_id == first.session_id
        assert again.place is not None
        assert again.place.queue_length == 1
    newcomer = await Visitor(decider).solve_and_ask()
    assert newcomer.place is not None
    assert newcomer.place.queue_length == 2


async def test_a_used_proof_brings_a_new_challenge() -> None:
    clock = Clock()
    config = room_config()
    decider = decider_for(config, clock)
    visitor = Visitor(decider)
    admitted = await visitor.solve_and_ask()
    assert admitted.outcome is Outcome.ADMITTED
    # Within `grace` the proof gets its holder in again (the answer may have been lost), under the
    # same session: still one place.
    clock.now += 1
    again = await Visitor(decider).ask(proof=visitor.proof)
    assert (again.outcome, again.session_id) == (Outcome.ADMITTED, admitted.session_id)
    # After it, the proof is spent, for as long as it could be sent (its ttl): a new challenge.
    spent = METRICS.line.proofs.labels("shop", "spent")._value.get()
    clock.now += config.rooms[0].grace_seconds
    later = await Visitor(decider).ask(proof=visitor.proof)
    assert later.challenge is not None
    assert later.session_id is None
    assert METRICS.line.proofs.labels("shop", "spent")._value.get() == spent + 1
    clock.now = NOW + config.rooms[0].proof_ttl_seconds + 0.5
    expired = await Visitor(decider).ask(proof=visitor.proof)
    assert expired.challenge is not None


async def test_a_ticket_used_long_ago_needs_a_new_proof_to_join_again() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock)
    await Visitor(decider).solve_and_ask()
    visitor = Visitor(decider)
    ticket = await visitor.solve_and_ask()
    assert ticket.place is not None
    visitor.proof = None
    for _ in range(16):  # polls until its turn comes, when the first admission leaves the window
        clock.now += 4
        if (await visitor.ask()).outcome is Outcome.ADMITTED:
            break
    assert clock.now == NOW + 60
    # Its ticket kept (a copy), sent again long after: used, and a newcomer needs a proof.
    clock.now += 20
    visitor.cookie = ticket.pending
    assert (await visitor.ask()).challenge is not None


async def test_an_operator_raises_the_difficulty_or_turns_it_off_at_run_time() -> None:
    clock = Clock()
    decider = decider_for(room_config(), clock)
    easy = await Visitor(decider).ask()
    assert easy.challenge is not None
    decider.set_overrides(Overrides({"room:shop:proof_of_work": check_room_value("proof_of_work", 10)}))
    visitor = Visitor(decider)
    void = await visitor.ask(proof=solved(easy.challenge))  # made at 8: void at 10
    assert void.challenge is not None
    assert void.challenge.difficulty == 10
    assert (await visitor.solve_and_ask()).outcome is Outcome.ADMITTED
    decider.set_overrides(Overrides({"room:shop:proof_of_work": check_room_value("proof_of_work", None)}))
    off = await Visitor(decider).ask()
    assert (off.challenge, off.place is not None) == (None, True)


async def test_a_room_without_proof_of_work_is_unchanged() -> None:
    clock = Clock()
    config = parse_config(
        yaml.safe_load(
            "rooms: [{name: shop, match: {path_prefix: /}, queue: fifo, new_sessions: 1, retry_after: 4s}]"
        )
    )
    decider = decider_for(config, clock)
    assert (await visit(decider)).outcome is Outcome.ADMITTED
    waiting = await visit(decider)
    assert (waiting.challenge, waiting.place is not None) == (None, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"queue": "block"}, "rooms[0]: proof_of_work needs queue: fifo"),
        ({"window": "4s"}, "rooms[0]: proof_of_work needs a window of at least 5s"),
        (
            {"window": "10s", "proof_of_work": {"ttl": "20s"}},
            "rooms[0]: proof_of_work.ttl (20s) must not be longer than window (10s)",
        ),
        ({"proof_of_work": {"ttl": "2s"}}, "rooms[0].proof_of_work.ttl: must be at least 5s"),
        ({"proof_of_work": {"difficulty": 25}}, "rooms[0].proof_of_work.difficulty: "),
        ({"proof_of_work": {"difficulty": 0}}, "rooms[0].proof_of_work.difficulty: "),
        ({"proof_of_work": {"difficulty": 16, "rounds": 2}}, "rooms[0].proof_of_work.rounds: "),
    ],
)
def test_the_config_refuses_a_proof_of_work_that_could_not_hold(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        room_config(**fields)
    assert message in str(e.value)
