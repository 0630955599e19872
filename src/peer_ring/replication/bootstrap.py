"""Bootstrap: a (re)started replica syncs its partitions before it answers reads.

Replicas keep data in memory, so a node that restarts comes back empty while
the cluster still counts it as a replica of its partitions. If it answered
reads at once, two restarted replicas of a key could form a read quorum that
knows nothing of the key, and a read-modify-write built on that read would
overwrite acknowledged data (the fault harness found exactly this).

So a node starts *settling*: until its member view has stopped changing for
``settle`` seconds (a node whose only seed is itself learns the others only
when they contact it, and a partial view means wrong preference lists), it
refuses, for every partition, the service's ``fresh_refused_commands`` --
replica reads, and coordinating a new version (which must start from the
current state) -- with :class:`~peer_ring.errors.PeerUnavailable`, so
coordinators use the other replicas. Then every partition it owns is
*syncing* until the node has run an anti-entropy exchange for it with each
other owner that is up (``AntiEntropy.sync``: Merkle trees, both
directions); the same commands stay refused for it meanwhile. Merges
(replicated writes, hints, transfers) are accepted throughout: they are safe.
Partitions gained later by a ring change arrive through partition transfer
and are not held back here.

A partition is marked synced once every reachable co-owner was synced, or
after ``bootstrap_timeout`` seconds (a whole cluster restarting together has
no one to sync from), with a warning. Readiness (``/readyz``) waits for it.

Invariant: a node never answers a replica read for a partition it owned at
start before it has merged what the other live owners hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from peer_ring.errors import PeerRingError, PeerUnavailable

if TYPE_CHECKING:
    from peer_ring.node import Node

log = logging.getLogger(__name__)


class Bootstrap:
    """Tracks whether this node is settling, and which owned partitions still sync."""

    def __init__(
        self, node: Node, *, timeout: float = 30.0, settle: float = 1.0, concurrency: int = 8
    ) -> None:
        self.node = node
        self.timeout = timeout
        self.settle = settle
        self.concurrency = concurrency
        self.settling = False
        self.syncing: set[int] = set()
        self.synced = 0
        self.failed_exchanges = 0
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    @property
    def active(self) -> bool:
        """True while anything is held back (the hot path checks only this)."""
        return self.settling or bool(self.syncing)

    def start(self) -> None:
        """Called by ``Node.start`` once discovery started and the ring is built."""
        if not self.node.services:
            self.done.set()
            return
        self.settling = True
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def check(self, partition: int) -> None:
        """Raise PeerUnavailable while this node may not serve ``partition`` fresh."""
        if self.settling:
            raise PeerUnavailable(
                f"replica {self.node.id} started moments ago and is still learning the cluster"
            )
        if partition in self.syncing:
            raise PeerUnavailable(
                f"replica {self.node.id} is still syncing partition {partition} after a restart"
            )

    def metrics(self) -> dict[str, int]:
        return {
            "bootstrap_partitions_syncing": len(self.syncing),
            "bootstrap_partitions_synced": self.synced,
            "bootstrap_exchange_failures": self.failed_exchanges,
        }

    async def _settle(self, deadline: float) -> None:
        """Wait until the member set has not changed for ``settle`` seconds."""
        node = self.node
        clock = node.clock
        seen = frozenset(node.members)
        quiet_since = clock.monotonic()
        while clock.monotonic() < deadline:
            await clock.sleep(min(0.1, self.settle / 4))
            now_members = frozenset(node.members)
            if now_members != seen:
                seen, quiet_since = now_members, clock.monotonic()
            elif clock.monotonic() - quiet_since >= self.settle:
                return

    async def _run(self) -> None:
        node = self.node
        clock = node.clock
        deadline = clock.monotonic() + self.timeout
        try:
            await self._settle(deadline)
            self.syncing = set(node.ring.partitions_of(node.id))
            self.settling = False
            sem = asyncio.Semaphore(self.concurrency)
            pending = sorted(self.syncing)
            while pending and clock.monotonic() < deadline:
                results = await asyncio.gather(*(self._one(p, sem) for p in pending))
                pending = [p for p, ok in zip(pending, results, strict=True) if not ok]
                if pending:
                    await clock.sleep(0.2)
            if pending:
                log.warning(
                    "node %s: %d partitions could not be synced within %.0fs after start; "
                    "serving them anyway",
                    node.id,
                    len(pending),
                    self.timeout,
                )
        finally:
            self.settling = False
            self.syncing.clear()
            self.done.set()

    async def _one(self, partition: int, sem: asyncio.Semaphore) -> bool:
        node = self.node
        if partition not in node.ring.partitions_of(node.id):
            self.syncing.discard(partition)  # no longer ours: nothing to hold back
            return True
        peers = [p for p in node.ring.preference_list(partition) if p != node.id]
        async with sem:
            ok = True
            for peer in peers:
                if not node.is_up(peer):
                    continue  # a down co-owner cannot hold anything we could get now
                try:
                    await node.antientropy.sync(partition, peer)
                except PeerRingError as exc:
                    self.failed_exchanges += 1
                    log.debug("bootstrap sync of %d with %s failed: %s", partition, peer, exc)
                    ok = False
        if ok:
            self.syncing.discard(partition)
            self.synced += 1
        return ok
