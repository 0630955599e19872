"""The scenario runner of the fault-injection tests: a --testing cluster, load, faults, checks.

Every scenario runs in both conflict modes of the KV store (``lww``, the
node process's default, and ``siblings``, the embedded default). Short by
default (a few seconds of load per scenario); full length when
``PEER_RING_CHAOS=1`` (``make chaos``). Each test gets its own loopback /24
so that scenarios, and other suites running at the same time, never share an
address. Artefacts (node logs, ``history.jsonl``, ``report.json``) stay in
the test's ``tmp_path``; a failure message names the directory. When
``PEER_RING_FAULT_SUMMARY`` names a file, one JSON line per scenario is
appended to it (the figures of ``docs/reliability.md``); the terminal
summary of the run lists the same figures per scenario and mode
(``conftest.py``).
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
    ConflictMode,
    check_availability,
    check_convergence,
    check_invented_values,
    check_list_order,
    check_lost_writes,
    check_stale_reads,
    fault_window_ops,
    summarize,
)
from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import Nemesis, wait_members_up
from peer_ring.testing.history import History
from peer_ring.testing.workload import (
    Endpoint,
    WorkloadConfig,
    WorkloadResult,
    final_from_dumps,
    final_reads,
    owners_of,
    replica_dumps,
    run_workload,
)

CHAOS = os.environ.get("PEER_RING_CHAOS") == "1"
PARTITIONS = 64
REPLICAS = 3
MODES: tuple[ConflictMode, ...] = ("lww", "siblings")
#: The rate limiter's modes its fault scenarios run in (``test_ratelimit_accuracy``).
LIMITER_MODES: tuple[str, ...] = ("exact", "lease")
_subnets = itertools.count(1)
_OCTET = 150 + os.getpid() % 100
#: Every report of this run, for the terminal summary (conftest.py).
REPORTS: list[dict[str, Any]] = []


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
    mode: ConflictMode = "lww"
    replicas: int = REPLICAS
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
        load_after_faults: float | None = None,
    ) -> None:
        """Run the workload for ``duration`` s with ``faults`` alongside, heal
        everything, read the final state and run every checker.

        ``load_after_faults``: end the workload that many seconds after
        ``faults`` returned instead of at ``duration`` (faults of unknown
        length, such as a rebalance)."""
        await wait_members_up(self.cluster, timeout=30.0)
        config = WorkloadConfig(
            clients=clients, max_ops=max_ops, duration=duration, start_on=start_on
        )
        stop = asyncio.Event()
        load = asyncio.ensure_future(
            run_workload(self.endpoints, self.history, config, result=self.workload, stop=stop)
        )
        try:
            await faults(self)
            await self.nemesis.heal_all()
            if load_after_faults is not None:
                await asyncio.wait({load}, timeout=load_after_faults)
                stop.set()
            await load
        finally:
            if not load.done():
                load.cancel()
            await self.nemesis.heal_all()
        healed = self.history.clock.monotonic()
        await wait_members_up(self.cluster, timeout=30.0)
        keys = sorted(self.workload.keys)
        final = await final_reads(self.endpoints, keys, timeout=30.0)
        # convergence: await identical replicas on *every* owner (read repair
        # of the final reads and the write fan-out bring them together; a
        # restarted owner still syncing is waited for, never skipped)
        owners = owners_of(
            list(self.cluster.nodes), keys, partitions=PARTITIONS, replicas=self.replicas
        )
        peers = {n: p.address for n, p in self.cluster.nodes.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + convergence_timeout
        while True:
            left = max(1.0, deadline - loop.time())
            dumps = await replica_dumps(peers, keys, partitions=PARTITIONS, deadline=left)
            conv = check_convergence(dumps.contents, owners=owners, unanswered=dumps.unanswered)
            if conv.ok or loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
            await final_reads(self.endpoints, conv.data["divergent_keys"] or keys, timeout=10.0)
        converged_after = self.history.clock.monotonic() - healed
        events = self.history.events
        # lww keeps one value per key: what RESP reads; siblings mode keeps
        # every concurrent write, visible in the replicas' own copies
        state = final.values if self.mode == "lww" else final_from_dumps(dumps.contents, owners)
        self.results = {
            "stale": check_stale_reads(events),
            "order": check_list_order(events, state),
            "lost": check_lost_writes(events, state, mode=self.mode),
            "invented": check_invented_values(events, state),
            "converged": conv,
            "availability": check_availability(events),
        }
        counts = summarize(events)
        during = fault_window_ops(events)
        avail = self.results["availability"].data
        order = self.results["order"].data
        self.report = {
            "scenario": self.name,
            "mode": self.mode,
            "chaos": CHAOS,
            **counts,
            "fault_ops": during["ops"],
            "fault_acknowledged": during["acknowledged"],
            "stale_reads": self.results["stale"].data["stale"],
            "lost": self.results["lost"].data["lost"],
            "order_violations": order["duplicates"] + order["divergent"] + order["reordered"],
            "invented": self.results["invented"].data["invented"],
            "unread_keys": len(final.unread),
            "divergent_keys": conv.data["divergent"],
            "silent_owners": conv.data["silent_owners"],
            "convergence_s": round(converged_after, 2),
            "max_availability_gap_s": avail["max_gap"],
            "success_ratio": round(avail["success_ratio"] or 0.0, 4),
            "artefacts": str(self.dir),
        }
        self.unread = final.unread
        self._save(state)

    def _save(self, final: dict[str, list[str]]) -> None:
        (self.dir / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        (self.dir / "final.json").write_text(json.dumps(final, indent=1) + "\n")
        REPORTS.append(self.report)

    def _publish(self) -> None:
        """report.json again (with the promise checked), and one line of the summary file."""
        (self.dir / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
        summary = os.environ.get("PEER_RING_FAULT_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(self.report) + "\n")

    def assert_safe(self, *, promised: frozenset[str] | None = None, why: str = "") -> None:
        """Traffic ran during the faults, and every promise held: no stale read,
        lists in one order, zero acknowledged writes lost, no invented value,
        every key read, every owner answered and converged.

        ``promised`` narrows the checks that must pass to those named (of
        ``stale``, ``order``, ``lost``, ``invented``, ``converged``) where a
        mode promises less; ``why`` says what it gives up (it goes to the
        report). The others are still run and reported.
        """
        where = f"(artefacts: {self.dir})"
        assert self.workload.ok > 0, f"the workload got no operation through {where}"
        assert self.report["fault_ops"] > 0, f"no operation ran while a fault was active {where}"
        assert self.report["fault_acknowledged"] > 0, (
            f"no operation was acknowledged while a fault was active {where}"
        )
        names = ("stale", "order", "lost", "invented", "converged")
        must = promised if promised is not None else frozenset(names)
        if promised is not None:
            self.report["weaker_promise"] = why
        self._publish()
        for name in names:
            if name in must:
                assert self.results[name].ok, f"{self.results[name]}\n{where}"
        assert not self.unread, f"keys never read back: {self.unread[:10]} {where}"

    def assert_only_blind_writes_affected(self, *names: str) -> None:
        """The problems of the checkers ``names`` (``stale``, ``lost``) are all on
        the shared, blindly written keys: every append key kept its promise."""
        ops_ids = {"stale": "stale_ops", "lost": "lost_ops"}
        key_of = {op.id: op.key for op in self.history.operations()}
        for name in names:
            keys = {key_of[i] for i in self.results[name].data[ops_ids[name]]}
            on_lists = sorted(keys - self.workload.shared_keys)
            assert not on_lists, (
                f"{name} on append keys {on_lists[:5]}: {self.results[name]}\n"
                f"(artefacts: {self.dir})"
            )


def make_scenario(
    tmp_path: Path,
    name: str,
    made: list[Scenario],
    size: int = 5,
    *,
    mode: ConflictMode = "lww",
    replicas: int = REPLICAS,
    node_args: list[str] | None = None,
    **cluster_kw: Any,
) -> Scenario:
    """Start a ``size``-node cluster on a fresh loopback /24, its KV store in
    conflict ``mode``, and wrap it in a Scenario."""
    subnet = f"127.{_OCTET}.{next(_subnets)}"
    cluster = LocalCluster(
        size,
        subnet=subnet,
        port=17400,
        resp_port=16379,
        http_port=18080,
        replicas=replicas,
        partitions=PARTITIONS,
        extra_args=["--testing", "--log-level", "WARNING", "--conflicts", mode, *(node_args or ())],
        artefacts=tmp_path / "cluster",
        **cluster_kw,
    )
    history = History(tmp_path / "history.jsonl")
    sc = Scenario(
        cluster, history, tmp_path, Nemesis(cluster, history), name, mode, min(replicas, size)
    )
    made.append(sc)
    cluster.start()
    return sc
