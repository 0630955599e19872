"""Peer authentication: who a channel's other end is, and what it may do.

Two independent proofs, checked in the connection handshake
(``peer_ring.transport._core``):

* **Certificates (mTLS).** The acceptor requires a client certificate signed
  by the cluster CA; the certificate must *name the node id its owner
  announces* in HELLO -- as its subject CN, as a DNS SAN, or as the first
  label of a DNS SAN (``n1.peer-ring.default.svc`` names ``n1``, the shape
  cert-manager issues for a StatefulSet pod). So a node holding a valid
  certificate for ``n2`` cannot pose as ``n1``. A certificate naming one of
  ``PeerAuthConfig.admin_names`` makes its holder an admin.
* **Shared secrets (HMAC challenge).** When a node has a cluster secret or an
  admin token, it answers HELLO with a challenge: a fresh 16-byte nonce and,
  when it knows the cluster secret, its own proof. The dialer checks that
  proof (an impostor node cannot answer) and replies with
  ``HMAC-SHA256(secret, ...)`` over both nonces, the cluster and both ids,
  for the cluster secret and/or the admin token. Secrets never cross the
  wire and a recorded handshake cannot be replayed (the acceptor's nonce is
  new each time). The proof covers the handshake, not each frame: on a
  network where an attacker can *rewrite* traffic, use TLS as well.

Invariant: this module does no I/O and keeps no state; it is a set of pure
functions over names, nonces and keys (tested on its own).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "admin_proof",
    "cert_names",
    "member_proof",
    "names_match",
    "node_names",
    "server_proof",
    "verify",
]

NONCE_SIZE = 16


def cert_names(peercert: Mapping[str, Any] | None) -> frozenset[str]:
    """The names a verified certificate carries: subject CNs and DNS/URI SANs.

    ``peercert`` is the dict :meth:`ssl.SSLSocket.getpeercert` returns.
    """
    if not peercert:
        return frozenset()
    names: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    for kind, value in peercert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.add(str(value))
    return frozenset(names)


def node_names(names: Iterable[str]) -> frozenset[str]:
    """``names`` without IP addresses (an IP SAN names an address, not a node)."""
    out = set()
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            out.add(name)
    return frozenset(out)


def names_match(node_id: str, names: Iterable[str]) -> bool:
    """True when a certificate with ``names`` may claim ``node_id``: one name is
    the id itself or a DNS name whose first label is the id."""
    return any(name == node_id or name.split(".", 1)[0] == node_id for name in names)


def _mac(key: str, label: bytes, parts: Iterable[str | bytes]) -> bytes:
    h = hmac.new(key.encode(), label, hashlib.sha256)
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.digest()


def server_proof(
    secret: str, cluster: str, server_id: str, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    """The acceptor's proof that it knows the cluster secret."""
    return _mac(secret, b"peer-ring/server", (cluster, server_id, client_nonce, server_nonce))


def member_proof(
    secret: str,
    cluster: str,
    client_id: str,
    server_id: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    """The dialer's proof that it knows the cluster secret, bound to its claimed id."""
    return _mac(
        secret, b"peer-ring/member", (cluster, client_id, server_id, client_nonce, server_nonce)
    )


def admin_proof(
    token: str,
    cluster: str,
    client_id: str,
    server_id: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    """The dialer's proof that it holds the admin token."""
    return _mac(
        token, b"peer-ring/admin", (cluster, client_id, server_id, client_nonce, server_nonce)
    )


def verify(expected: bytes, got: Any) -> bool:
    """Constant-time comparison of a proof received from the wire (any type)."""
    return type(got) is bytes and hmac.compare_digest(expected, got)
