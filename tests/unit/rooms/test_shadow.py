"""rooms/shadow.py: a shadow room decides as the live room would, for visitors who carry no cookie,
in a key space of its own."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import yaml

from waitroom.config.overrides import Overrides, room_key
from waitroom.config.schema import Config, parse_config
from waitroom.rooms.decider import Decider, Decision, Outcome
from waitroom.rooms.policy import queue_policy, room_policy
from waitroom.rooms.sessions import SessionCodec, cookie_name, keys_from_secret
from waitroom.rooms.shadow import Jar, Shadow, ShadowStore, Would, is_shadow, shadow_key, would
from waitroom.store.memory import MemoryStore
from waitroom.web.request import RequestFacts

KEYS = keys_from_secret("unit-test-secret-0123456789")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _config(**room: object) -> Config:
    base = {"name": "shop", "match": {"path_prefix": "/"}, "new_sessions": 2, "window": "60s"}
    return parse_config(yaml.safe_load(yaml.safe_dump({"rooms": [{**base, **room}]})))


def _facts(address: str, agent: str = "ua", cookies: dict[str, str] | None = None) -> RequestFacts:
    headers = {"user-agent": agent}
    jar = cookies if cookies is not None else {}

    def read(name: str) -> Sequence[str]:
        return [jar[name]] if name in jar else []

    return RequestFacts("h", "/x", "GET", address, lambda n: headers.get(n.lower()), 0.0, read)


async def _live(decider: Decider, visits: list[str]) -> list[Outcome]:
    """The live room, each visitor (an address) with a browser that keeps the cookie it is set."""
    browsers: dict[str, dict[str, str]] = {}
    name = cookie_name(decider.config, decider.config.rooms[0])
    outcomes = []
    for address in visits:
        browser = browsers.setdefault(address, {})
        facts = _facts(address, cookies=browser)
        decision = await decider.decide(facts, decider.router.route("h", "/x"))
        kept = decision.cookie or decision.pending
        if kept is not None:
            browser[name] = kept
        outcomes.append(decision.outcome)
    return outcomes


async def _shadowed(shadow: Shadow, visits: list[str]) -> list[Decision]:
    return [await shadow.decide(_facts(a), shadow.decider.router.route("h", "/x")) for a in visits]


VISITS = ["a", "b", "a", "c", "b", "d", "a", "c"]


@pytest.mark.parametrize("queue", ["block", "fifo"])
async def test_the_shadow_decides_as_the_live_room_would_without_a_cookie(queue: str) -> None:
    clock = Clock()
    config = _config(queue=queue)
    store = MemoryStore(clock)
    codec = SessionCodec(KEYS, 600)
    live = await _live(Decider(config, MemoryStore(clock), codec, clock), VISITS)
    shadowed = await _shadowed(Shadow(config, store, codec, clock), VISITS)
    assert [d.outcome for d in shadowed] == live
    # a and b admitted, then sessions; c and d wait (block: the window is full; fifo: in line)
    admitted, session, waiting = Outcome.ADMITTED, Outcome.SESSION, Outcome.WAITING
    assert live == [admitted, admitted, session, waiting, session, waiting, session, waiting]


async def test_the_shadow_keeps_to_its_own_keys() -> None:
    clock = Clock()
    config = _config(queue="fifo")
    store = MemoryStore(clock)
    await _shadowed(Shadow(config, store, SessionCodec(KEYS, 600), clock), VISITS)
    room = config.rooms[0]
    assert (await store.room_state(room_policy(room))).in_window == 0  # the live room's: untouched
    assert (await store.queue_state(queue_policy(room))).length == 0
    shadow_store = ShadowStore(store)
    assert (await shadow_store.room_state(room_policy(room))).in_window == 2
    assert (await shadow_store.queue_state(queue_policy(room))).length == 2  # c and d
    assert (
        await store.room_state(room_policy(room.model_copy(update={"name": "shadow:shop"})))
    ).in_window == 2


async def test_a_returning_visitor_is_known_by_address_and_user_agent() -> None:
    clock = Clock()
    shadow = Shadow(_config(new_sessions=1), MemoryStore(clock), SessionCodec(KEYS, 600), clock)
    route = shadow.decider.router.route("h", "/x")
    first = await shadow.decide(_facts("10.0.0.1", "firefox"), route)
    again = await shadow.decide(_facts("10.0.0.1", "firefox"), route)
    other_browser = await shadow.decide(_facts("10.0.0.1", "chrome"), route)
    assert [first.outcome, again.outcome, other_browser.outcome] == [
        Outcome.ADMITTED,
        Outcome.SESSION,
        Outcome.WAITING,
    ]
    assert shadow.identity(_facts("10.0.0.1", "x")) != shadow.identity(_facts("10.0.0.2", "x"))
    other_key = Shadow(
        _config(), MemoryStore(clock), SessionCodec(keys_from_secret("another-secret-0123456789"), 600)
    )
    assert other_key.identity(_facts("10.0.0.1", "x")) != shadow.identity(_facts("10.0.0.1", "x"))


async def test_the_shadow_asks_no_proof_of_work() -> None:
    clock = Clock()
    config = _config(queue="fifo", proof_of_work={"difficulty": 8})
    shadow = Shadow(config, MemoryStore(clock), SessionCodec(KEYS, 600), clock)
    # a proof of work set at run time is not asked for either
    shadow.set_overrides(Overrides({room_key("shop", "proof_of_work"): '{"difficulty": 10}'}))
    decisions = await _shadowed(shadow, ["a", "b", "c"])
    assert [d.outcome for d in decisions] == [Outcome.ADMITTED, Outcome.ADMITTED, Outcome.WAITING]
    assert all(d.challenge is None for d in decisions)


async def test_run_time_changes_reach_the_shadow() -> None:
    clock = Clock()
    shadow = Shadow(_config(shadow=True), MemoryStore(clock), SessionCodec(KEYS, 600), clock)
    shadow.set_overrides(Overrides({room_key("shop", "new_sessions"): "1"}))
    decisions = await _shadowed(shadow, ["a", "b"])
    assert [d.outcome for d in decisions] == [Outcome.ADMITTED, Outcome.WAITING]


def test_is_shadow_reads_the_config_and_the_admin_switch() -> None:
    room = _config(shadow=True).rooms[0]
    assert is_shadow(room, Overrides())
    assert not is_shadow(room, Overrides({room_key("shop", "shadow"): "false"}))
    assert is_shadow(_config().rooms[0], Overrides({room_key("shop", "shadow"): "true"}))


def test_would_names_what_the_visitor_would_have_met() -> None:
    assert {o: would(o) for o in Outcome} == {
        Outcome.NO_ROOM: Would.ADMIT,
        Outcome.BYPASS: Would.ADMIT,
        Outcome.SESSION: Would.ADMIT,
        Outcome.ADMITTED: Would.ADMIT,
        Outcome.WAITING: Would.WAIT,
        Outcome.CLOSED: Would.REFUSE,
        Outcome.REFUSED: Would.REFUSE,
    }
    assert shadow_key("shop") == "shadow:shop"


def test_the_jar_is_bounded_and_forgets_what_expired() -> None:
    clock = Clock()
    jar = Jar(clock, size=3)
    for i in itertools.islice(itertools.count(), 5):
        jar.put("shop", str(i), f"v{i}", 10)
    assert len(jar) == 3
    assert jar.get("shop", "0") is None  # the least recently seen went first
    assert jar.get("shop", "2") == "v2"
    jar.put("shop", "5", "v5", 10)  # "2" was just seen: "3" goes
    assert (jar.get("shop", "3"), jar.get("shop", "2")) == (None, "v2")
    clock.now += 11
    assert jar.get("shop", "2") is None
