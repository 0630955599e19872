"""A KV cluster on the in-memory transport: N nodes, one KVStore each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from peer_ring.apps.kv.store import KVConfig, KVStore
from peer_ring.clock import ManualClock
from peer_ring.config import NodeConfig, ReplicationConfig
from peer_ring.node import Node
from peer_ring.transport.base import TransportConfig
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for


def address(i: int) -> str:
    return f"10.0.0.{i}:7400"


def node_config(
    i: int, *, replicas: int = 3, partitions: int = 64, max_in_flight: int = 65_536
) -> NodeConfig:
    return NodeConfig.local(
        f"n{i}",
        listen=address(i),
        transport="memory",
        seeds=(address(1),),
        replication=ReplicationConfig(
            partitions=partitions,
            replicas=replicas,
            read_quorum=min(2, replicas),
            write_quorum=min(2, replicas),
        ),
        transport_config=TransportConfig(
            request_timeout=1.0, connect_timeout=0.5, max_in_flight=max_in_flight
        ),
    )


@dataclass
class KVCluster:
    net: MemoryNetwork
    nodes: list[Node]
    stores: list[KVStore]
    clock: ManualClock = field(default_factory=ManualClock)

    def store_of(self, node_id: str) -> KVStore:
        for node, store in zip(self.nodes, self.stores, strict=True):
            if node.id == node_id:
                return store
        raise KeyError(node_id)

    def node_of(self, store: KVStore) -> Node:
        """The node ``store`` is registered on (stores know only their AppContext)."""
        return next(n for n in self.nodes if n.id == store.app.node_id)

    def replicas(self, key: bytes) -> list[KVStore]:
        """The stores of ``key``'s preference list, in preference order."""
        ring = self.nodes[0].ring
        return [self.store_of(nid) for nid in ring.preference_list(ring.partition_for(key))]

    def non_replica(self, key: bytes) -> KVStore:
        owners = set(self.nodes[0].ring.owners(key))
        return next(s for s in self.stores if s.app.node_id not in owners)

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))


ClusterFactory = Callable[..., Awaitable[KVCluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[ClusterFactory]:
    """``await make_cluster(size=3, config=KVConfig(...), replicas=3)``."""
    made: list[KVCluster] = []

    async def factory(size: int = 3, config: KVConfig | None = None, **kw: Any) -> KVCluster:
        net = MemoryNetwork()
        clock = ManualClock(wall_start=1_700_000_000.0)
        nodes = [Node(node_config(i, **kw), network=net) for i in range(1, size + 1)]
        stores = [KVStore(config=config, clock=clock) for _ in nodes]
        for node, store in zip(nodes, stores, strict=True):
            node.register(store)
        cluster = KVCluster(net, nodes, stores, clock)
        made.append(cluster)
        await asyncio.gather(*(n.start() for n in nodes))
        await wait_for(
            lambda: all(len(n.ring.node_ids) == size for n in nodes), message="membership spread"
        )
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        return cluster

    yield factory
    for cluster in made:
        await cluster.stop()


@pytest.fixture
async def kv3(make_cluster: ClusterFactory) -> KVCluster:
    return await make_cluster(3)
