"""One suite for both stores, and the Redis store's behaviour when Redis fails or restarts."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.store.conftest import Clock
from tests.support import RedisCluster, RedisSentinel, RedisServer, free_port, visit, wait_for
from waitroom.config.schema import parse_config
from waitroom.rooms.decider import Decider, Outcome
from waitroom.rooms.sessions import SessionCodec, keys_from_secret
from waitroom.store import open_store
from waitroom.store.base import QueuePolicy, RateCheck, RoomPolicy, RoomState, Store, StoreError
from waitroom.store.guard import BreakerState, CircuitBreaker, GuardedStore
from waitroom.store.memory import MemoryStore
from waitroom.store.redis import RedisStore
from waitroom.store.redis_client import client_from_url, parse_hosts

pytestmark = pytest.mark.e2e


async def test_contract_admit_block_expire(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("r", 3, 10.0, 2.0)
    assert [(await store.admit(room, f"s{i}")).admitted for i in range(3)] == [True] * 3
    started = await store.admit(room, "s3")
    assert (started.admitted, started.block_started, started.blocked_for) == (False, True, 2.0)
    clock.now += 1.5
    during = await store.admit(room, "s4")
    assert (during.admitted, during.block_started) == (False, False)
    assert during.blocked_for == pytest.approx(0.5)
    clock.now += 0.5  # the block is over; the window (10 s) is still full → a new block
    assert (await store.admit(room, "s5")).block_started
    clock.now += 10  # window slid past every admission
    assert (await store.admit(room, "s6")).admitted
    # The window's edge: an admission exactly one window old no longer counts.
    edge = RoomPolicy("edge", 1, 5.0, 0.0)
    assert (await store.admit(edge, "a")).admitted
    clock.now += 4.999999
    assert not (await store.admit(edge, "b")).admitted
    clock.now += 0.000001
    assert (await store.admit(edge, "c")).admitted


async def test_contract_rooms_independent_and_live_limit(store_and_clock: tuple[Store, Clock]) -> None:
    store, _ = store_and_clock
    assert (await store.admit(RoomPolicy("a", 1, 60, 0), "x")).admitted
    assert (await store.admit(RoomPolicy("b", 1, 60, 0), "y")).admitted
    assert not (await store.admit(RoomPolicy("a", 1, 60, 0), "z")).admitted  # block_for 0: no block
    assert (await store.admit(RoomPolicy("a", 2, 60, 0), "z")).admitted  # the limit raised at run time


async def test_contract_rate_limits(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    total = RateCheck("total", "*", "sliding_log", 3, 1.0)
    user = RateCheck("user", "u1", "gcra", 1, 1.0)
    assert [r.allowed for r in await store.hit([total, user])] == [True, True]
    assert [r.allowed for r in await store.hit([total, user])] == [True, False]
    assert [r.allowed for r in await store.hit([total])] == [True]  # the refusal charged nothing:
    assert [r.allowed for r in await store.hit([total])] == [True]  # 3 allowed in all, then full
    assert [r.allowed for r in await store.hit([total])] == [False]
    clock.now += 1.0
    results = await store.hit([total, user])
    assert [r.allowed for r in results] == [True, True]
    assert results[0].remaining == 2


@pytest.mark.parametrize("algorithm", ["gcra", "sliding_window", "sliding_log"])
async def test_contract_delay_reserves_slots_in_order(
    store_and_clock: tuple[Store, Clock], algorithm: str
) -> None:
    # 5 per second, held up to 2s, 12 at one instant: the held ones each get a later slot (charged
    # now, so the next is held longer); those that cannot fit are refused, with their turn's time.
    store, clock = store_and_clock
    clock.now = 1_000.0  # a window's start
    check = RateCheck("d", "k", algorithm, 5, 1.0, max_delay=2.0)
    results = [(await store.hit([check]))[0] for _ in range(12)]
    delays = [round(r.delay, 6) for r in results if r.allowed]
    expected = {
        "gcra": [0.0] * 5 + [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4],
        "sliding_window": [0.0] * 5 + [1.2, 1.4, 1.6, 1.8, 2.0],
        "sliding_log": [0.0] * 5 + [1.0] * 5 + [2.0] * 2,
    }[algorithm]
    assert delays == expected
    refused = [r for r in results if not r.allowed]
    assert all(2.0 < r.reset_after <= 3.0 for r in refused)
    # The reservations hold: at the first held one's wake, the next newcomer queues behind them all.
    clock.now += expected[5]
    later = (await store.hit([check]))[0]
    assert not later.allowed or later.delay >= expected[-1] - expected[5]


async def test_differential_random_sequences(shared_redis: RedisServer) -> None:
    algorithms = ["sliding_window", "sliding_log", "gcra"]
    for seed in range(25):
        rnd = random.Random(seed)
        clock = Clock()
        memory = MemoryStore(clock)
        redis_store = RedisStore.for_url(shared_redis.url, 2.0, f"d{seed}-{time.time()}", clock)
        room = RoomPolicy("r", rnd.randint(1, 4), rnd.choice([0.5, 1.0, 2.0]), rnd.choice([0.0, 0.5, 1.0]))
        rules = [
            RateCheck(
                "g",
                "*",
                rnd.choice(algorithms),
                rnd.randint(1, 6),
                rnd.choice([0.3, 1.0, 2.5]),
                rnd.choice([None, 2]),
                rnd.random() < 0.2,
            ),
            RateCheck(
                "u",
                "k",
                rnd.choice(algorithms),
                rnd.randint(1, 4),
                rnd.choice([0.7, 1.0]),
                max_delay=rnd.choice([0.0, 0.5, 2.0]),  # `delay` rules reserve slots
            ),
        ]
        for step in range(120):
            clock.now += rnd.choice([0.0, 0.001, 0.05, 0.1, 0.2, 0.7, 1.3])
            checks = rules if rnd.random() < 0.7 else rules[:1]
            a, b = await memory.admit(room, f"s{step}"), await redis_store.admit(room, f"s{step}")
            assert (a.admitted, a.block_started, round(a.blocked_for, 6)) == (
                b.admitted,
                b.block_started,
                round(b.blocked_for, 6),
            ), (seed, step)
            ha, hb = await memory.hit(checks), await redis_store.hit(checks)
            assert [(r.allowed, r.remaining, round(r.reset_after, 6), round(r.delay, 6)) for r in ha] == [
                (r.allowed, r.remaining, round(r.reset_after, 6), round(r.delay, 6)) for r in hb
            ], (seed, step)
        await redis_store.close()


async def test_server_time_is_used_without_an_injected_clock(shared_redis: RedisServer) -> None:
    store = RedisStore(client_from_url(shared_redis.url, 2.0), key_prefix=f"srv{time.time()}")
    room = RoomPolicy("r", 2, 60, 30)
    decisions = [await store.admit(room, f"s{i}") for i in range(3)]
    assert [d.admitted for d in decisions] == [True, True, False]
    assert abs(decisions[0].now - time.time()) < 5
    assert decisions[2].blocked_for == pytest.approx(30, abs=0.1)
    await store.close()


async def test_keys_share_one_slot_and_carry_the_prefix(shared_redis: RedisServer) -> None:
    store = RedisStore(client_from_url(shared_redis.url, 2.0), key_prefix="deploy-a")
    await store.admit(RoomPolicy("shop", 1, 60, 30), "s")
    await store.admit(RoomPolicy("shop", 1, 60, 30), "t")
    keys = sorted(k.decode() for k in shared_redis.client().keys("deploy-a:*"))
    assert keys == ["deploy-a:{room:shop}:blocked", "deploy-a:{room:shop}:log"]
    assert all(shared_redis.client().pttl(k) > 0 for k in keys), "idle keys must expire by themselves"
    await store.close()


def guarded(url: str, timeout: float = 0.05, failures: int = 3, cool_down: float = 0.5) -> GuardedStore:
    return GuardedStore(
        RedisStore.for_url(url, timeout, "waitroom"), timeout, CircuitBreaker(failures, cool_down)
    )


async def test_killed_redis_fails_fast_then_the_breaker_skips_it_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = guarded(server.url)
    room = RoomPolicy("r", 100, 60, 10)
    try:
        assert (await store.admit(room, "a")).admitted
        server.kill()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.admit(room, "b")
            assert time.monotonic() - started < 0.05 + 0.5
        assert store.breaker.state is BreakerState.OPEN
        with pytest.raises(StoreError, match="circuit open"):
            await store.admit(room, "c")
        server.start()  # same port, empty, no scripts loaded (NOSCRIPT → reloaded by the client)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                assert (await store.admit(room, "d")).admitted
                break
            except StoreError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the store did not come back after Redis restarted")
        assert store.breaker.state is BreakerState.CLOSED
    finally:
        await store.close()
        server.stop()


async def test_slow_redis_times_out_instead_of_hanging(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    store = guarded(server.url, timeout=0.05)
    try:
        assert (await store.admit(RoomPolicy("r", 10, 60, 10), "warm")).admitted
        # Redis stops answering every client for 1.5 s (it returns at once to the one that asks).
        server.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")
        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.admit(RoomPolicy("r", 10, 60, 10), "slow")
        assert time.monotonic() - started < 0.05 + 0.3
    finally:
        server.client().execute_command("CLIENT", "UNPAUSE")
        await store.close()
        server.stop()


def test_breaker_logic_with_a_fake_clock() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 5.0, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert not breaker.probe_due()
    now[0] = 5.0
    assert breaker.probe_due()  # one probe
    assert not breaker.probe_due()
    assert not breaker.allow()
    breaker.failed()  # the probe failed: open for another cool_down
    assert breaker.state is BreakerState.OPEN
    now[0] = 9.0
    assert not breaker.probe_due()
    now[0] = 10.0
    assert breaker.probe_due()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("open", [True] * 4), ("closed", [False] * 4), ("local", [True, True, False, False])],
)
async def test_failure_policy(tmp_path: Path, policy: str, expected: list[bool]) -> None:
    config = parse_config(
        {
            "store": {"url": "redis://127.0.0.1:1/0", "on_error": policy, "replicas": 4},
            "rooms": [{"name": "r", "new_sessions": 10, "block_for": "5s"}],
        }
    )
    codec = SessionCodec(keys_from_secret("policy-test-secret-0123"), 600)
    decider = Decider(config, open_store(config.store), codec, time.time)
    decisions = [await visit(decider) for _ in range(4)]
    assert [d.outcome is Outcome.ADMITTED for d in decisions] == expected
    assert all(d.degraded is not None and d.degraded.value == policy for d in decisions)
    await decider.store.close()


async def test_cluster(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path)
    try:
        store = RedisStore(client_from_url(cluster.url, 2.0), key_prefix="c")
        room = RoomPolicy("shop", 2, 60, 10)
        assert [(await store.admit(room, f"s{i}")).admitted for i in range(3)] == [True, True, False]
        slots = {cluster.nodes[0].client().cluster("KEYSLOT", k) for k in store.rooms.room_keys("shop")}
        assert len(slots) == 1
        checks = [
            RateCheck("total", "*", "sliding_log", 5, 1.0),
            RateCheck("user", "u", "sliding_log", 1, 1.0),
        ]
        assert [r.allowed for r in await store.hit(checks)] == [True, True]
        assert [r.allowed for r in await store.hit(checks)][1] is False
        # The cap's departures record shares the room's slot; the epoch shares the overrides'.
        line = QueuePolicy("line", 2, 60, 60, 60, max_active=1, ttl=30)
        assert (await store.queue(line, "q1")).admitted
        assert (await store.queue(line, "q2")).inside.active == 1
        assert await store.release("line", "q1", 30)
        assert (await store.queue_state(line)).inside.departed == 1
        assert (await store.overrides_and_epoch("mark"))[1] == "mark"
        await store.close()
    finally:
        cluster.stop()


def test_url_forms() -> None:
    assert parse_hosts("u:p%40ss@h1:1,[::1]:2,h3", 6379) == (
        "u",
        "p@ss",
        [("h1", 1), ("::1", 2), ("h3", 6379)],
    )
    assert parse_hosts(":pw@h", 26379) == (None, "pw", [("h", 26379)])
    with pytest.raises(ValueError, match="name the service"):
        client_from_url("redis+sentinel://h:26379", 0.05)
    make: Callable[[str], Any] = lambda url: client_from_url(url, 0.05)  # noqa: E731
    assert type(make("redis+cluster://127.0.0.1:7000")).__name__ == "RedisCluster"
    assert type(make("rediss://127.0.0.1:6380/0")).__name__ == "Redis"


async def test_contract_room_state_unblock_and_overrides(store_and_clock: tuple[Store, Clock]) -> None:
    store, clock = store_and_clock
    room = RoomPolicy("ops", 2, 10.0, 5.0)
    assert await store.room_state(room) == RoomState(0, 0.0)
    for i in range(3):
        await store.admit(room, f"s{i}")  # two admitted, the third starts a block
    assert await store.room_state(room) == RoomState(2, 5.0)
    clock.now += 2
    state = await store.room_state(room)
    assert (state.in_window, state.blocked_for) == (2, pytest.approx(3.0))
    assert await store.unblock("ops") is True
    assert await store.unblock("ops") is False
    assert (await store.room_state(room)).blocked_for == 0
    clock.now += 8.5  # both admissions left the window
    assert await store.room_state(room) == RoomState(0, 0.0)
    assert await store.room_state(RoomPolicy("never-seen", 1, 1.0, 0.0)) == RoomState(0, 0.0)

    assert await store.overrides() == {}
    await store.set_overrides({"room:ops:mode": "queue-all", "rule:api:limit": "5"})
    await store.set_overrides({"room:ops:mode": None, "room:ops:new_sessions": "7"})
    assert await store.overrides() == {"rule:api:limit": "5", "room:ops:new_sessions": "7"}


async def test_sentinel_url_follows_a_failover(tmp_path: Path) -> None:
    """`redis+sentinel://`: the store finds the master through the sentinel, with the data node's
    password, and after the master dies it finds the promoted replica by itself."""
    sentinel = RedisSentinel(tmp_path, password="sentinel-test-pass")
    try:
        store = guarded(sentinel.url("sentinel-test-pass"), timeout=1.0, failures=100)
        room = RoomPolicy("s", 100, 60.0, 0.0)
        assert (await store.admit(room, "a")).admitted
        wait_for(
            lambda: sentinel.replica.client_with("sentinel-test-pass").zcard("waitroom:{room:s}:log") == 1,
            10,
            "replication",
        )
        sentinel.fail_over()
        answers = []
        for i in range(40):  # the first calls may meet the dead master; then the new one answers
            try:
                answers.append((await store.admit(room, f"b{i}")).admitted)
                break
            except StoreError:
                await asyncio.sleep(0.25)
        assert answers == [True]
        assert await store.room_state(room) == RoomState(2, 0.0)  # the replica had the first admission
        await store.close()
    finally:
        sentinel.stop()


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
        )
        if ca:
            usage = dict.fromkeys(
                ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                 "key_agreement", "encipher_only", "decipher_only"], False,
            )  # fmt: skip
            builder = builder.add_extension(
                x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    files[0].write_bytes(
        cert("test CA", ca_key, "test CA", ca_key, True).public_bytes(serialization.Encoding.PEM)
    )
    files[1].write_bytes(
        cert("127.0.0.1", server_key, "test CA", ca_key, False).public_bytes(serialization.Encoding.PEM)
    )
    files[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


async def test_rediss_url_verifies_the_server(tmp_path: Path) -> None:
    """`rediss://`: TLS to Redis, the server's certificate checked against the given CA."""
    ca, server_cert, server_key = _tls_files(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        extra=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(server_cert),
            "--tls-key-file", str(server_key),
            "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    try:
        room = RoomPolicy("tls", 5, 60.0, 0.0)
        store = guarded(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}", timeout=2.0)
        assert (await store.admit(room, "a")).admitted
        assert server.client().zcard("waitroom:{room:tls}:log") == 1  # it really went to that server
        await store.close()
        # Without our CA the certificate does not verify: the store refuses, the policy decides.
        unverified = guarded(f"rediss://127.0.0.1:{tls_port}/0", timeout=2.0)
        with pytest.raises(StoreError):
            await unverified.admit(room, "b")
        await unverified.close()
    finally:
        server.stop()


async def test_contract_the_epoch_comes_with_the_overrides(store_and_clock: tuple[Store, Clock]) -> None:
    """The first replica's mark becomes the store's epoch and stays it; only a store that lost its
    data (a Redis that came back empty) takes another, which is how a replica tells."""
    store, _clock = store_and_clock
    await store.set_overrides({"room:ops:mode": "queue-all"})
    values, first = await store.overrides_and_epoch("replica-a")
    assert values == {"room:ops:mode": "queue-all"}
    assert (await store.overrides_and_epoch("replica-b"))[1] == first  # kept, whoever asks
    if isinstance(store, RedisStore):
        assert first == "replica-a"
        await store._client.delete(store.overrides_key, store.epoch_key)  # the data is lost
        assert await store.overrides_and_epoch("replica-b") == ({}, "replica-b")
        assert (await store.overrides_and_epoch("replica-a"))[1] == "replica-b"
    else:  # the embedded store never loses its data
        assert isinstance(store, MemoryStore)
