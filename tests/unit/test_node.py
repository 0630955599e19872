"""Nodes on the in-memory transport: membership spread, routing, quorums, failure detection."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest

from peer_ring import ManualClock, MemberState, QuorumNotReached, wire
from peer_ring.config import NodeConfig, ReplicationConfig
from peer_ring.errors import (
    ConfigError,
    InvalidRequest,
    PeerUnavailable,
    RingMismatch,
    UnknownCommand,
)
from peer_ring.node import Node
from peer_ring.service import AppContext, Record, Request, Service
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for


class Counter(Service):
    """A second application proving the Service contract: per-key counters."""

    namespace = "counter"

    def __init__(self) -> None:
        self.counts: dict[int, dict[bytes, int]] = defaultdict(dict)

    def handle(self, request: Request) -> Any:
        part = self.counts[request.partition]
        if request.command == "incr":
            if not isinstance(request.payload, int):
                raise InvalidRequest("incr takes an integer")
            part[request.key] = part.get(request.key, 0) + request.payload
            return part[request.key]
        if request.command == "get":
            return part.get(request.key, 0)
        if request.command == "slow_get":
            return self._slow(part.get(request.key, 0))
        raise UnknownCommand(f"counter has no command {request.command!r}")

    async def _slow(self, value: int) -> int:
        await asyncio.sleep(0.01)
        return value

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter(self.counts[partition].items())

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self.counts[partition]
        changed = 0
        for key, value in records:
            if value > part.get(key, 0):
                part[key] = value
                changed += 1
        return changed


def config(i: int, **kw: Any) -> NodeConfig:
    kw.setdefault("replication", ReplicationConfig(partitions=64, replicas=3))
    kw.setdefault("seeds", ("10.0.0.1:7400",))
    return NodeConfig.local(f"n{i}", listen=f"10.0.0.{i}:7400", transport="memory", **kw)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[MemoryNetwork, list[Node]]]:
    net = MemoryNetwork()
    nodes = [Node(config(i), network=net) for i in (1, 2, 3)]
    for node in nodes:
        node.register(Counter())
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="membership spread")
    yield net, nodes
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_every_node_computes_the_same_ring(cluster: tuple[MemoryNetwork, list[Node]]) -> None:
    _, nodes = cluster
    assert len({n.ring.checksum for n in nodes}) == 1
    assert nodes[0].ring.node_ids == {"n1", "n2", "n3"}


async def test_a_node_joining_through_any_member_is_seen_by_all(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    net, nodes = cluster
    late = Node(config(4, seeds=("10.0.0.3:7400",)), network=net)
    await late.start()
    try:
        everyone = [*nodes, late]
        await wait_for(lambda: all(len(n.members) == 4 for n in everyone), message="join spread")
        await wait_for(lambda: len({n.ring.checksum for n in everyone}) == 1, message="same ring")
    finally:
        await late.stop()


async def test_call_routes_to_owner_from_any_node(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    _, nodes = cluster
    for i in range(30):
        key = f"key-{i}".encode()
        await nodes[i % 3].call("counter", key, "incr", 1)
        await nodes[(i + 1) % 3].call("counter", key, "incr", 2)
        assert await nodes[(i + 2) % 3].call("counter", key, "get") == 3
        assert await nodes[i % 3].call("counter", key, "slow_get") == 3


async def test_errors_reach_the_caller_with_their_class(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    _, nodes = cluster
    with pytest.raises(UnknownCommand):
        await nodes[0].call("counter", b"k", "nope")
    with pytest.raises(UnknownCommand):
        await nodes[0].call("no-such-service", b"k", "get")
    with pytest.raises(InvalidRequest):
        await nodes[1].call("counter", b"k", "incr", "not a number")


async def test_quorum_write_reaches_all_replicas(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    _, nodes = cluster
    coordinator = nodes[0].coordinator
    result = await coordinator.run("counter", b"q", "incr", 5, quorum=1)
    assert len(result.acks) >= 1
    assert result.complete is not None
    everything = await result.complete
    assert sorted(node for node, _ in everything) == ["n1", "n2", "n3"]
    part = nodes[0].ring.partition_for(b"q")
    for node in nodes:
        counter = node.service("counter")
        assert isinstance(counter, Counter)
        assert counter.counts[part][b"q"] == 5


async def test_quorum_not_reached_is_an_error_with_counts(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    net, nodes = cluster
    await nodes[0].coordinator.run("counter", b"q", "incr", 1, quorum=2)
    net.isolate("10.0.0.1:7400")
    with pytest.raises(QuorumNotReached) as info:
        await nodes[0].coordinator.run("counter", b"q", "incr", 1, quorum=2, timeout=0.3)
    assert info.value.required == 2
    assert info.value.acked == 1
    # what /metrics exports as peer_ring_quorum_{rounds,failures}_total
    counts = nodes[0].metrics()
    assert (counts["quorum_rounds"], counts["quorum_failures"]) == (2, 1)
    assert nodes[0].status()["counters"]["quorum_failures"] == 1


async def test_stopped_peer_is_marked_down_and_back_up_after_restart(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    net, nodes = cluster
    await nodes[2].stop()
    await wait_for(
        lambda: nodes[0].member_state("n3") is MemberState.DOWN, timeout=5, message="n3 down"
    )
    # down is not gone: n3 keeps its place in the ring
    assert "n3" in nodes[0].ring.node_ids
    # calls still succeed through the remaining owners
    for i in range(10):
        await nodes[0].call("counter", f"d{i}".encode(), "incr", 1)
    revived = Node(config(3), network=net)
    revived.register(Counter())
    await revived.start()
    try:
        await wait_for(
            lambda: nodes[0].member_state("n3") is MemberState.UP, timeout=5, message="n3 up"
        )
        assert nodes[0].members["n3"].incarnation == revived.members["n3"].incarnation
    finally:
        await revived.stop()


async def test_status_lists_members_and_ownership(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    _, nodes = cluster
    status = await nodes[0].transport.request(nodes[1].address, ["st"])
    assert status["node"] == "n2"
    assert status["epoch"] == nodes[0].ring.epoch
    assert {m["id"] for m in status["members"]} == {"n1", "n2", "n3"}
    assert sum(m["partitions"] for m in status["members"]) == 64 * 3


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ConfigError):
        ReplicationConfig(replicas=3, write_quorum=4)
    with pytest.raises(ConfigError):
        NodeConfig("n1", listen="nonsense")
    with pytest.raises(ConfigError):
        NodeConfig("n1", transport="carrier-pigeon")


async def test_malformed_peer_messages_get_clear_errors(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    _, nodes = cluster
    t = nodes[0].transport
    with pytest.raises(InvalidRequest):
        await t.request(nodes[1].address, "not an array")
    with pytest.raises(UnknownCommand):
        await t.request(nodes[1].address, ["zz"])
    with pytest.raises(InvalidRequest):
        await t.request(nodes[1].address, ["s", "counter", "get", "str-key", 1, None, "x"])
    assert await nodes[0].call("counter", b"still", "get") == 0


async def test_cluster_smaller_than_the_quorum_uses_every_node() -> None:
    net = MemoryNetwork()
    node = Node(config(1, seeds=()), network=net)
    node.register(Counter())
    await node.start()
    try:
        result = await node.coordinator.run("counter", b"solo", "incr", 1, quorum=2)
        assert [n for n, _ in result.acks] == ["n1"]
    finally:
        await node.stop()


def test_a_leave_sticks_when_our_left_record_comes_back() -> None:
    from peer_ring.membership.base import Member
    from peer_ring.membership.static import StaticDiscovery

    d = StaticDiscovery(["10.0.0.2:1"])
    me = Member("n1", "10.0.0.1:1", incarnation=5)
    d._local = me
    d._records["n1"] = (me, True, 0.0)  # we left
    echoed = me.to_wire() | {"left": True}
    d.merge([echoed, Member("n2", "10.0.0.2:1").to_wire()])
    assert d._records["n1"][1] is True
    assert d._records["n1"][0].incarnation == 5
    assert "n1" not in d.members()


async def test_a_request_timeout_is_not_counted_twice_by_the_detector(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    from peer_ring.errors import PeerUnavailable, RequestTimeout

    _, nodes = cluster
    n1, n2 = nodes[0], nodes[1]
    n1._on_peer_health(n2.address, False, RequestTimeout("a ping timed out"))
    assert n1.detector._health["n2"].failures == 0  # _ping_done counts it, not the observer
    n1._on_peer_health(n2.address, False, PeerUnavailable("refused"))
    assert n1.member_state("n2") is MemberState.DOWN


@pytest.mark.parametrize("op", sorted(wire.NODE_OPS | wire.FRAMEWORK_OPS))
async def test_no_handler_can_take_an_operation_the_framework_answers(op: str) -> None:
    # "sd" was missing from the reserved set: a handler registered for it was
    # accepted and then silently shadowed by the node's own dispatch
    node = Node(config(1), network=MemoryNetwork())
    with pytest.raises(ConfigError, match="already taken"):
        node.add_peer_handler(op, lambda message, peer: None)


async def test_coverage_is_fenced_by_ring_epoch(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    # a coverage command for partitions the receiver does not own, sent with
    # another ring epoch, is refused (RingMismatch) instead of answered from
    # the wrong place; with the receiver's own epoch it is served
    _, nodes = cluster
    target = nodes[1]
    foreign = [
        p for p in range(target.ring.partitions) if target.id not in target.ring.preference_list(p)
    ]
    owned = target.ring.partitions_of(target.id)[:3]
    t = nodes[0].transport
    ok = await t.request(
        target.address, wire.cover_frame("counter", "get", owned, None, "n1", target.ring.epoch)
    )
    assert ok == 0
    if foreign:
        with pytest.raises(RingMismatch):
            await t.request(
                target.address,
                wire.cover_frame("counter", "get", foreign[:2], None, "n1", "0" * 16),
            )
    with pytest.raises(InvalidRequest, match="partitions"):
        await t.request(
            target.address, wire.cover_frame("counter", "get", [10**6], None, "n1", "x")
        )


async def test_incarnation_comes_from_the_injected_clock() -> None:
    clock = ManualClock(start=1_000.0, wall_start=1_700_000_000.0)
    node = Node(config(1, seeds=()), network=MemoryNetwork(), clock=clock)
    await node.start()
    try:
        assert node.local is not None
        assert node.local.incarnation == 1_700_000_000_000
    finally:
        await node.stop()


async def test_quorum_not_reached_counts_the_local_replica_that_answered(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    """The other replicas fail at once (their nodes are gone): the round must not
    report "0 of 2 acked" before the local replica, asked last, has answered."""
    _, nodes = cluster
    await asyncio.gather(nodes[1].stop(), nodes[2].stop())
    with pytest.raises(QuorumNotReached) as info:
        await nodes[0].coordinator.run("counter", b"q", "incr", 1, quorum=2, timeout=0.3)
    assert info.value.acked == 1
    assert "1 of 2" in str(info.value)
    counter = nodes[0].service("counter")
    assert isinstance(counter, Counter)
    assert counter.counts[nodes[0].ring.partition_for(b"q")][b"q"] == 1


class _Probe(Service):
    """A service that only keeps its app context."""

    namespace = "probe"

    def attach(self, app: Any) -> None:
        self.app = app

    def handle(self, request: Request) -> Any:
        return None


async def test_app_context_places_keys_as_the_ring_does() -> None:
    # the context hashes keys itself (not through the interpreted ring): the
    # same partition for every key, on the ring it starts with and on the
    # ring after a node joined; a key of another type is refused as the ring does
    net = MemoryNetwork()
    nodes = [Node(config(i), network=net) for i in (1, 2)]
    probes = [node.register(_Probe()) for node in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        keys = [f"key-{i}".encode() for i in range(300)] + [b"", b"\x00" * 64]
        for node, probe in zip(nodes, probes, strict=True):
            assert [probe.app.partition_for(k) for k in keys] == [
                node.ring.partition_for(k) for k in keys
            ]
            with pytest.raises((InvalidRequest, TypeError)):
                probe.app.partition_for(12)
            assert probe.app.ready(0) == (not node.bootstrap.active)
        third = Node(config(3), network=net)
        nodes.append(third)
        await third.start()
        await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="join")
        await wait_for(lambda: all(len(n.ring.node_ids) == 3 for n in nodes), message="ring")
        for node, probe in zip(nodes, probes, strict=False):
            assert [probe.app.partition_for(k) for k in keys] == [
                node.ring.partition_for(k) for k in keys
            ]
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


class _Reader(Counter):
    """Counter whose ``get`` is a read: refused by a replica still bootstrapping."""

    namespace = "reader"
    read_commands = frozenset({"get"})


async def test_a_bootstrapping_replica_still_refuses_fresh_reads() -> None:
    # handle_local (and a batch) skip the bootstrap's fields only once it is
    # over for good (done set); until then what it holds back is refused as
    # before: every read while settling, reads of a syncing partition while
    # syncing, merges always (driven through the fields, deterministically:
    # the node is not started, so no bootstrap task changes them meanwhile)
    node = Node(config(1), network=MemoryNetwork())
    reader = node.register(_Reader())
    boot = node.bootstrap
    serve = node.handle_local
    boot.settling = True
    with pytest.raises(PeerUnavailable, match="still learning"):
        serve("reader", "get", b"k", 5, None, "n2")
    assert serve("reader", "incr", b"k", 5, 2, "n2") == 2
    batch = wire.Batch("reader", "n2", None, ["get", b"k", 5, None, "incr", b"k", 5, 1])
    out = node._apply_batch(batch, None)
    assert out[0] == wire.BATCH_ERROR
    assert out[2:] == [wire.BATCH_OK, 3]
    boot.settling = False
    boot.syncing = {5}
    with pytest.raises(PeerUnavailable, match="still syncing partition 5"):
        serve("reader", "get", b"k", 5, None, "n2")
    assert serve("reader", "get", b"k", 6, None, "n2") == 0
    assert serve("reader", "incr", b"k", 5, 1, "n2") == 4
    boot.syncing.clear()
    assert serve("reader", "get", b"k", 5, None, "n2") == 4
    # not over yet (done not set): a bootstrap that starts still gates
    boot.settling = True
    with pytest.raises(PeerUnavailable):
        serve("reader", "get", b"k", 5, None, "n2")
    boot.settling = False
    boot.done.set()
    assert serve("reader", "get", b"k", 5, None, "n2") == 4
    assert reader.counts[5][b"k"] == 4
    assert node._boot_over
    with pytest.raises(UnknownCommand):
        serve("nope", "get", b"k", 5, None, "n2")


async def test_coordinates_agrees_with_owners_and_ready(
    cluster: tuple[MemoryNetwork, list[Node]],
) -> None:
    # the native answer, the AppContext default (built on owners and ready)
    # and the two calls themselves agree for every partition, n and node,
    # during a bootstrap and after it
    _, nodes = cluster
    probes = [node.register(_Probe()) for node in nodes]

    def check(node: Node, app: Any) -> int:
        yes = 0
        for p in range(node.ring.partitions):
            for n in (None, 1, 2, 3, 4):
                both = app.node_id in app.owners(p, n) and app.ready(p)
                assert app.coordinates(p, n) is both, (node.id, p, n)
                assert AppContext.coordinates(app, p, n) is both, (node.id, p, n)
                yes += both
        return yes

    for node in nodes:
        await asyncio.wait_for(node.bootstrap.done.wait(), 20)
    for node, probe in zip(nodes, probes, strict=True):
        assert 0 < check(node, probe.app) < node.ring.partitions * 5
    # a context that has not yet seen the bootstrap over reads its fields
    node = Node(config(9), network=MemoryNetwork())
    app = node.register(_Probe()).app
    node.bootstrap.settling = True
    assert not app.ready(0)
    assert not app.coordinates(0)
    node.bootstrap.settling = False
    node.bootstrap.syncing = {3}
    assert not app.ready(3)
    assert app.ready(4)
    check(node, app)
