"""Merkle trees over one partition's digest, for anti-entropy (pure: no I/O, no clocks).

A replica summarises a partition by :meth:`Service.digest` -- a map from key
to a short hash of that key's state. :func:`build` groups the keys into a
fixed number of leaf buckets by a hash of the key; a leaf is the sum modulo
2**64 of its pairs' :func:`entry_hash` (a hash of the length-prefixed key and
digest), and pairs of nodes are hashed upwards to a root (a complete binary
tree of ``2**depth`` leaves). The sum makes a leaf *incremental*: changing
one key subtracts its old entry hash and adds the new one, which is what
:class:`DigestIndex` does to keep a partition's tree current at the cost of
the keys that changed, not of the partition.

Invariants, relied on by the anti-entropy exchange and pinned by property
tests (``tests/property/test_merkle.py``):

* the tree is a pure function of the map (insertion order never matters);
* a :class:`DigestIndex` refreshed from a map, however often, in whatever
  slices and after whatever changes, has the tree ``build`` gives for it;
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import xxhash

from peer_ring.errors import InvalidRequest

__all__ = [
    "DEFAULT_DEPTH",
    "DigestIndex",
    "MerkleTree",
    "bucket_of",
    "build",
    "diff_buckets",
    "diff_keys",
    "entry_hash",
]

#: Default tree depth: 2**8 = 256 leaf buckets (2 KiB of leaf hashes).
DEFAULT_DEPTH = 8
_MAX_DEPTH = 16
_EMPTY = 0
_MASK = (1 << 64) - 1


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= _MAX_DEPTH:
        raise InvalidRequest(f"merkle depth must be an int in [0, {_MAX_DEPTH}], got {depth!r}")


def bucket_of(key: bytes, depth: int = DEFAULT_DEPTH) -> int:
    """The leaf bucket of ``key`` in a tree of ``2**depth`` leaves."""
    if depth == 0:
        return 0
    return xxhash.xxh3_64_intdigest(key, seed=0x5EED) >> (64 - depth)


def entry_hash(key: bytes, dig: bytes) -> int:
    """The 64-bit hash one ``(key, digest)`` pair adds to its leaf."""
    # length-prefixed so that (b"ab", b"c") and (b"a", b"bc") differ
    return xxhash.xxh3_64_intdigest(len(key).to_bytes(4, "big") + key + dig)


def _leaf_hash(items: Iterable[tuple[bytes, bytes]]) -> int:
    total = 0
    for key, dig in items:
        total += entry_hash(key, dig)
    return total & _MASK


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


class DigestIndex:
    """The digest and Merkle leaves of one partition, kept current incrementally.

    A service holding ``key -> state`` calls :meth:`refresh` with that map
    and a function from a state to its digest. Each key's *state object* is
    remembered with its digest; a key whose state is the very same object
    (``is``) as at the last refresh keeps its digest, so a refresh costs a
    dictionary walk plus a digest per *changed* key. That is exact only if
    states are immutable (a service that mutates a state in place must not
    use this index) and the index holds them, so an identity is never
    reused. A refresh may run in slices (:meth:`refresh_slice`) between other
    work: entries stay consistent after every slice; the tree equals
    ``build(source digests)`` once a refresh over an unchanged map finished.

    Memory: one 2-tuple per key (the state is shared, the digest is 8 bytes).
    """

    __slots__ = ("_tree", "depth", "entries", "sums")

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        _check_depth(depth)
        self.depth = depth
        #: key -> (state object, digest)
        self.entries: dict[bytes, tuple[Any, bytes]] = {}
        #: leaf sums (see the module docstring)
        self.sums = [0] * (1 << depth)
        self._tree: MerkleTree | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def refresh(self, source: Mapping[bytes, Any], digest_of: Callable[[Any], bytes]) -> int:
        """Bring the index up to date with ``source`` in one go; return keys updated."""
        changed = self.refresh_slice(source.items(), digest_of)
        return changed + self.drop_missing(source)

    def refresh_slice(
        self, items: Iterable[tuple[bytes, Any]], digest_of: Callable[[Any], bytes]
    ) -> int:
        """Update the entries of ``items`` (part of the map); return how many changed."""
        entries = self.entries
        sums = self.sums
        depth = self.depth
        changed = 0
        for key, state in items:
            cur = entries.get(key)
            if cur is not None and cur[0] is state:
                continue
            dig = digest_of(state)
            if cur is not None:
                if cur[1] == dig:
                    entries[key] = (state, dig)  # an equal new object: same digest
                    continue
                b = bucket_of(key, depth)
                sums[b] = (sums[b] - entry_hash(key, cur[1])) & _MASK
            else:
                b = bucket_of(key, depth)
            sums[b] = (sums[b] + entry_hash(key, dig)) & _MASK
            entries[key] = (state, dig)
            changed += 1
        if changed:
            self._tree = None
        return changed

    def drop_missing(self, source: Mapping[bytes, Any]) -> int:
        """Forget the keys no longer in ``source``; return how many.

        Cheap when nothing was removed (a size comparison) -- exact once every
        key of ``source`` has been refreshed.
        """
        if len(self.entries) <= len(source):
            return 0
        gone = self.entries.keys() - source.keys()
        for key in gone:
            self.discard(key)
        return len(gone)

    def discard(self, key: bytes) -> None:
        cur = self.entries.pop(key, None)
        if cur is not None:
            b = bucket_of(key, self.depth)
            self.sums[b] = (self.sums[b] - entry_hash(key, cur[1])) & _MASK
            self._tree = None

    def tree(self, depth: int | None = None) -> MerkleTree:
        """The Merkle tree of the indexed digests (cached until an entry changes)."""
        if depth is not None and depth != self.depth:
            return build(self.digest(), depth)
        if self._tree is None:
            self._tree = MerkleTree.from_leaves(self.sums)
        return self._tree

    def digest(self) -> dict[bytes, bytes]:
        """``key -> digest`` as indexed."""
        return {key: cur[1] for key, cur in self.entries.items()}

    def bucket_digest(self, buckets: Iterable[int], depth: int | None = None) -> dict[bytes, bytes]:
        """The indexed ``key -> digest`` of the keys in ``buckets``."""
        d = self.depth if depth is None else depth
        wanted = set(buckets)
        if not wanted:
            return {}
        return {k: cur[1] for k, cur in self.entries.items() if bucket_of(k, d) in wanted}
