"""Writes after a settled ring leave no stray copies on former holders."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from peer_ring.testing.cluster import LocalCluster
from tests.conftest import wait_for
from tests.integration.handoff._probe import Probe, placement_errors, ring_of, set_many

pytestmark = pytest.mark.integration


async def test_writes_after_the_ring_settled_create_no_strays(tmp_path: Path) -> None:
    with LocalCluster(
        4, subnet="127.0.65", partitions=64, resp_port=6379, artefacts=tmp_path
    ) as cluster:
        async with Probe() as probe:

            async def settled() -> bool:
                sts = [await probe.status(n.address) for n in cluster.nodes.values()]
                return (
                    all(len(s["members"]) == 4 for s in sts)
                    and len({s["epoch"] for s in sts}) == 1
                    and not any(s["transfers"] for s in sts)
                )

            await wait_for(settled, timeout=30, interval=0.2, message="a settled ring")
            keys = [f"s{i}".encode() for i in range(500)]
            r = aioredis.Redis(host=cluster["n1"].ip, port=6379, socket_timeout=10)
            try:
                acked = await set_many(r, {k: b"v" for k in keys})
            finally:
                await r.aclose()
            assert acked == set(keys)
            ring = ring_of(cluster, list(cluster.nodes), replicas=3)
            assert await placement_errors(probe, cluster, ring, keys) == []
