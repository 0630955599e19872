"""Benchmark of the replicated KV store: embedded load, RESP, memory per key.

Run: ``.venv/bin/python bench/kv.py`` (every part), or one part with
``--embedded``, ``--resp`` or ``--memory``; ``--help`` for the rest.

* **embedded** -- real node processes (:class:`LocalCluster`, ``--testing``,
  N=3, R=W=2) on loopback aliases 127.77.0.x. The load is generated *inside*
  every node process at once by the ``bench`` peer op (registered only with
  ``--testing``; ``peer_ring.testing.loadgen``): closed-loop workers call
  the node's embedded ``KVStore.get`` / ``put`` (full quorum operations),
  100-byte values, keys uniform over a preloaded key space. Mixes:
  read-heavy (95 % gets), write-heavy (50 %), pure put, pure get; 64 and 256
  operations outstanding in total (split over the nodes); 3 and 5 nodes.
  Reported: ops/s, p50/p99/p99.9 latency, CPU per operation (process
  user+system time of every node over the measured window / operations),
  and a log-spaced histogram of every latency (``latency_hist``, for CDFs:
  ``bench/plot.py``).
  ``--runs K`` repeats the whole sweep K times (interleaved) and keeps, per
  case, the run with the median ops/s plus every run's ops/s, p99 and CPU
  per operation. ``--owned``: each node draws only keys it replicates (no
  coordinator outside the preference list); ``--pin CPUS``: node i runs on
  core ``CPUS[i % len]`` (``--pin 1``: all on one core) -- together they
  separate the extra hop of 5 nodes from five processes sharing two cores.
  The throughput-vs-concurrency sweep behind ``docs/img/``::

      .venv/bin/python bench/kv.py --embedded --sizes 3 --mixes get,put \
          --concurrency 8,16,32,64,128,256 --seconds 2 --runs 5 --output kv-sweep

* **resp** -- ``redis-benchmark -t set,get -c 50 -q`` (with and without
  ``-P 16``) against one node of a 3-node N=3 cluster, a 1-node N=1
  peer-ring and a plain ``redis-server --save '' --appendonly no`` that this
  script starts on 127.77.1.1 and stops by its PID; ratios to redis-server.
  ``--runs K`` takes the three targets in turn K times (fresh servers each
  run) and keeps the median of each figure, every run's figures, and the
  median of the per-run ratios to redis-server -- the figure that moves
  least with the machine's load::

      .venv/bin/python bench/kv.py --resp --requests 300000 --pipelines 1,16 --runs 3
* **memory** -- RSS growth (``/proc/PID/status`` VmRSS) of 3 nodes, N=3,
  after loading ``--keys`` keys (default 200,000; ``--keys 1000000`` for the
  documented large run): bytes per key per replica beyond key + value.

Prints rich tables and writes ``bench/results/kv.json``. Every run is
bounded (``--seconds`` per case, request counts, subprocess timeouts) and
stops every process it started by PID.

Targets on the 2-core reference machine (load generator included): embedded
N=3 W=2 R=2 >= 15,000 puts/s and >= 20,000 gets/s with p99 <= 20 ms at 64
outstanding; RESP ``-c 50`` against the 3-node cluster >= 25 % of
redis-server; <= 250 bytes overhead per key per replica.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from _util import console, percentiles, progress, table, write_results
from peer_ring import wire
from peer_ring.testing.cluster import LocalCluster
from peer_ring.transport.base import TLSConfig, TransportConfig
from peer_ring.transport.tcp import TcpTransport

SUBNET = "127.77.0"
REDIS_HOST = "127.77.1.1"
VALUE_SIZE = 100
MIXES: dict[str, float] = {"read-heavy": 0.95, "write-heavy": 0.5, "put": 0.0, "get": 1.0}
KEY_BYTES = 11  # b"k" + 10 digits


#: ``--security mtls``: the directory of the run's throwaway PKI (None: plaintext).
SECURITY: dict[str, str | None] = {"pki": None}


def _pki() -> str:
    """Certificates for mTLS runs: one per node id of the largest cluster, and
    the admin certificate the bench client uses (``bench`` and ``st`` are admin
    operations once peers authenticate)."""
    import tempfile

    from peer_ring.testing.pki import TestPKI

    pki = TestPKI(tempfile.mkdtemp(prefix="bench-kv-pki-"))
    for i in range(1, 17):
        pki.issue(f"n{i}", ips=(f"{SUBNET}.{i + 1}",))
    pki.issue("peer-ring-admin")
    return str(pki.dir)


def _client_tls() -> TLSConfig | None:
    d = SECURITY["pki"]
    if d is None:
        return None
    return TLSConfig.mutual(f"{d}/peer-ring-admin.pem", f"{d}/peer-ring-admin.key",
                            f"{d}/ca.pem", reload_interval=None)  # fmt: skip


def cluster(size: int, replicas: int = 3, *, resp: bool = False, port: int = 7500) -> LocalCluster:
    """A ``--testing`` cluster with R=W=min(2, N) on 127.77.0.x (mTLS between
    the nodes when ``SECURITY["pki"]`` is set)."""
    q = str(min(2, replicas))
    d = SECURITY["pki"]
    per_node = None
    if d is not None:
        per_node = {
            f"n{i}": ["--tls-cert", f"{d}/n{i}.pem", "--tls-key", f"{d}/n{i}.key",
                      "--tls-ca", f"{d}/ca.pem"]
            for i in range(1, size + 1)
        }  # fmt: skip
    return LocalCluster(
        size,
        subnet=SUBNET,
        port=port,
        replicas=replicas,
        resp_port=6390 if resp else None,
        extra_args=["--testing", "--read-quorum", q, "--write-quorum", q, "--log-level", "WARNING"],
        per_node_args=per_node,
    )


async def _bench_all(
    addresses: list[str], specs: list[dict[str, Any]], timeout: float
) -> list[Any]:
    client = TcpTransport(
        "bench-kv", "127.0.0.1:0", TransportConfig(request_timeout=timeout, tls=_client_tls())
    )
    await client.start()
    try:
        pairs = zip(addresses, specs, strict=True)
        return list(
            await asyncio.gather(
                *(client.request(a, wire.bench_frame(s), timeout) for a, s in pairs)
            )
        )
    finally:
        await client.close()


async def _wait_ring(addresses: list[str], deadline: float) -> None:
    client = TcpTransport(
        "bench-kv", "127.0.0.1:0", TransportConfig(request_timeout=2.0, tls=_client_tls())
    )
    await client.start()
    try:
        while True:
            views = await asyncio.gather(
                *(client.request(a, wire.status_frame()) for a in addresses), return_exceptions=True
            )
            if all(
                isinstance(v, dict)
                and len(v["members"]) == len(addresses)
                and all(m["state"] == "up" and m["partitions"] > 0 for m in v["members"])
                for v in views
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ring did not form in time: {views}")
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def pin(c: LocalCluster, cpus: list[int]) -> list[tuple[str, int]]:
    """Pin node ``i`` (every thread of its process) to core ``cpus[i % len(cpus)]``
    (``--pin``: one core for all, or one per node): the node -> core map."""
    placed = []
    for i, node in enumerate(c.nodes.values()):
        assert node.pid is not None
        cpu = cpus[i % len(cpus)]
        for task in Path(f"/proc/{node.pid}/task").iterdir():
            os.sched_setaffinity(int(task.name), {cpu})
        placed.append((node.name, cpu))
    return placed


def wait_ring(c: LocalCluster, timeout: float = 30.0) -> None:
    """Wait until every node sees every node up and owning partitions."""
    asyncio.run(_wait_ring(c.addresses(), time.monotonic() + timeout))


def bench_nodes(c: LocalCluster, spec: dict[str, Any], concurrency: int) -> list[dict[str, Any]]:
    """Run the ``bench`` op on every node at once; ``concurrency`` is split over them."""
    nodes = list(c.nodes.values())
    n = len(nodes)
    specs = []
    for i in range(n):
        s = dict(spec, concurrency=concurrency // n + (1 if i < concurrency % n else 0), seed=i + 1)
        pre = spec.get("preload")
        if pre:  # each node loads its slice of [start, stop)
            lo, hi = pre
            step = (hi - lo + n - 1) // n
            s["preload"] = [min(hi, lo + i * step), min(hi, lo + (i + 1) * step)]
        if spec.get("profile"):
            s["profile"] = f"{spec['profile']}.{nodes[i].name}"
        specs.append(s)
    timeout = 60.0 + 2 * float(spec.get("seconds", 3)) + float(spec.get("warmup", 0.5))
    timeout += spec.get("preload", [0, 0])[1] / 2000.0  # generous: preload at >= 2,000 puts/s
    return asyncio.run(_bench_all([x.address for x in nodes], specs, timeout))


def summarize(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Cluster totals of one case from every node's ``bench`` answer."""
    ops = sum(a["ops"] for a in answers)
    wall = max(a["wall"] for a in answers) or 1e-9
    cpu = sum(a["cpu"] for a in answers)
    lat: list[int] = []
    for a in answers:
        samples = array.array("I")
        samples.frombytes(a["samples"])
        lat.extend(samples)
    pct = percentiles([x / 1000.0 for x in lat])
    errors: dict[str, int] = {}
    for a in answers:
        for k, v in a["errors"].items():
            errors[k] = errors.get(k, 0) + v
    # garbage-collector pauses of the window, per generation, over all nodes
    gc_pauses = [[0, 0.0, 0.0] for _ in range(3)]
    for a in answers:
        for g, (n, total, longest) in enumerate(a.get("gc", ())):
            gc_pauses[g][0] += n
            gc_pauses[g][1] += total
            gc_pauses[g][2] = max(gc_pauses[g][2], longest)
    return {
        "ops": ops,
        "ops_s": ops / wall,
        "gets_s": sum(a["get"] for a in answers) / wall,
        "puts_s": sum(a["put"] for a in answers) / wall,
        "hit_ratio": sum(a["hit"] for a in answers) / max(1, sum(a["get"] for a in answers)),
        "p50_ms": pct["p50"],
        "p99_ms": pct["p99"],
        "p999_ms": pct["p999"],
        "cpu_us_per_op": cpu / max(1, ops) * 1e6,
        "sys_us_per_op": sum(a.get("cpu_sys", 0.0) for a in answers) / max(1, ops) * 1e6,
        "cpu_us_per_op_node": [a["cpu"] / max(1, a["ops"]) * 1e6 for a in answers],
        "cpu_util_node": [a["cpu"] / max(1e-9, a["wall"]) for a in answers],
        "errors": errors,
        "latency_hist": merge_hists([a.get("hist") for a in answers]),
        "gc_pauses": gc_pauses,
    }


def merge_hists(hists: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Sum the nodes' log-spaced latency histograms (``bench`` op ``hist``).

    Bucket ``first + j`` holds latencies in ``[10**(b/k), 10**((b+1)/k))`` µs
    (``k = per_decade``; bucket 0 also holds 0 µs). None if a node sent none.
    """
    if not hists or any(h is None for h in hists):
        return None
    per_decade = {h["per_decade"] for h in hists if h is not None}
    if len(per_decade) != 1:
        raise ValueError(f"nodes sent histograms of different resolutions: {per_decade}")
    total: dict[int, int] = {}
    for h in hists:
        assert h is not None
        for j, n in enumerate(h["counts"]):
            if n:
                total[h["first"] + j] = total.get(h["first"] + j, 0) + n
    first = min(total, default=0)
    last = max(total, default=-1)
    return {
        "unit": "us",
        "per_decade": per_decade.pop(),
        "first": first,
        "counts": [total.get(b, 0) for b in range(first, last + 1)],
    }


def embedded(
    sizes: list[int],
    concurrencies: list[int],
    mixes: list[str],
    seconds: float,
    warmup: float,
    keyspace: int,
    profile_dir: str | None = None,
    runs: int = 1,
    batch: int = 1,
    owned: bool = False,
    cpus: list[int] | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    total = len(sizes) * len(concurrencies) * len(mixes) * runs
    with progress() as bar:
        task = bar.add_task("embedded", total=total)
        for size in sizes:
            replicas = min(3, size)
            bar.update(task, description=f"embedded: starting {size} nodes")
            with cluster(size, replicas) as c:
                wait_ring(c)
                placed = pin(c, cpus) if cpus else None
                bar.update(task, description=f"embedded: preloading {keyspace:,} keys")
                base: dict[str, Any] = {"keyspace": keyspace, "value_size": VALUE_SIZE}
                bench_nodes(c, dict(base, seconds=0, warmup=0, ops=0, preload=[0, keyspace]), 64)
                cases = [(r, conc, mix) for r in range(runs) for conc in concurrencies
                         for mix in mixes]  # fmt: skip
                size_rows: list[dict[str, Any]] = []
                for run, conc, mix in cases:
                    where = f" run {run + 1}/{runs}" if runs > 1 else ""
                    bar.update(task, description=f"embedded: {size} nodes {mix} c={conc}{where}")
                    spec: dict[str, Any] = dict(
                        base, seconds=seconds, warmup=warmup, read_ratio=MIXES[mix]
                    )
                    if batch > 1:
                        spec["batch"] = batch
                    if owned:
                        spec["owned"] = True
                    if profile_dir:
                        Path(profile_dir).mkdir(parents=True, exist_ok=True)
                        spec["profile"] = str(
                            Path(profile_dir).resolve() / f"kv-{size}-{mix}-{conc}.prof"
                        )
                    answers = bench_nodes(c, spec, conc)
                    size_rows.append(
                        {
                            "nodes": size,
                            "n": replicas,
                            "r": min(2, replicas),
                            "w": min(2, replicas),
                            "mix": mix,
                            "concurrency": conc,
                            "batch": batch,
                            "owned": owned,
                            "pinned": placed,
                            **summarize(answers),
                        }
                    )
                    bar.advance(task)
                rows.extend(median_runs(size_rows) if runs > 1 else size_rows)
    return rows


def median_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (nodes, concurrency, mix): the run with the median ops/s.

    The kept row also lists every run's ops/s, p99 and CPU per operation
    (``ops_s_runs``, ``p99_ms_runs``, ``cpu_us_per_op_runs``,
    ``sys_us_per_op_runs``, in run order) so the spread can be shown.
    """
    groups: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r.get("security", "plain"), r["nodes"], r["concurrency"], r["mix"])
        groups.setdefault(key, []).append(r)
    out = []
    for group in groups.values():
        ranked = sorted(group, key=lambda r: r["ops_s"])
        mid = dict(ranked[(len(ranked) - 1) // 2])
        mid["runs"] = len(group)
        mid["ops_s_runs"] = [r["ops_s"] for r in group]
        mid["p99_ms_runs"] = [r["p99_ms"] for r in group]
        mid["cpu_us_per_op_runs"] = [r["cpu_us_per_op"] for r in group]
        mid["sys_us_per_op_runs"] = [r["sys_us_per_op"] for r in group]
        out.append(mid)
    return out


def print_embedded(rows: list[dict[str, Any]], title: str = "KV embedded load") -> None:
    cols = ["security", "nodes", "mix", "outstanding", "batch", "keys", "cores", "ops/s",
            "gets/s", "puts/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/op", "sys µs/op",
            "errors"]  # fmt: skip
    data = [
        (r.get("security", "plain"), r["nodes"], r["mix"], r["concurrency"], r.get("batch", 1),
         "owned" if r.get("owned") else "all",
         ",".join(str(c) for _, c in r["pinned"]) if r.get("pinned") else "any",
         r["ops_s"],
         r["gets_s"], r["puts_s"],
         r["p50_ms"], r["p99_ms"], r["p999_ms"], r["cpu_us_per_op"], r["sys_us_per_op"],
         sum(r["errors"].values()))
        for r in rows
    ]  # fmt: skip
    console.print(table(title, cols, data))


# -- RESP ----------------------------------------------------------------------

#: ``redis-benchmark --csv`` rows: "test","rps","avg","min","p50","p95","p99","max" (ms)
_RB_CSV = re.compile(
    r'^"(SET|GET)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)"'
)


def redis_benchmark(
    host: str, port: int, requests: int, pipeline: int, timeout: float
) -> dict[str, Any]:
    """``redis-benchmark -t set,get --csv`` with 50 clients; rps, p50 and p99 per test."""
    cmd = ["redis-benchmark", "-h", host, "-p", str(port), "-t", "set,get", "-n", str(requests)]
    cmd += ["-c", "50", "-d", str(VALUE_SIZE), "-r", "100000", "--csv"]
    if pipeline > 1:
        cmd += ["-P", str(pipeline)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    result: dict[str, Any] = {"command": " ".join(cmd)}
    for line in re.split(r"[\r\n]+", out):
        m = _RB_CSV.match(line.strip())
        if m:
            result[m.group(1).lower()] = {
                "rps": float(m.group(2)),
                "p50_ms": float(m.group(5)),
                "p99_ms": float(m.group(7)),
                "max_ms": float(m.group(8)),
            }
    return result


class RedisServer:
    """A plain redis-server on a loopback port, no persistence; stopped by its PID."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", host, "--port", str(port), "--save", "", "--appendonly",
             "no", "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ok = subprocess.run(
                ["redis-cli", "-h", host, "-p", str(port), "ping"], capture_output=True, text=True
            )
            if ok.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def resp(requests: int, pipelines: list[int], runs: int = 1) -> list[dict[str, Any]]:
    """redis-benchmark SET/GET against redis-server, a 1-node and a 3-node
    cluster. With ``runs`` > 1 the three targets take turns, run after run
    (each run starts fresh servers), so redis-server is measured in the same
    minutes as peer-ring; a row keeps the median rps, p50 and p99 of its runs,
    every run's figures (``rps_runs``, ``p99_ms_runs``) and the median of the
    per-run ratios to redis-server (``ratio_to_redis``), which moves much
    less with the machine's load than the rates do."""
    if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
        console.print("[yellow]resp: redis-benchmark / redis-server not installed, skipped")
        return []
    per_run: list[list[dict[str, Any]]] = []
    targets: list[tuple[str, Any]] = [
        ("redis-server", None),
        ("peer-ring 1 node N=1", (1, 1)),
        ("peer-ring 3 nodes N=3", (3, 3)),
    ]
    timeout = 60.0 + requests / 500.0
    with progress() as bar:
        task = bar.add_task("resp", total=len(targets) * len(pipelines) * runs)
        for run in range(runs):
            rows: list[dict[str, Any]] = []
            for name, shape in targets:
                where = f" run {run + 1}/{runs}" if runs > 1 else ""
                bar.update(task, description=f"resp: {name}{where}")
                if shape is None:
                    server = RedisServer(REDIS_HOST, 6391)
                    try:
                        for p in pipelines:
                            res = redis_benchmark(REDIS_HOST, 6391, requests, p, timeout)
                            rows.append({"target": name, "pipeline": p, **res})
                            bar.advance(task)
                    finally:
                        server.stop()
                    continue
                size, replicas = shape
                with cluster(size, replicas, resp=True) as c:
                    wait_ring(c)
                    first = c["n1"]
                    for p in pipelines:
                        res = redis_benchmark(first.ip, 6390, requests, p, timeout)
                        rows.append({"target": name, "pipeline": p, **res})
                        bar.advance(task)
            base = {r["pipeline"]: r for r in rows if r["target"] == "redis-server"}
            for r in rows:
                for op in ("set", "get"):
                    ref = base.get(r["pipeline"], {}).get(op)
                    if op in r and ref:
                        r[op]["ratio_to_redis"] = r[op]["rps"] / ref["rps"]
            per_run.append(rows)
    return per_run[0] if runs == 1 else median_resp(per_run)


def median_resp(per_run: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (target, -P): the median of each figure over the runs, and
    the figures of every run in run order (``*_runs``)."""
    out: list[dict[str, Any]] = []
    for i, first in enumerate(per_run[0]):
        group = [rows[i] for rows in per_run]
        row: dict[str, Any] = {"target": first["target"], "pipeline": first["pipeline"]}
        row["runs"] = len(group)
        row["commands"] = [r["command"] for r in group]
        for op in ("set", "get"):
            have = [r[op] for r in group if op in r]
            if not have:
                continue
            cell: dict[str, Any] = {}
            for field in ("rps", "p50_ms", "p99_ms", "max_ms", "ratio_to_redis"):
                values = [h[field] for h in have if field in h]
                if values:
                    cell[field] = statistics.median(values)
                    cell[field + "_runs"] = values
            row[op] = cell
        out.append(row)
    return out


def print_resp(rows: list[dict[str, Any]]) -> None:
    def cell(r: dict[str, Any], op: str, field: str) -> Any:
        v = r.get(op, {}).get(field)
        return float("nan") if v is None else v

    cols = ["target", "-P", "SET/s", "SET vs redis", "GET/s", "GET vs redis", "SET p50 ms",
            "SET p99 ms", "GET p50 ms", "GET p99 ms"]  # fmt: skip
    data = [
        (r["target"], r["pipeline"], cell(r, "set", "rps"), cell(r, "set", "ratio_to_redis"),
         cell(r, "get", "rps"), cell(r, "get", "ratio_to_redis"), cell(r, "set", "p50_ms"),
         cell(r, "set", "p99_ms"), cell(r, "get", "p50_ms"), cell(r, "get", "p99_ms"))
        for r in rows
    ]  # fmt: skip
    runs = max((r.get("runs", 1) for r in rows), default=1)
    title = "RESP: redis-benchmark -c 50, 100-byte values"
    if runs > 1:
        title += f", median of {runs} runs (ratio: median of the per-run ratios)"
    console.print(table(title, cols, data))


# -- memory ----------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory(keys: int) -> dict[str, Any]:
    with progress() as bar:
        task = bar.add_task(f"memory: starting 3 nodes, N=3, then {keys:,} keys", total=2)
        with cluster(3, 3) as c:
            wait_ring(c)
            pids = [n.pid for n in c.nodes.values() if n.pid is not None]
            # one tiny round first so the code paths and buffers exist before the baseline
            bench_nodes(c, {"seconds": 0, "warmup": 0, "ops": 0, "preload": [0, 300],
                            "prefix": b"w", "keyspace": 300}, 30)  # fmt: skip
            before = [rss_bytes(p) for p in pids]
            bar.advance(task)
            t0 = time.perf_counter()
            answers = bench_nodes(
                c,
                {"seconds": 0, "warmup": 0, "ops": 0, "preload": [0, keys], "keyspace": keys,
                 "value_size": VALUE_SIZE},
                96,
            )  # fmt: skip
            load_s = time.perf_counter() - t0
            time.sleep(0.5)
            after = [rss_bytes(p) for p in pids]
            bar.advance(task)
    growth = sum(a - b for a, b in zip(after, before, strict=True))
    per_key_replica = growth / (keys * 3)
    return {
        "keys": keys,
        "nodes": 3,
        "n": 3,
        "key_bytes": KEY_BYTES,
        "value_bytes": VALUE_SIZE,
        "rss_before": before,
        "rss_after": after,
        "load_seconds": load_s,
        "preload_seconds_node": [a["preload_s"] for a in answers],
        "bytes_per_key_replica": per_key_replica,
        "overhead_per_key_replica": per_key_replica - KEY_BYTES - VALUE_SIZE,
    }


def print_memory(m: dict[str, Any]) -> None:
    cols = ["keys", "RSS growth MiB (all nodes)", "bytes/key/replica", "overhead B/key/replica",
            "load s", "writes/s while loading"]  # fmt: skip
    growth = sum(a - b for a, b in zip(m["rss_after"], m["rss_before"], strict=True))
    data = [(m["keys"], growth / 2**20, m["bytes_per_key_replica"], m["overhead_per_key_replica"],
             m["load_seconds"], m["keys"] / m["load_seconds"])]  # fmt: skip
    console.print(table("KV memory, 3 nodes, N=3", cols, data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embedded", action="store_true", help="run the embedded-load part")
    ap.add_argument("--resp", action="store_true", help="run the redis-benchmark part")
    ap.add_argument("--memory", action="store_true", help="run the memory part")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per case")
    ap.add_argument("--sizes", default="3,5", help="cluster sizes (embedded)")
    ap.add_argument("--concurrency", default="64,256", help="total outstanding operations")
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"of {', '.join(MIXES)}")
    ap.add_argument(
        "--batch", type=int, default=1,
        help="embedded: keys per call (get_many / put_many of K keys; ops count keys)",
    )  # fmt: skip
    ap.add_argument(
        "--owned", action="store_true",
        help="embedded: each node uses only keys it replicates (no coordinator outside the"
        " preference list)",
    )  # fmt: skip
    ap.add_argument(
        "--pin", metavar="CPUS",
        help="embedded: pin node i (all its threads) to core CPUS[i %% len]: '1' puts every"
        " node on core 1, '0,1' alternates them (default: not pinned)",
    )  # fmt: skip
    ap.add_argument("--keyspace", type=int, default=20_000, help="keys (embedded; preloaded)")
    ap.add_argument("--requests", type=int, default=100_000, help="redis-benchmark -n")
    ap.add_argument("--pipelines", default="1,16", help="redis-benchmark -P values")
    ap.add_argument("--keys", type=int, default=200_000, help="keys loaded (memory)")
    ap.add_argument("--profile", metavar="DIR", help="cProfile each node per case into DIR")
    ap.add_argument(
        "--security", default="plain",
        help="embedded part: plain, mtls (nodes authenticate by certificate) or plain,mtls",
    )  # fmt: skip
    ap.add_argument(
        "--runs", type=int, default=1, help="repeat the embedded sweep or RESP runs; keep medians"
    )
    ap.add_argument(
        "--output", help="results file name, no .json (default: kv, or kv-PART for one part)"
    )
    args = ap.parse_args()
    everything = not (args.embedded or args.resp or args.memory)
    results: dict[str, Any] = {}
    if everything or args.embedded:
        rows = []
        for mode in args.security.split(","):
            if mode not in ("plain", "mtls"):
                ap.error("--security takes plain, mtls or plain,mtls")
            SECURITY["pki"] = _pki() if mode == "mtls" else None
            part = embedded(
                [int(x) for x in args.sizes.split(",")],
                [int(x) for x in args.concurrency.split(",")],
                [m for m in args.mixes.split(",") if m],
                args.seconds,
                args.warmup,
                args.keyspace,
                args.profile,
                max(1, args.runs),
                args.batch,
                args.owned,
                [int(x) for x in args.pin.split(",")] if args.pin else None,
            )
            rows += [dict(r, security=mode) for r in part]
        SECURITY["pki"] = None
        results["embedded"] = rows
        print_embedded(rows)
    if everything or args.resp:
        rrows = resp(args.requests, [int(x) for x in args.pipelines.split(",")], max(1, args.runs))
        results["resp"] = rrows
        if rrows:
            print_resp(rrows)
    if everything or args.memory:
        m = memory(args.keys)
        results["memory"] = m
        print_memory(m)
    name = args.output or ("kv" if everything else "kv-" + "-".join(results))
    path = write_results(name, results)
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
