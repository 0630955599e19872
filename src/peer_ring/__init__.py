"""peer-ring: a framework for decentralized, Dynamo-style distributed systems."""

from peer_ring.clock import Clock, ManualClock, SystemClock
from peer_ring.errors import (
    ClosedError,
    ConfigError,
    DiscoveryError,
    InvalidRequest,
    NotOwner,
    Overloaded,
    PeerRingError,
    PeerUnavailable,
    ProtocolError,
    QuorumNotReached,
    RemoteError,
    RequestTimeout,
    RingMismatch,
    TransportError,
    UnknownCommand,
    VersionMismatch,
)
from peer_ring.membership import Discovery, Member, MemberState

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ClosedError",
    "ConfigError",
    "Discovery",
    "DiscoveryError",
    "InvalidRequest",
    "ManualClock",
    "Member",
    "MemberState",
    "NotOwner",
    "Overloaded",
    "PeerRingError",
    "PeerUnavailable",
    "ProtocolError",
    "QuorumNotReached",
    "RemoteError",
    "RequestTimeout",
    "RingMismatch",
    "SystemClock",
    "TransportError",
    "UnknownCommand",
    "VersionMismatch",
    "__version__",
]
