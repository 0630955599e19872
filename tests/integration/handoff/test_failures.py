"""Crashes, wiped replicas and partitions, with real ``peer-ring node`` processes.

Invariants checked (docs/handoff.md; Dynamo sections 4.6-4.7):

* kill -9 of one of 5 nodes under a write load at N=3, W=2 loses no
  acknowledged write (every key reads back its last acknowledged value or a
  later attempted one); after a restart the hints drain to zero on every
  node and the restarted node holds its partitions again;
* a node restarted empty with hinted handoff off is refilled by anti-entropy
  alone (bootstrap Merkle exchanges) within a bounded time;
* concurrent writes of one key on both sides of a network partition survive
  the heal as siblings (``--conflicts siblings``), not as a silent overwrite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
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


async def test_crash_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    names = ["n1", "n2", "n3", "n4", "n5"]
    cluster = LocalCluster(
        5,
        subnet="127.0.62",
        replicas=3,
        partitions=PARTITIONS,
        resp_port=RESP,
        extra_args=["--write-quorum", "2", "--read-quorum", "2"],
        artefacts=tmp_path,
    )
    keys = [b"cr%04d" % i for i in range(1_000)]
    acked: dict[bytes, int] = {}  # last acknowledged round per key
    tried: dict[bytes, int] = {}  # last attempted round per key
    with cluster:
        async with Probe() as probe:
            await probe.wait_converged(cluster, names)
            stop = asyncio.Event()
            rounds = 0

            async def writer(name: str, part: list[bytes]) -> None:
                nonlocal rounds
                r = redis_client(cluster, name)
                try:
                    n = 0
                    while not stop.is_set() or n < 4:
                        n += 1
                        batch = {k: b"%d" % n for k in part}
                        tried.update(dict.fromkeys(part, n))
                        for k in await set_many(r, batch, batch=100):
                            acked[k] = n
                        rounds = max(rounds, n)
                finally:
                    await r.aclose()

            half = len(keys) // 2
            writers = [
                asyncio.create_task(writer("n1", keys[:half])),
                asyncio.create_task(writer("n2", keys[half:])),
            ]
            await wait_for(lambda: rounds >= 2, timeout=20, interval=0.05, message="load")
            cluster.kill("n5")
            at_kill = rounds
            await wait_for(
                lambda: rounds >= at_kill + 3, timeout=30, interval=0.1, message="load on 4"
            )
            st = await probe.status(cluster["n1"].address)
            assert {m["id"]: m["state"] for m in st["members"]}["n5"] == "down"
            stop.set()
            await asyncio.gather(*writers)
            assert set(acked) == set(keys)  # 2 of 3 replicas up: W=2 is always reachable

            hinted = 0
            for n in names[:4]:
                hinted += (await probe.status(cluster[n].address))["hints"].get("n5", 0)
            assert hinted > 0  # n5's share of the writes waits on fallbacks

            await run_blocking(cluster.restart, "n5")
            await probe.wait_converged(cluster, names)
            await wait_for(
                lambda: probe.quiet(cluster, names), timeout=30, interval=0.3, message="hints"
            )
            for n in names:
                assert not any((await probe.status(cluster[n].address))["hints"].values())

            ring = ring_of(cluster, names, replicas=3)
            mine = [k for k in keys if "n5" in ring.owners(k)]
            assert mine
            await wait_for(
                lambda: _holds(probe, cluster["n5"].address, mine),
                timeout=30,
                interval=0.3,
                message="n5 holds its partitions again",
            )
            for name in ("n3", "n5"):
                r = redis_client(cluster, name)
                try:
                    got = await get_many(r, keys)
                finally:
                    await r.aclose()
                lost = [
                    k for k in keys if got[k] is None or not acked[k] <= int(got[k]) <= tried[k]
                ]
                assert lost == [], f"{len(lost)} acknowledged writes lost via {name}: {lost[:3]}"
            # n5's own replicas carry the last acknowledged values, not stale ones
            for k in mine[:50]:
                state = await probe.state(cluster["n5"].address, k)
                values = [int(item[0]) for _, _, items in state for item in items]
                assert max(values) >= acked[k]


async def _holds(probe: Probe, address: str, keys: list[bytes]) -> bool:
    held = await probe.held(address)
    return all(k in held for k in keys)


async def test_wiped_node_is_refilled_by_anti_entropy_alone(tmp_path: Path) -> None:
    names = ["n1", "n2", "n3", "n4"]
    cluster = LocalCluster(
        4,
        subnet="127.0.63",
        replicas=3,
        partitions=PARTITIONS,
        resp_port=RESP,
        extra_args=config_file(tmp_path, hints=False),
        artefacts=tmp_path,
    )
    with cluster:
        async with Probe() as probe:
            await probe.wait_converged(cluster, names)
            r = redis_client(cluster, "n1")
            try:
                before = {b"wa%05d" % i: b"a" for i in range(3_000)}
                assert await set_many(r, before) == set(before)
                cluster.kill("n4")
                await wait_for(
                    lambda: _down(probe, cluster, "n4"), timeout=10, interval=0.1, message="down"
                )
                # written while n4 is away: with hints off only anti-entropy can bring them
                during = {b"wb%05d" % i: b"b" for i in range(3_000)}
                assert await set_many(r, during) == set(during)
            finally:
                await r.aclose()
            for n in names[:3]:
                assert (await probe.status(cluster[n].address))["hints"] == {}

            await run_blocking(cluster.restart, "n4")  # memory only: it comes back empty
            ring = ring_of(cluster, names, replicas=3)
            everything = {**before, **during}
            mine = [k for k in everything if "n4" in ring.owners(k)]
            assert len(mine) > len(everything) // 2
            await wait_for(
                lambda: _holds(probe, cluster["n4"].address, mine),
                timeout=40,
                interval=0.5,
                message="anti-entropy refill of n4",
            )
            assert await placement_errors(probe, cluster, ring, everything, strays=False) == []
            for n in names:
                assert (await probe.status(cluster[n].address))["hints"] == {}


async def _down(probe: Probe, cluster: LocalCluster, name: str) -> bool:
    st = await probe.status(cluster["n1"].address)
    return {m["id"]: m["state"] for m in st["members"]}.get(name) == "down"


async def test_partitioned_concurrent_writes_heal_into_siblings(tmp_path: Path) -> None:
    names = ["n1", "n2", "n3"]
    cluster = LocalCluster(
        3,
        subnet="127.0.64",
        replicas=3,
        partitions=PARTITIONS,
        resp_port=RESP,
        http_port=8080,
        extra_args=["--testing", "--conflicts", "siblings", "--write-quorum", "1",
                    "--read-quorum", "1"],
        artefacts=tmp_path,
    )  # fmt: skip
    key = b"contested"
    with cluster:
        async with Probe() as probe, aiohttp.ClientSession() as http:
            await probe.wait_converged(cluster, names)

            async def faults(name: str, method: str, body: Any = None) -> None:
                url = f"http://{cluster[name].http}/admin/faults"
                async with http.request(method, url, json=body) as resp:
                    assert resp.status == 200, await resp.text()

            # n3 alone on one side, n1 and n2 on the other
            lone = cluster["n3"].address
            others = {cluster[n].address: 1.0 for n in ("n1", "n2")}
            await faults("n1", "POST", {"drop": {lone: 1.0}})
            await faults("n2", "POST", {"drop": {lone: 1.0}})
            await faults("n3", "POST", {"drop": others})
            await wait_for(
                lambda: _down(probe, cluster, "n3"), timeout=10, interval=0.1, message="split"
            )

            left, right = redis_client(cluster, "n1"), redis_client(cluster, "n3")
            try:
                assert await left.set(key, b"left")  # W=1: each side acknowledges
                assert await right.set(key, b"right")
                assert _values(await probe.state(cluster["n3"].address, key)) == {b"right"}
                assert _values(await probe.state(cluster["n1"].address, key)) == {b"left"}

                for n in names:
                    await faults(n, "DELETE")
                await probe.wait_converged(cluster, names)

                async def siblings_everywhere() -> bool:
                    await left.get(key)  # read repair joins what the replicas answer
                    await right.get(key)
                    for n in names:
                        if _values(await probe.state(cluster[n].address, key)) != {
                            b"left",
                            b"right",
                        }:
                            return False
                    return True

                await wait_for(siblings_everywhere, timeout=20, interval=0.3, message="siblings")
                # RESP shows one of them (last writer by HLC stamp); neither was lost
                assert await left.get(key) in (b"left", b"right")
            finally:
                await left.aclose()
                await right.aclose()


def _values(state: Any) -> set[bytes]:
    """The non-tombstone values of a replica-local DVV state."""
    if state is None:
        return set()
    return {item[0] for _, _, items in state for item in items if item[0] is not None}
