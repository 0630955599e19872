"""CPU per embedded KV operation, in one process: a load-insensitive A/B figure.

Three nodes (``--nodes``: another count) on the in-memory network
(``MemoryNetwork``) in this process, N=3 R=W=2, in the conflict mode node
processes run (``--conflicts``, default ``lww``: one value per key; with
``siblings`` every blind put of the run stays a sibling, up to
``KVConfig.max_siblings``, so each put ships and joins many values), run a
fixed number of ``get`` and ``put`` operations with a fixed number outstanding; the figure
is the process's CPU time (user+system) per operation. Nothing else shares
the measured process, so a busy machine slows the run but changes its CPU
per operation little (caches and frequency aside) -- unlike throughput over
loopback, which swings by tens of percent when other processes compete for
the two cores.

Uses only the public API, so the same file measures an older build too::

    OLD/.venv/bin/python bench/kv_cpu.py --label old
    .venv/bin/python bench/kv_cpu.py --label new

(alternate the two a few times; ``--rounds`` repeats inside one run and
reports the median). Bounded: ``--ops`` per mix and round. ``--batch K``
measures ``put_many``/``get_many`` of K keys (CPU per key).

A figure no other process can move: instructions per operation under
callgrind, from two runs that differ only in ``--ops`` (the difference
removes start-up and preload)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/kv_cpu.py --mixes get --rounds 1 --ops 2000
    # the same with --ops 6000; (Ir(6000) - Ir(2000)) / 4000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import time

from peer_ring import Node, NodeConfig, ReplicationConfig
from peer_ring.apps.kv import KVConfig, KVStore
from peer_ring.config import FailureDetectorConfig, HandoffConfig, TransportConfig
from peer_ring.transport.memory import MemoryNetwork

#: ``--patient``: failure detection, timeouts and background rounds slowed far
#: below the operations' pace, so that a run under valgrind (about 50x slower)
#: sees no false failure and little timer-driven work: the operations' own
#: path is what gets counted. Anti-entropy is off and the member sync, hint,
#: reap and KV sweep loops run rarely: their work grows with a run's wall
#: time, which valgrind stretches by a different factor from run to run (with
#: anti-entropy on, the digest refreshes of the keys that puts changed made
#: the instructions per put of one tree differ by +-10 % between runs).
PATIENT: dict[str, object] = {
    "failure": FailureDetectorConfig(ping_interval=30.0, ping_timeout=60.0, failures_to_down=3),
    "transport_config": TransportConfig(request_timeout=120.0, connect_timeout=60.0),
    "member_sync_interval": 30.0,
    "discovery_start_timeout": 600.0,
    "handoff": HandoffConfig(
        ae_partitions_per_second=0.0, hint_interval=60.0, reap_interval=60.0, sweep_interval=600.0
    ),
}
#: ``--patient``: the KV store's expiry sweep, rarely (no key of the run expires).
PATIENT_KV = KVConfig(sweep_interval=600.0)


async def cluster(
    patient: bool = False, size: int = 3, conflicts: str = "lww"
) -> tuple[list[Node], list[KVStore]]:
    net = MemoryNetwork()
    nodes = [
        Node(
            NodeConfig.local(
                f"n{i}",
                listen=f"10.7.0.{i}:7400",
                transport="memory",
                seeds=("10.7.0.1:7400",),
                replication=ReplicationConfig(partitions=256, replicas=3),
                **(PATIENT if patient else {}),
            ),
            network=net,
        )
        for i in range(1, size + 1)
    ]
    kv = dataclasses.replace(PATIENT_KV if patient else KVConfig(), conflicts=conflicts)
    stores = [n.register(KVStore(config=kv)) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await asyncio.gather(*(n.wait_ready(600.0 if patient else 30.0) for n in nodes))
    return nodes, stores


async def run(stores: list[KVStore], mix: str, ops: int, outstanding: int, batch: int = 1) -> float:
    """CPU µs per operation of ``ops`` operations, ``outstanding`` at a time;
    with ``batch`` K > 1 each call is a ``put_many``/``get_many`` of K keys
    (an operation is a key)."""
    keys = [f"k{i}".encode() for i in range(2000)]
    value = b"v" * 100
    todo = iter(range(0, ops, batch))

    async def worker(w: int) -> None:
        store = stores[w % len(stores)]
        for i in todo:
            if batch > 1:
                some = [keys[(i + j) % len(keys)] for j in range(batch)]
                if mix == "put":
                    await store.put_many([(k, value) for k in some])
                else:
                    await store.get_many(some)
                continue
            key = keys[i % len(keys)]
            if mix == "put":
                await store.put(key, value)
            else:
                await store.get(key)

    start = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(outstanding)))
    return (time.process_time() - start) / ops * 1e6


def callgrind_dump(name: str) -> None:
    """Under callgrind: write the counts since the last dump to ``OUT.N`` (zeroing
    them), so that a window's instructions can be read alone; returns once written."""
    subprocess.run(["callgrind_control", "-d", name, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


async def main(a: argparse.Namespace) -> dict[str, float]:
    nodes, stores = await cluster(a.patient, a.nodes, a.conflicts)
    try:
        await run(stores, "put", 4000, a.outstanding)  # preload and warm up
        mixes = a.mixes.split(",")
        out: dict[str, list[float]] = {mix: [] for mix in mixes}
        if a.callgrind_window:
            callgrind_dump("before-window")
        for _ in range(a.rounds):
            for mix in mixes:
                out[mix].append(await run(stores, mix, a.ops, a.outstanding, a.batch))
        if a.callgrind_window:
            callgrind_dump("window")
        return {f"{mix} cpu_us_per_op": statistics.median(v) for mix, v in out.items()}
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=20_000, help="operations per mix and round")
    ap.add_argument("--outstanding", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--label", default="")
    ap.add_argument("--patient", action="store_true", help="slow timers (runs under valgrind)")
    ap.add_argument("--mixes", default="put,get", help="of put, get (callgrind: one at a time)")
    ap.add_argument("--batch", type=int, default=1, help="keys per put_many/get_many call")
    ap.add_argument(
        "--uvloop",
        action="store_true",
        help="run on uvloop (as nodes do): the loop's own work is C, not interpreted Python "
        "whose amount varies with how many callbacks each loop pass finds ready",
    )
    ap.add_argument(
        "--callgrind-window",
        action="store_true",
        help="under callgrind: dump the counts before and after the measured operations "
        "(OUT.1: start-up and preload, OUT.2: the operations alone; bench/kv_instructions.py)",
    )
    ap.add_argument(
        "--nodes", type=int, default=3, help="nodes (N=3 of them; 1: a one-node cluster)"
    )
    ap.add_argument(
        "--conflicts",
        choices=("lww", "siblings"),
        default="lww",
        help="the stores' conflict mode: lww, as node processes (and bench/kv.py --embedded) "
        "run by default; siblings keeps every blind put as a sibling (up to max_siblings)",
    )
    args = ap.parse_args()
    if not (1 <= args.ops <= 1_000_000 and 1 <= args.rounds <= 20):
        ap.error("--ops 1..1e6, --rounds 1..20")
    if not set(args.mixes.split(",")) <= {"put", "get"}:
        ap.error("--mixes takes put, get or put,get")
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(json.dumps({"label": args.label, "batch": args.batch, **asyncio.run(main(args))}))
