"""Causal versions of one key: dotted version vector sets.

Implements the *DVVSet* of Preguiça, Baquero, Almeida, Fonte and Gonçalves,
"Dotted Version Vectors: Logical Clocks for Optimistic Replication" (2010) and
Almeida, Baquero, Gonçalves, Preguiça, Fonte, "Scalable and Accurate Causality
Tracking for Eventually Consistent Stores" (DAIS 2014) -- the structure behind
riak_core's ``dvvset``. This is an independent implementation.

Model
-----
Every write gets a *dot* ``(actor, counter)``: the actor is the node that
coordinated it, the counter that actor's next event number for this key. A
state (:class:`DVVSet`) is a tuple of entries ``(actor, n, values)`` sorted by
actor, where

* ``n`` says: every dot ``(actor, 1..n)`` is in this state's causal history
  (it was seen);
* ``values`` (newest first) are the *live* siblings written with dots
  ``(actor, n), (actor, n-1), ..., (actor, n-len(values)+1)``; every other dot
  of that actor up to ``n`` was superseded.

The *context* of a state (:func:`context`) is its version vector
``((actor, n), ...)``: what a reader saw. A write carrying that context
supersedes exactly the siblings the reader saw and nothing else, because
siblings are identified by dots rather than by the whole clock of the
coordinator -- which is what rules out both lost updates and the false
concurrency (sibling explosion) of one vector-clock entry per server when a
single coordinator serves interleaved writers.

Invariants and laws (checked by ``tests/property/test_versions_props.py``):

* :func:`sync` is commutative, associative and idempotent on states reachable
  by :func:`update`/:func:`sync` (a join semilattice); a sibling survives a
  sync iff no side has seen its dot without keeping it.
* :func:`update` with the context of a read supersedes exactly the siblings
  that read returned (and what they superseded); without a context the new
  value becomes a sibling of everything present.
* A chain of writes each carrying the previous write's context never produces
  siblings, whichever actors coordinate them.
* :func:`descends` is a partial order on contexts; :func:`concurrent` is
  "neither descends".

Preconditions the caller (the replication coordinator) must keep:

* The ``actor`` of :func:`update` is the coordinating replica, and ``state``
  is that replica's own durable state for the key: an actor's dots must never
  be issued twice. If a node can lose its data (no fsync, wiped disk, or it
  coordinates for partitions it does not hold), give it an actor id that
  changes with each life of the data (e.g. ``f"{node_id}.{epoch}"``), as Riak
  does with vnode ids.
* ``stamp`` (the coordinator's hybrid-logical-clock time, packed with
  :func:`peer_ring.hlc.to_int`) must increase strictly per actor.
  Counters then never exceed the issuing stamp, and a dot created after its
  actor's entry was pruned is still larger than every earlier dot of that
  actor (see *Bounding*). ``stamp=0`` gives plain counters 1, 2, 3, ... (fine
  for tests; do not combine with :func:`prune`).

Bounding
--------
With DVVs there is one entry per *coordinating actor*, not per client, so the
entry count is bounded by the nodes that ever coordinated a write of the key:
normally the N replicas of its preference list, plus fallback nodes under a
sloppy quorum and former owners after membership changes. :func:`prune` (the
``small``/``big``/``young``/``old`` rule of Riak's vector clocks) removes the
oldest entries once there are more than ``small`` of them, but only entries
that hold **no live sibling**, so no write is ever dropped by pruning. What
pruning forgets is that some dots were *superseded*: if an unsynced replica
still holds such an old sibling, a later sync brings it back as a (false)
sibling that the next write with a context supersedes again. Pruning can thus
create false siblings but never silently lose a write. The age of an entry is
read from its counter, which is the stamp of the write that set it (or lags
it, when an actor's concurrent siblings were numbered consecutively: such
entries look older than they are, which only makes them prunable sooner).
The number of *siblings* is bounded only by true concurrency (writes without
a context); namespaces that cannot afford that should use :func:`lww`.

Last writer wins
----------------
:func:`lww_winner` orders siblings by ``(stamp_of(value), actor, counter)``.
Dots are unique, so the order is total and every replica picks the same
winner regardless of sibling order. :func:`lww` collapses a state to that
winner, keeping the clock, so the losers count as superseded everywhere the
collapsed state travels.

Tombstones
----------
A delete is an ordinary :func:`update` whose value is a tombstone marker the
caller chooses; this module never looks inside values. :func:`only_tombstones`
tells whether a state holds nothing else -- once every replica holds such a
state the store may drop the key altogether (the store decides when).

Client contexts
---------------
Contexts come from clients and are not authenticated. :func:`decode_context`
rejects malformed ones; a well-formed but forged context can at worst claim to
have seen more than it did, superseding siblings the client never read (as a
client that read everything would) and adding empty entries that
:func:`prune` later removes. It cannot corrupt the state: counters are capped
at :data:`MAX_COUNTER` and entries at :data:`MAX_CONTEXT_ENTRIES`. Sign
contexts in the store if clients are not trusted that far.

Representation
--------------
Plain tuples (actor ``str``, counter ``int``, values ``tuple``) for speed: every
KV get and put touches this module. Values are opaque. :func:`to_wire` gives
msgpack-friendly nested lists; :func:`encode_context` an opaque ``bytes``
context for clients, which :func:`decode_context` validates strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgpack

from peer_ring.errors import ConfigError, InvalidRequest
from peer_ring.hlc import LOGICAL_BITS

__all__ = [
    "EMPTY_CONTEXT",
    "MAX_ACTOR_LEN",
    "MAX_CONTEXT_BYTES",
    "MAX_CONTEXT_ENTRIES",
    "MAX_COUNTER",
    "Context",
    "DVVSet",
    "PruneConfig",
    "Sibling",
    "concurrent",
    "context",
    "decode_context",
    "descends",
    "empty",
    "encode_context",
    "equal",
    "from_wire",
    "lww",
    "lww_pick",
    "lww_winner",
    "merge_contexts",
    "new",
    "only_tombstones",
    "prune",
    "sibling_count",
    "siblings",
    "sync",
    "sync_all",
    "to_wire",
    "update",
    "values",
]

V = TypeVar("V")
W = TypeVar("W")

#: A version vector: ``((actor, counter), ...)`` sorted by actor, counters >= 1.
Context = tuple[tuple[str, int], ...]
#: One live value with its dot: ``(actor, counter, value)``.
Sibling = tuple[str, int, V]
_Entry = tuple[str, int, tuple[Any, ...]]

EMPTY_CONTEXT: Final[Context] = ()
#: Longest accepted actor id (node ids are at most 128 characters).
MAX_ACTOR_LEN: Final = 160
#: Largest counter accepted (fits a signed 64-bit integer). HLC stamps are
#: about 2**57 today, leaving room for 2**62 further events per actor.
MAX_COUNTER: Final = (1 << 63) - 1
#: Counters and stamps below this fit the compiled build's unboxed integers
#: (62 bits), where MAX_COUNTER is a boxed integer: the range checks compare
#: with MAX_COUNTER only at or above it (real stamps are about 2**57).
_SMALL: Final = 1 << 61
#: Most actor entries accepted in a client context. Real contexts have one
#: entry per coordinator of the key (see *Bounding*), far fewer than this.
MAX_CONTEXT_ENTRIES: Final = 256
#: Largest encoded context accepted from a client.
MAX_CONTEXT_BYTES: Final = 16 * 1024
_CONTEXT_VERSION: Final = 1


class DVVSet(Generic[V]):
    """The causal state of one key: clock entries plus live sibling values.

    Immutable by convention: every function returns a new state and never
    modifies its arguments. ``entries`` is ``((actor, n, (value, ...)), ...)``
    sorted by actor; see the module docstring for what it means. Equality
    (``==``) compares entries and values exactly; :func:`equal` compares the
    causal information only.
    """

    __slots__ = ("entries",)

    def __init__(self, entries: tuple[tuple[str, int, tuple[V, ...]], ...] = ()) -> None:
        self.entries = entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DVVSet):
            return NotImplemented
        return bool(self.entries == other.entries)

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"DVVSet({self.entries!r})"

    def __bool__(self) -> bool:
        return bool(self.entries)


def empty() -> DVVSet[Any]:
    """The state of a key nobody wrote: no history, no values."""
    return DVVSet(())


def new(value: V, actor: str, *, stamp: int = 0) -> DVVSet[V]:
    """A state holding one value written by ``actor`` with no causal past."""
    return DVVSet(((actor, stamp if stamp > 1 else 1, (value,)),))


# -- the two core operations --------------------------------------------------


def _merge_entry(
    n1: int, l1: tuple[Any, ...], n2: int, l2: tuple[Any, ...]
) -> tuple[int, tuple[Any, ...]]:
    # Live dots of the result: counters above n1-len(l1) (live on side 1) and,
    # when seen by side 2 (counter <= n2), live there too (above n2-len(l2)).
    if n1 >= n2:
        keep = n1 - n2 + len(l2)
        return n1, (l1 if keep >= len(l1) else l1[:keep])
    keep = n2 - n1 + len(l1)
    return n2, (l2 if keep >= len(l2) else l2[:keep])


def sync(a: DVVSet[V], b: DVVSet[V]) -> DVVSet[V]:
    """Merge two replicas' states of one key (the semilattice join).

    A sibling survives iff every side that has seen its dot still holds it.
    Commutative, associative and idempotent.
    """
    ea, eb = a.entries, b.entries
    if not ea:
        return b
    if not eb or ea is eb:
        return a
    out: list[tuple[str, int, tuple[V, ...]]] = []
    i = j = 0
    la, lb = len(ea), len(eb)
    while i < la and j < lb:
        x, y = ea[i], eb[j]
        if x[0] == y[0]:
            n, vals = _merge_entry(x[1], x[2], y[1], y[2])
            if n == x[1] and vals is x[2]:
                out.append(x)
            elif n == y[1] and vals is y[2]:
                out.append(y)
            else:
                out.append((x[0], n, vals))
            i += 1
            j += 1
        elif x[0] < y[0]:
            out.append(x)
            i += 1
        else:
            out.append(y)
            j += 1
    if i < la:
        out.extend(ea[i:])
    if j < lb:
        out.extend(eb[j:])
    return DVVSet(tuple(out))


def supersedes(a: DVVSet[V], b: DVVSet[V]) -> bool:
    """True when ``sync(a, b) == a``, decided without building the join: ``a``
    has seen every dot of ``b``, and every live sibling of ``a`` whose dot
    ``b`` has seen is live in ``b`` too. The common case of a replica
    receiving a newer write of a key it holds (a sufficient test, cheap
    enough for every replicated write; ``tests/property`` checks it)."""
    ea, eb = a.entries, b.entries
    i, la = 0, len(ea)
    for actor, n_b, vals_b in eb:
        while i < la and ea[i][0] < actor:
            i += 1  # an actor only `a` knows: `b` saw none of its dots
        if i == la or ea[i][0] != actor:
            return False  # `b` saw dots of an actor `a` never heard of
        n_a, vals_a = ea[i][1], ea[i][2]
        if n_a < n_b:
            return False
        # a's live dots run n_a - len + 1 .. n_a; those <= n_b must be live in b
        if (
            vals_a
            and n_a - len(vals_a) + 1 <= n_b
            and (not vals_b or n_a - len(vals_a) < n_b - len(vals_b))
        ):
            return False
        i += 1
    return True


def sync_all(states: Iterable[DVVSet[V]]) -> DVVSet[V]:
    """:func:`sync` of any number of states (the empty state for none)."""
    result: DVVSet[V] = DVVSet(())
    for s in states:
        result = sync(result, s)
    return result


def update(
    state: DVVSet[V],
    ctx: Context | None,
    value: V,
    actor: str,
    *,
    stamp: int = 0,
) -> DVVSet[V]:
    """Coordinator write: ``value`` supersedes what ``ctx`` saw in ``state``.

    ``state`` is the coordinating replica's local state (possibly empty),
    ``ctx`` the context the client read (``None`` or ``()`` for a blind
    write; it must be canonical, as :func:`context` and
    :func:`decode_context` return it), ``actor`` the coordinator's id and
    ``stamp`` its current HLC time as an integer (strictly increasing per
    actor; see the module docstring).
    Siblings of ``state`` whose dots ``ctx`` covers are dropped; the others
    remain as siblings of the new value. Replicate the result and
    :func:`sync` it into each replica's state. Raises :class:`InvalidRequest`
    if the actor's counter would pass :data:`MAX_COUNTER` (only a forged
    context can push it there).
    """
    if stamp >= _SMALL and stamp > MAX_COUNTER:
        raise InvalidRequest(f"stamp {stamp} exceeds the version counter range")
    entries = state.entries
    out: list[tuple[str, int, tuple[V, ...]]] = []
    if ctx:
        # sync(({ctx, []}), state): entries of ctx carry no values.
        i = j = 0
        le, lc = len(entries), len(ctx)
        while i < le and j < lc:
            e = entries[i]
            c_actor, c_n = ctx[j]
            if e[0] == c_actor:
                n = e[1]
                if c_n >= n:
                    out.append((c_actor, c_n, ()))
                else:
                    keep = n - c_n
                    vals = e[2]
                    out.append((c_actor, n, vals if keep >= len(vals) else vals[:keep]))
                i += 1
                j += 1
            elif e[0] < c_actor:
                out.append(e)
                i += 1
            else:
                out.append((c_actor, c_n, ()))
                j += 1
        if i < le:
            out.extend(entries[i:])
        while j < lc:
            c_actor, c_n = ctx[j]
            out.append((c_actor, c_n, ()))
            j += 1
    else:
        out.extend(entries)
    # The event: a new dot for `actor`.
    for k, e in enumerate(out):
        if e[0] == actor:
            n, vals = e[1], e[2]
            if vals:  # keep the live dots contiguous: n+1, n, n-1, ...
                if n >= _SMALL and n >= MAX_COUNTER:
                    raise InvalidRequest(f"version counter of {actor!r} exhausted")
                out[k] = (actor, n + 1, (value, *vals))
            else:
                if n >= _SMALL and n >= MAX_COUNTER:
                    raise InvalidRequest(f"version counter of {actor!r} exhausted")
                out[k] = (actor, stamp if stamp > n + 1 else n + 1, (value,))
            break
        if e[0] > actor:
            out.insert(k, (actor, stamp if stamp > 1 else 1, (value,)))
            break
    else:
        out.append((actor, stamp if stamp > 1 else 1, (value,)))
    return DVVSet(tuple(out))


def lww_put(state: DVVSet[V], value: V, actor: str, stamp: int) -> DVVSet[V]:
    """A blind write under last-writer-wins, in one pass: what
    ``lww(update(state, None, value, actor, stamp=stamp), stamp_of)`` returns
    when ``stamp_of(value) == stamp`` is greater than the stamp of every
    sibling in ``state`` -- which a coordinator's HLC guarantees for the
    value it issues. The new value is then the only sibling left; every
    other dot is kept as seen. (The KV store's hot path in LWW mode;
    ``tests/property/test_versions_props.py`` checks the equality.)
    """
    if stamp >= _SMALL and stamp > MAX_COUNTER:
        raise InvalidRequest(f"stamp {stamp} exceeds the version counter range")
    entries = state.entries
    if not entries:  # a new key
        return DVVSet(((actor, stamp if stamp > 1 else 1, (value,)),))
    if len(entries) == 1 and entries[0][0] == actor:  # a key only this actor wrote
        e = entries[0]
        n = e[1]
        if n >= _SMALL and n >= MAX_COUNTER:
            raise InvalidRequest(f"version counter of {actor!r} exhausted")
        return DVVSet(((actor, n + 1 if e[2] or stamp <= n + 1 else stamp, (value,)),))
    out: list[tuple[str, int, tuple[V, ...]]] = []
    placed = False
    for e in entries:
        a = e[0]
        if not placed and a >= actor:
            placed = True
            if a == actor:
                n = e[1]
                if n >= _SMALL and n >= MAX_COUNTER:
                    raise InvalidRequest(f"version counter of {actor!r} exhausted")
                # with live values the dots stay contiguous: n + 1; else jump to the stamp
                out.append((actor, n + 1 if e[2] or stamp <= n + 1 else stamp, (value,)))
                continue
            out.append((actor, stamp if stamp > 1 else 1, (value,)))
        out.append(e if not e[2] else (a, e[1], ()))
    if not placed:
        out.append((actor, stamp if stamp > 1 else 1, (value,)))
    return DVVSet(tuple(out))


# -- reading ------------------------------------------------------------------


def values(state: DVVSet[V]) -> list[V]:
    """The live sibling values (one unless writes were concurrent)."""
    return [v for e in state.entries for v in e[2]]


def siblings(state: DVVSet[V]) -> list[Sibling[V]]:
    """The live siblings with their dots: ``[(actor, counter, value), ...]``."""
    out: list[Sibling[V]] = []
    for actor, n, vals in state.entries:
        for k, v in enumerate(vals):
            out.append((actor, n - k, v))
    return out


def sibling_count(state: DVVSet[Any]) -> int:
    """Number of live siblings."""
    return sum(len(e[2]) for e in state.entries)


def context(state: DVVSet[Any]) -> Context:
    """The version vector of ``state``: what a reader of it has seen."""
    return tuple([(e[0], e[1]) for e in state.entries])


def merge_contexts(a: Context, b: Context) -> Context:
    """The least context that descends both (pointwise maximum)."""
    merged = dict(a)
    for actor, n in b:
        if merged.get(actor, 0) < n:
            merged[actor] = n
    return tuple(sorted(merged.items()))


def descends(a: Context, b: Context) -> bool:
    """True when ``a`` has seen everything ``b`` has (``a >= b``). Reflexive."""
    if not b:
        return True
    if len(a) < len(b):
        return False
    da = dict(a)
    return all(da.get(actor, 0) >= n for actor, n in b)


def concurrent(a: Context, b: Context) -> bool:
    """True when neither context descends the other."""
    return not descends(a, b) and not descends(b, a)


def equal(a: DVVSet[Any], b: DVVSet[Any]) -> bool:
    """Same causal history and same live dots (values are not compared).

    Dots are unique, so on states produced by this module equal dots imply
    equal values. Use it to tell whether a replica is stale (read repair).
    """
    ea, eb = a.entries, b.entries
    if len(ea) != len(eb):
        return False
    for x, y in zip(ea, eb, strict=True):
        if x[0] != y[0] or x[1] != y[1] or len(x[2]) != len(y[2]):
            return False
    return True


# -- tombstones, last writer wins ----------------------------------------------


def only_tombstones(state: DVVSet[V], is_tombstone: Callable[[V], bool]) -> bool:
    """True when every live sibling is a tombstone (vacuously for no siblings).

    Such a state may be garbage-collected once *all* replicas hold it; a
    replica that missed the delete would otherwise resurrect the value.
    """
    return all(is_tombstone(v) for e in state.entries for v in e[2])


def lww_pick(candidates: Iterable[Sibling[V]], stamp_of: Callable[[V], int]) -> Sibling[V] | None:
    """The sibling with the greatest ``(stamp_of(value), actor, counter)``.

    ``stamp_of`` returns the HLC timestamp (packed int) stored in a value;
    ``actor`` breaks ties between equal stamps and the counter between equal
    stamps of one actor. Dots are unique, so the order is total: every
    replica picks the same winner whatever the order of ``candidates``.
    ``None`` when there is no candidate.
    """
    best: Sibling[V] | None = None
    best_key: tuple[int, str, int] | None = None
    for sib in candidates:
        key = (stamp_of(sib[2]), sib[0], sib[1])
        if best_key is None or key > best_key:
            best_key, best = key, sib
    return best


def lww_winner(state: DVVSet[V], stamp_of: Callable[[V], int]) -> Sibling[V] | None:
    """:func:`lww_pick` over the siblings of ``state``."""
    return lww_pick(siblings(state), stamp_of)


def lww(state: DVVSet[V], stamp_of: Callable[[V], int]) -> DVVSet[V]:
    """Collapse ``state`` to its :func:`lww_winner`, keeping the whole clock.

    The losers become superseded (their dots stay seen), so replicas that
    collapse independently converge once they sync. When the winner is not
    the newest dot of its actor -- possible only if ``stamp_of`` does not grow
    with each actor's counters, e.g. stamps not taken from the coordinator's
    HLC -- the newer siblings of that actor are kept as well (dots must stay
    contiguous), so the state may keep more than one sibling.
    """
    entries = state.entries
    if sibling_count(state) <= 1:
        return state
    win = lww_winner(state, stamp_of)
    assert win is not None
    w_actor, w_n, _ = win
    out: list[tuple[str, int, tuple[V, ...]]] = []
    for actor, n, vals in entries:
        if actor == w_actor:
            out.append((actor, n, vals[: n - w_n + 1]))
        else:
            out.append((actor, n, ()))
    return DVVSet(tuple(out))


# -- bounding -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneConfig:
    """When :func:`prune` removes clock entries (Riak's vclock pruning rule).

    small: never prune a state with at most this many entries. Set it above
        the replication factor N so steady-state keys are never pruned.
    big: above this many entries, prune every eligible entry older than
        ``young`` until ``small`` remain.
    young: seconds; an entry updated more recently than this is never pruned
        (it may still be in flight to other replicas).
    old: seconds; with more than ``small`` entries, entries older than this
        are pruned.
    Only entries without live siblings are ever eligible.
    """

    small: int = 10
    big: int = 50
    young: float = 20.0
    old: float = 86_400.0

    def __post_init__(self) -> None:
        if self.small < 1:
            raise ConfigError(f"PruneConfig.small must be >= 1, got {self.small}")
        if self.big < self.small:
            raise ConfigError(f"PruneConfig.big ({self.big}) must be >= small ({self.small})")
        if not 0 <= self.young <= self.old:
            raise ConfigError(
                f"PruneConfig needs 0 <= young <= old, got young={self.young} old={self.old}"
            )


def prune(state: DVVSet[V], now: int, config: PruneConfig) -> DVVSet[V]:
    """Drop old clock entries that hold no live sibling (see *Bounding*).

    ``now`` is the local HLC time as a packed int. Entry ages are read from
    counters, so this is meaningful only for states written with stamps. At
    most ``max(small, entries with live siblings)`` entries remain once all
    eligible entries are older than ``young`` and either there are more than
    ``big`` entries or they are older than ``old``.
    """
    entries = state.entries
    if len(entries) <= config.small:
        return state
    now_ms = now >> LOGICAL_BITS
    young_ms = config.young * 1000.0
    old_ms = config.old * 1000.0
    candidates = sorted((n, actor) for actor, n, vals in entries if not vals)
    remaining = len(entries)
    dropped: set[str] = set()
    for n, actor in candidates:
        if remaining <= config.small:
            break
        age = now_ms - (n >> LOGICAL_BITS)
        if age < young_ms:
            break
        if remaining > config.big or age > old_ms:
            dropped.add(actor)
            remaining -= 1
        else:
            break
    if not dropped:
        return state
    return DVVSet(tuple(e for e in entries if e[0] not in dropped))


# -- encodings --------------------------------------------------------------------


def to_wire(state: DVVSet[V], encode_value: Callable[[V], Any] | None = None) -> list[list[Any]]:
    """``[[actor, n, [value, ...]], ...]`` for msgpack.

    Values go through ``encode_value`` when given, else as they are (they
    must then be msgpack-serialisable).
    """
    if encode_value is None:
        return [[a, n, list(vals)] for a, n, vals in state.entries]
    return [[a, n, [encode_value(v) for v in vals]] for a, n, vals in state.entries]


def _check_actor(actor: object) -> str:
    if type(actor) is not str or not 0 < len(actor) <= MAX_ACTOR_LEN:
        raise InvalidRequest(f"invalid actor id in version: {actor!r:.80}")
    return actor


def _check_counter(n: object) -> int:
    if type(n) is not int or (not 1 <= n < _SMALL and not 1 <= n <= MAX_COUNTER):
        raise InvalidRequest(f"invalid counter in version: {n!r:.80}")
    return n


def from_wire(obj: Any, decode_value: Callable[[Any], W] | None = None) -> DVVSet[Any]:
    """Inverse of :func:`to_wire`; validates the shape.

    Raises :class:`InvalidRequest` on anything malformed (wrong types,
    duplicate actors, more values than dots). Entries may arrive in any
    order. ``decode_value`` may raise InvalidRequest itself.
    """
    if not isinstance(obj, list | tuple):
        raise InvalidRequest(f"version must be a list, got {type(obj).__name__}")
    out: list[tuple[str, int, tuple[Any, ...]]] = []
    for item in obj:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise InvalidRequest(f"version entry must be [actor, counter, values]: {item!r:.80}")
        actor = _check_actor(item[0])
        n = _check_counter(item[1])
        vals = item[2]
        if not isinstance(vals, list | tuple):
            raise InvalidRequest("version entry values must be a list")
        if len(vals) > n:
            raise InvalidRequest(f"version entry {actor!r} has more values than dots")
        if decode_value is not None:
            vals = [decode_value(v) for v in vals]
        out.append((actor, n, tuple(vals)))
    out.sort(key=lambda e: e[0])
    for k in range(1, len(out)):
        if out[k][0] == out[k - 1][0]:
            raise InvalidRequest(f"duplicate actor {out[k][0]!r} in version")
    return DVVSet(tuple(out))


def encode_context(ctx: Context) -> bytes:
    """Opaque bytes for a client: a version byte then msgpack ``[a, n, a, n, ...]``."""
    flat: list[str | int] = []
    for actor, n in ctx:
        flat.append(actor)
        flat.append(n)
    packed: bytes = msgpack.packb(flat, use_bin_type=True)
    return bytes((_CONTEXT_VERSION,)) + packed


def decode_context(data: bytes | bytearray | memoryview) -> Context:
    """Parse a context made by :func:`encode_context`.

    The bytes come from clients: anything that is not exactly a valid
    encoding (wrong version byte, truncated, trailing data, wrong types,
    non-positive counters, duplicate actors, oversized) raises
    :class:`InvalidRequest`. The empty byte string is the empty context.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequest(f"causal context must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        return EMPTY_CONTEXT
    if len(raw) > MAX_CONTEXT_BYTES:
        raise InvalidRequest(f"causal context too large ({len(raw)} bytes)")
    if raw[0] != _CONTEXT_VERSION:
        raise InvalidRequest("unrecognised causal context (bad version byte)")
    try:
        flat = msgpack.unpackb(
            raw[1:],
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_ACTOR_LEN * 4,
            max_bin_len=0,
            max_array_len=MAX_CONTEXT_BYTES,
            max_map_len=0,
            max_ext_len=0,
        )
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise InvalidRequest(f"malformed causal context: {exc}") from exc
    if type(flat) is not list or len(flat) % 2:
        raise InvalidRequest("malformed causal context (not an actor/counter list)")
    if len(flat) > 2 * MAX_CONTEXT_ENTRIES:
        raise InvalidRequest(f"causal context has more than {MAX_CONTEXT_ENTRIES} entries")
    pairs = sorted(
        (_check_actor(flat[k]), _check_counter(flat[k + 1])) for k in range(0, len(flat), 2)
    )
    for k in range(1, len(pairs)):
        if pairs[k][0] == pairs[k - 1][0]:
            raise InvalidRequest("malformed causal context (duplicate actor)")
    return tuple(pairs)
