"""Peer channels: one :class:`Transport` contract, three implementations.

``tcp`` (the default), ``grpc`` (batched frames over one bidirectional gRPC
stream per channel) and ``memory`` (in-process, with injectable faults, for
deterministic tests). :func:`create_transport` builds one by name.
``GrpcTransport`` is imported on first use: grpc is heavy and only that
transport needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peer_ring.errors import ConfigError

# The contract
from peer_ring.transport._core import ChannelTransport, FaultInjector
from peer_ring.transport.base import (
    PROTOCOL_VERSION,
    PeerInfo,
    PeerObserver,
    RequestHandler,
    StreamHandler,
    StreamSink,
    TLSConfig,
    Transport,
    TransportConfig,
)

# Implementations
from peer_ring.transport.memory import MemoryNetwork, MemoryTransport
from peer_ring.transport.tcp import TcpTransport

if TYPE_CHECKING:
    from peer_ring.transport.grpc_transport import GrpcTransport

__all__ = [
    "PROTOCOL_VERSION",
    "TRANSPORTS",
    "ChannelTransport",
    "FaultInjector",
    "GrpcTransport",
    "MemoryNetwork",
    "MemoryTransport",
    "PeerInfo",
    "PeerObserver",
    "RequestHandler",
    "StreamHandler",
    "StreamSink",
    "TLSConfig",
    "TcpTransport",
    "Transport",
    "TransportConfig",
    "create_transport",
]

#: Names accepted by :func:`create_transport` (and ``--transport``).
TRANSPORTS = ("tcp", "grpc", "memory")


def create_transport(
    kind: str,
    node_id: str,
    address: str,
    config: TransportConfig | None = None,
    **kw: Any,
) -> ChannelTransport:
    """Build the transport named ``kind`` for ``node_id`` listening at ``address``.

    Extra keywords go to the implementation: ``faults`` for all, ``network``
    (required) for ``memory``, ``keepalive_time``/``keepalive_timeout``/
    ``tls_server_name`` for ``grpc``. An unknown ``kind`` is a ConfigError.
    """
    if kind == "tcp":
        return TcpTransport(node_id, address, config, **kw)
    if kind == "grpc":
        from peer_ring.transport.grpc_transport import GrpcTransport

        return GrpcTransport(node_id, address, config, **kw)
    if kind == "memory":
        network = kw.pop("network", None)
        if not isinstance(network, MemoryNetwork):
            raise ConfigError("the memory transport needs network=MemoryNetwork()")
        return MemoryTransport(node_id, address, network, config, **kw)
    raise ConfigError(f"unknown transport {kind!r}; expected one of {', '.join(TRANSPORTS)}")


def __getattr__(name: str) -> Any:
    if name == "GrpcTransport":
        from peer_ring.transport.grpc_transport import GrpcTransport

        return GrpcTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
