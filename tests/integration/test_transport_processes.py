"""Real processes exchanging peer requests over ``tcp`` and ``grpc``.

Two echo servers run as separate processes on the loopback aliases 127.0.0.2
and 127.0.0.3; the test process is the client. A server killed with SIGKILL
(no goodbye on any channel) makes requests to it fail fast with a
TransportError while the other server keeps answering; restarted on the same
address, it is reached again through the engine's reconnect with backoff.
A killed *client* process frees its channel on the server, which keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from peer_ring.errors import PeerUnavailable, RequestTimeout, TransportError
from peer_ring.transport import TransportConfig, create_transport
from peer_ring.transport._core import ChannelTransport
from peer_ring.transport.base import PeerInfo
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

#: The server process: answers ``[message, pid]``; prints READY once listening.
SERVER = """
import asyncio, os, sys
from peer_ring.transport import create_transport

async def main(kind, address):
    t = create_transport(kind, "srv-" + address, address)
    t.set_handler(lambda message, peer: [message, os.getpid()])
    await t.start()
    print("READY", t.address, flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class ServerProcess:
    """One echo server process; started and killed by PID only."""

    def __init__(self, kind: str, address: str) -> None:
        self.kind = kind
        self.address = address
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER,
            self.kind,
            self.address,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30.0)
        words = line.decode().split()
        if words[:1] != ["READY"]:
            raise AssertionError(f"server did not start: {line!r}")
        self.address = words[1]  # the bound port, when 0 was asked for

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()  # SIGKILL to this PID
            await self.proc.wait()


@pytest.fixture
async def servers() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for s in started:
        await s.kill()


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[[str], Awaitable[ChannelTransport]]]:
    made: list[ChannelTransport] = []

    async def make(kind: str) -> ChannelTransport:
        cfg = TransportConfig(
            request_timeout=3.0, connect_timeout=3.0, reconnect_min=0.05, reconnect_max=0.5
        )
        t = create_transport(kind, "client", "127.0.0.1:0", cfg)
        await t.start()
        made.append(t)
        return t

    yield make
    for t in made:
        await t.close()


@pytest.mark.parametrize("kind", ["tcp", "grpc"])
async def test_kill_and_restart_of_a_server_process(
    kind: str,
    servers: list[ServerProcess],
    client_factory: Callable[[str], Awaitable[ChannelTransport]],
) -> None:
    a = ServerProcess(kind, "127.0.0.2:0")
    b = ServerProcess(kind, "127.0.0.3:0")
    servers += [a, b]
    await asyncio.gather(a.start(), b.start())
    client = await client_factory(kind)

    # both answer, many requests in flight at once on each channel
    for s in (a, b):
        answers = await asyncio.gather(*(client.request(s.address, i) for i in range(200)))
        assert answers == [[i, s.pid] for i in range(200)]

    old_pid = a.pid
    await a.kill()
    # the broken channel fails requests with a TransportError (never a hang)
    with pytest.raises((PeerUnavailable, RequestTimeout)):
        await client.request(a.address, "after kill")
    assert client.in_flight() == 0
    # the other process is unaffected
    assert await client.request(b.address, "b") == ["b", b.pid]

    await a.start()  # same address: the port is reused
    assert a.pid != old_pid

    async def a_answers() -> bool:
        with contextlib.suppress(TransportError):
            return bool(await client.request(a.address, "back") == ["back", a.pid])
        return False

    await wait_for(a_answers, timeout=20.0, message=f"{kind} client reconnecting to {a.address}")
    answers = await asyncio.gather(*(client.request(a.address, i) for i in range(200)))
    assert answers == [[i, a.pid] for i in range(200)]


#: A client process that keeps requests in flight until killed.
CLIENT = """
import asyncio, sys
from peer_ring.transport import create_transport

async def main(kind, target):
    t = create_transport(kind, "doomed-client", "127.0.0.3:0")
    await t.start()
    assert await t.request(target, "first") == "first"
    print("READY", flush=True)
    while True:
        await asyncio.gather(*(t.request(target, i) for i in range(64)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize("kind", ["tcp", "grpc"])
async def test_killed_client_process_frees_its_channel_on_the_server(kind: str) -> None:
    server = create_transport(kind, "server", "127.0.0.2:0")
    served: list[Any] = []

    def handler(message: Any, peer: PeerInfo) -> Any:
        served.append(message)
        return message

    server.set_handler(handler)
    await server.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, kind, server.address, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 30.0)).startswith(b"READY")
        accepted = server._accepted  # type: ignore[attr-defined]
        assert len(accepted) == 1
        await wait_for(lambda: len(served) > 500, message="client traffic")
        proc.kill()  # SIGKILL to this PID, mid-traffic
        await proc.wait()
        await wait_for(lambda: not accepted, message=f"{kind} server noticing the dead client")
        # and the server still serves others
        client = create_transport(kind, "client", "127.0.0.1:0")
        await client.start()
        try:
            assert await client.request(server.address, "next") == "next"
        finally:
            await client.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.close()
