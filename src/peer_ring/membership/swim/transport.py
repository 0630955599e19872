"""The packet interface of the SWIM agent, and its real UDP + TCP implementation.

:class:`PacketTransport` is all the agent needs from a network: best-effort
datagrams (probes, acks, gossip) and a reliable request/reply *exchange*
(push-pull state sync, the TCP fallback probe). The exchange is callback-based
rather than ``async`` so the agent stays a synchronous state machine that a
discrete-event simulator can drive (see :mod:`.simnet`).

Handler rules: ``on_packet`` and ``on_stream`` are called from the event loop
(or the simulator), one at a time; they must not block or raise (the agent
counts and drops bad input itself). ``on_stream`` returns the reply bytes, or
``None`` to close without a reply. ``on_reply`` of :meth:`exchange` is called
exactly once: with the reply, or ``None`` on refusal, timeout, or error.

:class:`UdpTransport` binds one UDP socket and one TCP listener on the same
``host:port``. TCP frames are a 4-byte big-endian length and the bytes; a
frame over ``max_stream_size`` closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Protocol

from peer_ring.errors import PeerUnavailable

Addr = tuple[str, int]
PacketHandler = Callable[[bytes, Addr], None]
StreamHandler = Callable[[bytes, Addr], "bytes | None"]
ReplyHandler = Callable[["bytes | None"], None]

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")


class PacketTransport(Protocol):
    @property
    def address(self) -> Addr:
        """The (host, port) others reach this transport at."""
        ...

    def set_handlers(self, on_packet: PacketHandler, on_stream: StreamHandler) -> None:
        """Install the receive callbacks (called once, before traffic matters)."""
        ...

    def send_to(self, addr: Addr, data: bytes) -> None:
        """Send one datagram, best effort; never raises for network errors."""
        ...

    def exchange(self, addr: Addr, data: bytes, timeout: float, on_reply: ReplyHandler) -> None:
        """Send ``data`` reliably and pass the single reply (or ``None``) to ``on_reply``."""
        ...

    def close(self) -> None:
        """Stop receiving and release sockets. Idempotent."""
        ...


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        handler = self.owner._on_packet
        if handler is not None and isinstance(addr[0], str) and isinstance(addr[1], int):
            handler(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable etc.
        self.owner.send_errors += 1


class UdpTransport:
    """Real network: UDP datagrams and TCP exchanges on one host:port."""

    def __init__(self, max_stream_size: int = 8 * 1024 * 1024) -> None:
        self.max_stream_size = max_stream_size
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._address: Addr = ("", 0)
        self._on_packet: PacketHandler | None = None
        self._on_stream: StreamHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.send_errors = 0

    @classmethod
    async def open(
        cls, host: str, port: int = 0, *, max_stream_size: int = 8 * 1024 * 1024, tries: int = 20
    ) -> UdpTransport:
        """Bind UDP and TCP on ``host:port`` (port 0: a free port usable by both)."""
        self = cls(max_stream_size)
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(tries if port == 0 else 1):
            server = None
            try:
                server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
                bound = server.sockets[0].getsockname()
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagram(self),
                    local_addr=(host, bound[1]),
                    family=socket.AF_INET if ":" not in host else socket.AF_INET6,
                )
            except OSError as exc:
                last = exc
                if server is not None:
                    server.close()
                continue
            self._server, self._udp = server, udp
            self._address = (host, int(bound[1]))
            return self
        raise PeerUnavailable(f"cannot bind swim gossip on {host}:{port}: {last}")

    @property
    def address(self) -> Addr:
        return self._address

    def set_handlers(self, on_packet: PacketHandler, on_stream: StreamHandler) -> None:
        self._on_packet = on_packet
        self._on_stream = on_stream

    def send_to(self, addr: Addr, data: bytes) -> None:
        if self._udp is None or self._closed:
            return
        try:
            self._udp.sendto(data, addr)
        except OSError:
            self.send_errors += 1

    def exchange(self, addr: Addr, data: bytes, timeout: float, on_reply: ReplyHandler) -> None:
        if self._closed:
            on_reply(None)
            return

        async def run() -> None:
            reply: bytes | None = None
            try:
                reply = await asyncio.wait_for(self._exchange(addr, data), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                reply = None
            on_reply(reply)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, addr: Addr, data: bytes) -> bytes | None:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            writer.write(_LEN.pack(len(data)) + data)
            await writer.drain()
            return await self._read_frame(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        head = await reader.readexactly(_LEN.size)
        (size,) = _LEN.unpack(head)
        if size > self.max_stream_size:
            return None
        return await reader.readexactly(size)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            frame = await asyncio.wait_for(self._read_frame(reader), 30.0)
            if frame is None or self._on_stream is None:
                return
            reply = self._on_stream(frame, (str(peer[0]), int(peer[1])))
            if reply is not None:
                writer.write(_LEN.pack(len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
