"""Pin the public surface: changing it must be a deliberate act."""

from __future__ import annotations

import peer_ring

EXPECTED = {
    "Clock", "ClosedError", "ConfigError", "Discovery", "DiscoveryError",
    "FailureDetectorConfig", "HandoffConfig", "InvalidRequest", "ManualClock", "Member",
    "MemberState",
    "Node", "NodeConfig", "NotOwner", "Overloaded", "PeerRingError", "PeerUnavailable",
    "ProtocolError", "QuorumNotReached", "QuorumResult", "Record", "RemoteError",
    "ReplicationConfig", "Request", "RequestTimeout", "RingMismatch", "Service",
    "SystemClock", "TLSConfig", "TransportConfig", "TransportError", "UnknownCommand",
    "VersionMismatch", "__version__",
}  # fmt: skip


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(peer_ring.__all__) == EXPECTED
    for name in EXPECTED:
        assert hasattr(peer_ring, name), name


def test_every_error_derives_from_the_root() -> None:
    for name in EXPECTED:
        obj = getattr(peer_ring, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, peer_ring.PeerRingError), name
