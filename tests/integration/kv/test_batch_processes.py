"""Batched rounds in real node processes (issue 18): redis-py pipelines,
transactions, MSET/MGET/DEL against a 3-node N=3 cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from peer_ring.testing.cluster import LocalCluster
from tests.conftest import wait_for
from tests.integration._cluster import wait_one_ring
from tests.integration.kv.test_kv_processes import PARTITIONS, RESP, client, replica_holds

pytestmark = pytest.mark.integration


@pytest.fixture
def three(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(
        3, subnet="127.0.52", resp_port=RESP, partitions=PARTITIONS, artefacts=tmp_path
    ) as c:
        yield c


async def _close(*clients: aioredis.Redis) -> None:
    for r in clients:
        await r.aclose()


async def test_a_pipeline_and_multi_key_commands_across_three_nodes(three: LocalCluster) -> None:
    await wait_one_ring(three)
    a, b = client(three, "n1"), client(three, "n2")
    try:
        pipe = a.pipeline(transaction=False)
        for i in range(300):
            pipe.set(f"p{i}", f"v{i}")
        assert await pipe.execute() == [True] * 300
        pipe = b.pipeline(transaction=False)
        for i in range(300):
            pipe.get(f"p{i}")
        pipe.get("p-missing")
        assert await pipe.execute() == [f"v{i}".encode() for i in range(300)] + [None]

        # a pipeline that writes then reads the same key reads its own write
        pipe = a.pipeline(transaction=False)
        pipe.set("same", "1").get("same").set("same", "2").get("same").incr("counter")
        assert await pipe.execute() == [True, b"1", True, b"2", 1]

        # a transaction: its queued commands run grouped after EXEC, in order
        tx = b.pipeline(transaction=True)
        tx.set("t1", "a").set("t2", "b").get("t1").get("t2")
        assert await tx.execute() == [True, True, b"a", b"b"]

        mapping = {f"m{i}": f"w{i}" for i in range(100)}
        assert await a.mset(mapping)
        assert await b.mget([*list(mapping), "m-missing"]) == [
            v.encode() for v in mapping.values()
        ] + [None]
        assert await b.delete(*[f"m{i}" for i in range(50)], "m-missing", "m0") == 50
        assert await a.mget(["m0", "m49", "m50"]) == [None, None, b"w50"]

        # W = 2 acknowledged every write; the third replica has them soon after
        for key in (b"p0", b"p299", b"m99"):
            for node in three.nodes.values():
                await wait_for(
                    lambda n=node, k=key: replica_holds(n.address, k),  # type: ignore[misc]
                    timeout=10,
                    message=f"{node.name} holds {key!r}",
                )
    finally:
        await _close(a, b)
