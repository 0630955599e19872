"""Pure helpers for the per-key state of :class:`~peer_ring.apps.kv.store.KVStore`.

No I/O, no asyncio. The state of one key on one replica is the ``entries``
tuple of a :class:`~peer_ring.versions.DVVSet` (the ``DVVSet``
wrapper itself is not stored: one object less per key), whose opaque values
are *items*::

    item = (value, expires_at, stamp)

* ``value`` -- the bytes written, or ``None`` for a tombstone (a delete);
* ``expires_at`` -- absolute wall-clock seconds (``float``) or ``None``;
* ``stamp`` -- the coordinating replica's hybrid-logical-clock time (packed
  int) when the write was made: the last-writer-wins order and the age of a
  tombstone.

Invariants:

* An item is *visible* at wall time ``now`` iff it is not a tombstone and
  ``expires_at is None or now < expires_at``. Every replica evaluates this with
  its own clock against the same absolute instant, so they agree up to clock
  skew.
* The *resolved* item of a state is its last-writer-wins sibling (greatest
  ``(stamp, actor, counter)``, :func:`peer_ring.versions.lww_pick`)
  over **all** siblings, tombstones and expired ones included: a key reads as
  missing when its newest sibling is a delete or has expired, exactly as a
  single-copy store (:class:`~peer_ring.apps.kv.local.LocalKV`) would answer.
* States arriving from the network are validated by :func:`decode_entries`
  (bad shapes raise :class:`~peer_ring.errors.InvalidRequest`, never crash a
  handler); actor strings are interned so that a million keys written by the
  same three replicas share three actor strings.
"""

from __future__ import annotations

import sys
from typing import Any, Final, cast

import msgpack
import xxhash

from peer_ring import versions as vv
from peer_ring.app import InvalidRequest
from peer_ring.hlc import LOGICAL_BITS
from peer_ring.versions import MAX_ACTOR_LEN, MAX_COUNTER, Context, PruneConfig

#: ``(value | None, expires_at | None, stamp)``; ``None`` value = tombstone.
Item = tuple[bytes | None, float | None, int]
#: ``((actor, n, (item, ...)), ...)`` sorted by actor: a DVVSet's entries.
Entries = tuple[tuple[str, int, tuple[Item, ...]], ...]

EMPTY: Final[Entries] = ()

#: A tuple read field by field (see :func:`max_stamp`).
_Tuple = tuple[Any, ...]

#: Counters and stamps below this fit the compiled build's unboxed integers:
#: the range checks compare with MAX_COUNTER (a boxed integer there) only at
#: or above it (real stamps are about 2**57), as ``versions`` does.
_SMALL: Final = 1 << 61

_INTERNED: dict[str, str] = {}
_MAX_INTERNED: Final = 4096


def _actor(obj: object) -> str:
    if type(obj) is not str or not 0 < len(obj) <= MAX_ACTOR_LEN:
        raise InvalidRequest(f"invalid actor id in stored version: {obj!r:.80}")
    cached = _INTERNED.get(obj)
    if cached is not None:
        return cached
    if len(_INTERNED) >= _MAX_INTERNED:  # bounded: actors churn only with node lives
        _INTERNED.clear()
    obj = sys.intern(obj)
    _INTERNED[obj] = obj
    return obj


def _item(obj: object) -> Item:
    if type(obj) is tuple:  # produced locally
        return obj
    if type(obj) is not list or len(obj) != 3:
        raise InvalidRequest(f"stored value must be [value, expires_at, stamp]: {obj!r:.80}")
    value, exp, stamp = obj
    if value is not None and type(value) is not bytes:
        raise InvalidRequest("stored value must be bytes or nil (tombstone)")
    if exp is not None:
        if type(exp) is int:
            exp = float(exp)
        elif type(exp) is not float:
            raise InvalidRequest("stored expiry must be a float or nil")
    if type(stamp) is not int or not 0 <= stamp <= MAX_COUNTER:
        raise InvalidRequest("stored stamp must be an unsigned 64-bit integer")
    return (value, exp, stamp)


def decode_entries(obj: Any) -> Entries:
    """Validate a state received from a peer (nested lists) into ``Entries``.

    ``None`` is the empty state. A tuple is trusted as produced by this
    process (the coordinator's own replica answers without encoding). A
    state of one value may come in its packed form (:func:`pack`, as a
    list or a tuple): ``[actor, value, expires_at, n]`` or ``[actor, value,
    expires_at, stamp, n]`` (protocol 7), or the vector form ``[actor,
    value, expires_at, stamp, n, actor2, n2, ...]`` (protocol 8).
    """
    if obj is None:
        return EMPTY
    if type(obj) is tuple:
        return unpack(obj)
    if type(obj) is not list:
        raise InvalidRequest(f"stored state must be a list, got {type(obj).__name__}")
    if (len(obj) == 4 or len(obj) == 5) and type(obj[0]) is str:
        # the packed form of one version (see :func:`pack`): its entries
        obj = [[obj[0], obj[-1], [[obj[1], obj[2], obj[3]]]]]
    elif len(obj) >= 7 and len(obj) & 1 and type(obj[0]) is str:
        # the vector form (see :func:`pack`): the value's entry, then the others'
        wire = obj
        obj = [[wire[0], wire[4], [[wire[1], wire[2], wire[3]]]]]
        for i in range(5, len(wire), 2):
            obj.append([wire[i], wire[i + 1], []])
    out: list[tuple[str, int, tuple[Item, ...]]] = []
    for entry in obj:
        if type(entry) is not list or len(entry) != 3:
            raise InvalidRequest(f"version entry must be [actor, n, values]: {entry!r:.80}")
        actor = _actor(entry[0])
        n = entry[1]
        if type(n) is not int or not 1 <= n <= MAX_COUNTER:
            raise InvalidRequest(f"invalid counter in stored version: {n!r:.80}")
        vals = entry[2]
        if type(vals) is not list or len(vals) > n:
            raise InvalidRequest("version entry values must be a list no longer than its counter")
        items = tuple([_item(v) for v in vals])
        if items and items[0][2] == n:  # share one int object (the common first write)
            first = items[0]
            items = ((first[0], first[1], n), *items[1:])
        out.append((actor, n, items))
    out.sort(key=_first)
    for k in range(1, len(out)):
        if out[k][0] == out[k - 1][0]:
            raise InvalidRequest(f"duplicate actor {out[k][0]!r} in stored version")
    return tuple(out)


def _first(entry: tuple[str, int, tuple[Item, ...]]) -> str:
    return entry[0]


def stamp_of(item: Item) -> int:
    """The HLC stamp of an item (the last-writer-wins key)."""
    return item[2]


def resolved(entries: Entries) -> Item | None:
    """The last-writer-wins item over all siblings (``None`` for no sibling)."""
    best: Item | None = None
    best_key: tuple[int, str, int] | None = None
    for actor, n, vals in entries:
        for k, item in enumerate(vals):
            key = (item[2], actor, n - k)
            if best_key is None or key > best_key:
                best_key, best = key, item
    return best


def visible(item: Item, now: float) -> bool:
    """True when ``item`` is a value (not a tombstone) that has not expired at ``now``."""
    if item[0] is None:
        return False
    exp = item[1]
    return exp is None or now < exp


def live_item(entries: Entries, now: float) -> Item | None:
    """The resolved item if it is visible at ``now``, else ``None``."""
    if not entries:
        return None
    # the common case, one sibling, without the general resolution
    one = len(entries) == 1 and len(entries[0][2]) == 1
    item = entries[0][2][0] if one else resolved(entries)
    return item if item is not None and visible(item, now) else None


def live_value(stored: Stored, now: float) -> bytes | None:
    """The value of :func:`live_item` of ``unpack(stored)``, read in place when
    the state holds one version -- packed or not -- (no ``Entries`` built and
    no item tuple checked field by field to read it)."""
    s: Any = stored
    if not s:
        return None
    if type(s[0]) is str:  # packed: (actor, value, expires_at, n)
        value: Any = s[1]
        exp: Any = s[2]
    else:
        vals: Any = s[0][2] if len(s) == 1 else ()
        if len(vals) != 1:  # siblings: the general resolution
            item = live_item(stored, now)  # type: ignore[arg-type]
            return None if item is None else item[0]
        value = vals[0][0]  # the one sibling is the resolved item
        exp = vals[0][1]
    if value is None or (exp is not None and not now < exp):
        return None
    return value  # type: ignore[no-any-return]


def visible_items(entries: Entries, now: float) -> list[Item]:
    """Every visible sibling, newest (by stamp) first."""
    items = [item for _, _, vals in entries for item in vals if visible(item, now)]
    items.sort(key=stamp_of, reverse=True)
    return items


def reclaimable(entries: Entries, now: float, grace: float) -> bool:
    """True when the whole state may be dropped by the sweep at wall time ``now``.

    Every sibling must be either an expired value or a tombstone whose stamp
    is older than ``grace`` seconds. A state with no sibling at all (only
    history) is reclaimable too.
    """
    horizon_ms = int((now - grace) * 1000.0)
    for _, _, vals in entries:
        for value, exp, stamp in vals:
            if value is None:
                if (stamp >> LOGICAL_BITS) > horizon_ms:
                    return False
            elif exp is None or now < exp:
                return False
    return True


def mortal(entries: Entries) -> bool:
    """True when the state may *become* reclaimable (see :func:`reclaimable`).

    That is: some sibling is a tombstone or has an expiry, or there is no
    sibling at all. A state of live values without expiry never is, so the
    sweep does not need to look at it.
    """
    seen = False
    es: tuple[Any, ...] = entries
    for entry in es:
        e: tuple[Any, ...] = entry
        vals: tuple[Any, ...] = e[2]
        for item in vals:
            it: tuple[Any, ...] = item
            if it[0] is None or it[1] is not None:
                return True
            seen = True
    return not seen


def max_stamp(entries: Entries) -> int:
    """Largest stamp among the siblings (0 for none)."""
    # tuple[Any, ...] views here and below: the compiled build then reads one
    # field of a tuple instead of unboxing the whole (str, int, tuple) entry
    # or (value, expiry, stamp) item (type checks, an int conversion each)
    es: tuple[Any, ...] = entries
    if len(es) == 1:  # the common state: one actor's entry
        e: tuple[Any, ...] = es[0]
        vals: tuple[Any, ...] = e[2]
        if len(vals) == 1:
            one: tuple[Any, ...] = vals[0]
            top: int = one[2]
            return top
    best = 0
    for entry in es:
        e = entry
        vals = e[2]
        for item in vals:
            it: tuple[Any, ...] = item
            stamp: int = it[2]
            if stamp > best:
                best = stamp
    return best


def digest(entries: Entries) -> bytes:
    """Short (8-byte) hash of the canonical msgpack encoding of a state.

    Identical states hash identically on every replica (tuples and lists pack
    the same way; expiries are always floats).
    """
    return xxhash.xxh3_64_digest(msgpack.packb(entries, use_bin_type=True))


def compact(entries: Entries, max_siblings: int | None) -> Entries:
    """Bound the siblings of a state, deterministically (the same on every replica).

    * A tombstone that is not the last-writer-wins sibling is dropped: it can
      no longer change any read (reads resolve to the winner or to visible
      values only).
    * With ``max_siblings``, only that many siblings are kept, the newest by
      ``(stamp, actor, counter)``; older ones are dropped.

    Dropping keeps the clock: a dropped dot stays *seen*, so it counts as
    superseded wherever the compacted state is synced and replicas converge.
    Per actor only a prefix of values (its newest dots) can be kept; when a
    dropped tombstone sits between two kept values of one actor it is kept
    too (conservative). Returns ``entries`` itself when nothing changes.
    """
    total = 0
    has_tomb = False
    es: tuple[Any, ...] = entries
    for entry in es:
        e: tuple[Any, ...] = entry
        vals: tuple[Any, ...] = e[2]
        total += len(vals)
        if not has_tomb:
            for item in vals:
                it: tuple[Any, ...] = item
                if it[0] is None:
                    has_tomb = True
                    break
    if total <= 1 or (not has_tomb and (max_siblings is None or total <= max_siblings)):
        return entries
    ranked = sorted(
        (
            (item[2], actor, n - k, k, item[0] is None)
            for actor, n, vals in entries
            for k, item in enumerate(vals)
        ),
        reverse=True,
    )
    keep: dict[str, int] = {}
    kept = 0
    for rank, (_, actor, _, k, tomb) in enumerate(ranked):
        if tomb and rank:
            continue
        if max_siblings is not None and kept >= max_siblings:
            break
        kept += 1
        if keep.get(actor, 0) < k + 1:
            keep[actor] = k + 1
    out: list[tuple[str, int, tuple[Item, ...]]] = []
    changed = False
    for actor, n, vals in entries:
        limit = keep.get(actor, 0)
        if limit < len(vals):
            changed = True
            out.append((actor, n, vals[:limit]))
        else:
            out.append((actor, n, vals))
    return tuple(out) if changed else entries


#: How a replica keeps a state in memory: ``Entries``, or -- for a state of
#: one value -- a flat tuple of atomic items:
#:
#: * ``(actor, value, expires_at, stamp)`` -- the value is ``actor``'s, the
#:   only entry, and its counter equals the value's stamp (its first write);
#: * ``(actor, value, expires_at, stamp, counter)`` -- likewise, another
#:   counter (a key it overwrote);
#: * ``(actor, value, expires_at, stamp, counter, actor2, counter2, ...)``
#:   -- the *vector form*: the value is ``actor``'s, and the other actors'
#:   entries, which hold no value (dots seen and superseded), follow as
#:   ``(actor, counter)`` pairs in actor order (odd length, at least 7). The
#:   usual state of a last-writer-wins key that several coordinators wrote.
#:
#: About 150 bytes less per key, and one tuple of atomic items instead of
#: four to eight nested tuples, which matters to the garbage collector: a
#: young collection untracks a tuple only when its items are already
#: untracked, and it reaches nested tuples outermost first, so the
#: ``Entries`` of a write stay tracked for four collections (surviving into
#: the old generations that the flat tuple, untracked by its first
#: collection, never reaches). :func:`pack` / :func:`unpack` convert; they
#: are inverse on every state. The flat forms travel as they are, as msgpack
#: arrays (one array instead of nested ones: protocol 7 for the first two,
#: 8 for the vector form; :func:`decode_entries` reads them).
Stored = (
    Entries
    | tuple[str, bytes | None, float | None, int]
    | tuple[str, bytes | None, float | None, int, int]
    | tuple[Any, ...]
)

#: Most entries the vector form packs (more: the state stays ``Entries``;
#: clocks are pruned from ``PruneConfig.small`` entries on, 10 by default).
VECTOR_MAX: Final = 16


def pack(entries: Stored) -> Stored:
    """The compact in-memory form of ``entries`` (itself when not compactable,
    or when already in a flat form)."""
    es: tuple[Any, ...] = entries
    if len(es) == 1:
        e: tuple[Any, ...] = es[0]
        vals: tuple[Any, ...] = e[2]
        if len(vals) == 1:
            item: tuple[Any, ...] = vals[0]
            n: object = e[1]
            if item[2] == n:
                return cast(_Tuple, (e[0], item[0], item[1], n))
            return cast(_Tuple, (e[0], item[0], item[1], item[2], n))
        return entries
    if not 1 < len(es) <= VECTOR_MAX or type(es[0]) is str:
        return entries
    head: tuple[Any, ...] | None = None
    for entry in es:
        e = entry
        vals = e[2]
        if vals:
            if head is not None or len(vals) != 1:
                return entries  # siblings: Entries
            head = e
    if head is None:
        return entries  # no value at all (dots only): rare, kept as is
    one: tuple[Any, ...] = head[2][0]
    out: list[Any] = [head[0], one[0], one[1], one[2], head[1]]
    for entry in es:
        e = entry
        if e is not head:
            out.append(e[0])
            out.append(e[1])
    return tuple(out)


def unpack(stored: Stored) -> Entries:
    """The ``Entries`` of a stored state (see :func:`pack`)."""
    s: tuple[Any, ...] = stored
    if s and type(s[0]) is str:
        if len(s) == 4:
            n: object = s[3]
            item = cast(_Tuple, (s[1], s[2], n))
            return cast(_Tuple, ((s[0], n, (item,)),))
        item5 = cast(_Tuple, (s[1], s[2], s[3]))
        if len(s) == 5:
            return cast(_Tuple, ((s[0], s[4], (item5,)),))
        return _unpack_vector(s, item5)
    return stored  # type: ignore[return-value]


def _unpack_vector(s: tuple[Any, ...], item: tuple[Any, ...]) -> Entries:
    """:func:`unpack` of the vector form: the value's entry placed in actor order."""
    actor: str = s[0]
    mine = cast(_Tuple, (actor, s[4], (item,)))
    out: list[Any] = []
    placed = False
    for i in range(5, len(s), 2):
        a: str = s[i]
        if not placed and actor < a:
            out.append(mine)
            placed = True
        out.append(cast(_Tuple, (a, s[i + 1], ())))
    if not placed:
        out.append(mine)
    entries: tuple[Any, ...] = tuple(out)
    return entries


# -- the write path: a coordinator's new version, a replica's join ---------------
#
# What the replica computed with ``versions`` on ``DVVSet`` wrappers --
# ``update`` (or ``lww_put``), ``prune``, then the store's compaction -- done
# on the ``Entries`` tuples in one pass, with the common states (a new key, a
# key whose one entry is the coordinator's own) answered without a loop or a
# list. The results are equal to the general path's for every input
# (``tests/property/test_kv_state_props.py`` compares them); ``versions``
# stays the reference implementation and serves the rare cases (pruning, a
# collapse to the LWW winner of several siblings).


def context(entries: Entries) -> Context:
    """``versions.context`` of a state: what a reader of it has seen."""
    es: tuple[Any, ...] = entries
    out: list[Any] = []
    for entry in es:
        e: tuple[Any, ...] = entry
        out.append((e[0], e[1]))
    ctx: tuple[Any, ...] = tuple(out)
    return ctx


def _exhausted(actor: str) -> InvalidRequest:
    return InvalidRequest(f"version counter of {actor!r} exhausted")


def issue(
    current: Entries,
    ctx: Context | None,
    value: bytes | None,
    exp: float | None,
    stamp: int,
    actor: str,
    lww: bool,
    max_siblings: int | None,
    prune: PruneConfig,
) -> Entries:
    """The state a coordinating replica stores and replicates for a write.

    Equal to the general path: with ``lww`` and no context (``None``),
    ``versions.prune(versions.lww_put(current, item, actor, stamp), stamp,
    prune)``; otherwise ``settle(versions.prune(versions.update(current, ctx,
    item, actor, stamp=stamp), stamp, prune), lww, max_siblings)``, where
    ``item = (value, exp, stamp)``. ``stamp`` must be greater than every
    stamp in ``current`` (the coordinator's HLC, advanced past
    :func:`max_stamp`), as ``lww_put`` requires. Raises
    :class:`InvalidRequest` where those do (a stamp or counter past
    :data:`~peer_ring.versions.MAX_COUNTER`).
    """
    if stamp >= _SMALL and stamp > MAX_COUNTER:
        raise InvalidRequest(f"stamp {stamp} exceeds the version counter range")
    s: Any = stamp  # one int object: the item's stamp and a counter set to it
    item = cast(_Tuple, (value, exp, s))
    first: Any = s if stamp > 1 else 1  # the counter of an actor's first dot
    cur: tuple[Any, ...] = current
    # (tuples built through cast(_Tuple, ...): the compiled build packs the
    # objects once, as they are; a tuple display assigned to a variable is
    # typed as the display by mypy, and mypyc would unbox it back into its
    # fields at each use and pack it again)
    one: tuple[Any, ...]
    if not ctx:
        if not cur:  # a new key (prune and compaction keep one entry of one item)
            one = cast(_Tuple, ((actor, first, (item,)),))
            return one
        if len(cur) == 1:
            e: tuple[Any, ...] = cur[0]
            if e[0] == actor:  # a key this actor wrote last: the common rewrite
                n: int = e[1]
                if n >= _SMALL and n >= MAX_COUNTER:
                    raise _exhausted(actor)
                vals: tuple[Any, ...] = e[2]
                c: Any
                if lww and ctx is None:  # lww_put; one entry: nothing to prune
                    c = n + 1 if vals or stamp <= n + 1 else s
                    one = cast(_Tuple, ((actor, c, (item,)),))
                    return one
                if vals:  # update: the live dots stay contiguous, n+1 first
                    c = n + 1
                    vs = (item, *vals)
                    one = cast(_Tuple, ((actor, c, vs),))
                    return settle(one, lww, max_siblings)
                c = s if stamp > n + 1 else n + 1
                one = cast(_Tuple, ((actor, c, (item,)),))
                return one
    out: Entries
    if lww and ctx is None:
        out = _lww_put(cur, item, s, stamp, first, actor)
    else:
        out = _update(cur, ctx, item, s, stamp, first, actor)
    if len(out) > prune.small:
        out = vv.prune(vv.DVVSet(out), stamp, prune).entries
    if lww and ctx is None:
        return out
    return settle(out, lww, max_siblings)


def flat_top(stored: Stored | None, actor: str) -> int:
    """The largest stamp of ``stored`` when :func:`issue_flat` can write over
    it -- no state, or the flat state of one value by ``actor`` alone (not the
    vector form) whose counter is in the compiled build's small range -- else
    -1 (take :func:`issue`)."""
    if stored is None:
        return 0
    s: tuple[Any, ...] = stored
    if not s or type(s[0]) is not str or s[0] != actor or len(s) > 5:
        return -1
    n: int = s[3] if len(s) == 4 else s[4]
    if n >= _SMALL:
        return -1
    top: int = s[3]
    return top


def issue_flat(
    stored: Stored | None, value: bytes | None, exp: float | None, stamp: int, actor: str
) -> Stored:
    """``pack(issue(unpack(stored), None, value, exp, stamp, actor, True, ...))``
    -- a last-writer-wins write with no context -- for a ``stored`` that
    :func:`flat_top` accepts (its answer, ``top``, below ``stamp``): the new
    flat state built directly, with none of the four ``Entries`` tuples of the
    state read and of the state written. Equal to the general path for every
    such input (``tests/property/test_kv_state_props.py``); raises where it
    raises (a stamp past :data:`~peer_ring.versions.MAX_COUNTER`)."""
    if stamp >= _SMALL and stamp > MAX_COUNTER:
        raise InvalidRequest(f"stamp {stamp} exceeds the version counter range")
    s: Any = stamp
    out: tuple[Any, ...]
    if stored is None:  # a new key: its first dot's counter is the stamp (or 1)
        if stamp >= 1:
            out = cast(_Tuple, (actor, value, exp, s))
        else:
            out = cast(_Tuple, (actor, value, exp, s, 1))
        return out
    old: tuple[Any, ...] = stored
    n: int = old[3] if len(old) == 4 else old[4]
    c = n + 1  # one live dot: the counter moves on by one (versions.lww_put)
    if c == stamp:
        out = cast(_Tuple, (actor, value, exp, s))
    else:
        out = cast(_Tuple, (actor, value, exp, s, c))
    return out


def issue_packed(
    stored: Stored, value: bytes | None, exp: float | None, stamp: int, actor: str, small: int
) -> Stored | None:
    """``pack(issue(unpack(stored), None, value, exp, stamp, actor, True, ...,
    prune))`` -- a last-writer-wins write with no context -- for a ``stored``
    state in a flat form (any of :func:`pack`'s), built from its fields: the
    writer's counter moves on, every other actor's stays and its value is
    dropped. ``stamp`` is above the state's (its HLC after ``stored[3]``).
    None when the state would be pruned (more than ``small`` entries, the
    general path prunes them), would have more entries than the vector form
    packs (:data:`VECTOR_MAX`: ``Entries``), or a counter is out of the
    compiled build's small range; raises where :func:`issue` raises."""
    if stamp >= _SMALL and stamp > MAX_COUNTER:
        raise InvalidRequest(f"stamp {stamp} exceeds the version counter range")
    s: tuple[Any, ...] = stored
    size = len(s)
    head: str = s[0]
    n_head: int = s[3] if size == 4 else s[4]
    if n_head >= _SMALL:
        return None
    st_obj: Any = stamp
    c: Any = -1  # the writer's new counter (-1: not yet known)
    out: list[Any] = [actor, value, exp, st_obj, None]  # the counter set below
    if head == actor:
        c = n_head + 1  # its entry holds the value: the dots stay contiguous
    i = 5
    while True:
        # the next actor in order: the head, where it falls among the pairs
        a: str
        m: Any
        nxt: str = s[i] if i < size else ""
        if head != "" and (i >= size or head < nxt):
            a = head
            m = s[3] if size == 4 else s[4]
            head = ""
        elif i < size:
            a = nxt
            m = s[i + 1]
            i += 2
        else:
            break
        if a == actor:
            if c == -1:  # an entry with no value: jump to the stamp when above n + 1
                n: int = m
                if n >= _SMALL:
                    return None
                c = n + 1 if stamp <= n + 1 else st_obj
            continue
        out.append(a)
        out.append(m)
    if c == -1:  # the writer's first dot of the key
        c = st_obj if stamp > 1 else 1
    entries = (len(out) - 3) >> 1
    if entries > small or entries > VECTOR_MAX:
        return None  # prune, or too many entries for the vector form: the general path
    one: tuple[Any, ...]
    if len(out) == 5:  # the writer's entry alone
        if c == stamp:
            one = cast(_Tuple, (actor, value, exp, c))
        else:
            one = cast(_Tuple, (actor, value, exp, st_obj, c))
        return one
    out[4] = c
    return tuple(out)


def _update(
    entries: tuple[Any, ...],
    ctx: Context | None,
    item: tuple[Any, ...],
    s: object,
    stamp: int,
    first: object,
    actor: str,
) -> Entries:
    """``versions.update`` on tuples (``s``: ``stamp`` boxed; ``first``: the
    counter of the actor's first dot)."""
    out: list[Any] = []
    if ctx:
        # sync(({ctx, []}), state): entries of ctx carry no values.
        cs: tuple[Any, ...] = ctx
        i = j = 0
        le, lc = len(entries), len(cs)
        while i < le and j < lc:
            e: tuple[Any, ...] = entries[i]
            cp: tuple[Any, ...] = cs[j]
            e_actor: str = e[0]
            c_actor: str = cp[0]
            if e_actor == c_actor:
                n: int = e[1]
                c_n: int = cp[1]
                if c_n >= n:
                    out.append((c_actor, cp[1], ()))
                else:
                    keep = n - c_n
                    vals: tuple[Any, ...] = e[2]
                    out.append((c_actor, e[1], vals if keep >= len(vals) else vals[:keep]))
                i += 1
                j += 1
            elif e_actor < c_actor:
                out.append(e)
                i += 1
            else:
                out.append((c_actor, cp[1], ()))
                j += 1
        if i < le:
            out.extend(entries[i:])
        while j < lc:
            cp = cs[j]
            out.append((cp[0], cp[1], ()))
            j += 1
    else:
        out.extend(entries)
    # the event: a new dot for `actor`
    for k in range(len(out)):
        e = out[k]
        e_actor = e[0]
        if e_actor == actor:
            n = e[1]
            if n >= _SMALL and n >= MAX_COUNTER:
                raise _exhausted(actor)
            vals = e[2]
            if vals:  # keep the live dots contiguous: n+1, n, n-1, ...
                out[k] = (actor, n + 1, (item, *vals))
            else:
                c: object = s if stamp > n + 1 else n + 1
                out[k] = (actor, c, (item,))
            return tuple(out)
        if e_actor > actor:
            out.insert(k, (actor, first, (item,)))
            return tuple(out)
    out.append((actor, first, (item,)))
    return tuple(out)


def _lww_put(
    entries: tuple[Any, ...],
    item: tuple[Any, ...],
    s: object,
    stamp: int,
    first: object,
    actor: str,
) -> Entries:
    """``versions.lww_put`` on tuples (see :func:`_update` for the arguments)."""
    out: list[Any] = []
    placed = False
    for entry in entries:
        e: tuple[Any, ...] = entry
        a: str = e[0]
        if not placed and a >= actor:
            placed = True
            if a == actor:
                n: int = e[1]
                if n >= _SMALL and n >= MAX_COUNTER:
                    raise _exhausted(actor)
                # with live values the dots stay contiguous: n + 1; else jump to the stamp
                c: object = n + 1 if e[2] or stamp <= n + 1 else s
                out.append((actor, c, (item,)))
                continue
            out.append((actor, first, (item,)))
        out.append(e if not e[2] else (a, e[1], ()))
    if not placed:
        out.append((actor, first, (item,)))
    return tuple(out)


def settle(entries: Entries, lww: bool, max_siblings: int | None) -> Entries:
    """A state as a replica keeps it: collapsed to its last-writer-wins
    sibling (``lww``, ``versions.lww``) or bounded by :func:`compact`."""
    es: tuple[Any, ...] = entries
    if len(es) == 1:
        e: tuple[Any, ...] = es[0]
        if len(e[2]) <= 1:
            return entries  # one version: nothing to collapse or drop (the common case)
    if lww:
        count = 0
        for entry in es:
            e = entry
            count += len(e[2])
        if count <= 1:
            return entries
        return vv.lww(vv.DVVSet(entries), stamp_of).entries
    return compact(entries, max_siblings)


def supersedes(a: Entries, b: Entries) -> bool:
    """``versions.supersedes`` of two states' entries (``sync(a, b) == a``,
    sufficient test)."""
    ea: tuple[Any, ...] = a
    eb: tuple[Any, ...] = b
    i, la = 0, len(ea)
    for entry in eb:
        y: tuple[Any, ...] = entry
        actor: str = y[0]
        while True:  # the same actor first (interned: one identity test)
            if i == la:
                return False  # `b` saw dots of an actor `a` never heard of
            x: tuple[Any, ...] = ea[i]
            x_actor: str = x[0]
            if x_actor == actor:
                break
            if x_actor > actor:
                return False  # likewise
            i += 1  # an actor only `a` knows: `b` saw none of its dots
        n_a: int = x[1]
        n_b: int = y[1]
        if n_a < n_b:
            return False
        # a's live dots run n_a - len + 1 .. n_a; those <= n_b must be live in b
        vals_a: tuple[Any, ...] = x[2]
        vals_b: tuple[Any, ...] = y[2]
        if (
            vals_a
            and n_a - len(vals_a) + 1 <= n_b
            and (not vals_b or n_a - len(vals_a) < n_b - len(vals_b))
        ):
            return False
        i += 1
    return True


def join(a: Entries, b: Entries, lww: bool, max_siblings: int | None) -> Entries:
    """A replica's join of two states, settled (:func:`settle`): ``b`` itself
    when it supersedes ``a`` (a newer write of the key, the replicated put),
    else ``versions.sync``."""
    if supersedes(b, a):
        return settle(b, lww, max_siblings)
    return settle(vv.sync(vv.DVVSet(a), vv.DVVSet(b)).entries, lww, max_siblings)
