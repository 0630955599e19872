"""Join under write load and decommission, with real ``peer-ring node`` processes.

Invariants checked (docs/handoff.md, Dynamo section 4.9):

* a join moves every partition whose preference list gained the new node to
  it while writes go on; afterwards every acknowledged key is readable
  through every node, each key is on exactly its N owners (replica-local
  scans) and nodes that lost a partition dropped their copy;
* ``peer-ring leave`` hands every partition over *before* the node leaves:
  when the command returns, every key is already on its N owners of the ring
  without the leaver.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from peer_ring.testing.cluster import LocalCluster
from tests.conftest import wait_for
from tests.integration.handoff._probe import (
    PARTITIONS,
    RESP,
    Probe,
    config_file,
    get_many,
    placement_errors,
    redis_client,
    ring_of,
    run_blocking,
    set_many,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def test_join_under_write_load_moves_and_drops_partitions(tmp_path: Path) -> None:
    cluster = LocalCluster(
        3,
        subnet="127.0.60",
        replicas=2,
        partitions=PARTITIONS,
        resp_port=RESP,
        extra_args=config_file(tmp_path, sweep_interval=2.0),
        artefacts=tmp_path,
    )
    try:
        cluster.start(["n1", "n2"])
        async with Probe() as probe:
            await probe.wait_converged(cluster, ["n1", "n2"])
            r1, r2 = redis_client(cluster, "n1"), redis_client(cluster, "n2")
            try:
                base = {b"pre%05d" % i: b"v%05d" % i for i in range(20_000)}
                acked = await set_many(r1, base)
                assert acked == set(base)  # a healthy 2-node cluster acknowledges everything

                # writes go on, through both old nodes, while n3 joins
                written: dict[bytes, bytes] = {}
                joined = asyncio.Event()

                async def writer(r: object, tag: bytes) -> None:
                    i = 0
                    while not joined.is_set() or i < 2_000:
                        batch = {b"%s%05d" % (tag, j): b"w%05d" % j for j in range(i, i + 200)}
                        ok = await set_many(r, batch)  # type: ignore[arg-type]
                        written.update((k, batch[k]) for k in ok)
                        i += 200

                writers = [
                    asyncio.create_task(writer(r1, b"ja")),
                    asyncio.create_task(writer(r2, b"jb")),
                ]
                await run_blocking(cluster.start, ["n3"])
                await probe.wait_converged(cluster, ["n1", "n2", "n3"])
                # keep writing until every transfer of the join has finished
                await wait_for(
                    lambda: probe.quiet(cluster, ["n1", "n2", "n3"]),
                    timeout=40,
                    interval=0.3,
                    message="transfers of the join",
                )
                joined.set()
                await asyncio.gather(*writers)
            finally:
                await r1.aclose()
                await r2.aclose()
            assert len(written) >= 4_000
            expected = {**base, **written}

            ring = ring_of(cluster, ["n1", "n2", "n3"], replicas=2)
            n3_share = sum(1 for k in expected if "n3" in ring.owners(k))
            assert n3_share > len(expected) // 3  # the join really moved data

            async def placed() -> bool:
                return not await placement_errors(probe, cluster, ring, expected)

            await wait_for(placed, timeout=30, interval=0.5, message="placement after join")
            assert await placement_errors(probe, cluster, ring, expected) == []

            keys = sorted(expected)
            for name in ("n1", "n2", "n3"):
                r = redis_client(cluster, name)
                try:
                    got = await get_many(r, keys)
                finally:
                    await r.aclose()
                wrong = [k for k in keys if got[k] != expected[k]]
                assert wrong == [], f"{len(wrong)} keys wrong through {name}, e.g. {wrong[:3]}"
    finally:
        cluster.close()


async def test_leave_hands_partitions_over_before_leaving(tmp_path: Path) -> None:
    cluster = LocalCluster(
        4,
        subnet="127.0.61",
        replicas=3,
        partitions=PARTITIONS,
        resp_port=RESP,
        # stray copies from stale dual-write targets (see the report) need the sweep
        extra_args=config_file(tmp_path, sweep_interval=2.0),
        artefacts=tmp_path,
    )
    with cluster:
        async with Probe() as probe:
            names = ["n1", "n2", "n3", "n4"]
            await probe.wait_converged(cluster, names)
            r = redis_client(cluster, "n1")
            try:
                data = {b"lv%05d" % i: b"x%05d" % i for i in range(5_000)}
                assert await set_many(r, data) == set(data)
            finally:
                await r.aclose()
            before = ring_of(cluster, names, replicas=3)
            # every key is on its 3 owners before the leave
            await wait_for(
                lambda: _placed(probe, cluster, before, data),
                timeout=20,
                interval=0.3,
                message="placement before leave",
            )
            leaver = cluster["n4"]
            assert sum(1 for k in data if "n4" in before.owners(k)) > len(data) // 2
            out = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "peer_ring", "leave", "--node", leaver.address,
                 "--timeout", "60"],
                capture_output=True, text=True, timeout=70, check=False,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr + out.stdout
            assert "left the cluster" in out.stdout
            # handed over first: at once, every key is on all 3 remaining nodes
            after = ring_of(cluster, names[:3], replicas=3)
            assert await placement_errors(probe, cluster, after, data, strays=False) == []
            assert leaver.proc is not None
            assert await asyncio.to_thread(leaver.proc.wait, 15) == 0
            r = redis_client(cluster, "n2")
            try:
                got = await get_many(r, sorted(data))
            finally:
                await r.aclose()
            assert got == data
            # (a leaver that got its own "left" record back once re-announced
            # itself alive; StaticDiscovery.merge now keeps a leave final)
            await probe.wait_converged(cluster, names[:3], timeout=15)
            assert await placement_errors(probe, cluster, after, data) == []


async def _placed(probe: Probe, cluster: LocalCluster, ring: object, keys: object) -> bool:
    return not await placement_errors(probe, cluster, ring, keys)  # type: ignore[arg-type]
