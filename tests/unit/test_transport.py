"""Transport contract tests, run against every in-process-capable implementation."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer_ring.errors import (
    ConfigError,
    FrameTooLarge,
    InvalidRequest,
    Overloaded,
    PeerUnavailable,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    VersionMismatch,
)
from peer_ring.transport import _core
from peer_ring.transport._core import ChannelTransport, FaultInjector
from peer_ring.transport.base import PeerInfo, TransportConfig
from peer_ring.transport.memory import MemoryNetwork, MemoryTransport
from peer_ring.transport.tcp import TcpTransport
from tests.conftest import wait_for

_ports = itertools.count(0)

Factory = Callable[..., ChannelTransport]


@pytest.fixture(params=["memory", "tcp"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    net = MemoryNetwork()
    made: list[ChannelTransport] = []
    counter = itertools.count(1)

    def factory(config: TransportConfig | None = None, **kw: Any) -> ChannelTransport:
        i = next(counter)
        t: ChannelTransport
        if request.param == "memory":
            t = MemoryTransport(f"n{i}", f"10.0.0.{i}:7000", net, config, **kw)
        else:
            t = TcpTransport(f"n{i}", "127.0.0.1:0", config, **kw)
        made.append(t)
        return t

    yield factory
    for t in made:
        await t.close()


def echo(message: Any, peer: PeerInfo) -> Any:
    if message == "boom":
        raise InvalidRequest("bad thing")
    if message == "crash":
        raise RuntimeError("handler bug")
    return [message, peer.node_id]


async def slow_echo(message: Any, peer: PeerInfo) -> Any:
    await asyncio.sleep(float(message))
    return message


async def test_request_response_sync_and_async_handlers(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    assert await a.request(b.address, {"k": b"v"}) == [{"k": b"v"}, a.node_id]
    b.set_handler(slow_echo)
    assert await a.request(b.address, 0.01) == 0.01


async def test_errors_travel_as_their_class(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    with pytest.raises(InvalidRequest, match="bad thing"):
        await a.request(b.address, "boom")
    with pytest.raises(RemoteError, match="RuntimeError: handler bug") as info:
        await a.request(b.address, "crash")
    assert info.value.remote_code == "INTERNAL"
    # the channel is still usable afterwards
    assert await a.request(b.address, "ok") == ["ok", a.node_id]


async def test_many_concurrent_requests_all_answered(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(lambda m, p: m * 2)
    await a.start()
    await b.start()
    results = await asyncio.gather(*(a.request(b.address, i) for i in range(2000)))
    assert results == [i * 2 for i in range(2000)]
    assert a.in_flight() == 0


async def test_deadline_fails_request_with_timeout(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(slow_echo)
    await a.start()
    await b.start()
    with pytest.raises(RequestTimeout):
        await a.request(b.address, 5.0, timeout=0.05)
    assert a.in_flight() == 0


async def test_unreachable_peer_is_unavailable_then_backs_off(make: Factory) -> None:
    a, b = make(), make()
    await a.start()
    await b.start()
    addr = b.address
    await b.close()
    with pytest.raises(PeerUnavailable):
        await a.request(addr, 1)
    # during backoff the next request fails fast, without a new dial
    with pytest.raises(PeerUnavailable, match="retry in"):
        await a.request(addr, 1)


async def test_oversized_request_fails_before_sending(make: Factory) -> None:
    a, b = make(TransportConfig(max_frame_size=4096)), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    with pytest.raises(FrameTooLarge):
        await a.request(b.address, b"x" * 10_000)
    assert await a.request(b.address, "still fine") == ["still fine", a.node_id]


async def test_observer_sees_failure_and_recovery(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(slow_echo)
    events: list[tuple[str, bool]] = []
    a.add_observer(lambda addr, ok, err: events.append((addr, ok)))
    await a.start()
    await b.start()
    await a.request(b.address, 0)
    with pytest.raises(RequestTimeout):
        await a.request(b.address, 1.0, timeout=0.02)
    await a.request(b.address, 0)
    assert events == [(b.address, True), (b.address, False), (b.address, True)]


async def test_one_way_messages_arrive_in_order(make: Factory) -> None:
    a, b = make(), make()
    got: list[Any] = []
    b.set_handler(lambda m, p: got.append(m))
    await a.start()
    await b.start()
    for i in range(100):
        assert a.send(b.address, i)
    from tests.conftest import wait_for

    await wait_for(lambda: len(got) == 100)
    assert got == list(range(100))


class _Sink:
    def __init__(self, store: list[Any], delay: float = 0.0) -> None:
        self.store = store
        self.delay = delay
        self.aborted: BaseException | None = None

    async def feed(self, chunk: Any) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if chunk == "bad":
            raise InvalidRequest("bad chunk")
        self.store.append(chunk)

    async def finish(self) -> Any:
        return len(self.store)

    async def abort(self, reason: BaseException) -> None:
        self.aborted = reason


async def test_stream_delivers_chunks_in_order_with_window(make: Factory) -> None:
    a, b = make(), make()
    store: list[Any] = []
    sinks: list[_Sink] = []

    async def on_stream(header: Any, peer: PeerInfo) -> _Sink:
        assert header == {"partition": 7}
        sink = _Sink(store, delay=0.001)
        sinks.append(sink)
        return sink

    b.set_stream_handler(on_stream)
    await a.start()
    await b.start()

    async def gen() -> AsyncIterator[int]:
        for i in range(200):
            yield i

    assert await a.send_stream(b.address, {"partition": 7}, gen(), window=4) == 200
    assert store == list(range(200))


async def test_stream_error_in_sink_fails_the_sender(make: Factory) -> None:
    a, b = make(), make()
    store: list[Any] = []

    async def on_stream(header: Any, peer: PeerInfo) -> _Sink:
        return _Sink(store)

    b.set_stream_handler(on_stream)
    await a.start()
    await b.start()
    with pytest.raises(InvalidRequest, match="bad chunk"):
        await a.send_stream(b.address, {}, [1, 2, "bad", 3, 4], window=2)
    assert store[:2] == [1, 2]


async def test_bounded_in_flight_gives_overloaded(make: Factory) -> None:
    a, b = make(TransportConfig(max_in_flight=10)), make()
    b.set_handler(slow_echo)
    await a.start()
    await b.start()
    futs = [a.request_future(b.address, 0.05) for _ in range(15)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert sum(isinstance(r, Overloaded) for r in results) == 5
    assert sum(r == 0.05 for r in results) == 10


async def test_fault_injector_drops_and_heals(make: Factory) -> None:
    faults = FaultInjector(seed=1)
    a, b = make(faults=faults), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    assert await a.request(b.address, 1) == [1, a.node_id]
    faults.drop[b.address] = 1.0
    with pytest.raises(RequestTimeout):
        await a.request(b.address, 2, timeout=0.05)
    faults.clear()
    assert await a.request(b.address, 3) == [3, a.node_id]


async def test_version_mismatch_is_a_clear_error(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    a.protocol_version = 99
    with pytest.raises(VersionMismatch, match="speaks peer protocol 99"):
        await a.request(b.address, 1)


# -- raw-socket abuse of a real TCP listener ---------------------------------


async def _tcp_node() -> TcpTransport:
    t = TcpTransport("srv", "127.0.0.1:0", TransportConfig(max_frame_size=64 * 1024))
    t.set_handler(echo)
    await t.start()
    return t


async def _raw(addr: str, payload: bytes) -> bytes:
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return bytes(data)


def _framed(obj: Any) -> bytes:
    body = bytes(_core._pack(obj))
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x00\x00\x03\xc1\xc1\xc1", b"malformed frame"),
        ((10**9).to_bytes(4, "big") + b"xx", b"exceeds max"),
        (_framed([_core.REQ, 1, "hi"]), b"before handshake"),
        (_framed([_core.HELLO, 42, "peer-ring", "x", "127.0.0.1:1"]), b"speaks peer protocol 42"),
        (
            _framed([_core.HELLO, _core.PROTOCOL_VERSION, "other", "x", "127.0.0.1:1"]),
            b"belongs to cluster",
        ),
        (_framed("not an array"), b"malformed frame"),
    ],
)
async def test_bad_input_closes_that_channel_and_node_keeps_serving(
    payload: bytes, expected: bytes
) -> None:
    srv = await _tcp_node()
    client = TcpTransport("cli", "127.0.0.1:0")
    await client.start()
    try:
        data = await _raw(srv.address, payload)
        assert expected in data
        assert srv.stats["protocol_errors"] == 1
        assert await client.request(srv.address, "after") == ["after", "cli"]
    finally:
        await client.close()
        await srv.close()


async def test_oversized_frame_after_a_buffered_partial_frame_closes_cleanly() -> None:
    """The slow path (bytes already buffered) must reject an oversized frame too."""
    srv = await _tcp_node()
    client = TcpTransport("cli", "127.0.0.1:0")
    await client.start()
    try:
        host, port = srv.address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        hello = _framed([_core.HELLO, _core.PROTOCOL_VERSION, "peer-ring", "raw", "127.0.0.1:1"])
        big = (10**9).to_bytes(4, "big")
        writer.write(hello + big[:2])  # HELLO and half of the next length prefix
        await writer.drain()
        # the HELLO_OK answer proves the server parsed the first packet and now
        # holds the two-byte tail in its buffer (the slow path)
        size = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(size)
        writer.write(big[2:] + b"\x00" * 16)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5.0)
        writer.close()
        await writer.wait_closed()
        assert b"exceeds max" in data
        assert srv.stats["protocol_errors"] == 1
        assert await client.request(srv.address, "after") == ["after", "cli"]
    finally:
        await client.close()
        await srv.close()


async def test_client_error_is_protocol_error_on_caller() -> None:
    """A server answering garbage makes the caller's request fail, not hang."""

    async def garbage_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)
            writer.write(b"\x00\x00\x00\x02\xc1\xc1")
            await writer.drain()
            await reader.read()  # until the client hangs up on us
        finally:
            writer.close()

    server = await asyncio.start_server(garbage_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TcpTransport("cli", "127.0.0.1:0")
    await client.start()
    try:
        with pytest.raises((ProtocolError, PeerUnavailable)):
            await client.request(f"127.0.0.1:{port}", 1, timeout=3)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def test_free_port_helper_gives_a_bindable_loopback_port() -> None:
    from peer_ring.testing.servers import free_port

    port = free_port("127.0.0.1")
    assert 0 < port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        assert s.getsockname() == ("127.0.0.1", port)


async def test_an_aborted_stream_is_answered_not_a_peer_fault(make: Factory) -> None:
    a, b = make(), make()
    store: list[Any] = []
    events: list[bool] = []

    async def on_stream(header: Any, peer: PeerInfo) -> _Sink:
        return _Sink(store)

    b.set_stream_handler(on_stream)
    a.add_observer(lambda addr, ok, err: events.append(ok))
    await a.start()
    await b.start()

    def chunks() -> Any:
        yield 1
        raise ValueError("the sender's own data source failed")

    with pytest.raises(ValueError, match="data source"):
        await a.send_stream(b.address, {}, chunks(), window=1)
    await wait_for(lambda: a.in_flight() == 0, message="the abort answered")
    assert a.stats["timeouts"] == 0
    assert False not in events


class _Answers:
    """Collects request_callback outcomes; ``wait`` awaits the n-th one."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, BaseException | None]] = []
        self.event = asyncio.Event()

    def __call__(self, answer: Any, exc: BaseException | None) -> None:
        self.got.append((answer, exc))
        self.event.set()

    async def wait(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.got) < n:
                self.event.clear()
                await self.event.wait()


async def test_request_callback_answers_errors_and_packed_messages(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(echo)
    await a.start()
    await b.start()
    answers = _Answers()
    packed = a.pack(["fan", b"out", 3])
    a.request_callback(b.address, packed, None, answers)  # encoded once ...
    a.request_callback(b.address, packed, None, answers)  # ... sent twice
    a.request_callback(b.address, "boom", None, answers)
    await answers.wait(3)
    assert answers.got[0] == ([["fan", b"out", 3], a.node_id], None)
    assert answers.got[1] == answers.got[0]
    assert answers.got[2][0] is None
    assert isinstance(answers.got[2][1], InvalidRequest)
    assert a.in_flight() == 0


async def test_request_callback_local_failures_are_told_before_returning(make: Factory) -> None:
    a, b = make(TransportConfig(max_frame_size=4096)), make()
    await a.start()
    await b.start()
    answers = _Answers()
    a.request_callback(b.address, b"x" * 10_000, None, answers)
    assert len(answers.got) == 1
    assert isinstance(answers.got[0][1], FrameTooLarge)
    with pytest.raises(_core.PeerRingError, match="cannot be encoded"):
        a.pack(object())
    a.request_callback(b.address, object(), None, answers)
    assert len(answers.got) == 2
    assert isinstance(answers.got[1][1], _core.PeerRingError)
    await a.close()
    a.request_callback(b.address, 1, None, answers)
    assert len(answers.got) == 3
    assert isinstance(answers.got[2][1], _core.ClosedError)


async def test_request_callback_deadline_and_bucketed_expiry(make: Factory) -> None:
    a, b = make(), make()
    b.set_handler(slow_echo)
    await a.start()
    await b.start()
    answers = _Answers()
    for _ in range(50):  # one deadline bucket (10 ms) serves them all
        a.request_callback(b.address, 5.0, 0.05, answers)
    assert len(a._deadlines) <= 2
    await answers.wait(50)
    assert all(ans is None and isinstance(exc, RequestTimeout) for ans, exc in answers.got)
    assert a.in_flight() == 0
    assert a.stats["timeouts"] == 50
    assert not a._deadlines


async def test_memory_transport_forgets_closed_channels() -> None:
    net = MemoryNetwork()
    a = MemoryTransport("a", "10.9.0.1:1", net)
    b = MemoryTransport("b", "10.9.0.2:1", net)
    b.set_handler(echo)
    await a.start()
    await b.start()
    try:
        for _ in range(5):  # each round dials a new channel and loses it
            async with asyncio.timeout(5):
                while True:  # the first request after a lost channel waits out the backoff
                    try:
                        answer = await a.request(b.address, "x")
                        break
                    except PeerUnavailable:
                        await asyncio.sleep(0.01)
            assert answer == ["x", "a"]
            for conn in list(a._conns):
                conn.close()
            await wait_for(lambda: not a._conns and not b._conns, message="channels forgotten")
    finally:
        await a.close()
        await b.close()


async def test_a_stream_whose_open_timed_out_is_aborted_at_the_receiver(make: Factory) -> None:
    # The receiver opens its sink after the sender gave up waiting: the
    # sender's abort reaches the sink instead of leaving it waiting for good.
    a, b = make(), make()
    release = asyncio.Event()
    sinks: list[_Sink] = []

    async def slow_open(header: Any, peer: PeerInfo) -> _Sink:
        await release.wait()
        sink = _Sink([])
        sinks.append(sink)
        return sink

    b.set_stream_handler(slow_open)
    await a.start()
    await b.start()
    with pytest.raises(RequestTimeout):
        await a.send_stream(b.address, {}, [1, 2, 3], timeout=0.05)
    release.set()
    await wait_for(lambda: bool(sinks) and sinks[0].aborted is not None, message="sink aborted")
    assert isinstance(sinks[0].aborted, PeerUnavailable)
    assert sinks[0].store == []


class _Capture(asyncio.Transport):
    """An asyncio transport that records each ``write`` (one syscall each)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.mark.parametrize(("flush_frames", "early"), [(0, 0), (4, 2), (16, 0)])
async def test_a_tcp_burst_leaves_every_flush_frames_and_at_the_end_of_the_pass(
    flush_frames: int, early: int
) -> None:
    from peer_ring.transport.tcp import _TcpConn

    conn = _TcpConn(1 << 20, flush_frames)
    sink = _Capture()
    conn.connection_made(sink)
    frames = [b"frame-%d" % i for i in range(10)]
    for f in frames:
        conn.write(f)
    assert len(sink.writes) == early  # written during the pass: every 4th frame with 4
    await asyncio.sleep(0)  # the end of the pass writes the rest, once
    assert len(sink.writes) == early + 1
    assert b"".join(sink.writes) == b"".join(len(f).to_bytes(4, "big") + f for f in frames)


def test_flush_frames_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="flush_frames"):
        TransportConfig(flush_frames=-1)
    assert TransportConfig().flush_frames == 16
