"""RESP connection limits on real sockets: maxclients, idle clients, slowloris
requests, clients that stop reading. The watchdog is driven tick by tick (its
clock is a ManualClock), so no test sleeps for a timeout. Binds 127.0.0.1:
run in a private network namespace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer_ring.apps.kv.api import Limits
from peer_ring.apps.kv.local import LocalKV
from peer_ring.clock import ManualClock
from peer_ring.errors import ConfigError
from peer_ring.server.resp import RespConfig, RespServer
from tests.conftest import wait_for

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


_WRITERS: list[asyncio.StreamWriter] = []


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[RespServer] = []

    async def start(**cfg: Any) -> RespServer:
        kv = LocalKV(limits=Limits(max_value_size=4 * 1024 * 1024))
        server = RespServer(kv, host="127.0.0.1", port=0, config=RespConfig(**cfg),
                            clock=ManualClock())  # fmt: skip
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.close()
    while _WRITERS:
        w = _WRITERS.pop()
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()


async def _connect(server: RespServer) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    _WRITERS.append(writer)
    return reader, writer


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1 << 20), 0.05)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


def _ticks(server: RespServer, n: int) -> None:
    for _ in range(n):
        server.watchdog.tick += 1
        server.watchdog.check()


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigError):
        RespConfig(timeout=-1)
    with pytest.raises(ConfigError):
        RespConfig(request_timeout=0)


async def test_maxclients_answers_redis_error_text(serve: Any) -> None:
    server = await serve(max_clients=1)
    r1, w1 = await _connect(server)
    w1.write(b"PING\r\n")
    assert await r1.readline() == b"+PONG\r\n"
    r2, _ = await _connect(server)
    assert await r2.readline() == b"-ERR max number of clients reached\r\n"
    assert server.stats.rejected_connections == 1


async def test_idle_clients_are_closed_after_timeout_active_ones_are_not(serve: Any) -> None:
    server = await serve(timeout=5.0)
    idle_r, _ = await _connect(server)
    busy_r, busy_w = await _connect(server)
    await wait_for(lambda: len(server.connections) == 2, timeout=5, message="two clients")
    for _ in range(8):
        busy_w.write(b"PING\r\n")
        assert await busy_r.readline() == b"+PONG\r\n"
        _ticks(server, 1)
    assert await _closed(idle_r)
    assert not await _closed(busy_r)
    assert server.watchdog.closed["idle"] == 1


async def test_a_slowloris_request_is_cut_off(serve: Any) -> None:
    """One byte per tick keeps the client 'active' but never completes a request."""
    server = await serve(request_timeout=5.0)
    reader, writer = await _connect(server)
    request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n" + b"x" * 100 + b"\r\n"
    for byte in request[:40]:
        writer.write(bytes([byte]))
        await writer.drain()
        await wait_for(lambda: server.connections and next(iter(
            server.connections.values())).parser.buffered > 0, timeout=5)  # fmt: skip
        _ticks(server, 1)
        if await _closed(reader):
            break
    assert server.watchdog.closed["slow_request"] == 1
    assert await _closed(reader)


async def test_a_pipelining_client_making_progress_is_not_cut_off(serve: Any) -> None:
    server = await serve(request_timeout=2.0)
    reader, writer = await _connect(server)
    for i in range(6):  # every tick ends mid-request, but requests keep completing
        writer.write(b"PING\r\n*1\r\n$4\r\nPI")
        await writer.drain()
        expected = b"+PONG\r\n" if i == 0 else b"+PONG\r\n+PONG\r\n"
        assert await reader.readexactly(len(expected)) == expected
        _ticks(server, 1)
        writer.write(b"NG\r\n")
    assert server.watchdog.closed["slow_request"] == 0


async def test_a_client_that_stops_reading_is_closed_at_the_output_limit(serve: Any) -> None:
    server = await serve(output_buffer_limit=256 * 1024, write_buffer_high=1024 * 1024)
    reader, writer = await _connect(server)
    value = b"v" * (1024 * 1024)
    writer.write(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n%b\r\n" % (len(value), value))
    assert await reader.readline() == b"+OK\r\n"
    writer.write(b"GET big\r\n" * 40)  # ~40 MB of replies, never read

    def over() -> bool:
        conn = next(iter(server.connections.values()), None)
        return conn is None or (
            conn.transport is not None and conn.transport.get_write_buffer_size() > 256 * 1024
        )

    await wait_for(over, timeout=10, message="replies pile up")
    _ticks(server, 1)
    assert server.watchdog.closed["output_buffer"] == 1
    await wait_for(lambda: not server.connections, timeout=5, message="the client is gone")
