"""The :class:`Ring`: an immutable placement table plus O(1) lookups.

A ring is a pure function of ``(set of (id, zone, weight), Q, N)``: the order in
which nodes are given, the history of joins and leaves, addresses and
incarnations never matter. Two nodes holding rings with the same
:attr:`Ring.checksum` hold identical tables (DeCandia et al., "Dynamo:
Amazon's Highly Available Key-value Store", SOSP 2007, partitioning strategy
3: ``Q`` fixed, equal-sized partitions, placement decoupled from partitioning).
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import xxhash

from peer_ring.errors import ConfigError, InvalidRequest
from peer_ring.ring._hash import NodeSeed, key_hash
from peer_ring.ring._placement import place
from peer_ring.ring._types import MemberLike, PartitionChange, RingDiff, RingNode

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICAS",
    "MAX_PARTITIONS",
    "MAX_REPLICAS",
    "Ring",
    "diff",
]

#: Default partition count ``Q``: ample for clusters up to a few hundred nodes.
DEFAULT_PARTITIONS: Final = 1024
#: Default replication factor ``N``.
DEFAULT_REPLICAS: Final = 3
#: Largest accepted ``Q`` (partitions are numbered with 16 bits).
MAX_PARTITIONS: Final = 1 << 16
#: Largest accepted ``N``.
MAX_REPLICAS: Final = 64

_CHECKSUM_DOMAIN: Final = b"peer-ring/ring/checksum/v1\x00"
_U32 = struct.Struct(">I")


def _validate(partitions: object, replicas: object) -> tuple[int, int]:
    if isinstance(partitions, bool) or not isinstance(partitions, int):
        raise ConfigError(f"partitions must be an int, got {partitions!r}")
    if not 1 <= partitions <= MAX_PARTITIONS or partitions & (partitions - 1):
        raise ConfigError(
            f"partitions must be a power of two between 1 and {MAX_PARTITIONS}, got {partitions}"
        )
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ConfigError(f"replicas must be an int, got {replicas!r}")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"replicas must be between 1 and {MAX_REPLICAS}, got {replicas}")
    return partitions, replicas


def _checksum(nodes: tuple[RingNode, ...], partitions: int, replicas: int) -> int:
    parts = [_CHECKSUM_DOMAIN, _U32.pack(partitions), _U32.pack(replicas), _U32.pack(len(nodes))]
    for node in nodes:
        ident = node.id.encode("utf-8")
        parts.append(_U32.pack(len(ident)))
        parts.append(ident)
        if node.zone is None:
            parts.append(b"\x00")
        else:
            zone = node.zone.encode("utf-8")
            parts.append(b"\x01" + _U32.pack(len(zone)) + zone)
        weight = node.weight.hex().encode("ascii")
        parts.append(_U32.pack(len(weight)) + weight)
    return int(xxhash.xxh3_64_intdigest(b"".join(parts)))


def _bad_key(key: object) -> InvalidRequest:
    return InvalidRequest(f"keys must be bytes-like, got {type(key).__name__}")


class Ring:
    """Placement of ``Q`` partitions on ``N`` replicas each, over a node set.

    Construction costs one placement computation (see ``docs/ring.md`` for
    figures); every lookup afterwards is O(1) or O(answer). Rings are
    immutable, hashable and compare equal when their inputs are equal.

    An empty node set is accepted (a node that does not know its cluster yet):
    every preference list is then empty.
    """

    __slots__ = (
        "_by_node",
        "_fallbacks",
        "_primaries_by_node",
        "_seeds",
        "_shift",
        "_table",
        "checksum",
        "epoch",
        "node_ids",
        "nodes",
        "partitions",
        "replicas",
    )

    partitions: int
    replicas: int
    nodes: tuple[RingNode, ...]
    node_ids: frozenset[str]
    checksum: int
    epoch: str

    def __init__(
        self,
        nodes: Iterable[RingNode],
        *,
        partitions: int = DEFAULT_PARTITIONS,
        replicas: int = DEFAULT_REPLICAS,
    ) -> None:
        self.partitions, self.replicas = _validate(partitions, replicas)
        collected: dict[str, RingNode] = {}
        for node in nodes:
            if not isinstance(node, RingNode):
                raise ConfigError(f"ring nodes must be RingNode, got {type(node).__name__}")
            if node.id in collected:
                raise ConfigError(f"duplicate node id {node.id!r} in ring")
            collected[node.id] = node
        self.nodes = tuple(sorted(collected.values(), key=lambda nd: nd.id))
        self.node_ids = frozenset(collected)
        self.checksum = _checksum(self.nodes, self.partitions, self.replicas)
        self.epoch = f"{self.checksum:016x}"

        bits = self.partitions.bit_length() - 1
        self._shift = 64 - bits
        self._seeds = [NodeSeed(node.id, bits) for node in self.nodes]
        lists = place(self.nodes, self._seeds, bits, self.replicas)
        ids = [node.id for node in self.nodes]
        self._table: tuple[tuple[str, ...], ...] = tuple(
            tuple(ids[i] for i in owners) for owners in lists
        )
        by_node: dict[str, list[int]] = {nid: [] for nid in ids}
        prim: dict[str, list[int]] = {nid: [] for nid in ids}
        for p, owners_ids in enumerate(self._table):
            for nid in owners_ids:
                by_node[nid].append(p)
            if owners_ids:
                prim[owners_ids[0]].append(p)
        self._by_node = {nid: tuple(ps) for nid, ps in by_node.items()}
        self._primaries_by_node = {nid: tuple(ps) for nid, ps in prim.items()}
        self._fallbacks: list[tuple[str, ...] | None] = [None] * self.partitions

    @classmethod
    def from_members(
        cls,
        members: Iterable[MemberLike] | Mapping[str, MemberLike],
        *,
        partitions: int = DEFAULT_PARTITIONS,
        replicas: int = DEFAULT_REPLICAS,
    ) -> Ring:
        """Build a ring from membership records; only ``id``, ``zone``, ``weight`` are used.

        Accepts an iterable of members or a membership view (id -> member).
        """
        items: Iterable[Any] = members.values() if isinstance(members, Mapping) else members
        nodes = []
        for m in items:
            try:
                nodes.append(RingNode(m.id, m.zone, m.weight))
            except AttributeError as exc:
                raise ConfigError(f"not a member record: {m!r}") from exc
        return cls(nodes, partitions=partitions, replicas=replicas)

    # -- derived rings -------------------------------------------------------

    def with_node(self, node: RingNode) -> Ring:
        """A ring with ``node`` added (or replaced, if its id is present)."""
        rest = [nd for nd in self.nodes if nd.id != node.id]
        return Ring([*rest, node], partitions=self.partitions, replicas=self.replicas)

    def without_node(self, node_id: str) -> Ring:
        """A ring with ``node_id`` removed (unchanged inputs if it is absent)."""
        rest = [nd for nd in self.nodes if nd.id != node_id]
        return Ring(rest, partitions=self.partitions, replicas=self.replicas)

    # -- hot path ------------------------------------------------------------

    def partition_for(self, key: bytes) -> int:
        """The partition of ``key``: the top ``log2(Q)`` bits of ``xxh3_64(key)``.

        ``key`` is bytes-like; anything else raises :class:`InvalidRequest`.
        """
        try:
            return key_hash(key) >> self._shift
        except TypeError as exc:
            raise _bad_key(key) from exc

    def owners(self, key: bytes) -> tuple[str, ...]:
        """The preference list of ``key``'s partition (primary first)."""
        try:
            return self._table[key_hash(key) >> self._shift]
        except TypeError as exc:
            raise _bad_key(key) from exc

    @property
    def preference_lists(self) -> tuple[tuple[str, ...], ...]:
        """Every partition's :meth:`preference_list`, indexed by partition (the
        ring is immutable: hot paths may keep this while the ring is current)."""
        return self._table

    def preference_list(self, partition: int) -> tuple[str, ...]:
        """The ``min(N, n)`` distinct owners of ``partition``, primary first."""
        if not 0 <= partition < self.partitions:
            raise InvalidRequest(f"partition {partition} out of range [0, {self.partitions})")
        return self._table[partition]

    def primary(self, partition: int) -> str | None:
        """The first owner of ``partition`` (``None`` on an empty ring)."""
        owners = self.preference_list(partition)
        return owners[0] if owners else None

    # -- per-node views ------------------------------------------------------

    def partitions_of(self, node_id: str) -> tuple[int, ...]:
        """Partitions whose preference list contains ``node_id``, ascending (``()`` if unknown)."""
        return self._by_node.get(node_id, ())

    def primaries_of(self, node_id: str) -> tuple[int, ...]:
        """Partitions whose primary is ``node_id``, ascending (``()`` if unknown)."""
        return self._primaries_by_node.get(node_id, ())

    def fallbacks(self, partition: int) -> tuple[str, ...]:
        """Every non-owner node, in the order sloppy quorum should try them.

        The order is the rendezvous order of the placement (claim time of
        ``partition``): it differs per partition, so the load of a failed node
        spreads over many others, and it is the order in which these nodes
        would become owners if the owners left. Computed on first use
        (O(n log n)) and cached.
        """
        owners = self.preference_list(partition)
        cached = self._fallbacks[partition]
        if cached is None:
            owned = set(owners)
            scored = []
            for i, node in enumerate(self.nodes):
                if node.id in owned:
                    continue
                seed = self._seeds[i]
                scored.append(((seed.rank(partition) + seed.phase) / node.weight, node.id))
            scored.sort()
            cached = tuple(nid for _, nid in scored)
            self._fallbacks[partition] = cached
        return cached

    def covering_set(self, exclude: Collection[str] = ()) -> dict[str, tuple[int, ...]]:
        """Few nodes that together own every partition, each with the partitions to ask it.

        Used for whole-keyspace fan-out (KEYS, SCAN, DBSIZE). Greedy set cover:
        repeatedly take the non-excluded node owning the most partitions not
        yet covered (ties by id). Every partition appears under exactly one
        node. A partition whose owners are *all* in ``exclude`` is assigned to
        its primary anyway, so the result always covers the keyspace; callers
        detect that case by an excluded id appearing among the keys.
        Returns ``{}`` for an empty ring.
        """
        excluded = set(exclude)
        covered = [False] * self.partitions
        remaining = [len(self._by_node[nid]) for nid in (node.id for node in self.nodes)]
        index = {node.id: i for i, node in enumerate(self.nodes)}
        heap = [
            (-remaining[i], node.id)
            for i, node in enumerate(self.nodes)
            if node.id not in excluded and remaining[i]
        ]
        heapq.heapify(heap)
        result: dict[str, list[int]] = {}
        while heap:
            neg, nid = heapq.heappop(heap)
            i = index[nid]
            if -neg != remaining[i]:
                if remaining[i]:
                    heapq.heappush(heap, (-remaining[i], nid))
                continue
            take = [p for p in self._by_node[nid] if not covered[p]]
            result[nid] = take
            for p in take:
                covered[p] = True
                for owner in self._table[p]:
                    remaining[index[owner]] -= 1
        # Drop nodes made redundant by later picks: a node whose partitions all
        # have another picked owner hands them over (smallest assignment first).
        for nid in sorted(result, key=lambda x: (len(result[x]), x)):
            moves: list[tuple[int, str]] = []
            for p in result[nid]:
                other = next((o for o in self._table[p] if o != nid and o in result), None)
                if other is None:
                    break
                moves.append((p, other))
            else:
                for p, other in moves:
                    result[other].append(p)
                del result[nid]
        for p, done in enumerate(covered):
            if not done and self._table[p]:
                result.setdefault(self._table[p][0], []).append(p)
        return {nid: tuple(sorted(ps)) for nid, ps in result.items()}

    # -- identity ------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ring):
            return NotImplemented
        return (
            self.checksum == other.checksum
            and self.partitions == other.partitions
            and self.replicas == other.replicas
            and self.nodes == other.nodes
        )

    def __hash__(self) -> int:
        return self.checksum

    def __repr__(self) -> str:
        return (
            f"Ring(epoch={self.epoch}, nodes={len(self.nodes)}, "
            f"partitions={self.partitions}, replicas={self.replicas})"
        )


def diff(old: Ring, new: Ring) -> RingDiff:
    """Per-partition ownership changes from ``old`` to ``new`` (same ``Q`` required).

    See :class:`RingDiff` for the definition of a moved slot.
    """
    if old.partitions != new.partitions:
        raise ConfigError(
            f"cannot diff rings with different partition counts "
            f"({old.partitions} -> {new.partitions}); resizing is not supported"
        )
    changes: list[PartitionChange] = []
    incoming: dict[str, list[int]] = {}
    outgoing: dict[str, list[int]] = {}
    moved = 0
    moved_primaries = 0
    for p in range(new.partitions):
        a = old._table[p]
        b = new._table[p]
        if a == b:
            continue
        old_set = set(a)
        new_set = set(b)
        added = tuple(x for x in b if x not in old_set)
        removed = tuple(x for x in a if x not in new_set)
        changes.append(PartitionChange(p, a, b, added, removed))
        moved += len(added)
        if a[:1] != b[:1]:
            moved_primaries += 1
        for x in added:
            incoming.setdefault(x, []).append(p)
        for x in removed:
            outgoing.setdefault(x, []).append(p)
    total = sum(len(t) for t in new._table)
    return RingDiff(
        old_epoch=old.epoch,
        new_epoch=new.epoch,
        partitions=new.partitions,
        changes=tuple(changes),
        moved_slots=moved,
        total_slots=total,
        moved_primaries=moved_primaries,
        _incoming={k: tuple(v) for k, v in incoming.items()},
        _outgoing={k: tuple(v) for k, v in outgoing.items()},
    )
