"""Membership: who is in the cluster (discovery) and who is alive (failure detection)."""

from peer_ring.membership.base import (
    Discovery,
    Member,
    MemberState,
    View,
    ViewPublisher,
    format_address,
    parse_address,
)

__all__ = [
    "Discovery",
    "Member",
    "MemberState",
    "View",
    "ViewPublisher",
    "format_address",
    "parse_address",
]
