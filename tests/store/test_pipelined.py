"""The pipelined connection against a real redis-server: replies go to the right callers, also when
some stop waiting; scripts survive a script flush; a lost connection is made again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.support import RedisServer
from waitroom.store.pipelined import PipelinedConnection, PipelinedScript, encode

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis = RedisServer(Path(tmp_path_factory.mktemp("pipelined")))
    yield redis
    redis.stop()


def test_encoding() -> None:
    assert encode(("SET", b"k", 5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


async def test_concurrent_replies_reach_their_callers(server: RedisServer) -> None:
    conn = PipelinedConnection.from_url(server.url, 2.0)
    try:
        values = await asyncio.gather(*(conn.execute("ECHO", f"v{i}") for i in range(2000)))
        assert values == [f"v{i}".encode() for i in range(2000)]

        # Callers that stop waiting (the store timeout) do not shift the others' replies.
        slow = asyncio.ensure_future(conn.execute("DEBUG", "SLEEP", "0.2"))
        after = [asyncio.ensure_future(conn.execute("ECHO", f"a{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        slow.cancel()
        after[2].cancel()
        assert await asyncio.gather(*after[:2], *after[3:]) == [b"a0", b"a1", b"a3", b"a4"]
        assert await conn.execute("ECHO", "next") == b"next"
        with pytest.raises(ResponseError, match="unknown command"):
            await conn.execute("NOSUCHCOMMAND")
        assert await conn.execute("ECHO", "still") == b"still"
    finally:
        await conn.close()


async def test_scripts_reload_after_a_flush_and_connections_come_back(server: RedisServer) -> None:
    conn = PipelinedConnection.from_url(server.url, 2.0)
    script = PipelinedScript(conn, "return ARGV[1] .. KEYS[1]")
    try:
        assert await script(["k"], ["a"]) == b"ak"
        await conn.execute("SCRIPT", "FLUSH")
        assert await script(["k"], ["b"]) == b"bk"  # NOSCRIPT → EVAL, which caches it again
        assert await conn.execute("SCRIPT", "EXISTS", script.sha) == [1]

        before = await conn.execute("CLIENT", "ID")
        server.client().client_kill_filter(_id=before)  # the server drops our connection
        try:  # a command caught in the drop fails (the policy decides); the next one reconnects
            answer = await conn.execute("PING")
        except RedisConnectionError:
            answer = await conn.execute("PING")
        assert answer == b"PONG"
        assert await conn.execute("CLIENT", "ID") != before
    finally:
        await conn.close()


async def test_an_unreachable_server_is_a_connection_error(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    url = redis.url
    redis.stop()
    conn = PipelinedConnection.from_url(url, 0.5)
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await conn.execute("PING")
    await conn.close()
