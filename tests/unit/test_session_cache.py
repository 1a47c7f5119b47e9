"""The verified-token cache changes cost, never answers."""

from __future__ import annotations

from waitroom.sessions import SessionCodec, keys_from_secret

KEY = keys_from_secret("cache-test-secret-0123456789abcdef")


def test_a_cached_token_is_still_judged_on_room_and_expiry() -> None:
    codec = SessionCodec(KEY, ttl=60)
    session, token = codec.issue("shop", "s1", now=1000)
    assert codec.verify(token, "shop", 1001) == session
    assert codec.verify(token, "shop", 1002) == session  # from the cache
    assert codec.verify(token, "blog", 1002) is None  # another room's cookie
    assert codec.verify(token, "shop", 1060) is None  # expired, cached or not
    assert codec.verify(token[:-2] + "xx", "shop", 1001) is None  # forged
    assert token[:-2] + "xx" not in codec._verified  # garbage is never remembered


def test_a_new_key_set_does_not_inherit_what_the_old_one_verified() -> None:
    _, token = SessionCodec(KEY, ttl=60).issue("shop", "s1", now=1000)
    other = SessionCodec(keys_from_secret("another-secret-0123456789abcdef0"), ttl=60)
    assert other.verify(token, "shop", 1001) is None
