"""The PubSub service on three in-memory nodes: routing through the channel's
leader (no broadcast), cluster-wide counts, patterns, order, slow subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from peer_ring import ManualClock, Node, NodeConfig, ReplicationConfig
from peer_ring.app import Request
from peer_ring.apps.pubsub import Message, PubSub, PubSubConfig, SlowSubscriber, glob_match
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import ready_on_clock, wait_for


class CountingPubSub(PubSub):
    """Counts the replica commands this node receives."""

    def __init__(self, config: PubSubConfig | None = None) -> None:
        super().__init__(config)
        self.seen: dict[str, int] = {}

    def handle(self, request: Request) -> Any:
        self.seen[request.command] = self.seen.get(request.command, 0) + 1
        return super().handle(request)


def config(i: int) -> NodeConfig:
    return NodeConfig.local(
        f"n{i}",
        listen=f"10.3.0.{i}:7400",
        transport="memory",
        seeds=("10.3.0.1:7400",),
        replication=ReplicationConfig(partitions=32, replicas=2),
    )


Cluster = tuple[list[Node], list[CountingPubSub]]


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    net = MemoryNetwork()
    nodes = [Node(config(i), network=net) for i in (1, 2, 3, 4)]
    services = [n.register(CountingPubSub(PubSubConfig(buffer_messages=5))) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 4 for n in nodes), message="membership")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield nodes, services
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


async def test_messages_reach_subscribers_on_other_nodes_in_order_with_counts(
    cluster: Cluster,
) -> None:
    _, ps = cluster
    sub = ps[2].subscribe("orders")
    pat = ps[3].subscribe("ord*")
    async with sub, pat:
        assert await ps[0].publish("orders", "m0") == 2  # cluster-wide receiver count
        got = [await sub.get()]
        pgot = [await pat.get()]
        for i in range(1, 4):
            assert await ps[i % 4].publish("orders", f"m{i}") == 2
            got.append(await sub.get())
            pgot.append(await pat.get())
        assert [m.data for m in got] == [b"m0", b"m1", b"m2", b"m3"]
        assert [m.seq for m in got] == [got[0].seq + k for k in range(4)]  # no gap
        assert {m.leader for m in got} == {got[0].leader}
        assert [(m.kind, m.pattern, m.channel) for m in pgot[:1]] == [
            ("pmessage", b"ord*", b"orders")
        ]
        assert await ps[1].publish("other", "x") == 0
        assert await ps[0].numsub(b"orders") == 1
        assert await ps[1].channels() == [b"orders"]
        assert await ps[1].channels(b"x*") == []
        await wait_for(lambda: ps[0].numpat() == 1, message="pattern tables")
    assert await ps[0].publish("orders", "after") == 0  # unsubscribed everywhere


async def test_publishing_is_routed_not_broadcast(cluster: Cluster) -> None:
    _, ps = cluster
    async with ps[1].subscribe("quiet") as sub:
        for s in ps:
            s.seen.clear()
        for _ in range(10):
            assert await ps[0].publish("quiet", "x") == 1
            assert (await sub.get()).data == b"x"
        delivered = [s.seen.get("deliver", 0) for s in ps]
        assert delivered == [0, 10, 0, 0]  # only the subscriber's node gets the messages
        routed = [s.seen.get("pub", 0) for s in ps]
        assert sum(routed) == 10
        assert max(routed) == 10  # one leader numbered them all


async def test_a_slow_subscriber_is_dropped_not_buffered_without_bound(cluster: Cluster) -> None:
    _, ps = cluster
    slow = ps[2].subscribe("firehose")
    await slow.start()
    for i in range(5):
        assert await ps[0].publish("firehose", f"{i}") == 1
    assert await ps[0].publish("firehose", "overflow") == 0  # buffer of 5 full: dropped
    assert ps[2].dropped == 1
    assert [(await slow.get()).data for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    with pytest.raises(SlowSubscriber):
        await slow.get()
    assert await ps[1].publish("firehose", "later") == 0
    await slow.close()


async def test_async_for_subscription_unsubscribes_when_the_loop_ends(cluster: Cluster) -> None:
    _, ps = cluster
    got: list[Message] = []
    ready = asyncio.Event()

    async def reader() -> None:
        sub = ps[3].subscribe("loop.*")
        await sub.start()
        ready.set()
        async for msg in sub:
            got.append(msg)
            if len(got) == 2:
                break

    task = asyncio.create_task(reader())
    await ready.wait()
    await wait_for(lambda: ps[0].numpat() == 1, message="pattern known")
    assert await ps[0].publish("loop.a", "1") == 1
    assert await ps[1].publish("loop.b", "2") == 1
    await task
    assert [m.channel for m in got] == [b"loop.a", b"loop.b"]
    assert await ps[0].publish("loop.c", "3") == 0


def test_redis_glob_patterns() -> None:
    assert glob_match(b"h?llo", b"hello")
    assert glob_match(b"h*llo", b"heeeello")
    assert glob_match(b"h[ae]llo", b"hallo")
    assert not glob_match(b"h[^e]llo", b"hello")
    assert glob_match(b"h[a-b]llo", b"hbllo")
    assert glob_match(b"a\\*b", b"a*b")
    assert not glob_match(b"a\\*b", b"axb")
    assert not glob_match(b"news.*", b"news")


class Recorder:
    """A network-like subscriber: records each ``deliver_many`` call (one
    write) and refuses everything after ``limit`` messages."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self.writes: list[list[bytes]] = []

    def deliver(self, message: Message) -> bool:
        return self.deliver_many([message]) == 1

    def deliver_many(self, messages: list[Message]) -> int:
        took = max(0, min(len(messages), self.limit - sum(map(len, self.writes))))
        self.writes.append([m.data for m in messages[:took]])
        return took


async def test_concurrent_publishes_are_coalesced_per_node_in_order_with_counts(
    cluster: Cluster,
) -> None:
    _, ps = cluster
    async with ps[2].subscribe("burst") as a, ps[3].subscribe("burst") as b:
        for s in ps:
            s.seen.clear()
        # 5 publishes (the buffer holds 5) started in one loop iteration on a node that
        # does not lead the channel: they reach the leader in one request, and it
        # sends each subscriber's node one request
        key = b"c:burst"
        leader_id = ps[0].leader(ps[0].app.partition_for(key))
        leader = next(s for s in ps if s.app.node_id == leader_id)
        publisher = next(s for s in ps if s is not leader)
        counts = await asyncio.gather(*(publisher.publish("burst", f"m{i}") for i in range(5)))
        assert counts == [2] * 5
        # the publisher's node sent them to the leader together too
        assert leader.seen.get("pubm", 0) >= 1
        assert leader.seen.get("pub", 0) + leader.seen.get("pubm", 0) < 5
        for sub in (a, b):
            got = [await sub.get() for _ in range(5)]
            assert [m.seq for m in got] == [got[0].seq + k for k in range(5)]  # routing order
            # each message exactly once
            assert sorted(m.data for m in got) == sorted(f"m{i}".encode() for i in range(5))
        requests = [s.seen.get("deliver", 0) + s.seen.get("deliverm", 0) for s in ps]
        assert requests[2] < 5  # coalesced, not one request per message
        assert requests[3] < 5
        assert ps[2].seen.get("deliverm", 0) >= 1


async def test_a_coalesced_batch_is_one_write_per_subscriber_and_counts_a_slow_ones_prefix(
    cluster: Cluster,
) -> None:
    _, ps = cluster
    svc = ps[1]
    fast, slow = Recorder(), Recorder(limit=2)
    svc._local[("c", b"x")] = {fast, slow}
    svc._local[("c", b"y")] = {fast}
    batch = [["c", b"x", b"0", 1, "n9"], ["c", b"y", b"1", 1, "n9"], ["c", b"x", b"2", 2, "n9"]]
    batch.append(["c", b"x", b"3", 3, "n9"])
    counts = svc.handle(Request("deliverm", b"", -1, batch, "n9"))
    assert counts == [2, 1, 2, 1]  # the slow subscriber took the first two of its three
    assert fast.writes == [[b"0", b"1", b"2", b"3"]]  # one write, in order
    assert slow.writes == [[b"0", b"2"]]
    assert svc.dropped == 1
    assert svc.deliveries == 6
    del svc._local[("c", b"x")], svc._local[("c", b"y")]


async def test_a_node_without_patterns_announces_nothing_in_the_background() -> None:
    # Pattern tables go to every member (n^2 messages per refresh). A node
    # announces its table on change and, by the refresh, only while it has
    # patterns and for one lease after its last one went (a member that missed
    # the emptying announcement drops the table by then anyway); idle, nothing.
    clock = ManualClock()
    net = MemoryNetwork()
    lease = 3.0
    nodes = [Node(config(i), network=net, clock=clock) for i in (1, 2)]
    ps = [n.register(PubSub(PubSubConfig(lease=lease))) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        await ready_on_clock(nodes, clock)
        await clock.advance(10 * lease, step=0.05)  # 30 refresh periods, idle
        assert [p.pattern_announcements for p in ps] == [0, 0]

        sub = ps[0].subscribe("news.*")
        await sub.start()  # announced on change
        assert ps[0].pattern_announcements == 1
        await wait_for(lambda: ps[1].numpat() == 1, message="pattern known")
        await clock.advance(lease, step=0.05)  # refreshed every lease / 3
        assert ps[0].pattern_announcements == 4
        await sub.close()  # announced on change: the table is empty now
        assert ps[0].pattern_announcements == 5
        await wait_for(lambda: ps[1].numpat() == 0, message="pattern dropped")
        await clock.advance(10 * lease, step=0.05)
        after = ps[0].pattern_announcements
        assert 5 < after <= 5 + 3  # refreshed for at most one lease (every lease / 3) ...
        await clock.advance(10 * lease, step=0.05)
        assert ps[0].pattern_announcements == after  # ... then nothing
        assert ps[1].pattern_announcements == 0
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
