"""KVStore's cached digest index follows writes, imports and drops."""

from __future__ import annotations

import asyncio

from peer_ring import merkle
from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv._state import unpack
from peer_ring.apps.kv.store import KVStore
from tests.unit.kv.conftest import ClusterFactory


def one_shot(store: KVStore, partition: int) -> dict[bytes, bytes]:
    part = store._parts.get(partition, {})
    return {k: st.digest(unpack(s)) for k, s in part.items()}


async def fill(store: KVStore, keys: int) -> int:
    """Write ``keys`` keys through ``store``; return its fullest partition."""
    for i in range(keys):
        await store.put(b"key-%d" % i, b"v1")
    return max(store._parts, key=lambda q: len(store._parts[q]))


async def test_digest_index_follows_writes_imports_and_drops(
    make_cluster: ClusterFactory,
) -> None:
    c = await make_cluster()
    store = c.stores[0]
    p = await fill(store, 300)
    depth = 5
    first = await store.digest_index(p, depth)
    assert first.digest() == one_shot(store, p)
    tree_before = first.tree()
    assert tree_before == merkle.build(one_shot(store, p), depth)

    # a write through the API changes one key of the partition
    key = next(iter(store._parts[p]))
    await store.put(key, b"v2")
    after_write = await store.digest_index(p, depth)
    assert after_write.tree() != tree_before
    assert after_write.tree() == merkle.build(one_shot(store, p), depth)
    assert store.digest(p) == one_shot(store, p)

    # an import (e.g. a transfer chunk) adds a key
    donor = next(
        k for k in (b"x-%d" % i for i in range(10_000)) if c.nodes[0].ring.partition_for(k) == p
    )
    records = [(donor, unpack(store._parts[p][key]))]
    assert store.import_records(p, records) == 1
    after_import = await store.digest_index(p, depth)
    assert donor in after_import.digest()
    assert after_import.tree() == merkle.build(one_shot(store, p), depth)

    # dropping the partition discards the index; a refill starts from nothing
    store.drop_partition(p)
    assert p not in store._digests
    empty = await store.digest_index(p, depth)
    assert empty.tree() == merkle.empty_tree(depth)
    assert store.digest(p) == {}
    await c.stop()


async def test_snapshot_sees_exactly_the_keys_written_since(make_cluster: ClusterFactory) -> None:
    c = await make_cluster()
    store = c.stores[0]
    p = await fill(store, 200)
    before = store.snapshot(p)
    changed = sorted(store._parts[p])[:3]
    for k in changed:
        await store.put(k, b"v2")
    after = store.snapshot(p)
    assert sorted(k for k, v in after.items() if before.get(k) != v) == changed
    await c.stop()


async def test_cached_indexes_are_bounded_and_rebuilt_on_demand(
    make_cluster: ClusterFactory,
) -> None:
    c = await make_cluster()
    store = c.stores[0]
    store.digest_cache_keys = 50
    for i in range(600):
        await store.put(b"key-%d" % i, b"v")
    parts = sorted(store._parts, key=lambda q: -len(store._parts[q]))
    for p in parts:
        index = await store.digest_index(p, 5)
        assert index.digest() == one_shot(store, p)  # correct even if evicted later
        cached = sum(len(ix) for ix in store._digests.values())
        assert cached <= max(50, len(store._parts[p]))
    evicted = parts[0]
    assert evicted not in store._digests  # the largest, used first, was evicted
    rebuilt = await store.digest_index(evicted, 5)
    assert rebuilt.tree() == merkle.build(one_shot(store, evicted), 5)


async def test_overlapping_refreshes_keep_the_leaf_sums_exact(
    make_cluster: ClusterFactory,
) -> None:
    # Several refreshes of one partition's index overlap (an anti-entropy
    # answer, a bootstrap sync) while writes land between their slices. The
    # additive leaf sums must stay exact: after a last refresh the tree equals
    # one built from scratch (a double-counted or lost entry would differ).
    c = await make_cluster()
    store = c.stores[0]
    store.digest_slice = 3
    p = await fill(store, 300)
    keys = list(store._parts[p])
    await store.digest_index(p, 5)

    async def writer() -> None:
        for round_ in range(3):
            for k in reversed(keys):  # the slices the refreshes reach last
                await store.put(k, b"v%d" % (round_ + 2))

    results = await asyncio.gather(
        store.digest_index(p, 5), writer(), store.digest_index(p, 5), store.digest_index(p, 5)
    )
    index = results[0]
    final = await store.digest_index(p, 5)
    assert final is index  # one cached index
    assert final.digest() == one_shot(store, p)
    assert final.tree() == merkle.build(one_shot(store, p), 5)


async def test_a_slow_refresh_never_rolls_back_what_a_later_one_indexed(
    make_cluster: ClusterFactory,
) -> None:
    # Refresh A indexes one key per slice and is suspended after its first;
    # a write lands; refresh B indexes everything in one slice (no yield) and
    # so finishes first; then A visits the written key. A must index the
    # state stored when it gets there, not the one stored when it started:
    # otherwise it puts the old digest back over B's.
    c = await make_cluster()
    store = c.stores[0]
    p = await fill(store, 40)
    depth = 5
    await store.digest_index(p, depth)
    last = list(store._parts[p])[-1]
    store.digest_slice = 1
    slow = asyncio.ensure_future(store.digest_index(p, depth))
    await asyncio.sleep(0)
    assert not slow.done()  # A: first slice indexed, waiting for its next turn
    store._issue(p, last, b"v2", None, None)  # stored at once, without yielding
    store.digest_slice = 10_000
    fresh = await store.digest_index(p, depth)  # B: one slice, done before A
    assert fresh.digest() == one_shot(store, p)
    index = await slow
    assert index is fresh  # one cached index per partition
    assert index.digest() == one_shot(store, p)
    assert index.tree() == merkle.build(one_shot(store, p), depth)
