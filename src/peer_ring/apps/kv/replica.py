"""The replica side of the KV store: state, replica commands, data-movement hooks.

:class:`KVReplica` is what every node that serves the ``kv`` namespace runs
for the partitions it owns: it stores the keys, answers replica commands
from coordinators, coordinates the writes of keys it holds, and gives the
framework the hooks that move and reconcile its data. The client side -- the
embedded API over the whole cluster -- is
:class:`peer_ring.apps.kv.store.KVStore`, a subclass. Both reach the cluster
only through the :class:`~peer_ring.app.AppContext` given at registration
(``peer_ring.app``); neither imports the node or the replication internals.

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
import functools
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, cast

from peer_ring import versions as vv
from peer_ring.app import (
    HLC,
    AppContext,
    Clock,
    ClosedError,
    ConfigError,
    DigestIndex,
    InvalidRequest,
    Metric,
    OutOfMemory,
    QuorumNotReached,
    QuorumResult,
    Record,
    Request,
    RoundListener,
    Service,
    SkewPolicy,
    UnknownCommand,
)
from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv._memory import MemoryBudget
from peer_ring.apps.kv._state import EMPTY, Entries, Stored, pack, unpack
from peer_ring.apps.kv.api import Limits
from peer_ring.apps.kv.local import compile_glob
from peer_ring.merkle import DEFAULT_DEPTH

__all__ = ["PACKED", "REPLICATE", "KVConfig", "KVReplica", "MergeFunction"]

#: The replica command of a write's fan-out from its coordinating replica: a
#: ``merge`` that answers nil (no "a live value was there" for a reply that
#: does not carry it) and decodes the state in one pass (peer protocol 6).
REPLICATE: Final = "repl"

#: The payload of a ``get`` whose asker reads a state in its stored form
#: (``_state.pack``'s flat forms: one array on the wire instead of nested
#: ones; peer protocols 7 and 8), this node's own reads included (the stored
#: tuple itself): the KV store's quorum reads. Others (nil: probes, tools)
#: are answered ``Entries``.
PACKED: Final = 1

#: A tuple read field by field (built by ``cast(_Tuple, ...)``: packed as is).
_Tuple = tuple[Any, ...]

#: A user conflict resolver: the visible sibling values -> one value.
MergeFunction = Callable[[list[bytes]], bytes]

_MODES: Final = ("siblings", "lww")
#: Longest vector form (``_state.VECTOR_MAX`` entries) ``repl``'s fast path
#: takes, on the wire and stored; a longer one is stored as ``Entries``, as
#: ``pack`` would.
_VECTOR_WIRE_MAX: Final = 3 + 2 * st.VECTOR_MAX
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
    maxmemory: bytes of state this replica may hold before writes need room
        (0: no limit); ``maxmemory_policy`` says how room is made
        (``noeviction``, ``allkeys-lru``, ``volatile-ttl``) and
        ``maxmemory_samples`` how many keys volatile-ttl compares. See
        ``peer_ring.apps.kv._memory`` for what is counted and what is never
        refused.
    maxmemory_policy: what a write does above ``maxmemory``
        [``maxmemory-policy``]: ``noeviction`` refuses it with OutOfMemory
        (RESP ``-OOM``); ``allkeys-lru`` evicts the least recently used keys,
        ``volatile-ttl`` the keys with a TTL nearest to expiry, until it fits.
    maxmemory_samples: keys sampled per eviction by ``volatile-ttl``
        [``maxmemory-samples``].
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
    maxmemory: int = 0
    maxmemory_policy: str = "noeviction"
    maxmemory_samples: int = 5

    def __post_init__(self) -> None:
        MemoryBudget(self.maxmemory, self.maxmemory_policy, self.maxmemory_samples)  # validates
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


class KVReplica(Service):
    """The replica side of the replicated key-value store; see the module docstring.

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
        self._app: AppContext | None = None
        #: the clock in use: ``clock``, else the node's (set by ``attach``)
        self._time: Clock | None = clock
        #: this node's id (set by ``attach``; a node's id never changes)
        self._node_id = ""
        self._hlc: HLC | None = None
        self._actor = ""
        self._node_r = 0
        self._node_w = 0
        self._closed = False
        self._background: set[asyncio.Future[Any]] = set()
        #: Statistics: states dropped by sweeps, read repairs sent.
        self.swept = 0
        self.repairs = 0
        #: bytes held, maxmemory and eviction counts
        self.memory = MemoryBudget(
            self.config.maxmemory, self.config.maxmemory_policy, self.config.maxmemory_samples
        )

    # -- lifecycle ----------------------------------------------------------
    def attach(self, app: AppContext) -> None:
        """Called by ``node.register``: keep the app context, pick this data life's
        actor, start the sweep with the node and export the store's metrics."""
        if self._app is not None:
            raise ConfigError("a KVStore can be registered on one node only")
        self._app = app
        if self._time is None:
            self._time = app.clock
        self._hlc = HLC(self._time, policy=SkewPolicy.ACCEPT)
        self._node_id = app.node_id
        self._actor = f"{self._node_id}.{os.urandom(4).hex()}"
        # the node's id, clock and default R and W are immutable: read once,
        # not through the context on every operation
        self._node_r = app.read_quorum
        self._node_w = app.write_quorum
        app.spawn(self._sweep_loop, "sweep")
        app.add_metrics(self._metrics)

    @property
    def app(self) -> AppContext:
        """This store's handle on the cluster (set by ``node.register``)."""
        if self._app is None:
            raise ClosedError("KVStore is not registered on a node")
        return self._app

    def _metrics(self) -> list[Metric]:
        """States held on this node (live values, tombstones and expired ones not
        yet swept), read repairs sent, states dropped by the sweep."""
        return [
            Metric("keys", "gauge", "KV states held by this node (all partitions)", len(self)),
            Metric("read_repairs", "counter", "KV read repairs sent", self.repairs),
            Metric(
                "swept", "counter", "KV states dropped by the expiry/tombstone sweep", self.swept
            ),
            Metric("memory_used_bytes", "gauge", "KV state bytes held (maxmemory accounting)",
                   self.memory.used),
            Metric("evicted_keys", "counter", "KV keys evicted by the maxmemory policy",
                   self.memory.evicted),
            Metric("oom_rejections", "counter", "KV writes refused at maxmemory",
                   self.memory.oom_rejections),
        ]  # fmt: skip

    def status(self) -> dict[str, Any]:
        """States held here and their bytes, the maxmemory limit (0: none) and
        evictions (``peer-ring status``, the web console)."""
        memory = self.memory
        return {
            "keys": len(self),
            "memory_used_bytes": memory.used,
            "maxmemory": memory.maxmemory,
            "evicted_keys": memory.evicted,
        }

    @property
    def actor(self) -> str:
        """The DVV actor id this replica issues dots under (node id + data life)."""
        return self._actor

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def _clock(self) -> Clock:
        clock = self._time
        if clock is None:
            raise ClosedError("KVStore is not registered on a node")
        return clock

    async def close(self) -> None:
        """Called by ``node.stop`` (after the sweep task was cancelled with the
        node's other background tasks); cancels writes still being forwarded.
        Data stays in memory."""
        self._closed = True
        for fut in list(self._background):
            fut.cancel()

    # -- replica side: commands -------------------------------------------
    def handle(self, request: Request) -> Any:
        """Replica commands (from coordinators on any node).

        ``get`` -> state or nil (asked with :data:`PACKED`: in its stored
        form, flat when of one value); ``merge`` state -> bool (a visible value was
        there before); ``repl`` state -> nil (a write's new version from its
        coordinating replica, see :meth:`_replicate`); ``coord_put`` [value,
        expires_at, context, n, w, timeout(, want_existed)] -> bool (a future); ``scan``
        [partitions, match] -> keys; ``count`` partitions -> int; ``flush``
        -> int; ``sweep`` -> int; ``evict`` state -> bool (dropped: see :meth:`_make_room`).
        """
        command = request.command
        if command == REPLICATE:  # the hot write command: first
            return self._replicate(request.partition, request.key, request.payload)
        if command == "get":
            part = self._parts.get(request.partition)
            if part is None:
                return None
            stored = part.get(request.key)
            if stored is None:
                return None
            if self.memory.lru is not None:
                self.memory.touch(request.key, request.partition)
            if request.payload == PACKED:
                return stored  # a quorum read (a peer's, or this node's own): as stored
            return unpack(stored)
        if command == "merge":
            if self.memory.full and self.memory.refuses_merge() and _has_value(request.payload):
                self._make_room(request.key)
            return self._merge(request.partition, request.key, request.payload)
        if command == "coord_put":
            return self._coord_put(request.partition, request.key, request.payload)
        if command == "evict":
            return self._evicted(request.partition, request.key, request.payload)
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
        self,
        partition: int,
        part: dict[bytes, Stored],
        key: bytes,
        old: Stored | None,
        entries: Entries,
    ) -> None:
        """Store ``entries`` as ``key``'s state; ``old`` is what ``part`` holds
        for it now (None: nothing), looked up by the caller."""
        new = pack(entries)
        memory = self.memory
        memory.stored(key, old, new)
        part[key] = new
        if memory.lru is not None:
            if _has_value(entries):
                memory.touch(key, partition)
            else:
                memory.lru.pop(key, None)
        if st.mortal(entries):
            cands = self._mortal.get(partition)
            if cands is None:
                cands = self._mortal[partition] = set()
            cands.add(key)

    def _join(self, a: Entries, b: Entries) -> Entries:
        # b itself when it supersedes a (a newer write of the key: replicated puts)
        return st.join(a, b, self._lww, self.config.max_siblings)

    def _compact(self, entries: Entries) -> Entries:
        return st.settle(entries, self._lww, self.config.max_siblings)

    def _is_live(self, entries: Entries, now: float) -> bool:
        if self._merge_fn is not None:
            return bool(st.visible_items(entries, now))
        return st.live_item(entries, now) is not None

    def _merge(self, partition: int, key: bytes, payload: Any) -> bool:
        part = self._part(partition)
        stored = part.get(key)
        current = EMPTY if stored is None else unpack(stored)
        if type(payload) is tuple and payload == current:  # e.g. our own fan-out
            return False
        existed = self._is_live(current, self._clock().time())
        self._join_into(partition, part, key, stored, current, _decode_state(payload))
        return existed

    def _replicate(self, partition: int, key: bytes, payload: Any) -> None:
        """``repl``: join the version a coordinating replica just issued (a plain
        write's fan-out). A ``merge`` without its answer -- whether a live value
        was there, which a plain SET's reply does not carry, is not computed --
        and with the state decoded by :func:`_decode_state` (as ``merge`` does:
        one pass, no per-item calls).
        Joined, compacted and stored exactly as ``merge`` does."""
        memory = self.memory
        if memory.full and memory.refuses_merge() and _has_value(payload):
            self._make_room(key)
        if type(payload) is list:  # the common states, stored without Entries built
            wire: list[Any] = payload
            if len(wire) == 1:
                entry = wire[0]
                if type(entry) is list and len(entry) == 3:
                    fields: list[Any] = entry
                    vals = fields[2]
                    if type(vals) is list and len(vals) == 1:
                        item = vals[0]
                        if (
                            type(item) is list
                            and len(item) == 3
                            and self._replicate_version(
                                partition, key, fields[0], item[0], item[1], item[2], fields[1]
                            )
                        ):
                            return
            elif len(wire) == 4 or len(wire) == 5:
                if self._replicate_version(
                    partition, key, wire[0], wire[1], wire[2], wire[3], wire[-1]
                ):
                    return
            elif (
                7 <= len(wire) <= _VECTOR_WIRE_MAX
                and len(wire) & 1
                and self._replicate_vector(partition, key, wire)
            ):
                return  # the vector form (a longer one is stored as Entries, as pack would)
        incoming = _decode_state(payload)
        part = self._part(partition)
        stored = part.get(key)
        if stored is None:
            if incoming:
                self._store(partition, part, key, None, self._compact(incoming))
            return
        self._join_into(partition, part, key, stored, unpack(stored), incoming)

    def _replicate_version(
        self,
        partition: int,
        key: bytes,
        actor: Any,
        value: Any,
        exp: Any,
        stamp_obj: Any,
        n_obj: Any,
    ) -> bool:
        """``repl`` of a state of one version -- ``actor``'s dot ``n_obj``
        holding the item ``(value, exp, stamp_obj)``, as the wire decoded it --
        when the key holds nothing or one version of the same actor with a
        counter not above ``n_obj`` (a newer write of the key's coordinator,
        or the same one again): stored in its packed form (``_state.pack``)
        straight from the wire fields, with no ``Entries`` decoded or joined.
        That is what the general path stores: ``incoming`` supersedes such a
        state, and a one-version state settles to itself. False, with nothing
        done, for any other case or an unusual field (an int expiry, a value
        out of range...): the general path decides, or raises its error."""
        if not _plain_version(actor, value, exp, stamp_obj, n_obj):
            return False
        n: int = n_obj
        stamp: int = stamp_obj
        parts = self._parts
        part = parts.get(partition)
        if part is None:
            part = parts[partition] = {}
        old = part.get(key)
        name: Any = actor
        same_dot = False
        if old is None:
            if not actor or len(actor) > vv.MAX_ACTOR_LEN:
                return False
            name = _interned(actor)
        else:
            s: tuple[Any, ...] = old
            name = s[0] if s else None
            if type(name) is not str or name != actor or len(s) > 5:
                return False  # Entries, another actor's version or several: join them
            current: int = s[3] if len(s) == 4 else s[4]
            if n < current:
                return False  # an older write than ours: join them
            same_dot = n == current
        new: tuple[Any, ...]
        if stamp == n:  # the counter is the stamp (an actor's first write): one int object
            new = cast(_Tuple, (name, value, exp, n_obj))
        else:
            new = cast(_Tuple, (name, value, exp, stamp_obj, n_obj))
        if same_dot and new == old:
            return True  # the same version again (a retry, a repair): unchanged
        self._keep_flat(partition, part, key, old, new, value, exp)
        return True

    def _replicate_vector(self, partition: int, key: bytes, wire: list[Any]) -> bool:
        """``repl`` of a state in the vector form (``_state.pack``: one value,
        ``wire[0]``'s, and other actors' counters, as the wire decoded it) when
        the key holds nothing or a flat state (any of ``pack``'s forms) that it
        supersedes -- a newer write of the key, the replicated LWW put of a key
        several coordinators wrote: stored as the wire has it, with no
        ``Entries`` decoded, joined or packed. That is what the general path
        stores: ``join`` answers the incoming state itself when it supersedes
        the stored one, and a state of one value settles to itself. False,
        with nothing done, for any other case or an unusual field (unsorted
        actors, an int expiry, a value out of range...): the general path
        decides, or raises its error.

        One pass over the wire's actors checks them, finds each among the
        stored state's (whose actor id object it reuses: interned, with no
        hash of the new string) and tests ``_state.supersedes`` on the way:
        every stored actor is among the wire's with a counter no larger, and
        the wire's value is not a dot the stored state counts but no longer
        holds."""
        actor = wire[0]
        value = wire[1]
        exp = wire[2]
        stamp_obj = wire[3]
        n_obj = wire[4]
        if not _plain_version(actor, value, exp, stamp_obj, n_obj):
            return False
        if not actor or len(actor) > vv.MAX_ACTOR_LEN:
            return False
        n: int = n_obj
        parts = self._parts
        part = parts.get(partition)
        if part is None:
            part = parts[partition] = {}
        old = part.get(key)
        s: tuple[Any, ...] = ()
        if old is not None:
            s = old
            if not s or type(s[0]) is not str:
                return False  # Entries (siblings, dots only): join them
        b_size = len(s)
        b_head: str = s[0] if b_size else ""
        matched = 0
        changed = old is None  # certainly not the stored state again
        out: list[Any] = [actor, value, exp, stamp_obj, n_obj]
        size = len(wire)
        last = ""
        k = 0
        while True:
            a: str
            c_obj: Any
            c: int
            first = k == 0
            if first:  # the value's actor first (checked above)
                a = actor
                c_obj = n_obj
                c = n
                k = 5
            elif k < size:
                a_obj = wire[k]
                c_obj = wire[k + 1]
                k += 2
                if type(a_obj) is not str or type(c_obj) is not int:
                    return False
                a = a_obj
                c = c_obj
                if not last < a or a == actor or len(a) > vv.MAX_ACTOR_LEN or c < 1 or c >> 63:
                    return False  # unsorted, repeated, too long or out of range
                last = a
            else:
                break
            name: Any = None
            if b_size:
                n_b = -1
                if a == b_head:
                    name = b_head
                    n_b = s[3] if b_size == 4 else s[4]
                else:
                    j = 5
                    while j < b_size:
                        x: str = s[j]
                        if a == x:
                            name = x
                            n_b = s[j + 1]
                            break
                        j += 2
                    if name is not None and first and n_b == n:
                        return False  # the stored state saw our value and holds another
                if name is not None:
                    matched += 1
                    if c < n_b:
                        return False  # the stored state saw a dot we have not
                    if c > n_b:
                        changed = True
                else:
                    changed = True
            if name is None:
                name = _interned(a)
            if first:
                out[0] = name
            else:
                out.append(name)
                out.append(c_obj)
        if matched != (1 if b_size < 7 else (b_size - 3) >> 1) and b_size:
            return False  # the stored state has an actor the wire has not seen
        new: tuple[Any, ...] = tuple(out)
        if not changed and new == old:
            return True  # the same state again (a retry, a repair): unchanged
        self._keep_flat(partition, part, key, old, new, value, exp)
        return True

    def _keep_flat(
        self,
        partition: int,
        part: dict[bytes, Stored],
        key: bytes,
        old: Stored | None,
        new: tuple[Any, ...],
        value: Any,
        exp: Any,
    ) -> None:
        """Store the flat state ``new`` of one value (``value``, expiring at
        ``exp``) over ``old``: memory, LRU and sweep bookkeeping as ``_store``."""
        memory = self.memory
        memory.stored(key, old, new)
        part[key] = new
        lru = memory.lru
        if lru is not None:
            if value is not None:
                memory.touch(key, partition)
            else:
                lru.pop(key, None)
        if value is None or exp is not None:  # _state.mortal of one value
            cands = self._mortal.get(partition)
            if cands is None:
                cands = self._mortal[partition] = set()
            cands.add(key)

    def _join_into(
        self,
        partition: int,
        part: dict[bytes, Stored],
        key: bytes,
        stored: Stored | None,
        current: Entries,
        incoming: Entries,
    ) -> bool:
        """Join ``incoming`` into the key's ``current`` state (``stored``: its
        stored form, None for none); store and say if it changed."""
        merged = self._join(current, incoming) if current else self._compact(incoming)
        if merged == current:
            return False
        self._store(partition, part, key, stored, merged)
        return True

    def _coord_put(self, partition: int, key: bytes, payload: Any) -> Any:
        """``coord_put`` from another node: validate the wire payload, then write.
        A seventh field ``False`` (protocol 8): the writer does not ask whether
        a value existed -- a plain put, replicated with ``repl`` in its packed
        form (its answer is then False)."""
        if type(payload) is not list or not 6 <= len(payload) <= 7:
            raise InvalidRequest(
                "coord_put takes [value, expires_at, context, n, w, timeout(, want_existed)]"
            )
        want_existed = True
        if len(payload) == 7:
            flag = payload[6]
            if type(flag) is not bool:
                raise InvalidRequest("coord_put's want_existed must be a bool")
            want_existed = flag or payload[0] is None  # a delete always says
        value, exp, ctx_raw, n, w, timeout = payload[:6]
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
        existed, entries = self._issue(partition, key, value, exp, ctx, want_existed)
        fut: asyncio.Future[bool] = self.app.create_future()
        listener = partial(_written, fut, existed)
        if want_existed:
            self._merge_round(partition, key, entries, n, w, timeout, listener)
        else:  # replicated as a plain write is: repl, the state packed
            self._merge_round(partition, key, pack(entries), n, w, timeout, listener, REPLICATE)
        return fut

    def _issue(
        self,
        partition: int,
        key: bytes,
        value: bytes | None,
        exp: float | None,
        ctx: vv.Context | None,
        want_existed: bool = True,
    ) -> tuple[bool, Stored]:
        """Store the new version on this replica; return (a live value was
        there, the new state to replicate). With ``want_existed=False`` (a
        plain SET, whose reply does not say) the first is not computed: False;
        and a plain LWW put's state comes in the flat form it is stored in
        (``_state.pack``'s, as ``repl`` sends it), any other as ``Entries``."""
        if value is not None and self.memory.full:
            self._make_room(key)
        part = self._part(partition)
        stored = part.get(key)
        if ctx is None and not want_existed and self._lww and value is not None:
            # a plain LWW put over a flat state: built from its fields, stored
            # and replicated in that form (st.issue_packed, equal to the below)
            s: tuple[Any, ...] = EMPTY if stored is None else stored
            if not s or type(s[0]) is str:
                hlc = self._hlc
                assert hlc is not None
                new: Stored | None
                if not s:
                    new = st.issue_flat(None, value, exp, hlc.after_int(0), self._actor)
                else:
                    new = st.issue_packed(
                        s, value, exp, hlc.after_int(s[3]), self._actor, self.config.prune.small
                    )
                if new is not None:
                    self._keep_flat(partition, part, key, stored, new, value, exp)
                    return False, new
        current = EMPTY if stored is None else unpack(stored)
        if value is None and ctx is None:  # a blind delete removes what this replica holds
            ctx = st.context(current)
        hlc = self._hlc
        assert hlc is not None
        existed = want_existed and self._is_live(current, self._clock().time())
        # a stamp above every sibling's (the HLC sees the largest): with LWW
        # the new item wins outright. update (or lww_put) + prune + compaction
        # in one pass on the tuples (st.issue, equal to the versions path)
        stamp = hlc.after_int(st.max_stamp(current))
        config = self.config
        entries = st.issue(
            current, ctx, value, exp, stamp, self._actor, self._lww, config.max_siblings,
            config.prune,
        )  # fmt: skip
        self._store(partition, part, key, stored, entries)
        return existed, entries

    def _make_room(self, key: bytes) -> None:
        """At maxmemory, before a write of ``key``: evict by the policy until the
        budget has room, or raise OutOfMemory (noeviction, nothing evictable,
        or evictions that free too little). An eviction drops the victim here
        and sends ``evict`` with the dropped state to the key's other replicas
        (W=1, in the background: a cache decision, not a client's write)."""
        memory = self.memory
        if memory.policy != "noeviction":
            for _ in range(_EVICT_PER_WRITE):
                victim = self._victim(key)
                if victim is None:
                    break
                partition, vkey = victim
                entries = self._drop(partition, vkey)
                if entries is None:
                    continue
                self.app.start_quorum(
                    "evict", vkey, entries, quorum=1, partition=partition, applied=True,
                    listener=_ignore_round,
                )  # fmt: skip
                memory.evicted += 1
                if not memory.full:
                    return
        memory.oom_rejections += 1
        raise OutOfMemory(
            f"command not allowed when used memory > 'maxmemory' ({memory.used} of "
            f"{memory.maxmemory} bytes held, policy {memory.policy})"
        )

    def _drop(self, partition: int, key: bytes) -> Entries | None:
        """Remove ``key``'s state from this replica; return it (None if absent)."""
        part = self._parts.get(partition)
        stored = None if part is None else part.pop(key, None)
        if stored is None:
            return None
        self.memory.removed(key, stored)
        return unpack(stored)

    def _evicted(self, partition: int, key: bytes, payload: Any) -> bool:
        """``evict`` from the replica that evicted ``key``: drop this replica's
        state unless it holds a write the evicted state has not seen (a write
        that raced the eviction survives)."""
        part = self._parts.get(partition)
        stored = None if part is None else part.get(key)
        if stored is None:
            return False
        current = unpack(stored)
        evicted = st.decode_entries(payload)
        if current != evicted and not vv.supersedes(vv.DVVSet(evicted), vv.DVVSet(current)):
            return False
        return self._drop(partition, key) is not None

    def _victim(self, key: bytes) -> tuple[int, bytes] | None:
        """The next key to evict (never ``key`` itself), or None."""
        memory = self.memory
        lru = memory.lru
        if lru is not None:
            for vkey, partition in list(itertools.islice(lru.items(), _LRU_SCAN)):
                part = self._parts.get(partition)
                stored = None if part is None else part.get(vkey)
                if vkey == key:
                    continue
                del lru[vkey]
                if stored is not None and _has_value(unpack(stored)):
                    return partition, vkey
            return None
        # volatile-ttl: the soonest expiry among sampled live keys with a TTL
        now = self._clock().time()
        best: tuple[float, int, bytes] | None = None
        seen = 0
        for partition, cands in self._mortal.items():
            part = self._parts.get(partition)
            if part is None:
                continue
            for vkey in cands:
                stored = part.get(vkey)
                if stored is None or vkey == key:
                    continue
                item = st.live_item(unpack(stored), now)
                if item is None or item[0] is None or item[1] is None:
                    continue
                if best is None or item[1] < best[0]:
                    best = (item[1], partition, vkey)
                seen += 1
                if seen >= memory.samples:
                    return best[1], best[2]
        return None if best is None else (best[1], best[2])

    def _merge_round(
        self,
        partition: int,
        key: bytes,
        entries: Stored,
        n: int | None,
        w: int,
        timeout: float | None,
        listener: RoundListener,
        command: str = "merge",
    ) -> None:
        """Replicate the version this (coordinating) replica just stored: a
        ``merge`` (or ``command``) round to the key's replicas, this one counted as applied,
        told to ``listener`` (``KVStore._write`` awaits the same round through
        ``AppContext.quorum``, which adds the W=1 backpressure)."""
        self.app.start_quorum(
            command,
            key,
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
        self.memory.reset()
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
                self.memory.removed(key, stored)
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
            changed += self._join_into(partition, part, key, stored, current, _decode_state(state))
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
        if part is None:
            return 0
        for key, stored in part.items():
            self.memory.removed(key, stored)
        return len(part)

    def partition_size(self, partition: int) -> int:
        part = self._parts.get(partition)
        return 0 if part is None else len(part)

    def local_state(self, key: bytes | str) -> Entries | None:
        """This replica's raw state of ``key`` (tests and debugging)."""
        k = self._key(key)
        part = self._parts.get(self.app.partition_for(k))
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
        q = given if given is not None else own
        if q is None:
            q = self._node_r if what == "read" else self._node_w
            if q == 0:  # not attached yet: the context says (or raises ClosedError)
                q = self.app.read_quorum if what == "read" else self.app.write_quorum
        if type(q) is not int or q < 1:
            raise InvalidRequest(f"{what} quorum must be a positive integer, got {q!r}")
        return q


#: Most evictions one write may cause before it is refused instead.
_EVICT_PER_WRITE: Final = 64
#: Most LRU entries looked at to find one live key.
_LRU_SCAN: Final = 256


def _ignore_round(result: QuorumResult | None, exc: BaseException | None) -> None:
    """Eviction rounds are fire-and-forget: the tombstone is stored here already."""


def _has_value(payload: Any) -> bool:
    """A state (or a merge payload) carries at least one value, not only tombstones."""
    try:
        entries = _decode_state(payload)
    except InvalidRequest:
        return True  # let the merge itself reject it with its own error
    return any(item[0] is not None for _, _, items in entries for item in items)


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


def _decode_state(obj: Any) -> Entries:
    """A state from a peer (``repl``, ``merge``, a replica's ``get`` answer, a
    transferred record) -> ``Entries``: what :func:`_state.decode_entries`
    checks (types, counter and stamp ranges, actors sorted and distinct,
    actor ids interned), in one pass over the nested lists with no call per
    item and no sort -- replicas send their entries sorted. A state of any
    other shape (nil, unsorted, an int expiry, or invalid) is handed to
    ``decode_entries``, which decodes it or raises its error: the same
    result or error either way."""
    if type(obj) is tuple:  # this process's own (a hinted copy kept here), maybe packed
        return unpack(obj)
    if type(obj) is not list:
        return st.decode_entries(obj)
    if len(obj) == 1:  # the common state: one actor's entry of one value
        one = _decode_one(obj[0])
        if one is not None:
            return one
    elif obj and type(obj[0]) is str:
        if len(obj) == 4 or len(obj) == 5:
            return _decode_flat(obj)
        if len(obj) >= 7 and len(obj) & 1:
            return _decode_vector(obj)
    # lists of Any, tuples of the objects as decoded (``fields[1]``,
    # ``item[2]``: Any, where a name checked with ``type(x) is int`` is an int
    # to mypy): the compiled build packs them as they are, where as Entries'
    # (str, int, ...) tuples it would unbox and re-box each counter and stamp
    # (a new int object each)
    out: list[Any] = []
    last = ""
    for entry in obj:
        if type(entry) is not list or len(entry) != 3:
            return st.decode_entries(obj)
        fields: list[Any] = entry
        actor = fields[0]
        n_obj = fields[1]
        vals = fields[2]
        if type(actor) is not str or type(n_obj) is not int or type(vals) is not list:
            return st.decode_entries(obj)
        n: int = n_obj
        # ``x >> 63 == 0`` for ``x <= MAX_COUNTER``: no compare with a big constant
        if not last < actor or len(actor) > vv.MAX_ACTOR_LEN or n < 1 or n >> 63 or len(vals) > n:
            return st.decode_entries(obj)
        last = actor
        values: tuple[Any, ...] = ()  # no list for the common entries of none or one value
        if vals:
            items: list[Any] = []
            for v in vals:
                item = _decode_item(v, n, fields, not items)
                if item is None:
                    return st.decode_entries(obj)
                items.append(item)
            values = tuple(items)
        out.append((_interned(actor), fields[1], values))
    decoded: tuple[Any, ...] = tuple(out)
    return decoded


def _decode_flat(wire: list[Any]) -> Entries:
    """:func:`_decode_state` of a one-version state in its packed form
    (``_state.pack``: ``[actor, value, expires_at, n]`` when the item's stamp
    is the counter ``n``, else ``[actor, value, expires_at, stamp, n]``)."""
    actor = wire[0]
    n_obj = wire[-1]
    if type(actor) is str and type(n_obj) is int:
        n: int = n_obj
        if 0 < len(actor) <= vv.MAX_ACTOR_LEN and n > 0 and not n >> 63:
            fields = [actor, n_obj, None]
            item = _decode_item([wire[1], wire[2], wire[3]], n, fields, True)
            if item is not None:
                return cast(tuple[Any, ...], ((_interned(actor), n_obj, (item,)),))
    return st.decode_entries(wire)  # decoded the general way, or its error


def _plain_version(actor: Any, value: Any, exp: Any, stamp_obj: Any, n_obj: Any) -> bool:
    """Whether the fields of one version, as the wire decoded them, are of the
    usual types and ranges (``repl``'s fast paths; anything else goes the
    general way, which decodes it or raises its error)."""
    if type(actor) is not str or type(n_obj) is not int or type(stamp_obj) is not int:
        return False
    if (value is not None and type(value) is not bytes) or (
        exp is not None and type(exp) is not float
    ):
        return False
    n: int = n_obj
    stamp: int = stamp_obj
    # ``x >> 63 == 0`` for ``0 <= x <= MAX_COUNTER``: no compare with a big constant
    return not (n < 1 or n >> 63 or stamp < 0 or stamp >> 63)


def _decode_vector(wire: list[Any]) -> Entries:
    """:func:`_decode_state` of a state in the vector form (``_state.pack``:
    ``[actor, value, expires_at, stamp, n, actor2, n2, ...]``, the other
    actors in order): its ``Entries``, the value's entry in actor order."""
    actor = wire[0]
    n_obj = wire[4]
    if type(actor) is str and type(n_obj) is int:
        n: int = n_obj
        if 0 < len(actor) <= vv.MAX_ACTOR_LEN and n > 0 and not n >> 63:
            fields = [actor, n_obj, None]
            item = _decode_item([wire[1], wire[2], wire[3]], n, fields, False)
            if item is not None:
                mine = cast(tuple[Any, ...], (_interned(actor), n_obj, (item,)))
                out: list[Any] = []
                placed = False
                last = ""
                i = 5
                while i < len(wire):
                    a = wire[i]
                    c_obj = wire[i + 1]
                    if type(a) is not str or type(c_obj) is not int:
                        break
                    c: int = c_obj
                    # unsorted, repeated, too long or out of range: decode_entries says
                    if not last < a or a == actor or len(a) > vv.MAX_ACTOR_LEN or c < 1 or c >> 63:
                        break
                    last = a
                    if not placed and actor < a:
                        out.append(mine)
                        placed = True
                    out.append(cast(tuple[Any, ...], (_interned(a), c_obj, ())))
                    i += 2
                if i >= len(wire):
                    if not placed:
                        out.append(mine)
                    entries: tuple[Any, ...] = tuple(out)
                    return entries
    return st.decode_entries(wire)  # decoded the general way, or its error


def _decode_one(entry: Any) -> Entries | None:
    """:func:`_decode_state` of a state of one entry of one value, without its
    lists; None when ``entry`` is of another shape (the general loop decides)."""
    if type(entry) is not list or len(entry) != 3:
        return None
    fields: list[Any] = entry
    actor = fields[0]
    n_obj = fields[1]
    vals = fields[2]
    if type(actor) is not str or type(n_obj) is not int or type(vals) is not list:
        return None
    n: int = n_obj
    if not actor or len(actor) > vv.MAX_ACTOR_LEN or n < 1 or n >> 63 or len(vals) != 1:
        return None
    item = _decode_item(vals[0], n, fields, True)
    if item is None:
        return None
    return cast(tuple[Any, ...], ((_interned(actor), fields[1], (item,)),))


def _decode_item(v: Any, n: int, fields: list[Any], first: bool) -> tuple[Any, ...] | None:
    """One ``[value, expires_at, stamp]`` of the entry ``fields`` (counter
    ``n``) as a tuple of the decoded objects; None when it is not of the
    usual shape (``decode_entries`` then decodes it or raises)."""
    if type(v) is not list or len(v) != 3:
        return None
    item: list[Any] = v
    value = item[0]
    exp = item[1]
    stamp_obj = item[2]
    if (
        (value is not None and type(value) is not bytes)
        or (exp is not None and type(exp) is not float)
        or type(stamp_obj) is not int
    ):
        return None
    stamp: int = stamp_obj
    if stamp < 0 or stamp >> 63:
        return None
    if first and stamp == n:  # the common first value's stamp is the counter: one int object
        return (value, exp, fields[1])
    return (value, exp, item[2])


#: ``sys.intern`` bound once (a C static in the compiled build, not an
#: attribute lookup on ``sys`` per decoded entry)
_intern: Final = sys.intern

#: Actor ids seen in decoded states, interned: ``actor -> actor``. A lookup
#: here (the string's hash and one compare) costs a fraction of a
#: ``sys.intern`` call; bounded: actors churn only with node lives.
_ACTORS: Final[dict[str, str]] = {}
_MAX_ACTORS: Final = 4096


def _interned(actor: str) -> str:
    """``sys.intern(actor)``, through :data:`_ACTORS`."""
    cached = _ACTORS.get(actor)
    if cached is not None:
        return cached
    if len(_ACTORS) >= _MAX_ACTORS:
        _ACTORS.clear()
    actor = _intern(actor)
    _ACTORS[actor] = actor
    return actor


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
