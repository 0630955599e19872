"""A restarted node's bootstrap compares Merkle roots first (``ae_roots``), one
request per peer, and exchanges trees only for the partitions that differ."""

from __future__ import annotations

import asyncio

import pytest

from peer_ring import wire
from peer_ring.errors import InvalidRequest
from peer_ring.node import Node
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.handoff._cluster import holds_all, key, make_node, reg, write


async def _three(net: MemoryNetwork) -> list[Node]:
    nodes = [make_node(net, i, replicas=3) for i in (1, 2, 3)]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="3 members")
    await wait_for(lambda: len({n.ring.checksum for n in nodes}) == 1, message="one ring")
    return nodes


async def test_roots_name_exactly_the_partitions_that_differ() -> None:
    nodes = await _three(MemoryNetwork())
    a = nodes[0]
    try:
        everything = list(range(a.ring.partitions))
        assert await write(a, range(40), quorum=3, expect=40)
        assert await a.antientropy.differing("n2", everything) == set()
        # one record only n1 holds: its partition, and only it, differs
        p = a.ring.partition_for(key(999))
        reg(a).import_records(p, [(key(999), [1, b"only here"])])
        assert await a.antientropy.differing("n2", everything) == {p}
        # asked about other partitions only, the answer names none outside them
        others = [q for q in everything if q != p]
        assert await a.antientropy.differing("n2", others) == set()
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


async def test_a_restart_exchanges_trees_only_for_partitions_with_data() -> None:
    net = MemoryNetwork()
    nodes = [*await _three(net)]
    revived: Node | None = None
    try:
        acked = await write(nodes[0], range(12), quorum=3, expect=12)
        with_data = {nodes[0].ring.partition_for(key(i)) for i in acked}
        await nodes[2].stop()
        revived = make_node(net, 3, replicas=3)
        await revived.start()
        await asyncio.wait_for(revived.bootstrap.done.wait(), 20)
        m = revived.metrics()
        owned = set(revived.ring.partitions_of("n3"))
        assert with_data <= owned  # N=3 of 3 nodes: every partition
        assert m["bootstrap_partitions_synced"] == len(owned)
        # every partition without data was settled by its roots alone (those
        # with data too if their transfer to the restarted node beat the
        # comparison); trees were exchanged only for partitions with data
        assert m["bootstrap_partitions_equal_roots"] >= len(owned - with_data)
        assert m["ae_exchanges"] <= 2 * len(with_data)
        assert holds_all(revived, acked)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
        if revived is not None:
            await revived.stop()


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (["ae_roots", 8], "takes"),
        (["ae_roots", "8", []], "takes"),
        (["ae_roots", 8, [["reg", 1]]], "entry"),
        (["ae_roots", 8, [["reg", "1", 5]]], "entry"),
        (["ae_roots", 8, [["reg", 10_000, 5]]], "out of range"),
        (["ae_roots", 99, [["reg", 1, 5]]], "depth"),
    ],
)
async def test_a_malformed_roots_frame_is_refused(frame: list[object], why: str) -> None:
    nodes = await _three(MemoryNetwork())
    try:
        with pytest.raises(InvalidRequest, match=why):
            await nodes[0].transport.request(nodes[1].address, frame)
        # and the node still answers a good one
        assert await nodes[0].transport.request(
            nodes[1].address, wire.roots_frame(8, [["reg", 1, 12345]])
        ) == [1]
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
