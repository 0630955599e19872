"""The default transport: asyncio Protocols over TCP (optionally TLS).

Frames are a 4-byte big-endian length followed by the msgpack body. Writes
are coalesced: frames written during one pass of the event loop leave in a
single ``transport.write`` at the end of the pass, which is what makes many
concurrent requests cheap -- or as soon as ``TransportConfig.flush_frames`` wait,
so that a burst written in one pass (the next requests of many clients
answered together) reaches the peer in parts and both processes work at
once instead of taking turns. Incoming bytes are parsed in place; a length
above ``max_frame_size`` closes the channel before the body is buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from peer_ring.errors import ConfigError, FrameTooLarge, PeerUnavailable
from peer_ring.membership.base import parse_address
from peer_ring.transport._core import ChannelTransport, FaultInjector, FrameConn, FrameReceiver
from peer_ring.transport.auth import cert_names
from peer_ring.transport.tls import TlsMaterial

log = logging.getLogger(__name__)

_HEADER = 4


class _TcpConn(asyncio.Protocol, FrameConn):
    """One TCP channel; the same class serves dialed and accepted channels."""

    def __init__(
        self, max_frame: int, flush_frames: int, receiver: FrameReceiver | None = None
    ) -> None:
        self.receiver = receiver
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] = []
        self.out_bytes = 0
        self.flush_scheduled = False
        self.flush_at = 2 * flush_frames  # entries of ``out``: a header and a body per frame
        self.buf = bytearray()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.on_accept: Callable[[_TcpConn], FrameReceiver] | None = None
        self.on_lost: Callable[[_TcpConn], None] | None = None
        #: resolved when the socket is gone (a TLS close ends after its alert)
        self.lost: asyncio.Future[None] = self.loop.create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; same interface
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.on_accept is not None:
            self.receiver = self.on_accept(self)

    def data_received(self, data: bytes) -> None:
        if self.receiver is None:
            return
        buf = self.buf
        if not buf:  # fast path: parse straight from the packet, buffer only a tail
            pos = self._frames(data)
            if pos >= 0 and pos < len(data):
                buf += data[pos:] if pos else data
            return
        buf += data
        mv = memoryview(buf)
        try:
            pos = self._frames(mv)
        finally:
            mv.release()  # before the buffer is resized or cleared
        if pos > 0:
            del buf[:pos]

    def _frames(self, view: bytes | memoryview) -> int:
        """Deliver every complete frame of ``view``; return the bytes consumed,
        or -1 when the channel closed meanwhile (oversized frame, receiver)."""
        receiver = self.receiver
        pos, end = 0, len(view)
        while end - pos >= _HEADER:
            n = int.from_bytes(view[pos : pos + _HEADER], "big")
            if n > self.max_frame:
                self._oversized(n)
                return -1
            if end - pos - _HEADER < n:
                break
            start = pos + _HEADER
            pos = start + n
            assert receiver is not None
            receiver.frame(view[start:pos])
            if self.closed:
                return -1
        return pos

    def _oversized(self, n: int) -> None:
        log.warning("peer announced a frame of %d bytes (max %d); closing", n, self.max_frame)
        if self.receiver is not None:
            self.receiver.fatal(FrameTooLarge(f"frame of {n} bytes exceeds max {self.max_frame}"))
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        receiver, self.receiver = self.receiver, None
        if self.on_lost is not None:
            self.on_lost(self)
        if receiver is not None:
            receiver.closed(exc)

    # FrameConn
    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        out = self.out
        out.append(len(frame).to_bytes(_HEADER, "big"))
        out.append(frame)
        self.out_bytes += len(frame) + _HEADER
        if self.flush_at and len(out) >= self.flush_at and self.transport is not None:
            # a burst: out now (a pass-end flush already scheduled finds less, or nothing)
            self.out = []
            self.out_bytes = 0
            self.transport.write(b"".join(out))
            return
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        out = self.out
        if not out or transport is None:
            return
        self.out = []
        self.out_bytes = 0
        transport.write(b"".join(out))

    def buffered(self) -> int:
        transport = self.transport
        return self.out_bytes + (transport.get_write_buffer_size() if transport else 0)

    def peer_names(self) -> frozenset[str] | None:
        transport = self.transport
        if transport is None or transport.get_extra_info("sslcontext") is None:
            return None
        return cert_names(transport.get_extra_info("peercert"))

    def close(self) -> None:
        if self.closed:
            return
        self._flush()
        self.closed = True
        transport = self.transport
        if transport is not None:
            transport.close()
        else:
            receiver, self.receiver = self.receiver, None
            if receiver is not None:
                receiver.closed(None)


class TcpTransport(ChannelTransport):
    """Length-prefixed msgpack frames over TCP. See the module docstring."""

    name = "tcp"

    def __init__(
        self, node_id: str, address: str, config: Any = None, *, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(node_id, address, config, faults=faults)
        self._server: asyncio.Server | None = None
        self._accepted: set[_TcpConn] = set()
        self._dialed: set[_TcpConn] = set()
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        if self.config.tls is not None:
            self.tls_material = TlsMaterial(self.config.tls)
            self._server_ssl = self.tls_material.server
            self._client_ssl = self.tls_material.client

    def _tls_reloaded(self) -> None:
        # the server context was updated in place; new dials take the new client one
        assert self.tls_material is not None
        self._client_ssl = self.tls_material.client

    async def _listen(self) -> None:
        host, port = parse_address(self._address)
        loop = asyncio.get_running_loop()

        def factory() -> _TcpConn:
            conn = _TcpConn(self.config.max_frame_size, self.config.flush_frames)
            conn.on_accept = self._on_accept
            return conn

        try:
            self._server = await loop.create_server(
                factory, host, port, ssl=self._server_ssl, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self._address}: {exc}") from exc
        if port == 0:
            sockets = cast(Any, self._server).sockets  # a list under uvloop, a tuple in typeshed
            sock = sockets[0]
            bound = sock.getsockname()[1]
            self._address = f"{host}:{bound}"

    def _on_accept(self, conn: _TcpConn) -> FrameReceiver:
        self._accepted.add(conn)
        conn.on_lost = self._accepted.discard
        return self._accept(conn)

    async def _open(self, address: str, receiver: FrameReceiver) -> FrameConn:
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                lambda: _TcpConn(self.config.max_frame_size, self.config.flush_frames, receiver),
                host,
                port,
                ssl=self._client_ssl,
                server_hostname=(host if self._client_ssl is not None else None),
            )
        except ssl.SSLError as exc:
            raise PeerUnavailable(f"TLS handshake with {address} failed: {exc}") from exc
        except OSError as exc:
            raise PeerUnavailable(f"connect to {address} failed: {exc.strerror or exc}") from exc
        self._dialed.add(conn)
        conn.lost.add_done_callback(lambda _: self._dialed.discard(conn))
        return conn

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._accepted):
            conn.close()
        # give closing channels (TLS sends its close alert first) a moment to
        # release their sockets before the loop may end
        closing = [c for c in (*self._accepted, *self._dialed) if not c.lost.done()]
        if closing:
            await asyncio.wait([c.lost for c in closing], timeout=1.0)
            for c in closing:
                if not c.lost.done() and c.transport is not None:
                    c.transport.abort()
        self._accepted.clear()
        self._dialed.clear()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except TimeoutError:
                log.warning("listener on %s did not close in time", self._address)
            self._server = None
