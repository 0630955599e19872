"""Replicated state of one limiter key, and the join of two replicas' copies.

Why not just "the most consumed of the two states"? Because copies of a key
can *diverge*: the owner dies after its last copy, a new owner admits hits
from that copy, the old one comes back with hits admitted after it. Each copy
then counts hits the other does not, and any rule that picks one state (or
the per-field max) forgets the other side's hits: it under-counts exactly in
the failure the limiter must survive. A join that never under-counts must
know which hits each copy has seen. So a replicated key is a small set of
per-*actor* slots (an actor is whoever decides for the key: a node
incarnation), Dynamo-style::

    replica = ((actor, (given, seq, state, seen)), ...)      sorted by actor

* ``given`` -- the hits this actor has admitted for the key, in total (a
  grow-only counter; refunds are not subtracted here).
* ``seq`` -- bumped by every write of the actor (a refund changes ``state``
  but not ``given``).
* ``state`` -- the algorithm state the actor wrote (``_algorithms.State``).
* ``seen`` -- ``((actor, given), ...)``: every actor's ``given`` that the
  actor's view had counted when it wrote ``state`` (its own included). So
  ``state`` counts exactly the hits in ``seen``, plus the effect of
  refunds.

**The join rule** (:func:`merge`): per actor keep the slot with the greater
``(given, seq)`` (a canonical encoding breaks a tie between different
slots, which an honest actor never writes); then drop the slots that another
kept slot has seen whole (:func:`compact`). Each actor's slots form a chain
in that order, so this is a pointwise join of chains: commutative,
associative and idempotent on the replicas these functions build, and it
never loses a hit: a slot is dropped only when a kept slot has counted
everything it counted -- its ``seen`` covers the dropped slot's whole
``seen``, not only the dropped actor's own ``given``.

**Reading** (:func:`effective`): ``K[b]`` is the largest ``given`` of actor
``b`` known anywhere in the replica (slots and ``seen``). For each kept
slot, the hits it has not seen, ``Σ_b K[b] - seen[b]``, are *forced* onto its
state at ``now`` (``_algorithms.force``); the reading is the candidate with
the fewest hits available. Every candidate counts every known hit, so the
reading never under-counts; hits counted at ``now`` instead of when they
happened are counted at least as strictly (a bucket refills less, a window
holds them longer). Over-counting is transient: the next write by any actor
sees everything and dominates the other slots. With one actor (the normal
case: only the owner decides) there is one slot and the reading is its
state.

Limits of the rule, stated: a refund that one actor made and another had not
seen is not applied by the other (it is a give-back, never a hit); an
actor id must not be reused by a process that lost its memory (use a node
id plus an incarnation), or its new slots may lose to its old ones.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from peer_ring.app import InvalidRequest
from peer_ring.apps.ratelimit._algorithms import State, available, decode_state, force

__all__ = [
    "EMPTY",
    "Replica",
    "Slot",
    "compact",
    "decode_replica",
    "effective",
    "knowledge",
    "merge",
    "record",
]

#: ``(given, seq, state, seen)``; ``seen`` = ``((actor, given), ...)`` sorted.
Slot = tuple[int, int, State, tuple[tuple[str, int], ...]]
#: ``((actor, slot), ...)`` sorted by actor.
Replica = tuple[tuple[str, Slot], ...]

EMPTY: Final[Replica] = ()
#: Most actors one replica may name (slots plus ``seen`` entries).
MAX_ACTORS: Final = 64


def _order(slot: Slot) -> tuple[int, int, bytes]:
    return slot[0], slot[1], msgpack.packb(slot)


def _later(a: Slot, b: Slot) -> Slot:
    if (a[0], a[1]) != (b[0], b[1]):
        return a if (a[0], a[1]) > (b[0], b[1]) else b
    if a == b:
        return a
    return a if _order(a) >= _order(b) else b


def knowledge(replica: Replica) -> dict[str, int]:
    """Largest ``given`` known for each actor, from slots and ``seen`` alike."""
    known: dict[str, int] = {}
    for actor, (given, _, _, seen) in replica:
        if given > known.get(actor, -1):
            known[actor] = given
        for other, n in seen:
            if n > known.get(other, -1):
                known[other] = n
    return known


def _covers(a: dict[str, int], b: dict[str, int]) -> bool:
    """Whether a slot that has seen ``a`` has counted every hit one that has seen ``b`` counts."""
    return all(a.get(actor, -1) >= n for actor, n in b.items())


def _dominated(replica: Replica) -> set[str]:
    """Actors whose slot another kept slot has seen whole.

    Slot ``s`` has seen slot ``c`` whole when ``s``'s ``seen`` covers all of
    ``c``'s ``seen`` (``c``'s own ``given`` included), not just ``c``'s own
    hits: ``c``'s state also counts the hits of others it had seen, and
    dropping ``c`` for a slot that never saw those would forget them.
    When two slots have seen each other whole, the greater actor id is kept,
    so that a set of slots is never emptied.
    """
    seen: dict[str, dict[str, int]] = {}
    for actor, (given, _, _, pairs) in replica:
        view = dict(pairs)
        if view.get(actor, -1) < given:
            view[actor] = given
        seen[actor] = view
    out: set[str] = set()
    for c, _ in replica:
        for s, _ in replica:
            if s == c or not _covers(seen[s], seen[c]):
                continue
            mutual = _covers(seen[c], seen[s])
            if not mutual or s > c:
                out.add(c)
                break
    return out


def compact(replica: Replica) -> Replica:
    """``replica`` without the slots another slot has seen whole."""
    if len(replica) < 2:
        return replica
    gone = _dominated(replica)
    if not gone:
        return replica
    return tuple(item for item in replica if item[0] not in gone)


def merge(a: Replica, b: Replica) -> Replica:
    """The join of two copies of one key's replicated state (see module doc)."""
    if a == b:
        return compact(a)
    slots: dict[str, Slot] = dict(a)
    for actor, slot in b:
        mine = slots.get(actor)
        slots[actor] = slot if mine is None else _later(mine, slot)
    return compact(tuple(sorted(slots.items())))


def effective(replica: Replica, now: int) -> State | None:
    """The state to decide from at ``now`` (None: nothing counted yet)."""
    if not replica:
        return None
    if len(replica) == 1:
        return replica[0][1][2]
    known = knowledge(replica)
    best: State | None = None
    best_left = 0
    for _, (_, _, state, seen) in compact(replica):
        have = dict(seen)
        unseen = sum(max(0, n - have.get(b, 0)) for b, n in known.items())
        candidate = force(state, unseen, now) if unseen else state
        left = available(candidate, now)
        if best is None or left < best_left:
            best, best_left = candidate, left
    return best


def record(replica: Replica, actor: str, state: State, admitted: int) -> Replica:
    """``replica`` after ``actor`` decided from ``effective(replica, now)``.

    ``state`` is what the decision returned and ``admitted`` the hits it let
    pass (0 for a refund or a refused request that drained). The new slot
    has seen everything the replica knew, so it replaces every other slot.
    """
    if admitted < 0:
        raise ValueError(f"admitted hits cannot be negative: {admitted}")
    known = knowledge(replica)
    given = known.get(actor, 0) + admitted
    known[actor] = given
    old = dict(replica).get(actor)
    seq = old[1] + 1 if old is not None else 1
    slot: Slot = (given, seq, state, tuple(sorted(known.items())))
    slots = dict(replica)
    slots[actor] = slot
    return compact(tuple(sorted(slots.items())))


def _bad(why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid replicated rate-limit state: {why}")


def decode_replica(obj: object) -> Replica:
    """A replica that arrived from the network (msgpack lists), checked."""
    if type(obj) not in (list, tuple):
        raise _bad("not a sequence")
    items: list[Any] = list(obj)  # type: ignore[call-overload]
    if len(items) > MAX_ACTORS:
        raise _bad(f"more than {MAX_ACTORS} slots")
    out: list[tuple[str, Slot]] = []
    for item in items:
        if type(item) not in (list, tuple) or len(item) != 2 or type(item[0]) is not str:
            raise _bad("an entry is [actor, slot]")
        actor, raw = item
        if type(raw) not in (list, tuple) or len(raw) != 4:
            raise _bad("a slot is [given, seq, state, seen]")
        given, seq, state, seen = raw
        if type(given) is not int or type(seq) is not int or given < 0 or seq < 0:
            raise _bad("given and seq must be non-negative integers")
        if type(seen) not in (list, tuple) or len(seen) > MAX_ACTORS:
            raise _bad("seen must be a list of [actor, given]")
        pairs: list[tuple[str, int]] = []
        for pair in seen:
            if (
                type(pair) not in (list, tuple)
                or len(pair) != 2
                or type(pair[0]) is not str
                or type(pair[1]) is not int
                or pair[1] < 0
            ):
                raise _bad("seen must be a list of [actor, given]")
            pairs.append((pair[0], pair[1]))
        out.append((actor, (given, seq, decode_state(state), tuple(sorted(pairs)))))
    out.sort()
    if len({a for a, _ in out}) != len(out):
        raise _bad("duplicate actors")
    return tuple(out)
