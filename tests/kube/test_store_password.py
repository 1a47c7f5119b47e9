"""The Redis password comes from the environment (the chart's Secret), never from the config file
(the chart's ConfigMap): a real redis-server that requires one, and the store built from the config."""

from __future__ import annotations

import pytest

from tests.support import RedisServer
from waitroom.config.store import StoreConfig
from waitroom.store import open_store
from waitroom.store.base import RoomPolicy, StoreError

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret/with:odd@chars"


def test_the_password_joins_a_url_without_credentials() -> None:
    env = {"WAITROOM_REDIS_PASSWORD": PASSWORD}
    assert (
        StoreConfig(url="redis://r:6379/0").url_with_password(env)
        == "redis://:s3cret%2Fwith%3Aodd%40chars@r:6379/0"
    )
    assert StoreConfig(url="redis://:own@r/0").url_with_password(env) == "redis://:own@r/0"  # the URL's wins
    assert StoreConfig(url="redis://r/0").url_with_password({}) == "redis://r/0"
    assert StoreConfig(url="memory://").url_with_password(env) == "memory://"
    other = StoreConfig(url="redis+cluster://a:1,b:2", password_env="MY_PW")
    assert other.url_with_password({"MY_PW": "x"}) == "redis+cluster://:x@a:1,b:2"


async def test_a_redis_that_requires_a_password(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server.client().config_set("requirepass", PASSWORD)
    config = StoreConfig(url=redis_server.url, timeout=2.0)
    room = RoomPolicy("shop", 1, 60, 10)

    monkeypatch.delenv("WAITROOM_REDIS_PASSWORD", raising=False)
    without = open_store(config)
    with pytest.raises(StoreError):
        await without.admit(room, "s1")
    await without.close()

    monkeypatch.setenv("WAITROOM_REDIS_PASSWORD", PASSWORD)
    with_password = open_store(config)
    assert (await with_password.admit(room, "s1")).admitted
    assert not (await with_password.admit(room, "s2")).admitted
    await with_password.close()
