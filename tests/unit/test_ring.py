"""Unit tests of the ring: edge cases, validation, golden values, helpers."""

from __future__ import annotations

import math

import pytest
import xxhash

from peer_ring.errors import ConfigError, InvalidRequest
from peer_ring.membership.base import Member
from peer_ring.ring import (
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICAS,
    Ring,
    RingNode,
    diff,
    key_hash,
)
from peer_ring.ring._hash import NodeSeed
from peer_ring.ring._placement import capacity, slot_shares, waterfill


def ring_of(*ids: str, partitions: int = 64, replicas: int = 3) -> Ring:
    return Ring([RingNode(i) for i in ids], partitions=partitions, replicas=replicas)


# -- golden values: every version and platform must compute the same ring -----


def test_golden_ring_is_stable_across_versions_and_platforms() -> None:
    ring = Ring(
        [RingNode("a", "z1"), RingNode("b", "z2", 2.0), RingNode("c"), RingNode("d", "z1")],
        partitions=16,
        replicas=3,
    )
    assert ring.epoch == "d1ca50258115cc22"
    assert ring.checksum == 15116983221232192546
    assert [ring.preference_list(p) for p in range(8)] == [
        ("a", "b", "c"),
        ("b", "d", "c"),
        ("c", "d", "b"),
        ("c", "b", "d"),
        ("a", "b", "c"),
        ("b", "c", "d"),
        ("b", "c", "d"),
        ("b", "a", "c"),
    ]
    assert ring.fallbacks(0) == ("d",)
    assert key_hash(b"hello") == 10760762337991515389
    assert ring.partition_for(b"hello") == 9


def test_key_hash_is_xxh3_64() -> None:
    for key in (b"", b"k", b"user:1234", bytes(range(256))):
        assert key_hash(key) == xxhash.xxh3_64_intdigest(key)
    assert key_hash(bytearray(b"abc")) == key_hash(memoryview(b"abc")) == key_hash(b"abc")


# -- small clusters ----------------------------------------------------------


def test_defaults() -> None:
    ring = ring_of("a", "b", "c", "d", partitions=DEFAULT_PARTITIONS)
    assert (ring.partitions, ring.replicas) == (1024, 3) == (DEFAULT_PARTITIONS, DEFAULT_REPLICAS)
    assert len(ring.epoch) == 16
    int(ring.epoch, 16)


def test_preference_lists_index_every_partitions_list() -> None:
    ring = ring_of("a", "b", "c", "d")
    lists = ring.preference_lists
    assert len(lists) == ring.partitions
    assert all(lists[p] == ring.preference_list(p) for p in range(ring.partitions))
    assert ring.with_node(RingNode("e")).preference_lists != lists


def test_single_node_owns_everything() -> None:
    ring = ring_of("solo")
    for p in range(ring.partitions):
        assert ring.preference_list(p) == ("solo",)
        assert ring.fallbacks(p) == ()
    assert ring.partitions_of("solo") == tuple(range(64))
    assert ring.primaries_of("solo") == tuple(range(64))
    assert ring.owners(b"any key") == ("solo",)
    assert ring.covering_set() == {"solo": tuple(range(64))}


def test_fewer_nodes_than_replicas_uses_all_nodes() -> None:
    ring = ring_of("a", "b", replicas=3)
    for p in range(ring.partitions):
        assert sorted(ring.preference_list(p)) == ["a", "b"]
    # Primaries still split between the two.
    assert 20 <= len(ring.primaries_of("a")) <= 44


def test_exactly_n_nodes_all_own_every_partition() -> None:
    ring = ring_of("a", "b", "c", replicas=3)
    assert all(len(ring.partitions_of(i)) == 64 for i in "abc")
    assert sum(len(ring.primaries_of(i)) for i in "abc") == 64


def test_empty_ring_has_empty_preference_lists() -> None:
    ring = Ring([], partitions=8)
    assert ring.nodes == ()
    assert ring.node_ids == frozenset()
    assert ring.preference_list(3) == ()
    assert ring.primary(3) is None
    assert ring.owners(b"k") == ()
    assert ring.fallbacks(0) == ()
    assert ring.covering_set() == {}
    assert ring.partitions_of("ghost") == ()
    d = diff(ring, ring_of("a", partitions=8))
    assert d.moved_slots == 8
    assert d.moved_fraction == 1.0


def test_one_partition() -> None:
    ring = ring_of("a", "b", "c", "d", partitions=1)
    assert ring.partition_for(b"anything") == 0
    assert len(ring.preference_list(0)) == 3


def test_unknown_node_has_no_partitions() -> None:
    ring = ring_of("a", "b")
    assert ring.partitions_of("zzz") == ()
    assert ring.primaries_of("zzz") == ()


def test_nodes_are_sorted_by_id() -> None:
    ring = ring_of("c", "a", "b")
    assert [n.id for n in ring.nodes] == ["a", "b", "c"]
    assert ring.node_ids == frozenset("abc")


# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize("partitions", [0, -4, 3, 1000, 1 << 17, 2.0, True, "1024", None])
def test_invalid_partition_count_is_a_config_error(partitions: object) -> None:
    with pytest.raises(ConfigError, match="partitions"):
        Ring([RingNode("a")], partitions=partitions)  # type: ignore[arg-type]


@pytest.mark.parametrize("replicas", [0, -1, 65, 1.5, False, "3"])
def test_invalid_replica_count_is_a_config_error(replicas: object) -> None:
    with pytest.raises(ConfigError, match="replicas"):
        Ring([RingNode("a")], replicas=replicas)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"id": ""}, "id"),
        ({"id": "x" * 257}, "id"),
        ({"id": 7}, "id"),
        ({"id": "a", "zone": ""}, "zone"),
        ({"id": "a", "zone": 3}, "zone"),
        ({"id": "a", "weight": 0}, "weight"),
        ({"id": "a", "weight": -1.0}, "weight"),
        ({"id": "a", "weight": math.nan}, "weight"),
        ({"id": "a", "weight": math.inf}, "weight"),
        ({"id": "a", "weight": True}, "weight"),
        ({"id": "a", "weight": "2"}, "weight"),
    ],
)
def test_invalid_ring_node_is_a_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RingNode(**kwargs)  # type: ignore[arg-type]


def test_integer_weight_is_normalised_to_float() -> None:
    node = RingNode("a", weight=2)
    assert isinstance(node.weight, float)
    assert Ring([node]).checksum == Ring([RingNode("a", weight=2.0)]).checksum


def test_duplicate_ids_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        Ring([RingNode("a"), RingNode("a", zone="z")])


def test_non_ring_nodes_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RingNode"):
        Ring(["a"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="member"):
        Ring.from_members(["a"])  # type: ignore[list-item]


@pytest.mark.parametrize("partition", [-1, 64, 10**9])
def test_partition_out_of_range_is_an_invalid_request(partition: int) -> None:
    ring = ring_of("a", "b")
    with pytest.raises(InvalidRequest, match="out of range"):
        ring.preference_list(partition)
    with pytest.raises(InvalidRequest):
        ring.fallbacks(partition)


@pytest.mark.parametrize("key", ["text", 42, None])
def test_non_bytes_key_is_an_invalid_request(key: object) -> None:
    ring = ring_of("a", "b")
    with pytest.raises(InvalidRequest, match="bytes-like"):
        ring.partition_for(key)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="bytes-like"):
        ring.owners(key)  # type: ignore[arg-type]


def test_diff_of_rings_with_different_q_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="partition counts"):
        diff(ring_of("a", partitions=64), ring_of("a", partitions=128))


# -- members -------------------------------------------------------------------


def test_from_members_uses_only_id_zone_and_weight() -> None:
    members = [
        Member("n1", "127.0.0.2:7000", zone="z1", weight=2.0, incarnation=3, meta={"k": "v"}),
        Member("n2", "127.0.0.3:7000", zone="z2"),
    ]
    ring = Ring.from_members(members, partitions=32, replicas=2)
    assert ring.nodes == (RingNode("n1", "z1", 2.0), RingNode("n2", "z2", 1.0))
    assert ring == Ring(
        [RingNode("n2", "z2"), RingNode("n1", "z1", 2.0)], partitions=32, replicas=2
    )
    view = {m.id: m.with_incarnation(m.incarnation + 1) for m in members}
    assert Ring.from_members(view, partitions=32, replicas=2).epoch == ring.epoch


# -- identity --------------------------------------------------------------------


def test_equal_rings_are_equal_and_hash_alike() -> None:
    a = ring_of("a", "b", "c")
    b = ring_of("c", "b", "a")
    assert a == b
    assert hash(a) == hash(b)
    assert a != ring_of("a", "b", "d")
    assert a != "not a ring"
    assert "epoch=" in repr(a)


def test_with_and_without_node() -> None:
    ring = ring_of("a", "b", "c")
    grown = ring.with_node(RingNode("d"))
    assert grown.node_ids == frozenset("abcd")
    assert grown.without_node("d") == ring
    assert ring.without_node("ghost") == ring
    reweighted = ring.with_node(RingNode("a", weight=3.0))
    assert reweighted.node_ids == ring.node_ids
    assert reweighted.epoch != ring.epoch


# -- diff ------------------------------------------------------------------------


def test_diff_of_identical_rings_is_empty() -> None:
    ring = ring_of("a", "b", "c", "d")
    d = diff(ring, ring)
    assert d.unchanged
    assert (d.moved_slots, d.moved_primaries, d.moved_fraction) == (0, 0, 0.0)
    assert d.incoming("a") == d.outgoing("a") == ()


def test_diff_reports_what_a_joining_node_fetches() -> None:
    old = ring_of("a", "b", "c", "d", partitions=256)
    new = old.with_node(RingNode("e"))
    d = diff(old, new)
    assert d.incoming("e") == new.partitions_of("e")
    assert d.outgoing("e") == ()
    losers = {x for c in d.changes for x in c.removed}
    assert losers <= {"a", "b", "c", "d"}
    assert sum(len(d.outgoing(x)) for x in losers) == d.moved_slots
    assert d.total_slots == 256 * 3


# -- covering set ----------------------------------------------------------------


def test_covering_set_asks_each_partition_once_from_fewer_nodes_than_all() -> None:
    ring = ring_of(*[f"n{i}" for i in range(9)], partitions=256)
    cover = ring.covering_set()
    # Random placement needs more than n/N nodes to cover Q partitions, but
    # greedy cover plus pruning stays below n (7 measured for these ids).
    assert 3 <= len(cover) <= 7
    assert sorted(p for ps in cover.values() for p in ps) == list(range(256))


def test_covering_set_avoids_excluded_nodes_when_possible() -> None:
    ring = ring_of("a", "b", "c", "d", partitions=128)
    cover = ring.covering_set(exclude={"a", "b"})
    assert "a" not in cover
    assert "b" not in cover
    assert sorted(p for ps in cover.values() for p in ps) == list(range(128))


def test_covering_set_falls_back_to_excluded_primary_when_all_owners_excluded() -> None:
    ring = ring_of("a", "b", partitions=32, replicas=2)
    cover = ring.covering_set(exclude={"a", "b"})
    assert sorted(p for ps in cover.values() for p in ps) == list(range(32))
    for node_id, parts in cover.items():
        assert parts == ring.primaries_of(node_id)


# -- helpers: permutation and capacities -------------------------------------------


@pytest.mark.parametrize("bits", [0, 1, 2, 3, 5, 8, 10, 12])
def test_node_permutation_is_a_bijection_with_an_inverse(bits: int) -> None:
    for node_id in ("a", "node-17", "zz"):
        seed = NodeSeed(node_id, bits)
        image = [seed.partition_at(r) for r in range(1 << bits)]
        assert sorted(image) == list(range(1 << bits))
        assert all(seed.rank(p) == r for r, p in enumerate(image))
        assert 0.0 < seed.phase < 1.0


def test_different_nodes_claim_in_different_orders() -> None:
    orders = {tuple(NodeSeed(f"n{i}", 10).partition_at(r) for r in range(8)) for i in range(50)}
    assert len(orders) == 50


def test_waterfill_respects_bounds_and_total() -> None:
    shares = waterfill([100.0, 1.0, 1.0], 300.0, [0.0] * 3, [100.0] * 3)
    assert shares[0] == 100.0
    assert shares[1] == pytest.approx(100.0)
    shares = waterfill([1.0, 1.0, 8.0], 100.0, [20.0, 0.0, 0.0], [100.0] * 3)
    assert shares[0] == 20.0
    assert sum(shares) == pytest.approx(100.0)


def test_capacity_is_between_ceil_share_and_load_factor() -> None:
    assert capacity(100.0, 1024) == 125
    assert capacity(1.024, 1024) == 2  # ceil wins when the factor cannot lift floor
    assert capacity(1000.0, 1024) == 1024
    assert capacity(100.0, 1024, 1.15) == 115  # 1.15 * 100 rounds below 115 in binary


def test_a_lone_zone_node_gets_a_full_share_of_slots() -> None:
    # Three zones, N=3: every partition needs the only node of zone "a".
    zone_of = [0, 1, 1, 1, 2, 2, 2]
    shares = slot_shares([1.0] * 7, zone_of, 64, 3)
    assert shares[0] == 64.0
    assert sum(shares) == pytest.approx(64 * 3)
    ring = Ring(
        [RingNode("solo", "a")]
        + [RingNode(f"b{i}", "b") for i in range(3)]
        + [RingNode(f"c{i}", "c") for i in range(3)],
        partitions=64,
    )
    assert len(ring.partitions_of("solo")) == 64


def test_heavy_node_is_capped_at_one_replica_per_partition() -> None:
    ring = Ring([RingNode("big", weight=100.0)] + [RingNode(f"s{i}") for i in range(5)])
    assert len(ring.partitions_of("big")) == 1024
    small = [len(ring.partitions_of(f"s{i}")) for i in range(5)]
    assert sum(small) == 2048
    assert max(small) <= 1.25 * 2048 / 5
