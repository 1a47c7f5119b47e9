"""Proof of work for JSON clients, end to end on `waitroom serve` (rooms[].proof_of_work): a script
reads the challenge from the JSON answer, solves it with the reference solver (docs/security.md)
and sends the solution in `Waitroom-Proof`. One proof is one place: sent again, by anyone, it names
the same session or ticket, on any replica that shares the store (two replicas on one Redis), and
once its place was used it is spent; it is bound to its room, its client's address and User-Agent;
anything else is a new challenge, never a place, never an error, and never reaches the upstream.
The expiry is in tests/unit/rooms/test_proof.py (it takes a ttl to see).

Serve only: the entry point does not change how a room decides (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support import Mitmdump, RedisServer, Upstream, wait_for
from waitroom.rooms.proof import solve
from waitroom.rooms.sessions import token_session_id

pytestmark = pytest.mark.e2e

JSON = {"Accept": "application/json"}
DIFFICULTY = 12

CONFIG = f"""
client_ip: {{trusted_proxies: 1}}
rooms:
  - name: line
    match: {{path_prefix: /line}}
    queue: fifo
    new_sessions: 1
    window: 60s
    retry_after: 1s
    grace: 30s
    proof_of_work: {{difficulty: {DIFFICULTY}}}
  - name: other
    match: {{path_prefix: /other}}
    queue: fifo
    new_sessions: 5
    proof_of_work: {{difficulty: {DIFFICULTY}}}
  - name: plain
    match: {{path_prefix: /plain}}
    queue: fifo
    new_sessions: 1
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mitmdump, Upstream]]:
    workdir: Path = tmp_path_factory.mktemp("proof")
    upstream = Upstream()
    config = workdir / "waitroom.yaml"
    config.write_text(CONFIG)
    started = Mitmdump(upstream.url, workdir, config, env={"WAITROOM_SECRET": SECRET}, entry="serve")
    try:
        yield started.wait_ready(), upstream
    finally:
        started.stop()
        upstream.close()


def client(base: str, address: str, user_agent: str = "ticket-script/1.0") -> httpx.Client:
    """A JSON client from `address` (the trusted hop's X-Forwarded-For), with its own cookies."""
    headers = {**JSON, "User-Agent": user_agent, "X-Forwarded-For": address}
    return httpx.Client(base_url=base, headers=headers, timeout=10)


def solved(answer: httpx.Response) -> str:
    """What a JSON client does with a challenge (docs/security.md, "Proof of work")."""
    work = answer.json()["proof_of_work"]
    return f"{work['challenge']};{solve(work['challenge'], work['difficulty'])}"


def cookie_id(answer: httpx.Response, room: str) -> str | None:
    token = answer.cookies.get(f"waitroom_{room}")
    return token_session_id(token) if token else None


def test_a_json_client_solves_the_challenge_and_one_proof_is_one_place(
    proxy: tuple[Mitmdump, Upstream],
) -> None:
    server, upstream = proxy
    with client(server.url, "198.51.100.1") as first:
        challenge = first.get("/line/buy")
        assert (challenge.status_code, challenge.headers["Waitroom-Status"]) == (503, "challenge")
        fields = challenge.json()
        assert (fields["status"], fields["state"]) == ("waiting", "challenge")
        work = fields["proof_of_work"]
        assert (work["difficulty"], work["header"], work["expires_in"]) == (DIFFICULTY, "Waitroom-Proof", 30)
        assert work["challenge"].startswith("w1.line.")
        assert "set-cookie" not in challenge.headers  # no place, no store call: nothing to keep
        proof = solved(challenge)
        # The line is empty: a direct entry, after the proof.
        entered = first.get("/line/buy", headers={"Waitroom-Proof": proof})
        assert entered.status_code == 200
        session = cookie_id(entered, "line")
        assert session is not None
    assert [s.path for s in upstream.seen] == ["/line/buy"]  # the challenge never reached it

    # The same proof, sent again by a fresh client of the same address and User-Agent (the answer
    # was lost, or a copy): the same session, not a second one.
    with client(server.url, "198.51.100.1") as copy:
        again = copy.get("/line/buy", headers={"Waitroom-Proof": proof})
        assert again.status_code == 200
        assert cookie_id(again, "line") == session

    # The window's one place is taken: the next proof gets a ticket, and copies of it the same ticket.
    with client(server.url, "198.51.100.2") as second:
        ticket_proof = solved(second.get("/line/buy"))
        ticket = second.get("/line/buy", headers={"Waitroom-Proof": ticket_proof})
        assert ticket.status_code == 503
        assert (ticket.json()["state"], ticket.json()["position"], ticket.json()["queue_length"]) == (
            "line",
            0,
            1,
        )
        held = cookie_id(ticket, "line")
        assert held is not None
        # Holding the ticket, it polls without the proof.
        poll = second.get("/line/buy")
        assert (poll.json()["state"], poll.json()["position"]) == ("line", 0)
    for _ in range(3):
        with client(server.url, "198.51.100.2") as copy:
            replay = copy.get("/line/buy", headers={"Waitroom-Proof": ticket_proof})
            assert replay.json()["queue_length"] == 1  # the line did not grow
            assert cookie_id(replay, "line") == held


def test_a_proof_is_bound_to_its_room_and_its_visitor(proxy: tuple[Mitmdump, Upstream]) -> None:
    server, upstream = proxy
    seen = len(upstream.seen)
    with client(server.url, "198.51.100.7") as owner:
        proof = solved(owner.get("/other/item"))
    refused = {
        "another User-Agent": client(server.url, "198.51.100.7", "Mozilla/5.0"),
        "another address": client(server.url, "198.51.100.8"),
    }
    for why, stranger in refused.items():
        with stranger:
            answer = stranger.get("/other/item", headers={"Waitroom-Proof": proof})
            assert answer.json()["state"] == "challenge", why
            assert "set-cookie" not in answer.headers, why
    with client(server.url, "198.51.100.7") as owner:
        elsewhere = owner.get("/line/item", headers={"Waitroom-Proof": proof})  # room other → room line
        assert elsewhere.json()["state"] == "challenge"
        for junk in ("x", proof + "0" * 300, proof.replace(";", ";;"), "w1.other.1.12.AAAAAAAAAAAAAAAA.x;5"):
            answer = owner.get("/other/item", headers={"Waitroom-Proof": junk})
            assert (answer.status_code, answer.json()["state"]) == (503, "challenge")
        # Its owner, as it is: in.
        assert owner.get("/other/item", headers={"Waitroom-Proof": proof}).status_code == 200
    assert len(upstream.seen) == seen + 1


def test_a_room_without_proof_of_work_is_unchanged(proxy: tuple[Mitmdump, Upstream]) -> None:
    server, _ = proxy
    with client(server.url, "198.51.100.9") as plain:
        assert plain.get("/plain/item").status_code == 200
    with client(server.url, "198.51.100.10") as plain:
        waiting = plain.get("/plain/item")
        assert waiting.headers["Waitroom-Status"] == "waiting"
        assert "proof_of_work" not in waiting.json()
        assert waiting.json()["state"] == "line"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mitmdump, Mitmdump]]:
    """Two replicas of one room on one Redis: what one proves, the other honours alike."""
    workdir: Path = tmp_path_factory.mktemp("proof-redis")
    redis, upstream = RedisServer(workdir), Upstream()
    config = workdir / "waitroom.yaml"
    config.write_text(
        f"""
store: {{url: "{redis.url}", timeout: 1s}}
client_ip: {{trusted_proxies: 1}}
rooms:
  - name: sale
    match: {{path_prefix: /sale}}
    queue: fifo
    new_sessions: 1
    window: 60s
    retry_after: 1s
    grace: 2s
    proof_of_work: {{difficulty: {DIFFICULTY}}}
"""
    )
    started = [
        Mitmdump(upstream.url, workdir, config, env={"WAITROOM_SECRET": SECRET}, entry="serve")
        for _ in range(2)
    ]
    try:
        yield started[0].wait_ready(), started[1].wait_ready()
    finally:
        for proxy in started:
            proxy.stop()
        upstream.close()
        redis.stop()


def test_one_proof_is_one_place_on_every_replica(replicas: tuple[Mitmdump, Mitmdump]) -> None:
    a, b = replicas
    with client(a.url, "203.0.113.1") as first:
        proof = solved(first.get("/sale/"))
        entered = first.get("/sale/", headers={"Waitroom-Proof": proof})
        assert entered.status_code == 200  # a direct entry, on replica A
        session = cookie_id(entered, "sale")
    with client(b.url, "203.0.113.1") as copy:  # the same proof on replica B, within grace
        again = copy.get("/sale/", headers={"Waitroom-Proof": proof})
        assert (again.status_code, cookie_id(again, "sale")) == (200, session)
    # Once the place was used longer than `grace` ago, the proof is spent, on either replica: a
    # new challenge (the time that takes is the subject here; the loop is bounded).
    answers: list[httpx.Response] = []

    def spent() -> bool:
        with client(b.url, "203.0.113.1") as copy:
            answers.append(copy.get("/sale/", headers={"Waitroom-Proof": proof}))
        return answers[-1].status_code == 503

    wait_for(spent, 15, "the proof to be spent", interval=0.2)
    assert answers[-1].json()["state"] == "challenge"
    assert {cookie_id(answer, "sale") for answer in answers[:-1]} <= {session}  # until then, that one
    # The window's place is used: a second visitor's proof on B is a ticket; on A, the same ticket.
    with client(b.url, "203.0.113.2") as second:
        ticket_proof = solved(second.get("/sale/"))
        ticket = second.get("/sale/", headers={"Waitroom-Proof": ticket_proof})
        assert (ticket.json()["state"], ticket.json()["queue_length"]) == ("line", 1)
    with client(a.url, "203.0.113.2") as copy:
        replay = copy.get("/sale/", headers={"Waitroom-Proof": ticket_proof})
        assert replay.json()["queue_length"] == 1
        assert cookie_id(replay, "sale") == cookie_id(ticket, "sale")
