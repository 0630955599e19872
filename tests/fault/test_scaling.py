"""Scaling under load: 3 -> 5 -> 3 nodes (add, add, remove, remove) while clients
write and read over RESP.

The cluster starts with three nodes and 20,000 preloaded keys (so each step
moves real data, not only the workload's keys). Each step is one recorded
fault window (``scale``, from its start until every running node sees the
same members and no transfer is queued or running anywhere):

1. ``add n4``, 2. ``add n5`` -- a node joins (``LocalCluster.add``: it
   reports ready once its partitions arrived);
3. ``remove n1``, 4. ``remove n2`` -- a decommission (``leave``: hand every
   partition over, leave the ring, exit), the first nodes, so the seed and
   nodes clients are connected to go.

Asserted: every checker of the harness (0 acknowledged writes lost, no stale
read -- every read sees every write acknowledged before it began, so a read
of a key written before a step never goes backwards --, list order, nothing
invented, replicas converged), each step moved records, and each step had
reads of keys written before it began (the property was exercised, not
vacuous). Reported, not asserted: the foreground p50/p99 of acknowledged
operations invoked during each step, in the test's output and in
``report.json`` (``steps``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from peer_ring import wire
from peer_ring.errors import PeerRingError
from peer_ring.testing.faults import node_status
from peer_ring.testing.history import Operation
from tests.conftest import wait_for
from tests.fault._harness import CHAOS, Scenario
from tests.fault.test_scenarios import Factory, load_running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PRELOAD = 200_000 if CHAOS else 20_000


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def preload(sc: Scenario, keys: int) -> None:
    """``keys`` 100-byte values through n1's in-node load generator (W=2 puts)."""
    from peer_ring.transport import request_once

    spec = {"seconds": 0, "warmup": 0, "ops": 0, "preload": [0, keys], "keyspace": keys,
            "value_size": 100, "prefix": b"pre"}  # fmt: skip
    await request_once(sc.cluster["n1"].address, wire.bench_frame(spec), timeout=120.0)


async def settled(sc: Scenario) -> bool:
    """Every running node sees exactly the running nodes, one ring epoch, and no
    transfer queued or running."""
    running = {n for n, p in sc.cluster.nodes.items() if p.running}
    epochs = set()
    for name in sorted(running):
        try:
            st = await node_status(sc.cluster[name].address)
        except PeerRingError:
            return False
        if {m["id"] for m in st["members"]} != running:
            return False
        if any(m["state"] != "up" for m in st["members"]):
            return False
        c = st["counters"]
        if c["transfers_in_progress"] or c["transfers_queued"]:
            return False
        epochs.add(st["epoch"])
    return len(epochs) == 1


async def test_scale_three_to_five_to_three_under_load(scenario_factory: Factory) -> None:
    sc = scenario_factory(3)
    # n4 and n5 are defined now so the clients' endpoints include them: a
    # client fails over to them once they serve (before, a refused connect
    # is a certain failure, which the checkers accept)
    sc.cluster.add(start=False)
    sc.cluster.add(start=False)
    await preload(sc, PRELOAD)
    steps: list[dict[str, Any]] = []

    async def step(kind: str, name: str) -> None:
        clock = sc.history.clock
        target = f"{kind} {name}"
        began = clock.monotonic()
        wall = time.monotonic()
        sc.history.fault("scale", target, "start")
        if kind == "add":
            await asyncio.to_thread(sc.cluster.start, [name])
            st = await node_status(sc.cluster[name].address)
            moved = st["counters"]["records_received"]
        else:
            answer = await asyncio.to_thread(sc.cluster.decommission, name, 120.0)
            assert answer["node"] == name
            moved = answer["records"]
        await wait_for(lambda: settled(sc), timeout=60, interval=0.2, message=f"{target} settled")
        sc.history.fault("scale", target, "heal", records=moved)
        steps.append({"step": target, "began": began, "ended": clock.monotonic(),
                      "seconds": round(time.monotonic() - wall, 2), "records": moved})  # fmt: skip

    async def faults(sc: Scenario) -> None:
        await load_running(sc)
        await step("add", "n4")
        await step("add", "n5")
        await step("remove", "n1")
        await step("remove", "n2")

    await sc.run(faults, duration=240.0, max_ops=400_000, load_after_faults=1.0)

    ops = sc.history.operations()
    report = [_step_figures(s, ops) for s in steps]
    sc.report["steps"] = report
    print("\nscaling 3 -> 5 -> 3 under load (foreground: acknowledged RESP operations)")
    print(f"{'step':<10} {'s':>6} {'records':>8} {'ops':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'reads of older keys':>20}")  # fmt: skip
    for r in report:
        print(
            f"{r['step']:<10} {r['seconds']:>6.1f} {r['records']:>8} {r['ops']:>6} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['reads_of_older_keys']:>20}"
        )
    assert [s["step"] for s in steps] == ["add n4", "add n5", "remove n1", "remove n2"]
    assert sorted(sc.cluster.nodes) == ["n3", "n4", "n5"]
    for r in report:
        assert r["records"] > 0, f"{r['step']} moved nothing (artefacts: {sc.dir})"
        assert r["ops"] > 0, f"no operation acknowledged during {r['step']}"
        assert r["reads_of_older_keys"] > 0, f"{r['step']}: no read of a key written before it"
    sc.assert_safe()


def _step_figures(step: dict[str, Any], ops: list[Operation]) -> dict[str, Any]:
    """Latency of the acknowledged operations invoked during ``step``, and how
    many of its reads were of keys acknowledged-written before it began."""
    began, ended = step["began"], step["ended"]
    written_before = {
        o.key for o in ops if o.op != "read" and o.ok and o.completed and o.completed < began
    }
    during = [o for o in ops if began <= o.invoked <= ended and o.ok and o.completed]
    latencies = [((o.completed or 0.0) - o.invoked) * 1000 for o in during]
    return {
        "step": step["step"],
        "seconds": step["seconds"],
        "records": step["records"],
        "ops": len(during),
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
        "reads_of_older_keys": sum(1 for o in during if o.op == "read" and o.key in written_before),
    }
