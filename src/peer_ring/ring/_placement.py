"""Placement: which nodes hold each partition, in preference order.

The algorithm is weighted rendezvous hashing (HRW, Thaler & Ravishankar 1998)
with bounded loads (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with
Bounded Loads", SODA 2018), evaluated as an *event race* so that it never scores
all ``Q * n`` (partition, node) pairs:

* Every node ``x`` has a keyed permutation ``pi_x`` of the partitions and a
  phase ``u_x`` in (0, 1), both derived from its id only. Its *claim time* for
  partition ``p`` is ``t_x(p) = (rank_x(p) + u_x) / w_x`` where
  ``rank_x(p) = pi_x^-1(p)`` and ``w_x`` its weight: node ``x`` claims one
  partition per ``1 / w_x`` time units, in its own order.
* Claims are processed in increasing time (ties by node id). A claim of ``p``
  by ``x`` succeeds when ``p`` has fewer than ``N`` owners, ``x`` is not one of
  them, ``x`` is below its slot capacity, and the zone rule allows it. The
  preference list of ``p`` is its successful claimers in claim order, except
  that the primary is the first claimer that was below its primary capacity.
* The race stops when every partition has ``N`` owners. About ``14 * Q``
  claims are enough for ``N = 3``, whatever ``n`` is.

Without capacities this is exactly HRW: ``p``'s owners are the ``N`` nodes with
the smallest claim times, so adding node ``z`` changes only the partitions
where ``z`` now ranks among the first ``N`` (each such partition loses one old
owner), which is the minimal possible movement. Capacities (``1.25 x`` the
weighted fair share for slots, ``1.15 x`` for primaries, see
:data:`LOAD_FACTOR`) bound the imbalance; they bind
only for the luckiest nodes, so the extra movement they cause (a claim
rejected by a full node falls to the next claimer) is small. Zone rule:
owners must span ``min(N, zones)`` distinct zones; a claim is refused when
taking it would leave too few slots to reach that many zones. A node without
a zone is a failure domain of its own.

Invariants (checked by the property tests):

* the result depends only on the set of ``(id, zone, weight)``, ``Q`` and ``N``;
* every preference list has ``min(N, n)`` distinct nodes spanning
  ``min(N, n, zones)`` distinct zones;
* when capacities are feasible, no node exceeds its primary or slot capacity.

When capacities cannot be met (extreme weights, lopsided zones), the
partitions left short are completed in pure HRW order ignoring capacities, so a
placement always exists.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Final

from peer_ring.ring._hash import NodeSeed
from peer_ring.ring._types import RingNode

__all__ = ["LOAD_FACTOR", "PRIMARY_LOAD_FACTOR", "capacity", "place", "slot_shares", "waterfill"]

#: A node's capacity is at most this multiple of its weighted fair share (of
#: primaries and of replica slots). Lower values balance better but move more
#: partitions when membership changes (more claims are refused by full nodes).
LOAD_FACTOR: Final = 1.25
PRIMARY_LOAD_FACTOR = 1.05


def waterfill(
    weights: Sequence[float], total: float, lo: Sequence[float], hi: Sequence[float]
) -> list[float]:
    """Split ``total`` in proportion to ``weights``, each share clamped to ``[lo[i], hi[i]]``.

    Items whose proportional share falls outside their bounds are pinned to the
    bound and the rest is re-shared among the others (water-filling). Assumes
    ``sum(lo) <= total <= sum(hi)``; otherwise the result is clamped anyway.
    """
    n = len(weights)
    share = [0.0] * n
    free = set(range(n))
    remaining = float(total)
    while free:
        weight_sum = math.fsum(weights[i] for i in free)
        prop = {i: remaining * weights[i] / weight_sum for i in free}
        over = [i for i in free if prop[i] > hi[i]]
        under = [] if over else [i for i in free if prop[i] < lo[i]]
        if not over and not under:
            for i in free:
                share[i] = prop[i]
            break
        for i in over or under:
            share[i] = hi[i] if over else lo[i]
            remaining -= share[i]
            free.discard(i)
    return share


def capacity(share: float, per_node_max: int, factor: float = LOAD_FACTOR) -> int:
    """``floor(factor * share)``, but at least ``ceil(share)`` and at most ``per_node_max``.

    The lower bound makes capacities always add up to the total at least.
    """
    return min(per_node_max, max(math.ceil(share - 1e-9), math.floor(factor * share + 1e-9)))


def slot_shares(
    weights: Sequence[float], zone_of: Sequence[int], partitions: int, need: int
) -> list[float]:
    """Fair replica-slot share per node under the placement constraints.

    A node holds at most one replica of a partition (share <= Q). With ``Z``
    zones and ``T = min(N, Z)`` zones required per partition, a zone holds at
    least ``Q`` slots when every zone is required (``Z <= N``) and at most
    ``Q`` when replicas must all be in distinct zones (``Z >= N``), otherwise
    at most ``Q * (N - Z + 1)``. Shares are split weight-proportionally by
    water-filling, first over zones, then over the nodes of each zone.
    """
    zones: dict[int, list[int]] = {}
    for i, z in enumerate(zone_of):
        zones.setdefault(z, []).append(i)
    zone_ids = sorted(zones)
    count = len(zone_ids)
    q = float(partitions)
    zone_weight = [math.fsum(weights[i] for i in zones[z]) for z in zone_ids]
    zone_lo = [q if count <= need else 0.0 for _ in zone_ids]
    zone_hi = [q * min(len(zones[z]), 1 if count >= need else need - count + 1) for z in zone_ids]
    zone_share = waterfill(zone_weight, q * need, zone_lo, zone_hi)
    share = [0.0] * len(weights)
    for z, zs in zip(zone_ids, zone_share, strict=True):
        members = zones[z]
        sub = waterfill([weights[i] for i in members], zs, [0.0] * len(members), [q] * len(members))
        for i, s in zip(members, sub, strict=True):
            share[i] = s
    return share


def place(
    nodes: Sequence[RingNode], seeds: Sequence[NodeSeed], bits: int, replicas: int
) -> list[list[int]]:
    """Preference lists (node indices into ``nodes``, primary first) for ``Q = 2**bits``.

    ``nodes`` must be sorted by id with distinct ids (that order breaks ties);
    ``seeds[i]`` is ``NodeSeed(nodes[i].id, bits)``.
    """
    n = len(nodes)
    q = 1 << bits
    if n == 0:
        return [[] for _ in range(q)]
    need = min(replicas, n)
    weights = [node.weight for node in nodes]
    zone_of, zoned = _zone_indices(nodes)
    target_zones = min(need, len(set(zone_of)))
    slot_cap = [capacity(s, q) for s in slot_shares(weights, zone_of, q, need)]
    prim_cap = [
        capacity(s, q, PRIMARY_LOAD_FACTOR)
        for s in waterfill(weights, q, [0.0] * n, [float(q)] * n)
    ]

    owners: list[list[int]] = [[] for _ in range(q)]
    owner_zones: list[list[int]] = [[] for _ in range(q)]  # distinct zones of owners[p]
    primary = [-1] * q
    slots = [0] * n
    prims = [0] * n
    unfilled = q

    phases = [s.phase for s in seeds]
    heap = [(phases[i] / weights[i], i) for i in range(n)]
    heapq.heapify(heap)
    step = [0] * n
    heappop = heapq.heappop
    heappush = heapq.heappush
    last_step = q - 1

    while unfilled and heap:
        _, i = heappop(heap)
        r = step[i]
        seed = seeds[i]
        # Inline of NodeSeed.partition_at (hot loop).
        mask = seed.mask
        p = ((r ^ seed.a) * seed.m1) & mask
        p ^= p >> seed.s1
        p = ((p + seed.b) * seed.m2) & mask
        p ^= p >> seed.s2

        own = owners[p]
        taken = len(own)
        if taken < need and i not in own:
            ok = True
            if zoned:
                zone = zone_of[i]
                seen = owner_zones[p]
                distinct = len(seen) + (zone not in seen)
                ok = distinct + (need - taken - 1) >= target_zones
            if ok and primary[p] < 0:
                if prims[i] < prim_cap[i]:
                    primary[p] = i
                    prims[i] += 1
                elif taken == need - 1:
                    ok = False  # the last slot must go to a node that can be primary
            if ok:
                own.append(i)
                if zoned and zone not in owner_zones[p]:
                    owner_zones[p].append(zone)
                slots[i] += 1
                if taken + 1 == need:
                    unfilled -= 1
        if r < last_step and slots[i] < slot_cap[i]:
            r += 1
            step[i] = r
            heappush(heap, ((r + phases[i]) / weights[i], i))

    if unfilled:
        _complete_uncapped(owners, primary, seeds, weights, zone_of, need, target_zones)

    result: list[list[int]] = []
    for p in range(q):
        own = owners[p]
        first = primary[p]
        if own[0] != first:
            own.remove(first)
            own.insert(0, first)
        result.append(own)
    return result


def _zone_indices(nodes: Sequence[RingNode]) -> tuple[list[int], bool]:
    """Zone index per node (a zoneless node is its own zone) and whether any zone is set."""
    index: dict[str, int] = {}
    out: list[int] = []
    zoned = False
    for i, node in enumerate(nodes):
        if node.zone is None:
            out.append(-1 - i)
        else:
            zoned = True
            out.append(index.setdefault(node.zone, len(index)))
    return out, zoned


def _complete_uncapped(
    owners: list[list[int]],
    primary: list[int],
    seeds: Sequence[NodeSeed],
    weights: Sequence[float],
    zone_of: Sequence[int],
    need: int,
    target_zones: int,
) -> None:
    """Fill short partitions in HRW order (claim time), ignoring capacities.

    Always succeeds: while a partition spans fewer than ``target_zones`` zones
    some zone without an owner still has a node, and the zone rule never lets
    the free slots drop below the zones still missing.
    """
    n = len(seeds)
    for p, own in enumerate(owners):
        if len(own) >= need and primary[p] >= 0:
            continue
        order = sorted(
            range(n), key=lambda i: ((seeds[i].rank(p) + seeds[i].phase) / weights[i], i)
        )
        for i in order:
            if len(own) >= need:
                break
            if i in own:
                continue
            zones = {zone_of[j] for j in own}
            zones.add(zone_of[i])
            if len(zones) + (need - len(own) - 1) < target_zones:
                continue
            own.append(i)
        if primary[p] < 0:
            primary[p] = own[0]
