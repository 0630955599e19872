"""Harness: a RespConnection on a fake transport, and a RESP reply decoder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from peer_ring.apps.kv.api import Limits
from peer_ring.apps.kv.local import LocalKV
from peer_ring.clock import ManualClock
from peer_ring.server.resp import RespConfig, RespConnection, RespServer


@dataclass(frozen=True)
class Err:
    message: str


@dataclass(frozen=True)
class Simple:
    text: str


class Incomplete(Exception):
    pass


def decode(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """Decode one RESP2/RESP3 reply starting at ``pos``; return (value, next pos)."""
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        raise Incomplete
    kind = buf[pos : pos + 1]
    line = buf[pos + 1 : nl]
    pos = nl + 2
    if kind == b"+":
        return Simple(line.decode()), pos
    if kind == b"-":
        return Err(line.decode()), pos
    if kind == b":":
        return int(line), pos
    if kind == b"_":
        return None, pos
    if kind == b"#":
        return line == b"t", pos
    if kind in (b"$", b"="):
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise Incomplete
        data = buf[pos : pos + n]
        if buf[pos + n : pos + n + 2] != b"\r\n":
            raise AssertionError("bulk not terminated by CRLF")
        return (data[4:] if kind == b"=" else data), pos + n + 2
    if kind in (b"*", b"~", b"%"):
        n = int(line)
        if n < 0:
            return None, pos
        items: list[Any] = []
        for _ in range(n * 2 if kind == b"%" else n):
            item, pos = decode(buf, pos)
            items.append(item)
        if kind == b"%":
            return dict(zip(items[0::2], items[1::2], strict=True)), pos
        if kind == b"~":
            return set(items), pos
        return items, pos
    raise AssertionError(f"unknown reply type {kind!r} in {buf[pos - 1 : pos + 40]!r}")


def encode_request(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


class FakeTransport(asyncio.Transport):
    """Captures writes; records pause/resume/close calls."""

    def __init__(self, conn: RespConnection) -> None:
        super().__init__()
        self.conn = conn
        self.written = bytearray()
        self.closed = False
        self.reading = True
        self.wrote = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data
        self.wrote.set()

    def writes_count(self) -> int:
        return 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.wrote.set()
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ("127.0.0.1", 40000)
        return default


class Client:
    """Talks to one RespConnection through a FakeTransport."""

    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.conn = RespConnection(server)
        self.transport = FakeTransport(self.conn)
        self.conn.connection_made(self.transport)
        self._pos = 0

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    async def read(self) -> Any:
        """The next complete reply (waits for the worker to write it)."""
        async with asyncio.timeout(10):
            while True:
                try:
                    value, pos = decode(bytes(self.transport.written), self._pos)
                except Incomplete:
                    if self.transport.closed:
                        raise ConnectionResetError("closed") from None
                    self.transport.wrote.clear()
                    await self.transport.wrote.wait()
                    continue
                self._pos = pos
                return value

    async def call(self, *args: bytes | str | int) -> Any:
        self.send(encode_request(*args))
        return await self.read()

    async def wait_closed(self) -> None:
        async with asyncio.timeout(10):
            while not self.transport.closed:
                self.transport.wrote.clear()
                await self.transport.wrote.wait()

    def unread(self) -> bytes:
        return bytes(self.transport.written[self._pos :])


@dataclass
class Env:
    server: RespServer
    kv: LocalKV
    clock: ManualClock

    def client(self) -> Client:
        return Client(self.server)


SMALL_LIMITS = Limits(max_key_size=64, max_value_size=1024)


def make_env(config: RespConfig | None = None, limits: Limits = SMALL_LIMITS) -> Env:
    clock = ManualClock()
    kv = LocalKV(clock=clock, limits=limits)
    server = RespServer(kv, config=config or RespConfig(), clock=clock)
    return Env(server, kv, clock)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = make_env()
    yield e
    await e.server.close()


@pytest.fixture
async def client(env: Env) -> Client:
    return env.client()
