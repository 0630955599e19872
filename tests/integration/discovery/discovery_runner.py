"""Run one discovery instance in its own process until killed (test helper).

Usage: ``python discovery_runner.py etcd|zookeeper REGISTRY PATH ID ADDRESS TIMEOUT``.
Prints ``READY`` once started, then waits. The test kills it with SIGKILL:
nothing is deregistered, exactly like a crashed node.
"""

from __future__ import annotations

import asyncio
import sys

from peer_ring.membership.base import Discovery, Member


async def main(
    backend: str, registry: str, path: str, node_id: str, address: str, ttl: str
) -> None:
    discovery: Discovery
    if backend == "etcd":
        from peer_ring.membership.etcd import EtcdConfig, EtcdDiscovery

        discovery = EtcdDiscovery(
            EtcdConfig.from_options(registry, path, lease_ttl=int(ttl), retry_max=1.0)
        )
    else:
        from peer_ring.membership.zookeeper import ZooKeeperConfig, ZooKeeperDiscovery

        discovery = ZooKeeperDiscovery(
            ZooKeeperConfig.from_options(registry, path, session_timeout=float(ttl), retry_max=1.0)
        )
    await discovery.start(Member(node_id, address))
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
