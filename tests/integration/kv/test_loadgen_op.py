"""The ``bench`` peer op of node processes: answered with ``--testing`` only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer_ring.errors import UnknownCommand
from peer_ring.testing.cluster import LocalCluster
from peer_ring.transport.base import TransportConfig
from peer_ring.transport.tcp import TcpTransport
from tests.integration._cluster import wait_one_ring

pytestmark = pytest.mark.integration

SPEC = {"seconds": 5.0, "warmup": 0.0, "ops": 200, "concurrency": 2, "keyspace": 20,
        "preload": [0, 20]}  # fmt: skip


async def _ask(address: str, message: list[Any]) -> Any:
    client = TcpTransport("probe", "127.0.0.1:0", TransportConfig(request_timeout=20.0))
    await client.start()
    try:
        return await client.request(address, message)
    finally:
        await client.close()


@pytest.fixture(params=[True, False], ids=["testing", "production"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LocalCluster, bool]]:
    testing: bool = request.param
    with LocalCluster(
        1,
        subnet="127.0.48" if testing else "127.0.49",
        replicas=1,
        partitions=16,
        extra_args=["--testing"] if testing else [],
        artefacts=tmp_path,
    ) as c:
        yield c, testing


async def test_bench_op_runs_only_on_a_testing_node(node: tuple[LocalCluster, bool]) -> None:
    cluster, testing = node
    await wait_one_ring(cluster)
    address = cluster["n1"].address
    if not testing:
        with pytest.raises(UnknownCommand, match="unknown peer operation 'bench'"):
            await _ask(address, ["bench", SPEC])
        return
    answer = await _ask(address, ["bench", SPEC])
    assert 200 <= answer["ops"] < 202
    assert answer["hit"] == answer["get"]
    assert answer["errors"] == {}
