"""Properties of the anti-entropy Merkle tree (peer_ring.merkle)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring import merkle
from peer_ring.errors import InvalidRequest

keys = st.binary(min_size=0, max_size=12)
digests = st.binary(min_size=1, max_size=8)
maps = st.dictionaries(keys, digests, max_size=60)
depths = st.integers(min_value=0, max_value=6)


@settings(max_examples=150, deadline=None)
@given(a=maps, b=maps, depth=depths)
def test_tree_diff_reports_exactly_the_differing_keys(
    a: dict[bytes, bytes], b: dict[bytes, bytes], depth: int
) -> None:
    ta, tb = merkle.build(a, depth), merkle.build(b, depth)
    buckets = merkle.diff_buckets(ta, tb)
    found = merkle.diff_keys(
        merkle.bucket_digest(a, buckets, depth), merkle.bucket_digest(b, buckets, depth)
    )
    truth = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert found == truth
    assert (ta.root == tb.root) == (a == b)
    # every reported bucket really holds a difference
    assert all(any(merkle.bucket_of(k, depth) == i for k in truth) for i in buckets)


@settings(max_examples=60, deadline=None)
@given(base=maps, extra=st.dictionaries(keys, digests, min_size=1, max_size=5), depth=depths)
def test_small_changes_touch_few_buckets_and_are_found(
    base: dict[bytes, bytes], extra: dict[bytes, bytes], depth: int
) -> None:
    changed = {**base, **{k: v + b"!" for k, v in extra.items()}}
    buckets = merkle.diff_buckets(merkle.build(base, depth), merkle.build(changed, depth))
    truth = {k for k in changed if base.get(k) != changed[k]}
    assert len(buckets) <= len(extra)
    assert {merkle.bucket_of(k, depth) for k in truth} == set(buckets)


@given(a=maps)
def test_tree_is_independent_of_insertion_order_and_rebuilds_from_leaves(
    a: dict[bytes, bytes],
) -> None:
    tree = merkle.build(a)
    assert merkle.build(dict(reversed(list(a.items())))) == tree
    assert merkle.MerkleTree.from_leaves(tree.leaves) == tree


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InvalidRequest):
        merkle.build({}, depth=99)
    with pytest.raises(InvalidRequest):
        merkle.MerkleTree.from_leaves([1, 2, 3])
    with pytest.raises(InvalidRequest):
        merkle.diff_buckets(merkle.build({}, 2), merkle.build({}, 3))
