"""The replicated key-value store: a :class:`~peer_ring.service.Service` plus the embedded API.

``node.register(KVStore())`` makes a node both a *replica* of the ``kv``
namespace (it stores the keys of the partitions it owns and answers replica
commands from coordinators) and a *client* of the whole cluster: the
:class:`KVStore` object implements :class:`~peer_ring.apps.kv.api.KVApi`
(what the RESP server serves) on top of the node's ring and quorum
coordinator. Keys and values are ``bytes``; ``str`` is accepted and encoded
as UTF-8 (reads always return ``bytes``; see :meth:`KVStore.get_json`).

Design (Dynamo, DeCandia et al., SOSP 2007, sections 4.4-4.6; DVVSet,
Almeida et al., DAIS 2014; Riak KV's coordinating vnode)
----------------------------------------------------------------------------

*Writes.* A dotted version vector's dot must be issued by a replica that
holds the key's state (``versions.update`` precondition). So the node that
runs ``put`` (any node) picks a *coordinating replica*: itself when it is in
the key's preference list (no extra hop: with N equal to the cluster size
every node is), otherwise the first live node of the preference list, to
which it forwards the write (replica command ``coord_put``). The coordinating
replica runs ``update(local_state, context, item, actor, stamp=hlc)``, stores
the result, then fans the *resulting state* out to the N replicas with the
quorum coordinator (command ``merge``: a join, never a new dot) and waits for
W acknowledgements, its own included. A W=1 write still reaches all N.
Forwarding moves to the next live replica only when the previous one was
certainly not reached (:class:`~peer_ring.errors.PeerUnavailable`); after a
timeout or a connection lost with the request in flight
(:class:`~peer_ring.errors.ConnectionLost`) the outcome is unknown and the
error is raised: a second coordinator would issue the same write again as a
concurrent version (a read-modify-write forked into siblings).

The actor is ``"<node id>.<random suffix>"``, fresh for each
:class:`KVStore` instance: replicas keep data in memory only, so a restarted
node is a new *data life* and must never reissue an old dot. Stamps come
from a hybrid logical clock that is first advanced past every stamp in the
local state, so a write always sorts after what its coordinator held.

*Reads.* ``get`` sends ``get`` to the N replicas, waits for R answers and
joins them (``versions.sync``). With ``read_repair`` the answers that arrive
later are joined too and every replica whose state differs receives a
``merge`` (read repair, Dynamo section 4.7).

*Items.* Values inside the DVVSet are ``(value | None, expires_at, stamp)``
tuples (see :mod:`peer_ring.apps.kv._state`): ``None`` is a tombstone,
``expires_at`` an absolute wall-clock instant. A key reads as missing when
its last-writer-wins sibling is a tombstone or expired (the answer a single
copy, :class:`~peer_ring.apps.kv.local.LocalKV`, would give).

*Conflicts* (:attr:`KVConfig.conflicts`): ``"siblings"`` keeps concurrent
writes as siblings; ``get`` returns the last-writer-wins sibling by HLC
stamp, :meth:`KVStore.get_versions` shows all, and a write carrying the
context of a read supersedes them. A write without a context is concurrent
with everything (a new sibling) -- except a *delete* without a context,
which supersedes every version its coordinating replica holds (deleting
means "remove what is there"; a concurrent write it has not seen survives).
Siblings are bounded by :attr:`KVConfig.max_siblings` and tombstones that
lost to a newer value are dropped (:func:`peer_ring.apps.kv._state.compact`).
``"lww"`` collapses every state to its last-writer-wins sibling on write
and on merge. A callable ``merge(values: list[bytes]) -> bytes`` is applied
on read to the visible siblings (a concurrent delete does not hide a value: add wins); it must be
deterministic and be the same on every node.

*Expiry and garbage collection.* Every replica runs a sweep task every
:attr:`KVConfig.sweep_interval` seconds (started on first use, cancelled by
:meth:`KVStore.close`) that drops states whose siblings are all expired
values or tombstones older than :attr:`KVConfig.tombstone_grace`. Expiry is
absolute wall time, so replicas decide independently and alike. Tombstones
should be dropped only once all replicas hold them; this store does not
verify that -- it *assumes* replicas have converged (via write fan-out, read
repair and anti-entropy) within the grace period. A replica that was away
for longer than the grace can resurrect a deleted value: keep the grace
above the longest outage you tolerate.

Invariants:

* Replica handlers never await the network except ``coord_put`` (which
  returns a coroutine); all others return plain values (the fast path).
* Only keys whose state was *mortal* when stored (a tombstone, an expiry,
  or no sibling: :func:`peer_ring.apps.kv._state.mortal`) are in
  ``_mortal[partition]``; the sweep visits those alone, so its cost is
  O(expiring or deleted keys), not O(keys held). A key in the set whose state
  became immortal is removed from it by the next sweep.
* Local state is ``{partition: {key: stored}}`` with ``stored`` a tuple
  (``_state.pack``: a flat 4-tuple for the common one-value state, the
  DVVSet entries otherwise; no per-key objects beyond tuples); a partition
  can be exported or dropped wholesale.
* Every join is a DVVSet sync: merging is idempotent, commutative and
  associative, so repeated, late or reordered ``merge`` / ``import_records``
  are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv._state import EMPTY, Entries, Item, Stored, pack, unpack
from peer_ring.apps.kv.api import Entry, Limits
from peer_ring.apps.kv.local import compile_glob
from peer_ring.errors import (
    ClosedError,
    ConfigError,
    ConnectionLost,
    InvalidRequest,
    PeerRingError,
    PeerUnavailable,
    QuorumNotReached,
    TransportError,
    UnknownCommand,
)
from peer_ring.replication import versions as vv
from peer_ring.replication.coordinator import QuorumResult, Round, RoundListener
from peer_ring.replication.hlc import HLC, SkewPolicy
from peer_ring.replication.merkle import DEFAULT_DEPTH, DigestIndex
from peer_ring.service import Record, Request, Service

if TYPE_CHECKING:
    from peer_ring.clock import Clock
    from peer_ring.node import Node

__all__ = ["KVConfig", "KVStore", "MergeFunction", "Versions"]

#: A user conflict resolver: the visible sibling values -> one value.
MergeFunction = Callable[[list[bytes]], bytes]

_MODES: Final = ("siblings", "lww")
_SCAN_FIRST_BATCH: Final = 8
_SCAN_MAX_BATCH: Final = 256
#: Keys a digest-index refresh handles per loop pass (~0.1-0.3 ms unchanged,
#: a few ms when all changed).
_DIGEST_SLICE: Final = 1024
#: Keys kept in cached digest indexes, over all partitions (see ``_index``).
_DIGEST_CACHE_KEYS: Final = 65_536


@dataclass(frozen=True, slots=True)
class KVConfig:
    """Per-namespace settings of a :class:`KVStore`; use the same on every node.

    conflicts: ``"siblings"`` (default), ``"lww"`` or a merge function; see
        the module docstring.
    limits: key and value size limits (bytes); larger ones raise
        :class:`~peer_ring.errors.InvalidRequest`.
    read_quorum / write_quorum: default R and W; ``None`` takes the node's
        ``ReplicationConfig``. R + W > N gives read-your-writes.
    timeout: default deadline (seconds) of one operation; ``None`` takes the
        transport's request timeout.
    sweep_interval: seconds between two sweeps of expired values and old
        tombstones. A sweep visits only keys stored with an expiry or a
        tombstone (not every key held) and yields to the loop between
        partitions.
    tombstone_grace: seconds a tombstone is kept before the sweep drops it;
        assumed long enough for every replica to have received it (see the
        module docstring). Longer costs memory for deleted keys.
    read_repair: after a read, send the joined state to replicas whose
        answer was stale.
    prune: when old clock entries are pruned from a key's version vector.
    max_siblings: most siblings a key keeps (``None``: unbounded); beyond it
        the oldest by HLC stamp are dropped (a bounded form of LWW: every
        blind write -- no context -- adds a sibling, so a key written blindly
        over and over would otherwise grow without bound). Tombstones that
        are not the newest sibling are always dropped.
    """

    conflicts: str | MergeFunction = "siblings"
    limits: Limits = field(default_factory=Limits)
    read_quorum: int | None = None
    write_quorum: int | None = None
    timeout: float | None = None
    sweep_interval: float = 1.0
    tombstone_grace: float = 300.0
    read_repair: bool = True
    prune: vv.PruneConfig = field(default_factory=vv.PruneConfig)
    max_siblings: int | None = 16

    def __post_init__(self) -> None:
        if isinstance(self.conflicts, str):
            if self.conflicts not in _MODES:
                raise ConfigError(
                    f"KVConfig.conflicts must be 'siblings', 'lww' or a merge function, "
                    f"got {self.conflicts!r}"
                )
        elif not callable(self.conflicts):
            raise ConfigError("KVConfig.conflicts must be a mode name or a callable")
        for name in ("read_quorum", "write_quorum"):
            q = getattr(self, name)
            if q is not None and q < 1:
                raise ConfigError(f"KVConfig.{name} must be >= 1, got {q}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"KVConfig.timeout must be > 0 seconds, got {self.timeout}")
        if not self.sweep_interval > 0:
            raise ConfigError(f"KVConfig.sweep_interval must be > 0, got {self.sweep_interval}")
        if not self.tombstone_grace >= 0:
            raise ConfigError(f"KVConfig.tombstone_grace must be >= 0, got {self.tombstone_grace}")
        if self.max_siblings is not None and self.max_siblings < 1:
            raise ConfigError(f"KVConfig.max_siblings must be >= 1, got {self.max_siblings}")
        if self.limits.max_key_size < 1 or self.limits.max_value_size < 0:
            raise ConfigError("KVConfig.limits must allow keys of at least 1 byte")


@dataclass(frozen=True, slots=True)
class Versions:
    """Every visible sibling of a key, newest (by HLC stamp) first.

    ``values[i]`` expires at ``expires_at[i]`` (``None``: never). ``context``
    covers all of them (and any deleted or expired sibling): a write with it
    replaces them all. Empty ``values`` means the key is missing.
    """

    values: tuple[bytes, ...]
    expires_at: tuple[float | None, ...]
    context: bytes


class KVStore(Service):
    """Replicated key-value store; see the module docstring.

    Register on a node before use: ``kv = node.register(KVStore())``. Every
    node that serves the namespace must register a ``KVStore`` with the same
    ``namespace`` and an equivalent ``config``. ``clock`` (default: the
    node's) decides expiry, tombstone age, stamps and the sweep period; tests
    inject a :class:`~peer_ring.clock.ManualClock` here.
    """

    #: Replica reads: never sent to fallbacks.
    read_commands = frozenset({"get"})
    #: Refused by a freshly started replica until it synced (reads, and
    #: coordinating a write, whose new version must extend the current state).
    fresh_refused_commands = frozenset({"get", "coord_put"})

    def __init__(
        self, namespace: str = "kv", config: KVConfig | None = None, *, clock: Clock | None = None
    ) -> None:
        if not namespace:
            raise ConfigError("KVStore needs a non-empty namespace")
        self.namespace = namespace
        self.config = config if config is not None else KVConfig()
        conflicts = self.config.conflicts
        self._lww = conflicts == "lww"
        self._merge_fn: MergeFunction | None = None if isinstance(conflicts, str) else conflicts
        self._parts: dict[int, dict[bytes, Stored]] = {}
        #: keys the sweep must look at, by partition (see the invariants)
        self._mortal: dict[int, set[bytes]] = {}
        #: per-partition digests and Merkle leaves, refreshed lazily (``digest_index``)
        self._digests: dict[int, DigestIndex] = {}
        #: keys per refresh slice, keys in all cached indexes (tests lower them)
        self.digest_slice = _DIGEST_SLICE
        self.digest_cache_keys = _DIGEST_CACHE_KEYS
        self._node: Node | None = None
        self._own_clock = clock
        self._hlc: HLC | None = None
        self._actor = ""
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._background: set[asyncio.Future[Any]] = set()
        #: Statistics: states dropped by sweeps, read repairs sent.
        self.swept = 0
        self.repairs = 0

    # -- lifecycle ----------------------------------------------------------
    def attach(self, node: Node) -> None:
        """Called by ``node.register``: remember the node, pick this data life's actor."""
        if self._node is not None:
            raise ConfigError("a KVStore can be registered on one node only")
        self._node = node
        self._hlc = HLC(self._clock(), policy=SkewPolicy.ACCEPT)
        self._actor = f"{node.id}.{os.urandom(4).hex()}"

    @property
    def node(self) -> Node:
        if self._node is None:
            raise ClosedError("KVStore is not registered on a node")
        return self._node

    @property
    def actor(self) -> str:
        """The DVV actor id this replica issues dots under (node id + data life)."""
        return self._actor

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def _clock(self) -> Clock:
        return self._own_clock if self._own_clock is not None else self.node.clock

    def _ensure_started(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def close(self) -> None:
        """Stop the sweep task (called by ``node.stop``). Data stays in memory."""
        self._closed = True
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fut in list(self._background):
            fut.cancel()

    # -- replica side: commands -------------------------------------------
    def handle(self, request: Request) -> Any:
        """Replica commands (from coordinators on any node).

        ``get`` -> state or nil; ``merge`` state -> bool (a visible value was
        there before); ``coord_put`` [value, expires_at, context, n, w,
        timeout] -> bool (a future); ``scan`` [partitions, match] -> keys;
        ``count`` partitions -> int; ``flush`` -> int; ``sweep`` -> int.
        """
        command = request.command
        if command == "get":
            part = self._parts.get(request.partition)
            if part is None:
                return None
            stored = part.get(request.key)
            return None if stored is None else unpack(stored)
        if command == "merge":
            return self._merge(request.partition, request.key, request.payload)
        if command == "coord_put":
            return self._coord_put(request.partition, request.key, request.payload)
        if command == "scan":
            return self._scan_local(request.payload)
        if command == "count":
            return self._count_local(request.payload)
        if command == "flush":
            return self._flush_local()
        if command == "sweep":
            return self.sweep()
        raise UnknownCommand(f"kv has no replica command {command!r}")

    def _part(self, partition: int) -> dict[bytes, Stored]:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = {}
        return part

    def _store(
        self, partition: int, part: dict[bytes, Stored], key: bytes, entries: Entries
    ) -> None:
        part[key] = pack(entries)
        if st.mortal(entries):
            cands = self._mortal.get(partition)
            if cands is None:
                cands = self._mortal[partition] = set()
            cands.add(key)

    def _join(self, a: Entries, b: Entries) -> Entries:
        sa, sb = vv.DVVSet(a), vv.DVVSet(b)
        if vv.supersedes(sb, sa):  # a newer write of the key (replicated puts): no join
            return self._compact(b)
        return self._compact(vv.sync(sa, sb).entries)

    def _compact(self, entries: Entries) -> Entries:
        if len(entries) == 1 and len(entries[0][2]) == 1:
            return entries  # one version: nothing to collapse or drop (the common case)
        if self._lww:
            return vv.lww(vv.DVVSet(entries), st.stamp_of).entries
        return st.compact(entries, self.config.max_siblings)

    def _is_live(self, entries: Entries, now: float) -> bool:
        if self._merge_fn is not None:
            return bool(st.visible_items(entries, now))
        return st.live_item(entries, now) is not None

    def _merge(self, partition: int, key: bytes, payload: Any) -> bool:
        self._ensure_started()
        part = self._part(partition)
        stored = part.get(key)
        current = EMPTY if stored is None else unpack(stored)
        if type(payload) is tuple and payload == current:  # e.g. our own fan-out
            return False
        existed = self._is_live(current, self._clock().time())
        self._join_into(partition, part, key, current, st.decode_entries(payload))
        return existed

    def _join_into(
        self,
        partition: int,
        part: dict[bytes, Stored],
        key: bytes,
        current: Entries,
        incoming: Entries,
    ) -> bool:
        """Join ``incoming`` into the key's ``current`` state; store and say if it changed."""
        merged = self._join(current, incoming) if current else self._compact(incoming)
        if merged == current:
            return False
        self._store(partition, part, key, merged)
        return True

    def _coord_put(self, partition: int, key: bytes, payload: Any) -> Any:
        """``coord_put`` from another node: validate the wire payload, then write."""
        self._ensure_started()
        if type(payload) is not list or len(payload) != 6:
            raise InvalidRequest("coord_put takes [value, expires_at, context, n, w, timeout]")
        value, exp, ctx_raw, n, w, timeout = payload
        if value is not None:
            self._check_value(value)
        if exp is not None:
            exp = _expiry_float(exp)
        if ctx_raw is not None and type(ctx_raw) is not bytes:
            raise InvalidRequest("context must be bytes")
        if n is not None and (type(n) is not int or n < 1):
            raise InvalidRequest("n must be a positive integer")
        if type(w) is not int or w < 1:
            raise InvalidRequest("w must be a positive integer")
        if timeout is not None and (type(timeout) not in (int, float) or not timeout > 0):
            raise InvalidRequest("timeout must be a positive number of seconds")
        ctx = vv.decode_context(ctx_raw) if ctx_raw else None
        # A future, not a coroutine: the transport answers when it resolves,
        # without a task per forwarded write.
        existed, entries = self._issue(partition, key, value, exp, ctx)
        fut: asyncio.Future[bool] = self.node.coordinator.running_loop().create_future()
        self._merge_round(partition, key, entries, n, w, timeout, partial(_written, fut, existed))
        return fut

    def _issue(
        self,
        partition: int,
        key: bytes,
        value: bytes | None,
        exp: float | None,
        ctx: vv.Context | None,
        want_existed: bool = True,
    ) -> tuple[bool, Entries]:
        """Store the new version on this replica; return (a live value was
        there, the new state to replicate). With ``want_existed=False`` (a
        plain SET, whose reply does not say) the first is not computed: False."""
        part = self._part(partition)
        stored = part.get(key)
        current = EMPTY if stored is None else unpack(stored)
        if value is None and ctx is None:  # a blind delete removes what this replica holds
            ctx = vv.context(vv.DVVSet(current))
        hlc = self._hlc
        assert hlc is not None
        existed = want_existed and self._is_live(current, self._clock().time())
        top = st.max_stamp(current)
        stamp = hlc.update_int(top) if top >= hlc.last_int() else hlc.now_int()
        item: Item = (value, exp, stamp)
        if self._lww and ctx is None:
            # stamp > every sibling's stamp (the HLC saw `top`): the new item
            # wins outright; one pass instead of update + collapse
            new = vv.lww_put(vv.DVVSet(current), item, self._actor, stamp)
            entries = vv.prune(new, stamp, self.config.prune).entries
        else:
            new = vv.update(vv.DVVSet(current), ctx, item, self._actor, stamp=stamp)
            new = vv.prune(new, stamp, self.config.prune)
            entries = self._compact(new.entries)
        self._store(partition, part, key, entries)
        return existed, entries

    def _merge_round(
        self,
        partition: int,
        key: bytes,
        entries: Entries,
        n: int | None,
        w: int,
        timeout: float | None,
        listener: RoundListener,
    ) -> Round:
        """Replicate the version this (coordinating) replica just stored: a
        ``merge`` round to the key's replicas, this one counted as applied,
        told to ``listener`` (``_write`` awaits the same round through
        ``Coordinator.run``, which adds the W=1 backpressure)."""
        return self.node.coordinator.start(
            self.namespace,
            key,
            "merge",
            entries,
            quorum=w,
            n=n,
            timeout=timeout,
            partition=partition,
            applied=True,
            listener=listener,
        )

    def _scan_local(self, payload: Any) -> list[bytes]:
        if type(payload) is not list or len(payload) != 2:
            raise InvalidRequest("scan takes [partitions, match]")
        parts, match = payload
        if type(parts) is not list or (match is not None and type(match) is not bytes):
            raise InvalidRequest("scan takes a list of partitions and a bytes pattern or nil")
        matcher = compile_glob(match).fullmatch if match is not None else None
        now = self._clock().time()
        keys: list[bytes] = []
        for p in parts:
            part = self._parts.get(p)
            if not part:
                continue
            for key, stored in part.items():
                if self._is_live(unpack(stored), now) and (
                    matcher is None or matcher(key) is not None
                ):
                    keys.append(key)
        return keys

    def _count_local(self, payload: Any) -> int:
        if type(payload) is not list:
            raise InvalidRequest("count takes a list of partitions")
        now = self._clock().time()
        total = 0
        for p in payload:
            part = self._parts.get(p)
            if part:
                total += sum(1 for s in part.values() if self._is_live(unpack(s), now))
        return total

    def _flush_local(self) -> int:
        dropped = sum(len(p) for p in self._parts.values())
        self._parts.clear()
        self._mortal.clear()
        return dropped

    # -- replica side: maintenance ------------------------------------------
    def sweep(self) -> int:
        """Drop expired states and tombstones older than the grace, now; return how many.

        Visits only keys with an expiry or a tombstone; the background task does
        the same in slices. Call it
        from tests after advancing a ManualClock.
        """
        now = self._clock().time()
        dropped = 0
        for partition in list(self._mortal):
            dropped += self._sweep_partition(partition, now)
        self.swept += dropped
        return dropped

    def _sweep_partition(self, partition: int, now: float) -> int:
        """Drop the reclaimable states among ``partition``'s mortal keys; forget the rest."""
        cands = self._mortal.get(partition)
        part = self._parts.get(partition)
        if not cands or part is None:
            self._mortal.pop(partition, None)
            return 0
        grace = self.config.tombstone_grace
        dropped = 0
        for key in list(cands):
            stored = part.get(key)
            if stored is None:
                cands.discard(key)
                continue
            entries = unpack(stored)
            if not st.mortal(entries):
                cands.discard(key)
            elif st.reclaimable(entries, now, grace):
                del part[key]
                cands.discard(key)
                dropped += 1
        if not cands:
            del self._mortal[partition]
        return dropped

    async def _sweep_loop(self) -> None:
        clock = self._clock()
        while True:
            await clock.sleep(self.config.sweep_interval)
            for partition in list(self._mortal):
                # one partition per slice, synchronously: nothing changes under it
                self.swept += self._sweep_partition(partition, clock.time())
                await asyncio.sleep(0)

    # -- data movement hooks ---------------------------------------------------
    def export_partition(self, partition: int) -> Iterator[Record]:
        """Every ``(key, state)`` of ``partition`` (states are msgpack-encodable tuples)."""
        part = self._parts.get(partition)
        if not part:
            return iter(())
        # a snapshot of the dict (one C-level copy), unpacked lazily as the
        # transfer pulls chunks: no partition-sized unpack in one loop pass
        return ((key, unpack(stored)) for key, stored in list(part.items()))

    def snapshot(self, partition: int) -> dict[bytes, Any]:
        """``key -> stored state`` of ``partition`` (a shallow copy: states are
        immutable and replaced on change, so an unchanged key keeps its object)."""
        part = self._parts.get(partition)
        return dict(part) if part else {}

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        """Join each record's state into ``partition`` (DVVSet sync); count changed keys."""
        part = self._part(partition)
        changed = 0
        for key, state in records:
            if type(key) is not bytes:
                raise InvalidRequest("record keys must be bytes")
            stored = part.get(key)
            current = EMPTY if stored is None else unpack(stored)
            changed += self._join_into(partition, part, key, current, st.decode_entries(state))
        return changed

    def digest(self, partition: int) -> dict[bytes, bytes]:
        """``key -> 8-byte xxh3 of the msgpack state`` for ``partition``.

        Served from the partition's :class:`DigestIndex`, refreshed here in one
        go (only keys whose stored state changed since are re-hashed).
        """
        part = self._parts.get(partition)
        if not part:
            return {}
        index = self._digests.get(partition) or self._index(partition, DEFAULT_DEPTH)
        index.refresh(part, _stored_digest)
        self._trim_indexes(partition)
        return index.digest()

    async def digest_index(self, partition: int, depth: int) -> DigestIndex:
        """The partition's digests and Merkle leaves, refreshed in slices.

        The index keeps each key's stored state object with its digest; stored
        states are immutable tuples replaced on every change, so a key whose
        state is the same object keeps its digest (no unpack, no msgpack, no
        hash). Writes landing during the refresh's yields are picked up by the
        next refresh. ``drop_partition`` discards the index.
        """
        part = self._parts.get(partition)
        if not part:
            self._digests.pop(partition, None)
            return _empty_index(depth)
        index = self._index(partition, depth)
        keys = list(part)  # the keys to visit; the dict may change while we yield
        step = self.digest_slice
        for i in range(0, len(keys), step):
            if i:
                await asyncio.sleep(0)
                part = self._parts.get(partition) or {}
            # each slice indexes the states stored *now*, never those of an older
            # snapshot: two overlapping refreshes cannot roll the index back
            current = []
            for key in keys[i : i + step]:
                stored = part.get(key)
                if stored is None:
                    index.discard(key)
                else:
                    current.append((key, stored))
            index.refresh_slice(current, _stored_digest)
        index.drop_missing(self._parts.get(partition) or {})
        self._trim_indexes(partition)
        return index

    def _index(self, partition: int, depth: int) -> DigestIndex:
        """The partition's cached index (a new one if none or another depth).

        The cache is bounded: an index costs ~180 bytes per key (state
        reference, digest, dict slot), as much again as the store itself, so
        only the most recently used indexes are kept, up to
        ``digest_cache_keys`` keys in all (anti-entropy visits a few
        partitions per second; a partition it comes back to long after is
        re-hashed, in slices).
        """
        digests = self._digests
        index = digests.pop(partition, None)
        if index is None or index.depth != depth:
            index = DigestIndex(depth)
        digests[partition] = index  # most recently used last
        return index

    def _trim_indexes(self, keep: int) -> None:
        """Evict least recently used indexes beyond the cache bound (never ``keep``)."""
        digests = self._digests
        total = sum(len(ix) for ix in digests.values())
        for old in list(digests):
            if total <= self.digest_cache_keys:
                break
            if old != keep:
                total -= len(digests.pop(old))

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self._parts.get(partition)
        if not part:
            return []
        out: list[Record] = []
        for key in keys:
            stored = part.get(key)
            if stored is not None:
                out.append((key, unpack(stored)))
        return out

    def drop_partition(self, partition: int) -> int:
        part = self._parts.pop(partition, None)
        self._mortal.pop(partition, None)
        self._digests.pop(partition, None)
        return 0 if part is None else len(part)

    def partition_size(self, partition: int) -> int:
        part = self._parts.get(partition)
        return 0 if part is None else len(part)

    def local_state(self, key: bytes | str) -> Entries | None:
        """This replica's raw state of ``key`` (tests and debugging)."""
        k = self._key(key)
        part = self._parts.get(self.node.ring.partition_for(k))
        stored = None if part is None else part.get(k)
        return None if stored is None else unpack(stored)

    def __len__(self) -> int:
        """States held on this replica (tombstones and expired ones included)."""
        return sum(len(p) for p in self._parts.values())

    # -- validation -------------------------------------------------------------
    def _key(self, key: Any) -> bytes:
        return _to_bytes(key, "key", self.config.limits.max_key_size)

    def _check_value(self, value: Any) -> bytes:
        return _to_bytes(value, "value", self.config.limits.max_value_size)

    def _expiry(self, ttl: float | None, expires_at: float | None) -> float | None:
        if ttl is not None:
            if expires_at is not None:
                raise InvalidRequest("ttl and expires_at are exclusive")
            if type(ttl) not in (int, float) or not ttl > 0:
                raise InvalidRequest(f"ttl must be > 0 seconds, got {ttl!r}")
            return self._clock().time() + ttl
        if expires_at is None:
            return None
        return _expiry_float(expires_at)

    @staticmethod
    def _context(context: bytes | None) -> bytes | None:
        if context is None or context == b"":
            return None
        if not isinstance(context, bytes | bytearray | memoryview):
            raise InvalidRequest(f"context must be bytes, not {type(context).__name__}")
        return bytes(context)  # decoded once, by whichever replica coordinates

    def _read_quorum(self, r: int | None) -> int:
        return self._quorum(r, self.config.read_quorum, "read")

    def _write_quorum(self, w: int | None) -> int:
        return self._quorum(w, self.config.write_quorum, "write")

    def _quorum(self, given: int | None, own: int | None, what: str) -> int:
        """The call's quorum, else this store's, else the node's."""
        rep = self.node.config.replication
        q = given if given is not None else own
        if q is None:
            q = rep.read_quorum if what == "read" else rep.write_quorum
        if type(q) is not int or q < 1:
            raise InvalidRequest(f"{what} quorum must be a positive integer, got {q!r}")
        return q

    # -- client side: reads -------------------------------------------------------
    async def _read(self, key: bytes, r: int | None, timeout: float | None) -> Entries:
        memo: dict[int, Entries] = {}
        rnd = self._start_read(key, r, timeout, memo, None)
        assert rnd.done is not None
        return self._merged(await rnd.done, memo)

    def _start_read(
        self,
        key: bytes,
        r: int | None,
        timeout: float | None,
        memo: dict[int, Entries],
        listener: RoundListener | None,
    ) -> Round:
        """Start the read round; ``memo`` collects decoded answers by object
        id, shared with the read-repair callback (each answer decoded once)."""
        node = self.node
        self._ensure_started()
        partition = node.ring.partition_for(key)
        on_complete = (
            partial(self._read_repair, key, partition, memo) if self.config.read_repair else None
        )
        return node.coordinator.start(
            self.namespace,
            key,
            "get",
            None,
            quorum=self._read_quorum(r),
            timeout=timeout if timeout is not None else self.config.timeout,
            partition=partition,
            on_complete=on_complete,
            listener=listener,
        )

    def _merged(self, result: QuorumResult, memo: dict[int, Entries]) -> Entries:
        """The join of the quorum's answers."""
        merged: Entries = EMPTY
        for _, answer in result.acks:
            other = memo[id(answer)] = st.decode_entries(answer)
            if other != merged:
                merged = self._join(merged, other) if merged else other
        return merged

    # -- callback forms: the network surfaces' hot path -----------------------------
    def start_get(
        self, key: bytes, done: Callable[[bytes | None, BaseException | None], None]
    ) -> None:
        """:meth:`get` with the store's R and timeout, in callback form.

        ``done(value, None)`` or ``done(None, error)`` is called exactly once on
        the event loop, possibly before this returns. No task or future per
        call: the quorum round tells ``done`` from the answer that decides it.
        ``done`` must not raise.
        """
        memo: dict[int, Entries] = {}
        try:
            self._start_read(self._key(key), None, None, memo, partial(self._got, memo, done))
        except Exception as exc:
            done(None, exc)

    def _got(
        self,
        memo: dict[int, Entries],
        done: Callable[[bytes | None, BaseException | None], None],
        result: QuorumResult | None,
        exc: BaseException | None,
    ) -> None:
        if result is None:
            done(None, exc)
            return
        try:
            entries = self._merged(result, memo)
            got = self._resolve(entries, self._clock().time()) if entries else None
        except Exception as err:
            done(None, err)
            return
        done(None if got is None else got[0], None)

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        """:meth:`put` (no TTL, no context, the store's W) in callback form.

        ``done(None, None)`` once W replicas acknowledged, ``done(None, error)``
        otherwise; called exactly once on the event loop, possibly before this
        returns; must not raise. Coordinated here when this node is a replica
        of the key (the common case), else through :meth:`put`.
        """
        try:
            k = self._key(key)
            v = self._check_value(value)
            node = self.node
            self._ensure_started()
            quorum = self._write_quorum(None)
            partition = node.ring.partition_for(k)
            local = node.id in node.coordinator.targets(partition) and not node.bootstrap.active
            if local:
                _, entries = self._issue(partition, k, v, None, None, want_existed=False)
                self._merge_round(
                    partition,
                    k,
                    entries,
                    None,
                    quorum,
                    self.config.timeout,
                    partial(_put_done, done),
                )
                return
            task = asyncio.ensure_future(self.put(k, v))
        except Exception as exc:
            done(None, exc)
            return
        self._background.add(task)
        task.add_done_callback(partial(self._put_task_done, done))

    def _put_task_done(
        self, done: Callable[[None, BaseException | None], None], task: asyncio.Future[Any]
    ) -> None:
        self._background.discard(task)
        if task.cancelled():
            done(None, asyncio.CancelledError())
        else:
            done(None, task.exception())

    def _read_repair(
        self, key: bytes, partition: int, memo: dict[int, Entries], result: QuorumResult
    ) -> None:
        if self._closed:
            return
        answers = result.answers
        if len(answers) < 2:
            return
        states: list[tuple[str, Entries]] = []
        for nid, answer in answers:
            decoded = memo.get(id(answer))
            if decoded is None:
                try:
                    decoded = st.decode_entries(answer)
                except InvalidRequest:
                    return
            states.append((nid, decoded))
        merged = states[0][1]
        for _, s in states[1:]:
            if s != merged:
                merged = self._join(merged, s) if merged else s
        if not merged:
            return
        node = self.node
        for nid, s in states:
            if s == merged:
                continue
            self.repairs += 1
            if nid == node.id:
                self._merge(partition, key, merged)
                continue
            try:
                address = node.address_of(nid)
            except PeerRingError:
                continue
            fut = node.transport.request_future(
                address, ["s", self.namespace, "merge", key, partition, merged, node.id]
            )
            self._background.add(fut)
            fut.add_done_callback(self._forget)

    def _forget(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled():
            fut.exception()  # read repair is best effort: failures are expected

    def _resolve(self, entries: Entries, now: float) -> tuple[bytes, float | None] | None:
        if self._merge_fn is not None:
            items = st.visible_items(entries, now)
            if not items:
                return None
            if len(items) == 1:
                return items[0][0], items[0][1]  # type: ignore[return-value]
            values: list[bytes] = [i[0] for i in items]  # type: ignore[misc]
            merged = self._merge_fn(values)
            exps = [i[1] for i in items]
            exp = None if any(e is None for e in exps) else max(e for e in exps if e is not None)
            return merged, exp
        item = st.live_item(entries, now)
        if item is None:
            return None
        return item[0], item[1]  # type: ignore[return-value]

    async def get(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> bytes | None:
        """The live value of ``key`` or ``None`` (missing, deleted or expired).

        With concurrent siblings: the newest by HLC stamp (``"siblings"``
        and ``"lww"`` modes) or the merge function's result.
        """
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        if not entries:
            return None
        got = self._resolve(entries, self._clock().time())
        return None if got is None else got[0]

    async def get_entry(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> Entry | None:
        """Value, expiry and causal context of ``key``, or ``None``."""
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        if not entries:
            return None
        got = self._resolve(entries, self._clock().time())
        if got is None:
            return None
        ctx = vv.encode_context(vv.context(vv.DVVSet(entries)))
        return Entry(got[0], got[1], ctx)

    async def get_versions(
        self, key: bytes | str, *, r: int | None = None, timeout: float | None = None
    ) -> Versions:
        """All visible siblings of ``key`` and the context that covers them."""
        k = self._key(key)
        entries = await self._read(k, r, timeout)
        items = st.visible_items(entries, self._clock().time())
        ctx = vv.encode_context(vv.context(vv.DVVSet(entries))) if entries else b""
        return Versions(
            tuple(i[0] for i in items),  # type: ignore[misc]
            tuple(i[1] for i in items),
            ctx,
        )

    async def get_many(
        self, keys: Sequence[bytes | str], *, r: int | None = None, timeout: float | None = None
    ) -> list[bytes | None]:
        """Values of ``keys`` in order (``None`` where missing); reads run concurrently."""
        ks = [self._key(k) for k in keys]
        if not ks:
            return []
        return list(await asyncio.gather(*(self.get(k, r=r, timeout=timeout) for k in ks)))

    async def get_json(self, key: bytes | str, **kw: Any) -> Any:
        """``json.loads`` of the value of ``key``; ``None`` when missing."""
        raw = await self.get(key, **kw)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise InvalidRequest(f"value of {key!r:.80} is not JSON: {exc}") from exc

    # -- client side: writes ------------------------------------------------------
    async def _write(
        self,
        key: bytes,
        value: bytes | None,
        expires_at: float | None,
        context: bytes | None,
        n: int | None,
        w: int | None,
        timeout: float | None,
    ) -> bool:
        node = self.node
        self._ensure_started()
        if n is not None and (type(n) is not int or n < 1):
            raise InvalidRequest(f"n must be a positive integer, got {n!r}")
        quorum = self._write_quorum(w)
        if timeout is None:
            timeout = self.config.timeout
        partition = node.ring.partition_for(key)
        targets = node.coordinator.targets(partition, n)
        me = node.id
        if me in targets and not node.bootstrap.active:
            ctx = vv.decode_context(context) if context else None
            existed, entries = self._issue(partition, key, value, expires_at, ctx)
            result = await node.coordinator.run(
                self.namespace,
                key,
                "merge",
                entries,
                quorum=quorum,
                n=n,
                timeout=timeout,
                partition=partition,
                applied=True,
            )
            return existed or any(answer is True for _, answer in result.acks)
        if not targets:
            raise PeerUnavailable("the ring is empty")
        base = timeout if timeout is not None else node.config.transport_config.request_timeout
        outer = base * 1.5 + 0.05  # the remote quorum wait plus two hops
        payload = [value, expires_at, context, n, quorum, timeout]
        msg = ["s", self.namespace, "coord_put", key, partition, payload, me]
        # stable sort: keeps preference; a node still starting never coordinates
        ordered = sorted((t for t in targets if t != me), key=lambda t: not node.is_up(t))
        if not ordered:
            raise PeerUnavailable(f"{me} is still starting; retry in a moment")
        last: BaseException | None = None
        for target in ordered:
            try:
                address = node.address_of(target)
                answer = await node.transport.request(address, msg, outer)
            except ConnectionLost:
                raise  # it may have been applied there: another try would fork it
            except PeerUnavailable as exc:  # certainly not delivered: try the next one
                last = exc
                continue
            return answer is True
        assert last is not None
        raise QuorumNotReached(quorum, 0, message=f"no replica could coordinate the write: {last}")

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        context: bytes | None = None,
        n: int | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Store ``value`` on N replicas; return once W acknowledged.

        ``ttl`` (relative seconds) and ``expires_at`` (absolute wall-clock
        seconds) are exclusive. Without ``context`` the write is concurrent
        with whatever is stored (siblings, or LWW by stamp); with the context
        of a read it supersedes what that read saw.
        """
        k = self._key(key)
        v = self._check_value(value)
        exp = self._expiry(ttl, expires_at)
        await self._write(k, v, exp, self._context(context), n, w, timeout)

    async def put_json(self, key: bytes | str, obj: Any, **kw: Any) -> None:
        """:meth:`put` of ``json.dumps(obj)`` (UTF-8, compact separators)."""
        try:
            raw = json.dumps(obj, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"value is not JSON-serialisable: {exc}") from exc
        await self.put(key, raw, **kw)

    async def delete(
        self,
        key: bytes | str,
        *,
        context: bytes | None = None,
        n: int | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Write a tombstone for ``key``; True if an acknowledging replica held a live value."""
        k = self._key(key)
        return await self._write(k, None, None, self._context(context), n, w, timeout)

    async def put_many(
        self,
        items: Sequence[tuple[bytes, bytes]],
        *,
        ttl: float | None = None,
        w: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Store every item concurrently; raises the first failure (others may have applied)."""
        checked = [(self._key(k), self._check_value(v)) for k, v in items]
        exp = self._expiry(ttl, None)
        if not checked:
            return
        await asyncio.gather(*(self._write(k, v, exp, None, None, w, timeout) for k, v in checked))

    async def set_expiry(
        self, key: bytes | str, expires_at: float | None, *, context: bytes | None = None
    ) -> bool:
        """Rewrite the live value of ``key`` with a new expiry (``None``: persist).

        A read then a write with the read's context (or ``context``): not
        atomic under concurrent writers. False when the key is missing.
        """
        k = self._key(key)
        exp = None if expires_at is None else _expiry_float(expires_at)
        ctx = self._context(context)
        entry = await self.get_entry(k)
        if entry is None:
            return False
        await self._write(
            k, entry.value, exp, ctx if ctx is not None else entry.context, None, None, None
        )
        return True

    # -- client side: whole keyspace ----------------------------------------------
    async def _ask(self, node_id: str, command: str, payload: Any, timeout: float | None) -> Any:
        node = self.node
        if node_id == node.id:
            result = node.handle_local(self.namespace, command, b"", 0, payload, node_id)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        msg = ["s", self.namespace, command, b"", 0, payload, node.id]
        return await node.transport.request(node.address_of(node_id), msg, timeout)

    async def _ask_partitions(
        self,
        command: str,
        partitions: Sequence[int],
        make_payload: Callable[[list[int]], Any],
        initial: dict[str, list[int]] | None = None,
    ) -> list[Any]:
        """Ask one replica per partition (grouped by node); fail over to the next owner."""
        node = self.node
        ring = node.ring
        timeout = self.config.timeout
        failed: dict[str, BaseException] = {}
        results: list[Any] = []
        groups = initial
        pending = list(partitions)
        while pending:
            if groups is None:
                groups = {}
                for p in pending:
                    owners = [o for o in ring.preference_list(p) if o not in failed]
                    if not owners:
                        raise QuorumNotReached(
                            1,
                            0,
                            dict(failed),
                            message=f"no replica of partition {p} answered {command}",
                        )
                    choice = next((o for o in owners if node.is_up(o)), owners[0])
                    groups.setdefault(choice, []).append(p)
            names = list(groups)
            answers = await asyncio.gather(
                *(self._ask(nid, command, make_payload(groups[nid]), timeout) for nid in names),
                return_exceptions=True,
            )
            pending = []
            for nid, answer in zip(names, answers, strict=True):
                if isinstance(answer, TransportError):
                    failed[nid] = answer
                    pending.extend(groups[nid])
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    results.append(answer)
            groups = None
        return results

    async def scan(
        self, cursor: int, count: int = 10, match: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        """Iterate live keys across the cluster; the cursor is the next partition.

        Each call visits whole partitions (asking one live replica of each,
        batched per node) until about ``count`` keys were found. A key
        present for the whole iteration is returned at least once, provided
        the replica asked for its partition holds it (the first live replica
        coordinates every write, so it normally does).
        """
        if type(cursor) is not int or cursor < 0:
            raise InvalidRequest(f"invalid cursor {cursor!r}")
        if type(count) is not int or count < 1:
            raise InvalidRequest(f"count must be >= 1, got {count!r}")
        if match is not None and not isinstance(match, bytes):
            raise InvalidRequest("match must be bytes")
        self._ensure_started()
        total = self.node.ring.partitions
        if cursor >= total:
            return 0, []
        keys: list[bytes] = []
        batch = _SCAN_FIRST_BATCH
        p = cursor
        while p < total and len(keys) < count:
            parts = list(range(p, min(total, p + batch)))
            for found in await self._ask_partitions("scan", parts, lambda ps: [ps, match]):
                keys.extend(found)
            p = parts[-1] + 1
            batch = min(batch * 2, _SCAN_MAX_BATCH)
        return (p if p < total else 0), keys

    async def count(self) -> int:
        """Live keys in the cluster: the sum over a covering set of replicas.

        Approximate: each partition is counted on one replica, which may lag.
        """
        self._ensure_started()
        node = self.node
        ring = node.ring
        down = [m for m in ring.node_ids if not node.is_up(m)]
        cover = ring.covering_set(exclude=down)
        initial = {nid: list(parts) for nid, parts in cover.items() if parts}
        partitions = [p for parts in initial.values() for p in parts]
        counts = await self._ask_partitions("count", partitions, lambda ps: ps, initial)
        return sum(int(c) for c in counts)

    async def flush(self) -> None:
        """Drop every key on every node of the ring (no tombstones are left).

        Raises :class:`QuorumNotReached` when some node did not confirm: the
        others are flushed, and the missed node keeps (and may spread back)
        its data.
        """
        self._ensure_started()
        node = self.node
        ids = sorted(node.ring.node_ids) or [node.id]
        answers = await asyncio.gather(
            *(self._ask(nid, "flush", None, self.config.timeout) for nid in ids),
            return_exceptions=True,
        )
        errors = {
            nid: a for nid, a in zip(ids, answers, strict=True) if isinstance(a, BaseException)
        }
        if errors:
            raise QuorumNotReached(
                len(ids), len(ids) - len(errors), errors, message="flush did not reach every node"
            )


def _written(
    fut: asyncio.Future[bool],
    existed: bool,
    result: QuorumResult | None,
    exc: BaseException | None,
) -> None:
    if fut.done():
        return
    if result is None:
        fut.set_exception(exc if exc is not None else QuorumNotReached(1, 0))
    else:
        fut.set_result(existed or any(answer is True for _, answer in result.acks))


def _put_done(
    done: Callable[[None, BaseException | None], None],
    result: QuorumResult | None,
    exc: BaseException | None,
) -> None:
    done(None, exc)


def _to_bytes(obj: Any, what: str, limit: int) -> bytes:
    """``obj`` as bytes (str is encoded as UTF-8), at most ``limit`` long."""
    b: bytes
    if type(obj) is bytes:
        b = obj
    elif isinstance(obj, str):
        b = obj.encode()
    elif isinstance(obj, bytes | bytearray | memoryview):
        b = bytes(obj)
    else:
        raise InvalidRequest(f"{what} must be bytes or str, not {type(obj).__name__}")
    if len(b) > limit:
        raise InvalidRequest(f"{what} too large: {len(b)} bytes, the limit is {limit}")
    return b


def _expiry_float(expires_at: Any) -> float:
    if type(expires_at) is float:
        return expires_at
    if type(expires_at) is int:
        return float(expires_at)
    raise InvalidRequest(f"expires_at must be a number of seconds, not {expires_at!r:.40}")


def _stored_digest(stored: Stored) -> bytes:
    return st.digest(unpack(stored))


@functools.cache
def _empty_index(depth: int) -> DigestIndex:
    """The (shared, never refreshed) index of an empty partition."""
    return DigestIndex(depth)
