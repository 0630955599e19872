"""The scenario runner of the fault-injection tests: a --testing cluster, load, faults, checks.

Short by default (a few seconds of load per scenario); full length when
``PEER_RING_CHAOS=1`` (``make chaos``). Each test gets its own loopback /24
so that scenarios, and other suites running at the same time, never share an
address. Artefacts (node logs, ``history.jsonl``, ``report.json``) stay in
the test's ``tmp_path``; a failure message names the directory. When
``PEER_RING_FAULT_SUMMARY`` names a file, one JSON line per scenario is
appended to it (the figures of ``docs/reliability.md``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peer_ring.testing.checker import (
    CheckResult,
    check_availability,
    check_convergence,
    check_invented_values,
    check_lost_writes,
    summarize,
)
from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import Nemesis, wait_members_up
from peer_ring.testing.history import History
from peer_ring.testing.workload import (
    Endpoint,
    WorkloadConfig,
    WorkloadResult,
    final_reads,
    owners_of,
    replica_dumps,
    run_workload,
)

CHAOS = os.environ.get("PEER_RING_CHAOS") == "1"
PARTITIONS = 64
REPLICAS = 3
_subnets = itertools.count(1)
_OCTET = 150 + os.getpid() % 100


def length(short: float, full: float) -> float:
    """A duration for this run: ``short`` by default, ``full`` under ``PEER_RING_CHAOS=1``."""
    return full if CHAOS else short


@dataclass
class Scenario:
    """One scenario's cluster, history, nemesis and, after :meth:`run`, its results."""

    cluster: LocalCluster
    history: History
    dir: Path
    nemesis: Nemesis
    name: str
    results: dict[str, CheckResult] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    workload: WorkloadResult = field(default_factory=WorkloadResult)
    unread: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [Endpoint(n, p.ip, p.resp_port or 0) for n, p in self.cluster.nodes.items()]

    async def run(
        self,
        faults: Callable[[Scenario], Awaitable[None]],
        *,
        duration: float,
        clients: int = 6,
        max_ops: int = 20_000,
        convergence_timeout: float = 30.0,
        start_on: str | None = None,
    ) -> None:
        """Run the workload for ``duration`` s with ``faults`` alongside, heal
        everything, read the final state and run every checker."""
        await wait_members_up(self.cluster, timeout=30.0)
        config = WorkloadConfig(
            clients=clients, max_ops=max_ops, duration=duration, start_on=start_on
        )
        load = asyncio.ensure_future(
            run_workload(self.endpoints, self.history, config, result=self.workload)
        )
        try:
            await faults(self)
            await self.nemesis.heal_all()
            await load
        finally:
            if not load.done():
                load.cancel()
            await self.nemesis.heal_all()
        healed = self.history.clock.monotonic()
        await wait_members_up(self.cluster, timeout=30.0)
        keys = sorted(self.workload.keys)
        final = await final_reads(self.endpoints, keys, timeout=30.0)
        # convergence: await identical replicas (read repair of the final reads
        # and the write fan-out bring them together) with a deadline
        owners = owners_of(list(self.cluster.nodes), keys, partitions=PARTITIONS, replicas=REPLICAS)
        peers = {n: p.address for n, p in self.cluster.nodes.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + convergence_timeout
        while True:
            dumps = await replica_dumps(peers, keys, partitions=PARTITIONS)
            conv = check_convergence(dumps, owners=owners)
            if conv.ok or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
            await final_reads(self.endpoints, conv_keys(conv, keys), timeout=10.0)
        converged_after = self.history.clock.monotonic() - healed
        events = self.history.events
        self.results = {
            "lost": check_lost_writes(events, final.values, mode="lww"),
            "invented": check_invented_values(events, final.values),
            "converged": conv,
            "availability": check_availability(events),
        }
        counts = summarize(events)
        avail = self.results["availability"].data
        self.report = {
            "scenario": self.name,
            "chaos": CHAOS,
            **counts,
            "lost": self.results["lost"].data["lost"],
            "invented": self.results["invented"].data["invented"],
            "unread_keys": len(final.unread),
            "divergent_keys": conv.data["divergent"],
            "convergence_s": round(converged_after, 2),
            "max_availability_gap_s": avail["max_gap"],
            "success_ratio": round(avail["success_ratio"] or 0.0, 4),
            "artefacts": str(self.dir),
        }
        self.unread = final.unread
        self._save(final.values)

    def _save(self, final: dict[str, list[str]]) -> None:
        (self.dir / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (self.dir / "final.json").write_text(json.dumps(final, indent=1) + "\n")
        summary = os.environ.get("PEER_RING_FAULT_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.report) + "\n")

    def assert_safe(self) -> None:
        """Zero acknowledged writes lost, no invented values, every key read, converged."""
        where = f"(artefacts: {self.dir})"
        assert self.workload.ok > 0, f"the workload got no operation through {where}"
        assert self.results["lost"].ok, f"{self.results['lost']}\n{where}"
        assert self.results["invented"].ok, f"{self.results['invented']}\n{where}"
        assert not self.unread, f"keys never read back: {self.unread[:10]} {where}"
        assert self.results["converged"].ok, f"{self.results['converged']}\n{where}"


def conv_keys(result: CheckResult, keys: list[str]) -> list[str]:
    bad = [p.split("'")[1] for p in result.problems if p.startswith("diverged: '")]
    return bad or keys


def make_scenario(
    tmp_path: Path, name: str, made: list[Scenario], size: int = 5, **cluster_kw: Any
) -> Scenario:
    """Start a ``size``-node cluster on a fresh loopback /24 and wrap it in a Scenario."""
    subnet = f"127.{_OCTET}.{next(_subnets)}"
    cluster = LocalCluster(
        size,
        subnet=subnet,
        port=17400,
        resp_port=16379,
        http_port=18080,
        replicas=REPLICAS,
        partitions=PARTITIONS,
        extra_args=["--testing", "--log-level", "WARNING"],
        artefacts=tmp_path / "cluster",
        **cluster_kw,
    )
    history = History(tmp_path / "history.jsonl")
    sc = Scenario(cluster, history, tmp_path, Nemesis(cluster, history), name)
    made.append(sc)
    cluster.start()
    return sc
