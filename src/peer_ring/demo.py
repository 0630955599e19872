"""``make demo``: a 3-node cluster on loopback, a workload, a crash and a restart.

The demo starts three real node processes on 127.0.20.2-4 (static discovery,
N=3, R=W=2), then drives them through the Redis protocol with redis-py:

1. writes keys through node 1 and reads them back through node 2;
2. kills node 3 with SIGKILL and keeps writing and reading (2 of 3 replicas
   still make every quorum);
3. restarts node 3 and reads everything through it.

It prints what happened and exits 0 only if every acknowledged write was
read back with its latest value.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import node_status

console = Console()
SUBNET = "127.0.20"
RESP_PORT = 6390
KEYS_PER_PHASE = 2000
CONCURRENCY = 32


@dataclass
class Phase:
    name: str
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, started: float, error: BaseException | None) -> None:
        self.latencies.append(time.perf_counter() - started)
        if error is None:
            self.ok += 1
        else:
            self.failed += 1
            name = type(error).__name__ + ": " + str(error)[:60]
            self.errors[name] = self.errors.get(name, 0) + 1

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000


async def _status(address: str) -> dict[str, Any]:
    return await node_status(address)


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return
        except Exception:  # a node may be restarting; poll again
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


async def _run_ops(phase: Phase, ops: list[Any]) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(op: Any) -> None:
        async with sem:
            started = time.perf_counter()
            try:
                await op()
            except Exception as exc:
                phase.record(started, exc)
            else:
                phase.record(started, None)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(op) for op in ops))
    phase.seconds = time.perf_counter() - t0


async def main() -> int:
    try:
        import redis.asyncio as aioredis
    except ImportError:  # pragma: no cover - installed by `make demo`
        console.print("[red]the demo needs redis-py: pip install redis[/red]")
        return 2
    artefacts = Path.cwd() / ".peer-ring-demo"
    console.rule("[bold]peer-ring demo")
    with LocalCluster(
        3,
        subnet=SUBNET,
        resp_port=RESP_PORT,
        http_port=8090,
        replicas=3,
        partitions=256,
        artefacts=artefacts,
    ) as cluster:
        nodes = list(cluster.nodes.values())
        table = Table(title="3 nodes, static discovery, N=3 R=2 W=2")
        for col in ("node", "pid", "peer address", "RESP", "HTTP"):
            table.add_column(col)
        for n in nodes:
            table.add_row(n.name, str(n.pid), n.address, n.resp or "-", n.http or "-")
        console.print(table)

        async def converged() -> bool:
            sts = [await _status(n.address) for n in nodes]
            return all(len(s["members"]) == 3 for s in sts) and len({s["epoch"] for s in sts}) == 1

        await _until(converged, 20, "the ring to converge")
        console.print("ring converged: every node sees 3 members and the same epoch")

        clients = {
            n.name: aioredis.Redis(host=n.ip, port=RESP_PORT, socket_timeout=5) for n in nodes
        }
        expected: dict[bytes, bytes] = {}
        phases: list[Phase] = []

        def writer(client: Any, key: bytes, value: bytes) -> Any:
            async def op() -> None:
                await client.set(key, value)
                expected[key] = value

            return op

        def reader(client: Any, key: bytes, phase: Phase) -> Any:
            async def op() -> None:
                got = await client.get(key)
                if got != expected[key]:
                    raise AssertionError(f"read {got!r}, expected {expected[key]!r}")

            return op

        # 1. write through n1, read through n2
        p = Phase("write via n1 (all up)")
        keys1 = [f"demo:{i}".encode() for i in range(KEYS_PER_PHASE)]
        with console.status(p.name):
            await _run_ops(p, [writer(clients["n1"], k, b"v1:" + k) for k in keys1])
        phases.append(p)
        p = Phase("read via n2 (all up)")
        with console.status(p.name):
            await _run_ops(p, [reader(clients["n2"], k, p) for k in keys1])
        phases.append(p)

        # 2. kill n3, keep going
        console.print(f"[yellow]kill -9 n3 (pid {cluster['n3'].pid})[/yellow]")
        cluster.kill("n3")
        await clients["n3"].aclose()

        async def n3_down() -> bool:
            st = await _status(cluster["n1"].address)
            return any(m["id"] == "n3" and m["state"] == "down" for m in st["members"])

        await _until(n3_down, 15, "n1 to mark n3 down")
        console.print("n1 marks n3 [red]down[/red]; n3 keeps its place in the ring")
        p = Phase("write via n1+n2 (n3 dead)")
        keys2 = [f"demo:{i}".encode() for i in range(KEYS_PER_PHASE, 2 * KEYS_PER_PHASE)]
        with console.status(p.name):
            await _run_ops(
                p,
                [
                    writer(clients["n1" if i % 2 else "n2"], k, b"v2:" + k)
                    for i, k in enumerate(keys2)
                ]
                + [writer(clients["n2"], k, b"v2:" + k) for k in keys1[:500]],
            )
        phases.append(p)
        p = Phase("read via n2 (n3 dead)")
        with console.status(p.name):
            await _run_ops(p, [reader(clients["n2"], k, p) for k in expected])
        phases.append(p)

        # 3. restart n3 and read everything through it
        console.print("[green]restart n3[/green]")
        await asyncio.to_thread(cluster.restart, "n3")
        clients["n3"] = aioredis.Redis(host=cluster["n3"].ip, port=RESP_PORT, socket_timeout=5)

        async def n3_up() -> bool:
            st = await _status(cluster["n1"].address)
            return any(m["id"] == "n3" and m["state"] == "up" for m in st["members"])

        await _until(n3_up, 15, "n1 to mark n3 up again")
        p = Phase("read via n3 (restarted)")
        with console.status(p.name):
            await _run_ops(p, [reader(clients["n3"], k, p) for k in expected])
        phases.append(p)
        for c in clients.values():
            await c.aclose()

        summary = Table(title="what happened")
        for col in ("phase", "ops", "ok", "failed", "ops/s", "p50 ms", "p99 ms"):
            summary.add_column(col, justify="left" if col == "phase" else "right")
        for ph in phases:
            total = ph.ok + ph.failed
            summary.add_row(
                ph.name,
                str(total),
                str(ph.ok),
                f"[red]{ph.failed}[/red]" if ph.failed else "0",
                f"{total / ph.seconds:,.0f}" if ph.seconds else "-",
                f"{ph.pct(0.5):.2f}",
                f"{ph.pct(0.99):.2f}",
            )
        console.print(summary)
        failures = {e: n for ph in phases for e, n in ph.errors.items()}
        for err, count in failures.items():
            console.print(f"  {count} x {err}")
        lost = sum(ph.failed for ph in phases if ph.name.startswith("read"))
        console.print(
            f"acknowledged writes: {len(expected)}; read back wrong or missing: "
            f"{'[red]' if lost else '[green]'}{lost}[/]"
        )
        console.print(
            "\ntry it yourself:  [bold]peer-ring cluster up -n 3[/bold]  then  "
            "[bold]redis-cli -h 127.0.0.2 -p 6379 set hello world[/bold]"
        )
        console.print(f"node logs: {artefacts}")
        return 1 if lost or any(ph.failed for ph in phases) else 0


def run() -> None:
    sys.exit(asyncio.run(main()))


if __name__ == "__main__":
    run()
