"""Rate limiter: decisions/s and latency against the `limits` library, and accuracy.

Side by side in one run, the same client concurrency, one hot key:

* ``limits`` (async API, redis-py) with a local ``redis-server`` as storage,
  strategies ``sliding-window-counter`` and ``moving-window`` -- what Python
  users pick today. The server is started on 127.77.2.1 and stopped by PID.
* peer-ring ``exact`` on a 3-node cluster of real node processes
  (127.77.2.2-4): clients spread over the nodes send RESP ``CL.THROTTLE``
  with the same client library (redis-py asyncio), each decision made at the
  key's owner.
* peer-ring ``exact`` embedded in the application's process, the way the
  limiter is meant to be deployed: that process is one node (TCP) of a
  3-node cluster whose other two nodes are processes (127.77.2.5-6), and the
  hot key is owned by another process, so every decision takes one peer
  round trip.
* peer-ring ``lease`` in one process: a 3-node cluster on the memory
  transport, the clients embedded (``limiter.hit(..., mode="lease")``) on
  one node; decisions come from the node's quota slices.
* peer-ring ``exact`` embedded the same way, for reference.

Each case runs ``--warmup`` then ``--seconds`` of closed-loop clients
(``--concurrency`` tasks); figures are decisions/s, decisions per CPU-second
of the bench process (meaningful for the embedded cases, whose whole cluster
runs in it; on a shared machine it shows what a free core would do) and
p50/p99 latency (ms).
Accuracy: the embedded cases count admitted hits with the checker of
``tests/fault`` (``peer_ring.testing.ratelimit_checker``) against a fixed
window: admitted must not exceed the limit. An admission whose request was
sent in one window and answered in the next is counted in neither (the
client cannot know which window decided it) and reported as straddling.

Targets (docs/benchmarks.md): exact on 3 nodes >= 2x ``limits`` with p99 <= 5 ms;
lease >= 200,000 decisions/s in one process on a hot key.

Run (inside a private network namespace on a shared machine)::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/ratelimit.py'
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import console, percentiles, table, write_results
from peer_ring.testing.ratelimit_checker import AccuracyChecker

Decide = Callable[[], Awaitable[bool]]


async def closed_loop(
    decide: Decide, concurrency: int, warmup: float, seconds: float
) -> dict[str, Any]:
    """``concurrency`` tasks calling ``decide`` back to back; figures of the window."""
    lat: list[float] = []
    counts = {"ops": 0, "allowed": 0, "errors": 0}
    t_start = time.perf_counter()
    begin = t_start + warmup
    cpu: dict[str, float] = {}
    end = begin + seconds

    async def worker() -> None:
        n = 0
        while True:
            t = time.perf_counter()
            if t >= end:
                return
            try:
                ok = await decide()
            except Exception:  # counted, never fatal to the bench
                ok = None
            t2 = time.perf_counter()
            n += 1
            if n % 256 == 0:
                await asyncio.sleep(0)  # a decision that never suspends must still yield
            if t < begin:
                continue
            if "start" not in cpu:
                cpu["start"] = time.process_time()
            counts["ops"] += 1
            if ok is None:
                counts["errors"] += 1
            elif ok:
                counts["allowed"] += 1
            lat.append((t2 - t) * 1000.0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    used = time.process_time() - cpu.get("start", time.process_time())
    p = percentiles(lat, (50.0, 99.0))
    return {
        "decisions_per_s": counts["ops"] / seconds,
        # this process's CPU (the embedded cases run the whole cluster in it)
        "decisions_per_cpu_s": counts["ops"] / used if used > 0 else 0.0,
        "p50_ms": p["p50"],
        "p99_ms": p["p99"],
        **counts,
    }


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process used so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def with_node_cpu(
    cluster: Any, run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """``run()``'s figures plus each node process's CPU use during it (cores)."""
    pids = {name: n.pid for name, n in cluster.nodes.items()}
    before = {name: proc_cpu(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    out = await run()
    wall = time.perf_counter() - t0
    out["node_cpu"] = {
        name: round((proc_cpu(pid) - before[name]) / wall, 2) for name, pid in pids.items()
    }
    return out


# -- limits + redis-server ------------------------------------------------------------


async def bench_limits(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    from limits import RateLimitItemPerSecond
    from limits.aio import strategies
    from limits.aio.storage import RedisStorage

    storage = RedisStorage("async+redis://127.77.2.1:6390", implementation="redispy")
    cls = {
        "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
        "moving-window": strategies.MovingWindowRateLimiter,
    }[strategy]
    limiter = cls(storage)
    item = RateLimitItemPerSecond(args.limit)

    async def decide() -> bool:
        return bool(await limiter.hit(item, "hot"))

    try:
        return await closed_loop(decide, args.concurrency, args.warmup, args.seconds)
    finally:
        await storage.reset()


async def one_ring(cluster: Any, timeout: float = 30.0) -> None:
    """Wait until every node of ``cluster`` sees all of them under one ring epoch."""
    from peer_ring.testing.faults import node_status

    addresses = [n.address for n in cluster.nodes.values()]
    deadline = time.monotonic() + timeout
    while True:
        try:
            sts = [await node_status(a) for a in addresses]
            if all(len(s["members"]) == len(addresses) for s in sts) and (
                len({s["epoch"] for s in sts}) == 1
            ):
                return
        except Exception:  # a node not answering yet: ask again
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the nodes did not agree on one ring in {timeout} s")
        await asyncio.sleep(0.1)  # poll interval, not a stand-in for the condition


# -- peer-ring exact over RESP ----------------------------------------------------------


async def bench_exact_resp(args: argparse.Namespace, ips: list[str]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    clients = [aioredis.Redis(host=ip, port=6391) for ip in ips]
    i = 0

    async def decide() -> bool:
        nonlocal i
        i += 1
        c = clients[i % len(clients)]
        reply = await c.execute_command("CL.THROTTLE", "hot", args.limit, args.limit, 1)
        return bool(reply[0] == 0)

    try:
        return await closed_loop(decide, args.concurrency, args.warmup, args.seconds)
    finally:
        for c in clients:
            await c.aclose()


# -- peer-ring embedded (memory transport, one process) -----------------------------------


async def memory_limiters(mode: str, lease_max_slice: int) -> tuple[list[Any], list[Any]]:
    """Three started, ready nodes on one in-memory network, each with a
    ``RateLimiter`` in ``mode`` (the embedded cases; ``bench/ratelimit_cpu.py``).
    The caller stops the nodes."""
    from peer_ring import Node, NodeConfig, ReplicationConfig
    from peer_ring.apps.ratelimit import RateLimiter, RateLimiterConfig
    from peer_ring.transport.memory import MemoryNetwork

    net = MemoryNetwork()
    nodes = [
        Node(
            NodeConfig.local(
                f"b{i}",
                listen=f"10.9.0.{i}:7400",
                transport="memory",
                seeds=("10.9.0.1:7400",),
                replication=ReplicationConfig(partitions=64, replicas=3),
            ),
            network=net,
        )
        for i in (1, 2, 3)
    ]
    cfg = RateLimiterConfig(mode=mode, lease_max_slice=lease_max_slice)
    lims = [n.register(RateLimiter(cfg)) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    try:
        deadline = time.monotonic() + 20
        while not all(len(n.members) == 3 for n in nodes):
            assert time.monotonic() < deadline, "membership"
            await asyncio.sleep(0.01)  # poll interval, not a stand-in for the condition
        await asyncio.gather(*(n.wait_ready() for n in nodes))
    except BaseException:
        await asyncio.gather(*(n.stop() for n in nodes))
        raise
    return nodes, lims


async def bench_embedded(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    nodes, lims = await memory_limiters(mode, args.limit)
    try:
        # a fixed window of one second, checked for over-admission
        checker = AccuracyChecker(args.limit, 1_000_000_000)
        lim = lims[0]
        clock = lim.app.clock

        async def decide() -> bool:
            sent = round(clock.time() * 1e9)
            d = await lim.hit("hot", limit=args.limit, period=1, algorithm="fixed_window")
            checker.record(round(clock.time() * 1e9), d.allowed, sent_ns=sent)
            return d.allowed

        out = await closed_loop(decide, args.concurrency, args.warmup, args.seconds)
        report = checker.report()
        out["accuracy"] = str(report)
        out["over_admitted"] = max(0, report.worst_over)
        return out
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


# -- peer-ring exact, embedded in one node of a 3-node TCP cluster ------------------------


async def bench_exact_tcp(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding the limiter is made for: the application's process is a
    node (TCP transport) of a 3-node cluster whose other two nodes are
    processes; the hot key is chosen so that its owner is one of the *other*
    processes, so every decision crosses the network once (the worst case)."""
    from peer_ring import Node, NodeConfig, ReplicationConfig
    from peer_ring.apps.ratelimit import RateLimiter, RateLimiterConfig
    from peer_ring.testing.cluster import LocalCluster

    with LocalCluster(2, subnet="127.77.2", first_ip=5, port=7400, partitions=256) as cluster:
        node = Node(
            NodeConfig.local(
                "app",
                listen="127.77.2.8:7400",
                transport="tcp",
                seeds=(cluster.nodes["n1"].address,),
                replication=ReplicationConfig(partitions=256, replicas=3),
            )
        )
        lim = node.register(RateLimiter(RateLimiterConfig(mode="exact")))
        await node.start()
        try:
            deadline = time.monotonic() + 30
            while len(node.members) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("the embedded node did not see 3 members in 30 s")
                await asyncio.sleep(0.05)
            await node.wait_ready()
            key = next(
                f"hot{i}"
                for i in range(1000)
                if lim.primary_of(f"default_hot{i}".encode()) not in (None, node.id)
            )
            checker = AccuracyChecker(args.limit, 1_000_000_000)
            clock = lim.app.clock

            async def decide() -> bool:
                sent = round(clock.time() * 1e9)
                d = await lim.hit(key, limit=args.limit, period=1, algorithm="fixed_window")
                checker.record(round(clock.time() * 1e9), d.allowed, sent_ns=sent)
                return d.allowed

            out = await with_node_cpu(
                cluster, lambda: closed_loop(decide, args.concurrency, args.warmup, args.seconds)
            )
            out["owner"] = lim.primary_of(f"default_{key}".encode())
            report = checker.report()
            out["accuracy"] = str(report)
            out["over_admitted"] = max(0, report.worst_over)
            return out
        finally:
            await node.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    if "limits" in args.cases:
        if shutil.which("redis-server") is None:
            console.print("[yellow]redis-server not installed: the limits cases are skipped")
        else:
            from kv import RedisServer

            server = RedisServer("127.77.2.1", 6390)
            try:
                for strategy in ("sliding-window-counter", "moving-window"):
                    console.print(f"limits {strategy} ...")
                    before = proc_cpu(server.proc.pid)
                    t0 = time.perf_counter()
                    row = await bench_limits(args, strategy)
                    used = proc_cpu(server.proc.pid) - before
                    row["node_cpu"] = {"redis": round(used / (time.perf_counter() - t0), 2)}
                    rows[f"limits {strategy} + redis-server"] = row
            finally:
                server.stop()
    if "exact" in args.cases:
        from peer_ring.testing.cluster import LocalCluster

        console.print("peer-ring exact, 3 node processes, RESP CL.THROTTLE ...")
        with LocalCluster(
            3, subnet="127.77.2", first_ip=2, resp_port=6391, partitions=256
        ) as cluster:
            await one_ring(cluster)
            ips = [n.ip for n in cluster.nodes.values()]
            rows["peer-ring exact, 3 processes (RESP)"] = await with_node_cpu(
                cluster, lambda: bench_exact_resp(args, ips)
            )
    if "exact-tcp" in args.cases:
        console.print("peer-ring exact, embedded in a node of a 3-node TCP cluster ...")
        rows["peer-ring exact, embedded node + 2 processes (TCP)"] = await bench_exact_tcp(args)
    if "embedded" in args.cases:
        for mode in ("lease", "exact"):
            console.print(f"peer-ring {mode}, embedded ...")
            rows[f"peer-ring {mode}, embedded (1 process)"] = await bench_embedded(args, mode)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=1000, help="hits per second on the hot key")
    ap.add_argument(
        "--cases",
        default="limits,exact,exact-tcp,embedded",
        help="comma-separated subset of limits,exact,exact-tcp,embedded",
    )
    ap.add_argument(
        "--uvloop",
        action="store_true",
        help="run this process (every case's clients, the embedded nodes) on uvloop,"
        " as node processes do",
    )
    ap.add_argument(
        "--tune-gc",
        action="store_true",
        help="peer_ring.runner.tune_gc() in this process, as node processes do",
    )
    args = ap.parse_args()
    args.cases = set(args.cases.split(","))
    if args.uvloop:
        from peer_ring.runner import install_event_loop_policy

        install_event_loop_policy()
    if args.tune_gc:
        from peer_ring.runner import tune_gc

        tune_gc()
    rows = asyncio.run(main_async(args))
    console.print(
        table(
            f"rate limiter, hot key, limit {args.limit}/s, {args.concurrency} clients",
            [
                "case",
                "decisions/s",
                "per CPU-s",
                "p50 ms",
                "p99 ms",
                "allowed",
                "errors",
                "over-admitted",
                "node CPU (cores)",
            ],
            [
                (
                    name,
                    r["decisions_per_s"],
                    r["decisions_per_cpu_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["allowed"],
                    r["errors"],
                    r.get("over_admitted", "-"),
                    " ".join(f"{k} {v}" for k, v in r.get("node_cpu", {}).items()) or "-",
                )
                for name, r in rows.items()
            ],
        )
    )
    path = write_results("ratelimit", {"args": {k: v for k, v in vars(args).items()
                                                if k != "cases"}, "rows": rows})  # fmt: skip

    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
