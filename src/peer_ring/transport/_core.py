"""The behaviour every transport shares, written once.

Implementations (``tcp``, ``grpc``, ``memory``) only move opaque frames --
one msgpack-encoded message each -- over some byte channel. They subclass
:class:`ChannelTransport` and provide two things:

* :meth:`ChannelTransport._listen` binds and, for every accepted channel,
  calls :meth:`ChannelTransport._accept` with a :class:`FrameConn` to get the
  :class:`FrameReceiver` that incoming frames go to;
* :meth:`ChannelTransport._open` dials a peer and wires the new channel's
  incoming frames to the receiver it is given.

Everything else lives here: frame encoding, the version handshake, request
ids matched to futures or callbacks, per-request deadlines (kept in 10 ms
buckets: one timer per bucket, not per request, so a request may end up to
10 ms after its deadline), bounded per-peer queues,
reconnect with backoff, one-way messages, credit-based streams, fault
injection for tests, and health notifications for the failure detector.

Wire frames (msgpack arrays)::

    [HELLO, version, cluster, node_id, address, nonce]
                                                  first frame of a channel
    [CHALLENGE, node_id, nonce, proof | nil]      the acceptor asks for secrets
    [AUTH, {"m": member proof, "a": admin proof}] the dialer's answer to it
    [HELLO_OK, version, node_id]                  the acceptor's answer
    [REQ, rid, message]                           request
    [RESP, rid, answer]                           answer to rid
    [ERR, rid, code, text]                        error answer (rid 0: channel error)
    [ONEWAY, message]                             one-way message
    [STREAM, rid, sid, op, data]                  stream op, answered like REQ

A channel carries requests one way only (dialer -> acceptor) and answers the
other way, so each pair of talking nodes has up to two channels.

Authentication (``peer_ring.transport.auth``): under mutual TLS the acceptor
refuses a HELLO whose node id the client certificate does not name; with a
cluster secret or an admin token configured it answers HELLO with CHALLENGE
and opens the channel only after a valid AUTH. The dialer refuses an
acceptor that skips the challenge while the dialer has a cluster secret, or
whose TLS certificate does not name the id in HELLO_OK. What the peer proved
travels with every request as :class:`PeerInfo` ``member``/``admin``; the
node decides what each operation needs. The nonce and the two extra frame
kinds are ignored by nodes without authentication configured, so the
protocol version did not change.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterable, Iterable
from functools import partial
from typing import Any

import msgpack
from mypy_extensions import mypyc_attr

from peer_ring._awaitable import is_awaitable
from peer_ring.errors import (
    AuthenticationFailed,
    ClosedError,
    ConnectionLost,
    FrameTooLarge,
    Overloaded,
    PeerRingError,
    PeerUnavailable,
    ProtocolError,
    RequestTimeout,
    TransportError,
    VersionMismatch,
    error_from_wire,
    error_to_wire,
)
from peer_ring.transport.auth import (
    NONCE_SIZE,
    admin_proof,
    member_proof,
    names_match,
    server_proof,
    verify,
)
from peer_ring.transport.base import (
    AnswerCallback,
    Packed,
    PeerAuthConfig,
    PeerInfo,
    PeerObserver,
    RequestHandler,
    StreamHandler,
    StreamSink,
    Transport,
    TransportConfig,
)
from peer_ring.transport.tls import TlsMaterial
from peer_ring.wire import PROTOCOL_VERSION

log = logging.getLogger(__name__)

HELLO, HELLO_OK, REQ, RESP, ERR, ONEWAY, STREAM = 4, 5, 0, 1, 2, 3, 6
CHALLENGE, AUTH = 7, 8
_NO_AUTH = PeerAuthConfig()
S_OPEN, S_CHUNK, S_FINISH, S_ABORT = 0, 1, 2, 3

_packer = msgpack.Packer(use_bin_type=True)
_pack = _packer.pack
#: ``[REQ, `` of a request frame: a 3-element array, then the REQ kind (0);
#: the rid and the (possibly pre-packed) message follow.
_REQ_HEAD = b"\x93" + _pack(REQ)
#: Deadline buckets per second (resolution of request deadlines).
_TICKS = 100


def decode_frame(data: bytes | memoryview) -> list[Any]:
    """Decode one frame, raising ProtocolError for anything malformed."""
    try:
        frame = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed frame: {exc}") from exc
    if type(frame) is not list or not frame or type(frame[0]) is not int:
        raise ProtocolError("malformed frame: not a typed array")
    return frame


# Subclassed by every channel implementation, and by test doubles that drive
# a session without sockets (the peer fuzz targets): an interpreted class may
# subclass it in the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class FrameConn(abc.ABC):
    """One established channel, as an implementation provides it."""

    @abc.abstractmethod
    def write(self, frame: bytes) -> None:
        """Queue one encoded frame; implementations coalesce writes."""

    @abc.abstractmethod
    def buffered(self) -> int:
        """Bytes accepted by :meth:`write` and not yet handed to the OS."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the channel; the receiver's ``closed`` is called."""

    def peer_names(self) -> frozenset[str] | None:
        """Names (CN, DNS/URI SANs) of the other end's *verified* certificate;
        an empty set under TLS without one, None on a channel without TLS."""
        return None


@mypyc_attr(allow_interpreted_subclasses=True)
class FrameReceiver(abc.ABC):
    """Where an implementation delivers what arrives on a channel.

    Open to interpreted subclasses in the compiled build (``setup.py``).
    :class:`FrameConn` and :class:`ChannelTransport` are not: their
    subclasses are compiled with them (``peer_ring._build.HOT_MODULES``); a
    transport written elsewhere implements
    :class:`~peer_ring.transport.base.Transport` instead."""

    @abc.abstractmethod
    def frame(self, data: bytes | memoryview) -> None:
        """One complete frame arrived (the buffer is valid during the call only)."""

    @abc.abstractmethod
    def closed(self, exc: BaseException | None) -> None:
        """The channel is gone; called exactly once."""

    def fatal(self, exc: PeerRingError) -> None:  # noqa: B027 - optional hook
        """The implementation found a protocol violation; the channel will close."""


class FaultInjector:
    """Test-only network faults applied to frames this node writes.

    ``drop[address]`` is a loss probability, ``delay[address]`` seconds of
    added latency, both for frames towards the peer listening at
    ``address``. Block both directions of a link by setting the rule on both
    nodes, one direction by setting it on one. Installed only by nodes started
    with the explicit testing flag.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.drop: dict[str, float] = {}
        self.delay: dict[str, float] = {}
        self.dropped = 0
        self._rng = random.Random(seed)

    def clear(self) -> None:
        self.drop.clear()
        self.delay.clear()

    def should_drop(self, address: str) -> bool:
        p = self.drop.get(address)
        if p is None:
            return False
        if p >= 1.0 or self._rng.random() < p:
            self.dropped += 1
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        return {"drop": dict(self.drop), "delay": dict(self.delay), "dropped": self.dropped}


class _Pending:
    """An unanswered request: a future or a callback is told how it ended."""

    __slots__ = ("callback", "future", "peer")

    peer: _Peer  # set when the request is enqueued

    def __init__(self, future: asyncio.Future[Any] | None, callback: AnswerCallback | None) -> None:
        self.future = future
        self.callback = callback

    def ok(self, answer: Any) -> None:
        future = self.future
        if future is None:
            _call(self.callback, answer, None)
        elif not future.done():
            future.set_result(answer)

    def fail(self, exc: BaseException) -> None:
        future = self.future
        if future is None:
            _call(self.callback, None, exc)
        elif not future.done():
            future.set_exception(exc)


def _call(callback: AnswerCallback | None, answer: Any, exc: BaseException | None) -> None:
    assert callback is not None
    try:
        callback(answer, exc)
    except Exception:  # a broken callback must not break the channel
        log.exception("request callback failed")


class _Peer(FrameReceiver):
    """Outbound state towards one peer address: channel, queue, backoff."""

    def __init__(self, core: ChannelTransport, address: str) -> None:
        self.core = core
        self.address = address
        self.conn: FrameConn | None = None
        self.ready = False  # HELLO_OK received
        self.connecting: asyncio.Task[None] | None = None
        self.queue: list[bytes] = []
        self.queued_bytes = 0
        self.pending: dict[int, _Pending] = {}
        self.backoff = 0.0
        self.retry_at = 0.0
        self.last_error: BaseException | None = None
        self.healthy = True
        self.lost_while_connecting = False
        self.nonce = b""
        self.challenged = False

    # -- sending ---------------------------------------------------------
    def write(self, frame: bytes) -> None:
        """Write or queue one frame; raises TransportError if it cannot be taken."""
        core = self.core
        faults = core.faults
        if faults is not None and faults.drop and faults.should_drop(self.address):
            return
        conn = self.conn
        if conn is not None and self.ready:
            if conn.buffered() + len(frame) > core.config.max_pending_bytes:
                raise Overloaded(f"send buffer to {self.address} is full")
            if faults is not None and self.address in faults.delay:
                core.loop.call_later(faults.delay[self.address], self._late_write, frame)
                return
            conn.write(frame)
            return
        if self.connecting is None and conn is None:
            now = core.loop.time()
            if now < self.retry_at:
                raise PeerUnavailable(
                    f"{self.address} unreachable ({self.last_error}); retry in "
                    f"{self.retry_at - now:.2f}s"
                )
            self.connecting = core.loop.create_task(self._connect())
        if self.queued_bytes + len(frame) > core.config.max_pending_bytes:
            raise Overloaded(f"queue to {self.address} is full while connecting")
        self.queue.append(frame)
        self.queued_bytes += len(frame)

    def _late_write(self, frame: bytes) -> None:
        if self.conn is not None and self.ready:
            self.conn.write(frame)

    async def _connect(self) -> None:
        core = self.core
        self.lost_while_connecting = False
        # not asyncio.wait_for: on 3.11 a dial finishing as the timeout fires
        # loses its channel unclosed; here a late channel is closed instead
        opening = core.loop.create_task(core._open(self.address, self))
        try:
            try:
                done, _ = await asyncio.wait({opening}, timeout=core.config.connect_timeout)
            except asyncio.CancelledError:
                _abandon(opening)
                raise
            if not done:
                _abandon(opening)
                raise TimeoutError
            conn = opening.result()
            if self.lost_while_connecting:  # it died before this task resumed
                conn.close()
                raise PeerUnavailable(f"connection to {self.address} lost while connecting")
        except BaseException as exc:
            self.connecting = None
            if isinstance(exc, asyncio.CancelledError):
                self._fail_all(ClosedError("transport closed"))
                raise
            err = core._map_connect_error(self.address, exc)
            self._set_backoff(err)
            self._fail_all(err)
            core._notify(self.address, False, err)
            return
        self.conn = conn
        self.nonce = os.urandom(NONCE_SIZE)
        self.challenged = False
        conn.write(
            _pack(
                [HELLO, core.protocol_version, core.config.cluster, core.node_id, core.address,
                 self.nonce]
            )
        )  # fmt: skip
        self.connecting = None

    def _set_backoff(self, err: BaseException) -> None:
        cfg = self.core.config
        self.backoff = min(cfg.reconnect_max, max(cfg.reconnect_min, self.backoff * 2))
        if isinstance(err, (VersionMismatch, AuthenticationFailed)):
            self.backoff = cfg.reconnect_max
        self.retry_at = self.core.loop.time() + self.backoff
        self.last_error = err

    def _fail_all(self, err: BaseException) -> None:
        self.queue.clear()
        self.queued_bytes = 0
        pending, self.pending = self.pending, {}
        by_rid = self.core._pending_by_rid
        for rid, p in pending.items():
            by_rid.pop(rid, None)
            p.fail(err)

    # -- receiving (answers) ---------------------------------------------
    def frame(self, data: bytes | memoryview) -> None:
        try:
            frame = decode_frame(data)
            kind = frame[0]
            if kind == RESP:
                p = self.core._pending_by_rid.pop(frame[1], None)
                if p is not None:
                    self.pending.pop(frame[1], None)
                    p.ok(frame[2])
                    if not self.healthy:
                        self.healthy = True
                        self.core._notify(self.address, True, None)
            elif kind == ERR:
                rid, code, text = frame[1], str(frame[2]), str(frame[3])
                if rid == 0:
                    self._channel_error(error_from_wire(code, text))
                    return
                p = self.core._pending_by_rid.pop(rid, None)
                if p is not None:
                    self.pending.pop(rid, None)
                    p.fail(error_from_wire(code, text))
            elif kind == CHALLENGE and not self.ready:
                self._answer_challenge(frame)
            elif kind == HELLO_OK:
                if frame[1] != self.core.protocol_version:
                    raise VersionMismatch(
                        f"{self.address} speaks peer protocol {frame[1]}, "
                        f"we speak {self.core.protocol_version}"
                    )
                self._check_acceptor(str(frame[2]))
                self.ready = True
                self.backoff = 0.0
                self.last_error = None
                conn = self.conn
                queue, self.queue = self.queue, []
                self.queued_bytes = 0
                if conn is not None:
                    delay = self.core.faults.delay.get(self.address) if self.core.faults else None
                    for f in queue:
                        if delay:
                            self.core.loop.call_later(delay, self._late_write, f)
                        else:
                            conn.write(f)
                if not self.healthy:
                    self.healthy = True
                self.core._notify(self.address, True, None)
            else:
                raise ProtocolError(f"unexpected frame kind {kind} on a request channel")
        except (ProtocolError, IndexError, TypeError, ValueError) as exc:
            err = exc if isinstance(exc, ProtocolError) else ProtocolError(f"bad answer: {exc}")
            self._channel_error(err)

    def _answer_challenge(self, frame: list[Any]) -> None:
        """``[CHALLENGE, server_id, nonce, proof]``: check the acceptor's proof of
        the cluster secret (when we know it), then prove ours and the admin token."""
        core = self.core
        server_id, server_nonce, proof = str(frame[1]), frame[2], frame[3]
        if type(server_nonce) is not bytes or len(server_nonce) != NONCE_SIZE:
            raise ProtocolError("malformed authentication challenge")
        auth = core.config.auth
        cluster = core.config.cluster
        answer: dict[str, bytes] = {}
        if auth is not None and auth.cluster_secret:
            expected = server_proof(auth.cluster_secret, cluster, server_id, self.nonce,
                                    server_nonce)  # fmt: skip
            if not verify(expected, proof):
                raise AuthenticationFailed(
                    f"{self.address} ({server_id}) does not know the cluster secret"
                )
            answer["m"] = member_proof(auth.cluster_secret, cluster, core.node_id, server_id,
                                       self.nonce, server_nonce)  # fmt: skip
        if auth is not None and auth.admin_token:
            answer["a"] = admin_proof(auth.admin_token, cluster, core.node_id, server_id,
                                      self.nonce, server_nonce)  # fmt: skip
        self.challenged = True
        if self.conn is not None:
            self.conn.write(_pack([AUTH, answer]))

    def _check_acceptor(self, server_id: str) -> None:
        """HELLO_OK from ``server_id``: refuse an acceptor that skipped the
        challenge our cluster secret requires, or whose certificate names
        someone else."""
        auth = self.core.config.auth
        if auth is not None and auth.cluster_secret and not self.challenged:
            raise AuthenticationFailed(
                f"{self.address} ({server_id}) did not ask for the cluster secret; "
                "refusing an unauthenticated peer"
            )
        conn = self.conn
        names = conn.peer_names() if conn is not None else None
        if names and not names_match(server_id, names):
            raise AuthenticationFailed(
                f"{self.address} claims to be {server_id!r} but its certificate names "
                f"{', '.join(sorted(names))}"
            )

    def fatal(self, exc: PeerRingError) -> None:
        self._channel_error(exc)

    def _channel_error(self, err: PeerRingError) -> None:
        log.warning("channel to %s failed: %s", self.address, err)
        self._set_backoff(err)
        conn = self.conn
        self._drop_conn(err)
        if conn is not None:
            conn.close()

    def closed(self, exc: BaseException | None) -> None:
        if self.conn is None:
            # a channel dialed by _connect can die before that task resumes;
            # without this note it would adopt the dead channel and never redial
            self.lost_while_connecting = self.connecting is not None
            return
        # the requests in flight may have been delivered: outcome unknown
        err: PeerRingError = ConnectionLost(
            f"connection to {self.address} lost" + (f": {exc}" if exc else "")
        )
        if self.core._closing:
            err = ClosedError("transport closed")
        else:
            self.retry_at = self.core.loop.time() + self.core.config.reconnect_min
            self.last_error = err
        self._drop_conn(err)

    def _drop_conn(self, err: BaseException) -> None:
        self.conn = None
        self.ready = False
        self._fail_all(err)
        if self.healthy and not self.core._closing:
            self.healthy = False
            self.core._notify(self.address, False, err)


class _StreamState:
    __slots__ = ("queue", "sink", "task")

    def __init__(
        self, sink: StreamSink | None, task: asyncio.Task[None], queue: asyncio.Queue[Any]
    ) -> None:
        self.sink = sink
        self.task = task
        self.queue = queue


class _Session(FrameReceiver):
    """Inbound side of one channel: handshake, dispatch, answers."""

    def __init__(self, core: ChannelTransport, conn: FrameConn) -> None:
        self.core = core
        self.conn: FrameConn | None = conn
        self.peer: PeerInfo | None = None
        self.streams: dict[int, _StreamState] = {}
        #: (node_id, address, client nonce, our nonce, cert member, cert admin)
        #: between CHALLENGE and AUTH
        self.challenge: tuple[str, str, bytes, bytes, bool, bool] | None = None

    def _write(self, frame: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        faults = self.core.faults
        if faults is not None and self.peer is not None:
            addr = self.peer.address
            if faults.drop and faults.should_drop(addr):
                return
            delay = faults.delay.get(addr)
            if delay:
                self.core.loop.call_later(delay, self._late_write, frame)
                return
        conn.write(frame)

    def _late_write(self, frame: bytes) -> None:
        if self.conn is not None:
            self.conn.write(frame)

    def _answer(self, rid: int, result: Any) -> None:
        try:
            frame = _pack([RESP, rid, result])
        except Exception as exc:
            self._error(rid, PeerRingError(f"answer cannot be encoded: {exc}"))
            return
        if len(frame) > self.core.config.max_frame_size:
            self._error(rid, FrameTooLarge(f"answer of {len(frame)} bytes exceeds max frame size"))
            return
        self._write(frame)

    def _error(self, rid: int, exc: BaseException) -> None:
        code, text = error_to_wire(exc)
        self._write(_pack([ERR, rid, code, text]))

    def fatal(self, exc: PeerRingError) -> None:
        if self.peer is None:  # not even a handshake: probably not a peer-ring peer
            log.warning(
                "closing channel from an unidentified client: %s (this is a peer port; a "
                "SWIM node whose --seeds name it should use the gossip port instead, 7946 "
                "by default)",
                exc,
            )
        else:
            log.warning("closing channel from %s: %s", self.peer, exc)
        self.core.stats["protocol_errors"] += 1
        if isinstance(exc, AuthenticationFailed):
            self.core.stats["auth_failures"] += 1
        self._error(0, exc)
        conn = self.conn
        if conn is not None:
            conn.close()

    def frame(self, data: bytes | memoryview) -> None:
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            self.fatal(exc)
            return
        kind = frame[0]
        peer = self.peer
        try:
            if kind == REQ and peer is not None:
                rid = frame[1]
                core = self.core
                core.stats["requests_in"] += 1
                try:
                    result = core._handler(frame[2], peer)
                except Exception as exc:
                    self._error(rid, exc)
                    return
                if isinstance(result, asyncio.Future):  # answered when it resolves: no task
                    result.add_done_callback(partial(self._settle, rid))
                elif is_awaitable(result):
                    task = core.loop.create_task(self._finish(rid, result))
                    core._tasks.add(task)
                    task.add_done_callback(core._tasks.discard)
                else:
                    self._answer(rid, result)
            elif kind == ONEWAY and peer is not None:
                self.core.stats["oneway_in"] += 1
                try:
                    result = self.core._handler(frame[1], peer)
                except Exception:
                    log.exception("one-way handler failed")
                    return
                if is_awaitable(result):
                    task = self.core.loop.create_task(self._swallow(result))
                    self.core._tasks.add(task)
                    task.add_done_callback(self.core._tasks.discard)
            elif kind == STREAM and peer is not None:
                self._stream(frame[1], frame[2], frame[3], frame[4], peer)
            elif kind == HELLO and peer is None and self.challenge is None:
                self._hello(frame)
            elif kind == AUTH and peer is None and self.challenge is not None:
                self._auth(frame)
            else:
                raise ProtocolError(
                    f"unexpected frame kind {kind}" + (" before handshake" if peer is None else "")
                )
        except (IndexError, TypeError, KeyError, ValueError) as exc:
            self.fatal(ProtocolError(f"malformed frame: {exc!r}"))
        except ProtocolError as exc:
            self.fatal(exc)

    def _hello(self, frame: list[Any]) -> None:
        if len(frame) < 5:
            raise ProtocolError("malformed HELLO: fewer than 5 fields")
        _, version, cluster, node_id, address = frame[:5]
        if version != self.core.protocol_version:
            raise VersionMismatch(
                f"peer {node_id} at {address} speaks peer protocol {version}; "
                f"this node speaks {self.core.protocol_version}"
            )
        if cluster != self.core.config.cluster:
            raise ProtocolError(
                f"peer {node_id} belongs to cluster {cluster!r}, not {self.core.config.cluster!r}"
            )
        core = self.core
        node_id, address = str(node_id), str(address)
        cert_member = cert_admin = False
        if core.requires_client_cert:
            names = self.conn.peer_names() if self.conn is not None else None
            if not names:
                raise AuthenticationFailed(f"{node_id} at {address} sent no verified certificate")
            auth = core.config.auth
            admin_names = (auth or _NO_AUTH).admin_names
            cert_admin = not names.isdisjoint(admin_names)
            # admin names are not node ids: an admin certificate claiming its
            # own name is an admin, never a member
            cert_member = names_match(node_id, names) and node_id not in admin_names
            if not cert_member and not cert_admin:
                raise AuthenticationFailed(
                    f"the certificate of {address} names {', '.join(sorted(names))}, "
                    f"not the node id {node_id!r} it claims"
                )
        auth = core.config.auth
        if auth is not None and (auth.cluster_secret or auth.admin_token):
            nonce = frame[5] if len(frame) > 5 else None
            if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
                raise AuthenticationFailed(
                    f"{node_id} at {address} did not offer peer authentication, which "
                    "this node requires"
                )
            ours = os.urandom(NONCE_SIZE)
            self.challenge = (node_id, address, nonce, ours, cert_member, cert_admin)
            proof = (
                server_proof(auth.cluster_secret, core.config.cluster, core.node_id, nonce, ours)
                if auth.cluster_secret
                else None
            )
            self._write(_pack([CHALLENGE, core.node_id, ours, proof]))
            return
        if core.authenticates:
            self._open_session(node_id, address, cert_member, cert_admin)
        else:
            self._open_session(node_id, address, True, True)

    def _auth(self, frame: list[Any]) -> None:
        """``[AUTH, {"m": proof, "a": proof}]``: the answer to our challenge."""
        assert self.challenge is not None
        node_id, address, theirs, ours, cert_member, cert_admin = self.challenge
        proofs = frame[1]
        if type(proofs) is not dict:
            raise ProtocolError("malformed authentication answer")
        core = self.core
        auth = core.config.auth
        assert auth is not None
        cluster = core.config.cluster
        member = cert_member or not core.requires_client_cert
        if auth.cluster_secret:
            expected = member_proof(auth.cluster_secret, cluster, node_id, core.node_id,
                                    theirs, ours)  # fmt: skip
            member = member and verify(expected, proofs.get("m"))
        admin = cert_admin
        if auth.admin_token:
            expected = admin_proof(auth.admin_token, cluster, node_id, core.node_id, theirs, ours)
            admin = admin or verify(expected, proofs.get("a"))
        if not member and not admin:
            raise AuthenticationFailed(
                f"{node_id} at {address} failed peer authentication "
                "(wrong or missing cluster secret or admin token)"
            )
        self.challenge = None
        self._open_session(node_id, address, member, admin)

    def _open_session(self, node_id: str, address: str, member: bool, admin: bool) -> None:
        self.peer = PeerInfo(node_id, address, member, admin)
        self._write(_pack([HELLO_OK, self.core.protocol_version, self.core.node_id]))

    async def _finish(self, rid: int, awaitable: Any) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            # for the caller this peer went away: retryable, unlike ClosedError
            self._error(rid, PeerUnavailable("peer shutting down"))
            raise
        except Exception as exc:
            if not isinstance(exc, PeerRingError):
                log.exception("request handler failed")
            self._error(rid, exc)
            return
        self._answer(rid, result)

    def _settle(self, rid: int, fut: asyncio.Future[Any]) -> None:
        """Answer ``rid`` from a handler's future (the task-free form of ``_finish``)."""
        if fut.cancelled():
            self._error(rid, PeerUnavailable("peer shutting down"))
            return
        exc = fut.exception()
        if exc is None:
            self._answer(rid, fut.result())
            return
        if not isinstance(exc, PeerRingError):
            log.exception("request handler failed", exc_info=exc)
        self._error(rid, exc)

    async def _swallow(self, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("one-way handler failed")

    # -- streams ---------------------------------------------------------
    def _stream(self, rid: int, sid: int, op: int, data: Any, peer: PeerInfo) -> None:
        if op == S_OPEN:
            if sid in self.streams:
                raise ProtocolError(f"stream {sid} opened twice")
            queue: asyncio.Queue[Any] = asyncio.Queue()
            task = self.core.loop.create_task(self._stream_worker(sid, data, peer, queue))
            self.core._tasks.add(task)
            task.add_done_callback(self.core._tasks.discard)
            self.streams[sid] = _StreamState(None, task, queue)
            queue.put_nowait((rid, S_OPEN, data))
            return
        state = self.streams.get(sid)
        if state is None:
            self._error(rid, ProtocolError(f"unknown stream {sid}"))
            return
        state.queue.put_nowait((rid, op, data))

    async def _stream_worker(
        self, sid: int, header: Any, peer: PeerInfo, queue: asyncio.Queue[Any]
    ) -> None:
        sink: StreamSink | None = None
        try:
            while True:
                rid, op, data = await queue.get()
                if op == S_OPEN:
                    handler = self.core._stream_handler
                    if handler is None:
                        raise ProtocolError("this node accepts no streams")
                    sink = await handler(header, peer)
                    self._answer(rid, True)
                elif op == S_CHUNK and sink is not None:
                    await sink.feed(data)
                    self._answer(rid, True)
                elif op == S_FINISH and sink is not None:
                    result = await sink.finish()
                    self._answer(rid, result)
                    return
                else:  # abort, or an op before open succeeded
                    if sink is not None:
                        await sink.abort(PeerUnavailable(f"sender aborted: {data}"))
                    self._answer(rid, None)  # unanswered, it would time out as a fault
                    return
        except asyncio.CancelledError:
            if sink is not None:
                await sink.abort(ClosedError("channel closed"))
            raise
        except Exception as exc:
            if sink is not None:
                with contextlib.suppress(Exception):
                    await sink.abort(exc)
            if not isinstance(exc, PeerRingError):
                log.exception("stream %d from %s failed", sid, peer.node_id)
            # answer the failing op and every op already queued behind it
            self._error(rid, exc)
            while not queue.empty():
                qrid, _, _ = queue.get_nowait()
                self._error(qrid, exc)
        finally:
            self.streams.pop(sid, None)

    def closed(self, exc: BaseException | None) -> None:
        self.conn = None
        for state in list(self.streams.values()):
            state.task.cancel()
        self.streams.clear()


class ChannelTransport(Transport):
    """Common engine; see the module docstring."""

    def __init__(
        self,
        node_id: str,
        address: str,
        config: TransportConfig | None = None,
        *,
        faults: FaultInjector | None = None,
    ) -> None:
        self._node_id = node_id
        self._address = address
        self.config = config or TransportConfig()
        self.faults = faults
        #: Peer protocol version announced in handshakes (tests may change it).
        self.protocol_version = PROTOCOL_VERSION
        self._handler: RequestHandler = _no_handler
        self._stream_handler: StreamHandler | None = None
        self._observers: list[PeerObserver] = []
        self._peers: dict[str, _Peer] = {}
        self._pending_by_rid: dict[int, _Pending] = {}
        #: deadline tick -> rids whose deadline falls in it (one timer per tick)
        self._deadlines: dict[int, list[int]] = {}
        self._rids = itertools.count(1)
        self._sids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.stats: dict[str, int] = {
            "requests_out": 0,
            "requests_in": 0,
            "oneway_in": 0,
            "timeouts": 0,
            "protocol_errors": 0,
            "auth_failures": 0,
        }
        #: TLS contexts with reload (set by implementations that use TLS)
        self.tls_material: TlsMaterial | None = None
        tls = self.config.tls
        #: mutual TLS: accepted channels must show a certificate naming their id
        self.requires_client_cert = tls is not None and tls.require_client_cert
        auth = self.config.auth
        #: some peer credential is configured: members are not admins by default
        self.authenticates = self.requires_client_cert or (
            auth is not None and bool(auth.cluster_secret or auth.admin_token)
        )
        self.loop: asyncio.AbstractEventLoop
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop; start() binds the real one
            self.loop = asyncio.get_event_loop_policy().get_event_loop()

    # -- contract --------------------------------------------------------
    @property
    def address(self) -> str:
        return self._address

    @property
    def node_id(self) -> str:
        return self._node_id

    def set_handler(self, handler: RequestHandler) -> None:
        self._handler = handler

    def set_stream_handler(self, handler: StreamHandler) -> None:
        self._stream_handler = handler

    def add_observer(self, observer: PeerObserver) -> None:
        self._observers.append(observer)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._closing = False
        await self._listen()
        tls = self.config.tls
        if self.tls_material is not None and tls is not None and tls.reload_interval:
            task = self.loop.create_task(self._watch_tls(tls.reload_interval))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _watch_tls(self, interval: float) -> None:
        """Poll the TLS files; reload them when they change (see TlsMaterial)."""
        material = self.tls_material
        assert material is not None
        while True:
            await asyncio.sleep(interval)
            self.reload_tls()

    def reload_tls(self) -> bool:
        """Reload the TLS files now if they changed; True when reloaded."""
        material = self.tls_material
        if material is None or not material.check():
            return False
        self._tls_reloaded()
        return True

    def _tls_reloaded(self) -> None:
        """New TLS material was loaded; implementations refresh what they cache."""

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        err = ClosedError("transport closed")
        for peer in list(self._peers.values()):
            if peer.connecting is not None:
                peer.connecting.cancel()
            peer._fail_all(err)
            if peer.conn is not None:
                peer.conn.close()
        self._peers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        await self._shutdown()

    def request_future(
        self, address: str, message: Any, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._request(address, message, timeout, fut, None)
        return fut

    def request_callback(
        self,
        address: str,
        message: Any,
        timeout: float | None,
        callback: AnswerCallback,
    ) -> None:
        self._request(address, message, timeout, None, callback)

    def pack(self, message: Any) -> Packed:
        try:
            return Packed(_pack(message))
        except Exception as exc:  # msgpack raises several unrelated types
            raise PeerRingError(f"message cannot be encoded: {exc}") from exc

    def _request(
        self,
        address: str,
        message: Any,
        timeout: float | None,
        fut: asyncio.Future[Any] | None,
        callback: AnswerCallback | None,
    ) -> None:
        p = _Pending(fut, callback)
        if self._closing:
            p.fail(ClosedError("transport closed"))
            return
        rid = next(self._rids)
        try:
            body = message.data if type(message) is Packed else _pack(message)
            frame = _REQ_HEAD + _pack(rid) + body
        except Exception as exc:
            p.fail(PeerRingError(f"message cannot be encoded: {exc}"))
            return
        if len(frame) > self.config.max_frame_size:
            p.fail(
                FrameTooLarge(
                    f"request of {len(frame)} bytes exceeds max frame size "
                    f"{self.config.max_frame_size}"
                )
            )
            return
        self._enqueue(address, rid, frame, p, timeout)

    def _enqueue(
        self,
        address: str,
        rid: int,
        frame: bytes,
        p: _Pending,
        timeout: float | None,
    ) -> None:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(self, address)
        if len(peer.pending) >= self.config.max_in_flight:
            p.fail(Overloaded(f"too many requests in flight to {address}"))
            return
        try:
            peer.write(frame)
        except TransportError as exc:
            p.fail(exc)
            return
        loop = self.loop
        tick = int((loop.time() + (self.config.request_timeout if timeout is None else timeout))
                   * _TICKS) + 1  # fmt: skip
        bucket = self._deadlines.get(tick)
        if bucket is None:
            bucket = self._deadlines[tick] = []
            loop.call_at(tick / _TICKS, self._expire_tick, tick)
        bucket.append(rid)
        p.peer = peer
        peer.pending[rid] = p
        self._pending_by_rid[rid] = p
        self.stats["requests_out"] += 1

    def _expire_tick(self, tick: int) -> None:
        for rid in self._deadlines.pop(tick, ()):
            if rid in self._pending_by_rid:
                self._expire(rid)

    def _expire(self, rid: int) -> None:
        p = self._pending_by_rid.pop(rid, None)
        if p is None:
            return
        p.peer.pending.pop(rid, None)
        self.stats["timeouts"] += 1
        err = RequestTimeout(f"no answer from {p.peer.address} before the deadline")
        p.fail(err)
        if p.peer.healthy:
            p.peer.healthy = False
            self._notify(p.peer.address, False, err)

    def send(self, address: str, message: Any) -> bool:
        if self._closing:
            return False
        try:
            frame = _pack([ONEWAY, message])
        except Exception:
            log.exception("one-way message cannot be encoded")
            return False
        if len(frame) > self.config.max_frame_size:
            return False
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = _Peer(self, address)
        try:
            peer.write(frame)
        except TransportError:
            return False
        return True

    def _stream_future(
        self, address: str, sid: int, op: int, data: Any, timeout: float | None
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self.loop.create_future()
        if self._closing:
            fut.set_exception(ClosedError("transport closed"))
            return fut
        rid = next(self._rids)
        try:
            frame = _pack([STREAM, rid, sid, op, data])
        except Exception as exc:
            fut.set_exception(PeerRingError(f"stream chunk cannot be encoded: {exc}"))
            return fut
        if len(frame) > self.config.max_frame_size:
            fut.set_exception(FrameTooLarge(f"stream chunk of {len(frame)} bytes is too large"))
            return fut
        self._enqueue(address, rid, frame, _Pending(fut, None), timeout)
        return fut

    async def send_stream(
        self,
        address: str,
        header: Any,
        chunks: Iterable[Any] | AsyncIterable[Any],
        *,
        window: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        sid = next(self._sids)
        window = window or self.config.stream_window
        inflight: deque[asyncio.Future[Any]] = deque()
        try:
            # inside the try: an open that times out here may still succeed at
            # the receiver, whose sink would then wait forever without the abort
            await self._stream_future(address, sid, S_OPEN, header, timeout)
            if isinstance(chunks, AsyncIterable):
                async for chunk in chunks:
                    inflight.append(self._stream_future(address, sid, S_CHUNK, chunk, timeout))
                    if len(inflight) >= window:
                        await inflight.popleft()
            else:
                for chunk in chunks:
                    inflight.append(self._stream_future(address, sid, S_CHUNK, chunk, timeout))
                    if len(inflight) >= window:
                        await inflight.popleft()
            while inflight:
                await inflight.popleft()
            return await self._stream_future(address, sid, S_FINISH, None, timeout)
        except BaseException as exc:
            for fut in inflight:
                fut.add_done_callback(_consume)
            with contextlib.suppress(Exception):
                self._stream_future(address, sid, S_ABORT, repr(exc), 1.0).add_done_callback(
                    _consume
                )
            raise

    # -- for implementations ----------------------------------------------
    def _accept(self, conn: FrameConn) -> FrameReceiver:
        """Called by implementations for every accepted channel."""
        return _Session(self, conn)

    def _notify(self, address: str, ok: bool, err: BaseException | None) -> None:
        for observer in self._observers:
            try:
                observer(address, ok, err)
            except Exception:
                log.exception("peer observer failed")

    def _map_connect_error(self, address: str, exc: BaseException) -> TransportError:
        """Translate a dial failure; implementations may refine it."""
        if isinstance(exc, TransportError):
            return exc
        if isinstance(exc, TimeoutError):
            return PeerUnavailable(f"connect to {address} timed out")
        return PeerUnavailable(f"connect to {address} failed: {exc}")

    def in_flight(self) -> int:
        """Requests sent and not yet answered (all peers)."""
        return len(self._pending_by_rid)

    @abc.abstractmethod
    async def _listen(self) -> None:
        """Bind and accept channels, calling :meth:`_accept` for each."""

    @abc.abstractmethod
    async def _open(self, address: str, receiver: FrameReceiver) -> FrameConn:
        """Dial ``address``; deliver the channel's frames to ``receiver``."""

    @abc.abstractmethod
    async def _shutdown(self) -> None:
        """Stop accepting and close accepted channels."""


def _no_handler(message: Any, peer: PeerInfo) -> Any:
    raise PeerRingError("this node has no request handler yet")


def _abandon(opening: asyncio.Task[FrameConn]) -> None:
    """Cancel a dial; if it completes anyway, close the channel it made."""
    opening.cancel()
    opening.add_done_callback(_close_late)


def _close_late(opening: asyncio.Task[FrameConn]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
