"""The transport contract tests of ``test_transport.py``, run against ``grpc``.

Every test there that takes the ``make`` fixture is re-collected here with a
``make`` that builds :class:`GrpcTransport` nodes on 127.0.0.1, so a contract
test added there runs here too. Tests specific to gRPC follow.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from peer_ring.errors import ConfigError, PeerUnavailable
from peer_ring.transport import _core
from peer_ring.transport._core import ChannelTransport, FrameReceiver
from peer_ring.transport.base import PeerInfo, TransportConfig
from peer_ring.transport.grpc_transport import METHOD, GrpcTransport
from tests.conftest import wait_for
from tests.unit import test_transport as contract

Factory = Callable[..., ChannelTransport]

for _name, _fn in vars(contract).items():
    if _name.startswith("test_") and "make" in inspect.signature(_fn).parameters:
        globals()[_name] = _fn


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[ChannelTransport] = []
    counter = itertools.count(1)

    def factory(config: TransportConfig | None = None, **kw: Any) -> ChannelTransport:
        t = GrpcTransport(f"n{next(counter)}", "127.0.0.1:0", config, **kw)
        made.append(t)
        return t

    yield factory
    for t in made:
        await t.close()


def test_contract_tests_were_collected() -> None:
    names = [n for n in globals() if n.startswith("test_") and n in vars(contract)]
    assert "test_request_response_sync_and_async_handlers" in names
    assert len(names) >= 10


def echo(message: Any, peer: PeerInfo) -> Any:
    return [message, peer.node_id]


async def test_server_restart_reconnects(make: Factory) -> None:
    a, b = make(TransportConfig(reconnect_min=0.01, reconnect_max=0.05)), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    addr = b.address
    assert await a.request(addr, 1) == [1, a.node_id]
    await b.close()
    with pytest.raises(PeerUnavailable):
        await a.request(addr, 2)
    c = GrpcTransport("n9", addr)
    c.set_handler(echo)
    await c.start()
    try:

        async def answered() -> bool:
            try:
                return bool(await a.request(addr, 3) == [3, a.node_id])
            except PeerUnavailable:
                return False

        await wait_for(answered, message="request after restart")
    finally:
        await c.close()


async def test_stream_break_fails_pending_requests_fast(make: Factory) -> None:
    a, b = make(), make()
    started = asyncio.Event()

    async def hang(message: Any, peer: PeerInfo) -> Any:
        started.set()
        await asyncio.sleep(30)

    b.set_handler(hang)
    await a.start()
    await b.start()
    fut = a.request_future(b.address, 1, timeout=30)
    await asyncio.wait_for(started.wait(), 10)
    # cut the stream without a goodbye: the gRPC server cancels every RPC
    assert isinstance(b, GrpcTransport)
    assert b._server is not None
    await b._server.stop(None)
    with pytest.raises(PeerUnavailable):
        await asyncio.wait_for(fut, 10)
    assert a.in_flight() == 0


async def test_large_batches_are_split_below_the_message_limit(make: Factory) -> None:
    cfg = TransportConfig(max_frame_size=8 * 1024, max_pending_bytes=64 * 1024 * 1024)
    a, b = make(cfg), make(cfg)
    b.set_handler(lambda m, p: len(m))
    await a.start()
    await b.start()
    # 400 frames of ~7 KiB written in one loop pass: far more than one message holds
    results = await asyncio.gather(*(a.request(b.address, b"x" * 7000) for _ in range(400)))
    assert results == [7000] * 400


async def test_garbage_batch_closes_that_stream_only(make: Factory) -> None:
    b = make()
    b.set_handler(echo)
    await b.start()
    async with grpc.aio.insecure_channel(b.address) as channel:
        call = channel.stream_stream(METHOD, request_serializer=None, response_deserializer=None)()
        await call.write(b"\x00\x00\x00\x09\xc1")  # announces 9 bytes, carries 1
        reply = await call.read()
        assert b"truncated frame" in reply
    a = make()
    await a.start()
    assert await a.request(b.address, "after") == ["after", a.node_id]
    assert b.stats["protocol_errors"] == 1


async def test_address_in_use_is_a_config_error(make: Factory) -> None:
    b = make()
    await b.start()
    other = GrpcTransport("dup", b.address)
    with pytest.raises(ConfigError, match="cannot listen"):
        await other.start()
    await other.close()


def test_bad_keepalive_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        GrpcTransport("x", "127.0.0.1:0", keepalive_time=0)


class _CountingReceiver(FrameReceiver):
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closes: list[BaseException | None] = []

    def frame(self, data: bytes | memoryview) -> None:
        self.frames.append(bytes(data))

    def closed(self, exc: BaseException | None) -> None:
        self.closes.append(exc)


@pytest.mark.parametrize("how", ["server_stops", "local_close_then_server_stops"])
async def test_receiver_hears_closed_exactly_once(make: Factory, how: str) -> None:
    a, b = make(), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    assert isinstance(a, GrpcTransport)
    assert isinstance(b, GrpcTransport)
    receiver = _CountingReceiver()
    conn = await a._open(b.address, receiver)
    conn.write(_core._pack([_core.HELLO, _core.PROTOCOL_VERSION, "peer-ring", "x", "127.0.0.1:1"]))
    await wait_for(lambda: len(receiver.frames) == 1, message="HELLO_OK")
    if how == "local_close_then_server_stops":
        conn.close()
        await wait_for(lambda: len(receiver.closes) == 1, message="closed after close()")
    assert b._server is not None
    await b._server.stop(None)
    await wait_for(lambda: len(receiver.closes) == 1, message="closed after the stream broke")
    conn.close()
    # once the conn's reader and writer tasks are done nothing can notify again
    await asyncio.gather(*conn.tasks, return_exceptions=True)
    assert len(receiver.closes) == 1
    if how == "server_stops":
        assert isinstance(receiver.closes[0], PeerUnavailable)


def test_works_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def exchange() -> Any:
        # Workaround: ChannelTransport.__init__ asks the loop *policy* for a
        # loop, which Runner(loop_factory=...) does not set; see the report.
        asyncio.set_event_loop(asyncio.get_running_loop())
        a = GrpcTransport("a", "127.0.0.1:0")
        b = GrpcTransport("b", "127.0.0.1:0")
        b.set_handler(echo)
        await a.start()
        await b.start()
        try:
            return await asyncio.gather(*(a.request(b.address, i) for i in range(300)))
        finally:
            await a.close()
            await b.close()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(exchange()) == [[i, "a"] for i in range(300)]
    finally:
        asyncio.set_event_loop(None)
