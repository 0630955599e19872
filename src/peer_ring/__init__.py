"""peer-ring: a framework for decentralized, Dynamo-style distributed systems."""

from peer_ring.clock import Clock, ManualClock, SystemClock
from peer_ring.config import HandoffConfig, NodeConfig, ReplicationConfig
from peer_ring.errors import (
    AuthenticationFailed,
    ClosedError,
    ConfigError,
    DiscoveryError,
    InvalidRequest,
    NotAuthorized,
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
from peer_ring.membership.failure import FailureDetectorConfig
from peer_ring.node import Node
from peer_ring.service import (
    AppContext,
    Metric,
    QuorumBatch,
    QuorumResult,
    Record,
    Request,
    RoundListener,
    Service,
)
from peer_ring.transport.base import PeerAuthConfig, TLSConfig, TransportConfig

__version__ = "0.1.0"

__all__ = [
    "AppContext",
    "AuthenticationFailed",
    "Clock",
    "ClosedError",
    "ConfigError",
    "Discovery",
    "DiscoveryError",
    "FailureDetectorConfig",
    "HandoffConfig",
    "InvalidRequest",
    "ManualClock",
    "Member",
    "MemberState",
    "Metric",
    "Node",
    "NodeConfig",
    "NotAuthorized",
    "NotOwner",
    "Overloaded",
    "PeerAuthConfig",
    "PeerRingError",
    "PeerUnavailable",
    "ProtocolError",
    "QuorumBatch",
    "QuorumNotReached",
    "QuorumResult",
    "Record",
    "RemoteError",
    "ReplicationConfig",
    "Request",
    "RequestTimeout",
    "RingMismatch",
    "RoundListener",
    "Service",
    "SystemClock",
    "TLSConfig",
    "TransportConfig",
    "TransportError",
    "UnknownCommand",
    "VersionMismatch",
    "__version__",
]
