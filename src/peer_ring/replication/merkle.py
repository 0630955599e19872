"""Merkle trees over one partition's digest, for anti-entropy (pure: no I/O, no clocks).

A replica summarises a partition by :meth:`Service.digest` -- a map from key
to a short hash of that key's state. :func:`build` groups the keys into a
fixed number of leaf buckets by a hash of the key, hashes each bucket's
sorted ``(key, digest)`` pairs, and hashes pairs of nodes upwards to a root
(a complete binary tree of ``2**depth`` leaves).

Invariants, relied on by the anti-entropy exchange and pinned by property
tests (``tests/property/test_merkle.py``):

* the tree is a pure function of the map (insertion order never matters);
* a key always falls into the same bucket (:func:`bucket_of`), on every node;
* two maps are equal iff their roots are equal (up to 64-bit hash collisions);
* :func:`diff_buckets` returns exactly the buckets whose leaf hashes differ,
  visiting only subtrees whose hashes differ (O(d log B) for d differences);
* :func:`diff_keys` over those buckets returns exactly the keys present in one
  map only or mapped to different digests.

The exchange therefore costs one tree (or its leaves) plus the key hashes of
the differing buckets, never the whole key set. Merkle, "A Digital Signature
Based on a Conventional Encryption Function", CRYPTO 1987; used for replica
synchronisation in Dynamo (DeCandia et al., SOSP 2007, section 4.7).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import xxhash

from peer_ring.errors import InvalidRequest

__all__ = [
    "DEFAULT_DEPTH",
    "MerkleTree",
    "bucket_of",
    "build",
    "diff_buckets",
    "diff_keys",
]

#: Default tree depth: 2**8 = 256 leaf buckets (2 KiB of leaf hashes).
DEFAULT_DEPTH = 8
_MAX_DEPTH = 16
_EMPTY = 0


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= _MAX_DEPTH:
        raise InvalidRequest(f"merkle depth must be an int in [0, {_MAX_DEPTH}], got {depth!r}")


def bucket_of(key: bytes, depth: int = DEFAULT_DEPTH) -> int:
    """The leaf bucket of ``key`` in a tree of ``2**depth`` leaves."""
    if depth == 0:
        return 0
    return xxhash.xxh3_64_intdigest(key, seed=0x5EED) >> (64 - depth)


def _leaf_hash(items: Iterable[tuple[bytes, bytes]]) -> int:
    h = xxhash.xxh3_64()
    n = 0
    for key, dig in sorted(items):
        # length-prefixed so that (b"ab", b"c") and (b"a", b"bc") differ
        h.update(len(key).to_bytes(4, "big"))
        h.update(key)
        h.update(len(dig).to_bytes(4, "big"))
        h.update(dig)
        n += 1
    return h.intdigest() if n else _EMPTY


def _node_hash(left: int, right: int) -> int:
    if left == _EMPTY and right == _EMPTY:
        return _EMPTY
    return xxhash.xxh3_64_intdigest(left.to_bytes(8, "big") + right.to_bytes(8, "big"))


@dataclass(frozen=True, slots=True)
class MerkleTree:
    """A complete binary hash tree: ``levels[0]`` is ``[root]``, ``levels[-1]`` the leaves."""

    depth: int
    levels: tuple[tuple[int, ...], ...]

    @property
    def root(self) -> int:
        return self.levels[0][0]

    @property
    def leaves(self) -> tuple[int, ...]:
        return self.levels[-1]

    @classmethod
    def from_leaves(cls, leaves: Iterable[int]) -> MerkleTree:
        """Rebuild a tree from its leaf hashes (as sent over the wire)."""
        leaf = tuple(leaves)
        n = len(leaf)
        if n == 0 or n & (n - 1) or any(type(x) is not int or x < 0 for x in leaf):
            raise InvalidRequest("merkle leaves must be a power-of-two count of unsigned ints")
        depth = n.bit_length() - 1
        _check_depth(depth)
        levels = [leaf]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append(
                tuple(_node_hash(below[i], below[i + 1]) for i in range(0, len(below), 2))
            )
        return cls(depth, tuple(reversed(levels)))


def build(digest: Mapping[bytes, bytes], depth: int = DEFAULT_DEPTH) -> MerkleTree:
    """The tree of a partition's ``digest`` (key -> state hash)."""
    _check_depth(depth)
    if not digest:
        return empty_tree(depth)
    buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(1 << depth)]
    for key, dig in digest.items():
        buckets[bucket_of(key, depth)].append((key, dig))
    return MerkleTree.from_leaves(_leaf_hash(b) for b in buckets)


@functools.cache
def empty_tree(depth: int = DEFAULT_DEPTH) -> MerkleTree:
    """The tree of an empty partition (cached: most partitions of a new node)."""
    _check_depth(depth)
    return MerkleTree.from_leaves((_EMPTY,) * (1 << depth))


def is_empty(leaves: Iterable[int]) -> bool:
    """True when every leaf hash is the empty bucket's."""
    return all(x == _EMPTY for x in leaves)


def diff_buckets(a: MerkleTree, b: MerkleTree) -> list[int]:
    """Leaf buckets whose hashes differ, ascending; descends only into differing subtrees."""
    if a.depth != b.depth:
        raise InvalidRequest(f"cannot compare merkle trees of depth {a.depth} and {b.depth}")
    frontier = [0] if a.root != b.root else []
    for level in range(1, a.depth + 1):
        la, lb = a.levels[level], b.levels[level]
        nxt = []
        for i in frontier:
            for child in (2 * i, 2 * i + 1):
                if la[child] != lb[child]:
                    nxt.append(child)
        frontier = nxt
    return frontier


def bucket_digest(
    digest: Mapping[bytes, bytes], buckets: Iterable[int], depth: int = DEFAULT_DEPTH
) -> dict[bytes, bytes]:
    """The part of ``digest`` whose keys fall into ``buckets``."""
    wanted = set(buckets)
    return {k: v for k, v in digest.items() if bucket_of(k, depth) in wanted}


def diff_keys(a: Mapping[bytes, bytes], b: Mapping[bytes, bytes]) -> set[bytes]:
    """Keys present in only one map or mapped to different digests."""
    out = {k for k, v in a.items() if b.get(k) != v}
    out.update(k for k in b if k not in a)
    return out
