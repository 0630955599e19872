"""Benchmark of peer_ring.ring: build time, balance, movement, lookup cost.

Run: ``.venv/bin/python bench/ring.py`` (add ``--quick`` for one repetition).
Prints rich tables and writes ``bench/results/ring.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from peer_ring.ring import LOAD_FACTOR, PRIMARY_LOAD_FACTOR, Ring, RingNode, diff

RESULTS = Path(__file__).resolve().parent / "results" / "ring.json"


def nodes(n: int, zones: int = 0, prefix: str = "node") -> list[RingNode]:
    return [RingNode(f"{prefix}-{i:04d}", f"az-{i % zones}" if zones else None) for i in range(n)]


def build_time(n: int, q: int, zones: int, repeat: int) -> float:
    members = nodes(n, zones)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        Ring(members, partitions=q, replicas=3)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def balance(ring: Ring) -> dict[str, float]:
    n = len(ring.nodes)
    prim = [len(ring.primaries_of(x.id)) for x in ring.nodes]
    slots = [len(ring.partitions_of(x.id)) for x in ring.nodes]
    avg_p = ring.partitions / n
    avg_s = ring.partitions * min(ring.replicas, n) / n
    return {
        "max_primary_over_avg": max(prim) / avg_p,
        "min_primary_over_avg": min(prim) / avg_p,
        "max_slots_over_avg": max(slots) / avg_s,
        "min_slots_over_avg": min(slots) / avg_s,
    }


def movement(n: int, q: int, zones: int) -> dict[str, float]:
    base = Ring(nodes(n, zones), partitions=q, replicas=3)
    joined = base.with_node(RingNode("joiner", "az-0" if zones else None))
    left = base.without_node(base.nodes[n // 2].id)
    d_join = diff(base, joined)
    d_leave = diff(base, left)
    return {
        "join_moved": d_join.moved_fraction,
        "join_ideal": 1 / (n + 1),
        "join_ratio": d_join.moved_fraction * (n + 1),
        "join_primaries_ratio": d_join.moved_primaries / q * (n + 1),
        "leave_moved": d_leave.moved_fraction,
        "leave_ideal": 1 / n,
        "leave_ratio": d_leave.moved_fraction * n,
        "leave_primaries_ratio": d_leave.moved_primaries / q * n,
    }


def sweep(clusters: int, seed: int = 1) -> dict[str, float]:
    """Worst join and leave movement (x ideal) over random clusters of 3-50 nodes."""
    rng = random.Random(seed)
    worst = {"join": 0.0, "leave": 0.0}
    for _ in range(clusters):
        n = rng.randint(3, 50)
        ids = [f"{rng.getrandbits(48):012x}" for _ in range(n)]
        base = Ring([RingNode(i) for i in ids], partitions=1024, replicas=3)
        joined = base.with_node(RingNode(f"{rng.getrandbits(48):012x}-new"))
        left = base.without_node(rng.choice(ids))
        worst["join"] = max(worst["join"], diff(base, joined).moved_fraction * (n + 1))
        worst["leave"] = max(worst["leave"], diff(base, left).moved_fraction * n)
    return worst


def lookup_ns(ring: Ring, count: int = 200_000) -> dict[str, float]:
    keys = [f"user:{i}".encode() for i in range(count)]
    owners = ring.owners
    partition_for = ring.partition_for
    start = time.perf_counter()
    for k in keys:
        partition_for(k)
    t_part = time.perf_counter() - start
    start = time.perf_counter()
    for k in keys:
        owners(k)
    t_own = time.perf_counter() - start
    return {"partition_for_ns": t_part / count * 1e9, "owners_ns": t_own / count * 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repetition per timing")
    parser.add_argument(
        "--sweep",
        type=int,
        default=150,
        metavar="K",
        help="random equal-weight clusters of 3-50 nodes for the worst-case movement",
    )
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else 5
    console = Console()
    out: dict[str, Any] = {
        "command": "python bench/ring.py" + (" --quick" if args.quick else ""),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "load_factor": LOAD_FACTOR,
        "primary_load_factor": PRIMARY_LOAD_FACTOR,
        "build": [],
        "balance": [],
        "movement": [],
    }

    t = Table(title="Ring build time (N=3, median)")
    for col in ("nodes", "zones", "Q=1024", "Q=4096"):
        t.add_column(col, justify="right")
    for n in (10, 100, 1000):
        for zones in (0, 3):
            row: dict[str, Any] = {"nodes": n, "zones": zones}
            for q in (1024, 4096):
                row[f"q{q}_ms"] = build_time(n, q, zones, repeat) * 1e3
            out["build"].append(row)
            t.add_row(str(n), str(zones), f"{row['q1024_ms']:.1f} ms", f"{row['q4096_ms']:.1f} ms")
    console.print(t)

    t = Table(title="Load balance, equal weights (max or min over avg; Q=1024, N=3)")
    for col in ("nodes", "max prim", "min prim", "max slots", "min slots"):
        t.add_column(col, justify="right")
    for n in (3, 5, 10, 20, 50, 100):
        b = balance(Ring(nodes(n), partitions=1024, replicas=3))
        out["balance"].append({"nodes": n, **b})
        t.add_row(
            str(n),
            f"{b['max_primary_over_avg']:.3f}",
            f"{b['min_primary_over_avg']:.3f}",
            f"{b['max_slots_over_avg']:.3f}",
            f"{b['min_slots_over_avg']:.3f}",
        )
    console.print(t)

    t = Table(
        title="Fraction of replica slots moved when one node joins / leaves n nodes "
        "(Q=1024, N=3); /ideal = moved x (n+1) resp. x n; prim = same ratio for primaries"
    )
    for col in ("n", "zones", "join", "/ideal", "leave", "/ideal", "prim j", "prim l"):
        t.add_column(col, justify="right")
    for zones in (0, 3):
        for n in (3, 5, 10, 50, 100):
            if zones and n < zones:
                continue
            m = movement(n, 1024, zones)
            out["movement"].append({"nodes": n, "zones": zones, **m})
            t.add_row(
                str(n),
                str(zones),
                f"{m['join_moved']:.4f}",
                f"{m['join_ratio']:.3f}",
                f"{m['leave_moved']:.4f}",
                f"{m['leave_ratio']:.3f}",
                f"{m['join_primaries_ratio']:.2f}",
                f"{m['leave_primaries_ratio']:.2f}",
            )
    console.print(t)

    worst = sweep(args.sweep)
    out["sweep"] = worst
    console.print(
        f"{args.sweep} random clusters of 3-50 nodes (random ids, Q=1024, N=3): worst join "
        f"{worst['join']:.3f}x and worst leave {worst['leave']:.3f}x the ideal movement"
    )
    big = build_time(1000, 65536, 0, 1)
    out["q65536_1000_nodes_s"] = big
    console.print(f"build time, 1,000 nodes at Q=65536: {big:.2f} s")

    lk = lookup_ns(Ring(nodes(10), partitions=1024, replicas=3))
    out["lookup"] = lk
    console.print(
        f"hot path: partition_for {lk['partition_for_ns']:.0f} ns/key, "
        f"owners {lk['owners_ns']:.0f} ns/key (10-byte keys, loop overhead included)"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
