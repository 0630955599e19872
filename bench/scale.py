"""How the per-operation cost grows with the cluster: 1 -> 3 -> 5 nodes, and the ring.

Run: ``.venv/bin/python bench/scale.py`` (``--seconds 1`` for a quick run).

* **per-operation CPU** -- the embedded load of ``bench/kv.py`` (load
  generated inside every node process by the ``--testing`` ``bench`` peer
  op, 100-byte values, preloaded key space) at the *same total* number of
  outstanding operations on 1 node (N=1, R=W=1), 3 and 5 nodes (N=3,
  R=W=2). CPU per operation is the sum over all nodes of the process
  user+system time in the measured window divided by the operations done:
  with N=3 every operation costs the same replica work whatever the cluster
  size, so the figure should stay flat from 3 to 5 nodes (target: within
  20 %). The 1-node figure is the cost without replication.
* **ring** -- time to compute a ring (``Ring(nodes, partitions=Q,
  replicas=3)``, the work a node does on every membership change) for 10,
  100 and 1,000 nodes at Q=1024 and 4096, and the replica slots (partition,
  node) that move when one node joins ``n`` (ideal: ``Q*3/(n+1)``).

Prints rich tables and writes ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from _util import console, table, write_results
from kv import embedded
from peer_ring.ring import Ring, RingNode, diff
from ring import build_time, nodes


def ring_rows(sizes: list[int], qs: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for q in qs:
        for n in sizes:
            base = Ring(nodes(n), partitions=q, replicas=3)
            d = diff(base, base.with_node(RingNode("joiner")))
            rows.append(
                {
                    "nodes": n,
                    "partitions": q,
                    "build_ms": build_time(n, q, 0, repeat) * 1000.0,
                    "join_moved_slots": d.moved_slots,
                    "join_ideal_slots": q * 3 / (n + 1),
                    "join_moved_fraction": d.moved_fraction,
                    "join_moved_primaries": d.moved_primaries,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per case")
    ap.add_argument("--sizes", default="1,3,5", help="cluster sizes")
    ap.add_argument("--concurrency", type=int, default=64, help="total outstanding operations")
    ap.add_argument("--mixes", default="read-heavy,put,get")
    ap.add_argument("--keyspace", type=int, default=20_000)
    ap.add_argument("--ring-sizes", default="10,100,1000")
    ap.add_argument("--ring-partitions", default="1024,4096")
    ap.add_argument("--repeat", type=int, default=3, help="ring builds timed (median)")
    ap.add_argument("--no-cluster", action="store_true", help="only the ring part")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    if not args.no_cluster:
        rows = embedded(
            [int(x) for x in args.sizes.split(",")],
            [args.concurrency],
            args.mixes.split(","),
            args.seconds,
            args.warmup,
            args.keyspace,
        )
        results["embedded"] = rows
        by_mix: dict[str, dict[int, float]] = {}
        for r in rows:
            by_mix.setdefault(r["mix"], {})[r["nodes"]] = r["cpu_us_per_op"]
        cols = ["mix", *(f"{n} nodes µs/op" for n in sorted({r["nodes"] for r in rows})),
                "5 vs 3 nodes"]  # fmt: skip
        data = []
        for mix, per in by_mix.items():
            ratio = per[5] / per[3] if 3 in per and 5 in per else float("nan")
            data.append((mix, *(per[n] for n in sorted(per)), ratio))
        results["cpu_ratio_5_vs_3"] = {m: d[-1] for m, d in zip(by_mix, data, strict=True)}
        console.print(table("CPU per operation (all nodes), same total load", cols, data))
        console.print(
            table(
                "Throughput and latency",
                ["nodes", "mix", "ops/s", "p50 ms", "p99 ms", "CPU µs/op", "of which system"],
                [
                    (
                        r["nodes"],
                        r["mix"],
                        r["ops_s"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["cpu_us_per_op"],
                        r["sys_us_per_op"],
                    )
                    for r in rows
                ],
            )
        )
    rrows = ring_rows(
        [int(x) for x in args.ring_sizes.split(",")],
        [int(x) for x in args.ring_partitions.split(",")],
        args.repeat,
    )
    results["ring"] = rrows
    console.print(
        table(
            "Ring computation and movement on one join (N=3)",
            ["nodes", "Q", "build ms", "slots moved", "ideal", "moved fraction", "primaries moved"],
            [
                (
                    r["nodes"],
                    r["partitions"],
                    r["build_ms"],
                    r["join_moved_slots"],
                    r["join_ideal_slots"],
                    r["join_moved_fraction"],
                    r["join_moved_primaries"],
                )
                for r in rrows
            ],
        )
    )
    console.print(f"results: {write_results('scale', results)}")


if __name__ == "__main__":
    main()
