"""KVStore on memory-transport clusters: quorums, versions, expiry, whole-keyspace ops."""

from __future__ import annotations

import asyncio

import pytest

from peer_ring import versions as vv
from peer_ring._build import build
from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv.api import KVApi, Limits
from peer_ring.apps.kv.store import KVConfig, KVStore, Versions
from peer_ring.errors import (
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    QuorumNotReached,
    UnknownCommand,
)
from peer_ring.replication import coordinator as coordinator_module
from tests.conftest import wait_for
from tests.unit.kv.conftest import ClusterFactory, KVCluster, address


def _replicated_everywhere(cluster: KVCluster, key: bytes, value: bytes | None) -> bool:
    now = cluster.clock.time()
    for store in cluster.replicas(key):
        state = store.local_state(key)
        item = None if state is None else st.live_item(state, now)
        got = None if item is None else item[0]
        if got != value:
            return False
    return True


def test_kvstore_satisfies_the_kvapi_protocol() -> None:
    api: KVApi = KVStore()  # mypy checks the structural match
    assert api.limits == Limits()


async def test_put_through_one_node_get_through_every_other(kv3: KVCluster) -> None:
    a, b, c = kv3.stores
    for i in range(20):
        key = f"key-{i}".encode()
        await kv3.stores[i % 3].put(key, b"v%d" % i)
        assert await kv3.stores[(i + 1) % 3].get(key) == b"v%d" % i
        assert await kv3.stores[(i + 2) % 3].get(key) == b"v%d" % i
    assert await a.get(b"never-written") is None
    await b.put("text-key", "text value")  # str is UTF-8
    assert await c.get("text-key") == b"text value"
    assert await c.get(b"text-key") == b"text value"


async def test_w1_write_reaches_all_n_replicas(kv3: KVCluster) -> None:
    await kv3.stores[0].put(b"k", b"v", w=1)
    await wait_for(lambda: _replicated_everywhere(kv3, b"k", b"v"), message="3 replicas")


async def test_write_from_a_non_replica_is_forwarded_to_a_replica(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(5)
    key = b"forwarded"
    outsider = cluster.non_replica(key)
    await outsider.put(key, b"v1")
    assert outsider.local_state(key) is None  # it coordinated nothing itself
    await wait_for(lambda: _replicated_everywhere(cluster, key, b"v1"), message="replicated")
    state = cluster.replicas(key)[0].local_state(key)
    assert state is not None
    (actor, _, _), *_ = state
    assert actor in {s.actor for s in cluster.replicas(key)}
    assert await outsider.delete(key) is True
    assert await cluster.stores[0].get(key) is None


async def test_forwarded_write_is_not_coordinated_twice_when_the_connection_drops(
    make_cluster: ClusterFactory,
) -> None:
    """The coordinating replica stored the write and the connection to it broke
    before it answered: the outcome is unknown, and the write must not be issued
    again by the next replica (a concurrent second version: the fault harness
    saw an APPEND fork into two siblings this way, one element hidden)."""
    cluster = await make_cluster(5)
    key = b"forwarded-lost"
    outsider = cluster.non_replica(key)
    first, *others = cluster.replicas(key)
    first_node = cluster.node_of(first)
    for other in cluster.nodes:  # first's fan-out is slow: the put waits for it
        if other is not first_node:
            cluster.net.set_latency(first_node.address, other.address, 5.0)
    put = asyncio.ensure_future(outsider.put(key, b"v1"))
    await wait_for(lambda: first.local_state(key) is not None, message="first stored it")
    await first_node.stop()  # its connections close with the answer still owed
    with pytest.raises(ConnectionLost):
        await put
    for store in others:  # nobody issued a second version of the write
        assert all(actor != store.actor for actor, _, _ in store.local_state(key) or ())


async def test_delete_returns_whether_a_value_existed(kv3: KVCluster) -> None:
    a, b, c = kv3.stores
    assert await a.delete(b"d") is False
    await a.put(b"d", b"x")
    assert await b.delete(b"d") is True
    assert await c.get(b"d") is None
    assert await c.get_entry(b"d") is None
    assert await a.delete(b"d") is False
    await c.put(b"d", b"again")  # a blind write after a delete is visible
    assert await a.get(b"d") == b"again"


async def test_tombstones_are_collected_after_the_grace(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(tombstone_grace=10.0, sweep_interval=1.0))
    a = cluster.stores[0]
    await a.put(b"t", b"x")
    await a.delete(b"t", w=3)
    await wait_for(lambda: all(s.local_state(b"t") is not None for s in cluster.stores))
    await cluster.clock.advance(5.0)
    assert all(s.local_state(b"t") is not None for s in cluster.stores)  # within the grace
    await cluster.clock.advance(6.0, step=1.0)
    await wait_for(
        lambda: all(s.local_state(b"t") is None for s in cluster.stores),
        message="tombstone swept on every replica",
    )
    assert sum(s.swept for s in cluster.stores) == 3
    assert await a.get(b"t") is None


async def test_ttl_is_honoured_on_every_replica(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(sweep_interval=1.0))
    a, b, c = cluster.stores
    await a.put(b"ttl", b"short", ttl=5.0, w=3)
    await a.put(b"keep", b"long", w=3)
    entry = await b.get_entry(b"ttl")
    assert entry is not None
    assert entry.expires_at == pytest.approx(cluster.clock.time() + 5.0)
    await cluster.clock.advance(4.0)
    assert await c.get(b"ttl") == b"short"
    await cluster.clock.advance(1.0)
    for store in cluster.stores:
        assert await store.get(b"ttl", r=1) is None
        assert await store.get(b"keep") == b"long"
    assert await a.count() == 1
    await cluster.clock.advance(1.0)
    await wait_for(lambda: all(s.local_state(b"ttl") is None for s in cluster.stores))
    assert all(s.local_state(b"keep") is not None for s in cluster.stores)


async def test_set_expiry_and_persist(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    assert await a.set_expiry(b"missing", kv3.clock.time() + 1) is False
    await a.put(b"e", b"v")
    assert await b.set_expiry(b"e", kv3.clock.time() + 3.0) is True
    entry = await a.get_entry(b"e")
    assert entry is not None
    assert entry.expires_at is not None
    assert await a.set_expiry(b"e", None) is True
    entry = await b.get_entry(b"e")
    assert entry is not None
    assert entry.expires_at is None
    await kv3.clock.advance(4.0)
    assert await a.get(b"e") == b"v"
    versions = await a.get_versions(b"e")
    assert versions.values == (b"v",)  # rewrites with the context leave no siblings


async def test_concurrent_writes_become_siblings_and_a_context_write_resolves(
    kv3: KVCluster,
) -> None:
    a, b, c = kv3.stores
    await a.put(b"s", b"from-a", w=3)
    await b.put(b"s", b"from-b", w=3)  # blind: concurrent with from-a
    versions = await c.get_versions(b"s")
    assert sorted(versions.values) == [b"from-a", b"from-b"]
    assert await c.get(b"s") == b"from-b"  # newest HLC stamp wins the convenience read
    await a.put(b"s", b"resolved", context=versions.context)
    again = await b.get_versions(b"s")
    assert again.values == (b"resolved",)
    # a write with a stale context creates a sibling, never loses a write
    entry = await a.get_entry(b"s")
    assert entry is not None
    await b.put(b"s", b"x1", context=entry.context)
    await c.put(b"s", b"x2", context=entry.context)
    assert sorted((await a.get_versions(b"s")).values) == [b"x1", b"x2"]


async def test_lww_mode_keeps_one_value(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(conflicts="lww"))
    a, b, c = cluster.stores
    await a.put(b"l", b"first", w=3)
    await b.put(b"l", b"second", w=3)
    await c.put(b"l", b"third", w=3)
    assert await a.get_versions(b"l") == Versions(
        (b"third",), (None,), (await a.get_versions(b"l")).context
    )
    for store in cluster.stores:
        state = store.local_state(b"l")
        assert state is not None
        assert vv.sibling_count(vv.DVVSet(state)) == 1


async def test_merge_function_combines_siblings_on_read(make_cluster: ClusterFactory) -> None:
    def union(values: list[bytes]) -> bytes:
        return b",".join(sorted(set(b",".join(values).split(b","))))

    cluster = await make_cluster(3, KVConfig(conflicts=union))
    a, b, _ = cluster.stores
    await a.put(b"m", b"x", w=3)
    await b.put(b"m", b"y", w=3)
    assert await a.get(b"m") == b"x,y"
    entry = await a.get_entry(b"m")
    assert entry is not None
    await a.put(b"m", entry.value, context=entry.context)
    assert (await b.get_versions(b"m")).values == (b"x,y",)


async def test_one_replica_isolated_quorums_of_two_still_succeed(kv3: KVCluster) -> None:
    kv3.net.isolate(address(3))
    a, b, _ = kv3.stores
    for i in range(10):
        key = b"iso-%d" % i
        await a.put(key, b"v", w=2)
        assert await b.get(key, r=2) == b"v"


async def test_two_replicas_isolated_quorum_not_reached(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(timeout=0.3))
    cluster.net.isolate(address(2))
    cluster.net.isolate(address(3))
    a = cluster.stores[0]
    with pytest.raises(QuorumNotReached) as put_err:
        await a.put(b"q", b"v", w=2)
    assert put_err.value.required == 2
    assert put_err.value.acked == 1
    with pytest.raises(QuorumNotReached):
        await a.get(b"q", r=2)
    assert await a.get(b"q", r=1) == b"v"  # the local replica kept the write


async def test_read_repair_updates_a_stale_replica(kv3: KVCluster) -> None:
    kv3.net.isolate(address(3))
    a, _, c = kv3.stores
    await a.put(b"rr", b"v", w=2)
    assert c.local_state(b"rr") is None
    kv3.net.heal()

    async def repaired() -> bool:
        # n3 answers once the transport has reconnected; only answering replicas are repaired
        assert await a.get(b"rr", r=2) == b"v"
        return c.local_state(b"rr") is not None

    await wait_for(repaired, message="read repair")
    assert a.repairs >= 1


async def test_oversized_keys_and_values_are_rejected(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(limits=Limits(max_key_size=8, max_value_size=16)))
    a = cluster.stores[0]
    with pytest.raises(InvalidRequest, match="key too large"):
        await a.put(b"k" * 9, b"v")
    with pytest.raises(InvalidRequest, match="value too large"):
        await a.put(b"k", b"v" * 17)
    with pytest.raises(InvalidRequest, match="key too large"):
        await a.get(b"k" * 9)
    # a wrongly typed argument: the compiled build's own type check refuses it
    # before peer-ring's validation runs (docs/kv.md, "Errors")
    with pytest.raises(InvalidRequest if build() == "pure" else TypeError):
        await a.put(b"k", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        await a.put(b"k", b"v", ttl=1.0, expires_at=2.0)
    with pytest.raises(InvalidRequest):
        await a.put(b"k", b"v", ttl=-1.0)
    with pytest.raises(InvalidRequest):
        await a.put(b"k", b"v", context=b"\x07garbage")
    await a.put(b"k" * 8, b"v" * 16)
    assert await a.get(b"k" * 8) == b"v" * 16


async def test_scan_count_and_flush_cover_the_cluster(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(4)
    a, b, c, d = cluster.stores
    keys = {b"user:%d" % i for i in range(60)} | {b"other:%d" % i for i in range(15)}
    await a.put_many([(k, b"v") for k in sorted(keys)], w=3)
    seen: set[bytes] = set()
    cursor, calls = 0, 0
    while True:
        cursor, batch = await b.scan(cursor, 10)
        seen.update(batch)
        calls += 1
        if cursor == 0:
            break
    assert seen == keys
    assert calls > 1
    matched: set[bytes] = set()
    cursor = 0
    while True:
        cursor, batch = await c.scan(cursor, 1000, b"other:*")
        matched.update(batch)
        if cursor == 0:
            break
    assert matched == {k for k in keys if k.startswith(b"other:")}
    assert await d.count() == 75
    await b.delete(b"user:0")
    assert await c.count() == 74
    await c.flush()
    assert await a.count() == 0
    assert await d.get(b"user:1") is None
    assert all(len(s) == 0 for s in cluster.stores)
    with pytest.raises(InvalidRequest):
        await a.scan(-1, 10)
    with pytest.raises(InvalidRequest):
        await a.scan(0, 0)
    assert await a.scan(10_000, 10) == (0, [])


async def test_count_skips_an_isolated_node(kv3: KVCluster) -> None:
    a = kv3.stores[0]
    await a.put_many([(b"c%d" % i, b"v") for i in range(12)], w=3)
    kv3.net.isolate(address(2))
    assert await a.count() == 12


async def test_get_many_put_many_and_json(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    await a.put_many([(b"m1", b"1"), (b"m2", b"2")])
    assert await b.get_many([b"m1", b"nope", b"m2"]) == [b"1", None, b"2"]
    assert await b.get_many([]) == []
    await a.put_json("doc", {"n": 1, "tags": ["x"]})
    assert await b.get_json("doc") == {"n": 1, "tags": ["x"]}
    assert await b.get_json("missing") is None
    await a.put(b"notjson", b"\xff")
    with pytest.raises(InvalidRequest):
        await b.get_json(b"notjson")


async def test_partition_hooks_move_and_reconcile_data(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    await a.put(b"h", b"v", w=3)
    ring = kv3.nodes[0].ring
    part = ring.partition_for(b"h")
    records = list(a.export_partition(part))
    assert (b"h", a.local_state(b"h")) in records
    assert a.partition_size(part) == len(records)
    assert a.digest(part) == b.digest(part)
    assert a.read_records(part, [b"h", b"absent"]) == [(b"h", a.local_state(b"h"))]
    assert a.import_records(part, records) == 0  # idempotent
    assert b.drop_partition(part) == len(records)
    assert b.local_state(b"h") is None
    wire = [(k, vv.to_wire(vv.DVVSet(s), list)) for k, s in records]
    assert b.import_records(part, wire) == len(records)
    assert b.local_state(b"h") == a.local_state(b"h")
    with pytest.raises(InvalidRequest):
        b.import_records(part, [(b"bad", [["actor", 0, []]])])


async def test_bad_replica_commands_get_clear_errors(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    t = kv3.nodes[0].transport
    with pytest.raises(UnknownCommand):
        await t.request(address(2), ["s", "kv", "nope", b"k", 0, None, "n1"])
    with pytest.raises(InvalidRequest):
        await t.request(address(2), ["s", "kv", "merge", b"k", 0, "not a state", "n1"])
    with pytest.raises(InvalidRequest):
        await t.request(address(2), ["s", "kv", "merge", b"k", 0, [["a", 1, [[1, 2, 3]]]], "n1"])
    with pytest.raises(InvalidRequest):
        await t.request(address(2), ["s", "kv", "coord_put", b"k", 0, [b"v"], "n1"])
    bad_flag = [b"v", None, None, None, 2, None, "no"]  # want_existed must be a bool
    with pytest.raises(InvalidRequest):
        await t.request(address(2), ["s", "kv", "coord_put", b"k", 0, bad_flag, "n1"])
    with pytest.raises(InvalidRequest):
        await t.request(address(2), ["s", "kv", "coord_put", b"k", 0, [*bad_flag, 1], "n1"])
    await a.put(b"still", b"fine")
    assert await b.get(b"still") == b"fine"


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        KVConfig(conflicts="random")
    with pytest.raises(ConfigError):
        KVConfig(read_quorum=0)
    with pytest.raises(ConfigError):
        KVConfig(sweep_interval=0)
    with pytest.raises(ConfigError):
        KVStore(namespace="")


async def test_w1_writes_outrunning_replication_wait_instead_of_dropping(
    make_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A W=1 put on a coordinating replica is acknowledged by its own write and
    # can return without yielding; a loop of them used to queue replica
    # requests until they failed as Overloaded, leaving the other replicas to
    # anti-entropy (which this cluster's manual clock never runs).
    monkeypatch.setattr(coordinator_module, "REPLICATION_BACKLOG", 16)
    cluster = await make_cluster(3, max_in_flight=64)
    writer = cluster.stores[0]
    keys = [b"bp-%d" % i for i in range(600)]
    for key in keys:
        await writer.put(key, b"v", w=1)
    await wait_for(
        lambda: all(_replicated_everywhere(cluster, k, b"v") for k in keys),
        message="every replica has every key",
    )
