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
from typing import Any, Final

import msgpack
import xxhash

from peer_ring.app import InvalidRequest
from peer_ring.hlc import LOGICAL_BITS
from peer_ring.versions import MAX_ACTOR_LEN, MAX_COUNTER

#: ``(value | None, expires_at | None, stamp)``; ``None`` value = tombstone.
Item = tuple[bytes | None, float | None, int]
#: ``((actor, n, (item, ...)), ...)`` sorted by actor: a DVVSet's entries.
Entries = tuple[tuple[str, int, tuple[Item, ...]], ...]

EMPTY: Final[Entries] = ()

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
    process (the coordinator's own replica answers without encoding).
    """
    if obj is None:
        return EMPTY
    if type(obj) is tuple:
        return obj
    if type(obj) is not list:
        raise InvalidRequest(f"stored state must be a list, got {type(obj).__name__}")
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
    for _, _, vals in entries:
        for value, exp, _stamp in vals:
            if value is None or exp is not None:
                return True
            seen = True
    return not seen


def max_stamp(entries: Entries) -> int:
    """Largest stamp among the siblings (0 for none)."""
    best = 0
    for _, _, vals in entries:
        for item in vals:
            if item[2] > best:
                best = item[2]
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
    for _, _, vals in entries:
        total += len(vals)
        if not has_tomb:
            for item in vals:
                if item[0] is None:
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


#: How a replica keeps a state in memory: ``Entries``, or -- for the common
#: state of one value written by one actor -- a flat tuple: ``(actor, value,
#: expires_at, stamp)`` when the actor's counter equals the value's stamp (its
#: first write of the key), ``(actor, value, expires_at, stamp, counter)``
#: otherwise (a key it overwrote). About 150 bytes less per key, and one
#: tuple of atomic items instead of four nested tuples, which matters to the
#: garbage collector: a young collection untracks a tuple only when its items
#: are already untracked, and it reaches nested tuples outermost first, so
#: the ``Entries`` of a write stay tracked for four collections (surviving
#: into the old generations that the flat tuple, untracked by its first
#: collection, never reaches). :func:`pack` / :func:`unpack` convert; they
#: are inverse on every state.
Stored = (
    Entries
    | tuple[str, bytes | None, float | None, int]
    | tuple[str, bytes | None, float | None, int, int]
)


def pack(entries: Entries) -> Stored:
    """The compact in-memory form of ``entries`` (itself when not compactable)."""
    if len(entries) == 1:
        actor, n, vals = entries[0]
        if len(vals) == 1:
            value, exp, stamp = vals[0]
            if stamp == n:
                return (actor, value, exp, n)
            return (actor, value, exp, stamp, n)
    return entries


def unpack(stored: Stored) -> Entries:
    """The ``Entries`` of a stored state (see :func:`pack`)."""
    if stored and type(stored[0]) is str:
        s: tuple[Any, ...] = stored
        if len(s) == 4:
            n = s[3]
            return ((s[0], n, ((s[1], s[2], n),)),)
        return ((s[0], s[4], ((s[1], s[2], s[3]),)),)
    return stored  # type: ignore[return-value]
