"""examples/ratelimit/api.py: an aiohttp API limited across a three-node cluster."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.ratelimit import RateLimiter
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ratelimit" / "api.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ratelimit_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ratelimit_example"] = module
    spec.loader.exec_module(module)
    return module


example = _load()


@pytest.fixture
async def urls() -> AsyncIterator[list[str]]:
    net = MemoryNetwork()
    nodes = [
        Node(
            NodeConfig.local(
                f"e{i}",
                listen=f"10.4.0.{i}:7400",
                transport="memory",
                seeds=("10.4.0.1:7400",),
                replication=ReplicationConfig(partitions=16, replicas=3),
            ),
            network=net,
        )
        for i in (1, 2, 3)
    ]
    limiters = [n.register(RateLimiter()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="membership")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    runners = []
    out = []
    for lim in limiters:  # one web server per node, as the example runs
        runner = web.AppRunner(example.build_app(lim))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        out.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    yield out
    for runner in runners:
        await runner.cleanup()
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_five_searches_per_key_across_the_cluster(urls: list[str]) -> None:
    async with aiohttp.ClientSession(headers={"X-Api-Key": "alice"}) as http:
        codes = []
        for i in range(7):
            async with http.get(f"{urls[i % 3]}/search?q=x") as r:
                codes.append(r.status)
                if r.status == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert r.headers["RateLimit-Policy"] == '"default";q=5;w=10'
        assert codes == [200] * 5 + [429, 429]
        async with http.get(f"{urls[0]}/healthz") as r:
            assert r.status == 200
    async with (
        aiohttp.ClientSession(headers={"X-Api-Key": "bob"}) as http,
        http.get(f"{urls[1]}/search") as r,
    ):
        assert r.status == 200  # another key, its own count


async def test_two_exports_at_a_time(urls: list[str]) -> None:
    async with aiohttp.ClientSession(headers={"X-Api-Key": "carol"}) as http:

        async def export(url: str) -> int:
            async with http.get(f"{url}/export?seconds=0.5") as r:
                return r.status

        codes = await asyncio.gather(*(export(u) for u in urls))
        assert sorted(codes) == [200, 200, 429]
