"""Pub/sub over a real RESP socket in-process: a slow subscriber is
disconnected at its output-buffer bound (log line and metric), RESET leaves
the channels, and the frames are RESP3 pushes after HELLO 3."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.kv.local import LocalKV
from peer_ring.apps.pubsub import PubSub, PubSubConfig
from peer_ring.apps.streams import Streams
from peer_ring.server.resp import RespServer
from peer_ring.transport.memory import MemoryNetwork

LIMIT = 256 * 1024


async def expect(reader: asyncio.StreamReader, frame: bytes) -> bool:
    """Whether the next bytes on ``reader`` are exactly ``frame``."""
    return await asyncio.wait_for(reader.readexactly(len(frame)), 10) == frame


@pytest.fixture
async def served() -> AsyncIterator[tuple[PubSub, RespServer]]:
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
    ps = node.register(PubSub(PubSubConfig(buffer_bytes=LIMIT)))
    streams = node.register(Streams())
    await node.start()
    await node.wait_ready()
    server = RespServer(
        LocalKV(), host="127.0.0.1", port=0, apps={"pubsub": ps, "streams": streams}
    )
    await server.start()
    yield ps, server
    await server.close()
    await node.stop()


async def test_a_slow_subscriber_is_disconnected_with_a_log_line_and_a_metric(
    served: tuple[PubSub, RespServer], caplog: pytest.LogCaptureFixture
) -> None:
    ps, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"SUBSCRIBE fire\r\n")
    assert await expect(reader, b"*3\r\n$9\r\nsubscribe\r\n$4\r\nfire\r\n:1\r\n")
    payload = b"x" * 65536
    receivers = 1
    sent = 0
    with caplog.at_level(logging.WARNING, logger="peer_ring.server.resp"):
        while receivers and sent < 5000:  # the client never reads: buffers fill up
            receivers = await ps.publish("fire", payload)
            sent += 1
    assert receivers == 0
    assert ps.dropped == 1
    assert "disconnecting slow subscriber" in caplog.text
    metrics = {m.name: m.value for m in ps._metrics()}
    assert metrics["slow_subscribers_dropped"] == 1
    assert metrics["subscriptions"] == 0
    rest = await asyncio.wait_for(reader.read(), 10)  # ... then EOF: the server closed it
    assert len(rest) < sent * len(payload)
    writer.close()


async def test_resp3_push_frames_and_reset_leaves_the_channels(
    served: tuple[PubSub, RespServer],
) -> None:
    ps, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"HELLO 3\r\n")
    await reader.readuntil(b"modules\r\n*0\r\n")
    writer.write(b"SUBSCRIBE a\r\n")
    assert await expect(reader, b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    assert await ps.publish("a", "hi") == 1
    assert await expect(reader, b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
    writer.write(b"GET k\r\n")  # RESP3: any command while subscribed
    assert await expect(reader, b"_\r\n")
    writer.write(b"RESET\r\n")
    assert await expect(reader, b"+RESET\r\n")
    assert await ps.publish("a", "gone") == 0
    writer.close()


async def test_confirmations_and_replies_of_a_pipeline_keep_their_order(
    served: tuple[PubSub, RespServer],
) -> None:
    """One read mixing replies and pushed frames (RESP3): every frame leaves
    in the order its command ran, none inside or ahead of an earlier reply."""
    ps, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"HELLO 3\r\n")
    await reader.readuntil(b"modules\r\n*0\r\n")
    writer.write(b"SET k v\r\nSUBSCRIBE a b\r\nGET k\r\nUNSUBSCRIBE a\r\nGET k\r\n")
    assert await expect(
        reader,
        b"+OK\r\n"
        b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        b">3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        b"$1\r\nv\r\n"
        b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n"
        b"$1\r\nv\r\n",
    )
    assert await ps.publish("b", "m") == 1  # idle connection: written at once
    assert await expect(reader, b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\nm\r\n")
    writer.close()


async def test_a_subscribed_resp2_connection_runs_only_the_pubsub_commands(
    served: tuple[PubSub, RespServer],
) -> None:
    _, server = served
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"SUBSCRIBE a\r\nGET k\r\nSET k v\r\nPING\r\nUNSUBSCRIBE\r\nGET k\r\n")
    assert await expect(
        reader,
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT"
        b" / RESET are allowed in this context\r\n"
        b"-ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT"
        b" / RESET are allowed in this context\r\n"
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"
        b"$-1\r\n",  # unsubscribed from everything: GET runs again
    )
    writer.close()


async def test_a_message_reaches_a_client_blocked_in_xread(
    served: tuple[PubSub, RespServer],
) -> None:
    """RESP3: pushed frames are not held behind a blocking read in flight."""
    ps, server = served
    streams = server.apps.get("streams")
    assert isinstance(streams, Streams)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"HELLO 3\r\n")
    await reader.readuntil(b"modules\r\n*0\r\n")
    writer.write(b"SUBSCRIBE a\r\n")
    assert await expect(reader, b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n")
    writer.write(b"XREAD BLOCK 0 STREAMS s $\r\n")
    conn = next(iter(server.connections.values()))
    deadline = asyncio.get_running_loop().time() + 10
    while not conn._blocking:  # the worker awaits the blocking read
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert await ps.publish("a", "hi") == 1
    assert await expect(reader, b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n")
    r2, w2 = await asyncio.open_connection("127.0.0.1", server.port)
    w2.write(b"XADD s 1-1 f v\r\n")
    assert await expect(r2, b"$3\r\n1-1\r\n")
    reply = await asyncio.wait_for(reader.readuntil(b"$1\r\nv\r\n"), 10)
    assert b"1-1" in reply  # the blocked read completes with the entry
    writer.close()
    w2.close()
