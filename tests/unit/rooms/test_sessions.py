"""rooms/sessions.py: signed session cookies, key rotation, renewal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waitroom.rooms.sessions import SecretError, SessionCodec, keys_from_secret

KEY_A = keys_from_secret("key-a-0123456789abcdef")

KEY_B = keys_from_secret("key-b-0123456789abcdef")

NOW = 1_800_000_000.0


def test_cookie_round_trip_and_room_binding() -> None:
    codec = SessionCodec(KEY_A, 600)
    session, token = codec.issue("shop", "sid1", NOW)
    assert codec.verify(token, "shop", NOW + 1) == session
    assert codec.verify(token, "other", NOW + 1) is None
    assert codec.verify(token, "shop", session.expires_at) is None  # expired at expires_at


def test_tampering_is_detected() -> None:
    codec = SessionCodec(KEY_A, 600)
    token = codec.issue("shop", "sid1", NOW)[1]
    payload, sig = token.split(".")
    for bad in (
        payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + sig,
        payload + "." + sig[:-1] + ("A" if sig[-1] != "A" else "B"),
        token[: len(token) // 2],
        token + "x",
        "." + sig,
        payload + ".",
    ):
        assert codec.verify(bad, "shop", NOW) is None


def test_key_rotation_first_signs_all_verify() -> None:
    old_token = SessionCodec(KEY_A, 600).issue("shop", "s", NOW)[1]
    rotated = SessionCodec(KEY_B + KEY_A, 600)
    assert rotated.verify(old_token, "shop", NOW) is not None
    new_token = rotated.issue("shop", "s", NOW)[1]
    assert SessionCodec(KEY_A, 600).verify(new_token, "shop", NOW) is None
    assert SessionCodec(KEY_B, 600).verify(new_token, "shop", NOW) is not None


@given(st.one_of(st.none(), st.text(max_size=600), st.binary(max_size=300).map(lambda b: b.hex())))
def test_garbage_never_raises(value: str | None) -> None:
    assert SessionCodec(KEY_A, 600).verify(value, "shop", NOW) is None


def test_renewal_only_after_half_the_ttl() -> None:
    codec = SessionCodec(KEY_A, 600)
    session = codec.issue("shop", "s", NOW)[0]
    assert not codec.needs_renewal(session, NOW + 299)
    assert codec.needs_renewal(session, NOW + 301)
    renewed = codec.renew(session, NOW + 301)[0]
    assert (renewed.session_id, renewed.issued_at) == (session.session_id, session.issued_at)
    assert renewed.expires_at == int(NOW) + 301 + 600


def test_secret_parsing_names_the_key_but_not_the_secret() -> None:
    assert len(keys_from_secret(" aaaaaaaaaaaaaaaa , bbbbbbbbbbbbbbbb ")) == 2
    with pytest.raises(SecretError, match="empty"):
        keys_from_secret(" , ")
    with pytest.raises(SecretError, match="key #2 is too short") as e:
        keys_from_secret("aaaaaaaaaaaaaaaa,tooshortsecret")
    assert "tooshortsecret" not in str(e.value)


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


def test_a_ticket_carries_its_mark_and_the_calls_it_knows_of() -> None:
    codec = SessionCodec(keys_from_secret("k" * 32), ttl=60)
    for mark in (None, (12, 340)):
        for calls in (None, (1_765_000_000_000_000, 41, 17)):
            token = codec.issue_ticket("shop", "abc", 42, 2000, "UA", mark, calls)
            ticket = codec.ticket(token, "shop", 1000, "UA")
            assert ticket is not None
            assert (ticket.session_id, ticket.issued_at, ticket.mark, ticket.calls) == (
                "abc",
                42,
                mark,
                calls,
            )
            assert codec.ticket(token, "shop", 1000, "other UA") is None
            assert codec.verify(token, "shop", 1000) is None  # a ticket is not a session
