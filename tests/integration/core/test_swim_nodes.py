"""Full nodes with `--discovery swim`: gossip forms the ring, a crash leaves it."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer_ring.testing.cluster import LocalCluster
from tests.conftest import wait_for
from tests.integration._cluster import states, status, wait_one_ring

pytestmark = pytest.mark.integration


async def test_swim_nodes_form_one_ring_and_drop_a_killed_node(tmp_path: Path) -> None:
    subnet = "127.0.12"
    seeds = f"{subnet}.2:7946"
    with LocalCluster(
        3,
        subnet=subnet,
        extra_args=["--discovery", "swim", "--gossip-label", "test", "--seeds", seeds],
        artefacts=tmp_path,
    ) as cluster:
        a1 = cluster["n1"].address

        await wait_one_ring(cluster)  # over gossip
        cluster.kill("n3")

        async def n3_gone() -> bool:
            return "n3" not in states(await status(a1))

        await wait_for(n3_gone, timeout=20, interval=0.2, message="n3 declared dead by SWIM")


async def test_swim_seeds_given_as_peer_addresses_still_form_the_ring(tmp_path: Path) -> None:
    """A user passes --seeds HOST:7400 (the peer port, as with static discovery):
    the node says so and gossips with that host's gossip port instead."""
    subnet = "127.0.13"
    with LocalCluster(  # LocalCluster's own --seeds are peer addresses
        3,
        subnet=subnet,
        extra_args=["--discovery", "swim", "--gossip-label", "test"],
        artefacts=tmp_path,
    ) as cluster:
        assert f"{subnet}.2:7400" in cluster["n2"].args
        await wait_one_ring(cluster)
        log = cluster["n2"].log_path.read_text()
        assert f"--seeds {subnet}.2:7400 are peer (--listen) addresses" in log
        assert f"used as {subnet}.2:7946" in log
