"""The incremental digest index equals a one-shot tree (peer_ring.merkle)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring import merkle

keys = st.binary(min_size=0, max_size=8)
states = st.tuples(st.integers(0, 5), st.binary(max_size=4))
maps = st.dictionaries(keys, states, max_size=40)


def dig(state: tuple[int, bytes]) -> bytes:
    return repr(state).encode()[:8]


@settings(max_examples=150, deadline=None)
@given(
    a=maps,
    changes=st.lists(st.tuples(keys, st.none() | states), max_size=30),
    depth=st.integers(0, 6),
    slice_size=st.integers(1, 7),
)
def test_sliced_incremental_refresh_equals_one_shot_build(
    a: dict[bytes, tuple[int, bytes]],
    changes: list[tuple[bytes, tuple[int, bytes] | None]],
    depth: int,
    slice_size: int,
) -> None:
    index = merkle.DigestIndex(depth)
    index.refresh(a, dig)
    assert index.tree() == merkle.build({k: dig(v) for k, v in a.items()}, depth)
    b = dict(a)
    for k, v in changes:  # new objects, deletions, re-writes of equal values
        if v is None:
            b.pop(k, None)
        else:
            b[k] = (v[0], bytes(v[1]))
    items = list(b.items())
    for i in range(0, len(items), slice_size):
        index.refresh_slice(items[i : i + slice_size], dig)
    index.drop_missing(b)
    truth = {k: dig(v) for k, v in b.items()}
    assert index.digest() == truth
    assert index.tree() == merkle.build(truth, depth)
    buckets = list(range(0, 1 << depth, 2))
    assert index.bucket_digest(buckets) == merkle.bucket_digest(truth, buckets, depth)


def test_unchanged_state_objects_are_not_digested_again() -> None:
    calls: list[object] = []

    def counting(state: tuple[int, bytes]) -> bytes:
        calls.append(state)
        return dig(state)

    source = {b"k%d" % i: (i, b"v") for i in range(100)}
    index = merkle.DigestIndex(4)
    assert index.refresh(source, counting) == 100
    calls.clear()
    source[b"k7"] = (70, b"w")  # one key changes (a new object)
    assert index.refresh(source, counting) == 1
    assert calls == [(70, b"w")]
