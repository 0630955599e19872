"""The rate limiter's HTTP JSON API (``POST /v1/GetRateLimits``) under the
HTTP surface's security settings: open unless its own token is configured
(the admin and metrics tokens do not apply to it), bodies over the server's
1 MiB cap refused with 413, a body that never finishes cut off by the
request timeout. Real aiohttp on 127.0.0.1: run in a network namespace."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.ratelimit import RateLimiter, RateLimiterConfig
from peer_ring.server._http_limits import MAX_BODY
from peer_ring.server.http import HttpServer
from peer_ring.server.ratelimit_http import ratelimit_routes
from peer_ring.transport.memory import MemoryNetwork

BODY = {"requests": [{"name": "api", "unique_key": "k", "hits": 1, "limit": 5, "duration": 60000}]}
ADMIN = "the-admin-token-0123"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    node = Node(
        NodeConfig.local(
            "n1",
            listen="10.4.0.1:7400",
            transport="memory",
            seeds=("10.4.0.1:7400",),
            replication=ReplicationConfig(partitions=8, replicas=1, read_quorum=1, write_quorum=1),
        ),
        network=MemoryNetwork(),
    )
    limiter = node.register(RateLimiter(RateLimiterConfig()))
    await node.start()
    await node.wait_ready()
    servers: list[HttpServer] = []

    async def start(token: str | None = None, **kw: Any) -> str:
        http = HttpServer(node, "127.0.0.1:0", admin_token=ADMIN, **kw)
        http.app.add_routes(ratelimit_routes(limiter, token=token))
        await http.start()
        servers.append(http)
        return f"http://127.0.0.1:{http.port}"

    yield start
    for http in servers:
        await http.close()
    await node.stop()


async def test_open_without_its_own_token_the_admin_token_does_not_apply(serve: Any) -> None:
    base = await serve()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/GetRateLimits", json=BODY) as r:
            assert r.status == 200
            [answer] = (await r.json())["responses"]
            assert (answer["status"], answer["remaining"]) == ("UNDER_LIMIT", "4")
        async with session.get(f"{base}/status") as r:
            assert r.status == 401  # the admin surface of the same server is guarded


async def test_its_token_guards_get_rate_limits_and_only_it(serve: Any) -> None:
    base = await serve(token="rl-token-0123456789")
    url = f"{base}/v1/GetRateLimits"
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {ADMIN}"}):
            async with session.post(url, json=BODY, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        good = {"Authorization": "Bearer rl-token-0123456789"}
        async with session.post(url, json=BODY, headers=good) as r:
            assert r.status == 200
            assert (await r.json())["responses"][0]["remaining"] == "4"
        async with session.get(f"{base}/v1/HealthCheck") as r:
            assert r.status == 200  # a probe, like /healthz


async def test_bodies_over_the_http_cap_are_refused(serve: Any) -> None:
    base = await serve()
    url = f"{base}/v1/GetRateLimits"
    big = json.dumps({"requests": [], "pad": "x" * MAX_BODY}).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=io.BytesIO(big)) as r:  # Content-Length says it
            assert r.status == 413

        async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length
            for i in range(0, len(big), 65536):
                yield big[i : i + 65536]

        async with session.post(url, data=chunks()) as r:
            assert r.status == 413
        async with session.post(url, data=b"[" * 100_000) as r:  # deep nesting: a 400
            assert r.status == 400


async def test_a_body_that_never_finishes_is_cut_off(serve: Any) -> None:
    base = await serve(request_timeout=0.3)
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b'POST /v1/GetRateLimits HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"req'
        )
        await writer.drain()
        # the deadline middleware answers 408 (a timer, not this test's sleep);
        # a partial body is never parsed as if it were the whole
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 408")
    finally:
        writer.close()


async def test_a_body_in_several_segments_is_read_whole(serve: Any) -> None:
    base = await serve()
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(BODY).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"POST /v1/GetRateLimits HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        writer.write(head % len(body) + body[:10])
        await writer.drain()
        await asyncio.sleep(0.05)  # let the server take the first segment alone
        writer.write(body[10:])
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
