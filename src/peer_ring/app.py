"""The public app API: everything an application built on peer-ring may import.

An application is a :class:`Service` registered on a node under a
namespace. The framework owns everything distributed (placement, routing,
replication, handoff, anti-entropy); the service answers replica commands
(:meth:`Service.handle`) and the data-movement hooks, and reaches the
cluster only through the :class:`AppContext` it gets in
:meth:`Service.attach`. See ``docs/apps.md`` ("Write your own app") for a
worked example, a distributed lock with fencing tokens.

Besides this module, applications may use the pure algorithm modules
:mod:`peer_ring.versions` (dotted version vector sets),
:mod:`peer_ring.hlc` (hybrid logical clocks) and :mod:`peer_ring.merkle`
(digest indexes for anti-entropy), and the top-level :mod:`peer_ring`
names. Nothing else: ``make lint`` fails an app under ``peer_ring.apps``
that imports ``peer_ring.node``, the replication subsystems, the transport
or any private module (import-linter contract "apps use the public API only").
"""

from peer_ring.clock import Clock, ManualClock, SystemClock
from peer_ring.errors import (
    ClosedError,
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    NotOwner,
    OutOfMemory,
    Overloaded,
    PeerRingError,
    PeerUnavailable,
    QuorumNotReached,
    RemoteError,
    RequestTimeout,
    RingMismatch,
    TransportError,
    UnknownCommand,
    register_error,
)
from peer_ring.hlc import HLC, SkewPolicy
from peer_ring.merkle import DigestIndex
from peer_ring.service import (
    AppContext,
    CompleteCallback,
    CountedReads,
    Metric,
    QuorumBatch,
    QuorumResult,
    Record,
    Request,
    RoundListener,
    Service,
)

__all__ = [
    # time
    "HLC",
    # the contract
    "AppContext",
    "Clock",
    # errors a service raises or handles
    "ClosedError",
    "CompleteCallback",
    "ConfigError",
    "ConnectionLost",
    "CountedReads",
    # data movement
    "DigestIndex",
    "InvalidRequest",
    "ManualClock",
    "Metric",
    "NotOwner",
    "OutOfMemory",
    "Overloaded",
    "PeerRingError",
    "PeerUnavailable",
    "QuorumBatch",
    "QuorumNotReached",
    "QuorumResult",
    "Record",
    "RemoteError",
    "Request",
    "RequestTimeout",
    "RingMismatch",
    "RoundListener",
    "Service",
    "SkewPolicy",
    "SystemClock",
    "TransportError",
    "UnknownCommand",
    "register_error",
]
