"""Replication: quorum coordination, causal versions, and (later) repair."""

from peer_ring.replication.coordinator import Coordinator, QuorumResult

__all__ = ["Coordinator", "QuorumResult"]
