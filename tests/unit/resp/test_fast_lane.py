"""The RESP fast lane: lone GET / SET through the store's callback API.

A store exposing :class:`~peer_ring.apps.kv.api.KVCallbacks` gets a lone GET or
plain SET started straight from ``data_received``; these tests hold such a
request open and check that what arrives meanwhile waits for it (replies
stay in request order), that errors become error replies, and that shutdown
lets the held reply out.
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


async def _idle(client: Client) -> None:
    """Wait until the connection's worker waits for input (the fast lane's condition)."""

    def idle() -> bool:
        waiter = client.conn._waiter
        return waiter is not None and not waiter.done()

    await wait_for(idle, message="worker idle")


async def _held_back(client: Client, queued: int) -> None:
    """The ``queued`` requests sent behind a held fast-lane request wait in the
    connection's queue: parsed, the worker not woken, nothing answered -- and
    still so after every callback the loop had ready has run."""
    conn = client.conn
    for _ in range(20):  # loop passes, not time: whatever was scheduled has run
        assert len(conn.queue) == queued, list(conn.queue)
        waiter = conn._waiter
        assert waiter is not None
        assert not waiter.done(), "the worker was woken while a request was held"
        assert client.unread() == b""
        await asyncio.sleep(0)


async def held_client(
    value: bytes | None = None, config: RespConfig | None = None
) -> tuple[HeldKV, RespServer, Client]:
    """A HeldKV (holding ``k = value`` when given) behind a server, and a
    client whose connection waits for input (fast-lane requests may start)."""
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
    assert RespServer(kv).fast is kv
    assert RespServer(LocalKV()).fast is None


async def test_requests_behind_a_held_fast_get_keep_their_order() -> None:
    kv, server, client = await held_client(b"old")
    client.send(encode_request("GET", "k"))
    assert kv.started == 1
    assert len(kv.held) == 1
    # pipelined behind it: must not run before the GET answered
    client.send(encode_request("SET", "k", "new") + encode_request("GET", "k"))
    await _held_back(client, 2)
    assert kv.started == 1
    kv.release()
    assert await client.read() == b"old"
    assert await client.read() == Simple("OK")
    assert await client.read() == b"new"
    assert server.stats.commands_processed == 3
    await server.close()


async def test_fast_set_then_get_and_error_replies() -> None:
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


async def test_only_lone_plain_get_and_set_take_the_fast_lane() -> None:
    kv, server, client = await held_client()
    assert await client.call("SET", "a", "1", "EX", "10") == Simple("OK")  # options: worker
    assert await client.call("GET", "a", "extra") == Err(
        "ERR wrong number of arguments for 'get' command"
    )
    assert kv.started == 0
    await server.close()


async def test_shutdown_lets_a_held_fast_reply_out() -> None:
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
    await _held_back(client, 2)  # PING and the protocol error: nothing overtakes the GET
    kv.release()
    assert await client.read() == b"v"
    assert await client.read() == Simple("PONG")
    reply = await client.read()
    assert isinstance(reply, Err)
    assert reply.message.startswith("ERR Protocol error")
    await client.wait_closed()
    await server.close()
