"""The HTTP middleware in real apps served over HTTP: Starlette under uvicorn, and aiohttp.

The limiter is a real three-node cluster (memory transport) in the test process;
the apps are served on loopback and called with an HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.app import ConfigError
from peer_ring.apps.ratelimit import RateLimiter, RateLimiterConfig
from peer_ring.apps.ratelimit.middleware import RateLimitMiddleware, aiohttp_middleware
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

POLICY = re.compile(r'^"default";q=(\d+);w=(\d+)$')
STATUS = re.compile(r'^"default";r=(\d+);t=(\d+)$')


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[list[Node], list[RateLimiter]]]:
    net = MemoryNetwork()
    nodes = [
        Node(
            NodeConfig.local(
                f"m{i}",
                listen=f"10.3.0.{i}:7400",
                transport="memory",
                seeds=("10.3.0.1:7400",),
                replication=ReplicationConfig(partitions=16, replicas=3),
            ),
            network=net,
        )
        for i in (1, 2, 3)
    ]
    lims = [n.register(RateLimiter(RateLimiterConfig())) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="membership")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield nodes, lims
    await asyncio.gather(*(n.stop() for n in nodes))


@pytest.fixture
def limiters(cluster: tuple[list[Node], list[RateLimiter]]) -> list[RateLimiter]:
    return cluster[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _check(url: str, *, limit: int) -> None:
    async with aiohttp.ClientSession() as http:
        seen = []
        for _ in range(limit + 2):
            async with http.get(url) as r:
                seen.append((r.status, r.headers.copy(), await r.text()))
        codes = [s for s, _, _ in seen]
        assert codes == [200] * limit + [429, 429]
        for i, (_, headers, _) in enumerate(seen[:limit]):
            q, w = POLICY.match(headers["RateLimit-Policy"]).groups()  # type: ignore[union-attr]
            assert (int(q), int(w)) == (limit, 60)
            r_, t = STATUS.match(headers["RateLimit"]).groups()  # type: ignore[union-attr]
            assert int(r_) == limit - 1 - i
            assert 0 < int(t) <= 120
        _, headers, body = seen[-1]
        assert 1 <= int(headers["Retry-After"]) <= 120  # sliding window: up to 2 periods
        assert "rate limited" in body
        assert STATUS.match(headers["RateLimit"]).groups()[0] == "0"  # type: ignore[union-attr]
        async with http.get(url.replace("/hello", "/health")) as r:
            assert r.status == 200  # key None: not counted


async def test_starlette_app_under_uvicorn(limiters: list[RateLimiter]) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    starlette_apps = pytest.importorskip("starlette.applications")
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = starlette_apps.Starlette(routes=[Route("/hello", hello), Route("/health", hello)])
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiters[1],
        limit=3,
        period=60,
        key=lambda scope: None if scope["path"] == "/health" else "client-a",
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, message="uvicorn started")
        await _check(f"http://127.0.0.1:{port}/hello", limit=3)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def test_aiohttp_app(limiters: list[RateLimiter]) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    mw = aiohttp_middleware(
        limiters[2],
        limit=4,
        period=60,
        key=lambda request: None if request.path == "/health" else "client-b",
    )
    app = web.Application(middlewares=[mw])
    app.add_routes([web.get("/hello", hello), web.get("/health", hello)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await _check(f"http://127.0.0.1:{port}/hello", limit=4)
    finally:
        await runner.cleanup()


async def test_a_limiter_that_cannot_decide_answers_503_not_allow(
    cluster: tuple[list[Node], list[RateLimiter]],
) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    nodes, lims = cluster
    app = web.Application(middlewares=[aiohttp_middleware(lims[0], limit=5, period=60)])
    app.add_routes([web.get("/hello", hello)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        await nodes[0].stop()  # the app's node is gone: no decision can be made
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/hello") as r:
            assert r.status == 503
            assert "unavailable" in (await r.json())["error"]
    finally:
        await runner.cleanup()


def test_bad_middleware_configuration_fails_at_build_time() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    lim = RateLimiter()
    for kwargs in ({"limit": 0, "period": 60}, {"limit": 5, "period": -1},
                   {"limit": 5, "period": 60, "algorithm": "nope"}):  # fmt: skip
        with pytest.raises(ConfigError):
            RateLimitMiddleware(app, limiter=lim, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            aiohttp_middleware(lim, **kwargs)  # type: ignore[arg-type]
