"""Pub/sub, blocking reads and callback forms on the single RESP dispatch path,
with issue 17's ACL users and watchdog: a subscribed client and a client
blocked in XREAD are never idle-closed (as in Redis), an idle plain client on
the same server is; a request completing counts as progress for the
slow-request limit; a restricted user's GET/SET in callback form are
permission-checked like any command, and pub/sub commands need their level.
The watchdog is driven tick by tick (ManualClock). Binds 127.0.0.1: run in a
private network namespace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.kv.api import KVApi
from peer_ring.apps.kv.local import LocalKV
from peer_ring.apps.pubsub import PubSub
from peer_ring.apps.streams import Streams
from peer_ring.clock import ManualClock
from peer_ring.server.resp import RespConfig, RespServer
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.resp.test_callback_forms import HeldKV, SyncKV

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """start(kv=None, **RespConfig fields) -> (server, pubsub service)."""
    node = Node(
        NodeConfig.local(
            "n1",
            listen="10.4.0.1:7400",
            transport="memory",
            seeds=("10.4.0.1:7400",),
            replication=ReplicationConfig(partitions=8, replicas=1, read_quorum=1, write_quorum=1),
        ),
        network=MemoryNetwork(),
    )
    ps = node.register(PubSub())
    streams = node.register(Streams())
    await node.start()
    await node.wait_ready()
    servers: list[RespServer] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(kv: KVApi | None = None, **cfg: Any) -> tuple[RespServer, PubSub]:
        server = RespServer(
            kv if kv is not None else LocalKV(), host="127.0.0.1", port=0,
            config=RespConfig(**cfg), clock=ManualClock(),
            apps={"pubsub": ps, "streams": streams},
        )  # fmt: skip
        await server.start()
        servers.append(server)
        return server, ps

    start.writers = writers  # type: ignore[attr-defined]
    yield start
    for w in writers:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()
    for s in servers:
        await s.close()
    await node.stop()


async def _connect(serve: Any, server: RespServer) -> Conn:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    serve.writers.append(writer)
    return reader, writer


async def _expect(reader: asyncio.StreamReader, frame: bytes) -> None:
    assert await asyncio.wait_for(reader.readexactly(len(frame)), 10) == frame


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


async def test_subscribed_and_blocked_clients_are_not_idle_closed_idle_ones_are(
    serve: Any,
) -> None:
    server, ps = await serve(timeout=3.0)
    sub_r, sub_w = await _connect(serve, server)
    sub_w.write(b"SUBSCRIBE news\r\n")
    await _expect(sub_r, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n")
    blk_r, blk_w = await _connect(serve, server)
    blk_w.write(b"XREAD BLOCK 0 STREAMS s $\r\n")
    idle_r, idle_w = await _connect(serve, server)
    idle_w.write(b"PING\r\n")
    await _expect(idle_r, b"+PONG\r\n")
    await wait_for(
        lambda: any(c.last_command == "xread" and c.running() for c in server.connections.values()),
        timeout=5,
        message="XREAD is blocked",
    )
    _ticks(server, 10)  # far past the 3 s idle timeout
    assert await _closed(idle_r)
    assert server.watchdog.closed["idle"] == 1
    assert not await _closed(sub_r)
    assert not await _closed(blk_r)
    assert await ps.publish("news", "still here") == 1  # the subscriber still receives
    await _expect(sub_r, b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$10\r\nstill here\r\n")
    # once it leaves every channel it is an ordinary client again: idle-closable
    sub_w.write(b"UNSUBSCRIBE\r\n")
    await _expect(sub_r, b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:0\r\n")
    await wait_for(
        lambda: all(not c.subscribed for c in server.connections.values()),
        timeout=5,
        message="unsubscribed",
    )
    _ticks(server, 10)
    assert await _closed(sub_r)
    assert not await _closed(blk_r)
    assert server.watchdog.closed["idle"] == 2


async def test_a_completion_is_progress_for_the_slow_request_limit() -> None:
    """A partial request parsed behind commands that take long is not the
    client's delay while those commands keep completing; once nothing
    completes, the partial request is cut off as usual."""
    kv = HeldKV()
    server = RespServer(kv, host="127.0.0.1", port=0, config=RespConfig(request_timeout=3.0),
                        clock=ManualClock())  # fmt: skip
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET a\r\nGET b\r\nGET c\r\nGET d\r\n*1\r\n$4\r\nPI")
        await wait_for(lambda: kv.started == 1, timeout=5, message="GET a started")
        for n in range(1, 5):  # one completion every 2 ticks: 8 ticks > the 3 s limit
            _ticks(server, 2)
            assert server.watchdog.closed["slow_request"] == 0
            kv.release()
            if n < 4:
                await wait_for(lambda n=n: kv.started == n + 1, timeout=5, message="next GET")
        await _expect(reader, b"$-1\r\n" * 4)  # one read's replies leave in one write
        assert server.watchdog.closed["slow_request"] == 0
        writer.write(b"NG\r\n")
        await _expect(reader, b"+PONG\r\n")
        writer.write(b"*1\r\n$4\r\nPI")  # now a real slowloris: nothing completes
        await wait_for(
            lambda: any(c.parser.buffered for c in server.connections.values()),
            timeout=5,
            message="partial request buffered",
        )
        _ticks(server, 3)
        assert server.watchdog.closed["slow_request"] == 1
        assert await _closed(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        await server.close()


async def test_a_restricted_user_is_checked_on_callback_forms_and_pubsub(
    serve: Any, tmp_path: Any
) -> None:
    users = tmp_path / "users.acl"
    users.write_text("user reader on >r-pass +@read\nuser writer on >w-pass +@read +@write\n")
    kv = SyncKV()
    server, ps = await serve(kv=kv, requirepass="admin-pass", users_file=str(users))
    assert server.callbacks is not None  # GET / SET run in their callback form
    r, w = await _connect(serve, server)
    w.write(b"GET k\r\n")
    await _expect(r, b"-NOAUTH Authentication required.\r\n")
    w.write(b"AUTH reader r-pass\r\n")
    await _expect(r, b"+OK\r\n")
    w.write(b"SET k v\r\n")
    await _expect(r, b"-NOPERM User reader has no permissions to run the 'set' command\r\n")
    assert kv.started == 0  # refused before the callback form started
    w.write(b"GET k\r\nPUBLISH ch x\r\n")
    await _expect(r, b"$-1\r\n")
    await _expect(r, b"-NOPERM User reader has no permissions to run the 'publish' command\r\n")
    assert kv.started == 1
    # a transaction queues the refused command as an error: EXEC aborts
    w.write(b"MULTI\r\nSET k v\r\nEXEC\r\n")
    await _expect(r, b"+OK\r\n")
    await _expect(r, b"-NOPERM User reader has no permissions to run the 'set' command\r\n")
    await _expect(r, b"-EXECABORT Transaction discarded because of previous errors.\r\n")
    assert kv.started == 1
    w.write(b"SUBSCRIBE ch\r\n")  # reading a channel needs read: allowed
    await _expect(r, b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n")
    r2, w2 = await _connect(serve, server)
    w2.write(b"AUTH writer w-pass\r\nSET k v\r\nPUBLISH ch hello\r\n")
    await _expect(r2, b"+OK\r\n+OK\r\n:1\r\n")
    assert kv.started == 2
    await _expect(r, b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n")
    assert await ps.publish("ch", "x") == 1
