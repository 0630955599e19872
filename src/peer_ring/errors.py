"""The exception hierarchy of peer-ring.

Every error the framework raises derives from :class:`PeerRingError`. The
subtrees are shallow and grouped by what the caller does next:

* :class:`ConfigError` -- fix the configuration; retrying will not help.
* :class:`TransportError` -- the peer could not be reached or did not answer
  in time; retrying (possibly against another replica) may help.
* :class:`QuorumNotReached` -- fewer replicas than required acknowledged; the
  operation may or may not have been applied on some replicas.
* :class:`NotOwner` / :class:`RingMismatch` -- the receiver's view of the ring
  differs from the sender's; refresh the view and retry.
* :class:`InvalidRequest` -- the request itself is bad (too large, wrong type,
  unknown command); retrying the same request will fail the same way.
* :class:`ClosedError` -- the object was closed by *you*; nothing failed.

Errors raised by a request handler on a remote node travel back over the
wire as ``(code, message)`` and are re-raised on the caller as the same
class when that class is registered here, otherwise as :class:`RemoteError`.
Foreign exceptions (``OSError``, ``grpc.RpcError``) are translated only in
``peer_ring.transport``.
"""

from __future__ import annotations

from typing import ClassVar


class PeerRingError(Exception):
    """Root of every error raised by peer-ring."""

    #: Stable wire code used when this error crosses the network.
    code: ClassVar[str] = "ERR"


class ConfigError(PeerRingError, ValueError):
    """A configuration value is missing, out of range or inconsistent."""

    code = "CONFIG"


class TransportError(PeerRingError):
    """A peer could not be reached, or the channel to it failed."""

    code = "TRANSPORT"


class PeerUnavailable(TransportError):
    """The peer cannot be reached now (refused, reset, unresolvable).

    Unlike :class:`RequestTimeout` the request was certainly not delivered --
    except for the subclass :class:`ConnectionLost`, raised when the
    connection broke after the request may have been sent.
    """

    code = "UNAVAILABLE"


class ConnectionLost(PeerUnavailable):
    """The connection broke before an answer came; the request may have been
    written, delivered and applied: treat the outcome as unknown.

    A :class:`PeerUnavailable` like any other for liveness (the peer is
    gone), but never a sign that a write did not happen: do not retry a
    write that is not idempotent on another replica after it.
    """

    code = "CONNECTION_LOST"


class RequestTimeout(TransportError, TimeoutError):
    """No answer arrived before the request's deadline.

    The request may still have been applied by the peer: treat the outcome
    as unknown.
    """

    code = "TIMEOUT"


class Overloaded(TransportError):
    """The bounded send queue to a peer is full (backpressure).

    The request was not sent. Slow down or try another replica.
    """

    code = "OVERLOADED"


class ProtocolError(TransportError):
    """The peer sent something that does not follow the wire protocol.

    The connection that carried it is closed; the node keeps serving.
    """

    code = "PROTOCOL"


class VersionMismatch(ProtocolError):
    """The peer speaks another version of the peer protocol."""

    code = "VERSION"


class FrameTooLarge(ProtocolError):
    """A frame exceeds the configured maximum frame size."""

    code = "FRAME_TOO_LARGE"


class AuthenticationFailed(ProtocolError):
    """A peer channel was refused because one side could not prove who it is.

    Raised for a client certificate that does not name the node id its owner
    claims, a wrong or missing cluster secret, or a peer that skipped the
    authentication the other side requires. Retrying with the same
    credentials fails the same way; unlike :class:`NotAuthorized` the channel
    never opened.
    """

    code = "AUTH"


class NotAuthorized(PeerRingError):
    """The peer is authenticated but its credentials do not allow this operation.

    A member node asking for an admin operation (``leave``, ``kv``, status
    details) without an admin credential gets this; so does a client with
    only an admin credential asking for a replica command.
    """

    code = "NOPERM"


class OutOfMemory(PeerRingError):
    """A write was refused because the node holds ``maxmemory`` bytes of data
    and its policy may not (``noeviction``) or cannot (nothing evictable)
    free room. Reads and deletes are still served; retry after deleting keys
    or raising the limit. Nothing was written."""

    code = "OOM"


class QuorumNotReached(PeerRingError):
    """Fewer replicas than required acknowledged an operation.

    ``required`` is the R or W the caller asked for; ``acked`` how many
    replicas answered successfully before the deadline. Some replicas may have
    applied a write: the outcome is *unknown*, not *failed*.
    """

    code = "QUORUM"

    def __init__(
        self,
        required: int,
        acked: int,
        errors: dict[str, BaseException] | None = None,
        message: str | None = None,
    ) -> None:
        self.required = required
        self.acked = acked
        self.errors = dict(errors or {})
        detail = "; ".join(f"{peer}: {err!r}" for peer, err in sorted(self.errors.items()))
        text = message or f"quorum not reached: {acked} of {required} required replicas acked"
        super().__init__(f"{text}{' (' + detail + ')' if detail else ''}")


class NotOwner(PeerRingError):
    """The receiving node does not own the partition the request names."""

    code = "NOT_OWNER"


class RingMismatch(PeerRingError):
    """Sender and receiver hold different ring views (epoch fencing)."""

    code = "RING_MISMATCH"


class InvalidRequest(PeerRingError, ValueError):
    """The request is malformed, too large or of the wrong type."""

    code = "INVALID"


class UnknownCommand(InvalidRequest):
    """No handler is registered for the service or command named."""

    code = "UNKNOWN_COMMAND"


class DiscoveryError(PeerRingError):
    """Peer discovery could not start or lost its backend for good."""

    code = "DISCOVERY"


class ClosedError(PeerRingError):
    """The node, transport or client was closed by its owner.

    You get this when *you* closed the object and then used it; you do *not*
    get it when a peer went away (that is :class:`PeerUnavailable`).
    """

    code = "CLOSED"


class RemoteError(PeerRingError):
    """A remote handler failed with an error that has no local class."""

    code = "REMOTE"

    def __init__(self, remote_code: str, message: str) -> None:
        self.remote_code = remote_code
        super().__init__(f"[{remote_code}] {message}")


_BY_CODE: dict[str, type[PeerRingError]] = {}


def register_error(cls: type[PeerRingError]) -> type[PeerRingError]:
    """Make ``cls`` travel over the wire under its ``code`` (usable as decorator)."""
    _BY_CODE[cls.code] = cls
    return cls


for _cls in (
    PeerRingError,
    ConfigError,
    TransportError,
    PeerUnavailable,
    ConnectionLost,
    RequestTimeout,
    Overloaded,
    ProtocolError,
    VersionMismatch,
    FrameTooLarge,
    AuthenticationFailed,
    NotAuthorized,
    OutOfMemory,
    NotOwner,
    RingMismatch,
    InvalidRequest,
    UnknownCommand,
    DiscoveryError,
    ClosedError,
):
    register_error(_cls)


def error_to_wire(exc: BaseException) -> tuple[str, str]:
    """Encode an exception raised by a handler as ``(code, message)``."""
    if isinstance(exc, QuorumNotReached):
        return (f"QUORUM:{exc.required}:{exc.acked}", str(exc))
    if isinstance(exc, RemoteError):
        return (exc.remote_code, str(exc))
    if isinstance(exc, PeerRingError):
        return (exc.code, str(exc))
    return ("INTERNAL", f"{type(exc).__name__}: {exc}")


def error_from_wire(code: str, message: str) -> PeerRingError:
    """Rebuild the exception a remote handler raised."""
    if code.startswith("QUORUM:"):
        _, required, acked = code.split(":")
        return QuorumNotReached(int(required), int(acked), message=message)
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(code, message)
    try:
        return cls(message)
    except TypeError:  # a registered class with a richer constructor
        return RemoteError(code, message)
