"""Benchmark of rebalancing: moving K keys to a joining node, with foreground load.

Run: ``.venv/bin/python bench/rebalance.py`` (200,000 keys) or
``--keys 1000000`` for the documented large run; ``--help`` for the rest.

Two real node processes (:class:`LocalCluster`, ``--testing``, N=2, R=W=1
or 2 by ``--quorum``, 64 partitions by default, loopback 127.78.0.x) are
preloaded with K keys of 100-byte values by the ``bench`` peer op (inside
the node processes). Then a foreground load (the ``bench`` op on n1: 50 %
gets, 50 % puts over the preloaded keys, ``--concurrency`` outstanding) runs
three windows: *before* the join, *during* it (the third node starts and
every partition whose preference list gained it streams to it), and
*after*. Transferred records come from each node's ``/metrics``
(``peer_ring_records_received_total`` of the joiner, ``records_sent`` of
the others), sampled every 0.2 s; the move ends when no transfer is queued
or running on any node and the joiner's count stops growing.

Reported: keys moved, seconds from the joiner's start to the end of the
move, keys/s transferred (received by the joiner over the time it was
receiving), foreground ops/s and p50/p99 before/during/after. Writes
``bench/results/rebalance.json``. Target on the 2-core reference machine:
>= 100,000 keys/s transferred with foreground p99 < 50 ms.

``--steps``: scaling 3 -> 5 -> 3 with N=3 (R=W=2 by default), what
``peer-ring cluster add``/``remove`` do: three nodes preloaded with K keys,
then add n4, add n5, remove n5, remove n4 (a decommission: hand over,
leave, exit), one after the other, with a foreground load on n1 (the
``bench`` op, 50 % get / 50 % put, ``--concurrency`` outstanding) during
each step. A step ends when every running node sees the same members, the
joiner reported ready (or the leaver exited) and no transfer is queued or
running on any node (peer op ``st``, sampled every 0.1 s). Reported per
step: seconds, seconds per million keys in the cluster, the seconds until
the joiner was ready / the leaver answered its leave (its handover done:
what a Kubernetes preStop hook waits for; the step goes on while the
survivors re-replicate the leaver's partitions), records moved (received by
the joiner / sent by the leaver) per second of that time, the leaver's
bytes/s, and the foreground p50/p99 of the first ``--seconds`` of the step. Writes
``bench/results/rebalance-steps.json``; the remove steps' rate is the
measured transfer rate of the grace-period formula in
``docs/operations/scaling.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from _util import console, progress, table, write_results
from kv import bench_nodes, summarize
from peer_ring import wire
from peer_ring.testing.cluster import LocalCluster
from peer_ring.transport.base import TransportConfig
from peer_ring.transport.tcp import TcpTransport

SUBNET = "127.78.0"
HTTP_PORT = 8078
VALUE_SIZE = 100
_METRIC = re.compile(rb"^peer_ring_(records_received|records_sent|transfers_in_progress|"
                     rb"transfers_queued)(?:_total)?\s+([0-9.e+]+)$", re.M)  # fmt: skip


_FINAL = re.compile(rb"^peer_ring_((?:records|transfers|ae|bootstrap|partitions)_[a-z_]+?)"
                    rb"(?:_total)?\s+([0-9.e+]+)$", re.M)  # fmt: skip


def scrape(http: str, pattern: re.Pattern[bytes] = _METRIC) -> dict[str, float]:
    """The transfer counters of one node's ``/metrics``."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as resp:
        body = resp.read()
    return {m.group(1).decode(): float(m.group(2)) for m in pattern.finditer(body)}


async def _foreground(address: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    client = TcpTransport("bench-rb", "127.0.0.1:0", TransportConfig(request_timeout=timeout))
    await client.start()
    try:
        answer: dict[str, Any] = await client.request(address, wire.bench_frame(spec), timeout)
        return answer
    finally:
        await client.close()


def foreground(c: LocalCluster, spec: dict[str, Any]) -> dict[str, Any]:
    timeout = 60.0 + 2 * spec["seconds"]
    return summarize([asyncio.run(_foreground(c["n1"].address, spec, timeout))])


def run(
    keys: int,
    partitions: int,
    quorum: int,
    concurrency: int,
    seconds: float,
    profile: str | None = None,
) -> dict[str, Any]:
    c = LocalCluster(
        3,
        subnet=SUBNET,
        port=7600,
        replicas=2,
        partitions=partitions,
        http_port=HTTP_PORT,
        extra_args=["--testing", "--read-quorum", str(quorum), "--write-quorum", str(quorum),
                    "--log-level", "WARNING"],
    )  # fmt: skip
    spec = {"keyspace": keys, "value_size": VALUE_SIZE, "read_ratio": 0.5, "warmup": 0.5,
            "concurrency": concurrency, "seed": 7}  # fmt: skip
    try:
        with progress() as bar:
            task = bar.add_task("starting n1, n2", total=5)
            c.start(["n1", "n2"])
            _wait_members(c, ["n1", "n2"])
            bar.update(task, advance=1, description=f"preloading {keys:,} keys (N=2)")
            t0 = time.perf_counter()
            bench_nodes(
                _Sub(c, ["n1", "n2"]),
                {"seconds": 0, "warmup": 0, "ops": 0, "preload": [0, keys], "keyspace": keys,
                 "value_size": VALUE_SIZE},
                128,
            )  # fmt: skip
            preload_s = time.perf_counter() - t0
            bar.update(task, advance=1, description="foreground before the join")
            before = foreground(c, dict(spec, seconds=seconds))

            bar.update(task, advance=1, description="n3 joins under foreground load")
            samples: list[tuple[float, dict[str, dict[str, float]]]] = []
            stop = threading.Event()
            t_join = time.perf_counter()

            def sampler() -> None:
                while not stop.is_set():
                    row: dict[str, dict[str, float]] = {}
                    for n in c.nodes.values():
                        if n.running and n.http:
                            with contextlib.suppress(OSError):
                                row[n.name] = scrape(n.http)
                    samples.append((time.perf_counter() - t_join, row))
                    stop.wait(0.2)

            during_box: dict[str, Any] = {}

            def fg() -> None:
                during_box["r"] = foreground(
                    c, dict(spec, seconds=seconds, warmup=0.0, profile=profile)
                )

            fg_thread = threading.Thread(target=fg)
            fg_thread.start()
            # sample from before the join: n3 receives its partitions while it
            # bootstraps, i.e. before `start` returns (its /metrics is up by then)
            sampling = threading.Thread(target=sampler)
            sampling.start()
            c.start(["n3"])
            deadline = time.monotonic() + 600
            moved_at = None
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if len(samples) < 3:
                    continue
                last = samples[-1][1]
                # a node that did not answer /metrics in time counts as busy (its
                # loop is; counting it idle ended the move early before 2026-11-26)
                busy = len(last) < len(c.nodes) or any(
                    m.get("transfers_in_progress", 0) or m.get("transfers_queued", 0)
                    for m in last.values()
                )
                got = [s[1].get("n3", {}).get("records_received", 0) for s in samples[-3:]]
                if not busy and got[0] == got[-1] and got[-1] > 0:
                    moved_at = samples[-3][0]
                    break
            stop.set()
            sampling.join()
            fg_thread.join()
            during = during_box["r"]
            bar.update(task, advance=1, description="foreground after the join")
            after = foreground(c, dict(spec, seconds=seconds))
            final = {n.name: scrape(n.http, _FINAL) for n in c.nodes.values() if n.http}
            bar.update(task, advance=1)
    finally:
        c.close()
    received = [(t, row.get("n3", {}).get("records_received", 0.0)) for t, row in samples]
    total = received[-1][1] if received else 0.0
    first = next((t for t, v in received if v > 0), None)
    last = next((t for t, v in received if v >= total), None)
    receiving_s = (last - first) if first is not None and last is not None else float("nan")
    peak = 0.0
    for (t0_, v0), (t1_, v1) in itertools.pairwise(received):
        if t1_ > t0_:
            peak = max(peak, (v1 - v0) / (t1_ - t0_))
    return {
        "keys": keys,
        "partitions": partitions,
        "n": 2,
        "quorum": quorum,
        "concurrency": concurrency,
        "preload_s": preload_s,
        "records_received_by_joiner": total,
        "join_to_moved_s": moved_at,
        "receiving_s": receiving_s,
        "keys_per_s": total / receiving_s if receiving_s and receiving_s > 0 else float("nan"),
        "peak_keys_per_s": peak,
        "foreground": {"before": before, "during": during, "after": after},
        "final_metrics": final,
        "samples": [(round(t, 2), v) for t, v in received],
    }


class _Sub:
    """A view of some nodes of a cluster, for :func:`kv.bench_nodes`."""

    def __init__(self, c: LocalCluster, names: list[str]) -> None:
        self.nodes = {n: c[n] for n in names}


def _wait_members(c: LocalCluster, names: list[str], timeout: float = 30.0) -> None:
    async def go() -> None:
        client = TcpTransport("bench-rb", "127.0.0.1:0", TransportConfig(request_timeout=2.0))
        await client.start()
        try:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                sts = await asyncio.gather(
                    *(client.request(c[n].address, wire.status_frame()) for n in names),
                    return_exceptions=True,
                )
                if all(isinstance(s, dict) and len(s["members"]) == len(names) for s in sts):
                    return
                await asyncio.sleep(0.1)
            raise RuntimeError("the ring did not form in time")
        finally:
            await client.close()

    asyncio.run(go())


def print_result(r: dict[str, Any]) -> None:
    console.print(
        table(
            f"Rebalance: {r['keys']:,} keys, N=2, 2 -> 3 nodes, Q={r['partitions']}",
            ["keys moved to n3", "join -> moved s", "receiving s", "keys/s", "peak keys/s"],
            [(int(r["records_received_by_joiner"]), r["join_to_moved_s"] or float("nan"),
              r["receiving_s"], r["keys_per_s"], r["peak_keys_per_s"])],
        )
    )  # fmt: skip
    fg = r["foreground"]
    console.print(
        table(
            f"Foreground on n1 (bench op, 50% get/put, {r['concurrency']} outstanding, "
            f"R=W={r['quorum']})",
            ["window", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"],
            [(w, fg[w]["ops_s"], fg[w]["p50_ms"], fg[w]["p99_ms"], fg[w]["p999_ms"],
              sum(fg[w]["errors"].values())) for w in ("before", "during", "after")],
        )
    )  # fmt: skip


STEPS_SUBNET = "127.78.1"
#: (kind, node) of each step of ``--steps``
STEPS = (("add", "n4"), ("add", "n5"), ("remove", "n5"), ("remove", "n4"))


async def _statuses(addresses: list[str]) -> list[dict[str, Any] | None]:
    from peer_ring.transport import request_once

    async def one(address: str) -> dict[str, Any] | None:
        try:
            st: dict[str, Any] = await request_once(address, wire.status_frame(), timeout=2.0)
        except Exception:  # a node busy or gone: not settled
            return None
        return st

    return list(await asyncio.gather(*(one(a) for a in addresses)))


def _settled(c: LocalCluster, sts: list[dict[str, Any] | None]) -> bool:
    running = {n for n, p in c.nodes.items() if p.running}
    epochs = set()
    for st in sts:
        if st is None or {m["id"] for m in st["members"]} != running:
            return False
        counters = st["counters"]
        if counters["transfers_in_progress"] or counters["transfers_queued"]:
            return False
        epochs.add(st["epoch"])
    return len(epochs) == 1


def run_steps(
    keys: int, partitions: int, quorum: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Scale 3 -> 5 -> 3 under a foreground load; see the module docstring."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from peer_ring.ring import Ring, RingNode

    c = LocalCluster(
        3,
        subnet=STEPS_SUBNET,
        port=7600,
        replicas=3,
        partitions=partitions,
        extra_args=["--testing", "--read-quorum", str(quorum), "--write-quorum", str(quorum),
                    "--log-level", "WARNING"],
    )  # fmt: skip
    spec = {"keyspace": keys, "value_size": VALUE_SIZE, "read_ratio": 0.5, "warmup": 0.0,
            "concurrency": concurrency, "seed": 7}  # fmt: skip
    results: list[dict[str, Any]] = []
    bar = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        with bar:
            setup = bar.add_task("3 nodes, preload", total=2, detail="starting")
            c.start()
            _wait_members(c, ["n1", "n2", "n3"])
            bar.update(setup, advance=1, detail=f"preloading {keys:,} keys (N=3)")
            t0 = time.perf_counter()
            bench_nodes(
                c,
                {"seconds": 0, "warmup": 0, "ops": 0, "preload": [0, keys], "keyspace": keys,
                 "value_size": VALUE_SIZE},
                128,
            )  # fmt: skip
            preload_s = time.perf_counter() - t0
            bar.update(setup, advance=1, detail=f"{keys:,} keys in {preload_s:.1f} s")
            for kind, name in STEPS:
                results.append(_one_step(c, bar, kind, name, keys, spec, seconds, Ring, RingNode))
    finally:
        c.close()
    return {
        "keys": keys,
        "partitions": partitions,
        "n": 3,
        "quorum": quorum,
        "concurrency": concurrency,
        "preload_s": preload_s,
        "steps": results,
    }


def _one_step(
    c: LocalCluster,
    bar: Any,
    kind: str,
    name: str,
    keys: int,
    spec: dict[str, Any],
    seconds: float,
    ring_cls: Any,
    node_cls: Any,
) -> dict[str, Any]:
    """One add or remove, sampled until the cluster settled; its figures."""
    before = [n for n, p in c.nodes.items() if p.running]
    after = [*before, name] if kind == "add" else [n for n in before if n != name]
    future = ring_cls([node_cls(n) for n in after], partitions=c.partitions, replicas=3)
    if kind == "add":
        total = len(future.partitions_of(name))
    else:
        total = len(ring_cls([node_cls(n) for n in before], partitions=c.partitions,
                             replicas=3).partitions_of(name))  # fmt: skip
    task = bar.add_task(f"{kind} {name} ({len(before)} -> {len(after)})", total=total, detail="")
    if kind == "add":
        c.add(start=False)
    subject = c[name]
    base = (asyncio.run(_statuses([subject.address]))[0] or {}).get("counters", {})
    fg_box: dict[str, Any] = {}
    fg = None
    if spec["concurrency"]:

        def run_fg() -> None:
            fg_box["r"] = foreground(c, dict(spec, seconds=seconds))

        fg = threading.Thread(target=run_fg)
        fg.start()
    t0 = time.perf_counter()
    answer: dict[str, Any] = {}
    # a node is spawned from the main thread: its parent-death signal
    # (PR_SET_PDEATHSIG, see runner.die_with_parent) fires when the *thread*
    # that forked it ends, so a short-lived worker thread would take it along
    worker = threading.Thread(target=lambda: answer.update(c.decommission(name, 600.0)))
    if kind == "add":
        c.spawn(name)
    else:
        worker.start()

    def busy() -> bool:
        if kind == "add":
            if not subject.running:
                raise RuntimeError(f"{name} exited; log tail:\n{subject.log_tail()}")
            return not c.poll_ready(subject)
        return worker.is_alive()

    moved = sent_bytes = 0.0
    settled_at = None
    #: the joiner reported ready / the leaver answered its leave (hand-over done)
    own_at = None
    while time.perf_counter() - t0 < 900:
        time.sleep(0.1)
        procs = [p for p in c.nodes.values() if p.running or p.name == name]
        sts = asyncio.run(_statuses([p.address for p in procs]))
        me = next((st for st in sts if st and st["node"] == name), None)
        if me is not None:
            k = me["counters"]
            if kind == "add":
                moved = k["records_received"]
                syncing = k["bootstrap_partitions_syncing"]
                done = total - syncing if syncing else (0 if busy() else total)
            else:
                moved = k["records_sent"] - base.get("records_sent", 0)
                sent_bytes = k["bytes_sent"] - base.get("bytes_sent", 0)
                done = sum(
                    k[f] - base.get(f, 0) for f in ("transfers_completed", "transfers_failed")
                )
            rate = moved / max(time.perf_counter() - t0, 1e-9)
            bar.update(
                task, completed=min(done, total), detail=f"{moved:,.0f} records, {rate:,.0f}/s"
            )
        if busy():
            continue
        if own_at is None:
            own_at = time.perf_counter() - t0
        if _settled(c, [st for st, p in zip(sts, procs, strict=True) if p.running]):
            settled_at = time.perf_counter() - t0
            break
    if kind == "remove":
        worker.join()
    if fg is not None:
        fg.join()
    if kind == "remove":
        moved = float(answer.get("records", moved))
    step_s = settled_at if settled_at is not None else float("nan")
    bar.update(task, completed=total,
               detail=f"{moved:,.0f} records in {step_s:.1f} s")  # fmt: skip
    fgr = fg_box.get("r", {})
    return {
        "step": f"{kind} {name}",
        "nodes": f"{len(before)} -> {len(after)}",
        "seconds": step_s,
        # add: until the joiner is ready; remove: until the leave answered (the
        # preStop hook's part, what the grace-period formula is about)
        "own_seconds": own_at,
        "own_records_per_s": moved / own_at if own_at else float("nan"),
        "seconds_per_million_keys": step_s * 1e6 / keys,
        "records_moved": moved,
        "records_per_s": moved / step_s if step_s else float("nan"),
        "bytes_sent": sent_bytes if kind == "remove" else None,
        "bytes_per_s": sent_bytes / own_at if kind == "remove" and own_at else None,
        "partitions": total,
        "foreground": fgr,
    }


def print_steps(r: dict[str, Any]) -> None:
    console.print(
        table(
            f"Scaling 3 -> 5 -> 3: {r['keys']:,} keys, N=3, R=W={r['quorum']}, "
            f"Q={r['partitions']} (foreground on n1: {r['concurrency']} outstanding)",
            ["step", "nodes", "partitions", "seconds", "s per 1M keys", "ready/left s",
             "records moved", "records/s", "MB/s sent", "fg p50 ms", "fg p99 ms"],
            [(s["step"], s["nodes"], s["partitions"], s["seconds"], s["seconds_per_million_keys"],
              s["own_seconds"] or float("nan"), int(s["records_moved"]), s["own_records_per_s"],
              (s["bytes_per_s"] or float("nan")) / 1e6,
              s["foreground"].get("p50_ms", float("nan")),
              s["foreground"].get("p99_ms", float("nan"))) for s in r["steps"]],
        )
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000, help="keys preloaded (and moved)")
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--quorum", type=int, default=1, choices=(1, 2), help="R and W")
    ap.add_argument("--concurrency", type=int, default=16, help="foreground outstanding ops")
    ap.add_argument("--seconds", type=float, default=5.0, help="foreground window length")
    ap.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile n1 (a sender serving the foreground) during the join into PATH",
    )
    ap.add_argument(
        "--steps",
        action="store_true",
        help="scale 3 -> 5 -> 3 (add, add, remove, remove) with N=3 and report each step",
    )
    args = ap.parse_args()
    if args.steps:
        quorum = 2 if "--quorum" not in sys.argv else args.quorum
        steps = run_steps(args.keys, args.partitions, quorum, args.concurrency, args.seconds)
        print_steps(steps)
        console.print(f"results: {write_results('rebalance-steps', steps)}")
        return
    profile = str(Path(args.profile).resolve()) if args.profile else None
    result = run(args.keys, args.partitions, args.quorum, args.concurrency, args.seconds, profile)
    print_result(result)
    path = write_results("rebalance", result)
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
