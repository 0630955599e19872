"""The framework's side of the app API: :class:`NodeAppContext`, one per service.

``Node.register`` builds one for each service from the node's parts (the
:class:`~peer_ring.cluster.Cluster` view of the node, its quorum
coordinator and bootstrap tracker, and the node's background-task and
metrics registries) and hands it to ``Service.attach``. Everything an
application does to the cluster goes through here; the contract and its
documentation are :class:`peer_ring.service.AppContext`.

Invariants:

* every command that names a partition carries this node's ring epoch
  (``peer_ring.wire.service_frame`` / ``cover_frame``): the receiver fences it;
* coverage never skips a partition silently: each one is answered by an
  owner or the call fails with ``QuorumNotReached``;
* nothing here blocks the loop; the only tasks made are the ones an
  application asks for with ``spawn`` (and one per ``call_replica`` of a
  local command that returns a coroutine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from functools import partial
from typing import Any

from peer_ring import wire
from peer_ring._awaitable import as_future, is_awaitable
from peer_ring.clock import Clock
from peer_ring.cluster import Cluster
from peer_ring.errors import QuorumNotReached, RingMismatch, TransportError
from peer_ring.hlc import HLC, SkewPolicy
from peer_ring.replication.bootstrap import Bootstrap
from peer_ring.replication.coordinator import Coordinator, Round, RoundBatch
from peer_ring.service import (
    AppContext,
    CompleteCallback,
    CountedReads,
    Metric,
    QuorumBatch,
    QuorumResult,
    RoundListener,
    future_outcome,
)

__all__ = ["Background", "NodeAppContext", "NodeQuorumBatch"]

log = logging.getLogger(__name__)

#: ``Ring.partition_for``'s hash (``peer_ring.ring._hash.key_hash``): a C
#: static in the compiled build

#: ``collect()`` of one service's metrics, with the service's namespace.
MetricsSource = tuple[str, Callable[[], Iterable[Metric]]]


class Background:
    """Background tasks that live as long as the node runs (``AppContext.spawn``)."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], Coroutine[Any, Any, None]], str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False

    def spawn(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        if self._running:
            self._start(factory, name)
        else:
            self._pending.append((factory, name))

    def start(self) -> None:
        """Called by ``Node.start``: start every task asked for so far."""
        self._running = True
        pending, self._pending = self._pending, []
        for factory, name in pending:
            self._start(factory, name)

    async def stop(self) -> None:
        """Called by ``Node.stop`` before the services close: cancel and await all."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _start(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        task = asyncio.get_running_loop().create_task(factory(), name=name)
        self._tasks.add(task)
        task.add_done_callback(partial(self._done, name))

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", name, exc_info=task.exception())


class NodeQuorumBatch(QuorumBatch):
    """:meth:`NodeAppContext.batch`: rounds of the node's coordinator held in a
    :class:`~peer_ring.replication.coordinator.RoundBatch` until ``flush``."""

    __slots__ = ("_batch", "_coordinator", "_namespace")

    def __init__(self, namespace: str, coordinator: Coordinator) -> None:
        self._namespace = namespace
        self._coordinator = coordinator
        self._batch: RoundBatch = coordinator.batch(namespace)

    def add(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: RoundListener,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> None:
        self._coordinator.start(
            self._namespace,
            key,
            command,
            payload,
            quorum=quorum,
            n=n,
            timeout=timeout,
            partition=partition,
            on_complete=on_complete,
            sloppy=sloppy,
            applied=applied,
            listener=listener,
            batch=self._batch,
        )

    def add_counted(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: Callable[[int, BaseException | None], None],
        index: int,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        coordinator = self._coordinator
        if partition is None:
            partition = coordinator.partition_for(key)
        coordinator.start_counted(
            self._batch, key, command, payload, quorum, listener, index, partition, timeout
        )

    def add_read(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        reads: CountedReads,
        index: int,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        coordinator = self._coordinator
        if partition is None:
            partition = coordinator.partition_for(key)
        coordinator.start_read(
            self._batch, key, command, payload, quorum, reads, index, partition, timeout
        )

    def call(
        self,
        node_id: str,
        command: str,
        key: bytes,
        payload: Any,
        done: Callable[[Any, BaseException | None], None],
        partition: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """A one-target round of quorum 1 held in the batch (remote), or the
        command run here at once (``node_id`` is this node)."""
        coordinator = self._coordinator
        cluster = coordinator.cluster
        try:
            cluster.raise_if_stopped()
            p = coordinator.partition_for(key) if partition is None else partition
            me = cluster.id
            if node_id == me:
                result = cluster.handle_local(self._namespace, command, key, p, payload, me)
                if is_awaitable(result):
                    fut = as_future(result, coordinator.running_loop())
                    fut.add_done_callback(partial(future_outcome, done))
                else:
                    done(result, None)
                return
            address = cluster.address_of(node_id)
        except Exception as exc:
            done(None, exc)
            return
        batch = self._batch
        rnd = Round(
            coordinator.running_loop(), (node_id,), 1, partial(_called, done, node_id), None
        )
        batch.hold(node_id, address, rnd, -1, command, key, p, payload, batch.deadline(timeout))
        rnd.dispatched()

    def flush(self) -> None:
        self._batch.flush()


def _called(
    done: Callable[[Any, BaseException | None], None],
    node_id: str,
    result: QuorumResult | None,
    exc: BaseException | None,
) -> None:
    """:meth:`NodeQuorumBatch.call`'s round decided: the replica's answer, or
    the replica's own error (not the round's QuorumNotReached)."""
    if result is not None:
        done(result.acks[0][1], None)
        return
    if isinstance(exc, QuorumNotReached):
        exc = exc.errors.get(node_id, exc)
    done(None, exc)


class NodeAppContext(AppContext):
    """The :class:`~peer_ring.service.AppContext` of one service on one node."""

    def __init__(
        self,
        namespace: str,
        cluster: Cluster,
        coordinator: Coordinator,
        bootstrap: Bootstrap,
        background: Background,
        metrics: list[MetricsSource],
        hlc: HLC | None = None,
    ) -> None:
        self._namespace = namespace
        self._cluster = cluster
        self._coordinator = coordinator
        self._bootstrap = bootstrap
        self._background = background
        self._metrics = metrics
        self._hlc = hlc if hlc is not None else HLC(cluster.clock, policy=SkewPolicy.ACCEPT)
        #: the bootstrap is over for good (``done`` set, nothing held back): the
        #: readiness checks then read this native flag, not its interpreted fields
        self._boot_over = False

    # -- identity, time, defaults ----------------------------------------------------
    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def node_id(self) -> str:
        return self._cluster.id

    @property
    def clock(self) -> Clock:
        return self._cluster.clock

    @property
    def hlc(self) -> HLC:
        return self._hlc

    @property
    def replicas(self) -> int:
        return self._cluster.ring.replicas

    @property
    def read_quorum(self) -> int:
        return self._cluster.config.replication.read_quorum

    @property
    def write_quorum(self) -> int:
        return self._cluster.config.replication.write_quorum

    @property
    def request_timeout(self) -> float:
        return self._cluster.config.transport_config.request_timeout

    @property
    def partitions(self) -> int:
        return self._cluster.ring.partitions

    # -- placement and readiness ----------------------------------------------------
    def partition_for(self, key: bytes) -> int:
        return self._coordinator.partition_for(key)

    def owners(self, partition: int, n: int | None = None) -> tuple[str, ...]:
        return self._coordinator.targets(partition, n)

    def is_up(self, node_id: str) -> bool:
        return self._cluster.is_up(node_id)

    def ready(self, partition: int) -> bool:
        return self._boot_over or self._boot_ready(partition)

    def coordinates(self, partition: int, n: int | None = None) -> bool:
        # ``node_id in owners(partition, n) and ready(partition)``, natively
        if self._cluster.id not in self._coordinator.targets(partition, n):
            return False
        return self._boot_over or self._boot_ready(partition)

    def _boot_ready(self, partition: int) -> bool:
        """``ready(partition)`` from the bootstrap's fields; notes when it is
        over for good (``done`` set: it never holds anything back again)."""
        boot = self._bootstrap
        # ``not boot.active or ...`` without the interpreted property (active is
        # ``settling or bool(syncing)``): the same answer, two attribute reads
        if boot.settling or boot.syncing:
            return not boot.settling and partition not in boot.syncing
        if boot.done.is_set():
            self._boot_over = True
        return True

    def solo(self, partition: int, quorum: int, write: bool) -> bool:
        # while bootstrapping, rounds take start_quorum (which refuses what it
        # must); ``boot.active`` read without a call into its interpreted property
        if not self._boot_over:
            boot = self._bootstrap
            if boot.settling or boot.syncing:
                return False
            if boot.done.is_set():
                self._boot_over = True
        return self._coordinator.solo(partition, quorum, write)

    # -- quorum rounds ---------------------------------------------------------------
    def start_quorum(
        self,
        command: str,
        key: bytes,
        payload: Any,
        quorum: int,
        listener: RoundListener,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> None:
        self._coordinator.start(
            self._namespace,
            key,
            command,
            payload,
            quorum=quorum,
            n=n,
            timeout=timeout,
            partition=partition,
            on_complete=on_complete,
            sloppy=sloppy,
            applied=applied,
            listener=listener,
        )

    def quorum(
        self,
        command: str,
        key: bytes,
        payload: Any,
        *,
        quorum: int,
        n: int | None = None,
        partition: int | None = None,
        timeout: float | None = None,
        on_complete: CompleteCallback | None = None,
        sloppy: bool | None = None,
        applied: bool = False,
    ) -> Coroutine[Any, Any, QuorumResult]:
        # the coordinator's own coroutine, not one wrapping it: a frame less
        # per awaited round (the embedded read and write paths)
        return self._coordinator.run(
            self._namespace,
            key,
            command,
            payload,
            quorum=quorum,
            n=n,
            timeout=timeout,
            partition=partition,
            on_complete=on_complete,
            sloppy=sloppy,
            applied=applied,
        )

    def batch(self) -> QuorumBatch:
        return NodeQuorumBatch(self._namespace, self._coordinator)

    # -- chosen replicas ---------------------------------------------------------------
    def call_replica(
        self,
        node_id: str,
        command: str,
        key: bytes,
        payload: Any,
        *,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[Any]:
        cluster = self._cluster
        cluster.raise_if_stopped()
        p = self._coordinator.partition_for(key) if partition is None else partition
        me = cluster.id
        loop = self._coordinator.running_loop()
        if node_id == me:
            fut: asyncio.Future[Any] = loop.create_future()
            try:
                result = cluster.handle_local(self._namespace, command, key, p, payload, me)
            except Exception as exc:
                fut.set_exception(exc)
                return fut
            if is_awaitable(result):
                return as_future(result, loop)
            fut.set_result(result)
            return fut
        msg = wire.service_frame(self._namespace, command, key, p, payload, me, cluster.ring.epoch)
        try:
            address = cluster.address_of(node_id)
        except Exception as exc:
            failed: asyncio.Future[Any] = loop.create_future()
            failed.set_exception(exc)
            return failed
        return cluster.transport.request_future(address, msg, timeout)

    async def call_owners(
        self,
        command: str,
        key: bytes,
        payload: Any,
        *,
        partition: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        p = self._cluster.ring.partition_for(key) if partition is None else partition
        owners = self.owners(p)
        futs = [
            self.call_replica(o, command, key, payload, partition=p, timeout=timeout)
            for o in owners
        ]
        answers = await asyncio.gather(*futs, return_exceptions=True)
        return dict(zip(owners, answers, strict=True))

    # -- coverage --------------------------------------------------------------------------
    def _ask(
        self, node_id: str, command: str, partitions: list[int], payload: Any, timeout: float | None
    ) -> asyncio.Future[Any]:
        cluster = self._cluster
        me = cluster.id
        if node_id == me:
            loop = self._coordinator.running_loop()
            fut: asyncio.Future[Any] = loop.create_future()
            try:
                result = cluster.handle_local(self._namespace, command, b"", -1, payload, me)
            except Exception as exc:
                fut.set_exception(exc)
                return fut
            if is_awaitable(result):
                return as_future(result, loop)
            fut.set_result(result)
            return fut
        msg = wire.cover_frame(
            self._namespace, command, partitions, payload, me, cluster.ring.epoch
        )
        return cluster.transport.request_future(cluster.address_of(node_id), msg, timeout)

    async def coverage(
        self,
        command: str,
        make_payload: Callable[[list[int]], Any],
        *,
        partitions: Sequence[int] | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        cluster = self._cluster
        cluster.raise_if_stopped()
        ring = cluster.ring
        if partitions is None:
            down = [m for m in ring.node_ids if not cluster.is_up(m)]
            groups: dict[str, list[int]] | None = {
                nid: list(parts) for nid, parts in ring.covering_set(exclude=down).items() if parts
            }
            covered = {p for parts in groups.values() for p in parts} if groups else set()
            if len(covered) != ring.partitions:
                groups = None  # no live cover of everything: ask owner by owner
            pending = list(range(ring.partitions))
        else:
            groups = None
            pending = list(partitions)
        failed: dict[str, BaseException] = {}
        results: list[Any] = []
        while pending:
            if groups is None:
                groups = {}
                for p in pending:
                    owners = [o for o in ring.preference_list(p) if o not in failed]
                    if not owners:
                        raise QuorumNotReached(
                            1,
                            0,
                            dict(failed),
                            message=f"no replica of partition {p} answered {command}",
                        )
                    choice = next((o for o in owners if cluster.is_up(o)), owners[0])
                    groups.setdefault(choice, []).append(p)
            names = list(groups)
            futs = []
            for nid in names:
                try:
                    futs.append(
                        self._ask(nid, command, groups[nid], make_payload(groups[nid]), timeout)
                    )
                except TransportError as exc:
                    fut: asyncio.Future[Any] = self._coordinator.running_loop().create_future()
                    fut.set_exception(exc)
                    futs.append(fut)
            answers = await asyncio.gather(*futs, return_exceptions=True)
            pending = []
            for nid, answer in zip(names, answers, strict=True):
                if isinstance(answer, TransportError | RingMismatch):
                    failed[nid] = answer
                    pending.extend(groups[nid])
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    results.append(answer)
            groups = None
        return results

    async def broadcast(
        self, command: str, payload: Any, *, timeout: float | None = None
    ) -> dict[str, Any]:
        cluster = self._cluster
        cluster.raise_if_stopped()
        ids = sorted(cluster.ring.node_ids) or [cluster.id]
        futs = []
        for nid in ids:
            try:
                futs.append(self._ask(nid, command, [], payload, timeout))
            except Exception as exc:
                fut: asyncio.Future[Any] = self._coordinator.running_loop().create_future()
                fut.set_exception(exc)
                futs.append(fut)
        answers = await asyncio.gather(*futs, return_exceptions=True)
        return dict(zip(ids, answers, strict=True))

    # -- lifecycle and observability -------------------------------------------------------
    def spawn(self, factory: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._background.spawn(factory, f"{self._namespace}:{name}")

    def create_future(self) -> asyncio.Future[Any]:
        return self._coordinator.running_loop().create_future()

    def add_metrics(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._metrics.append((self._namespace, collect))
