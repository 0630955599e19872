"""Fixtures for the discovery backends: real etcd / ZooKeeper, a runner subprocess."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from discovery_helpers import Runner

from peer_ring.testing.servers import EtcdServer, ZooKeeperServer, etcd_missing, zookeeper_missing

RUNNER = Path(__file__).with_name("discovery_runner.py")
_names = itertools.count()


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    reason = etcd_missing()
    if reason:
        pytest.skip(reason)
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    with server:
        yield server


@pytest.fixture(scope="module")
def zk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    reason = zookeeper_missing()
    if reason:
        pytest.skip(reason)
    server = ZooKeeperServer(tmp_path_factory.mktemp("zk"))
    with server:
        yield server


@pytest.fixture
def unique_path() -> str:
    """A registry prefix no other test uses."""
    return f"/peer-ring-test/{os.getpid()}-{next(_names)}"


@pytest.fixture
async def spawn_runner() -> AsyncIterator[Callable[..., Awaitable[Runner]]]:
    runners: list[Runner] = []

    async def spawn(*args: str) -> Runner:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        runner = Runner(proc)
        runners.append(runner)
        await runner.wait_ready()
        return runner

    yield spawn
    for runner in runners:
        await runner.kill()
