"""Partition transfer on join and decommission, over the memory transport."""

from __future__ import annotations

import asyncio

from peer_ring.node import Node
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.handoff._cluster import key, make_node, placement_ok, reg, write


async def test_join_under_load_moves_every_key_to_exactly_its_owners() -> None:
    net = MemoryNetwork()
    nodes = [make_node(net, 1), make_node(net, 2)]
    await asyncio.gather(*(n.start() for n in nodes))
    joiner: Node | None = None
    try:
        await wait_for(lambda: all(len(n.members) == 2 for n in nodes), message="2 members")
        acked = await write(nodes[0], range(2000))
        assert len(acked) == 2000
        joiner = make_node(net, 3)
        # writes continue (from both old nodes) while the third node joins
        more = asyncio.gather(
            write(nodes[0], range(2000, 2300)), write(nodes[1], range(2300, 2600))
        )
        await joiner.start()
        extra = await more
        acked += extra[0] + extra[1]
        everyone = [*nodes, joiner]
        await wait_for(
            lambda: placement_ok(everyone, acked), timeout=20, message="keys on exactly N owners"
        )
        # the new node received data and the old ones gave some up
        ring = joiner.ring
        assert reg(joiner).data
        assert ring.partitions_of("n3")
        assert sum(n.metrics()["partitions_dropped"] for n in nodes) > 0
        assert sum(n.metrics()["records_sent"] for n in nodes) > 0
        for node in everyone:
            for i in acked[::97]:
                res = await node.coordinator.run("reg", key(i), "get", None, quorum=2)
                assert all(answer == [1, b"v%d" % i] for _, answer in res.acks)
        assert all(not n.status()["transfers"] for n in everyone)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
        if joiner is not None:
            await joiner.stop()


async def test_decommission_hands_over_and_keeps_every_key_at_n_replicas() -> None:
    net = MemoryNetwork()
    nodes = [make_node(net, i) for i in (1, 2, 3)]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="3 members")
        await wait_for(lambda: len({n.ring.checksum for n in nodes}) == 1, message="one ring")
        acked = await write(nodes[0], range(1000))
        assert len(acked) == 1000
        leaver = nodes[2]
        await leaver.leave()
        # the handoff happened before the leave was announced
        assert leaver.metrics()["transfers_completed"] > 0
        await leaver.stop()
        rest = nodes[:2]
        await wait_for(lambda: all(len(n.members) == 2 for n in rest), message="leave spread")
        await wait_for(lambda: placement_ok(rest, acked), timeout=15, message="N replicas")
        assert all(len(reg(n).data) > 0 for n in rest)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
