"""ratelimit/keys.py: rate-limit keys and the over-limit cache, with an injected clock."""

from __future__ import annotations

from waitroom.config.schema import parse_config
from waitroom.ratelimit.keys import KeyReader, OverLimitCache, key_hash
from waitroom.store.base import RateCheck, RateResult
from waitroom.web.request import RequestFacts


def _check(key: str) -> RateCheck:
    return RateCheck("api", key, "sliding_window", 5, 1.0)


def test_key_hash_is_stable_and_hides_the_value() -> None:
    assert key_hash("secret-api-key") == key_hash("secret-api-key")
    assert "secret" not in key_hash("secret-api-key")
    assert len(key_hash("\udcff")) == 24  # a header that was not UTF-8 still hashes


def test_key_forms() -> None:
    keys = KeyReader(parse_config({}), None, lambda: 0.0)
    headers = {"X-Api-Key": " k1 "}
    facts = RequestFacts("h", "/", "GET", "10.0.0.1", headers.get)
    assert keys.identity("global", facts) == ("*", "ok")
    assert keys.identity("ip", facts) == ("10.0.0.1", "ok")
    assert keys.identity("header:X-Api-Key", facts) == ("k1", "ok")
    assert keys.identity("header:X-Other", facts) == (None, "missing")
    assert keys.identity("jwt:sub", facts) == (None, "no_jwt_config")


def test_the_over_limit_cache_forgets_when_the_window_lets_in_again() -> None:
    now = [100.0]
    cache = OverLimitCache(lambda: now[0], size=2)
    cache.remember(_check("a"), RateResult(False, 0, 5.0))
    refused = cache.refused(_check("a"))
    assert refused is not None
    assert refused.reset_after == 5.0
    assert cache.refused(_check("b")) is None
    now[0] = 105.0
    assert cache.refused(_check("a")) is None


def test_the_over_limit_cache_is_bounded() -> None:
    now = [0.0]
    cache = OverLimitCache(lambda: now[0], size=2)
    for key in "abc":
        cache.remember(_check(key), RateResult(False, 0, 10.0))
    assert cache.refused(_check("c")) is not None
    assert sum(cache.refused(_check(k)) is not None for k in "abc") <= 2
