"""Symmetric keys for gossip encryption (AES-GCM), with rotation.

A :class:`Keyring` holds one *primary* key, used to encrypt everything this
node sends, and any number of *accepted* keys, tried (primary first) to
decrypt what it receives. Rotation across a running cluster, as in
memberlist/Serf: (1) :meth:`Keyring.install` the new key everywhere, (2)
:meth:`Keyring.use` it as primary everywhere, (3) :meth:`Keyring.remove` the
old key everywhere. At every step each node can read every other's packets.

Sealed format: ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``;
the caller binds its header (version, cluster label) as associated data, so a
packet cannot be moved to another cluster or have its label rewritten. A
random 96-bit nonce per packet is safe for far more than 2^32 packets per key
(NIST SP 800-38D's limit for random nonces) -- rotate keys long before that.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peer_ring.errors import ConfigError

NONCE_SIZE = 12
TAG_SIZE = 16
#: Bytes a sealed packet adds to its plaintext.
OVERHEAD = NONCE_SIZE + TAG_SIZE


class DecryptError(Exception):
    """No key of the keyring opens the packet (wrong key, tampered or truncated)."""


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) not in (16, 24, 32):
        raise ConfigError("gossip keys must be 16, 24 or 32 bytes (AES-128/192/256)")
    return bytes(key)


class Keyring:
    """Primary key plus accepted keys. Not thread-safe; use from the event loop."""

    def __init__(self, primary: bytes, accepted: Iterable[bytes] = ()) -> None:
        self._keys: list[bytes] = [_check_key(primary)]
        self._ciphers: dict[bytes, AESGCM] = {}
        for key in accepted:
            self.install(key)

    @classmethod
    def from_hex(cls, keys: Iterable[str]) -> Keyring:
        """Build from hex strings, the first being the primary key."""
        decoded: list[bytes] = []
        for text in keys:
            try:
                decoded.append(bytes.fromhex(text))
            except ValueError as exc:
                raise ConfigError(f"gossip key is not hex: {exc}") from exc
        if not decoded:
            raise ConfigError("a keyring needs at least one key")
        return cls(decoded[0], decoded[1:])

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def keys(self) -> list[bytes]:
        """All keys, primary first."""
        return list(self._keys)

    def install(self, key: bytes) -> None:
        """Accept ``key`` for decryption (no effect if already installed)."""
        key = _check_key(key)
        if key not in self._keys:
            self._keys.append(key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (encryption) key."""
        key = _check_key(key)
        if key not in self._keys:
            raise ConfigError("install a key before using it as primary")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Stop accepting ``key``. The primary key cannot be removed."""
        key = _check_key(key)
        if key == self._keys[0]:
            raise ConfigError("cannot remove the primary key; use another key first")
        if key in self._keys:
            self._keys.remove(key)
            self._ciphers.pop(key, None)

    def _cipher(self, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the primary key and a fresh random nonce."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher(self._keys[0]).encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt with the first key that authenticates; :class:`DecryptError` if none."""
        if len(sealed) < OVERHEAD:
            raise DecryptError("sealed packet shorter than nonce + tag")
        nonce, body = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
        for key in self._keys:
            try:
                return self._cipher(key).decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise DecryptError("no installed key authenticates the packet")
