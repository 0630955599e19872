"""TLS contexts for peer channels, built from certificate files.

Both ``tcp`` and ``grpc`` read the same :class:`~peer_ring.transport.base.TLSConfig`.
Nodes are addressed by IP, so by default the CA, not the hostname, is the
identity check; set ``check_hostname`` when certificates carry the peers' names.
"""

from __future__ import annotations

import ssl

from peer_ring.errors import ConfigError
from peer_ring.transport.base import TLSConfig


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """Context for the accepting side; requires client certs under mTLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx, tls)
    if tls.require_client_cert:
        if tls.ca_file is None:
            raise ConfigError("tls.require_client_cert needs tls.ca_file")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(tls: TLSConfig) -> ssl.SSLContext:
    """Context for the dialing side; verifies the server against ``ca_file``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = tls.check_hostname
    if tls.ca_file is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    _load(ctx, tls)
    return ctx


def _load(ctx: ssl.SSLContext, tls: TLSConfig) -> None:
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.ca_file is not None:
            ctx.load_verify_locations(tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS material: {exc}") from exc
