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

A *joining* node (new to the ring, or back after it was removed) owns
partitions that its peers are about to stream to it: a Merkle sync of those
would move the same data twice and make the peers compute digests while
they stream. So after settling the node asks every live member which
partitions it has queued or running for it (``["xf_plan"]``, see
:mod:`peer_ring.replication.transfer`); such a partition stays *syncing*
(reads refused) until every announced transfer of it to this node finished
(``xf_done``), and falls back to the Merkle sync as soon as an announcing
sender gave up (``xf_fail``) or went down. Only transfers in the sender's
own place are announced (a handoff or a decommission: the joiner inherits
the copy of the owner it replaces); a re-replication from one surviving
co-owner may lack writes the others hold, so those partitions are
Merkle-synced with all of them. A restarted node gets no announcement (its
peers' ring did not change) and syncs as before.

A partition is marked synced once every reachable co-owner was synced, or
after ``bootstrap_timeout`` seconds of trying (a whole cluster restarting
together has no one to sync from), with a warning; waiting for transfers is
given up only after that long without progress. Readiness (``/readyz``)
waits for it.

Invariant: a node never answers a replica read for a partition it owned at
start before it has merged what the other live owners hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from peer_ring import wire
from peer_ring.cluster import Cluster
from peer_ring.errors import PeerRingError, PeerUnavailable
from peer_ring.replication.transfer import TransferManager

log = logging.getLogger(__name__)


class Bootstrap:
    """Tracks whether this node is settling, and which owned partitions still sync."""

    def __init__(
        self,
        cluster: Cluster,
        transfers: TransferManager,
        sync: Callable[[int, str], Awaitable[int]],
        *,
        differing: Callable[[str, list[int]], Awaitable[set[int]]] | None = None,
        timeout: float = 30.0,
        settle: float = 1.0,
        concurrency: int = 8,
    ) -> None:
        """``sync(partition, peer)`` is one anti-entropy exchange that raises on
        failure (``AntiEntropy.sync``); ``differing(peer, partitions)`` the
        partitions whose Merkle roots differ from ``peer``'s, in one request
        (``AntiEntropy.differing``; without it every partition is exchanged);
        ``transfers`` tells which partitions peers announced and finished
        streaming to this node."""
        self.cluster = cluster
        self.transfers = transfers
        self.sync = sync
        self.differing = differing
        self.timeout = timeout
        self.settle = settle
        self.concurrency = concurrency
        self.settling = False
        self.syncing: set[int] = set()
        self.synced = 0
        #: partitions announced by peers (xf_plan) / synced by their transfer alone
        self.announced = 0
        self.by_transfer = 0
        self.failed_exchanges = 0
        #: partitions found in sync by the root comparison alone (no tree exchange)
        self.equal_roots = 0
        self._task: asyncio.Task[None] | None = None
        #: set once the bootstrap is over; from then on it never holds anything
        #: back again (``settling`` stays False, ``syncing`` empty), which the
        #: node's hot paths rely on to stop reading these fields
        self.done = asyncio.Event()

    @property
    def active(self) -> bool:
        """True while anything is held back (the hot path checks only this)."""
        return self.settling or bool(self.syncing)

    def start(self) -> None:
        """Called by ``Node.start`` once discovery started and the ring is built."""
        if not self.cluster.services:
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
                f"replica {self.cluster.id} started moments ago and is still learning the cluster"
            )
        if partition in self.syncing:
            raise PeerUnavailable(
                f"replica {self.cluster.id} is still syncing partition {partition} after a restart"
            )

    def metrics(self) -> dict[str, int]:
        return {
            "bootstrap_partitions_syncing": len(self.syncing),
            "bootstrap_partitions_synced": self.synced,
            "bootstrap_partitions_by_transfer": self.by_transfer,
            "bootstrap_partitions_equal_roots": self.equal_roots,
            "bootstrap_exchange_failures": self.failed_exchanges,
        }

    async def _settle(self, deadline: float) -> None:
        """Wait until the member set has not changed for ``settle`` seconds."""
        cluster = self.cluster
        clock = cluster.clock
        seen = frozenset(cluster.members)
        quiet_since = clock.monotonic()
        while clock.monotonic() < deadline:
            await clock.sleep(min(0.1, self.settle / 4))
            now_members = frozenset(cluster.members)
            if now_members != seen:
                seen, quiet_since = now_members, clock.monotonic()
            elif clock.monotonic() - quiet_since >= self.settle:
                return

    async def _run(self) -> None:
        cluster = self.cluster
        clock = cluster.clock
        try:
            await self._settle(clock.monotonic() + self.timeout)
            self.syncing = set(cluster.ring.partitions_of(cluster.id))
            self.settling = False
            arriving = await self._announced()
            # The Merkle syncs and the wait for announced transfers each get
            # their own budget: the wait is only given up after ``timeout``
            # seconds without progress, so a large or rate-limited transfer is
            # not cut short while it moves.
            waiter = asyncio.ensure_future(self._await_transfers(arriving))
            try:
                todo = await self._skip_equal(
                    [p for p in sorted(self.syncing) if p not in arriving]
                )
                pending = await self._sync_all(todo, clock.monotonic() + self.timeout)
                pending += await waiter
            finally:
                waiter.cancel()
            if pending:
                log.warning(
                    "node %s: %d partitions could not be synced within %.0fs after start; "
                    "serving them anyway",
                    cluster.id,
                    len(pending),
                    self.timeout,
                )
        finally:
            self.settling = False
            self.syncing.clear()
            self.done.set()

    async def _skip_equal(self, partitions: list[int]) -> list[int]:
        """Mark synced the partitions whose Merkle roots equal those of every live
        co-owner (one ``ae_roots`` request per peer); return the others, which
        need a tree exchange. A peer that cannot answer leaves its partitions
        to the exchange."""
        if self.differing is None or not partitions:
            return partitions
        cluster = self.cluster
        shared: dict[str, list[int]] = {}
        for p in partitions:
            for peer in cluster.ring.preference_list(p):
                if peer != cluster.id and cluster.is_up(peer):
                    shared.setdefault(peer, []).append(p)
        differing = self.differing

        async def ask(peer: str, ps: list[int]) -> set[int]:
            try:
                return await differing(peer, ps)
            except PeerRingError as exc:
                self.failed_exchanges += 1
                log.debug("bootstrap root comparison with %s failed: %s", peer, exc)
                return set(ps)

        differ: set[int] = set()
        for got in await asyncio.gather(*(ask(peer, ps) for peer, ps in shared.items())):
            differ |= got
        rest: list[int] = []
        for p in partitions:
            if p in differ:
                rest.append(p)
            elif p in self.syncing:
                # no live co-owner, or each holds exactly what we hold
                self.syncing.discard(p)
                self.synced += 1
        self.equal_roots = len(partitions) - len(rest)
        return rest

    async def _sync_all(self, partitions: list[int], deadline: float) -> list[int]:
        """Merkle-sync ``partitions`` with their live co-owners, retrying until
        ``deadline``; return those that could not be synced."""
        clock = self.cluster.clock
        sem = asyncio.Semaphore(self.concurrency)
        pending = partitions
        while pending and clock.monotonic() < deadline:
            results = await asyncio.gather(*(self._one(p, sem) for p in pending))
            pending = [p for p, ok in zip(pending, results, strict=True) if not ok]
            if pending:
                await clock.sleep(0.2)
        return pending

    async def _await_transfers(self, arriving: dict[int, set[str]]) -> list[int]:
        """Wait for the announced transfers; Merkle-sync the partitions that will
        not come. Return the partitions that could not be synced either way.

        A partition is synced by transfer once *every* sender that announced
        it finished (``xf_done``). As soon as one of them gave up
        (``xf_fail``) or is down, the partition is Merkle-synced with its live
        co-owners instead, at once (with its own ``timeout``). The wait is
        given up after ``timeout`` seconds in which no record arrived and no
        transfer ended; what is still outstanding then is Merkle-synced too.
        """
        cluster = self.cluster
        clock = cluster.clock
        transfers = self.transfers
        pending: list[int] = []
        last_progress = clock.monotonic()
        received = transfers.metrics_["records_received"]
        while arriving:
            fallback: list[int] = []
            for p, senders in list(arriving.items()):
                if p not in self.syncing:
                    del arriving[p]
                elif senders <= transfers.inbound_done.get(p, set()):
                    del arriving[p]
                    self.syncing.discard(p)
                    self.synced += 1
                    self.by_transfer += 1
                    last_progress = clock.monotonic()
                elif any(
                    (p, s) in transfers.inbound_failed or not cluster.is_up(s) for s in senders
                ):
                    del arriving[p]
                    fallback.append(p)
            now = clock.monotonic()
            if transfers.metrics_["records_received"] != received:
                received = transfers.metrics_["records_received"]
                last_progress = now
            if arriving and now - last_progress >= self.timeout:
                fallback.extend(arriving)
                arriving.clear()
            if fallback:
                pending += await self._sync_all(sorted(fallback), clock.monotonic() + self.timeout)
                continue
            if arriving:
                await transfers.inbound_changed(0.5)
        return pending

    async def _announced(self) -> dict[int, set[str]]:
        """Partition -> live members that announced a transfer of it to this node
        in their own place (``xf_plan``). A partition whose transfer already
        finished while this node settled, with none still announced, is synced."""
        cluster = self.cluster
        transfers = self.transfers
        out: dict[int, set[str]] = {}
        peers = [m for m in cluster.members if m != cluster.id and cluster.is_up(m)]

        async def ask(peer: str) -> tuple[str, Any]:
            try:
                return peer, await cluster.transport.request(
                    cluster.address_of(peer), [wire.XF_PLAN]
                )
            except PeerRingError as exc:
                log.debug("xf_plan to %s failed: %s", peer, exc)
                return peer, []

        for peer, plan in await asyncio.gather(*(ask(p) for p in peers)):
            if type(plan) is not list:
                continue
            for p in plan:
                if type(p) is int and p in self.syncing:
                    out.setdefault(p, set()).add(peer)
        for p in [p for p in transfers.inbound_done if p in self.syncing and p not in out]:
            self.syncing.discard(p)  # streamed to us while we settled
            self.synced += 1
            self.by_transfer += 1
        self.announced = len(out)
        return out

    async def _one(self, partition: int, sem: asyncio.Semaphore) -> bool:
        cluster = self.cluster
        if partition not in cluster.ring.partitions_of(cluster.id):
            self.syncing.discard(partition)  # no longer ours: nothing to hold back
            return True
        if partition not in self.syncing:
            return True
        peers = [p for p in cluster.ring.preference_list(partition) if p != cluster.id]
        async with sem:
            ok = True
            for peer in peers:
                if not cluster.is_up(peer):
                    continue  # a down co-owner cannot hold anything we could get now
                try:
                    await self.sync(partition, peer)
                except PeerRingError as exc:
                    self.failed_exchanges += 1
                    log.debug("bootstrap sync of %d with %s failed: %s", partition, peer, exc)
                    ok = False
        if ok:
            self.syncing.discard(partition)
            self.synced += 1
        return ok
