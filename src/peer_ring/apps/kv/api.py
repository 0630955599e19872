"""The contract of the key-value store, as network surfaces use it.

:class:`KVApi` is what the RESP and gRPC servers program against. The
replicated :class:`peer_ring.apps.kv.KVStore` implements it; tests may use
:class:`peer_ring.apps.kv.local.LocalKV`, a single-process reference
implementation with the same semantics and no replication.

Keys and values are ``bytes``. Expiry instants are wall-clock seconds since
the Unix epoch (float), the same on every replica. Read-modify-write commands
built on this API (SET NX, INCR, GETSET, ...) read an :class:`Entry`, then
write with the entry's ``context``: under concurrent writers this is not an
atomic transaction; the namespace's conflict mode (siblings, last-writer-wins
or a merge function) decides the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Entry:
    """A live value as read from the store.

    ``value`` is the resolved value (when replicas hold concurrent siblings,
    the one with the newest hybrid-logical-clock timestamp; see
    ``KVStore.get_versions`` for all of them). ``expires_at`` is the wall
    clock instant the key expires, or ``None`` for no expiry. ``context`` is
    the opaque causal context to pass back when writing a value derived from
    this one.
    """

    value: bytes
    expires_at: float | None
    context: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced by the store (bytes)."""

    #: Longest key in bytes; a longer one raises InvalidRequest before
    #: anything is sent.
    max_key_size: int = 64 * 1024
    #: Longest value in bytes; a longer one raises InvalidRequest.
    max_value_size: int = 16 * 1024 * 1024


class KVApi(Protocol):
    """Operations the network surfaces need. All methods are coroutines.

    Errors: oversized keys/values raise :class:`peer_ring.errors.InvalidRequest`;
    quorum failures :class:`peer_ring.errors.QuorumNotReached`; timeouts
    :class:`peer_ring.errors.RequestTimeout`.
    """

    @property
    def limits(self) -> Limits: ...

    async def get(self, key: bytes) -> bytes | None:
        """The live value of ``key`` or ``None`` (missing, deleted or expired)."""
        ...

    async def get_entry(self, key: bytes) -> Entry | None:
        """Value, expiry and causal context of ``key``, or ``None``."""
        ...

    async def put(
        self,
        key: bytes,
        value: bytes,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        context: bytes | None = None,
    ) -> None:
        """Store ``value``. ``ttl`` (relative seconds) and ``expires_at``
        (absolute wall-clock seconds) are exclusive; neither means no expiry.
        With ``context`` the write supersedes the versions that context saw."""
        ...

    async def delete(self, key: bytes, *, context: bytes | None = None) -> bool:
        """Delete ``key`` (a versioned tombstone). True if a live value existed."""
        ...

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` where missing)."""
        ...

    async def put_many(
        self, items: Sequence[tuple[bytes, bytes]], *, ttl: float | None = None
    ) -> None:
        """Store every item; fails if any write fails its quorum."""
        ...

    async def delete_many(self, keys: Sequence[bytes]) -> list[bool]:
        """Delete every key; for each, whether a live value existed. Fails if
        any delete fails its quorum (the others may have applied)."""
        ...

    async def set_expiry(
        self, key: bytes, expires_at: float | None, *, context: bytes | None = None
    ) -> bool:
        """Set (or with ``None`` remove) the expiry of a live key; False if missing."""
        ...

    async def scan(
        self, cursor: int, count: int, match: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        """Iterate live keys across the whole cluster.

        Start with cursor 0; a returned cursor of 0 means the iteration is
        complete. ``count`` is a hint. ``match`` is a Redis glob pattern.
        Like Redis SCAN: every key present for the whole iteration is returned
        at least once; keys added or removed meanwhile may or may not be.
        """
        ...

    async def count(self) -> int:
        """Number of live keys in the cluster (approximate under churn)."""
        ...

    async def flush(self) -> None:
        """Delete every key in the cluster."""
        ...


@runtime_checkable
class KVCallbacks(Protocol):
    """Optional callback forms of GET and plain SET (the network surfaces'
    hot path: no task or future per request). ``done`` is called exactly once
    on the event loop, possibly before the method returns, and must not raise."""

    def start_get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None: ...

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None: ...


class KVBatchApi(Protocol):
    """Reads and writes started together (``KVBatches.batch()``): each key's
    operation is started at once and told to its ``done`` (the callback
    rules of :class:`KVCallbacks`); the requests to other replicas leave at
    :meth:`flush`, one per replica."""

    def get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None: ...

    def put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class KVBatches(Protocol):
    """Optional: a store whose operations can be batched (the RESP server
    groups a pipeline's GETs and SETs through it)."""

    def batch(self) -> KVBatchApi: ...
