"""Counted reads (issue 18): ``QuorumBatch.add_read``, the read form of
``add_counted`` -- a batch's reads are slots of one read tally, keeping the
first answer of each and only the answers that differ from it -- and the KV
store's ``KVBatch.get`` / ``get_many`` built on it (read repair included)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peer_ring import AppContext, QuorumResult, Request, Service
from peer_ring.apps.kv.store import _same_state
from peer_ring.errors import InvalidRequest, QuorumNotReached, UnknownCommand
from peer_ring.node import Node
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.kv.conftest import KVCluster, address, node_config


class Reader(Service):
    """Answers the read command ``r`` with what it holds for the key (None
    when nothing); refuses the keys in ``refuse``."""

    read_commands = frozenset({"r"})

    def __init__(self) -> None:
        self.namespace = "reader"
        self.data: dict[bytes, Any] = {}
        self.refuse: set[bytes] = set()
        self.app: AppContext | None = None

    def attach(self, app: AppContext) -> None:
        self.app = app

    def handle(self, request: Request) -> Any:
        if request.command != "r":
            raise UnknownCommand(request.command)
        if request.key in self.refuse:
            raise InvalidRequest(f"refused {request.key!r}")
        return self.data.get(request.key)


class Reads:
    """A ``CountedReads`` that records what it is told, by index."""

    def __init__(self) -> None:
        self.answered_by: dict[
            int, tuple[Any, list[tuple[str, Any]] | None, BaseException | None]
        ] = {}
        self.completed_by: dict[int, QuorumResult] = {}

    def same(self, first: Any, answer: Any) -> bool:
        return bool(first == answer)

    def answered(
        self,
        index: int,
        first: Any,
        others: list[tuple[str, Any]] | None,
        exc: BaseException | None,
    ) -> None:
        assert index not in self.answered_by
        self.answered_by[index] = (first, others, exc)

    def completed(self, index: int, result: QuorumResult) -> None:
        assert index not in self.completed_by
        self.completed_by[index] = result


@pytest.fixture
async def readers() -> Any:
    net = MemoryNetwork()
    nodes = [Node(node_config(i), network=net) for i in (1, 2, 3)]
    services = [n.register(Reader()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.ring.node_ids) == 3 for n in nodes), message="ring")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield net, nodes, services
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_a_replica_failing_part_of_a_read_batch_fails_only_its_keys(readers: Any) -> None:
    """Every key's own quorum: the keys one replica refuses fail where R needs
    it (R = 3: QuorumNotReached with its error) and succeed where it does not
    (R = 2); every other key answers, with no completion where all agree."""
    _, nodes, services = readers
    s1 = services[0]
    keys = [b"r-%02d" % i for i in range(20)]
    for s in services:
        s.data.update({k: i for i, k in enumerate(keys)})
    services[2].refuse = {keys[3], keys[11], keys[12]}
    reads = Reads()
    app = s1.app
    assert app is not None
    requests = [n.transport.stats["requests_in"] for n in nodes]
    batch = app.batch()
    for i, key in enumerate(keys):
        batch.add_read("r", key, None, 2 if key == keys[12] else 3, reads, i + 100)
    assert not reads.answered_by  # the local answer alone is no quorum
    batch.flush()
    await wait_for(lambda: len(reads.answered_by) == len(keys), message="every read decided")
    for i, key in enumerate(keys):
        first, others, exc = reads.answered_by[i + 100]
        if key in (keys[3], keys[11]):
            assert first is None
            assert others is None
            assert isinstance(exc, QuorumNotReached)
            assert exc.required == 3
            assert exc.acked in (1, 2)  # failed as soon as 3 answers were out of reach
            assert isinstance(exc.errors[nodes[2].id], InvalidRequest)
        else:
            assert exc is None
            assert first == i
            assert others is None  # every replica said the same
    assert not reads.completed_by  # nothing differed: nothing to repair
    after = [n.transport.stats["requests_in"] for n in nodes]
    assert after[1] - requests[1] <= 3  # one batch (a ping may land meanwhile)
    assert after[2] - requests[2] <= 3


async def test_differing_answers_are_kept_and_completed_with_every_answer(readers: Any) -> None:
    _, nodes, services = readers
    s1, s2, s3 = services
    for s in services:
        s.data.update({b"same": 1, b"stale": 2, b"gone": 3})
    s2.data[b"stale"] = 1  # an older value on n2
    del s3.data[b"gone"]  # nothing on n3
    s2.refuse = {b"gone"}
    reads = Reads()
    app = s1.app
    assert app is not None
    batch = app.batch()
    for i, key in enumerate((b"same", b"stale", b"gone")):
        batch.add_read("r", key, None, 2 if key == b"gone" else 3, reads, i)
    batch.flush()
    await wait_for(
        lambda: len(reads.answered_by) == 3 and len(reads.completed_by) == 2,
        message="every read decided and completed",
    )
    ids = [n.id for n in nodes]
    assert reads.answered_by[0] == (1, None, None)
    assert reads.answered_by[1] == (2, [(ids[1], 1)], None)  # the first (local) and the other
    assert reads.answered_by[2] == (3, [(ids[2], None)], None)  # None is an answer too
    assert 0 not in reads.completed_by
    stale = reads.completed_by[1]
    assert sorted(stale.targets) == ids
    assert sorted(stale.answers) == [(ids[0], 2), (ids[1], 1), (ids[2], 2)]
    assert stale.errors == {}
    gone = reads.completed_by[2]
    assert sorted(gone.answers, key=lambda a: a[0]) == [(ids[0], 3), (ids[2], None)]
    assert set(gone.errors) == {ids[1]}


async def test_an_unreachable_replica_fails_only_the_reads_that_need_it(readers: Any) -> None:
    net, nodes, services = readers
    for s in services:
        s.data[b"k"] = 7
    net.isolate(address(3))
    reads = Reads()
    app = services[0].app
    assert app is not None
    batch = app.batch()
    batch.add_read("r", b"k", None, 2, reads, 0)
    batch.add_read("r", b"k", None, 3, reads, 1)
    batch.flush()
    batch.add_read("r", b"k", None, 2, reads, 2)  # reusable: a tally of its own
    batch.flush()
    await wait_for(lambda: len(reads.answered_by) == 3, timeout=5, message="every read decided")
    assert reads.answered_by[0] == (7, None, None)
    assert reads.answered_by[2] == (7, None, None)
    _, _, exc = reads.answered_by[1]
    assert isinstance(exc, QuorumNotReached)
    assert nodes[2].id in exc.errors
    assert not reads.completed_by


async def test_counted_reads_count_rounds_and_time_samples(readers: Any) -> None:
    _, nodes, services = readers
    coordinator = nodes[0].coordinator
    coordinator.sample_mask = 0  # time every read
    before = coordinator.metrics()["quorum_rounds"]
    samples = len(coordinator.latency.samples)
    reads = Reads()
    app = services[0].app
    assert app is not None
    batch = app.batch()
    for i in range(5):
        batch.add_read("r", b"t-%d" % i, None, 2, reads, i)
    batch.flush()
    await wait_for(lambda: len(reads.answered_by) == 5, message="every read decided")
    assert coordinator.metrics()["quorum_rounds"] - before == 5
    assert len(coordinator.latency.samples) - samples == 5
    assert all(ok for _, _, ok in list(coordinator.latency.samples)[-5:])


async def test_the_default_add_read_adds_a_round_with_adapters() -> None:
    started: list[tuple[bytes, dict[str, Any]]] = []

    class Fake(AppContext):
        def start_quorum(self, command: str, key: bytes, payload: Any, **kw: Any) -> None:
            started.append((key, kw))

    for name in AppContext.__abstractmethods__:
        if name != "start_quorum":
            setattr(Fake, name, None)
    Fake.__abstractmethods__ = frozenset()
    reads = Reads()
    Fake().batch().add_read("r", b"x", None, 2, reads, 5, partition=3)
    [(key, kw)] = started
    assert key == b"x"
    assert (kw["quorum"], kw["n"], kw["partition"], kw["applied"]) == (2, None, 3, False)
    listener, on_complete = kw["listener"], kw["on_complete"]
    listener(None, QuorumNotReached(2, 0))
    assert isinstance(reads.answered_by.pop(5)[2], QuorumNotReached)
    agree = QuorumResult(("a", "b"), {}, [("a", 1), ("b", 1)], {}, [("a", 1), ("b", 1)])
    listener(agree, None)
    assert reads.answered_by.pop(5) == (1, None, None)
    on_complete(agree)
    assert not reads.completed_by  # all the same: nothing to repair
    differ = QuorumResult(("a", "b"), {}, [("a", 1), ("b", 2)], {}, [("a", 1), ("b", 2)])
    listener(differ, None)
    assert reads.answered_by.pop(5) == (1, [("b", 2)], None)
    on_complete(differ)
    assert reads.completed_by[5] is differ


def test_same_state_compares_this_nodes_entries_with_a_peers_lists() -> None:
    mine = (("n1", 2, ((b"v", None, 2),)), ("n2", 1, ((b"w", 1.5, 1),)))
    theirs = [["n1", 2, [[b"v", None, 2]]], ["n2", 1, [[b"w", 1.5, 1]]]]
    assert _same_state(mine, theirs)
    assert _same_state(theirs, mine)
    assert _same_state(None, None)
    assert _same_state(theirs, [list(e) for e in theirs])
    assert not _same_state(mine, None)
    assert not _same_state(mine, theirs[:1])
    assert not _same_state(mine, [["n1", 2, [[b"v", None, 3]]], theirs[1]])
    assert not _same_state(mine, [["n1", 2, [[b"v", None, 2]]], ["n2", 1, [[b"w", 2, 1]]]])
    # equal only by ==, not by type: decoded and checked like any other answer
    assert not _same_state(mine, [["n1", 2, [[b"v", None, True]]], theirs[1]])
    assert not _same_state(mine, [["n1", 2, [["v", None, 2]]], theirs[1]])
    assert not _same_state(mine, [["n1", 2, [[b"v", None, 2]]], "x"])


async def test_read_repair_happens_with_counted_reads(kv3: KVCluster) -> None:
    """``get_many`` (counted reads): a replica that missed a write and one
    that never had the key are repaired, answering replicas only."""
    a, b, c = kv3.stores
    await a.put(b"old", b"v1")
    await wait_for(lambda: c.local_state(b"old") is not None, message="replicated")
    kv3.net.isolate(address(3))
    await a.put(b"old", b"v2", w=2)
    await a.put(b"new", b"n", w=2)
    assert c.local_state(b"new") is None
    kv3.net.heal()
    repairs = b.repairs

    async def repaired() -> bool:
        # n3 answers once the transport has reconnected
        assert await b.get_many([b"old", b"new", b"none"]) == [b"v2", b"n", None]
        return c.local_state(b"new") is not None and await c.get(b"old", r=1) == b"v2"

    await wait_for(repaired, message="read repair")
    assert b.repairs - repairs >= 2
    assert await c.get_many([b"old", b"new"]) == [b"v2", b"n"]


async def test_counted_reads_resolve_expiry_deletes_and_siblings(kv3: KVCluster) -> None:
    """``get_many`` answers as ``get`` does: an expired value, a deleted key
    and concurrent siblings (the newest) included."""
    a, b, _ = kv3.stores
    await a.put(b"ttl", b"t", ttl=5.0)
    await a.put(b"del", b"d")
    await a.delete(b"del")
    await a.put(b"sib", b"s1")
    await b.put(b"sib", b"s2")  # no context: a concurrent sibling, newer
    keys = [b"ttl", b"del", b"sib"]
    assert await b.get_many(keys) == [await b.get(k) for k in keys] == [b"t", None, b"s2"]
    await kv3.clock.advance(6.0)
    assert await b.get_many(keys) == [None, None, b"s2"]
