"""Stream commands over RESP, driven by redis-py, against three real node processes.

Each client talks to a different node; every command is forwarded to the
stream's leader. Replies are checked in RESP2 and RESP3 against Redis 7.2's
shapes and error texts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import node_status
from tests.conftest import wait_for
from tests.integration._cluster import wait_one_ring

pytestmark = pytest.mark.integration

RESP = 6379


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tmp: Path = tmp_path_factory.mktemp("streams")
    with LocalCluster(3, subnet="127.0.46", resp_port=RESP, partitions=64, artefacts=tmp) as c:
        yield c


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def clients(
    request: pytest.FixtureRequest, three: LocalCluster
) -> AsyncIterator[list[aioredis.Redis]]:
    await wait_one_ring(three)
    rs = [
        aioredis.Redis(host=three[n].ip, port=RESP, protocol=request.param, socket_timeout=10)
        for n in ("n1", "n2", "n3")
    ]
    yield rs
    for r in rs:
        await r.aclose()


def key(request: pytest.FixtureRequest, name: str) -> str:
    return f"{request.node.name}:{name}"


async def test_xadd_xrange_xlen_xdel_xtrim(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest
) -> None:
    a, b, c = clients
    k = key(request, "s")
    ids = [await (a, b, c)[i % 3].xadd(k, {"n": i}) for i in range(6)]
    assert len(set(ids)) == 6
    assert await c.xlen(k) == 6
    got = await b.xrange(k)
    assert [e[0] for e in got] == ids
    assert got[0][1] == {b"n": b"0"}
    assert [e[0] for e in await a.xrevrange(k, count=2)] == ids[:-3:-1]
    assert [e[0] for e in await a.xrange(k, min=f"({ids[0].decode()}", max="+")] == ids[1:]
    assert await b.xdel(k, ids[0], "1-1") == 1
    assert await c.xtrim(k, maxlen=3) == 2
    assert [e[0] for e in await a.xrange(k)] == ids[3:]
    assert await a.xadd(k, {"x": "y"}, id="99999999999999-5") == b"99999999999999-5"
    with pytest.raises(ResponseError, match="equal or smaller than the target stream top item"):
        await b.xadd(k, {"x": "y"}, id="99999999999999-5")
    with pytest.raises(ResponseError, match="Invalid stream ID"):
        await b.xadd(k, {"x": "y"}, id="nope")
    assert await c.xadd(key(request, "none"), {"a": 1}, nomkstream=True) is None
    assert await c.xadd(k, {"m": 1}, maxlen=2, approximate=False)
    assert await a.xlen(k) == 2


async def test_consumer_group_round_trip(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest
) -> None:
    a, b, c = clients
    k = key(request, "jobs")
    assert await a.xgroup_create(k, "g", id="0", mkstream=True)
    with pytest.raises(ResponseError, match="BUSYGROUP Consumer Group name already exists"):
        await b.xgroup_create(k, "g", id="0")
    ids = [await c.xadd(k, {"job": i}) for i in range(5)]
    got = _entries(await b.xreadgroup("g", "w1", {k: ">"}, count=3), k)
    assert [e[0] for e in got] == ids[:3]
    got2 = _entries(await c.xreadgroup("g", "w2", {k: ">"}), k)
    assert [e[0] for e in got2] == ids[3:]
    assert await a.xreadgroup("g", "w2", {k: ">"}) in (None, [], {})
    assert await a.xack(k, "g", ids[0], ids[1]) == 2
    pend = await b.xpending(k, "g")
    assert pend["pending"] == 3
    assert pend["min"] == ids[2]
    assert pend["max"] == ids[4]
    assert {d["name"]: d["pending"] for d in pend["consumers"]} == {b"w1": 1, b"w2": 2}
    rng = await c.xpending_range(k, "g", min="-", max="+", count=10)
    assert [(p["message_id"], p["consumer"], p["times_delivered"]) for p in rng] == [
        (ids[2], b"w1", 1),
        (ids[3], b"w2", 1),
        (ids[4], b"w2", 1),
    ]
    hist = _entries(await a.xreadgroup("g", "w2", {k: "0"}), k)
    assert [e[0] for e in hist] == ids[3:]
    claimed = await b.xclaim(k, "g", "w3", 0, [ids[2]])
    assert [e[0] for e in claimed] == [ids[2]]
    auto = await c.xautoclaim(k, "g", "w3", 0, "0-0", count=10)
    assert auto[0] == b"0-0"
    assert [e[0] for e in auto[1]] == [ids[2], ids[3], ids[4]]
    assert auto[2] == []
    assert await c.xautoclaim(k, "g", "w3", 0, "0-0", justid=True) == [ids[2], ids[3], ids[4]]
    groups = await a.xinfo_groups(k)
    assert groups[0]["name"] == b"g"
    assert groups[0]["pending"] == 3
    assert groups[0]["last-delivered-id"] == ids[4]
    consumers = await b.xinfo_consumers(k, "g")
    assert {x["name"]: x["pending"] for x in consumers} == {b"w1": 0, b"w2": 0, b"w3": 3}
    info = await c.xinfo_stream(k)
    assert info["length"] == 5
    assert info["groups"] == 1
    assert info["last-entry"][0] == ids[4]
    assert await a.xgroup_delconsumer(k, "g", "w3") == 3
    assert await b.xgroup_destroy(k, "g") == 1
    with pytest.raises(ResponseError, match="NOGROUP"):
        await c.xreadgroup("g", "w1", {k: ">"})


async def test_blocking_reads_wake_on_an_add_through_another_node(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest
) -> None:
    a, b, c = clients
    k = key(request, "blk")
    await a.xgroup_create(k, "g", id="$", mkstream=True)
    reader = asyncio.ensure_future(b.xread({k: "0-0"}, block=8000))
    group_reader = asyncio.ensure_future(c.xreadgroup("g", "w", {k: ">"}, block=8000))

    async def blocked(r: aioredis.Redis, cmd: str) -> bool:
        return any(x.get("cmd") == cmd for x in await r.client_list())

    await wait_for(lambda: blocked(b, "xread"), message="XREAD blocked")
    await wait_for(lambda: blocked(c, "xreadgroup"), message="XREADGROUP blocked")
    new = await a.xadd(k, {"v": "1"})
    got = await asyncio.wait_for(reader, 8)
    assert [e[0] for e in _entries(got, k)] == [new]
    got_g = await asyncio.wait_for(group_reader, 8)
    assert [e[0] for e in _entries(got_g, k)] == [new]
    assert await b.xread({k: new.decode()}, block=100) in (None, [], {})


def _entries(reply: object, k: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of stream ``k`` in an XREAD/XREADGROUP reply (redis-py gives
    a list of [key, entries] in RESP2, a map key -> [entries] in RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        rows = reply.get(k.encode(), [[]])
        return [tuple(e) for e in rows[0]]  # type: ignore[misc]
    assert isinstance(reply, list)
    for name, rows in reply:
        if name == k.encode():
            return [tuple(e) for e in rows]
    return []


async def test_peer_ring_status_shows_streams_groups_and_lag(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest, three: LocalCluster
) -> None:
    a, _, _ = clients
    k = key(request, "status")
    await a.xgroup_create(k, "g", id="0", mkstream=True)
    for i in range(3):
        await a.xadd(k, {"i": i})
    await a.xreadgroup("g", "w", {k: ">"}, count=1)
    rows = []
    leaders = []
    for name in ("n1", "n2", "n3"):
        st = await node_status(three[name].address)
        mine = [r for r in st.get("apps", {}).get("streams", {}).get("streams", []) if r[0] == k]
        rows += mine
        leaders += [name] * len(mine)
    assert rows == [[k, 3, [["g", 1, 2]]]]  # led by exactly one node; 1 pending, lag 2
    leader = leaders[0]
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "peer_ring", "status", "--node", three[leader].address],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    assert "streams led by this node" in out.stdout
    assert k in out.stdout
