"""Anti-entropy: replicas of a partition compare Merkle trees and repair the differences.

In the background, a node walks the partitions it owns, ``ae_partitions_per_second``
of them per second (the rate budget), and for each one exchanges a Merkle tree
(:mod:`peer_ring.merkle`, over ``Service.digest``) with one other
owner, rotating through them:

1. ``["ae", ns, p, leaves]`` -- the peer builds its own tree, and answers the
   differing buckets and its key hashes in them;
2. the initiator computes the differing keys, pushes its records of them
   (``["hd", ns, p, records]``: ``import_records`` on the peer) and pulls the
   peer's (``["ae_get", ns, p, keys]``), importing them locally -- both in
   slices of ``chunk_records`` keys, one request each.

A restarted node's bootstrap first compares the roots of all the
partitions it shares with a peer in one request (``["ae_roots", depth,
[[ns, p, root], ...]]``, :meth:`AntiEntropy.differing`) and exchanges trees
only for those that differ: equal roots mean equal digests (up to 64-bit
hash collisions), so a restart in a quiet cluster costs one request per
peer rather than one per partition, peer and service.

Both sides read digests and trees from ``Service.digest_index``: for the KV
store an index per partition kept current incrementally and refreshed in
slices between loop passes, so an exchange costs the changed keys and a
dictionary walk, not a hash of every state in one blocked loop pass. A
partition that is moving (``TransferManager.moving``: streaming out or in,
or still handed off by another node) or still bootstrapping is skipped: the
transfer brings it up to date.

Both sides merge, so one exchange converges a pair of replicas whatever the
direction of the loss. It repairs what hinted handoff misses: a replica that
was down when its hints were refused or lost, or a wiped node. Services whose
``digest`` is empty take no part.

Dynamo (DeCandia et al., SOSP 2007), section 4.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from peer_ring import merkle, wire
from peer_ring.cluster import Cluster
from peer_ring.config import HandoffConfig
from peer_ring.errors import InvalidRequest, PeerRingError
from peer_ring.service import Service
from peer_ring.transport.base import PeerInfo
from peer_ring.wire import decode_records

log = logging.getLogger(__name__)


class AntiEntropy:
    """Background Merkle exchanges between replicas. One per node, built by the node.

    ``busy(partition)`` says whether something else is bringing a partition
    up to date right now (bootstrap after a restart, a transfer): the
    background walk skips it. The node wires it; it must be cheap and must
    not block.
    """

    def __init__(
        self, cluster: Cluster, config: HandoffConfig, busy: Callable[[int], bool]
    ) -> None:
        self.cluster = cluster
        self.busy = busy
        self.config = config
        self.enabled = config.ae_partitions_per_second > 0
        self.metrics_: dict[str, int] = {
            "ae_exchanges": 0,
            "ae_keys_pushed": 0,
            "ae_keys_pulled": 0,
            "ae_failures": 0,
            "ae_skipped_moving": 0,
        }
        self._task: asyncio.Task[None] | None = None
        self._cursor = 0
        self._round = 0
        cluster.add_peer_handler(wire.AE_TREE, self._on_tree)
        cluster.add_peer_handler(wire.AE_GET, self._on_get)
        cluster.add_peer_handler(wire.AE_ROOTS, self._on_roots)

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def metrics(self) -> dict[str, int]:
        return dict(self.metrics_)

    def progress(self) -> dict[str, Any]:
        """Where the background walk is: ``round`` (full passes over the owned
        partitions so far), ``position`` of ``owned`` in the current pass, the
        rate budget, and the exchange counters (the web console's panel)."""
        cluster = self.cluster
        owned = len(cluster.ring.partitions_of(cluster.id))
        out: dict[str, Any] = dict(self.metrics_)
        out.update(
            enabled=self.enabled,
            round=self._round,
            position=min(self._cursor, owned),
            owned=owned,
            partitions_per_second=self.config.ae_partitions_per_second,
        )
        return out

    async def _loop(self) -> None:
        period = 1.0 / self.config.ae_partitions_per_second
        while True:
            await self.cluster.clock.sleep(period)
            try:
                await self.step()
            except Exception:
                log.exception("anti-entropy step failed")

    async def step(self) -> int:
        """Exchange the next owned partition with its next peer; return keys repaired."""
        cluster = self.cluster
        mine = cluster.ring.partitions_of(cluster.id)
        if not mine:
            return 0
        if self._cursor >= len(mine):
            self._cursor = 0
            self._round += 1
        p = mine[self._cursor]
        self._cursor += 1
        if self.busy(p):
            self.metrics_["ae_skipped_moving"] += 1
            return 0  # bootstrap or a transfer is bringing this partition up to date
        peers = [o for o in cluster.ring.preference_list(p) if o != cluster.id]
        if not peers:
            return 0
        peer = peers[self._round % len(peers)]
        if not cluster.is_up(peer):
            return 0
        return await self.exchange(p, peer)

    async def exchange(self, partition: int, peer: str) -> int:
        """Compare ``partition`` with ``peer`` for every service and repair both sides.

        Returns the number of differing keys; failures are counted and logged.
        """
        try:
            return await self.sync(partition, peer)
        except PeerRingError as exc:
            self.metrics_["ae_failures"] += 1
            log.debug("anti-entropy of %d with %s failed: %s", partition, peer, exc)
            return 0

    async def sync(self, partition: int, peer: str) -> int:
        """Like :meth:`exchange`, but a failure raises instead of being counted."""
        cluster = self.cluster
        depth = self.config.ae_depth
        repaired = 0
        address = cluster.address_of(peer)
        for ns, service in cluster.services.items():
            tree = (await service.digest_index(partition, depth)).tree(depth)
            answer = await cluster.transport.request(
                address, wire.tree_frame(ns, partition, list(tree.leaves))
            )
            buckets, theirs = _parse_tree_answer(answer)
            if not buckets:
                continue
            # the index as of now: a key written since the tree differs harmlessly
            ours = (await service.digest_index(partition, depth)).bucket_digest(buckets, depth)
            keys = merkle.diff_keys(ours, theirs)
            push = sorted(k for k in keys if k in ours)
            pull = sorted(k for k in keys if k in theirs)
            # in slices of chunk_records: a large repair never blocks either loop long
            step = self.config.chunk_records
            for i in range(0, len(push), step):
                records = service.read_records(partition, push[i : i + step])
                await cluster.transport.request(
                    address, wire.delivery_frame(ns, partition, records)
                )
                self.metrics_["ae_keys_pushed"] += len(records)
            for i in range(0, len(pull), step):
                got = await cluster.transport.request(
                    address, wire.pull_frame(ns, partition, pull[i : i + step])
                )
                records = decode_records(got)
                service.import_records(partition, records)
                self.metrics_["ae_keys_pulled"] += len(records)
            repaired += len(keys)
        self.metrics_["ae_exchanges"] += 1
        return repaired

    async def differing(self, peer: str, partitions: Sequence[int]) -> set[int]:
        """Of ``partitions``, those whose Merkle root differs from ``peer``'s for
        some service: one request. A failure raises (PeerRingError)."""
        cluster = self.cluster
        depth = self.config.ae_depth
        services = cluster.services.items()
        roots: list[list[Any]] = []
        for p in partitions:
            for ns, service in services:
                roots.append([ns, p, (await service.digest_index(p, depth)).tree(depth).root])
        answer = await cluster.transport.request(
            cluster.address_of(peer), wire.roots_frame(depth, roots)
        )
        return wire.parse_roots_answer(answer) & set(partitions)

    async def _on_roots(self, message: list[Any], peer: PeerInfo) -> list[int]:
        depth, roots = wire.parse_roots(message)
        cluster = self.cluster
        if not 0 <= depth <= 16:
            raise InvalidRequest(f"ae_roots depth must be in [0, 16], not {depth}")
        size = cluster.ring.partitions
        services = cluster.services
        differ: set[int] = set()
        for ns, partition, root in roots:
            if not 0 <= partition < size:
                raise InvalidRequest(f"partition {partition} out of range [0, {size})")
            if partition in differ:
                continue
            service = services.get(ns)
            # a namespace unknown here: the peer holds what we cannot compare
            if (
                service is None
                or (await service.digest_index(partition, depth)).tree(depth).root != root
            ):
                differ.add(partition)
        return sorted(differ)

    def _on_tree(self, message: list[Any], peer: PeerInfo) -> Any:
        ns, partition, leaves = wire.parse_partition_frame(message, wire.AE_TREE, list)
        service = self.cluster.service(ns)
        theirs = merkle.MerkleTree.from_leaves(leaves)  # validated before any work
        return self._answer_tree(service, partition, theirs)

    async def _answer_tree(
        self, service: Service, partition: int, theirs: merkle.MerkleTree
    ) -> list[Any]:
        # the digest index refreshes in slices: the loop keeps serving meanwhile
        index = await service.digest_index(partition, theirs.depth)
        buckets = merkle.diff_buckets(index.tree(theirs.depth), theirs)
        return [buckets, index.bucket_digest(buckets, theirs.depth)]

    def _on_get(self, message: list[Any], peer: PeerInfo) -> list[Any]:
        ns, partition, keys = wire.parse_partition_frame(message, wire.AE_GET, list)
        if not all(type(k) is bytes for k in keys):
            raise InvalidRequest("ae_get keys must be bytes")
        return [list(r) for r in self.cluster.service(ns).read_records(partition, keys)]


def _parse_tree_answer(answer: Any) -> tuple[list[int], dict[bytes, bytes]]:
    if type(answer) is not list or len(answer) != 2:
        raise InvalidRequest("bad anti-entropy answer")
    buckets, theirs = answer
    if type(buckets) is not list or type(theirs) is not dict:
        raise InvalidRequest("bad anti-entropy answer")
    return buckets, theirs
