"""A whole cluster inside one test: three nodes on the in-memory transport.

The pattern of docs/how-to/testing.md, as a pytest test you can copy. No
sockets, no processes: ``MemoryNetwork`` delivers frames between nodes of
one event loop and can partition, drop and delay them.
Run it with ``pytest examples/memory_cluster_test.py`` (pytest-asyncio).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from peer_ring import Node, NodeConfig, QuorumNotReached, ReplicationConfig
from peer_ring.apps.kv import KVStore
from peer_ring.transport.memory import MemoryNetwork

ADDRESSES = ("10.0.0.1:7400", "10.0.0.2:7400", "10.0.0.3:7400")


# --8<-- [start:fixture]
@pytest.fixture
async def cluster() -> AsyncIterator[tuple[MemoryNetwork, list[Node], list[KVStore]]]:
    net = MemoryNetwork(seed=1)  # the seed makes injected loss reproducible
    nodes, stores = [], []
    for i, address in enumerate(ADDRESSES, 1):
        config = NodeConfig.local(
            f"n{i}",
            listen=address,  # any string HOST:PORT: nothing is bound
            seeds=ADDRESSES[:1],
            transport="memory",
            replication=ReplicationConfig(partitions=64),  # small Q: fast tests
        )
        node, kv = Node(config, network=net), KVStore()
        node.register(kv)
        nodes.append(node)
        stores.append(kv)
    await asyncio.gather(*(node.start() for node in nodes))
    await asyncio.gather(*(node.wait_ready() for node in nodes))
    yield net, nodes, stores
    await asyncio.gather(*(node.stop() for node in nodes))


# --8<-- [end:fixture]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Await a condition with a deadline (never a bare sleep standing in for it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


# --8<-- [start:test]
async def test_writes_survive_one_isolated_node(
    cluster: tuple[MemoryNetwork, list[Node], list[KVStore]],
) -> None:
    net, nodes, (kv1, kv2, kv3) = cluster
    await wait_until(lambda: all(len(n.members) == 3 for n in nodes))

    await kv1.put(b"user:42", b"Ada")
    assert await kv3.get(b"user:42") == b"Ada"  # any node reads any key

    net.isolate(ADDRESSES[2])  # n3 is cut off from n1 and n2
    await kv1.put(b"user:42", b"Ada L.")  # W=2: n1 and n2 are enough
    with pytest.raises(QuorumNotReached):  # n3 alone cannot make R=2
        await kv3.get(b"user:42", timeout=1.0)

    net.heal()
    assert await kv2.get(b"user:42") == b"Ada L."


# --8<-- [end:test]
