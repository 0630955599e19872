"""Hinted handoff: writes meant for a down replica, kept by a fallback node.

Under a sloppy quorum the coordinator sends a command meant for a down
owner X to the next healthy node of ``ring.fallbacks(p)`` as a *hinted*
request ``["h", X, ns, command, key, partition, payload, origin]``. The
fallback applies it through the service's own hooks, without mixing it into
data it owns:

1. the hint already kept for ``(X, ns, partition, key)``, if any, is merged
   into the service (``import_records``), so a read-modify-write command sees
   the state written by earlier hinted commands;
2. the command runs (``Service.handle``);
3. the key's resulting record is read back (``read_records``) into the hint
   store, and the partition is dropped again from the service when this node
   neither owns nor otherwise holds it.

Hints are delivered (``import_records`` on X, via ``["hd", ns, partition,
records]``) once the failure detector sees X up again, and deleted only after
X acknowledged them. Hints for a member that left the ring are delivered to
the partition's current owners instead. The store is bounded by
``hint_max_records``: beyond it new hints are refused (the command fails on
that fallback and counts against the quorum; anti-entropy repairs later).

Dynamo (DeCandia et al., SOSP 2007), section 4.6.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from peer_ring import wire
from peer_ring._awaitable import is_awaitable
from peer_ring.cluster import Cluster
from peer_ring.config import HandoffConfig
from peer_ring.errors import InvalidRequest, Overloaded, PeerRingError
from peer_ring.replication.transfer import TransferManager
from peer_ring.service import Record, Request
from peer_ring.transport.base import PeerInfo
from peer_ring.wire import decode_records

log = logging.getLogger(__name__)


class HintStore:
    """Hints kept for other nodes, and their delivery. One per node: ``cluster.hints``."""

    def __init__(self, cluster: Cluster, config: HandoffConfig, transfers: TransferManager) -> None:
        self.cluster = cluster
        self.transfers = transfers
        self.config = config
        self.enabled = config.hints
        # target -> namespace -> partition -> key -> record state
        self._hints: dict[str, dict[str, dict[int, dict[bytes, Any]]]] = {}
        self._count = 0
        self.metrics_: dict[str, int] = {
            "hints_stored": 0,
            "hints_refused": 0,
            "hints_delivered": 0,
            "hint_delivery_failures": 0,
        }
        self._task: asyncio.Task[None] | None = None
        cluster.add_peer_handler(wire.HINTED, self._on_hinted)
        cluster.add_peer_handler(wire.HINT_DELIVERY, self._on_delivery)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    # -- visibility ----------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def sizes(self) -> dict[str, int]:
        """Hints kept per intended owner."""
        return {
            target: sum(len(keys) for parts in by_ns.values() for keys in parts.values())
            for target, by_ns in self._hints.items()
        }

    def metrics(self) -> dict[str, int]:
        out = dict(self.metrics_)
        out["hints_queued"] = self._count
        return out

    # -- fallback side -------------------------------------------------------
    def _on_hinted(self, message: list[Any], peer: PeerInfo) -> Any:
        target, cmd = wire.parse_hinted(message)
        return self.apply(target, *cmd)

    def apply(
        self,
        target: str,
        ns: str,
        command: str,
        key: bytes,
        partition: int,
        payload: Any,
        origin: str,
    ) -> Any:
        """Run a command meant for ``target`` against its hint (see the module docstring)."""
        cluster = self.cluster
        service = cluster.service(ns)
        if not 0 <= partition < cluster.ring.partitions:
            raise InvalidRequest(f"partition {partition} out of range")
        parts = self._hints.get(target, {}).get(ns, {}).get(partition, {})
        if key not in parts and self._count >= self.config.hint_max_records:
            self.metrics_["hints_refused"] += 1
            raise Overloaded(f"hint store full ({self._count} hints)")
        # holding other data of the partition (owner, or handing it off): keep it
        keep = cluster.id in cluster.ring.preference_list(partition) or any(
            k != key for k, _ in service.export_partition(partition)
        )
        if key in parts:
            service.import_records(partition, [(key, parts[key])])
        result = service.handle(Request(command, key, partition, payload, origin))
        if is_awaitable(result):
            return self._finish_async(result, target, ns, key, partition, keep)
        self._capture(target, ns, key, partition, keep)
        return result

    async def _finish_async(
        self, coro: Any, target: str, ns: str, key: bytes, partition: int, keep: bool
    ) -> Any:
        try:
            return await coro
        finally:
            self._capture(target, ns, key, partition, keep)

    def _capture(self, target: str, ns: str, key: bytes, partition: int, keep: bool) -> None:
        service = self.cluster.service(ns)
        records = service.read_records(partition, [key])
        if not keep and self.cluster.id not in self.cluster.ring.preference_list(partition):
            service.drop_partition(partition)
            self.transfers.dropped(partition)
        if not records:
            return
        parts = self._hints.setdefault(target, {}).setdefault(ns, {}).setdefault(partition, {})
        for k, state in records:
            if k not in parts:
                self._count += 1
            parts[k] = state
            self.metrics_["hints_stored"] += 1

    # -- owner side -------------------------------------------------------------
    def _on_delivery(self, message: list[Any], peer: PeerInfo) -> int:
        ns, partition, records = wire.parse_partition_frame(message, wire.HINT_DELIVERY, list)
        return self.cluster.service(ns).import_records(partition, decode_records(records))

    # -- delivery -----------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await self.cluster.clock.sleep(self.config.hint_interval)
            try:
                await self.deliver()
            except Exception:
                log.exception("hint delivery failed")

    async def deliver(self) -> int:
        """Hand hints to their owners that are up; return how many were delivered."""
        cluster = self.cluster
        delivered = 0
        for target in list(self._hints):
            gone = target not in cluster.ring.node_ids
            if not gone and not cluster.is_up(target):
                continue
            by_ns = self._hints[target]
            for ns in list(by_ns):
                for partition in list(by_ns[ns]):
                    keys = by_ns[ns][partition]
                    if gone:
                        dests = [
                            o for o in cluster.ring.preference_list(partition) if cluster.is_up(o)
                        ]
                    else:
                        dests = [target]
                    if not dests:
                        continue
                    delivered += await self._deliver(keys, dests, ns, partition)
                    if not keys:
                        del by_ns[ns][partition]
                if not by_ns[ns]:
                    del by_ns[ns]
            if not by_ns:
                del self._hints[target]
        return delivered

    async def _deliver(
        self, keys: dict[bytes, Any], dests: list[str], ns: str, partition: int
    ) -> int:
        cluster = self.cluster
        batch: list[Record] = list(keys.items())[: self.config.hint_batch]
        try:
            for dest in dests:
                if dest == cluster.id:
                    cluster.service(ns).import_records(partition, batch)
                else:
                    await cluster.transport.request(
                        cluster.address_of(dest), wire.delivery_frame(ns, partition, batch)
                    )
        except PeerRingError as exc:
            self.metrics_["hint_delivery_failures"] += 1
            log.debug("hint delivery to %s failed: %s", dests, exc)
            return 0
        for k, state in batch:
            if keys.get(k) is state:  # not replaced meanwhile
                del keys[k]
                self._count -= 1
        self.metrics_["hints_delivered"] += len(batch)
        return len(batch)
