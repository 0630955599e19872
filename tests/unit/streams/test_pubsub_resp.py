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
    await node.start()
    await node.wait_ready()
    server = RespServer(LocalKV(), host="127.0.0.1", port=0, apps={"pubsub": ps})
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
