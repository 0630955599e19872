"""Replication: quorum coordination, causal versions, hybrid logical clocks.

``versions`` (dotted version vector sets) and ``hlc`` (hybrid logical clocks)
are pure modules meant to be used qualified: ``versions.update(...)``.
"""

from peer_ring.replication import hlc, versions
from peer_ring.replication.coordinator import Coordinator, QuorumResult
from peer_ring.replication.hlc import HLC, ClockSkewError, SkewPolicy, Timestamp
from peer_ring.replication.versions import Context, DVVSet, PruneConfig, Sibling

__all__ = [
    "HLC",
    "ClockSkewError",
    "Context",
    "Coordinator",
    "DVVSet",
    "PruneConfig",
    "QuorumResult",
    "Sibling",
    "SkewPolicy",
    "Timestamp",
    "hlc",
    "versions",
]
