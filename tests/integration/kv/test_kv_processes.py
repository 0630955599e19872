"""The replicated KV store in real node processes, driven by real Redis clients."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from peer_ring.ring import Ring
from peer_ring.testing.cluster import LocalCluster
from peer_ring.transport import create_transport
from peer_ring.transport.base import TransportConfig
from tests.conftest import wait_for
from tests.integration._cluster import transport_of, wait_one_ring

pytestmark = pytest.mark.integration

PARTITIONS = 64
RESP = 6379


def client(cluster: LocalCluster, name: str) -> aioredis.Redis:
    return aioredis.Redis(host=cluster[name].ip, port=RESP, socket_timeout=5)


async def replica_holds(address: str, key: bytes, transport: str = "tcp") -> bool:
    """Ask one node's *local* replica (not a quorum) whether it holds ``key``."""
    part = Ring((), partitions=PARTITIONS).partition_for(key)
    t = create_transport(transport, "probe", "127.0.0.1:0", TransportConfig(request_timeout=2.0))
    await t.start()
    try:
        state = await t.request(address, ["s", "kv", "get", key, part, None, "probe"])
        return state is not None and any(
            item[0] is not None for _, _, items in state for item in items
        )
    finally:
        await t.close()


@pytest.fixture(params=["tcp", "grpc"])
def three(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    third = 40 if request.param == "tcp" else 41
    with LocalCluster(
        3,
        subnet=f"127.0.{third}",
        resp_port=RESP,
        partitions=PARTITIONS,
        transport=request.param,
        artefacts=tmp_path,
    ) as c:
        yield c


async def converge(cluster: LocalCluster) -> None:
    await wait_one_ring(cluster)


async def test_put_through_one_node_get_through_another(three: LocalCluster) -> None:
    await converge(three)
    a, b, c = (client(three, n) for n in ("n1", "n2", "n3"))
    try:
        for i in range(200):
            assert await a.set(f"k{i}", f"v{i}")
        for i in range(200):
            assert await b.get(f"k{i}") == f"v{i}".encode()
        assert await c.mget(["k1", "k2", "nope"]) == [b"v1", b"v2", None]
        assert await b.delete("k1") == 1
        assert await c.get("k1") is None
        # DBSIZE asks one replica per partition: the one that acknowledged the
        # delete last may not have the tombstone yet (count is eventually exact)
        await wait_for(lambda: _dbsize_is(a, 199), timeout=5, message="DBSIZE 199")
    finally:
        for r in (a, b, c):
            await r.aclose()


async def test_ttl_is_honoured_through_every_node(three: LocalCluster) -> None:
    await converge(three)
    a, b = client(three, "n1"), client(three, "n2")
    try:
        assert await a.set("temp", "x", px=400)
        ttl = await b.pttl("temp")
        assert 0 < ttl <= 400
        await wait_for(lambda: _gone(b, "temp"), timeout=5, message="expiry on n2")
        assert await a.get("temp") is None
        # the sweep reclaims it on every replica, not only on read
        transport = transport_of(three)
        for n in three.nodes.values():
            await wait_for(
                lambda n=n: _not(replica_holds(n.address, b"temp", transport)),
                timeout=5,
                message="sweep",
            )
    finally:
        await a.aclose()
        await b.aclose()


async def _dbsize_is(r: aioredis.Redis, n: int) -> bool:
    return int(await r.dbsize()) == n


async def _gone(r: aioredis.Redis, key: str) -> bool:
    return await r.get(key) is None


async def _not(aw: Any) -> bool:
    return not await aw


async def test_one_replica_killed_reads_and_writes_still_succeed(tmp_path: Path) -> None:
    with LocalCluster(
        5, subnet="127.0.42", resp_port=RESP, partitions=PARTITIONS, artefacts=tmp_path
    ) as cluster:
        await converge(cluster)
        a = client(cluster, "n1")
        try:
            for i in range(300):
                assert await a.set(f"before{i}", str(i))
            cluster.kill("n3")
            b = client(cluster, "n2")
            for i in range(300):
                assert await b.set(f"after{i}", str(i))
            for i in range(300):
                assert await a.get(f"before{i}") == str(i).encode()
                assert await b.get(f"after{i}") == str(i).encode()
            await b.aclose()
        finally:
            await a.aclose()


async def test_w1_write_reaches_all_n_replicas(tmp_path: Path) -> None:
    with LocalCluster(
        5,
        subnet="127.0.43",
        resp_port=RESP,
        partitions=PARTITIONS,
        extra_args=["--write-quorum", "1", "--read-quorum", "1"],
        artefacts=tmp_path,
    ) as cluster:
        await converge(cluster)
        a = client(cluster, "n1")
        try:
            keys = [f"w1-{i}".encode() for i in range(20)]
            for k in keys:
                assert await a.set(k, b"x")
        finally:
            await a.aclose()
        ring = Ring.from_members(
            [_member(n.name, n.address) for n in cluster.nodes.values()],
            partitions=PARTITIONS,
            replicas=3,
        )
        for k in keys:
            owners = ring.owners(k)
            assert len(owners) == 3
            for owner in owners:
                address = cluster[owner].address
                await wait_for(
                    lambda address=address, k=k: replica_holds(address, k),
                    timeout=5,
                    message=f"{k!r} on {owner}",
                )


def _member(name: str, address: str) -> Any:
    from peer_ring.membership import Member

    return Member(name, address)


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-tools not installed")
async def test_redis_cli_and_redis_benchmark_against_a_cluster_node(three: LocalCluster) -> None:
    await converge(three)
    host = three["n2"].ip

    def run(*args: str) -> str:
        res = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
        return res.stdout

    assert run("redis-cli", "-h", host, "-p", str(RESP), "set", "cli", "hello").strip() == "OK"
    assert run("redis-cli", "-h", three["n3"].ip, "-p", str(RESP), "get", "cli").strip() == "hello"
    out = await asyncio.to_thread(
        run, "redis-benchmark", "-h", host, "-p", str(RESP), "-t", "set,get", "-n", "20000", "-q"
    )
    assert "SET:" in out
    assert "GET:" in out
    assert "rror" not in out


async def test_cli_kv_put_get_del(three: LocalCluster) -> None:
    await converge(three)
    node = three["n1"].address
    transport = transport_of(three)

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "peer_ring", "kv", *args, "--node", node,
             "--transport", transport],
            capture_output=True, text=True, timeout=60, check=check,
        )  # fmt: skip

    assert cli("put", "greeting", "hello", "--ttl", "60").stdout.strip() == "OK"
    got = cli("get", "greeting")
    assert got.stdout.strip() == "hello"
    assert "expires in" in got.stderr
    assert cli("del", "greeting").stdout.strip() == "1"
    missing = cli("get", "greeting", check=False)
    assert missing.returncode == 1
    assert "not found" in missing.stderr
