"""Reads and writes this node's replica alone decides (``AppContext.solo``: a
one-node cluster, N=1): answered in place, with no quorum round -- the
outcomes, errors, TTLs and round counters of the round they replace."""

from __future__ import annotations

from typing import Any

from peer_ring.errors import ClosedError, InvalidRequest
from tests.conftest import wait_for
from tests.unit.kv.conftest import ClusterFactory


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []

    def __call__(self, value: Any, exc: BaseException | None) -> None:
        self.calls.append((value, exc))


def rounds(node: Any) -> tuple[int, int]:
    counts = node.metrics()
    return counts["quorum_rounds"], counts["quorum_failures"]


async def test_one_node_answers_in_place_and_counts_each_round(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(1)
    (node,), (store,) = cluster.nodes, cluster.stores
    app = store.app
    assert app.solo(app.partition_for(b"k"), 1, True)  # counted: one round
    before, failed = rounds(node)
    put, got, missing = Told(), Told(), Told()
    store.start_put(b"k", b"v", put)
    store.start_get(b"k", got)
    store.start_get(b"nope", missing)
    # told before the calls returned: no round, no task
    assert put.calls == [(None, None)]
    assert got.calls == [(b"v", None)]
    assert missing.calls == [(None, None)]
    batch = store.batch()
    dones = [Told() for _ in range(4)]
    batch.put(b"a", b"1", dones[0])
    batch.get(b"a", dones[1])
    batch.put(b"b", b"2", dones[2], expires_at=cluster.clock.time() + 10)
    batch.delete(b"k", dones[3])
    assert [d.calls for d in dones] == [
        [(None, None)],
        [(b"1", None)],
        [(None, None)],
        [(True, None)],  # a delete says whether a live value was there
    ]
    batch.flush()
    assert rounds(node) == (before + 7, failed)
    # the same state as the awaitable forms see, TTLs included
    assert await store.get(b"k") is None
    assert await store.get(b"a") == b"1"
    assert await store.get(b"b") == b"2"
    await cluster.clock.advance(11)
    expired = Told()
    store.start_get(b"b", expired)
    assert expired.calls == [(None, None)]
    gone = Told()
    store.batch().delete(b"b", gone)
    assert gone.calls == [(False, None)]


async def test_one_node_errors_are_told_per_command(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(1)
    (node,), (store,) = cluster.nodes, cluster.stores
    too_long = b"k" * (store.limits.max_key_size + 1)
    bad_put, bad_get, bad_batch, fine = Told(), Told(), Told(), Told()
    before = rounds(node)
    store.start_put(too_long, b"v", bad_put)
    store.start_get(too_long, bad_get)
    batch = store.batch()
    batch.put(too_long, b"v", bad_batch)
    batch.put(b"ok", b"v", fine)
    batch.flush()
    for told in (bad_put, bad_get, bad_batch):
        ((value, exc),) = told.calls
        assert value is None
        assert isinstance(exc, InvalidRequest)
    assert fine.calls == [(None, None)]
    assert rounds(node) == (before[0] + 1, before[1])  # refused before any round
    await node.stop()
    closed_put, closed_get = Told(), Told()
    store.start_put(b"k", b"v", closed_put)
    store.start_get(b"k", closed_get)
    for told in (closed_put, closed_get):
        ((_, exc),) = told.calls
        assert isinstance(exc, ClosedError)


async def test_a_one_node_cluster_meets_any_quorum_alone(make_cluster: ClusterFactory) -> None:
    """W=R=2 on one node: the whole cluster is smaller than the quorum, so
    its one replica is the quorum (as for a round)."""
    cluster = await make_cluster(1)
    (store,) = cluster.stores
    app = store.app
    partition = app.partition_for(b"q")
    assert app.solo(partition, 2, True)
    assert not app.solo(partition, 0, True)  # a round raises for it


async def test_n1_on_three_nodes_answers_owned_keys_in_place_and_forwards_the_rest(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(3, replicas=1)
    store = cluster.stores[0]
    me = store.app.node_id
    ring = cluster.nodes[0].ring
    keys = [b"key-%d" % i for i in range(40)]
    owned = [k for k in keys if ring.owners(k)[0] == me]
    others = [k for k in keys if ring.owners(k)[0] != me]
    assert owned
    assert others
    app = store.app
    assert app.solo(app.partition_for(owned[0]), 1, True)
    assert not app.solo(app.partition_for(others[0]), 1, True)
    # a quorum above N that the cluster could meet is no solo round: it fails as a round
    assert not app.solo(app.partition_for(owned[0]), 2, True)
    batch = store.batch()
    puts = {k: Told() for k in keys}
    for k in keys:
        batch.put(k, k + b"-v", puts[k])
    assert all(puts[k].calls == [(None, None)] for k in owned)  # at once
    batch.flush()
    await wait_for(lambda: all(t.calls for t in puts.values()), message="every put told")
    assert all(t.calls == [(None, None)] for t in puts.values())
    for k in keys:
        got = Told()
        store.start_get(k, got)
        await wait_for(lambda g=got: bool(g.calls), message="the get told")
        assert got.calls == [(k + b"-v", None)]
