"""In-process transport for deterministic tests, with injectable faults.

A :class:`MemoryNetwork` connects :class:`MemoryTransport` instances of one
event loop by address. Frames are real encoded frames (so anything that
would not survive the wire fails here too) delivered with ``call_soon`` or,
with latency, ``call_later``, in order per channel. The network can drop
frames with a probability, add latency per link, and partition nodes into
groups that cannot reach each other (new connections are refused, frames on
existing channels are lost). Users can build their own tests on it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

from peer_ring.errors import ConfigError, PeerUnavailable
from peer_ring.transport._core import ChannelTransport, FaultInjector, FrameConn, FrameReceiver
from peer_ring.transport.base import TransportConfig


class MemoryNetwork:
    """A simulated network of in-process transports.

    Faults are keyed by ``(from_address, to_address)`` and apply to frames in
    that direction only; :meth:`partition` and :meth:`heal` set and clear them
    for whole groups.
    """

    def __init__(self, seed: int = 0) -> None:
        self.listeners: dict[str, MemoryTransport] = {}
        self.rng = random.Random(seed)
        self.loss: dict[tuple[str, str], float] = {}
        self.latency: dict[tuple[str, str], float] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.default_loss = 0.0
        self.default_latency = 0.0
        self.delivered = 0
        self.dropped = 0

    # -- faults ----------------------------------------------------------
    def partition(self, *groups: Iterable[str]) -> None:
        """Block every link between addresses of different groups (both ways)."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def block(self, src: str, dst: str) -> None:
        """Block one direction of a link."""
        self.blocked.add((src, dst))

    def isolate(self, address: str) -> None:
        """Cut one node off from all others (both directions)."""
        for other in self.listeners:
            if other != address:
                self.blocked.add((address, other))
                self.blocked.add((other, address))

    def heal(self) -> None:
        """Remove every partition, loss and latency rule."""
        self.blocked.clear()
        self.loss.clear()
        self.latency.clear()
        self.default_loss = 0.0
        self.default_latency = 0.0

    def set_loss(self, src: str, dst: str, probability: float) -> None:
        self.loss[(src, dst)] = probability

    def set_latency(self, src: str, dst: str, seconds: float) -> None:
        self.latency[(src, dst)] = seconds

    def reachable(self, src: str, dst: str) -> bool:
        return (src, dst) not in self.blocked

    def _lose(self, src: str, dst: str) -> bool:
        if (src, dst) in self.blocked:
            return True
        p = self.loss.get((src, dst), self.default_loss)
        return p > 0 and self.rng.random() < p

    def _delay(self, src: str, dst: str) -> float:
        return self.latency.get((src, dst), self.default_latency)


class _MemoryConn(FrameConn):
    """One end of an in-memory channel."""

    def __init__(self, network: MemoryNetwork, src: str, dst: str) -> None:
        self.network = network
        self.src = src
        self.dst = dst
        self.peer: _MemoryConn | None = None
        self.receiver: FrameReceiver | None = None
        self.is_closed = False
        self.loop = asyncio.get_running_loop()
        self.last_at = 0.0
        #: the owning transport's open channels (this end leaves it on close)
        self.home: set[_MemoryConn] | None = None

    def write(self, frame: bytes) -> None:
        if self.is_closed:
            return
        net = self.network
        if net._lose(self.src, self.dst):
            net.dropped += 1
            return
        delay = net._delay(self.src, self.dst)
        if delay > 0:
            at = max(self.loop.time() + delay, self.last_at + 1e-9)
            self.last_at = at
            self.loop.call_at(at, self._deliver, frame)
        else:
            self.loop.call_soon(self._deliver, frame)

    def _deliver(self, frame: bytes) -> None:
        peer = self.peer
        if peer is None or peer.is_closed or peer.receiver is None:
            return
        self.network.delivered += 1
        peer.receiver.frame(frame)

    def buffered(self) -> int:
        return 0

    def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        if self.home is not None:
            self.home.discard(self)
        receiver, self.receiver = self.receiver, None
        peer = self.peer
        if receiver is not None:
            self.loop.call_soon(receiver.closed, None)
        if peer is not None:
            self.loop.call_soon(peer.close)


class MemoryTransport(ChannelTransport):
    """A transport whose peers live in the same process. See the module docstring."""

    name = "memory"

    def __init__(
        self,
        node_id: str,
        address: str,
        network: MemoryNetwork,
        config: TransportConfig | None = None,
        *,
        faults: FaultInjector | None = None,
    ) -> None:
        super().__init__(node_id, address, config, faults=faults)
        self.network = network
        self._conns: set[_MemoryConn] = set()

    async def _listen(self) -> None:
        existing = self.network.listeners.get(self._address)
        if existing is not None and existing is not self:
            raise ConfigError(f"address {self._address} is already in use")
        self.network.listeners[self._address] = self

    async def _open(self, address: str, receiver: FrameReceiver) -> FrameConn:
        await asyncio.sleep(0)
        target = self.network.listeners.get(address)
        if target is None or target._closing:
            raise PeerUnavailable(f"connect to {address} failed: connection refused")
        if not self.network.reachable(self._address, address) or not self.network.reachable(
            address, self._address
        ):
            raise PeerUnavailable(f"connect to {address} failed: no route (partitioned)")
        mine = _MemoryConn(self.network, self._address, address)
        theirs = _MemoryConn(self.network, address, self._address)
        mine.peer, theirs.peer = theirs, mine
        mine.receiver = receiver
        theirs.receiver = target._accept(theirs)
        target._conns.add(theirs)
        self._conns.add(mine)
        theirs.home, mine.home = target._conns, self._conns
        return mine

    async def _shutdown(self) -> None:
        if self.network.listeners.get(self._address) is self:
            del self.network.listeners[self._address]
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        await asyncio.sleep(0)
