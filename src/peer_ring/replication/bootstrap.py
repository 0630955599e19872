"""Bootstrap: a (re)started replica syncs its partitions before it answers reads.

Replicas keep data in memory, so a node that restarts comes back empty while
the cluster still counts it as a replica of its partitions. If it answered
reads at once, two restarted replicas of a key could form a read quorum that
knows nothing of the key, and a read-modify-write built on that read would
overwrite acknowledged data (the fault harness found exactly this).

So after start, every partition this node owns is *syncing* until the node
has run an anti-entropy exchange for it with each other owner that is up
(``AntiEntropy.sync``: Merkle trees, both directions). While a partition
syncs, the node refuses the service's ``read_commands`` for it with
:class:`~peer_ring.errors.PeerUnavailable` -- the coordinator then builds the
read quorum from the other replicas -- and accepts writes (merges are safe).
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
    """Tracks which owned partitions are still syncing after start."""

    def __init__(self, node: Node, *, timeout: float = 30.0, concurrency: int = 8) -> None:
        self.node = node
        self.timeout = timeout
        self.concurrency = concurrency
        self.syncing: set[int] = set()
        self.synced = 0
        self.failed_exchanges = 0
        self._task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    def start(self) -> None:
        """Called by ``Node.start`` once the initial view and ring are known."""
        node = self.node
        others = [m for m in node.members if m != node.id]
        if not others or not node.services:
            self.done.set()
            return
        self.syncing = set(node.ring.partitions_of(node.id))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def check_read(self, partition: int) -> None:
        """Raise PeerUnavailable when ``partition`` is still syncing here."""
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

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        sem = asyncio.Semaphore(self.concurrency)
        pending = sorted(self.syncing)
        try:
            while pending and loop.time() < deadline:
                results = await asyncio.gather(*(self._one(p, sem) for p in pending))
                pending = [p for p, ok in zip(pending, results, strict=True) if not ok]
                if pending:
                    await self.node.clock.sleep(0.2)
            if pending:
                log.warning(
                    "node %s: %d partitions could not be synced within %.0fs after start; "
                    "serving reads for them anyway",
                    self.node.id,
                    len(pending),
                    self.timeout,
                )
        finally:
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
