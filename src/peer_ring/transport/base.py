"""The peer transport contract.

A :class:`Transport` carries messages between nodes. Messages are any value
msgpack can encode (``None``, bool, int, float, str, bytes, lists, maps).
Three kinds of exchange share one channel per peer:

* **request/response** with a deadline: :meth:`Transport.request` (and the
  callback-friendly :meth:`Transport.request_future` and
  :meth:`Transport.request_callback`) send one message and resolve with the
  peer handler's answer, or raise. A message sent to several peers can be
  encoded once with :meth:`Transport.pack`. A handler that raises a
  :class:`~peer_ring.errors.PeerRingError` makes the same class raise on the
  caller.
* **one-way** messages: :meth:`Transport.send`, best effort, no answer.
* **streams** for bulk transfer: :meth:`Transport.send_stream` sends an
  iterable of chunks with at most ``window`` unacknowledged chunks in flight
  (credit-based flow control); the receiver's sink is awaited for each chunk,
  so a slow receiver slows the sender instead of filling memory.

Guarantees shared by every implementation (they live once, in
``peer_ring.transport._core``): per-peer FIFO order of messages sent by one
node to another; every request ends -- answered, failed or timed out -- by
its deadline; bounded per-peer queues (:class:`~peer_ring.errors.Overloaded`
instead of unbounded memory); a protocol-version handshake
(:class:`~peer_ring.errors.VersionMismatch`); a maximum frame size
(:class:`~peer_ring.errors.FrameTooLarge`); reconnect with exponential backoff.

Handlers (set with :meth:`Transport.set_handler`) run on the event loop. A
handler may return a plain value (answered at once, no task created: the fast
path for local, non-blocking work), a future (answered when it resolves, no
task either) or a coroutine (run as a task). Handlers must not block the loop.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from peer_ring.errors import ConfigError, PeerRingError


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Who sent a message, as announced and proven in the connection handshake.

    ``member`` is True when the peer proved it is a member node (a client
    certificate naming ``node_id``, the cluster secret, or -- with no peer
    authentication configured -- anyone); ``admin`` when it proved an admin
    credential (an admin certificate or the admin token; with no
    authentication configured, anyone). The node authorises operations on
    these two flags (see ``peer_ring.node``).
    """

    node_id: str
    address: str
    member: bool = True
    admin: bool = True


#: Request handler: ``handler(message, peer) -> answer | awaitable answer``.
RequestHandler = Callable[[Any, PeerInfo], Any]


class StreamSink(Protocol):
    """Receiver side of one incoming stream (see :meth:`Transport.send_stream`).

    ``feed`` is awaited for each chunk in order; the sender's next chunk beyond
    its window waits until ``feed`` returns, which is the flow control.
    ``finish`` is awaited once after the last chunk and its return value is
    the sender's result. If the stream breaks, ``abort`` is called instead.
    None of these are called concurrently for one stream.
    """

    async def feed(self, chunk: Any) -> None: ...

    async def finish(self) -> Any: ...

    async def abort(self, reason: BaseException) -> None: ...


#: Stream handler: called when a stream opens, with its header; returns the sink.
StreamHandler = Callable[[Any, PeerInfo], Awaitable[StreamSink]]

#: Observer of peer health: ``(address, ok, error)``; ``ok`` False on connect
#: failures, broken connections and timeouts. Must not block.
PeerObserver = Callable[[str, bool, BaseException | None], None]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS for peer channels; certificates and keys are read from files.

    With ``ca_file`` set, peers verify each other's certificate chain against
    it. ``require_client_cert`` turns on mutual TLS: the server refuses
    clients without a certificate signed by ``ca_file``. Peer hostnames are
    not checked (nodes are addressed by IP; identity is the CA), unless
    ``check_hostname`` is set.
    """

    #: Path of this node's certificate chain (PEM).
    cert_file: str
    #: Path of the private key of ``cert_file`` (PEM).
    key_file: str
    #: Path of the CA bundle peers' certificates are verified against; None:
    #: peers' certificates are not verified (encryption without authentication).
    ca_file: str | None = None
    #: Mutual TLS: the server refuses clients without a certificate signed by
    #: ``ca_file``.
    require_client_cert: bool = False
    #: Also check that the peer's certificate names the host dialled (off:
    #: nodes are addressed by IP and identified by the CA).
    check_hostname: bool = False
    #: Seconds between checks of the three files' modification times; a
    #: change reloads them for new connections (rotation without restart, as
    #: cert-manager renews a Secret). None: never reload.
    reload_interval: float | None = 30.0

    def __post_init__(self) -> None:
        if self.reload_interval is not None and self.reload_interval <= 0:
            raise ConfigError("tls.reload_interval must be > 0 seconds (or None)")

    @classmethod
    def mutual(cls, cert_file: str, key_file: str, ca_file: str, **kw: Any) -> TLSConfig:
        """Mutual TLS as nodes use it: client certificates required and
        verified against ``ca_file``."""
        return cls(cert_file, key_file, ca_file, require_client_cert=True, **kw)


@dataclass(frozen=True, slots=True)
class PeerAuthConfig:
    """Credentials of the peer handshake besides TLS (secrets as text).

    ``cluster_secret`` -- every member knows it; a node proves it with an
    HMAC over both sides' fresh nonces (and checks the other side's proof),
    so it never crosses the wire. The alternative to mTLS for clusters
    without a PKI; with both configured, a member needs both.
    ``admin_token`` -- on a node, the token that grants admin operations
    (``leave``, ``kv``, ``bench``, status details); on a client (the CLI),
    the token it proves, the same way. ``admin_names`` -- certificate names
    (CN or DNS SAN) that make a TLS client an admin.

    Once any peer credential is configured (this or mTLS), members are no
    longer admins by default and unauthenticated peers are refused.
    """

    cluster_secret: str | None = None
    admin_token: str | None = None
    admin_names: tuple[str, ...] = ("peer-ring-admin",)

    def __post_init__(self) -> None:
        for name in ("cluster_secret", "admin_token"):
            value = getattr(self, name)
            if value is not None and len(value) < 16:
                raise ConfigError(f"auth.{name} must be at least 16 characters")

    def __repr__(self) -> str:  # never print secrets into logs
        return (
            f"PeerAuthConfig(cluster_secret={'***' if self.cluster_secret else None}, "
            f"admin_token={'***' if self.admin_token else None}, "
            f"admin_names={self.admin_names!r})"
        )


#: ``callback(answer, None)`` or ``callback(None, error)``: how a request ends.
AnswerCallback = Callable[[Any, "BaseException | None"], None]


class Packed:
    """A message already encoded for the wire (:meth:`Transport.pack`).

    Sending the same command to N replicas then encodes it once, not N times.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Settings shared by every transport. Durations are seconds, sizes bytes.

    ``request_timeout`` is the default deadline of a request; a call may pass
    its own. ``max_frame_size`` bounds one message on the wire in both
    directions: larger outgoing messages fail with FrameTooLarge before being
    sent, larger incoming frames close the connection (the sender is broken).
    ``max_pending_bytes`` bounds what may wait for one peer (unsent frames
    plus the socket's write buffer); beyond it requests fail with Overloaded
    -- the trade-off is memory versus absorbing bursts towards a slow peer.
    ``max_in_flight`` bounds unanswered requests per peer the same way.
    Reconnect attempts back off exponentially from ``reconnect_min`` to
    ``reconnect_max``; while backing off, requests fail fast with
    PeerUnavailable rather than queueing behind a dead peer.
    """

    #: Default deadline of a request in seconds; a call may pass its own.
    request_timeout: float = 5.0
    #: Seconds a connection attempt may take.
    connect_timeout: float = 2.0
    #: Largest message on the wire, bytes, both directions: a larger outgoing
    #: message fails with FrameTooLarge before it is sent, a larger incoming
    #: frame closes the connection.
    max_frame_size: int = 64 * 1024 * 1024
    #: Bytes that may wait for one peer (unsent frames plus the socket's write
    #: buffer); beyond it requests fail with Overloaded. Memory versus
    #: absorbing bursts towards a slow peer.
    max_pending_bytes: int = 64 * 1024 * 1024
    #: Unanswered requests per peer; beyond it requests fail with Overloaded.
    max_in_flight: int = 65_536
    #: Seconds before the first reconnect attempt; doubles per attempt. While
    #: backing off, requests fail fast with PeerUnavailable.
    reconnect_min: float = 0.05
    #: Upper bound, in seconds, of the reconnect backoff.
    reconnect_max: float = 2.0
    #: Unacknowledged chunks a stream (partition transfer) may have in flight:
    #: more hides latency, less bounds the receiver's buffering.
    stream_window: int = 8
    #: TCP: frames after which a channel's buffer is written at once, besides
    #: the write at the end of each event-loop pass; 0: only at the end of the
    #: pass. A burst (many requests, or answers, in one pass) then reaches the
    #: peer in parts, so both processes work at once instead of taking turns;
    #: the cost is at most one more write per that many frames.
    flush_frames: int = 16
    #: Cluster name sent in the handshake; set from ``NodeConfig.cluster``.
    cluster: str = "peer-ring"
    #: TLS for peer channels (``--tls-cert/--tls-key/--tls-ca`` or
    #: ``[node.tls]``: mutual TLS); None: plaintext.
    tls: TLSConfig | None = None
    #: Peer authentication and authorisation: cluster secrets, admin names
    #: and token (``--cluster-secret-file``, ``--admin-token-file`` or
    #: ``[node.auth]``; see docs/security.md); None: every peer is trusted.
    auth: PeerAuthConfig | None = None

    def __post_init__(self) -> None:
        for name in ("request_timeout", "connect_timeout", "reconnect_min", "reconnect_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"transport.{name} must be > 0")
        if self.reconnect_max < self.reconnect_min:
            raise ConfigError("transport.reconnect_max must be >= reconnect_min")
        if self.max_frame_size < 1024:
            raise ConfigError("transport.max_frame_size must be at least 1024 bytes")
        if self.max_pending_bytes < self.max_frame_size:
            raise ConfigError("transport.max_pending_bytes must be >= max_frame_size")
        if self.max_in_flight < 1 or self.stream_window < 1:
            raise ConfigError("transport.max_in_flight and stream_window must be >= 1")
        if self.flush_frames < 0:
            raise ConfigError("transport.flush_frames must be >= 0 (0: once per loop pass)")


class Transport(abc.ABC):
    """A node's channels to its peers. See the module docstring for the contract."""

    #: Name used by ``--transport``.
    name: str = "abstract"

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """The ``host:port`` peers use to reach this node (valid after start)."""

    @property
    @abc.abstractmethod
    def node_id(self) -> str:
        """This node's id, announced in handshakes."""

    @abc.abstractmethod
    def set_handler(self, handler: RequestHandler) -> None:
        """Install the handler for incoming requests and one-way messages."""

    @abc.abstractmethod
    def set_stream_handler(self, handler: StreamHandler) -> None:
        """Install the handler for incoming streams."""

    @abc.abstractmethod
    def add_observer(self, observer: PeerObserver) -> None:
        """Register a peer-health observer (fed to the failure detector)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind and start accepting peers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting, fail outstanding requests with ClosedError, close channels."""

    @abc.abstractmethod
    def request_future(
        self, address: str, message: Any, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """Send a request; the future resolves with the answer or an error.

        Never raises: every failure (including Overloaded and FrameTooLarge)
        is delivered through the future.
        """

    async def request(self, address: str, message: Any, timeout: float | None = None) -> Any:
        """Send a request and await its answer (see :meth:`request_future`)."""
        return await self.request_future(address, message, timeout)

    def request_callback(
        self,
        address: str,
        message: Any,
        timeout: float | None,
        callback: AnswerCallback,
    ) -> None:
        """Send a request; call ``callback`` exactly once with how it ended.

        The cheap form for fan-out (no future, no extra loop turn per answer).
        ``callback`` runs on the event loop -- synchronously, before this
        returns, when the request fails locally (encoding, size, overload) --
        and must not raise or block. ``message`` may be :class:`Packed`.
        """

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                callback(None, asyncio.CancelledError())
            elif (exc := fut.exception()) is not None:
                callback(None, exc)
            else:
                callback(fut.result(), None)

        if isinstance(message, Packed):
            message = msgpack.unpackb(message.data, raw=False, strict_map_key=False)
        self.request_future(address, message, timeout).add_done_callback(done)

    def pack(self, message: Any) -> Packed:
        """Encode ``message`` once for several :meth:`request_callback` calls.

        Raises :class:`~peer_ring.errors.PeerRingError` when it cannot be encoded.
        """
        try:
            return Packed(msgpack.packb(message, use_bin_type=True))
        except Exception as exc:  # msgpack raises several unrelated types
            raise PeerRingError(f"message cannot be encoded: {exc}") from exc

    def in_flight(self) -> int:
        """Requests sent and not yet answered, towards all peers (0 if not tracked)."""
        return 0

    @abc.abstractmethod
    def send(self, address: str, message: Any) -> bool:
        """Send a one-way message, best effort. False if it was dropped locally."""

    @abc.abstractmethod
    async def send_stream(
        self,
        address: str,
        header: Any,
        chunks: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Stream ``chunks`` to the peer's stream handler; return its ``finish()``.

        ``timeout`` applies to each chunk's acknowledgement, not the whole stream.
        """
