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


def _flat_expected(store: Any, before: Any, value: bytes, exp: float | None, new: Any) -> Any:
    """What the general write path (``_state.issue`` on the unpacked state,
    packed) stores for the stamp the write was given."""
    from peer_ring.apps.kv import _state as kst

    current = kst.EMPTY if before is None else kst.unpack(before)
    stamp = new[3]
    assert stamp > kst.max_stamp(current)
    issued = kst.issue(
        current, None, value, exp, stamp, store._actor, True, store.config.max_siblings,
        store.config.prune,
    )  # fmt: skip
    return kst.pack(issued)


def _used_from_scratch(store: Any) -> int:
    from peer_ring.apps.kv._memory import KEY_OVERHEAD, state_size

    parts = store._parts.values()
    return sum(len(k) + KEY_OVERHEAD + state_size(s) for part in parts for k, s in part.items())


async def test_one_node_plain_lww_writes_store_what_the_general_path_stores(
    make_cluster: ClusterFactory,
) -> None:
    # a plain write over no state or this node's own flat state takes the
    # direct path (KVStore._issue_flat): the same state, stamp order, memory
    # accounting, expiry bookkeeping and LRU as the general _issue
    from peer_ring.apps.kv.store import KVConfig

    cluster = await make_cluster(1, KVConfig(conflicts="lww", maxmemory_policy="allkeys-lru",
                                             maxmemory=1 << 30))  # fmt: skip
    (store,) = cluster.stores
    app = store.app
    exp = cluster.clock.time() + 30
    steps = [(b"k", b"v1", None), (b"k", b"v2", None), (b"k", b"v3", exp), (b"k", b"v4", None),
             (b"t", b"x" * 300, exp), (b"t", b"y", None)]  # fmt: skip
    for key, value, expires_at in steps:
        p = app.partition_for(key)
        before = store._parts.get(p, {}).get(key)
        told = Told()
        if expires_at is None:
            store.start_put(key, value, told)
        else:
            store.batch().put(key, value, told, expires_at=expires_at)
        assert told.calls == [(None, None)]
        new = store._parts[p][key]
        assert type(new) is tuple  # flat
        assert new[0] == store._actor
        assert new == _flat_expected(store, before, value, expires_at, new)
        assert store.memory.used == _used_from_scratch(store)
        assert list(store.memory.lru)[-1] == key  # the young end
        if expires_at is not None:
            assert key in store._mortal[p]
    assert await store.get(b"k") == b"v4"
    assert await store.get(b"t") == b"y"


async def test_one_node_writes_the_direct_path_does_not_take_go_the_general_way(
    make_cluster: ClusterFactory,
) -> None:
    from peer_ring.apps.kv import _state as kst
    from peer_ring.apps.kv.store import KVConfig
    from peer_ring.errors import OutOfMemory

    # siblings (the default conflicts): a rewrite keeps the general path's state
    cluster = await make_cluster(1)
    (store,) = cluster.stores
    told = Told()
    store.start_put(b"k", b"a", told)
    store.start_put(b"k", b"b", told)
    assert told.calls == [(None, None)] * 2
    assert await store.get(b"k") == b"b"
    # LWW over a state another actor wrote (a replicated copy): general path
    cluster = await make_cluster(1, KVConfig(conflicts="lww"))
    (store,) = cluster.stores
    p = store.app.partition_for(b"k")
    other = (("z-other", 5, ((b"old", None, 5),)),)
    store._store(p, store._part(p), b"k", None, other)
    told = Told()
    store.start_put(b"k", b"new", told)
    assert told.calls == [(None, None)]
    state = kst.unpack(store._parts[p][b"k"])
    assert {a for a, _, _ in state} == {"z-other", store._actor}  # the other actor's clock kept
    assert await store.get(b"k") == b"new"
    # a full budget (noeviction): refused as before, nothing stored
    cluster = await make_cluster(1, KVConfig(conflicts="lww", maxmemory=1))
    (store,) = cluster.stores
    first, second = Told(), Told()
    store.start_put(b"k", b"v", first)  # fits (the budget was empty)
    store.start_put(b"k", b"w", second)
    assert first.calls == [(None, None)]
    assert isinstance(second.calls[0][1], OutOfMemory)
    assert await store.get(b"k") == b"v"
