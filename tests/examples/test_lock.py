"""The "Write your own app" example (docs/apps.md): a lock with fencing tokens.

Runs ``examples/lock/lock.py`` on real nodes of the in-memory transport, and
checks that the example imports nothing but the public app API.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lock" / "lock.py"
PUBLIC = {"peer_ring", "peer_ring.app", "peer_ring.versions", "peer_ring.hlc", "peer_ring.merkle"}


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["lock_example"] = module
    spec.loader.exec_module(module)
    return module


lock = _load()


def config(i: int, seeds: tuple[str, ...] = ("10.1.0.1:7400",)) -> NodeConfig:
    return NodeConfig.local(
        f"n{i}",
        listen=f"10.1.0.{i}:7400",
        transport="memory",
        seeds=seeds,
        replication=ReplicationConfig(partitions=32, replicas=3),
    )


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[MemoryNetwork, list[Node], list[Any]]]:
    net = MemoryNetwork()
    nodes = [Node(config(i), network=net) for i in (1, 2, 3)]
    services = [n.register(lock.LockService()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.members) == 3 for n in nodes), message="membership")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield net, nodes, services
    await asyncio.gather(*(n.stop() for n in nodes))


def test_the_example_imports_only_the_public_app_api() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    ours = {m for m in imported if m.split(".")[0] == "peer_ring"}
    assert ours
    assert ours <= PUBLIC, ours - PUBLIC


async def test_racing_clients_never_both_get_the_lock(
    nodes: tuple[MemoryNetwork, list[Node], list[Any]],
) -> None:
    # safety: at most one of three racing clients is granted token 1 (a
    # split vote grants none); liveness: once the claims' leases end, the
    # next client gets a higher token
    _, _, services = nodes
    clock = services[0].app.clock
    leases_end = clock.time() + 0.2
    results = await asyncio.gather(
        *(s.acquire(b"job-1", f"client-{i}", 0.2) for i, s in enumerate(services))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) <= 1
    leases_end = max([leases_end, *(r.expires_at for r in winners)])
    await wait_for(lambda: clock.time() > leases_end + 0.05, message="leases over")
    later = await services[0].acquire(b"job-1", "late", 30.0)
    assert later is not None
    assert later.token >= 2


async def test_tokens_grow_across_release_and_expiry(
    nodes: tuple[MemoryNetwork, list[Node], list[Any]],
) -> None:
    _, _, services = nodes
    first = await services[0].acquire(b"job-2", "a", 30.0)
    assert first is not None
    assert await services[1].acquire(b"job-2", "b", 30.0) is None  # held
    assert await services[0].release(first)
    second = await services[1].acquire(b"job-2", "b", 0.05)
    assert second is not None
    assert second.token > first.token
    await wait_for(lambda: services[2].app.clock.time() > second.expires_at, message="expiry")
    third = await services[2].acquire(b"job-2", "c", 30.0)
    assert third is not None
    assert third.token > second.token


async def test_the_lock_survives_a_replica_joining(
    nodes: tuple[MemoryNetwork, list[Node], list[Any]],
) -> None:
    # a fourth node takes over some partitions by transfer (export/import
    # hooks); the lock state must come with them: still held, same token
    net, all_nodes, services = nodes
    leases = [await services[0].acquire(f"job-{i}".encode(), "a", 60.0) for i in range(12)]
    assert all(lease is not None for lease in leases)
    late = Node(config(4), network=net)
    late_service = late.register(lock.LockService())
    await late.start()
    try:
        everyone = [*all_nodes, late]
        await wait_for(lambda: len({n.ring.checksum for n in everyone}) == 1, message="same ring")
        await late.wait_ready()
        async with asyncio.timeout(20):
            await asyncio.gather(*(n.transfers.idle() for n in everyone))
        for lease in leases:
            assert lease is not None
            assert await late_service.acquire(lease.name, "b", 60.0) is None  # still held
        assert await late_service.release(leases[0])
        again = await late_service.acquire(leases[0].name, "b", 60.0)
        assert again is not None
        assert again.token == leases[0].token + 1
    finally:
        await late.stop()
