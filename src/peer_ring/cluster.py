"""The narrow interface between a node and its replication subsystems.

The coordinator, hinted handoff, partition transfer, anti-entropy and
bootstrap (``peer_ring.replication``) need a little of the node they run in:
its id, clock and config, the current ring and members with their liveness
and addresses, the peer transport, the registered services and the local
replica, and places to hook their own peer operations. :class:`Cluster` is
exactly that and nothing more. ``peer_ring.node.Node`` implements it and is
the composition root that builds the subsystems and wires them to each
other; no module of ``replication/`` imports the node, not even for typing
(an import-linter contract in ``make lint`` keeps it so).

Concurrency rule for every member: call from the node's event loop only.
None blocks; none awaits the network except where the transport does.

A plain base class rather than a ``typing.Protocol``: in the compiled build
(mypyc) calls through a native base class are vtable calls, through a
protocol they are generic attribute lookups -- the coordinator makes a dozen
per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mypy_extensions import mypyc_attr

from peer_ring.clock import Clock
from peer_ring.config import NodeConfig
from peer_ring.membership.base import Member
from peer_ring.ring import Ring
from peer_ring.service import Service
from peer_ring.transport.base import PeerInfo, StreamHandler, Transport

__all__ = ["Cluster", "PeerHandler", "RingListener"]

#: ``listener(old_ring, new_ring)`` -- called on the loop after every ring change.
RingListener = Callable[[Ring, Ring], None]

#: ``handler(message, peer)`` for a subsystem's own peer operation (see
#: :meth:`Cluster.add_peer_handler`); returns a value or a coroutine.
PeerHandler = Callable[[list[Any], PeerInfo], Any]


@mypyc_attr(allow_interpreted_subclasses=True)  # test doubles may subclass it
class Cluster:
    """What the replication subsystems may use of their node (see the module docstring).

    Attributes, set by the implementation before any subsystem runs:
    ``config`` (immutable), ``clock`` (the injected time source), ``ring``
    (replaced, never mutated, on every membership change) and ``transport``
    (peer requests: ``request``, ``request_future``, ``request_callback``,
    ``send``, ``send_stream``, ``pack``, ``in_flight``).
    """

    config: NodeConfig
    clock: Clock
    ring: Ring
    transport: Transport

    # -- identity, members, liveness --------------------------------------------
    @property
    def id(self) -> str:
        """This node's id."""
        raise NotImplementedError

    @property
    def members(self) -> dict[str, Member]:
        """Current members (id -> member), this node included; a copy."""
        raise NotImplementedError

    @property
    def any_down(self) -> bool:
        """True when the failure detector sees at least one member down (cheap)."""
        raise NotImplementedError

    def is_up(self, member_id: str) -> bool:
        """Whether ``member_id`` is up for the local failure detector (self always is)."""
        raise NotImplementedError

    def down_for(self, member_id: str) -> float:
        """Seconds ``member_id`` has been down without interruption (0 when up)."""
        raise NotImplementedError

    def address_of(self, member_id: str) -> str:
        """The peer address of a member; raises PeerUnavailable for strangers."""
        raise NotImplementedError

    def remove_member(self, member_id: str) -> bool:
        """Ask discovery to drop a member that is down for good.

        Returns False when the discovery backend has an authority of its own
        that decides membership (only static discovery removes members).
        """
        raise NotImplementedError

    # -- services and the local replica ---------------------------------------------
    @property
    def services(self) -> dict[str, Service]:
        """The registered services by namespace; a copy."""
        raise NotImplementedError

    def service(self, namespace: str) -> Service:
        """The service of ``namespace``; raises UnknownCommand when there is none."""
        raise NotImplementedError

    def find_service(self, namespace: str) -> Service | None:
        """The service of ``namespace`` or None (no copy: hot path)."""
        raise NotImplementedError

    def handle_local(
        self, namespace: str, command: str, key: bytes, partition: int, payload: Any, origin: str
    ) -> Any:
        """Run a command on this node's replica: a value, or a coroutine to await.

        Refuses reads of a partition this node is still syncing after a
        restart (PeerUnavailable).
        """
        raise NotImplementedError

    def holds(self, namespace: str, partition: int) -> bool:
        """True when this node owns ``partition`` or still has data of it."""
        raise NotImplementedError

    def raise_if_stopped(self) -> None:
        """Raise ClosedError once the node stopped."""
        raise NotImplementedError

    # -- hooks ------------------------------------------------------------------------
    def add_peer_handler(self, op: str, handler: PeerHandler) -> None:
        """Answer peer messages ``[op, ...]`` with ``handler`` (see ``peer_ring.wire``)."""
        raise NotImplementedError

    def add_stream_handler(self, kind: str, handler: StreamHandler) -> None:
        """Accept incoming streams whose header is ``[kind, ...]``."""
        raise NotImplementedError

    def on_ring_change(self, listener: RingListener) -> None:
        """Call ``listener(old, new)`` after each ring change."""
        raise NotImplementedError
