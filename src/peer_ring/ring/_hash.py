"""Hashing primitives of the ring: key hashing and per-node partition permutations.

Invariants:

* :func:`key_hash` is ``xxhash.xxh3_64`` of the key bytes (seed 0). Every node
  on every platform maps a key to the same 64-bit value; the partition is the
  top ``log2(Q)`` bits of that value, so when ``Q`` doubles partition ``p``
  splits exactly into ``2p`` and ``2p + 1``.
* :class:`NodeSeed` derives, from a node id alone, a keyed *bijection* of
  ``[0, Q)`` (its claim order over the partitions) and a phase in ``(0, 1)``.
  Nothing but the id enters it: a restarted node (new incarnation, new
  address) keeps exactly the same claim order.

The permutation is a composition of bijections on ``k``-bit integers (xor with
a key, multiplication by an odd key modulo ``2**k``, xor-shift right, addition
of a key, a second multiplication and xor-shift). Each step is invertible,
which :meth:`NodeSeed.rank` uses to answer "at which step does this node claim
partition ``p``" without enumerating the permutation.
"""

from __future__ import annotations

from typing import Final

import xxhash

__all__ = ["NodeSeed", "key_hash"]

#: Hash applied to keys (bytes, bytearray or memoryview). Pre-bound: this is the hot path.
key_hash: Final = xxhash.xxh3_64_intdigest

_SEED_DOMAIN: Final = b"peer-ring/ring/node/v1\x00"
_xxh3_128 = xxhash.xxh3_128_intdigest


def _shifts(bits: int) -> tuple[int, int]:
    """Xor-shift distances for a ``bits``-wide permutation (each >= 1)."""
    return max(1, (bits + 1) // 2), max(1, bits // 3 + 1)


class NodeSeed:
    """The per-node keys of the placement permutation for a given ``Q = 2**bits``."""

    __slots__ = ("a", "b", "bits", "m1", "m1_inv", "m2", "m2_inv", "mask", "phase", "s1", "s2")

    def __init__(self, node_id: str, bits: int) -> None:
        h = _xxh3_128(_SEED_DOMAIN + node_id.encode("utf-8"))
        mask = (1 << bits) - 1
        self.bits = bits
        self.mask = mask
        self.a = h & mask
        self.b = (h >> 16) & mask
        self.m1 = ((h >> 32) & mask) | 1
        self.m2 = ((h >> 48) & mask) | 1
        modulus = 1 << bits
        self.m1_inv = pow(self.m1, -1, modulus) if bits else 0
        self.m2_inv = pow(self.m2, -1, modulus) if bits else 0
        # A phase in (0, 1): 32 bits, exact in a float, never 0 or 1.
        self.phase = (((h >> 64) & 0xFFFFFFFF) + 0.5) / 4294967296.0
        self.s1, self.s2 = _shifts(bits)

    def partition_at(self, step: int) -> int:
        """The partition this node claims at ``step`` (a bijection of ``[0, Q)``)."""
        mask = self.mask
        x = ((step ^ self.a) * self.m1) & mask
        x ^= x >> self.s1
        x = ((x + self.b) * self.m2) & mask
        x ^= x >> self.s2
        return x

    def rank(self, partition: int) -> int:
        """Inverse of :meth:`partition_at`: the step at which ``partition`` is claimed."""
        mask = self.mask
        x = _unxorshift(partition, self.s2)
        x = ((x * self.m2_inv) - self.b) & mask
        x = _unxorshift(x, self.s1)
        return ((x * self.m1_inv) & mask) ^ self.a


def _unxorshift(y: int, shift: int) -> int:
    """Invert ``x ^ (x >> shift)``."""
    x = y
    t = y >> shift
    while t:
        x ^= t
        t >>= shift
    return x
