"""A work queue on replicated streams: producers add jobs, workers on three
nodes consume them through one consumer group and acknowledge each, and a
worker that dies holding jobs has them claimed by another.

Run it: ``python examples/work_queue.py`` (three nodes in one process, on
the in-memory network; the same code runs on real nodes). Explained in
``docs/streams.md``; ``tests/examples/test_work_queue.py`` runs it.
"""

from __future__ import annotations

import asyncio
import contextlib

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.streams import Entry, Streams
from peer_ring.transport.memory import MemoryNetwork

JOBS = b"jobs"


# --8<-- [start:worker]
async def worker(
    streams: Streams,
    name: str,
    done: list[bytes],
    crash_at: int = 0,
    all_done: asyncio.Event | None = None,
    total: int = 0,
) -> None:
    """Process jobs one at a time for ever; ``crash_at`` > 0: die (without
    acknowledging) when given that many-th job."""
    seen = 0
    async for entry in streams.group(JOBS, "workers").consume(name, count=1, block=0.5):
        seen += 1
        if seen == crash_at:
            return  # dies holding this entry: it stays pending for `name`
        done.append(entry.fields[b"job"])
        await entry.ack()
        if all_done is not None and len(done) >= total:
            all_done.set()


# --8<-- [end:worker]
# --8<-- [start:rescue]
async def rescue(streams: Streams, name: str, done: list[bytes], idle: float) -> None:
    """Claim jobs pending longer than ``idle`` seconds (a dead worker's) and finish them."""
    entries: list[Entry] = await streams.group(JOBS, "workers").claim(name, min_idle=idle)
    for entry in entries:
        done.append(entry.fields[b"job"])
        await entry.ack()


# --8<-- [end:rescue]
async def main(jobs: int = 30) -> list[bytes]:
    net = MemoryNetwork()
    nodes = [
        Node(
            NodeConfig.local(
                f"n{i}",
                listen=f"10.9.0.{i}:7400",
                transport="memory",
                seeds=("10.9.0.1:7400",),
                replication=ReplicationConfig(partitions=32, replicas=3),
            ),
            network=net,
        )
        for i in (1, 2, 3)
    ]
    services = [n.register(Streams()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        await asyncio.gather(*(n.wait_ready() for n in nodes))
        await services[0].group(JOBS, "workers").create("0")
        for i in range(jobs):  # acknowledged once W=2 of the 3 replicas hold each job
            await services[i % 3].add(JOBS, {"job": f"job-{i}"})
        done: list[bytes] = []
        await worker(services[2], "crashy", done, crash_at=3)  # does two jobs, dies on the third
        all_done = asyncio.Event()  # every job but the one the crashed worker held
        tasks = [
            asyncio.create_task(worker(services[i], f"w{i}", done, 0, all_done, jobs - 1))
            for i in (0, 1)
        ]
        await asyncio.wait_for(all_done.wait(), 30)
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await rescue(services[1], "rescuer", done, idle=0.0)
        return done
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


if __name__ == "__main__":
    finished = asyncio.run(main())
    print(f"{len(finished)} jobs done, {len(set(finished))} distinct")
