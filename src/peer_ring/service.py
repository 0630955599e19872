"""The contract between the framework and an application.

The framework owns everything distributed -- placement, routing, replication,
moving and reconciling data. An application is a :class:`Service` registered
under a namespace; it supplies command handlers and the hooks the framework
needs to move and reconcile its data (the riak_core vnode split).

Threading rule for every hook: called on the node's event loop, never
concurrently with another hook of the same service for the same partition.
Hooks other than :meth:`Service.handle` must not await the network; none may
block the loop.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peer_ring.replication.merkle import DigestIndex

if TYPE_CHECKING:
    from peer_ring.node import Node

#: One record of a partition as the data-movement hooks see it: key and an
#: opaque, msgpack-encodable state (value plus causal metadata).
Record = tuple[bytes, Any]


@dataclass(slots=True)
class Request:
    """A command arriving at a replica.

    ``origin`` is the id of the node that coordinates the operation (this
    node's own id for local calls). ``partition`` is the key's partition under
    the coordinator's ring. Read-only by convention: one is built for every
    replica command, and a frozen dataclass is slower to build (every
    field goes through ``object.__setattr__``).
    """

    command: str
    key: bytes
    partition: int
    payload: Any
    origin: str


class Service(abc.ABC):
    """Base class for applications. Subclass and register with ``node.register``."""

    #: Namespace the service is registered under; unique per node.
    namespace: str = ""

    #: Commands that only read. The framework never sends them to fallback nodes.
    read_commands: frozenset[str] = frozenset()

    #: Commands a replica refuses right after it started, until it has learned
    #: the cluster and synced the partition with its co-owners (see
    #: ``peer_ring.replication.bootstrap``): reads, so that it cannot make a
    #: read quorum with data it does not have yet, and anything that derives
    #: new state from the local copy. Default: ``read_commands``.
    @property
    def fresh_refused_commands(self) -> frozenset[str]:
        return self.read_commands

    def attach(self, node: Node) -> None:  # noqa: B027 - optional hook
        """Called once by ``node.register``, before the node serves requests.

        Keep the node to call ``node.call``/``node.coordinator`` later; do no I/O here.
        """

    @abc.abstractmethod
    def handle(self, request: Request) -> Any:
        """Apply ``request`` on this replica and return the answer.

        Called from the node's event loop for every command routed to this
        node (local or remote). Return a plain value for work done at once
        (the fast path: no task is created) or a coroutine for work that must
        wait. Raise :class:`~peer_ring.errors.UnknownCommand` for commands the
        service does not know and :class:`~peer_ring.errors.InvalidRequest`
        for bad payloads; both reach the caller as those classes.
        """

    # -- data movement and reconciliation (used by transfer, hinted
    #    handoff, read repair and anti-entropy) --------------------------
    def export_partition(self, partition: int) -> Iterator[Record]:
        """Yield every record of ``partition`` held here (for transfer).

        Called from the transfer task; must not mutate the partition.
        """
        return iter(())

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        """Merge ``records`` into ``partition``; return how many changed local state.

        Must be idempotent and commutative with local writes (merge, never
        blind overwrite): records can arrive twice, late, or out of order.
        """
        return 0

    def digest(self, partition: int) -> dict[bytes, bytes]:
        """Map each key of ``partition`` to a short hash of its state (anti-entropy)."""
        return {}

    def snapshot(self, partition: int) -> Mapping[bytes, Any]:
        """A point-in-time map ``key -> token`` of ``partition``, where a key's token
        compares equal (``==``) in two snapshots iff its state did not change.

        Called by partition transfer before and after a handoff, to re-send
        the keys written meanwhile; must be cheap (no hashing of every state
        if avoidable) and must not block. Default: :meth:`digest`.
        """
        return self.digest(partition)

    async def digest_index(self, partition: int, depth: int) -> DigestIndex:
        """``digest(partition)`` with its Merkle leaves at ``depth``, up to date now.

        Called by anti-entropy (on both sides of an exchange) and by partition
        transfer (the catch-up after a handoff), from a task. May yield to the
        loop between slices of work -- other hooks and writes run meanwhile --
        but must not await the network. The caller reads the index at once
        and never mutates it. The default builds a new index from
        :meth:`digest` in one go; a service with large partitions should keep
        one :class:`~peer_ring.replication.merkle.DigestIndex` per partition
        and refresh it in slices (see ``KVStore``).
        """
        index = DigestIndex(depth)
        index.refresh(self.digest(partition), _same)
        return index

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        """The records of ``keys`` held here (to repair a replica that lacks them)."""
        return []

    def drop_partition(self, partition: int) -> int:
        """Delete every record of ``partition`` (ownership moved away); return count."""
        return 0

    def partition_size(self, partition: int) -> int:
        """Number of records held for ``partition``."""
        return 0

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Called when the node stops; release background tasks."""


def _same(dig: bytes) -> bytes:
    return dig
