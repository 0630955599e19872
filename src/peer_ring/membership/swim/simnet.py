"""An in-memory packet network for deterministic SWIM tests and benchmarks.

:class:`SimNetwork` connects :class:`SimTransport` endpoints (one per
simulated member) through any :class:`~.sched.Scheduler`: the discrete-event
:class:`~.sched.SimScheduler` for large simulations, or a
:class:`~.sched.ClockScheduler` over a ManualClock for asyncio tests.

Faults, all deterministic for a given ``random.Random`` seed:

* ``loss`` -- probability that a datagram is dropped (exchanges are reliable
  like TCP: they fail only on partitions, kills and pauses);
* ``delay`` / ``jitter`` -- one-way latency of every packet;
* :meth:`SimNetwork.partition` -- groups of addresses that cannot reach each
  other (addresses not named form one more group);
* :meth:`SimNetwork.pause` -- like SIGSTOP: the node's timers and inbound
  packets are held and run, in order, on :meth:`SimNetwork.resume`;
* :meth:`SimNetwork.set_slowness` -- extra processing delay on a node
  (a CPU-starved but alive member, the case Lifeguard is about);
* :meth:`SimNetwork.kill` -- the endpoint vanishes (kill -9).

Per-address byte counters (``bytes_sent``) feed the bandwidth benchmark.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable

from peer_ring.membership.swim.sched import Scheduler, Timer
from peer_ring.membership.swim.transport import (
    Addr,
    PacketHandler,
    ReplyHandler,
    StreamHandler,
)


class _NodeTimer:
    __slots__ = ("cancelled", "inner")

    def __init__(self) -> None:
        self.cancelled = False
        self.inner: Timer | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.inner is not None:
            self.inner.cancel()


class NodeScheduler:
    """A node's view of the scheduler: its callbacks are held while it is paused."""

    def __init__(self, net: SimNetwork, addr: Addr) -> None:
        self.net = net
        self.addr = addr

    def now(self) -> float:
        return self.net.scheduler.now()

    def wall(self) -> float:
        return self.net.scheduler.wall() + self.net.wall_skew.get(self.addr, 0.0)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        handle = _NodeTimer()

        def fire() -> None:
            if not handle.cancelled:
                self.net._run_on(self.addr, callback, handle)

        handle.inner = self.net.scheduler.call_later(delay, fire)
        return handle


class SimTransport:
    """One endpoint of a :class:`SimNetwork`."""

    def __init__(self, net: SimNetwork, addr: Addr) -> None:
        self.net = net
        self._address = addr
        self.on_packet: PacketHandler | None = None
        self.on_stream: StreamHandler | None = None
        self.closed = False

    @property
    def address(self) -> Addr:
        return self._address

    def set_handlers(self, on_packet: PacketHandler, on_stream: StreamHandler) -> None:
        self.on_packet = on_packet
        self.on_stream = on_stream

    def send_to(self, addr: Addr, data: bytes) -> None:
        if not self.closed:
            self.net._send(self._address, addr, data)

    def exchange(self, addr: Addr, data: bytes, timeout: float, on_reply: ReplyHandler) -> None:
        if self.closed:
            on_reply(None)
            return
        self.net._exchange(self._address, addr, data, timeout, on_reply)

    def close(self) -> None:
        self.closed = True
        self.net._detach(self._address, self)


class SimNetwork:
    """The simulated network. ``rng`` decides losses and jitter."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        rng: random.Random | None = None,
        loss: float = 0.0,
        delay: float = 0.0005,
        jitter: float = 0.0,
    ) -> None:
        self.scheduler = scheduler
        self.rng = rng or random.Random(0)
        self.loss = loss
        self.delay = delay
        self.jitter = jitter
        self.endpoints: dict[Addr, SimTransport] = {}
        self._group: dict[Addr, int] = {}
        self._paused: dict[Addr, list[Callable[[], None]]] = {}
        self.slowness: dict[Addr, float] = {}
        self.wall_skew: dict[Addr, float] = {}
        self.bytes_sent: Counter[Addr] = Counter()
        self.packets_sent: Counter[Addr] = Counter()
        self.dropped = 0

    # --- endpoints ---------------------------------------------------------
    def attach(self, addr: Addr) -> SimTransport:
        """Create the endpoint for ``addr`` (replacing a killed one)."""
        ep = SimTransport(self, addr)
        self.endpoints[addr] = ep
        return ep

    def scheduler_for(self, addr: Addr) -> NodeScheduler:
        return NodeScheduler(self, addr)

    def _detach(self, addr: Addr, ep: SimTransport) -> None:
        if self.endpoints.get(addr) is ep:
            del self.endpoints[addr]

    def kill(self, addr: Addr) -> None:
        """The process at ``addr`` dies: its endpoint and held work vanish."""
        ep = self.endpoints.pop(addr, None)
        if ep is not None:
            ep.closed = True
        self._paused.pop(addr, None)

    # --- faults ------------------------------------------------------------
    def partition(self, *groups: Iterable[Addr]) -> None:
        """Split the network: members of different groups cannot talk."""
        self._group = {}
        for i, group in enumerate(groups, start=1):
            for addr in group:
                self._group[addr] = i

    def heal(self) -> None:
        self._group = {}

    def pause(self, addr: Addr) -> None:
        self._paused.setdefault(addr, [])

    def resume(self, addr: Addr) -> None:
        held = self._paused.pop(addr, [])
        for work in held:
            if addr in self.endpoints:
                work()

    def is_paused(self, addr: Addr) -> bool:
        return addr in self._paused

    def set_slowness(self, addr: Addr, seconds: float) -> None:
        self.slowness[addr] = seconds

    def reachable(self, src: Addr, dst: Addr) -> bool:
        return self._group.get(src, 0) == self._group.get(dst, 0)

    # --- plumbing ------------------------------------------------------------
    def _run_on(self, addr: Addr, work: Callable[[], None], handle: _NodeTimer | None) -> None:
        held = self._paused.get(addr)
        if held is not None:
            if handle is None:
                held.append(work)
            else:
                held.append(lambda: None if handle.cancelled else work())
            return
        if addr in self.endpoints:
            work()

    def _latency(self, dst: Addr) -> float:
        lat = self.delay
        if self.jitter:
            lat += self.rng.random() * self.jitter
        return lat + self.slowness.get(dst, 0.0)

    def _send(self, src: Addr, dst: Addr, data: bytes) -> None:
        self.bytes_sent[src] += len(data)
        self.packets_sent[src] += 1
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        if not self.reachable(src, dst):
            self.dropped += 1
            return
        extra = self.slowness.get(src, 0.0)

        def deliver() -> None:
            ep = self.endpoints.get(dst)
            if ep is None or ep.on_packet is None or not self.reachable(src, dst):
                self.dropped += 1
                return
            handler = ep.on_packet
            self._run_on(dst, lambda: handler(data, src), None)

        self.scheduler.call_later(self._latency(dst) + extra, deliver)

    def _exchange(
        self, src: Addr, dst: Addr, data: bytes, timeout: float, on_reply: ReplyHandler
    ) -> None:
        self.bytes_sent[src] += len(data)
        done = [False]

        def finish(reply: bytes | None) -> None:
            if done[0]:
                return
            done[0] = True
            self._run_on(src, lambda: on_reply(reply), None)

        self.scheduler.call_later(timeout, lambda: finish(None))
        if dst not in self.endpoints:
            # Connection refused comes back at once.
            self.scheduler.call_later(self.delay, lambda: finish(None))
            return
        if not self.reachable(src, dst):
            return  # SYNs vanish: the caller times out

        def serve() -> None:
            ep = self.endpoints.get(dst)
            if ep is None or ep.on_stream is None or not self.reachable(src, dst):
                finish(None)
                return
            reply = ep.on_stream(data, src)
            if reply is None:
                self.scheduler.call_later(self.delay, lambda: finish(None))
                return
            self.bytes_sent[dst] += len(reply)
            self.scheduler.call_later(
                self._latency(src),
                lambda: finish(reply if self.reachable(src, dst) else None),
            )

        self.scheduler.call_later(
            self._latency(dst) + self.slowness.get(src, 0.0),
            lambda: self._run_on(dst, serve, None),
        )
