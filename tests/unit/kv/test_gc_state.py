"""Stored states and the garbage collector: what a write leaves for a young collection."""

from __future__ import annotations

import gc

from peer_ring.apps.kv.store import KVConfig
from tests.unit.kv.conftest import ClusterFactory


async def test_an_overwritten_key_is_one_flat_state_the_first_young_collection_untracks(
    make_cluster: ClusterFactory,
) -> None:
    # Every replica of an LWW key written twice by one coordinator holds the
    # flat 5-tuple (not four nested tuples, which a young collection untracks
    # one level at a time: they would survive into the old generations).
    kv = await make_cluster(3, KVConfig(conflicts="lww"))
    store = kv.stores[0]
    for value in (b"one", b"two", b"three"):
        await kv.clock.advance(0.5)  # the counter (+1 per write) falls behind the stamp
        await store.put(b"k", value)
    held = [part[b"k"] for r in kv.replicas(b"k") for part in r._parts.values() if b"k" in part]
    assert len(held) == 3
    gc.collect(0)  # whatever a collection has not seen yet is young
    for state in held:
        assert type(state[0]) is str
        assert len(state) == 5
        assert state[1] == b"three"
        assert not gc.is_tracked(state)
