"""The rate-limit engine: rules, keys, fallbacks, the over-limit cache, policies and actions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from waitroom.config.fields import ConfigError
from waitroom.config.rules import JWTConfig
from waitroom.config.schema import parse_config
from waitroom.ratelimit.claims import ClaimVerifier
from waitroom.ratelimit.decision import LimitDecision, LimitOutcome
from waitroom.ratelimit.limiter import RateLimiter
from waitroom.store.base import RateCheck, RateResult, StoreError
from waitroom.store.memory import MemoryStore
from waitroom.web.request import RequestFacts

HS_SECRET = "jwt-hs-secret-0123456789abcdef0123"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.calls: list[Sequence[RateCheck]] = []

    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        self.calls.append(checks)
        return await super().hit(checks)


class FailingStore(MemoryStore):
    async def hit(self, checks: Sequence[RateCheck]) -> list[RateResult]:
        raise StoreError("down")


def facts(path: str = "/api/x", method: str = "GET", peer: str = "10.0.0.1", **headers: str) -> RequestFacts:
    lower = {k.replace("_", "-").lower(): v for k, v in headers.items()}
    return RequestFacts("example.com", path, method, peer, lambda name: lower.get(name.lower()))


async def decide(limiter: RateLimiter, request: RequestFacts) -> LimitDecision:
    """As the gate does: the matching rules found once, then the decision."""
    return await limiter.decide(request, limiter.matching(request))


def limiter(
    rules: list[dict[str, Any]], clock: Clock, backend: MemoryStore | None = None, **extra: Any
) -> RateLimiter:
    config = parse_config({"rate_limits": rules, **extra})
    verifier = ClaimVerifier(config.jwt, {"WAITROOM_JWT_SECRET": HS_SECRET}) if config.jwt else None
    return RateLimiter(config, backend or MemoryStore(clock), verifier, clock)


async def test_matching_by_prefix_host_and_method() -> None:
    clock = Clock()
    rl = limiter(
        [
            {
                "name": "r",
                "limit": 1,
                "match": {"path_prefix": "/api", "methods": ["post"], "host": "example.com"},
            }
        ],
        clock,
    )
    assert (await decide(rl, facts(method="GET"))).outcome is LimitOutcome.NONE
    assert (await decide(rl, facts(path="/other", method="POST"))).outcome is LimitOutcome.NONE
    assert (await decide(rl, facts(method="POST"))).outcome is LimitOutcome.ALLOWED
    assert (await decide(rl, facts(method="POST"))).outcome is LimitOutcome.LIMITED


async def test_header_key_fallback_and_hashing() -> None:
    clock = Clock()
    rl = limiter([{"name": "k", "key": "header:X-Api-Key", "fallback": "ip", "limit": 1}], clock)
    request = facts(X_Api_Key="super-secret-key")
    checks, _, fallbacks = rl.checks(request, rl.matching(request))
    assert "super-secret-key" not in checks[0].key
    assert fallbacks == []
    assert (await decide(rl, facts(X_Api_Key="a"))).outcome is LimitOutcome.ALLOWED
    assert (await decide(rl, facts(X_Api_Key="b"))).outcome is LimitOutcome.ALLOWED  # another bucket
    assert (await decide(rl, facts(X_Api_Key="a"))).outcome is LimitOutcome.LIMITED
    missing = await decide(rl, facts())
    assert missing.outcome is LimitOutcome.ALLOWED
    assert missing.fallbacks == ("k:missing",)
    assert (await decide(rl, facts())).outcome is LimitOutcome.LIMITED  # the IP bucket is full now
    without = limiter([{"name": "k", "key": "header:X-Api-Key", "limit": 1}], clock)
    assert (await decide(without, facts())).outcome is LimitOutcome.NONE  # no key, no fallback


async def test_the_over_limit_cache_spares_the_store() -> None:
    clock = Clock()
    store = CountingStore(clock)
    rl = limiter([{"name": "g", "key": "global", "limit": 1, "per": "1s"}], clock, store)
    assert (await decide(rl, facts())).outcome is LimitOutcome.ALLOWED
    limited = await decide(rl, facts())
    assert limited.outcome is LimitOutcome.LIMITED
    assert not limited.cached
    calls = len(store.calls)
    for _ in range(5):
        again = await decide(rl, facts())
        assert again.outcome is LimitOutcome.LIMITED
        assert again.cached
    assert len(store.calls) == calls
    # sliding_window: one request at the start of a window weighs on the next one too; the cache
    # keeps the store's own answer (2 s here) and lets the client through when it is up.
    assert limited.result is not None
    clock.now += limited.result.reset_after
    assert (await decide(rl, facts())).outcome is LimitOutcome.ALLOWED
    assert len(store.calls) == calls + 1


@pytest.mark.parametrize(
    ("policy", "outcome"), [("open", LimitOutcome.ALLOWED), ("closed", LimitOutcome.LIMITED)]
)
async def test_failure_policy(policy: str, outcome: LimitOutcome) -> None:
    clock = Clock()
    rl = limiter(
        [{"name": "g", "key": "global", "limit": 8}], clock, FailingStore(clock), store={"on_error": policy}
    )
    decision = await decide(rl, facts())
    assert decision.outcome is outcome
    assert decision.degraded is not None


async def test_local_policy_divides_by_replicas() -> None:
    clock = Clock()
    rl = limiter(
        [{"name": "g", "key": "global", "limit": 8}],
        clock,
        FailingStore(clock),
        store={"on_error": "local", "replicas": 4},
    )
    outcomes = [(await decide(rl, facts())).outcome for _ in range(3)]
    assert outcomes == [LimitOutcome.ALLOWED, LimitOutcome.ALLOWED, LimitOutcome.LIMITED]


async def test_delay_reroute_and_shadow() -> None:
    clock = Clock()
    delay = limiter(
        [{"name": "d", "key": "global", "limit": 1, "per": "200ms", "action": "delay", "max_delay": "1s"}],
        Clock(),
    )
    assert (await decide(delay, facts())).outcome is LimitOutcome.ALLOWED
    held = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # the held request waits on the test's clock
        slept.append(seconds)
        held.now += seconds

    real = RateLimiter(delay.config, MemoryStore(held), None, held, sleep=sleep)
    await decide(real, facts())
    delayed = await decide(real, facts())
    assert delayed.outcome is LimitOutcome.DELAYED
    assert slept == [delayed.delayed_for]
    assert 0 < delayed.delayed_for <= 2 * 0.2  # the sliding window frees a slot within two windows
    too_long = limiter(
        [{"name": "d", "key": "global", "limit": 1, "per": "10s", "action": "delay", "max_delay": "1s"}],
        clock,
    )
    await decide(too_long, facts())
    assert (await decide(too_long, facts())).outcome is LimitOutcome.LIMITED

    reroute = limiter(
        [{"name": "heavy", "key": "ip", "limit": 1, "action": "upstream:http://slow:8080"}], clock
    )
    await decide(reroute, facts())
    rerouted = await decide(reroute, facts())
    assert rerouted.outcome is LimitOutcome.REROUTED
    assert rerouted.upstream == "http://slow:8080"

    shadow = limiter([{"name": "s", "key": "global", "limit": 1, "shadow": True}], clock)
    await decide(shadow, facts())
    for _ in range(3):
        decision = await decide(shadow, facts())
        assert decision.outcome is LimitOutcome.SHADOW_LIMITED
        assert decision.shadow_limited == ("s",)


async def test_held_requests_wait_for_their_own_slots_and_the_rest_are_refused_at_once() -> None:
    # 5/1s gcra, held up to 1s: 5 pass, the next 5 wait 0.2 … 1.0 s, each for its own slot, and go
    # on without asking the store again; the 11th is refused without waiting, and remembered.
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # held requests do not move the clock: all at once
        slept.append(seconds)

    rule = {"name": "d", "key": "global", "limit": 5, "per": "1s", "algorithm": "gcra"}
    config = limiter([{**rule, "action": "delay", "max_delay": "1s"}], clock).config
    store = CountingStore(clock)
    rl = RateLimiter(config, store, None, clock, sleep=sleep)
    decisions = [await decide(rl, facts()) for _ in range(11)]
    assert [d.outcome for d in decisions] == [LimitOutcome.ALLOWED] * 5 + [LimitOutcome.DELAYED] * 5 + [
        LimitOutcome.LIMITED
    ]
    assert slept == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [d.delayed_for for d in decisions[5:10]] == slept
    assert len(store.calls) == 11  # one store call each: a held request is never asked about again
    assert decisions[10].retry_after == 2  # its turn would have come at 1.2 s
    # Until a request could be held again (1.2 s - max_delay), the refusal is remembered locally.
    again = await decide(rl, facts())
    assert (again.outcome, again.cached, len(store.calls)) == (LimitOutcome.LIMITED, True, 11)
    clock.now += 0.25
    assert (await decide(rl, facts())).outcome is LimitOutcome.DELAYED
    assert len(store.calls) == 12


# --- JWT ---------------------------------------------------------------------------------------


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_jwt_claims(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(_pem(rsa_key))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwk = pyjwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    jwk["kid"] = "ec1"
    jwks.write_text(__import__("json").dumps({"keys": [jwk]}))
    now = time.time()
    hs = ClaimVerifier(
        JWTConfig(algorithms=["HS256"], audience="api", issuer="me", leeway=5),
        {"WAITROOM_JWT_SECRET": HS_SECRET},
    )
    rs = ClaimVerifier(JWTConfig(algorithms=["RS256"], public_key_file=pem), {})
    es = ClaimVerifier(JWTConfig(algorithms=["ES256"], jwks_file=jwks), {})
    good = {"company_id": "acme", "aud": "api", "iss": "me", "exp": now + 60}
    assert hs.claim("Bearer " + pyjwt.encode(good, HS_SECRET, "HS256"), "company_id").value == "acme"
    assert rs.claim(pyjwt.encode({"company_id": 7}, rsa_key, "RS256"), "company_id").value == "7"
    es_token = pyjwt.encode({"company_id": "ec"}, ec_key, "ES256", headers={"kid": "ec1"})
    assert es.claim(es_token, "company_id").value == "ec"

    def reason(verifier: ClaimVerifier, token: str | None) -> str:
        result = verifier.claim(token, "company_id")
        assert result.value is None
        return result.reason

    assert reason(hs, pyjwt.encode({**good, "exp": now - 60}, HS_SECRET, "HS256")) == "expired"
    # Validity is judged at the decision's clock (the recorded time when flows are replayed).
    old_token = "Bearer " + pyjwt.encode({**good, "exp": now - 3600}, HS_SECRET, "HS256")
    assert hs.claim(old_token, "company_id", now=now - 3700).value == "acme"
    assert hs.claim(old_token, "company_id", now=now - 3594).reason == "expired"  # past exp + leeway
    early = "Bearer " + pyjwt.encode({**good, "nbf": now + 3600, "exp": now + 7200}, HS_SECRET, "HS256")
    assert hs.claim(early, "company_id", now=now + 3600).value == "acme"
    assert hs.claim(early, "company_id", now=now).reason == "invalid"
    assert reason(hs, pyjwt.encode({**good, "exp": "soon"}, HS_SECRET, "HS256")) == "invalid"
    assert reason(hs, pyjwt.encode({**good, "nbf": now + 60}, HS_SECRET, "HS256")) == "invalid"
    assert reason(hs, pyjwt.encode({**good, "aud": "other"}, HS_SECRET, "HS256")) == "invalid"
    assert reason(hs, pyjwt.encode(good, "wrong-secret-0123456789abcdef01", "HS256")) == "signature"
    assert reason(hs, pyjwt.encode(good, None, "none")) == "algorithm"
    assert reason(rs, pyjwt.encode(good, HS_SECRET, "HS256")) == "algorithm"  # not on the allow-list
    # Algorithm confusion: an HS256 token whose HMAC key is the RSA public key.
    both = ClaimVerifier(
        JWTConfig(algorithms=["HS256", "RS256"], public_key_file=pem), {"WAITROOM_JWT_SECRET": HS_SECRET}
    )
    forged = pyjwt.api_jws.PyJWS().encode(b'{"company_id":"evil"}', b"x", "HS256")  # placeholder shape
    header, payload, _ = forged.split(".")
    import base64, hashlib, hmac  # noqa: E401, I001

    sig = hmac.new(_pem(rsa_key), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    confused = f"{header}.{payload}." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert reason(both, confused) == "signature"
    assert reason(hs, "garbage") == "malformed"
    assert reason(hs, "a." * 5000) == "malformed"
    assert reason(hs, None) == "missing"
    assert reason(hs, pyjwt.encode({"aud": "api", "iss": "me"}, HS_SECRET, "HS256")) == "claim"


def test_jwt_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jwt\.public_key_file: cannot read"):
        ClaimVerifier(JWTConfig(algorithms=["RS256"], public_key_file=tmp_path / "missing.pem"), {})
    with pytest.raises(ConfigError, match=r"jwt\.secret_env"):
        ClaimVerifier(JWTConfig(algorithms=["HS256"]), {})


async def test_jwt_keys_fall_back_to_ip() -> None:
    clock = Clock()
    rl = limiter(
        [{"name": "co", "key": "jwt:company_id", "fallback": "ip", "limit": 1}],
        clock,
        jwt={"algorithms": ["HS256"]},
    )
    token = pyjwt.encode({"company_id": "acme"}, HS_SECRET, "HS256")
    assert (await decide(rl, facts(Authorization=f"Bearer {token}"))).outcome is LimitOutcome.ALLOWED
    assert (
        await decide(rl, facts(Authorization=f"Bearer {token}", peer="10.9.9.9"))
    ).outcome is LimitOutcome.LIMITED
    expired = pyjwt.encode({"company_id": "acme", "exp": 1}, HS_SECRET, "HS256")
    fell_back = await decide(rl, facts(Authorization=f"Bearer {expired}"))
    assert fell_back.outcome is LimitOutcome.ALLOWED  # counted per IP, not as acme
    assert fell_back.fallbacks == ("co:expired",)
