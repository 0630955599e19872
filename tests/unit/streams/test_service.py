"""The Streams service on three nodes of the in-memory transport: quorum
replication, leaders, the embedded API, blocking reads, data movement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.streams import Entry, StreamCommandError, Streams
from peer_ring.apps.streams._state import MAX_ID, MIN_ID
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for


def config(i: int) -> NodeConfig:
    return NodeConfig.local(
        f"n{i}",
        listen=f"10.2.0.{i}:7400",
        transport="memory",
        seeds=("10.2.0.1:7400",),
        replication=ReplicationConfig(partitions=32, replicas=3),
    )


Cluster = tuple[MemoryNetwork, list[Node], list[Streams]]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    net = MemoryNetwork()
    nodes = [Node(config(i), network=net) for i in (1, 2, 3)]
    services = [n.register(Streams()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="membership")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield net, nodes, services
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


def sid(text: str | None) -> tuple[int, ...]:
    assert text is not None
    return tuple(map(int, text.split("-")))


def held(services: list[Streams], key: bytes) -> list[int]:
    """How many entries each node's replica of ``key`` holds."""
    out = []
    for svc in services:
        p = svc.app.partition_for(key)
        s = svc._parts.get(p, {}).get(key)
        out.append(0 if s is None else len(s))
    return out


async def test_an_acknowledged_add_is_held_by_w_replicas(cluster: Cluster) -> None:
    _, _, services = cluster
    ids = [await services[i % 3].add(b"orders", {"n": str(i)}) for i in range(20)]
    assert ids == sorted(ids, key=sid)
    assert len(set(ids)) == 20
    assert sum(1 for n in held(services, b"orders") if n == 20) >= 2  # W = 2
    await wait_for(lambda: held(services, b"orders") == [20, 20, 20], message="all replicas")
    entries = await services[2].range(b"orders")
    assert [e.fields[b"n"] for e in entries] == [b"%d" % i for i in range(20)]
    assert await services[1].length(b"orders") == 20


async def test_a_group_delivers_each_entry_once_and_acks_clear_the_pel(cluster: Cluster) -> None:
    _, _, services = cluster
    group = services[0].group(b"jobs", "billing")
    assert await group.create("0")
    assert not await services[1].group(b"jobs", "billing").create("0")  # exists
    for i in range(10):
        await services[i % 3].add(b"jobs", [b"job", b"%d" % i])
    a = await services[1].group(b"jobs", "billing").read("w1", count=4)
    b = await services[2].group(b"jobs", "billing").read("w2", count=100)
    assert [e.fields[b"job"] for e in a + b] == [b"%d" % i for i in range(10)]
    for e in a[:2]:
        assert await e.ack()
    assert not await a[0].ack()  # already acknowledged
    pend = await services[0].group(b"jobs", "billing").pending("w1")
    assert [e.id for e in pend] == [e.id for e in a[2:]]
    claimed = await services[0].group(b"jobs", "billing").claim("w3", 0.0)
    assert {e.id for e in claimed} == {e.id for e in a[2:] + b}


async def test_consume_blocks_until_an_entry_arrives_and_cancels_cleanly(
    cluster: Cluster,
) -> None:
    _, _, services = cluster
    await services[0].group(b"q", "g").create("$")
    got: list[Entry] = []

    async def worker() -> None:
        async for entry in services[1].group(b"q", "g").consume("w", block=0.2):
            got.append(entry)
            await entry.ack()

    task = asyncio.create_task(worker())
    await services[2].add(b"q", {"x": "1"})
    await wait_for(lambda: len(got) == 1, message="delivered")
    await services[2].add(b"q", {"x": "2"})
    await wait_for(lambda: len(got) == 2, message="delivered again")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    info = await services[0].call(b"q", "pending", b"g", None)
    assert info[0] == 0  # both acknowledged


async def test_errors_carry_redis_texts(cluster: Cluster) -> None:
    _, _, services = cluster
    await services[0].add(b"e", {"a": "1"}, id="5-5")
    with pytest.raises(StreamCommandError, match="equal or smaller than the target stream top"):
        await services[1].add(b"e", {"a": "1"}, id="5-5")
    with pytest.raises(StreamCommandError, match=r"^NOGROUP No such key 'e' or consumer group 'x'"):
        await services[2].group(b"e", "x").read("c")
    assert await services[0].add(b"missing", {"a": "1"}, nomkstream=True) is None
    assert await services[0].length(b"missing") == 0


async def test_idempotent_add_does_not_duplicate_a_retry(cluster: Cluster) -> None:
    _, _, services = cluster
    first = await services[0].add(b"idem", {"a": "1"}, producer=("p1", 7))
    again = await services[1].add(b"idem", {"a": "1"}, producer=("p1", 7))
    assert first == again
    assert await services[2].length(b"idem") == 1


async def test_ids_keep_growing_and_nothing_acknowledged_is_lost_when_the_leader_stops(
    cluster: Cluster,
) -> None:
    _, nodes, services = cluster
    key = b"failover"
    p = services[0].app.partition_for(key)
    leader = services[0].leader(p)
    idx = [n.id for n in nodes].index(leader)
    before = [
        await services[(idx + 1) % 3].add(key, {"i": str(i)}, id=f"{10**15 + i}-0")
        for i in range(5)
    ]
    await services[idx].group(key, "g").create("0")
    await nodes[idx].stop()
    rest = [s for k, s in enumerate(services) if k != idx]
    await wait_for(lambda: all(s.leader(p) != leader for s in rest), message="new leader")
    after = await rest[0].add(key, {"i": "new"})  # '*' after an explicit far-future ID
    assert sid(after) > sid(before[-1])
    entries = await rest[1].range(key)
    assert [e.id for e in entries] == [*before, after]
    got = await rest[1].group(key, "g").read("w", count=100)
    assert [e.id for e in got] == [*before, after]


async def test_a_joining_node_receives_streams_by_transfer(cluster: Cluster) -> None:
    net, nodes, services = cluster
    keys = [b"s%d" % i for i in range(12)]
    for k in keys:
        await services[0].add(k, {"v": "1"})
        await services[0].group(k, "g").create("0")
    late = Node(config(4), network=net)
    late_svc = late.register(Streams())
    await late.start()
    try:
        everyone = [*nodes, late]
        await wait_for(lambda: len({n.ring.checksum for n in everyone}) == 1, message="same ring")
        await late.wait_ready()
        async with asyncio.timeout(20):
            await asyncio.gather(*(n.transfers.idle() for n in everyone))
        for k in keys:
            assert [e.fields for e in await late_svc.range(k)] == [{b"v": b"1"}]
            assert len(await late_svc.group(k, "g").read("c")) == 1
        owned = [k for k in keys if late.id in late_svc.app.owners(late_svc.app.partition_for(k))]
        assert owned  # some streams moved to the new node, with their groups
        for k in owned:
            s = late_svc._parts[late_svc.app.partition_for(k)][k]
            assert s.range(MIN_ID, MAX_ID)
    finally:
        await late.stop()


async def test_entries_delivered_max_times_go_to_the_dead_letter_stream(cluster: Cluster) -> None:
    _, _, services = cluster
    group = services[0].group(b"work", "g")
    await group.create("0")
    await group.dead_letter(2, b"work:dead")
    poison = await services[1].add(b"work", {"job": "poison"})
    fine = await services[1].add(b"work", {"job": "fine"})
    first = await services[2].group(b"work", "g").read("w1")  # delivery 1 of both
    assert [e.id for e in first] == [poison, fine]
    assert await first[1].ack()
    again = await services[2].group(b"work", "g").pending("w1")  # delivery 2
    assert [e.id for e in again] == [poison]
    # a third delivery (claim) is refused: the entry goes to the dead letters
    assert await services[0].group(b"work", "g").claim("w2", min_idle=0.0) == []
    dead = await services[1].range(b"work:dead")
    assert len(dead) == 1
    assert dead[0].fields[b"source-id"] == poison.encode()
    assert dead[0].fields[b"deliveries"] == b"2"
    assert dead[0].fields[b"job"] == b"poison"
    assert (await services[2].call(b"work", "pending", b"g", None))[0] == 0
    assert sum(s.dead_lettered for s in services) == 1
    with pytest.raises(StreamCommandError, match="another stream"):
        await group.dead_letter(3, b"work")
