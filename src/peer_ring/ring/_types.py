"""Value types of the ring: :class:`RingNode`, :class:`PartitionChange`, :class:`RingDiff`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from peer_ring.errors import ConfigError

__all__ = ["MemberLike", "PartitionChange", "RingDiff", "RingNode"]

_MAX_ID_LEN = 256


@dataclass(frozen=True, slots=True)
class RingNode:
    """The placement inputs of one node: its id, failure zone and weight.

    Only these three fields decide placement. A node's address and incarnation
    are deliberately absent: a restarted or re-addressed node keeps its
    partitions. ``weight`` is relative (a weight-2 node gets about twice the
    slots of a weight-1 node); it must be finite and > 0. ``zone`` ``None``
    means "a failure domain of its own".
    """

    id: str
    zone: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or len(self.id) > _MAX_ID_LEN:
            raise ConfigError(f"ring node id must be a non-empty str of <= 256 chars: {self.id!r}")
        if self.zone is not None and (not isinstance(self.zone, str) or not self.zone):
            raise ConfigError(f"node {self.id}: zone must be None or a non-empty str")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ConfigError(f"node {self.id}: weight must be a number, got {weight!r}")
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"node {self.id}: weight must be finite and > 0, got {weight!r}")
        object.__setattr__(self, "weight", float(weight))


@dataclass(frozen=True, slots=True)
class PartitionChange:
    """How the preference list of one partition changed between two rings.

    ``added`` are the owners that must receive the partition's data;
    ``removed`` the owners that may drop it once the new owners have it.
    Both are in the order of the new (resp. old) preference list.
    """

    partition: int
    old: tuple[str, ...]
    new: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def primary_changed(self) -> bool:
        return (self.old[:1]) != (self.new[:1])


@dataclass(frozen=True, slots=True)
class RingDiff:
    """Result of :func:`peer_ring.ring.diff`: what changed from one ring to another.

    A *moved slot* is one (partition, node) pair in the new ring whose node
    did not own that partition in the old ring (the node must fetch the data),
    so ``moved_slots == sum(len(c.added) for c in changes)``. Owners that merely
    change rank inside a preference list (e.g. become primary) move no data
    and are counted in ``moved_primaries`` only.
    """

    old_epoch: str
    new_epoch: str
    partitions: int
    #: Changes, by increasing partition, for every partition whose list changed.
    changes: tuple[PartitionChange, ...]
    #: Number of (partition, node) slots of the new ring that are new.
    moved_slots: int
    #: Number of replica slots in the new ring (``Q * min(N, n)``).
    total_slots: int
    #: Number of partitions whose primary changed.
    moved_primaries: int
    _incoming: Mapping[str, tuple[int, ...]] = field(repr=False, compare=False)
    _outgoing: Mapping[str, tuple[int, ...]] = field(repr=False, compare=False)

    @property
    def moved_fraction(self) -> float:
        """``moved_slots / total_slots`` (0.0 for an empty ring)."""
        return self.moved_slots / self.total_slots if self.total_slots else 0.0

    @property
    def unchanged(self) -> bool:
        return not self.changes

    def incoming(self, node_id: str) -> tuple[int, ...]:
        """Partitions ``node_id`` gains (must fetch), ascending."""
        return self._incoming.get(node_id, ())

    def outgoing(self, node_id: str) -> tuple[int, ...]:
        """Partitions ``node_id`` loses (may hand off, then drop), ascending."""
        return self._outgoing.get(node_id, ())


class MemberLike(Protocol):
    """What placement reads of a member (``peer_ring.membership.Member`` is one):
    structural, so that the ring imports nothing of membership."""

    @property
    def id(self) -> str: ...

    @property
    def zone(self) -> str | None: ...

    @property
    def weight(self) -> float: ...
