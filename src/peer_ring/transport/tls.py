"""TLS contexts for peer channels, built from certificate files.

Both ``tcp`` and ``grpc`` read the same :class:`~peer_ring.transport.base.TLSConfig`.
Nodes are addressed by IP, so by default the CA, not the hostname, is the
identity check; set ``check_hostname`` when certificates carry the peers' names.
Beyond the chain, the handshake checks that a peer's certificate names the
node id it claims (``peer_ring.transport.auth``). :class:`TlsMaterial` reloads
the files when they change.
"""

from __future__ import annotations

import logging
import os
import ssl

from peer_ring.errors import ConfigError
from peer_ring.transport.base import TLSConfig

log = logging.getLogger(__name__)


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


class TlsMaterial:
    """The TLS contexts of one transport, reloaded when their files change.

    :meth:`check` compares the files' ``(mtime, size, inode)`` with the last load
    and, on a change, loads the new certificate and key into the *same*
    server context (new handshakes use them; open connections keep theirs)
    and builds a fresh client context for new dials. A new CA file is added
    to the trust store (rotation to a new CA works; dropping the old CA takes
    a restart). Files caught half-written are reported and retried at the
    next check. The transport calls :meth:`check` every
    ``TLSConfig.reload_interval`` seconds; tests call it directly.
    """

    def __init__(self, tls: TLSConfig) -> None:
        self.tls = tls
        self.server = server_context(tls)
        self.client = client_context(tls)
        self.reloads = 0
        self.reload_errors = 0
        self._stamp = self._stat()

    def _files(self) -> list[str]:
        tls = self.tls
        return [tls.cert_file, tls.key_file] + ([tls.ca_file] if tls.ca_file else [])

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        # the inode too: Kubernetes updates a mounted Secret by swapping a symlink
        out = []
        for path in self._files():
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((-1, -1, -1))
        return tuple(out)

    def changed(self) -> bool:
        return self._stat() != self._stamp

    def check(self) -> bool:
        """Reload if a file changed; True when new material was loaded."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        try:
            client = client_context(self.tls)
            _load(self.server, self.tls)
        except ConfigError as exc:
            self.reload_errors += 1
            log.warning("TLS files changed but cannot be loaded yet (will retry): %s", exc)
            return False
        self.client = client
        self._stamp = stamp
        self.reloads += 1
        log.info("reloaded TLS certificate %s", self.tls.cert_file)
        return True
