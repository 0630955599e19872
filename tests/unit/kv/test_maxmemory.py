"""maxmemory on memory-transport clusters: each policy under a write load past
the limit -- the right errors, counted evictions, nothing lost silently."""

from __future__ import annotations

import pytest

from peer_ring.apps.kv._memory import KEY_OVERHEAD, MemoryBudget, parse_size, state_size
from peer_ring.apps.kv._state import pack
from peer_ring.apps.kv.store import KVConfig
from peer_ring.errors import ConfigError, OutOfMemory, QuorumNotReached
from tests.unit.kv.conftest import ClusterFactory

VALUE = b"x" * 1000
LIMIT = 60_000  # ~50 keys of 1 kB per node (N = 3: every node holds every key)


def test_sizes_and_policies_are_validated() -> None:
    assert parse_size("100mb") == 100 * 1024**2
    assert parse_size("512k") == 512_000
    assert parse_size("42") == 42
    with pytest.raises(ConfigError, match="bad size"):
        parse_size("12 parsecs")
    with pytest.raises(ConfigError, match="policy"):
        KVConfig(maxmemory=1, maxmemory_policy="allkeys-random")


def test_accounting_follows_stores_and_removals() -> None:
    b = MemoryBudget(10_000)
    one = pack((("a.1", 1, ((b"v" * 100, None, 1),)),))
    b.stored(b"k", None, one)
    after_one = b.used
    assert state_size(one) > 100  # the value counts exactly, the tuple around it estimated
    assert after_one == len(b"k") + KEY_OVERHEAD + state_size(one)
    bigger = pack((("a.1", 2, ((b"v" * 300, None, 2),)),))
    b.stored(b"k", one, bigger)
    assert b.used == after_one + 200
    b.removed(b"k", bigger)
    assert b.used == 0


def test_incremental_accounting_equals_sizing_both_states() -> None:
    # stored() reads only the two values when old and new have the same
    # one-value shape; on every pair of shapes its change must equal
    # state_size(new) - state_size(old)
    compact = pack((("a.1", 3, ((b"v" * 10, None, 3),)),))
    one_entry = (("a.1", 2, ((b"w" * 30, 5.0, 1_000_007),)),)
    tombstone = (("a.1", 4, ((None, None, 1_000_009),)),)
    siblings = (("a.1", 2, ((b"x" * 7, None, 1),)), ("b.2", 1, ((b"y" * 9, None, 2),)))
    two_items = (("a.1", 3, ((b"p" * 5, None, 3), (b"q" * 6, None, 2))),)
    flat5 = pack(one_entry)
    vector = pack((("a.1", 2, ()), ("b.2", 5, ((b"z" * 12, None, 1_000_011),)), ("c.3", 1, ())))
    vector2 = pack((("a.1", 3, ((b"z" * 3, 1.0, 1_000_013),)), ("b.2", 5, ())))
    states = [compact, pack((("b.2", 1, ((None, None, 1),)),)), one_entry, tombstone,
              siblings, two_items, (), flat5, pack(tombstone), vector, vector2]  # fmt: skip
    assert len(vector) == 9  # the vector forms are among them
    assert len(vector2) == 7
    assert type(compact[0]) is str  # the compact forms are among them
    assert type(flat5[0]) is str
    assert len(flat5) == 5
    for old in states:
        for new in states:
            b = MemoryBudget()
            b.stored(b"k", old, new)
            assert b.used == state_size(new) - state_size(old), (old, new)


async def _fill(stores: list, n: int, ttl: float | None = None) -> tuple[list[bytes], int]:
    """Write ``n`` keys round-robin; return the acknowledged keys and the OOM count."""
    acked: list[bytes] = []
    ooms = 0
    for i in range(n):
        key = b"key-%04d" % i
        try:
            await stores[i % len(stores)].put(key, VALUE, ttl=ttl)
        except (OutOfMemory, QuorumNotReached):
            ooms += 1
            continue
        acked.append(key)
    return acked, ooms


async def test_noeviction_refuses_writes_but_serves_reads_and_deletes(
    make_cluster: ClusterFactory,
) -> None:
    kv = await make_cluster(3, config=KVConfig(maxmemory=LIMIT, conflicts="lww"))
    acked, ooms = await _fill(kv.stores, 150)
    assert ooms > 0
    assert 30 < len(acked) < 150
    for key in acked:  # every acknowledged write is still there
        assert await kv.stores[0].get(key) == VALUE
    with pytest.raises(OutOfMemory, match="maxmemory"):
        await kv.stores[1].put(b"one-more", VALUE)
    full = [s.memory.used for s in kv.stores]
    assert min(full) >= LIMIT
    assert await kv.stores[2].delete(acked[0])  # deletes are served (and free room)
    assert await kv.stores[0].get(acked[0]) is None
    for store, before in zip(kv.stores, full, strict=True):
        assert store.memory.evicted == 0
        assert store.memory.used < before
    assert sum(s.memory.oom_rejections for s in kv.stores) >= ooms


async def test_allkeys_lru_evicts_the_least_recently_used_and_counts_it(
    make_cluster: ClusterFactory,
) -> None:
    kv = await make_cluster(
        3, config=KVConfig(maxmemory=LIMIT, maxmemory_policy="allkeys-lru", conflicts="lww")
    )
    hot = b"hot-key"
    await kv.stores[0].put(hot, VALUE)
    acked: list[bytes] = []
    for i in range(200):
        key = b"key-%04d" % i
        await kv.stores[i % 3].put(key, VALUE)  # never refused under LRU
        acked.append(key)
        assert await kv.stores[(i + 1) % 3].get(hot) == VALUE  # keeps it young
    evicted = sum(s.memory.evicted for s in kv.stores)
    assert evicted > 0
    present = [k for k in acked if await kv.stores[0].get(k) is not None]
    # every acknowledged key is either still there or was evicted by policy (counted)
    assert len(present) + evicted >= len(acked)
    assert len(present) < len(acked)
    assert b"key-0199" in present  # the newest survive, the oldest went
    assert b"key-0000" not in present
    for store in kv.stores:
        # within one eviction's slack of the limit (tombstones stay until swept)
        assert store.memory.used < LIMIT * 1.5


async def test_volatile_ttl_evicts_keys_with_a_ttl_soonest_expiry_first(
    make_cluster: ClusterFactory,
) -> None:
    kv = await make_cluster(
        3, config=KVConfig(maxmemory=LIMIT, maxmemory_policy="volatile-ttl", conflicts="lww")
    )
    durable, _ = await _fill(kv.stores[:1], 20)  # no TTL: never evicted
    mortal = []
    for i in range(60):
        key = b"ttl-%04d" % i
        await kv.stores[i % 3].put(key, VALUE, ttl=10_000.0 + i)
        mortal.append(key)
    assert sum(s.memory.evicted for s in kv.stores) > 0
    for key in durable:
        assert await kv.stores[1].get(key) == VALUE
    assert await kv.stores[0].get(mortal[-1]) == VALUE
    # once only keys without a TTL are left, writes are refused like noeviction
    _, ooms = await _fill(kv.stores, 200)
    assert ooms > 0
    for key in durable:
        assert await kv.stores[2].get(key) == VALUE
