"""store.redis_client.redis_errors: the one translation of a Redis failure into a StoreError."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from waitroom.store.base import StoreError
from waitroom.store.guard import _maybe_done
from waitroom.store.pipelined import ConnectionLost
from waitroom.store.redis_client import redis_errors


@pytest.mark.parametrize("error", [ResponseError("secret-key"), ConnectionRefusedError(111, "refused")])
def test_a_redis_or_socket_error_becomes_a_store_error_named_by_type(error: Exception) -> None:
    with pytest.raises(StoreError) as caught, redis_errors():
        raise error
    assert str(caught.value) == f"redis: {type(error).__name__}"
    assert caught.value.__cause__ is error
    assert "secret" not in str(caught.value)


def test_the_cause_still_tells_whether_the_call_may_have_run() -> None:
    with pytest.raises(StoreError) as caught, redis_errors():
        raise ConnectionLost("connection lost while reading")
    assert _maybe_done(caught.value)
    with pytest.raises(StoreError) as refused, redis_errors():
        raise ConnectionRefusedError(111, "refused")
    assert not _maybe_done(refused.value)


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), redis_errors():
        raise KeyError("a bug")
