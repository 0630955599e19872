"""Members and the :class:`Discovery` protocol.

A *member* is one node of the cluster: a stable ``id``, the ``address`` of its
peer transport (``host:port``), an optional ``zone`` and ``weight`` for
placement, free-form ``meta``, and an ``incarnation`` that grows every time
the node process restarts. Two members are the same node when their ids are
equal; the one with the higher incarnation is the newer life of that node.

Discovery backends (static, kubernetes, etcd, zookeeper, swim) only answer
"who is in the cluster"; they never decide liveness alone. The node feeds
transport failures and pings into a local failure detector, so a member that
discovery still lists can be *down*, and a down member keeps its place in
the ring until it is removed.

Concurrency rule for every backend: all methods are called from the node's
event loop, never concurrently with themselves; :meth:`Discovery.subscribe`
may be iterated by any number of tasks.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from peer_ring.errors import ConfigError

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (or ``[v6]:port``) into host and port, validating both."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"address {address!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} out of range in {address!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    """Inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MemberState(enum.Enum):
    """Liveness of a member as seen by one node."""

    UP = "up"
    SUSPECT = "suspect"  # SWIM only: accused, not yet confirmed dead
    DOWN = "down"  # unreachable; keeps its place in the ring
    LEFT = "left"  # left gracefully / removed


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the cluster, as discovery reports it."""

    id: str
    address: str
    zone: str | None = None
    weight: float = 1.0
    incarnation: int = 0
    meta: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.id):
            raise ConfigError(
                f"member id {self.id!r} must be 1-128 characters of letters, digits and ._:@-"
            )
        parse_address(self.address)
        if not self.weight > 0:
            raise ConfigError(f"member {self.id}: weight must be > 0, got {self.weight}")
        if self.incarnation < 0:
            raise ConfigError(f"member {self.id}: incarnation must be >= 0")

    def with_incarnation(self, incarnation: int) -> Member:
        return replace(self, incarnation=incarnation)

    def newer_than(self, other: Member) -> bool:
        """True when this is a later life of the same node than ``other``."""
        return self.id == other.id and self.incarnation > other.incarnation

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "addr": self.address,
            "zone": self.zone,
            "w": self.weight,
            "inc": self.incarnation,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_wire(cls, data: Any) -> Member:
        """Decode :meth:`to_wire` output; raises :class:`ConfigError` on bad input."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"member record must be a map, got {type(data).__name__}")
        try:
            meta = data.get("meta") or {}
            if not isinstance(meta, Mapping):
                raise ConfigError("member meta must be a map")
            zone = data.get("zone")
            return cls(
                id=str(data["id"]),
                address=str(data["addr"]),
                zone=None if zone is None else str(zone),
                weight=float(data.get("w", 1.0)),
                incarnation=int(data.get("inc", 0)),
                meta={str(k): str(v) for k, v in meta.items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"malformed member record: {exc!r}") from exc


#: An immutable view of the cluster: member id -> member.
View = Mapping[str, Member]

#: ``exchange(address, my_records) -> their_records``: one member exchange with
#: the peer at ``address`` over the node's transport (see ``Discovery.bind``).
Exchange = Callable[[str, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class ViewPublisher:
    """Latest-value broadcast of membership views.

    Every subscriber sees the newest view; a slow subscriber skips
    intermediate ones rather than buffering them (member sets are snapshots,
    so only the last one matters).
    """

    def __init__(self) -> None:
        self._view: dict[str, Member] = {}
        self._version = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def view(self) -> View:
        return dict(self._view)

    @property
    def version(self) -> int:
        return self._version

    def publish(self, members: Iterable[Member]) -> bool:
        """Replace the view; returns True (and wakes subscribers) if it changed."""
        new = {m.id: m for m in members}
        if new == self._view and all(new[k].meta == self._view[k].meta for k in new):
            return False
        self._view = new
        self._version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def subscribe(self) -> AsyncIterator[View]:
        """Yield the current view, then every later one until closed."""
        seen = -1
        while True:
            if self._version != seen:
                seen = self._version
                yield dict(self._view)
                continue
            if self._closed:
                return
            await self._changed.wait()


class Discovery(abc.ABC):
    """Finds the members of the cluster and follows changes.

    Lifecycle: :meth:`start` registers the local member with the backend and
    begins following it; it returns once the initial member set is known (the
    local member included), or raises :class:`~peer_ring.errors.DiscoveryError`
    after the backend's start timeout -- it never waits forever. :meth:`stop`
    deregisters (a graceful leave) and releases resources; it is idempotent.

    While the backend cannot be reached, implementations keep publishing the
    last known view (never an empty one) and retry with backoff.
    """

    #: Backend name as used by ``--discovery``.
    name: str = "abstract"

    # -- capabilities: what the node may ask of this backend beyond the view.
    #    The node reads these flags; it never tests a backend's class.
    #: The backend spreads member records by exchanging them with peers over
    #: the node's own transport (static discovery): the node calls
    #: :meth:`bind` before :meth:`start`, answers peers' exchanges with
    #: :meth:`merge` and :meth:`records`, and starts an exchange with a peer
    #: whose ring epoch differs from its own.
    exchanges_members: bool = False
    #: The backend has no authority of its own that notices dead members, so
    #: the node asks it to :meth:`remove` one that was down for longer than
    #: ``NodeConfig.dead_after`` (static discovery).
    removes_dead_members: bool = False

    def __init__(self) -> None:
        self._publisher = ViewPublisher()

    @abc.abstractmethod
    async def start(self, local: Member) -> None:
        """Register ``local`` and learn the initial member set."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Deregister the local member and stop following the backend."""

    def members(self) -> View:
        """The current view (member id -> member)."""
        return self._publisher.view

    def subscribe(self) -> AsyncIterator[View]:
        """Async stream of views: the current one first, then each change."""
        return self._publisher.subscribe()

    # -- optional hooks (see the capability flags) ---------------------------
    def bind(self, exchange: Exchange) -> None:  # noqa: B027 - optional hook
        """Give a member-exchanging backend the node's exchange call
        (``exchanges_members``); called once, before :meth:`start`."""

    def records(self) -> list[dict[str, Any]]:
        """The member records this node knows, as sent in a member exchange."""
        return [m.to_wire() for m in self.members().values()]

    def merge(self, records: Any) -> bool:
        """Merge a peer's member records (``exchanges_members``); True if the view changed.

        Backends with an authority of their own ignore peers' records.
        """
        return False

    def remove(self, member_id: str) -> None:  # noqa: B027 - optional hook
        """Drop a member that is down for good (``removes_dead_members``)."""

    async def leave(self) -> None:  # noqa: B027 - optional hook
        """Announce that the local member leaves for good (decommission).

        Called after the node handed its partitions over, before it stops.
        The default does nothing: backends with an authority (etcd,
        ZooKeeper, Kubernetes, SWIM) deregister the member on :meth:`stop`.
        """

    def states(self) -> Mapping[str, Any]:
        """Per-member states reported by the backend itself (gossip), if any.

        Each value has ``member_state`` (:class:`MemberState`), ``state.label``,
        ``incarnation`` and ``member``; the default reports none.
        """
        return {}

    def update_local(self, local: Member) -> None:  # noqa: B027 - optional hook
        """Called when the local member's record changes (e.g. new metadata).

        Backends that store the record remotely re-register it; the default
        does nothing.
        """
