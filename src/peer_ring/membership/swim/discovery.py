"""``--discovery swim``: the SWIM agent behind the :class:`Discovery` protocol.

:class:`SwimDiscovery` owns one :class:`~.agent.SwimAgent`, its packet
transport (real UDP + TCP by default) and its timers (a
:class:`~.sched.ClockScheduler` on the injected clock). It publishes views
holding exactly the members that are alive or suspect, admitted by ``allow``
and not damped for flapping (dead and left members are removed); a suspect
member stays in the view because SWIM only *suspects* it -- the node's own
failure detector decides whether to route around it.

Invariants: the published view always contains the local member while
running; :meth:`SwimDiscovery.start` returns after the join attempt
(bounded by ``join_timeout``), never waits forever; :meth:`SwimDiscovery.stop`
is idempotent and gossips a graceful leave first.

SWIM's ``incarnation`` (:attr:`MemberStatus.incarnation`) is the refutation
counter; ``Member.incarnation`` stays the node's restart counter. Both are
reported by :meth:`SwimDiscovery.states`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from peer_ring.clock import Clock, SystemClock
from peer_ring.errors import ClosedError, ConfigError, DiscoveryError
from peer_ring.membership.base import Discovery, Member, format_address, parse_address
from peer_ring.membership.swim.agent import SwimAgent
from peer_ring.membership.swim.config import SwimConfig
from peer_ring.membership.swim.keyring import Keyring
from peer_ring.membership.swim.sched import ClockScheduler, Scheduler
from peer_ring.membership.swim.state import MemberEvent, MemberStatus
from peer_ring.membership.swim.transport import Addr, PacketTransport, UdpTransport


def _as_addr(value: str | Addr) -> Addr:
    if isinstance(value, tuple):
        return (str(value[0]), int(value[1]))
    return parse_address(value)


class SwimDiscovery(Discovery):
    """SWIM + Lifeguard gossip membership.

    ``bind`` is the gossip address (UDP and TCP, port 0 = any free port),
    distinct from the node's peer-transport address carried in the
    :class:`Member` record. ``seeds`` are gossip addresses of members to join
    through. ``transport``/``scheduler`` replace the real network and timers
    (tests: :class:`~.simnet.SimTransport`, a ManualClock).
    """

    name = "swim"

    def __init__(
        self,
        config: SwimConfig | None = None,
        *,
        bind: str | Addr = ("127.0.0.1", 7946),
        seeds: Iterable[str | Addr] = (),
        keyring: Keyring | None = None,
        label: str = "",
        clock: Clock | None = None,
        allow: Callable[[str], bool] | None = None,
        transport: PacketTransport | None = None,
        scheduler: Scheduler | None = None,
        rng: random.Random | None = None,
        event_buffer: int = 1024,
    ) -> None:
        super().__init__()
        if len(label.encode()) > 255:
            raise ConfigError("swim: cluster label must be at most 255 bytes")
        if event_buffer < 1:
            raise ConfigError("swim: event_buffer must be >= 1")
        self.config = config or SwimConfig.lan()
        self._bind = _as_addr(bind)
        self._seeds = [_as_addr(s) for s in seeds]
        self._keyring = keyring
        self._label = label
        self._clock = clock or SystemClock()
        self._allow = allow
        self._transport = transport
        self._own_scheduler = scheduler is None
        self._scheduler: Scheduler = scheduler or ClockScheduler(self._clock)
        self._rng = rng or random.Random()
        self._event_buffer = event_buffer
        self._agent: SwimAgent | None = None
        self._subscribers: set[asyncio.Queue[MemberEvent | None]] = set()
        self._stopped = False
        #: Events dropped because a subscriber did not keep up.
        self.events_dropped = 0

    # --------------------------------------------------------- lifecycle
    async def open(self) -> Addr:
        """Bind the gossip transport (idempotent) and return its address.

        Called by :meth:`start`; call it earlier when the gossip address must
        be known before starting (e.g. to publish it in a registry).
        """
        if self._stopped:
            raise ClosedError("swim discovery was stopped")
        if self._transport is None:
            self._transport = await UdpTransport.open(
                self._bind[0], self._bind[1], max_stream_size=self.config.max_stream_size
            )
        return self._transport.address

    @property
    def gossip_address(self) -> str:
        if self._transport is None:
            raise DiscoveryError("swim discovery is not started")
        return format_address(*self._transport.address)

    async def start(self, local: Member) -> None:
        if self._agent is not None:
            raise DiscoveryError("swim discovery already started")
        try:
            await self.open()
        except Exception as exc:
            raise DiscoveryError(f"swim: cannot bind gossip transport: {exc}") from exc
        assert self._transport is not None
        agent = SwimAgent(
            local,
            self._transport,
            self._scheduler,
            self.config,
            keyring=self._keyring,
            label=self._label,
            seeds=self._seeds,
            rng=self._rng,
            allow=self._admit,
            listener=self._on_event,
            on_change=self._republish,
        )
        self._agent = agent
        agent.start()
        self._republish()
        seeds = [s for s in self._seeds if s != self._transport.address]
        if not seeds:
            return
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def finish(answered: int) -> None:
            if not done.done():
                done.set_result(answered)

        timer = self._scheduler.call_later(self.config.join_timeout, lambda: finish(0))
        agent.join(seeds, finish)
        answered = await done
        timer.cancel()
        if answered == 0 and self.config.require_join:
            await self._shutdown(leave=False)
            raise DiscoveryError(
                f"swim: no seed of {seeds} answered within join_timeout; seeds are the "
                "other nodes' gossip addresses (their --gossip, port 7946 by default), "
                "not their peer --listen addresses"
            )

    async def stop(self) -> None:
        await self._shutdown(leave=True)

    async def _shutdown(self, *, leave: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        agent = self._agent
        if agent is not None and leave:
            agent.leave()
            if self.config.leave_propagate > 0:
                await self._clock.sleep(self.config.leave_propagate)
        if agent is not None:
            agent.stop()
        if self._transport is not None:
            self._transport.close()
        if self._own_scheduler and isinstance(self._scheduler, ClockScheduler):
            self._scheduler.cancel_all()
        self._publisher.close()
        for queue in list(self._subscribers):
            self._offer(queue, None)

    # ------------------------------------------------------ observation
    def states(self) -> dict[str, MemberStatus]:
        """Every listed member (alive/suspect/dead/left) with SWIM incarnation."""
        return {} if self._agent is None else self._agent.states()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: packets/bytes sent and received, ``dropped_<reason>``, probes..."""
        return {} if self._agent is None else dict(self._agent.stats)

    @property
    def agent(self) -> SwimAgent | None:
        return self._agent

    def events(self) -> AsyncIterator[MemberEvent]:
        """Async stream of membership events from now on, until :meth:`stop`.

        Each call returns an independent stream with a buffer of
        ``event_buffer`` events; when a consumer falls behind the oldest
        events are dropped (counted in :attr:`events_dropped`).
        """
        queue: asyncio.Queue[MemberEvent | None] = asyncio.Queue(self._event_buffer)
        if self._stopped:
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        return self._drain(queue)

    async def _drain(self, queue: asyncio.Queue[MemberEvent | None]) -> AsyncIterator[MemberEvent]:
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    def _offer(self, queue: asyncio.Queue[MemberEvent | None], item: MemberEvent | None) -> None:
        while True:
            try:
                queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                queue.get_nowait()
                self.events_dropped += 1

    def _on_event(self, event: MemberEvent) -> None:
        for queue in list(self._subscribers):
            self._offer(queue, event)

    # ------------------------------------------------------- control
    def _admit(self, node_id: str) -> bool:
        return self._allow is None or self._allow(node_id)

    def set_allow(self, allow: Callable[[str], bool] | None) -> None:
        """Replace the admission filter (registry ∩ alive) and republish the view."""
        self._allow = allow
        self._republish()

    def set_seeds(self, seeds: Iterable[str | Addr]) -> None:
        """Replace the seeds; joins through them at once if no live peer is known."""
        self._seeds = [_as_addr(s) for s in seeds]
        agent = self._agent
        if agent is None or self._stopped:
            return
        agent.seeds = list(self._seeds)
        if agent.num_live() <= 1:
            agent.join([s for s in self._seeds if s != agent.transport.address])

    def update_local(self, local: Member) -> None:
        if self._agent is not None and not self._stopped:
            self._agent.update_local(local)

    def _republish(self) -> None:
        if self._agent is not None and not self._stopped:
            self._publisher.publish(self._agent.view())

    def status_json(self) -> list[dict[str, Any]]:
        """``states()`` as JSON-ready dicts sorted by id (for ``peer-ring status``)."""
        return [s.to_json() for _, s in sorted(self.states().items())]
