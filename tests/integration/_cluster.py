"""Helpers shared by the process-level tests: node status and ring convergence."""

from __future__ import annotations

from typing import Any

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import node_status
from tests.conftest import wait_for


def transport_of(cluster: LocalCluster) -> str:
    """The ``--transport`` the cluster's nodes were started with."""
    args = next(iter(cluster.nodes.values())).args
    return args[args.index("--transport") + 1] if "--transport" in args else "tcp"


async def status(address: str, transport: str = "tcp") -> dict[str, Any]:
    return await node_status(address, timeout=2.0, transport=transport)


def states(st: dict[str, Any]) -> dict[str, str]:
    """Member id -> state (up/down/...) from a status map."""
    return {m["id"]: m["state"] for m in st["members"]}


async def wait_one_ring(cluster: LocalCluster, timeout: float = 20.0) -> None:
    """Await every running node seeing every node of the cluster, with one epoch."""
    transport = transport_of(cluster)
    size = len(cluster.nodes)

    async def one_ring() -> bool:
        sts = [await status(n.address, transport) for n in cluster.nodes.values() if n.running]
        return all(len(s["members"]) == size for s in sts) and len({s["epoch"] for s in sts}) == 1

    await wait_for(one_ring, timeout=timeout, interval=0.2, message=f"{size} members, one epoch")
