"""peer_ring.ring -- partitions and placement (pure: no I/O, no clocks, no asyncio).

Keys map to one of ``Q`` fixed partitions by ``xxh3_64``; each partition has an
ordered preference list of ``N`` distinct nodes, spread over distinct zones
first, computed by weighted rendezvous hashing with bounded loads. The
placement is a pure function of the member set (ids, zones, weights), ``Q`` and
``N``; :attr:`Ring.epoch` fingerprints those inputs. See ``docs/ring.md``.
"""

from peer_ring.ring._hash import key_hash
from peer_ring.ring._placement import LOAD_FACTOR, PRIMARY_LOAD_FACTOR
from peer_ring.ring._ring import (
    DEFAULT_PARTITIONS,
    DEFAULT_REPLICAS,
    MAX_PARTITIONS,
    MAX_REPLICAS,
    Ring,
    diff,
)
from peer_ring.ring._types import PartitionChange, RingDiff, RingNode

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICAS",
    "LOAD_FACTOR",
    "MAX_PARTITIONS",
    "MAX_REPLICAS",
    "PRIMARY_LOAD_FACTOR",
    "PartitionChange",
    "Ring",
    "RingDiff",
    "RingNode",
    "diff",
    "key_hash",
]
