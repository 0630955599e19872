"""Partition transfer on membership change (handoff), for every registered service.

When the ring changes, every partition whose preference list gained a node is
streamed to that node from a node that holds it, through the services'
``export_partition``/``import_records`` hooks:

* a node that *lost* a partition and is still a member hands it off to the
  partition's added owners, then -- after every one of them confirmed the
  stream's ``finish`` -- drops its copy (riak_core's ownership handoff);
* when the removed owners are gone (decommissioned, or removed after
  ``dead_after``), the first surviving old owner that is up re-replicates the
  partition to the added owners (it keeps its copy);
* ``Node.leave()`` (decommission) hands every partition over to the owners of
  the ring without this node *before* announcing the leave;
* a periodic sweep hands off and drops partitions a node holds but does not
  own (a node that was down during a ring change, stray data).

Invariants:

* a node drops a partition only after every new owner acknowledged the whole
  stream and only if it still does not own the partition in its current ring;
* chunks are imported with ``import_records`` (an idempotent merge), so
  re-sending a chunk is harmless; a broken stream is retried with
  exponential backoff and *resumes*: every stream carries a transfer id and
  the index of its first chunk, the receiver counts the chunks it imported
  per transfer id (in memory), and before a retry the sender asks for that
  count (``[wire.XF_AT, tid]``) and skips those chunks. A receiver that lost
  the count (it restarted, so it lost the data too) answers 0 and gets
  everything again;
* at most ``max_concurrent`` partitions move at once per node, chunks wait
  for the transport's stream credits (flow control) and for a records/s and
  a bytes/s token bucket (bandwidth limits);
* a node tells the nodes it will stream partitions to which ones
  (``["xf_plan"]`` answers them, from the queued and running jobs) and tells
  them the outcome (``xf_done`` on success, ``xf_fail`` when it gave up), so
  a joining node's bootstrap waits for those transfers instead of
  Merkle-syncing the same partitions (``peer_ring.replication.bootstrap``);
* while a partition moves, every node knows its old holders (from the same
  ring diff): the coordinator also sends writes to them (dual-write) and
  ``Node.call`` falls back on them; the sender's ``xf_done`` broadcast, or a
  holder answering NotOwner to a dual write, ends that.

Dynamo (DeCandia et al., SOSP 2007), sections 4.9 (adding/removing storage
nodes); riak_core handoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, deque
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import msgpack

from peer_ring import wire
from peer_ring.cluster import Cluster
from peer_ring.config import HandoffConfig
from peer_ring.errors import InvalidRequest, PeerRingError
from peer_ring.ring import Ring, diff
from peer_ring.service import Record, Service
from peer_ring.transport.base import PeerInfo, StreamSink
from peer_ring.wire import decode_records

log = logging.getLogger(__name__)

#: Job reasons where the sender hands over its own place: the target inherits
#: the sender's copy, so a joining target may take it instead of a Merkle sync.
_REPLACING = frozenset({"handoff", "decommission"})

#: Seconds without a sign of life after which another node's transfer of a
#: partition no longer keeps anti-entropy away from it (see ``moving``).
_MOVING_STALE = 120.0

#: Stream header kind of a partition transfer: ``["xf", ns, partition, sender]``.
STREAM_KIND = wire.TRANSFER_STREAM


@dataclass(slots=True)
class TransferProgress:
    """One partition of one service moving from this node to ``target``."""

    namespace: str
    partition: int
    source: str
    target: str
    started: float
    records: int = 0
    bytes: int = 0
    #: records the partition held when the transfer started (what a progress
    #: bar fills up to; writes during the stream may add a few)
    total: int = 0
    #: why it moves: handoff, re-replicate, decommission, sweep, shrink
    reason: str = ""

    def as_dict(self, now: float) -> dict[str, Any]:
        elapsed = max(now - self.started, 1e-9)
        rate = self.records / elapsed
        left = max(self.total - self.records, 0)
        return {
            "namespace": self.namespace,
            "partition": self.partition,
            "from": self.source,
            "to": self.target,
            "reason": self.reason,
            "records": self.records,
            "total": self.total,
            "bytes": self.bytes,
            "elapsed": elapsed,
            "records_per_second": rate,
            # None: no rate measured yet, so no estimate
            "seconds_left": left / rate if rate > 0 else (0.0 if not left else None),
        }


@dataclass(slots=True)
class _Job:
    partition: int
    targets: tuple[str, ...]
    drop: bool
    reason: str
    done: asyncio.Future[bool] | None = None


class _TokenBucket:
    def __init__(self, cluster: Cluster, rate: float | None) -> None:
        self.cluster = cluster
        self.rate = rate
        self.tokens = rate or 0.0
        self.stamp = cluster.clock.monotonic()

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        while True:
            now = self.cluster.clock.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= min(n, self.rate):
                self.tokens -= n
                return
            await self.cluster.clock.sleep((min(n, self.rate) - self.tokens) / self.rate)


class _ImportSink:
    """Receiver of one transfer stream: imports each chunk as it arrives.

    With a transfer id, the number of chunks imported so far (``start`` plus
    those of this stream) is recorded after each whole chunk, for a resume.
    """

    def __init__(
        self,
        manager: TransferManager,
        service: Service,
        partition: int,
        tid: str | None = None,
        start: int = 0,
    ) -> None:
        self.manager = manager
        self.service = service
        self.partition = partition
        self.tid = tid
        self.chunks = start
        self.records = 0

    async def feed(self, chunk: Any) -> None:
        if type(chunk) is bytes:  # chunks travel pre-packed (packed once, sized for free)
            try:
                chunk = msgpack.unpackb(chunk, raw=False, strict_map_key=False)
            except Exception as exc:  # msgpack raises several unrelated types
                raise InvalidRequest(f"malformed transfer chunk: {exc}") from exc
        records = decode_records(chunk)
        step = self.manager.config.chunk_records // 4 or 1
        for i in range(0, len(records), step):  # import in slices, yielding between them
            if i:
                await asyncio.sleep(0)
            self.service.import_records(self.partition, records[i : i + step])
        self.records += len(records)
        self.chunks += 1
        if self.tid is not None:
            self.manager.record_progress(self.tid, self.partition, self.chunks)
        self.manager.metrics_["records_received"] += len(records)
        self.manager.touched(self.partition)

    async def finish(self) -> Any:
        self.manager.metrics_["transfers_received"] += 1
        if self.tid is not None:
            self.manager.forget_progress(self.tid)
        self.manager._closed_stream(self.partition)
        return self.records

    async def abort(self, reason: BaseException) -> None:
        log.debug("transfer of partition %d aborted: %s", self.partition, reason)
        self.manager._closed_stream(self.partition)


_pack = msgpack.Packer(use_bin_type=True).pack


def chunked(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_NONE: frozenset[str] = frozenset()
_MISSING = object()

#: Finished transfers a node remembers for its status (``TransferManager.recent``).
RECENT_TRANSFERS = 64

#: Transfer ids whose resume position a receiver remembers (oldest forgotten first).
MAX_RESUME_ENTRIES = 4096


@dataclass(slots=True)
class _PendingView:
    #: partition -> nodes that hold it without owning it (handing it off)
    holders: dict[int, set[str]] = field(default_factory=dict)


class TransferManager:
    """Moves partitions between nodes on ring changes. One per node, built by the node."""

    def __init__(self, cluster: Cluster, config: HandoffConfig) -> None:
        self.cluster = cluster
        self.config = config
        self.pending = _PendingView()
        self.active: dict[tuple[str, int, str], TransferProgress] = {}
        #: the last transfers this node finished sending (newest last): the
        #: web console shows them as done or failed for a while
        self.finished: deque[dict[str, Any]] = deque(maxlen=RECENT_TRANSFERS)
        self.metrics_: dict[str, int] = {
            "transfers_started": 0,
            "transfers_completed": 0,
            "transfers_failed": 0,
            "transfers_received": 0,
            "records_sent": 0,
            "records_received": 0,
            "bytes_sent": 0,
            "records_not_resent": 0,
            "partitions_dropped": 0,
            "members_reaped": 0,
        }
        self._queue: asyncio.Queue[_Job] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()
        self._last_import: dict[int, float] = {}
        self._bucket = _TokenBucket(cluster, config.max_records_per_second)
        self._byte_bucket = _TokenBucket(cluster, config.max_bytes_per_second)
        #: (target, partition) -> jobs queued or running that send it there
        self._planned: Counter[tuple[str, int]] = Counter()
        #: receiver side: transfer id -> chunks imported (resume position)
        self._progress: dict[str, tuple[int, int]] = {}  # tid -> (partition, chunks)
        #: receiver side: partition -> transfer streams open into it
        self._receiving: Counter[int] = Counter()
        #: when each partition's list of handing-off holders last changed
        self._holders_since: dict[int, float] = {}
        #: receiver side: partitions whose transfer to this node finished / was given up
        #: partition -> members whose transfer of it in their own place
        #: (handoff, decommission) to this node finished (bootstrap reads it)
        self.inbound_done: dict[int, set[str]] = {}
        self.inbound_failed: set[tuple[int, str]] = set()
        self._inbound_changed = asyncio.Event()
        cluster.on_ring_change(self._on_ring_change)
        cluster.add_stream_handler(STREAM_KIND, self._open_stream)
        cluster.add_peer_handler(wire.XF_DONE, self._on_done_message)
        cluster.add_peer_handler(wire.XF_FAIL, self._on_fail_message)
        cluster.add_peer_handler(wire.XF_PLAN, self._on_plan)
        cluster.add_peer_handler(wire.XF_AT, self._on_at)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        for _ in range(self.config.max_concurrent):
            self._tasks.append(loop.create_task(self._worker()))
        self._tasks.append(loop.create_task(self._sweep_loop()))
        self._tasks.append(loop.create_task(self._reap_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # -- what other components ask ---------------------------------------------
    def holders_of(self, partition: int) -> AbstractSet[str]:
        """Nodes that still hold ``partition`` while handing it off (dual-write targets)."""
        return self.pending.holders.get(partition, _NONE)

    def holder_done(self, partition: int, holder: str) -> None:
        """``holder`` no longer holds ``partition`` (its xf_done, or a NotOwner answer)."""
        holders = self.pending.holders.get(partition)
        if holders is not None:
            holders.discard(holder)
            if not holders:
                del self.pending.holders[partition]

    def moving(self, partition: int) -> bool:
        """True while ``partition`` streams from or to this node, or another node
        still hands it off (anti-entropy leaves it alone meanwhile: the
        transfer moves the data, a Merkle exchange would move it twice).

        Only a send of this node's own is trusted without limit: a stream
        towards us or another node's handoff counts as moving for at most
        ``_MOVING_STALE`` seconds since its last sign of life (a chunk
        imported, the ring change that started it), so a sender that died
        without ``xf_done`` does not keep anti-entropy away for good."""
        if partition in self._busy:
            return True
        now = self.cluster.clock.monotonic()
        if partition in self._receiving:
            return now - self._last_import.get(partition, now) < _MOVING_STALE
        if self.pending.holders.get(partition):
            return now - self._holders_since.get(partition, now) < _MOVING_STALE
        return False

    def touched(self, partition: int) -> None:
        self._last_import[partition] = self.cluster.clock.monotonic()

    def status(self) -> list[dict[str, Any]]:
        """The transfers this node is sending now, with progress, rate and time left."""
        now = self.cluster.clock.monotonic()
        return [p.as_dict(now) for p in self.active.values()]

    def recent(self, within: float = 60.0) -> list[dict[str, Any]]:
        """Transfers this node finished sending in the last ``within`` seconds
        (``outcome``: done or failed; ``ago``: seconds since), newest last."""
        now = self.cluster.clock.monotonic()
        out = []
        for item in self.finished:
            if now - item["finished"] <= within:
                row = {k: v for k, v in item.items() if k != "finished"}
                row["ago"] = now - item["finished"]
                out.append(row)
        return out

    def _finished(self, progress: TransferProgress, outcome: str) -> None:
        now = self.cluster.clock.monotonic()
        row = progress.as_dict(now)
        row["seconds_left"] = 0.0 if outcome == "done" else None
        row["outcome"] = outcome
        row["finished"] = now
        self.finished.append(row)

    def metrics(self) -> dict[str, int]:
        out = dict(self.metrics_)
        out["transfers_in_progress"] = len(self.active)
        out["transfers_queued"] = self._queue.qsize() if self._queue is not None else 0
        return out

    async def idle(self) -> None:
        """Wait until no transfer is queued or running (tests, decommission)."""
        if self._queue is not None:
            await self._queue.join()

    # -- ring changes ---------------------------------------------------------
    def _on_ring_change(self, old: Ring, new: Ring) -> None:
        cluster = self.cluster
        me = cluster.id
        if not old.node_ids or old.partitions != new.partitions:
            return  # first ring: nothing moves
        members = new.node_ids
        for ch in diff(old, new).changes:
            p = ch.partition
            holders = self.pending.holders.setdefault(p, set())
            self._holders_since[p] = cluster.clock.monotonic()
            holders.difference_update(x for x in list(holders) if x not in members or x in ch.new)
            alive_removed = [r for r in ch.removed if r in members]
            holders.update(alive_removed)
            if not ch.added:
                if me in ch.removed and me in members:
                    # owners shrank (e.g. N > members before): nobody needs our copy
                    self._enqueue(_Job(p, (), True, "shrink"))
                continue
            if me in ch.removed and me in members:
                self._enqueue(_Job(p, ch.added, True, "handoff"))
            elif me in ch.old and me in ch.new:
                if any(cluster.is_up(r) for r in alive_removed):
                    continue  # a live former owner hands it off
                survivors = [o for o in ch.old if o in ch.new and cluster.is_up(o)]
                if survivors and survivors[0] == me:
                    self._enqueue(_Job(p, ch.added, False, "re-replicate"))
        for p in [p for p, h in self.pending.holders.items() if not h]:
            del self.pending.holders[p]

    def _enqueue(self, job: _Job) -> None:
        if self._queue is None:
            return
        if job.reason in _REPLACING:
            for target in job.targets:
                if target != self.cluster.id:
                    self._planned[(target, job.partition)] += 1
        self._queue.put_nowait(job)

    def _unplan(self, job: _Job) -> None:
        if job.reason not in _REPLACING:
            return
        for target in job.targets:
            key = (target, job.partition)
            if key in self._planned:
                self._planned[key] -= 1
                if self._planned[key] <= 0:
                    del self._planned[key]

    # -- what a joining node asks (bootstrap) ------------------------------------
    def planned_for(self, target: str) -> list[int]:
        """Partitions this node has queued or is streaming to ``target`` in its own
        place (a handoff or decommission: ``target`` inherits this node's copy).

        Re-replication and sweep jobs are not announced: a copy from one
        surviving co-owner may lack writes the others have, so the receiver
        must Merkle-sync those partitions with all of them."""
        return sorted(p for (t, p) in self._planned if t == target)

    async def inbound_changed(self, timeout: float) -> None:
        """Return when an ``xf_done`` or ``xf_fail`` for this node arrives, or after
        ``timeout`` seconds (node clock), whichever is first (bootstrap's waiter)."""
        event = self._inbound_changed
        event.clear()
        waiter = asyncio.ensure_future(event.wait())
        tick = asyncio.ensure_future(self.cluster.clock.sleep(timeout))
        try:
            await asyncio.wait((waiter, tick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            tick.cancel()

    # -- receiver-side resume positions ------------------------------------------
    def record_progress(self, tid: str, partition: int, chunks: int) -> None:
        progress = self._progress
        if tid not in progress and len(progress) >= MAX_RESUME_ENTRIES:
            del progress[next(iter(progress))]  # bounded: forget the oldest
        progress[tid] = (partition, chunks)

    def forget_progress(self, tid: str) -> None:
        self._progress.pop(tid, None)

    def dropped(self, partition: int) -> None:
        """This node dropped ``partition``: what it imported of it is gone, so a
        resumed transfer of it must start over (called wherever data is dropped)."""
        for tid in [t for t, (p, _) in self._progress.items() if p == partition]:
            del self._progress[tid]

    def _on_at(self, message: list[Any], peer: PeerInfo) -> int:
        if len(message) != 2 or type(message[1]) is not str:
            raise InvalidRequest("xf_at takes [transfer id]")
        return self._progress.get(message[1], (0, 0))[1]

    def _on_plan(self, message: list[Any], peer: PeerInfo) -> list[int]:
        if len(message) != 1:
            raise InvalidRequest("xf_plan takes no arguments")
        return self.planned_for(peer.node_id)

    async def decommission(self) -> None:
        """Hand every partition this node holds to the owners of the ring without it.

        Called by ``Node.leave()`` before the leave is announced. Waits for
        the transfers; a partition whose transfer fails is left to the
        surviving replicas' re-replication.
        """
        cluster = self.cluster
        future = cluster.ring.without_node(cluster.id)
        jobs = []
        loop = asyncio.get_running_loop()
        for ch in diff(cluster.ring, future).changes:
            if cluster.id in ch.removed and ch.added:
                job = _Job(ch.partition, ch.added, False, "decommission", loop.create_future())
                jobs.append(job)
                self._enqueue(job)
        for job in jobs:
            assert job.done is not None
            await job.done

    # -- the work ---------------------------------------------------------------
    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                while job.partition in self._busy:
                    await self.cluster.clock.sleep(0.05)
                self._busy.add(job.partition)
                try:
                    ok = await self._run(job)
                finally:
                    self._busy.discard(job.partition)
                    self._unplan(job)
                if job.done is not None and not job.done.done():
                    job.done.set_result(ok)
            except asyncio.CancelledError:
                if job.done is not None and not job.done.done():
                    job.done.set_result(False)
                raise
            except Exception:
                log.exception("transfer job for partition %d failed", job.partition)
                self._tell_failed(job.partition, job.targets)
                if job.done is not None and not job.done.done():
                    job.done.set_result(False)
            finally:
                self._queue.task_done()

    async def _run(self, job: _Job) -> bool:
        cluster = self.cluster
        p = job.partition
        services = list(cluster.services.values())
        # what each service held before the stream, to re-send what changed during it
        before = {s.namespace: s.snapshot(p) for s in services} if job.drop else {}
        done: list[str] = []
        for target in job.targets:
            if target == cluster.id:
                continue
            ok = True
            for service in services:
                exported = service.export_partition(p)
                ok = await self._send(service, p, target, exported, job.reason) and ok
            if ok:
                done.append(target)
        all_ok = len(done) == len([t for t in job.targets if t != cluster.id])
        if all_ok and job.drop:
            # catch up with writes that landed during the stream, then drop
            for service in services:
                old = before[service.namespace]
                changed = [k for k, v in service.snapshot(p).items() if old.get(k, _MISSING) != v]
                if changed:
                    records = service.read_records(p, sorted(changed))
                    for target in done:
                        if not await self._send(service, p, target, iter(records), job.reason):
                            all_ok = False  # keep our copy: the sweep retries later
            if all_ok and cluster.id not in cluster.ring.preference_list(p):
                for service in services:
                    service.drop_partition(p)
                self.dropped(p)
                self.metrics_["partitions_dropped"] += 1
        if all_ok:
            self.metrics_["transfers_completed"] += 1
            self._broadcast_done(p, done, job.reason)
        else:
            self.metrics_["transfers_failed"] += 1
            self._tell_failed(p, job.targets)
        return all_ok

    async def _send(
        self,
        service: Service,
        partition: int,
        target: str,
        records: Iterator[Record],
        reason: str = "",
    ) -> bool:
        """Stream one service's partition to ``target``; on failure, resume.

        A retry asks the receiver how many chunks of this transfer it imported
        and continues after them (see the module docstring).
        """
        cluster = self.cluster
        cfg = self.config
        # The first attempt streams lazily from the export (no partition-sized
        # list built in one go, which would stall the event loop); a retry
        # takes what the first attempt took from it (the same chunks, so
        # chunk indexes mean the same on both sides), then the rest.
        source = chunked(records, cfg.chunk_records)
        first = next(source, None)
        if first is None:
            return True
        sent: list[list[Record]] = [first]

        def chunks(start: int) -> Iterator[list[Record]]:
            i = start
            while i < len(sent):
                yield sent[i]
                i += 1
            for chunk in source:
                sent.append(chunk)
                if i >= start:
                    yield chunk
                i += 1

        tid = os.urandom(8).hex()
        delay = cfg.retry_min
        key = (service.namespace, partition, target)
        start = 0
        total = service.partition_size(partition)
        progress = TransferProgress(
            service.namespace, partition, cluster.id, target, cluster.clock.monotonic()
        )
        for attempt in range(cfg.max_attempts):
            progress = TransferProgress(
                service.namespace, partition, cluster.id, target, cluster.clock.monotonic(),
                total=total, reason=reason,
            )  # fmt: skip
            self.active[key] = progress
            self.metrics_["transfers_started"] += 1
            try:
                address = cluster.address_of(target)
                if attempt:
                    start = min(await self._resume_point(address, tid), len(sent))
                    skipped = sum(len(c) for c in sent[:start])
                    self.metrics_["records_not_resent"] += skipped
                    progress.records = skipped  # the receiver has them: the bar goes on
                header = [STREAM_KIND, service.namespace, partition, cluster.id, tid, start]
                stream = self._paced(chunks(start), progress)
                await cluster.transport.send_stream(address, header, stream)
                self._finished(progress, "done")
                return True
            except PeerRingError as exc:
                log.info(
                    "transfer %s/%d to %s failed (attempt %d): %s",
                    service.namespace,
                    partition,
                    target,
                    attempt + 1,
                    exc,
                )
                if target not in cluster.members:
                    self._finished(progress, "failed")
                    return False
                await cluster.clock.sleep(delay)
                delay = min(delay * 2, cfg.retry_max)
            finally:
                self.active.pop(key, None)
        self._finished(progress, "failed")
        return False

    async def _resume_point(self, address: str, tid: str) -> int:
        """Chunks of transfer ``tid`` the receiver imported (0 if it does not know it)."""
        answer = await self.cluster.transport.request(address, [wire.XF_AT, tid])
        if type(answer) is not int or answer < 0:
            raise InvalidRequest(f"bad xf_at answer {answer!r:.40}")
        return answer

    async def _paced(self, chunks: Iterator[list[Record]], progress: TransferProgress) -> Any:
        for chunk in chunks:
            await self._bucket.take(len(chunk))
            await asyncio.sleep(0)  # one chunk per loop pass: foreground requests interleave
            data = _pack(chunk)
            size = len(data)
            await self._byte_bucket.take(size)
            progress.records += len(chunk)
            progress.bytes += size
            self.metrics_["records_sent"] += len(chunk)
            self.metrics_["bytes_sent"] += size
            yield data

    def _broadcast_done(self, partition: int, targets: list[str], reason: str) -> None:
        cluster = self.cluster
        msg = [wire.XF_DONE, partition, cluster.id, targets, reason]
        self.holder_done(partition, cluster.id)
        for mid, member in cluster.members.items():
            if mid != cluster.id:
                cluster.transport.send(member.address, msg)

    def _tell_failed(self, partition: int, targets: tuple[str, ...]) -> None:
        """Tell the targets of a job given up that it will not come (bootstrap waits on it)."""
        cluster = self.cluster
        for target in targets:
            if target == cluster.id:
                continue
            with contextlib.suppress(PeerRingError):
                cluster.transport.send(
                    cluster.address_of(target), [wire.XF_FAIL, partition, cluster.id]
                )

    def _on_done_message(self, message: list[Any], peer: PeerInfo) -> None:
        if (
            len(message) != 5
            or type(message[1]) is not int
            or type(message[2]) is not str
            or type(message[3]) is not list
            or type(message[4]) is not str
        ):
            raise InvalidRequest("xf_done takes [partition, sender, targets, reason]")
        sender = peer.node_id  # the channel's authenticated peer, not the payload's claim
        if sender not in self.cluster.members:
            return
        self.holder_done(message[1], sender)
        if self.cluster.id in message[3] and message[4] in _REPLACING:
            self.inbound_done.setdefault(message[1], set()).add(sender)
            self._inbound_changed.set()

    def _on_fail_message(self, message: list[Any], peer: PeerInfo) -> None:
        if len(message) != 3 or type(message[1]) is not int or type(message[2]) is not str:
            raise InvalidRequest("xf_fail takes [partition, sender]")
        if peer.node_id in self.cluster.members:
            self.inbound_failed.add((message[1], peer.node_id))
            self._inbound_changed.set()

    async def _open_stream(self, header: list[Any], peer: PeerInfo) -> StreamSink:
        ok = len(header) in (4, 6) and type(header[1]) is str and type(header[2]) is int
        if ok and len(header) == 6:
            ok = type(header[4]) is str and type(header[5]) is int and header[5] >= 0
        if not ok:
            raise InvalidRequest(
                "transfer header is [xf, namespace, partition, sender(, transfer id, first chunk)]"
            )
        service = self.cluster.service(header[1])
        if not 0 <= header[2] < self.cluster.ring.partitions:
            raise InvalidRequest(f"partition {header[2]} out of range")
        self.touched(header[2])
        self._receiving[header[2]] += 1
        if len(header) == 6:
            return _ImportSink(self, service, header[2], header[4], header[5])
        return _ImportSink(self, service, header[2])

    def _closed_stream(self, partition: int) -> None:
        self._receiving[partition] -= 1
        if self._receiving[partition] <= 0:
            del self._receiving[partition]

    # -- background ---------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        while True:
            await self.cluster.clock.sleep(self.config.sweep_interval)
            try:
                self.sweep()
            except Exception:
                log.exception("ownership sweep failed")

    def sweep(self) -> int:
        """Queue a handoff for every partition held here but not owned; return how many."""
        cluster = self.cluster
        ring = cluster.ring
        now = cluster.clock.monotonic()
        queued = 0
        for p in range(ring.partitions):
            owners = ring.preference_list(p)
            if cluster.id in owners or p in self._busy:
                continue
            if now - self._last_import.get(p, -1e18) < self.config.sweep_interval:
                continue
            holds = any(
                next(iter(s.export_partition(p)), None) is not None
                for s in cluster.services.values()
            )
            if holds:
                targets = tuple(o for o in owners if cluster.is_up(o))
                if targets:
                    self._enqueue(_Job(p, targets, True, "sweep"))
                    queued += 1
        return queued

    async def _reap_loop(self) -> None:
        while True:
            await self.cluster.clock.sleep(self.config.reap_interval)
            self.reap()

    def reap(self) -> list[str]:
        """Remove members down for longer than ``dead_after`` (discovery backends
        that remove dead members: static)."""
        cluster = self.cluster
        dead_after = cluster.config.dead_after
        if dead_after is None:
            return []
        gone = [
            mid
            for mid in cluster.members
            if mid != cluster.id and cluster.down_for(mid) > dead_after
        ]
        removed = []
        for mid in gone:
            if not cluster.remove_member(mid):
                return []  # the discovery backend decides membership itself
            log.warning("node %s: removing %s, down for over %.0f s", cluster.id, mid, dead_after)
            removed.append(mid)
            self.metrics_["members_reaped"] += 1
        return removed
