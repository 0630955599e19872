"""Pub/sub over RESP, driven by redis-py, against three real node processes:
subscribers on every node, publishers on every node, RESP2 and RESP3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from peer_ring.testing.cluster import LocalCluster
from tests.integration._cluster import wait_one_ring

pytestmark = pytest.mark.integration

RESP = 6379


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    tmp: Path = tmp_path_factory.mktemp("pubsub")
    with LocalCluster(3, subnet="127.0.47", resp_port=RESP, partitions=64, artefacts=tmp) as c:
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


def tag(request: pytest.FixtureRequest) -> str:
    """The test's name without glob metacharacters (its id has brackets)."""
    return request.node.name.replace("[", "-").replace("]", "")


async def next_message(ps: Any) -> dict[str, Any]:
    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=5.0)
    assert msg is not None, "no message within 5 s"
    return msg


async def test_publish_reaches_subscribers_on_every_node_once_and_in_order(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest
) -> None:
    ch = f"{tag(request)}:orders"
    subs = [r.pubsub() for r in clients]
    for ps in subs:
        await ps.subscribe(ch)
        confirm = await ps.get_message(timeout=5.0)
        assert confirm is not None
        assert confirm["type"] == "subscribe"
        assert confirm["data"] == 1
    pat = clients[0].pubsub()
    await pat.psubscribe(f"{tag(request)}:*")
    assert (await pat.get_message(timeout=5.0) or {})["type"] == "psubscribe"
    for i in range(20):
        assert await clients[i % 3].publish(ch, f"m{i}") == 4  # 3 channel + 1 pattern
    for ps in subs:
        got = [await next_message(ps) for _ in range(20)]
        assert [m["data"] for m in got] == [b"m%d" % i for i in range(20)]
        assert {m["type"] for m in got} == {"message"}
    pgot = [await next_message(pat) for _ in range(20)]
    assert [m["data"] for m in pgot] == [b"m%d" % i for i in range(20)]
    assert pgot[0]["type"] == "pmessage"
    assert pgot[0]["pattern"] == f"{tag(request)}:*".encode()
    assert await clients[1].pubsub_numsub(ch) == [(ch.encode(), 3)]
    assert ch.encode() in await clients[2].pubsub_channels(f"{tag(request)}:*")
    assert await clients[2].pubsub_numpat() >= 1
    for ps in [*subs, pat]:
        await ps.aclose()


async def test_subscribed_connection_rules_and_unsubscribe(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest, three: LocalCluster
) -> None:
    ch = f"{tag(request)}:rules"
    raw = aioredis.Redis(host=three["n2"].ip, port=RESP, protocol=2, single_connection_client=True)
    try:
        await raw.execute_command("SUBSCRIBE", ch)
        with pytest.raises(ResponseError, match="only \\(P\\|S\\)SUBSCRIBE"):
            await raw.execute_command("GET", "x")
    finally:
        await raw.aclose()
    ps = clients[1].pubsub()
    await ps.subscribe(ch, f"{ch}:2")
    await ps.unsubscribe(ch)
    kinds = [await ps.get_message(timeout=5.0) for _ in range(3)]
    assert [(m or {}).get("type") for m in kinds] == ["subscribe", "subscribe", "unsubscribe"]
    assert [(m or {}).get("data") for m in kinds] == [1, 2, 1]
    assert await clients[0].publish(ch, "gone") == 0
    assert await clients[0].publish(f"{ch}:2", "here") == 1
    assert (await next_message(ps))["data"] == b"here"
    await ps.aclose()


async def test_sharded_pubsub(
    clients: list[aioredis.Redis], request: pytest.FixtureRequest
) -> None:
    ch = f"{tag(request)}:shard"
    ps = clients[2].pubsub()
    await ps.ssubscribe(ch)
    assert (await ps.get_message(timeout=5.0) or {}).get("type") == "ssubscribe"
    assert await clients[0].spublish(ch, "s1") == 1
    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=5.0)
    assert msg is not None
    assert msg["type"] == "smessage"
    assert msg["data"] == b"s1"
    assert await clients[1].publish(ch, "not-shard") == 0  # a different namespace
    assert ch.encode() in await clients[1].pubsub_shardchannels()
    await ps.aclose()
