"""Full `peer-ring node` processes finding each other through real etcd and ZooKeeper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.servers import (
    EtcdServer,
    ZooKeeperServer,
    etcd_missing,
    zookeeper_missing,
)
from tests.conftest import wait_for
from tests.integration._cluster import states, status, wait_one_ring

pytestmark = pytest.mark.integration


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    reason = etcd_missing()
    if reason:
        pytest.skip(reason)
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
def zookeeper(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    reason = zookeeper_missing()
    if reason:
        pytest.skip(reason)
    with ZooKeeperServer(tmp_path / "zk") as server:
        yield server


async def _find_each_other_and_drop_the_dead(cluster: LocalCluster, deadline: float) -> None:
    a1 = cluster["n1"].address

    await wait_one_ring(cluster, timeout=30)  # through the registry
    cluster.kill("n3")

    async def n3_removed() -> bool:
        return "n3" not in states(await status(a1))

    await wait_for(n3_removed, timeout=deadline, interval=0.2, message="n3's registration gone")
    cluster.restart("n3")

    async def n3_back() -> bool:
        return states(await status(a1)).get("n3") == "up"

    await wait_for(n3_back, timeout=30, interval=0.2, message="n3 registered again")


async def test_nodes_discover_each_other_through_etcd(etcd: EtcdServer, tmp_path: Path) -> None:
    with LocalCluster(
        3,
        subnet="127.0.70",
        partitions=64,
        extra_args=["--discovery", "etcd", "--etcd", etcd.endpoint, "--etcd-prefix", "/t/nodes"],
        artefacts=tmp_path / "nodes",
    ) as cluster:
        # default lease TTL is 10 s: the dead node's key expires within it
        await _find_each_other_and_drop_the_dead(cluster, deadline=30)


async def test_nodes_discover_each_other_through_zookeeper(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    with LocalCluster(
        3,
        subnet="127.0.71",
        partitions=64,
        extra_args=["--discovery", "zookeeper", "--zookeeper", zookeeper.hosts,
                    "--zk-path", "/t/nodes"],
        artefacts=tmp_path / "nodes",
    ) as cluster:  # fmt: skip
        # default session timeout is 10 s: the dead node's znode goes within it
        await _find_each_other_and_drop_the_dead(cluster, deadline=30)
