"""The node: composition root of config, discovery, ring, transport and services.

``async with Node(config) as node:`` starts a node and stops it cleanly. A
node:

* listens on its peer transport and answers pings, member exchanges, status
  queries and service commands;
* follows its discovery backend's member views and recomputes the ring (a
  pure function of the member set) whenever the set changes;
* runs a local failure detector fed by transport health and periodic pings:
  a down member keeps its place in the ring, the node routes around it;
* routes ``node.call(namespace, key, command, payload)`` to the key's owners,
  handling it locally when it is one, and exposes a quorum
  :class:`~peer_ring.replication.coordinator.Coordinator` for services.

The node answers the peer operations of :data:`peer_ring.wire.NODE_OPS`
(ping, member exchange, status, service, dual-write and coverage commands);
the replication subsystems register their own (``peer_ring.wire``).

Ring epoch fencing: service and coverage commands carry the sender's ring
epoch. A receiver whose epoch differs counts the mismatch and starts a
member exchange with the sender (both views converge); it still serves when
it owns the partitions in its own view, and otherwise answers
:class:`~peer_ring.errors.RingMismatch` so the sender tries the next owner.
Views legitimately differ for a moment during joins, so a mismatch alone
never fails a request.

Composition root: the node implements :class:`~peer_ring.cluster.Cluster`
and builds the replication subsystems on it, wiring each to the ones it
needs (``node.transfers``, ``node.hints``, ``node.antientropy``,
``node.bootstrap``, ``node.coordinator``; see ``docs/handoff.md``). Each
service gets its :class:`~peer_ring.service.AppContext` from
:meth:`Node.register`. The discovery backend is used through its capability
flags (``exchanges_members``, ``removes_dead_members``), never by class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from peer_ring import wire
from peer_ring._appcontext import Background, MetricsSource, NodeAppContext
from peer_ring._awaitable import is_awaitable
from peer_ring.clock import Clock, SystemClock
from peer_ring.cluster import Cluster, PeerHandler, RingListener
from peer_ring.config import HandoffConfig, NodeConfig
from peer_ring.errors import (
    ClosedError,
    ConfigError,
    InvalidRequest,
    NotAuthorized,
    NotOwner,
    PeerRingError,
    PeerUnavailable,
    RequestTimeout,
    RingMismatch,
    UnknownCommand,
    error_to_wire,
)
from peer_ring.hlc import HLC, SkewPolicy
from peer_ring.membership.base import Discovery, Member, MemberState, View
from peer_ring.membership.failure import FailureDetector
from peer_ring.membership.static import StaticDiscovery  # the embedded default
from peer_ring.replication.antientropy import AntiEntropy
from peer_ring.replication.bootstrap import Bootstrap
from peer_ring.replication.coordinator import Coordinator
from peer_ring.replication.hints import HintStore
from peer_ring.replication.transfer import TransferManager
from peer_ring.ring import Ring
from peer_ring.service import Metric, Request, Service
from peer_ring.transport import (
    ChannelTransport,
    FaultInjector,
    MemoryNetwork,
    PeerInfo,
    StreamHandler,
    StreamSink,
    Transport,
    create_transport,
)

log = logging.getLogger(__name__)

__all__ = ["Node", "PeerHandler", "RingListener", "build_transport"]

S = TypeVar("S", bound=Service)

#: Seconds of sampled quorum rounds behind the latency percentiles of ``Node.load``.
LATENCY_WINDOW = 10.0


def build_transport(
    config: NodeConfig,
    *,
    network: MemoryNetwork | None = None,
    faults: FaultInjector | None = None,
) -> ChannelTransport:
    """Create the transport named by ``config.transport``."""
    if config.transport == "memory":
        if network is None:
            raise ConfigError("the memory transport needs a MemoryNetwork")
        return create_transport(
            "memory", config.node_id, config.listen, config.transport_config,
            faults=faults, network=network,
        )  # fmt: skip
    return create_transport(
        config.transport, config.node_id, config.listen, config.transport_config, faults=faults
    )


class Node(Cluster):
    """One peer-ring node. See the module docstring."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        discovery: Discovery | None = None,
        transport: Transport | None = None,
        network: MemoryNetwork | None = None,
        clock: Clock | None = None,
        handoff: HandoffConfig | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.faults = FaultInjector() if config.testing else None
        self.transport: Transport = transport or build_transport(
            config, network=network, faults=self.faults
        )
        self.discovery: Discovery = discovery or StaticDiscovery(
            config.seeds,
            interval=config.member_sync_interval,
            start_timeout=config.discovery_start_timeout,
            clock=self.clock,
        )
        self.detector = FailureDetector(self.clock, config.failure)
        self._services: dict[str, Service] = {}
        self._background = Background()
        self._app_metrics: list[MetricsSource] = []
        self._members: dict[str, Member] = {}
        self._by_address: dict[str, str] = {}
        self._ring_listeners: list[RingListener] = []
        self._peer_handlers: dict[str, PeerHandler] = {}
        self._stream_handlers: dict[str, StreamHandler] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}
        #: the bootstrap finished (its ``done`` is set and nothing is held back):
        #: it never gates a command again, so the hot path reads only this flag
        #: (a native field) instead of the interpreted bootstrap's fields
        self._boot_over = False
        self._fence = {"epoch_mismatches": 0, "requests_fenced": 0, "member_syncs": 0}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = False
        self._ready = asyncio.Event()
        self.local: Member | None = None
        rep = config.replication
        self.ring = Ring((), partitions=rep.partitions, replicas=rep.replicas)
        self.started_at = 0.0
        self.handoff = handoff or config.handoff
        # the replication subsystems, each given the ones it needs
        self.transfers = TransferManager(self, self.handoff)
        self.hints = HintStore(self, self.handoff, self.transfers)
        self.antientropy = AntiEntropy(self, self.handoff, self._partition_busy)
        self.bootstrap = Bootstrap(
            self,
            self.transfers,
            self.antientropy.sync,
            differing=self.antientropy.differing,
            timeout=self.handoff.bootstrap_timeout,
            settle=max(0.5, 2 * config.member_sync_interval),
        )
        self.coordinator = Coordinator(self, self.handoff, self.hints, self.transfers)
        self.hlc = HLC(self.clock, policy=SkewPolicy.ACCEPT)

    # -- lifecycle -------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.started_at = self.clock.monotonic()
        self.transport.set_handler(self._dispatch)
        self.transport.set_stream_handler(self._dispatch_stream)
        self.transport.add_observer(self._on_peer_health)
        await self.transport.start()
        cfg = self.config
        self.local = Member(
            id=cfg.node_id,
            address=cfg.advertise or self.transport.address,
            zone=cfg.zone,
            weight=cfg.weight,
            # a restart counter that needs no disk: the start time in ms
            incarnation=int(self.clock.time() * 1000),
            meta=dict(cfg.meta),
        )
        if self.discovery.exchanges_members:
            self.discovery.bind(self._exchange_members)
        try:
            await self.discovery.start(self.local)
        except BaseException:
            await self.transport.close()
            raise
        self._apply_view(self.discovery.members())
        self.transfers.start()
        self.hints.start()
        self.antientropy.start()
        self._boot_over = False
        self.bootstrap.start()
        self._background.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow_discovery()))
        self._tasks.append(loop.create_task(self._ping_loop()))
        self._ready.set()
        log.info("node %s up at %s with %d members", cfg.node_id, self.address, len(self._members))

    async def stop(self) -> None:
        """Stop serving: discovery, background tasks, services, transport.

        A stop is a temporary absence, not a leave: the node keeps its place
        in the other nodes' rings (see :meth:`leave` for decommissioning).
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        try:
            await asyncio.wait_for(self._stop(), self.config.stop_timeout)
        except TimeoutError:
            log.warning("node %s: graceful stop timed out", self.config.node_id)
            await self.transport.close()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for sync in list(self._syncing.values()):
            sync.cancel()
        await self.bootstrap.stop()
        await self.antientropy.stop()
        await self.hints.stop()
        await self.transfers.stop()
        await self._background.stop()
        for service in self._services.values():
            try:
                await service.close()
            except Exception:
                log.exception("service %s failed to close", service.namespace)
        with contextlib.suppress(Exception):
            await self.discovery.stop()
        await self.transport.close()

    @property
    def ready(self) -> bool:
        """True once started (discovery seen, ring built, owned partitions synced
        after a restart) and until stopped."""
        return self._ready.is_set() and self.bootstrap.done.is_set() and not self._stopped

    async def leave(self) -> None:
        """Decommission: hand every partition over, then leave the cluster for good.

        First streams each partition this node holds to its owners in the
        ring without this node (see :meth:`TransferManager.decommission`),
        then announces the leave; with static discovery it spreads by member
        exchange and the other nodes drop this node from their rings. Stop
        the node afterwards.
        """
        await self.transfers.decommission()
        await self.discovery.leave()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the node serves fresh data: started, settled and synced."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()
            await self.bootstrap.done.wait()

    # -- identity and view -----------------------------------------------
    @property
    def id(self) -> str:
        return self.config.node_id

    @property
    def address(self) -> str:
        return self.local.address if self.local is not None else self.transport.address

    @property
    def members(self) -> dict[str, Member]:
        """Current members (id -> member), this node included."""
        return dict(self._members)

    def member_state(self, member_id: str) -> MemberState:
        """UP/DOWN from the local failure detector; SUSPECT and LEFT too when a
        gossip backend (SWIM) reports them -- a suspect is still routed to."""
        if member_id == self.id:
            return MemberState.UP
        state = self.detector.state(member_id)
        if state is MemberState.UP:
            gossip = self._gossip_states().get(member_id)
            if gossip is not None and gossip.member_state is not MemberState.UP:
                return MemberState(gossip.member_state)
        return state

    def _gossip_states(self) -> dict[str, Any]:
        """The discovery backend's own member states (SWIM gossips them), else {}."""
        return dict(self.discovery.states())

    def is_up(self, member_id: str) -> bool:
        return member_id == self.id or self.detector.is_up(member_id)

    @property
    def any_down(self) -> bool:
        return self.detector.any_down

    def down_for(self, member_id: str) -> float:
        return self.detector.down_for(member_id)

    def remove_member(self, member_id: str) -> bool:
        if not self.discovery.removes_dead_members:
            return False
        self.discovery.remove(member_id)
        return True

    def _partition_busy(self, partition: int) -> bool:
        """Another subsystem is bringing ``partition`` up to date (anti-entropy skips it)."""
        boot = self.bootstrap
        return boot.settling or partition in boot.syncing or self.transfers.moving(partition)

    def address_of(self, member_id: str) -> str:
        member = self._members.get(member_id)
        if member is None:
            raise PeerUnavailable(f"unknown member {member_id}")
        return member.address

    def add_peer_handler(self, op: str, handler: PeerHandler) -> None:
        """Let a framework subsystem (transfer, anti-entropy, hints) or the process
        running the node (admin operations) answer its own peer messages
        ``[op, ...]``. The handler gets the whole message and the sender; like
        service handlers it returns a value or a coroutine and must not block.
        The node's own operations (``wire.NODE_OPS``) and any operation taken
        already are refused with ConfigError."""
        if op in wire.NODE_OPS or op in self._peer_handlers:
            raise ConfigError(f"peer operation {op!r} is already taken")
        self._peer_handlers[op] = handler

    def add_stream_handler(self, kind: str, handler: StreamHandler) -> None:
        """Let a subsystem accept incoming streams whose header is ``[kind, ...]``."""
        if kind in self._stream_handlers:
            raise ConfigError(f"stream kind {kind!r} is already taken")
        self._stream_handlers[kind] = handler

    async def _dispatch_stream(self, header: Any, peer: PeerInfo) -> StreamSink:
        if not peer.member:
            raise NotAuthorized(f"{peer.node_id} is not an authenticated member: stream refused")
        if type(header) is not list or not header or type(header[0]) is not str:
            raise InvalidRequest("a stream header must be a non-empty array naming its kind")
        handler = self._stream_handlers.get(header[0])
        if handler is None:
            raise UnknownCommand(f"unknown stream kind {header[0]!r}")
        return await handler(header, peer)

    def on_ring_change(self, listener: RingListener) -> None:
        """Register a listener called with ``(old, new)`` after each ring change."""
        self._ring_listeners.append(listener)

    def _apply_view(self, view: View) -> None:
        members = dict(view)
        if self.local is not None:
            members[self.local.id] = self.local
        old_ids = set(self._members)
        self._members = members
        self._by_address = {m.address: mid for mid, m in members.items()}
        for mid in members:
            if mid != self.id:
                self.detector.track(mid)
        for mid in old_ids - set(members):
            self.detector.forget(mid)
        # placement depends on (id, zone, weight) only: most view updates (a
        # restart's new incarnation, the initial view repeated by subscribe())
        # leave the ring as it is, so skip building one (~5-10 ms at 5-50 nodes)
        placement = sorted((m.id, m.zone, float(m.weight)) for m in members.values())
        current = [(n.id, n.zone, float(n.weight)) for n in self.ring.nodes]
        if placement == current:
            return
        rep = self.config.replication
        new_ring = Ring.from_members(
            members.values(), partitions=rep.partitions, replicas=rep.replicas
        )
        if new_ring.checksum != self.ring.checksum:
            old, self.ring = self.ring, new_ring
            log.info(
                "node %s: ring epoch %s with %d members",
                self.id,
                new_ring.epoch,
                len(new_ring.node_ids),
            )
            for listener in self._ring_listeners:
                try:
                    listener(old, new_ring)
                except Exception:
                    log.exception("ring listener failed")

    async def _follow_discovery(self) -> None:
        async for view in self.discovery.subscribe():
            self._apply_view(view)

    # -- failure detection ------------------------------------------------
    def _on_peer_health(self, address: str, ok: bool, err: BaseException | None) -> None:
        mid = self._by_address.get(address)
        if mid is None:
            return
        if ok:
            self.detector.success(mid)
        elif not isinstance(err, RequestTimeout):
            # a timeout is counted where the request was made: a ping's by
            # _ping_done (counting it here too made one lost ping two failures)
            self.detector.failure(mid, definite=isinstance(err, PeerUnavailable))

    async def _ping_loop(self) -> None:
        cfg = self.config.failure
        pending: dict[str, asyncio.Future[Any]] = {}
        while True:
            await self.clock.sleep(cfg.ping_interval)
            for mid, member in list(self._members.items()):
                if mid == self.id or mid in pending:
                    continue
                if self.detector.is_up(mid) and not self.detector.needs_ping(mid):
                    continue
                fut = self.transport.request_future(
                    member.address, wire.ping_frame(), cfg.ping_timeout
                )
                pending[mid] = fut
                fut.add_done_callback(partial(self._ping_done, mid, pending))

    def _ping_done(self, mid: str, pending: dict[str, Any], fut: asyncio.Future[Any]) -> None:
        pending.pop(mid, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.detector.success(mid)
        else:
            self.detector.failure(mid, definite=isinstance(exc, PeerUnavailable))

    # -- static discovery exchange ------------------------------------------
    async def _exchange_members(
        self, address: str, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        reply = await self.transport.request(address, ["m", records])
        if not isinstance(reply, list):
            raise InvalidRequest("member exchange answered with a non-list")
        return reply

    # -- services ----------------------------------------------------------
    def register(self, service: S) -> S:
        """Register ``service`` under its namespace (before or after start) and
        give it its :class:`~peer_ring.service.AppContext`; returns the service."""
        ns = service.namespace
        if not ns:
            raise ConfigError("a service needs a non-empty namespace")
        if ns in self._services:
            raise ConfigError(f"a service is already registered under {ns!r}")
        self._services[ns] = service
        service.attach(
            NodeAppContext(
                ns,
                self,
                self.coordinator,
                self.bootstrap,
                self._background,
                self._app_metrics,
                self.hlc,
            )
        )
        return service

    def app_metrics(self) -> Iterable[tuple[str, Metric]]:
        """Every service's exported figures as ``(namespace, metric)`` (``/metrics``)."""
        for ns, collect in list(self._app_metrics):
            try:
                for metric in collect():
                    yield ns, metric
            except Exception:
                log.exception("metrics of service %s failed", ns)

    def service(self, namespace: str) -> Service:
        try:
            return self._services[namespace]
        except KeyError:
            raise UnknownCommand(f"no service registered under {namespace!r}") from None

    def find_service(self, namespace: str) -> Service | None:
        """The service registered under ``namespace``, or None (no copy: hot path)."""
        return self._services.get(namespace)

    @property
    def services(self) -> dict[str, Service]:
        return dict(self._services)

    def handle_local(
        self, namespace: str, command: str, key: bytes, partition: int, payload: Any, origin: str
    ) -> Any:
        """Run a command on this node's replica (sync value or coroutine)."""
        service = self._services.get(namespace)
        if service is None:
            raise UnknownCommand(f"no service registered under {namespace!r}")
        # the bootstrap's fields only until it is over for good (a native flag after)
        if (
            not self._boot_over
            and self._boot_gating()
            and command in service.fresh_refused_commands
        ):
            self.bootstrap.check(partition)
        return service.handle(Request(command, key, partition, payload, origin))

    def _boot_gating(self) -> bool:
        """``bootstrap.active``, noting when the bootstrap is over for good (its
        ``done`` set: it never holds anything back again), after which the hot
        paths skip the bootstrap altogether (``_boot_over``)."""
        boot = self.bootstrap
        # its fields, not its ``active`` property: an interpreted call less
        if boot.settling or boot.syncing:
            return True
        if boot.done.is_set():
            self._boot_over = True
        return False

    async def call(
        self,
        namespace: str,
        key: bytes | str,
        command: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``command`` on the first live owner of ``key`` in preference order
        (the primary while it is up), locally when that owner is this node.

        Every node routes a key to the same owner, so a service that keeps a
        single copy (a counter, a lock) sees all of a key's commands in one
        place; replicated services use :attr:`coordinator` instead.
        """
        if self._stopped:
            raise ClosedError("node stopped")
        k = key.encode() if isinstance(key, str) else key
        partition = self.ring.partition_for(k)
        owners = self.ring.preference_list(partition)
        if not owners:
            raise PeerUnavailable("the ring is empty")
        ordered = self.routing_order(partition)
        msg = wire.service_frame(
            namespace, command, k, partition, payload, self.id, self.ring.epoch
        )
        last: BaseException | None = None
        for owner in ordered:
            if owner == self.id:
                result = self.handle_local(namespace, command, k, partition, payload, self.id)
                if is_awaitable(result):
                    result = await result
                return result
            try:
                return await self.transport.request(self.address_of(owner), msg, timeout)
            except RingMismatch as exc:
                self.sync_members_with(owner)
                last = exc
            except (PeerUnavailable, RequestTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def routing_order(self, partition: int) -> list[str]:
        """Where ``node.call`` tries a partition's commands, best first.

        Live owners in preference order (the same order on every node with
        the same ring, so single-copy services see a key's commands in one
        place), then old holders still handing the partition off, then down
        owners. The pending-transfer view is per node, so it only decides the
        last resorts, never the first choice.
        """
        owners = self.ring.preference_list(partition)
        holders = sorted(h for h in self.transfers.holders_of(partition) if h not in owners)
        up = [o for o in owners if self.is_up(o)]
        return up + [h for h in holders if self.is_up(h)] + [o for o in owners if o not in up]

    def sync_members_with(self, member_id: str) -> None:
        """Start one member exchange with ``member_id`` (after a ring-epoch mismatch).

        At most one exchange per peer runs at a time; with discovery backends
        other than static, views converge through the backend and this is a no-op.
        """
        member = self._members.get(member_id)
        if member is None or not self.discovery.exchanges_members:
            return
        self._sync_address(member.address)

    def _sync_address(self, address: str) -> asyncio.Task[None] | None:
        running = self._syncing.get(address)
        if running is not None:
            return running
        if self._stopped or not self.discovery.exchanges_members:
            return None
        discovery = self.discovery
        self._fence["member_syncs"] += 1

        async def run() -> None:
            try:
                discovery.merge(await self._exchange_members(address, discovery.records()))
                self._apply_view(discovery.members())  # now, not on the next view event
            except PeerRingError as exc:
                log.debug("member sync with %s failed: %s", address, exc)
            finally:
                self._syncing.pop(address, None)

        task = asyncio.get_running_loop().create_task(run())
        self._syncing[address] = task
        return task

    def _fenced(self, partition: int) -> bool:
        return (
            0 <= partition < self.ring.partitions
            and self.id not in self.ring.preference_list(partition)
            and self.id not in self.transfers.holders_of(partition)
        )

    def _fenced_any(self, partitions: list[int]) -> bool:
        return any(self._fenced(p) for p in partitions)

    def _fence_check(
        self, epoch: Any, partitions: list[int], peer: PeerInfo
    ) -> asyncio.Task[None] | bool | None:
        """Epoch fencing: False to serve now, else the member sync to wait for
        (a task or None) before deciding again."""
        if epoch is None or epoch == self.ring.epoch:
            return False  # same view (or a diagnostic probe without an epoch)
        self._fence["epoch_mismatches"] += 1
        sync = self._sync_address(peer.address)
        if not self._fenced_any(partitions):
            return False  # we own them in our view: serve (views converge meanwhile)
        # not an owner in our view: our view may be the stale one (a join in
        # progress), so sync first, then decide
        return sync

    async def _after_sync(
        self,
        sync: asyncio.Task[None] | None,
        epoch: Any,
        partitions: list[int],
        serve: partial[Any],
    ) -> Any:
        if sync is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(sync), self.config.transport_config.request_timeout / 2
                )
        fenced = [p for p in partitions if self._fenced(p)]
        if fenced:
            self._fence["requests_fenced"] += 1
            raise RingMismatch(
                f"{self.id} does not own partition(s) {fenced[:8]} at ring epoch "
                f"{self.ring.epoch} (sender's epoch {epoch})"
            )
        result = serve()
        if is_awaitable(result):
            result = await result
        return result

    def _serve_service(self, message: list[Any], peer: PeerInfo) -> Any:
        """``["s", ...]``: a command for this node's replica of one key, fenced."""
        ns, command, key, partition, payload, origin, epoch = wire.parse_service(message)
        if epoch is None or epoch == self.ring.epoch:  # the hot path: same view
            return self.handle_local(ns, command, key, partition, payload, origin)
        fence = self._fence_check(epoch, [partition], peer)
        serve = partial(self.handle_local, ns, command, key, partition, payload, origin)
        if fence is False:
            return serve()
        assert fence is not True
        return self._after_sync(fence, epoch, [partition], serve)

    def _serve_batch(self, message: list[Any], peer: PeerInfo) -> Any:
        """``["sb", ...]``: several commands for this node's replicas, applied in
        the order sent, in one pass; each answered (or failed) on its own.
        Fenced per command: after a ring disagreement only the commands of
        partitions this node does not own fail (``RingMismatch``)."""
        batch = wire.parse_batch(message)
        epoch = batch.epoch
        if epoch is None or epoch == self.ring.epoch:  # the hot path: same view
            return self._apply_batch(batch, None)
        partitions = batch.items[2::4]
        fence = self._fence_check(epoch, partitions, peer)
        if fence is False:
            return self._apply_batch(batch, None)
        assert fence is not True
        return self._batch_after_sync(fence, batch)

    async def _batch_after_sync(self, sync: asyncio.Task[None] | None, batch: wire.Batch) -> Any:
        if sync is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(sync), self.config.transport_config.request_timeout / 2
                )
        fenced = {p for p in batch.items[2::4] if self._fenced(p)}
        if fenced:
            self._fence["requests_fenced"] += 1
        result = self._apply_batch(batch, fenced)
        if is_awaitable(result):
            result = await result
        return result

    def _apply_batch(self, batch: wire.Batch, fenced: set[int] | None) -> Any:
        """Run every command of ``batch``; the flat ``[status, value]`` answer,
        or a coroutine of it when some command answers later (a future or a
        coroutine: those run concurrently, their answers fill in)."""
        origin = batch.origin
        items = batch.items
        service = self._services.get(batch.namespace)
        if service is None:
            raise UnknownCommand(f"no service registered under {batch.namespace!r}")
        # what handle_local checks per command, looked up once per batch
        boot = self.bootstrap
        gating = not self._boot_over and self._boot_gating()
        refused = service.fresh_refused_commands if gating else None
        handle = service.handle
        # the answer, sized once: [BATCH_OK, None] per command, filled in place
        out: list[Any] = [wire.BATCH_OK, None] * (len(items) // 4)
        later: list[tuple[int, asyncio.Future[Any]]] | None = None
        for i in range(0, len(items), 4):
            command = items[i]
            partition = items[i + 2]
            j = i >> 1  # this command's [status, value] in ``out``
            try:
                if fenced and partition in fenced:
                    raise RingMismatch(
                        f"{self.id} does not own partition {partition} at ring epoch "
                        f"{self.ring.epoch} (sender's epoch {batch.epoch})"
                    )
                if refused is not None and command in refused:
                    boot.check(partition)
                result = handle(Request(command, items[i + 1], partition, items[i + 3], origin))
            except Exception as exc:
                out[j] = wire.BATCH_ERROR
                out[j + 1] = list(error_to_wire(exc))
                continue
            # nil and states (tuples) first: the common answers, no type lookup
            if result is None:
                continue
            if type(result) is not tuple and is_awaitable(result):
                if later is None:
                    later = []
                later.append((j + 1, asyncio.ensure_future(result)))
            else:
                out[j + 1] = result
        if later is None:
            return out
        return _batch_later(out, later)

    def _serve_cover(self, message: list[Any], peer: PeerInfo) -> Any:
        """``["cv", ...]``: a coverage command for several partitions at once, fenced
        on all of them; the service gets ``Request(command, b"", -1, payload, origin)``."""
        cv = wire.parse_cover(message, self.ring.partitions)
        serve = partial(self.handle_local, cv.namespace, cv.command, b"", -1, cv.payload, cv.origin)
        fence = self._fence_check(cv.epoch, cv.partitions, peer)
        if fence is False:
            return serve()
        assert fence is not True
        return self._after_sync(fence, cv.epoch, cv.partitions, serve)

    # -- incoming peer messages ---------------------------------------------
    def _dispatch(self, message: Any, peer: PeerInfo) -> Any:
        if type(message) is not list or not message:
            raise InvalidRequest("peer message must be a non-empty array")
        op = message[0]
        if not (peer.member and peer.admin):  # authentication is on: check roles
            _authorize(op, peer)
        if op == wire.SERVICE:
            return self._serve_service(message, peer)
        if op == wire.BATCH:
            return self._serve_batch(message, peer)
        if op == wire.DUAL:
            return self._serve_dual(message)
        if op == wire.COVER:
            return self._serve_cover(message, peer)
        if op == wire.PING:
            return [self.id, self.ring.epoch]
        if op == wire.MEMBERS:
            if self.discovery.exchanges_members:
                self.discovery.merge(message[1] if len(message) > 1 else None)
            return (
                self.discovery.records()
                if self.discovery.exchanges_members
                else [m.to_wire() for m in self._members.values()]
            )
        if op == wire.STATUS:
            return self.status()
        handler = self._peer_handlers.get(op) if type(op) is str else None
        if handler is not None:
            return handler(message, peer)
        raise UnknownCommand(f"unknown peer operation {op!r}")

    def holds(self, namespace: str, partition: int) -> bool:
        """True when this node owns ``partition`` or still has data of it."""
        if self.id in self.ring.preference_list(partition):
            return True
        service = self._services.get(namespace)
        return service is not None and service.partition_size(partition) > 0

    def _serve_dual(self, message: list[Any]) -> Any:
        """``["sd", ...]``: a write copied to a node that may still be handing the
        partition off. Applied only while this node holds the partition;
        otherwise NotOwner tells the coordinator to stop copying (applying it
        would leave stray data behind)."""
        cmd = wire.parse_dual(message)
        if not self.holds(cmd.namespace, cmd.partition):
            raise NotOwner(f"{self.id} no longer holds partition {cmd.partition}")
        return self.handle_local(*cmd)

    def status(self) -> dict[str, Any]:
        """What ``peer-ring status`` shows: members, states, ownership, epoch."""
        ring = self.ring
        gossip = self._gossip_states()
        members = []
        for mid, member in sorted(self._members.items()):
            row: dict[str, Any] = {
                "id": mid,
                "address": member.address,
                "zone": member.zone,
                "incarnation": member.incarnation,
                "state": self.member_state(mid).value,
                "partitions": len(ring.partitions_of(mid)),
                "primaries": len(ring.primaries_of(mid)),
            }
            if mid in gossip:
                row["gossip"] = gossip[mid].state.label
                row["gossip_incarnation"] = gossip[mid].incarnation
            members.append(row)
        for mid, st in sorted(gossip.items()):
            if mid not in self._members:  # dead or left: out of the ring, still reported
                members.append(
                    {
                        "id": mid,
                        "address": st.member.address,
                        "zone": st.member.zone,
                        "incarnation": st.member.incarnation,
                        "state": st.member_state.value,
                        "partitions": 0,
                        "primaries": 0,
                        "gossip": st.state.label,
                        "gossip_incarnation": st.incarnation,
                    }
                )
        return {
            "node": self.id,
            "address": self.address,
            "epoch": ring.epoch,
            "partitions": ring.partitions,
            "replicas": ring.replicas,
            "members": members,
            "services": sorted(self._services),
            "apps": {
                ns: info for ns, svc in sorted(self._services.items()) if (info := svc.status())
            },
            "uptime": self.clock.monotonic() - self.started_at,
            "transfers": self.transfers.status(),
            "transfers_recent": self.transfers.recent(),
            "hints": self.hints.sizes(),
            "antientropy": self.antientropy.progress(),
            "load": self.load(),
            "failure_bound": self.detector.bound,
            # the figures of /metrics' node counters, for progress displays
            # that talk the peer protocol (peer-ring cluster add/remove)
            "counters": self.metrics(),
        }

    def load(self) -> dict[str, Any]:
        """Counters of the work this node does (quorum rounds it coordinated, peer
        requests served and sent: rates come from two readings) and the
        latency percentiles of its sampled quorum rounds over the last
        ``LATENCY_WINDOW`` seconds (``peer_ring.replication.coordinator``)."""
        coordinator = self.coordinator
        stats: dict[str, int] = getattr(self.transport, "stats", {})
        now = self.clock.monotonic()
        return {
            "rounds": coordinator.rounds,
            "requests_in": stats.get("requests_in", 0),
            "requests_out": stats.get("requests_out", 0),
            "latency": coordinator.latency.summary(now, LATENCY_WINDOW),
        }

    def metrics(self) -> dict[str, int]:
        """Counters of membership change (transfers, hints, anti-entropy, epoch
        fencing) and of quorum rounds."""
        out = dict(self._fence)
        out.update(self.transfers.metrics())
        out.update(self.hints.metrics())
        out.update(self.antientropy.metrics())
        out.update(self.bootstrap.metrics())
        out.update(self.coordinator.metrics())
        return out

    def raise_if_stopped(self) -> None:
        if self._stopped:
            raise ClosedError("node stopped")


def _authorize(op: Any, peer: PeerInfo) -> None:
    """Raise NotAuthorized unless ``peer``'s proven roles allow ``op``
    (``wire.ADMIN_REQUIRED``: admin; ping: anyone; the rest: a member)."""
    if type(op) is str and op in wire.ADMIN_REQUIRED:
        if not peer.admin:
            raise NotAuthorized(
                f"{op!r} needs an admin credential (admin certificate or admin token); "
                f"{peer.node_id} at {peer.address} has none"
            )
        return
    if op != wire.PING and not peer.member:
        raise NotAuthorized(
            f"{peer.node_id} at {peer.address} is not an authenticated member: {op!r} refused"
        )


__all__ = ["Node", "PeerRingError", "build_transport"]


async def _batch_later(out: list[Any], later: list[tuple[int, asyncio.Future[Any]]]) -> list[Any]:
    """Fill a batch answer's late values (futures of commands that answer later)."""
    for index, fut in later:
        try:
            out[index] = await fut
        except Exception as exc:
            out[index - 1] = wire.BATCH_ERROR
            out[index] = list(error_to_wire(exc))
    return out
