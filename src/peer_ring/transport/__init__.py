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
    AnswerCallback,
    Packed,
    PeerAuthConfig,
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
from peer_ring.wire import PROTOCOL_VERSION

if TYPE_CHECKING:
    from peer_ring.transport.grpc_transport import GrpcTransport

__all__ = [
    "PROTOCOL_VERSION",
    "TRANSPORTS",
    "AnswerCallback",
    "ChannelTransport",
    "FaultInjector",
    "GrpcTransport",
    "MemoryNetwork",
    "MemoryTransport",
    "Packed",
    "PeerAuthConfig",
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
    "request_once",
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


async def request_once(
    address: str,
    message: Any,
    *,
    transport: str = "tcp",
    timeout: float = 5.0,
    connect_timeout: float | None = None,
    name: str | None = None,
    tls: TLSConfig | None = None,
    auth: PeerAuthConfig | None = None,
    cluster: str = "peer-ring",
) -> Any:
    """Send one request to the node at ``address`` from a short-lived client and
    return the answer (the CLI, scripts and test harnesses talk to nodes so).

    ``timeout`` bounds the answer; connecting is bounded by ``connect_timeout``
    (default: ``timeout``, at most 5 s), so a dead address fails fast even when
    the answer may take long (a decommission). ``tls`` and ``auth`` are the
    client's credentials (an admin certificate, the admin token); with a
    certificate and no ``name``, the client announces the certificate's CN.
    """
    import os

    cfg = TransportConfig(
        request_timeout=timeout,
        connect_timeout=connect_timeout or min(timeout, 5.0),
        tls=None if tls is None else TLSConfig(
            tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert,
            tls.check_hostname, reload_interval=None,
        ),
        auth=auth,
        cluster=cluster,
    )  # fmt: skip
    if name is None and tls is not None:
        name = _common_name(tls.cert_file)
    client = create_transport(transport, name or f"client-{os.getpid()}", "127.0.0.1:0", cfg)
    await client.start()
    try:
        return await client.request(address, message, timeout)
    finally:
        await client.close()


def _common_name(cert_file: str) -> str | None:
    """The subject CN of a PEM certificate (None when it has none or cannot be read)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        with open(cert_file, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError):
        return None  # the transport reports unreadable material as a ConfigError
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None
