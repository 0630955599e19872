"""Commands in callback form: GET / plain SET through the store's callback API.

A store exposing :class:`~peer_ring.apps.kv.api.KVCallbacks` gets every GET
and plain SET started without a task, straight from ``data_received`` or the
previous command's completion; these tests hold such requests open and check
that what arrives meanwhile waits for them (one command in flight per
connection, replies in request order), that errors become error replies, and
that shutdown lets a held reply out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from peer_ring.apps.kv.api import KVCallbacks
from peer_ring.apps.kv.local import LocalKV
from peer_ring.clock import ManualClock
from peer_ring.errors import QuorumNotReached
from peer_ring.server.resp import RespConfig, RespServer
from tests.conftest import wait_for
from tests.unit.resp.conftest import SMALL_LIMITS, Client, Err, Simple, encode_request

Done = Callable[[bytes | None, BaseException | None], None]


class HeldKV(LocalKV):
    """LocalKV plus the callback API; callbacks run when the test releases them."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock(), limits=SMALL_LIMITS)
        self.held: list[Callable[[], None]] = []
        self.fail_next: BaseException | None = None
        self.started = 0

    def start_get(self, key: bytes, done: Done) -> None:
        self.started += 1
        value = self._live(key)
        err, self.fail_next = self.fail_next, None
        self.held.append(lambda: done(None, err) if err else done(value and value[0], None))

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        self.started += 1
        err, self.fail_next = self.fail_next, None
        if err is None:
            self._store(key, value, None)
        self.held.append(lambda: done(None, err))

    def release(self) -> None:
        held, self.held = self.held, []
        for call in held:
            call()


class SyncKV(LocalKV):
    """LocalKV plus a callback API that completes before it returns."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock(), limits=SMALL_LIMITS)
        self.started = 0

    def start_get(self, key: bytes, done: Done) -> None:
        self.started += 1
        value = self._live(key)
        done(value and value[0], None)

    def start_put(
        self, key: bytes, value: bytes, done: Callable[[None, BaseException | None], None]
    ) -> None:
        self.started += 1
        self._store(key, value, None)
        done(None, None)


async def _idle(client: Client) -> None:
    """Wait until the connection's worker task waits for work."""

    def idle() -> bool:
        waiter = client.conn._waiter
        return waiter is not None and not waiter.done()

    await wait_for(idle, message="worker idle")


async def _stays(client: Client, kv: HeldKV, started: int, passes: int = 20) -> None:
    """Nothing is answered and no further request starts -- still so after
    ``passes`` loop passes (whatever was scheduled has run: a negative check
    over loop passes, not one ``sleep(0)``)."""
    for _ in range(passes):
        assert client.unread() == b""
        assert kv.started == started
        await asyncio.sleep(0)


async def held_client(
    value: bytes | None = None, config: RespConfig | None = None
) -> tuple[HeldKV, RespServer, Client]:
    """A HeldKV (holding ``k = value`` when given) behind a server, and a
    client whose connection's worker waits for work."""
    kv = HeldKV()
    if value is not None:
        await kv.put(b"k", value)
    server = RespServer(kv, config=config or RespConfig(), clock=ManualClock())
    client = Client(server)
    await _idle(client)
    return kv, server, client


async def test_callback_store_is_detected() -> None:
    kv = HeldKV()
    assert isinstance(kv, KVCallbacks)
    assert RespServer(kv).callbacks is kv
    assert RespServer(LocalKV()).callbacks is None


async def test_requests_behind_a_held_get_keep_their_order() -> None:
    kv, server, client = await held_client(b"old")
    client.send(encode_request("GET", "k"))
    assert kv.started == 1
    assert len(kv.held) == 1
    # pipelined behind it: must not start before the GET answered
    client.send(encode_request("SET", "k", "new") + encode_request("GET", "k"))
    await _stays(client, kv, started=1)
    kv.release()
    assert await client.read() == b"old"  # its own read: answered at once
    # the pipelined pair, in callback form too, one at a time
    assert kv.started == 2
    kv.release()
    assert kv.started == 3
    assert client.unread() == b""  # one read's replies leave together
    kv.release()
    assert await client.read() == Simple("OK")
    assert await client.read() == b"new"
    assert server.stats.commands_processed == 3
    await server.close()


async def test_a_pipeline_of_gets_and_sets_runs_in_callback_form_with_one_write() -> None:
    kv, server, client = await held_client(b"0")
    writes = 0
    original = client.transport.write

    def counting(data: bytes | bytearray | memoryview) -> None:
        nonlocal writes
        writes += 1
        original(data)

    client.transport.write = counting  # type: ignore[method-assign]
    client.send(
        b"".join(encode_request("SET", "k", str(i)) + encode_request("GET", "k") for i in range(5))
    )
    for i in range(10):
        assert kv.started == i + 1  # each starts once the previous one completed
        kv.release()
    replies = [await client.read() for _ in range(10)]
    assert replies == [x for i in range(5) for x in (Simple("OK"), str(i).encode())]
    assert writes == 1
    await server.close()


async def test_a_callback_completing_before_it_returns_runs_the_pipeline_in_order() -> None:
    kv = SyncKV()
    server = RespServer(kv, clock=ManualClock())
    client = Client(server)
    n = 3000  # deeper than the interpreter's recursion limit if completions nested
    client.send(b"".join(encode_request("SET", f"k{i}", str(i)) for i in range(n)))
    client.send(b"".join(encode_request("GET", f"k{i}") for i in range(n)))
    assert kv.started == 2 * n  # all ran inside data_received: no task needed
    replies = [await client.read() for _ in range(2 * n)]
    assert replies == [Simple("OK")] * n + [str(i).encode() for i in range(n)]
    await server.close()


async def test_exec_runs_its_queued_commands_through_the_callback_forms() -> None:
    kv, server, client = await held_client(b"1")
    assert await client.call("MULTI") == Simple("OK")
    assert await client.call("SET", "k", "2") == Simple("QUEUED")
    assert await client.call("GET", "k") == Simple("QUEUED")
    client.send(encode_request("EXEC") + encode_request("GET", "k"))
    await wait_for(lambda: kv.started == 1, message="the queued SET started")
    kv.release()
    assert kv.started == 2  # the queued GET, before the GET sent after EXEC
    kv.release()
    assert kv.started == 3
    kv.release()
    assert await client.read() == [Simple("OK"), b"2"]
    assert await client.read() == b"2"
    await server.close()


async def test_set_then_get_and_error_replies_in_callback_form() -> None:
    kv, server, client = await held_client()
    client.send(encode_request("set", "a", "1"))
    kv.release()
    assert await client.read() == Simple("OK")
    await _idle(client)
    kv.fail_next = QuorumNotReached(2, 1)
    client.send(encode_request("GET", "a"))
    kv.release()
    reply = await client.read()
    assert isinstance(reply, Err)
    assert reply.message.startswith("TRYAGAIN")
    await _idle(client)
    client.send(encode_request("GET", "a"))
    kv.release()
    assert await client.read() == b"1"
    assert server.stats.error_replies == 1
    await server.close()


async def test_only_plain_get_and_set_use_the_callback_form() -> None:
    kv, server, client = await held_client()
    assert await client.call("SET", "a", "1", "EX", "10") == Simple("OK")  # options: worker
    assert await client.call("GET", "a", "extra") == Err(
        "ERR wrong number of arguments for 'get' command"
    )
    assert kv.started == 0
    await server.close()


async def test_shutdown_lets_a_held_reply_out() -> None:
    kv, server, client = await held_client(b"v", config=RespConfig(shutdown_grace=5.0))
    client.send(encode_request("GET", "k"))
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0)
    assert not client.transport.closed
    kv.release()
    assert await client.read() == b"v"
    await closing
    assert client.transport.closed


async def test_a_protocol_error_behind_a_held_request_answers_after_it() -> None:
    kv, server, client = await held_client(b"v")
    client.send(encode_request("GET", "k"))
    client.send(encode_request("PING") + b"*1\r\n$x\r\n")  # then garbage
    await _stays(client, kv, started=1)  # nothing may overtake the held GET
    kv.release()
    assert await client.read() == b"v"
    assert await client.read() == Simple("PONG")
    reply = await client.read()
    assert isinstance(reply, Err)
    assert reply.message.startswith("ERR Protocol error")
    await client.wait_closed()
    await server.close()


async def test_no_request_starts_while_the_transport_is_over_its_write_limit() -> None:
    kv, server, client = await held_client(b"v")
    client.conn.pause_writing()  # what the transport calls above write_buffer_high
    client.send(encode_request("GET", "k") + encode_request("PING"))
    await _stays(client, kv, started=0)
    client.conn.resume_writing()  # the client read: its buffer drained
    assert kv.started == 1
    kv.release()
    assert await client.read() == b"v"
    assert await client.read() == Simple("PONG")
    await server.close()


async def test_a_read_arriving_after_a_pause_waits_for_the_resume() -> None:
    kv, server, client = await held_client(b"v")
    original = client.transport.write

    def pausing(data: bytes | bytearray | memoryview) -> None:
        original(data)
        client.conn.pause_writing()  # this write took the buffer over the limit

    client.transport.write = pausing  # type: ignore[method-assign]
    client.send(encode_request("GET", "k"))
    kv.release()
    assert await client.read() == b"v"
    client.send(encode_request("GET", "k"))
    await _stays(client, kv, started=1)  # the second GET waits for the client to read
    client.transport.write = original  # type: ignore[method-assign]
    client.conn.resume_writing()
    kv.release()
    assert kv.started == 2
    assert await client.read() == b"v"
    await server.close()
