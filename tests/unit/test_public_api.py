"""Pin the public surface: changing it must be a deliberate act."""

from __future__ import annotations

import inspect

import pytest

import peer_ring
import peer_ring.app
from peer_ring import wire
from peer_ring.service import AppContext

EXPECTED = {
    "AppContext", "AuthenticationFailed", "Clock", "ClosedError", "ConfigError", "Discovery",
    "DiscoveryError",
    "FailureDetectorConfig", "HandoffConfig", "InvalidRequest", "ManualClock", "Member",
    "MemberState", "Metric",
    "Node", "NodeConfig", "NotAuthorized", "NotOwner", "Overloaded", "PeerAuthConfig",
    "PeerRingError", "PeerUnavailable",
    "ProtocolError", "QuorumBatch", "QuorumNotReached", "QuorumResult", "Record", "RemoteError",
    "ReplicationConfig", "Request", "RequestTimeout", "RingMismatch", "RoundListener", "Service",
    "SystemClock", "TLSConfig", "TransportConfig", "TransportError", "UnknownCommand",
    "VersionMismatch", "__version__",
}  # fmt: skip

#: What an application may import (``peer_ring.app``): the contract, time, data
#: movement and the errors a service raises or handles -- no node, no transport.
EXPECTED_APP = {
    "AppContext", "CompleteCallback", "CountedReads", "Metric", "QuorumBatch", "QuorumResult",
    "Record", "Request", "RoundListener", "Service",
    "HLC", "Clock", "ManualClock", "SkewPolicy", "SystemClock",
    "DigestIndex",
    "ClosedError", "ConfigError", "ConnectionLost", "InvalidRequest", "NotOwner", "OutOfMemory",
    "Overloaded", "PeerRingError",
    "PeerUnavailable", "QuorumNotReached", "RemoteError", "RequestTimeout", "RingMismatch",
    "TransportError", "UnknownCommand", "register_error",
}  # fmt: skip

#: The AppContext methods and properties an application gets (issue 13's list).
EXPECTED_CONTEXT = {
    "namespace", "node_id", "clock", "hlc", "replicas", "read_quorum", "write_quorum",
    "request_timeout", "partitions", "partition_for", "owners", "is_up", "ready",
    "start_quorum", "quorum", "call_replica", "call_owners", "coverage", "broadcast",
    "spawn", "create_future", "add_metrics",
}  # fmt: skip
#: AppContext members with a default implementation (added later: an app
#: context written before them keeps working); issue 18's batched rounds and
#: solo (rounds this node decides alone), coordinates (owners and ready in one call).
EXPECTED_CONTEXT_DEFAULTS = {"batch", "solo", "coordinates"}


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(peer_ring.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(peer_ring, name), name


def test_the_app_api_is_exactly_the_documented_one() -> None:
    assert set(peer_ring.app.__all__) == EXPECTED_APP
    for name in EXPECTED_APP:
        assert hasattr(peer_ring.app, name), name
    public = {n for n in vars(AppContext) if not n.startswith("_")}
    assert public == EXPECTED_CONTEXT | EXPECTED_CONTEXT_DEFAULTS
    assert AppContext.__abstractmethods__ == EXPECTED_CONTEXT


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTEXT | EXPECTED_CONTEXT_DEFAULTS))
def test_every_context_member_states_its_contract(name: str) -> None:
    # the class docstring states the concurrency rule for all; each member
    # says what it does (a method's docstring, a property's getter's)
    member = inspect.getattr_static(AppContext, name)
    doc = (member.fget if isinstance(member, property) else member).__doc__
    assert doc, name
    assert len(doc.split()) >= 3, name
    assert "event loop" in (AppContext.__doc__ or "")


def test_every_error_derives_from_the_root() -> None:
    for name in EXPECTED | EXPECTED_APP:
        obj = getattr(peer_ring, name, None) or getattr(peer_ring.app, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, peer_ring.PeerRingError), name


def test_operation_sets_are_disjoint() -> None:
    assert {"s", "sd", "cv", "p", "m", "st"} <= wire.NODE_OPS
    assert not wire.NODE_OPS & wire.FRAMEWORK_OPS
    assert not (wire.NODE_OPS | wire.FRAMEWORK_OPS) & wire.ADMIN_OPS
