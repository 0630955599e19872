"""The RESP server driven by redis-py (asyncio), RESP3 and RESP2."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError
from resp_env import LIMITS, Running, start_server

from peer_ring.server.resp import RespConfig

pytestmark = pytest.mark.integration

NO_RETRY = Retry(NoBackoff(), 0)
BINARY = b"line1\r\nline2\x00\xff\r\n$3\r\n*1\r\n"


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
async def r(request: pytest.FixtureRequest, resp: Running) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host=resp.host, port=resp.port, protocol=request.param)
    yield client
    await client.aclose()


async def test_basic_commands_and_binary_values(r: aioredis.Redis) -> None:
    assert await r.ping() is True
    assert await r.set(b"bin\r\n\x00key", BINARY) is True
    assert await r.get(b"bin\r\n\x00key") == BINARY
    assert await r.get("missing") is None
    assert await r.set("k", "v", nx=True) is True
    assert await r.set("k", "v2", nx=True) is None
    assert await r.set("k", "v3", get=True) == b"v"
    assert await r.mset({"a": "1", "b": "2"}) is True
    assert await r.mget("a", "missing", "b") == [b"1", None, b"2"]
    assert await r.exists("a", "a", "missing") == 2
    assert await r.incr("a") == 2
    assert await r.incrby("a", 10) == 12
    assert await r.decr("a") == 11
    assert await r.delete("a", "b", "missing") == 2
    assert await r.dbsize() == 2


async def test_expiry_commands(r: aioredis.Redis) -> None:
    await r.set("t", "v", ex=100)
    assert 99 <= await r.ttl("t") <= 100
    assert 99_000 <= await r.pttl("t") <= 100_000
    assert await r.expire("t", 50, gt=True) is False
    assert await r.expire("t", 50, lt=True) is True
    assert await r.persist("t") is True
    assert await r.ttl("t") == -1
    assert await r.ttl("missing") == -2


async def test_pipelines_with_and_without_transaction(r: aioredis.Redis) -> None:
    async with r.pipeline(transaction=False) as pipe:
        for i in range(100):
            pipe.set(f"p{i}", i)
        pipe.get("p42")
        pipe.incr("p1")
        results = await pipe.execute()
    assert results[:100] == [True] * 100
    assert results[100:] == [b"42", 2]
    async with r.pipeline() as tx:  # MULTI/EXEC
        tx.set("tx", "a")
        tx.append("tx", "b")
        tx.get("tx")
        assert await tx.execute() == [True, 2, b"ab"]


async def test_scan_iter_keys_and_info(r: aioredis.Redis) -> None:
    for i in range(25):
        await r.set(f"user:{i}", "x")
    await r.set("other", "y")
    found = {key async for key in r.scan_iter(match="user:*", count=5)}
    assert found == {f"user:{i}".encode() for i in range(25)}
    assert len(await r.keys("user:*")) == 25
    info = await r.info()
    assert info["redis_version"] == "7.2.0"
    assert info["arch_bits"] == 64
    assert info["db0"]["keys"] == 26
    assert await r.flushdb() is True
    assert await r.dbsize() == 0


async def test_client_name_and_command_count(resp: Running) -> None:
    client = aioredis.Redis(host=resp.host, port=resp.port, client_name="app-1")
    try:
        assert await client.client_getname() == "app-1"  # redis-py decodes the name
        assert await client.client_id() >= 1
        assert await client.command_count() > 30
    finally:
        await client.aclose()


async def test_errors_keep_the_connection_usable(r: aioredis.Redis) -> None:
    with pytest.raises(ResponseError, match="unknown command 'FOO', with args beginning with: 'a'"):
        await r.execute_command("FOO", "a")  # type: ignore[no-untyped-call]
    with pytest.raises(ResponseError, match="wrong number of arguments for 'get' command"):
        await r.execute_command("GET")  # type: ignore[no-untyped-call]
    with pytest.raises(ResponseError, match="value is not an integer or out of range"):
        await r.execute_command("INCRBY", "n", "x")  # type: ignore[no-untyped-call]
    big_key = b"k" * (LIMITS.max_key_size + 1)
    with pytest.raises(ResponseError, match="key too large"):
        await r.set(big_key, "v")
    assert await r.set("fine", b"x" * LIMITS.max_value_size) is True
    assert await r.ping() is True


async def test_oversized_value_closes_only_that_connection(resp: Running) -> None:
    client = aioredis.Redis(host=resp.host, port=resp.port, retry=NO_RETRY)
    try:
        with pytest.raises(ResponseError, match="Protocol error: invalid bulk length"):
            await client.set("k", b"x" * (LIMITS.max_value_size + 1))
        with pytest.raises(ConnectionError):  # the server closed this connection
            await client.ping()
    finally:
        await client.aclose()
    other = aioredis.Redis(host=resp.host, port=resp.port)
    try:
        assert await other.ping() is True
        assert await other.get("k") is None
    finally:
        await other.aclose()
    assert resp.server.stats.protocol_errors == 1


@pytest.mark.parametrize("protocol", [2, 3])
async def test_requirepass(protocol: int) -> None:
    running = await start_server(RespConfig(requirepass="pw-1"))
    try:
        good = aioredis.Redis(
            host=running.host, port=running.port, password="pw-1", protocol=protocol
        )
        assert await good.set("k", "v") is True
        assert await good.get("k") == b"v"
        await good.aclose()
        bad = aioredis.Redis(
            host=running.host, port=running.port, password="nope", protocol=protocol
        )
        with pytest.raises(AuthenticationError):
            await bad.ping()
        await bad.aclose()
        anonymous = aioredis.Redis(host=running.host, port=running.port, protocol=2)
        with pytest.raises(AuthenticationError, match="Authentication required"):
            await anonymous.get("k")
        await anonymous.aclose()
    finally:
        await running.server.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that no event signals (server internals), with a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on but the condition
            await asyncio.sleep(0.01)


async def test_client_disconnecting_mid_request_leaves_the_server_healthy(
    resp: Running,
) -> None:
    _reader, writer = await asyncio.open_connection(resp.host, resp.port)
    writer.write(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly-part-of-the-value")
    await writer.drain()
    await wait_until(lambda: any(c.parser.buffered for c in resp.server.connections.values()))
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: not resp.server.connections)
    client = aioredis.Redis(host=resp.host, port=resp.port)
    try:
        assert await client.get("k") is None
        assert await client.ping() is True
    finally:
        await client.aclose()


async def test_garbage_gets_a_protocol_error_and_a_close(resp: Running) -> None:
    reader, writer = await asyncio.open_connection(resp.host, resp.port)
    writer.write(b"*2\r\n$3\r\nGET\r\n#garbage\x00\xff\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()  # until EOF: the server closes
    assert data == b"-ERR Protocol error: expected '$', got '#'\r\n"
    writer.close()
    await writer.wait_closed()


async def test_inline_commands_over_a_raw_socket(resp: Running) -> None:
    reader, writer = await asyncio.open_connection(resp.host, resp.port)
    writer.write(b'SET greeting "hello world"\r\nGET greeting\r\nPING\r\n')
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.readexactly(len(b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n"))
    assert data == b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n"
    writer.close()
    await writer.wait_closed()


async def test_close_is_graceful_and_stops_accepting(resp: Running) -> None:
    client = aioredis.Redis(host=resp.host, port=resp.port, retry=NO_RETRY)
    assert await client.ping() is True
    await resp.server.close()
    with pytest.raises(ConnectionError):
        await client.ping()
    await client.aclose()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(resp.host, resp.port)
