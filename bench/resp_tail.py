"""Where a RESP command's latency tail comes from: GC pauses and event-loop stalls.

``bench/kv.py --resp`` reports redis-benchmark's p99 per test; this script
runs the same load -- ``redis-benchmark -t set`` then ``-t get``, ``-c 50 -d
100 -r 100000 -P P -n REQUESTS --csv`` against a fresh ``--testing`` node
(1 node N=1 by default, or node n1 of ``--nodes 3``) -- with node n1 started
through a small wrapper that records, inside the node process and without
changing its code:

* every garbage collection: its generation, start and pause (``gc.callbacks``,
  the first callback, so the pacer's own callback is inside the pause);
* every event-loop stall: a callback scheduled every ``--probe`` ms on the
  node's loop (started with the node's :class:`~peer_ring.runner.GcPacer`)
  notes by how much it ran late; lateness above ``--stall`` ms is a stall
  (the loop was busy with one thing that long: a collection, or one read's
  worth of commands).

Per test it prints redis-benchmark's rps, p50, p99 and max, the node's
collections in the test's window per generation (count, total, longest
pause) and the stalls (count, longest; how many overlap a collection), so a
p99 is explained in numbers: a pause of ``t`` ms stalls every one of the
``50 * P`` commands in flight for ``t`` ms, and a test of ``REQUESTS``
commands has ``REQUESTS / 100`` commands above its p99. Repeated
``--runs`` times, a fresh node each.

    .venv/bin/python bench/resp_tail.py --pipeline 16 --runs 3
    .venv/bin/python bench/resp_tail.py --pace 0.005,0.02,0.01   # another pacer policy

Run inside ``unshare -n`` (it binds 127.79.0.x). The probe costs the node a
callback per ``--probe`` ms (well under 1 % of a core).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import console, stop_processes, table, wait_ready, write_results
from peer_ring.testing.cluster import node_args

SUBNET = "127.79.0"
PEER_PORT = 7700
RESP_PORT = 6393
_RB_CSV = re.compile(
    r'^"(SET|GET)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)","([\d.]+)"'
)

#: Run inside node n1 (``python -c``): records collections and loop stalls to
#: the file named by argv[1] (probe and stall in ms: argv[2:4]), sets the
#: pacer's parameters from argv[4] if given, then runs ``peer_ring`` with argv[5:].
WRAPPER = r"""
import gc, sys, time, runpy
out = open(sys.argv[1], "w", buffering=1)
probe_s = float(sys.argv[2]) / 1000.0
stall_s = float(sys.argv[3]) / 1000.0
_start = [0.0]
def _on_gc(phase, info, _pc=time.perf_counter, _start=_start):
    now = _pc()
    if phase == "start":
        _start[0] = now
        return
    out.write("gc %d %.6f %.6f\n" % (info["generation"], _start[0], now - _start[0]))
gc.callbacks.insert(0, _on_gc)
import peer_ring.runner as runner
if sys.argv[4]:  # --pace MIN,MAX,DUTY: the pacer's parameters for this run
    runner.GcPacer.__init__.__defaults__ = tuple(float(x) for x in sys.argv[4].split(","))
_orig_start = runner.GcPacer.start
def _start_with_probe(self, loop):
    _orig_start(self, loop)
    due = [time.perf_counter() + probe_s]
    def tick():
        now = time.perf_counter()
        late = now - due[0]
        if late > stall_s:
            out.write("stall %.6f %.6f\n" % (due[0], late))
        due[0] = now + probe_s
        loop.call_later(probe_s, tick)
    loop.call_later(probe_s, tick)
runner.GcPacer.start = _start_with_probe
sys.argv = ["peer_ring", *sys.argv[5:]]
runpy.run_module("peer_ring", run_name="__main__", alter_sys=True)
"""


def rbench(test: str, a: argparse.Namespace) -> tuple[dict[str, float], float, float]:
    """One redis-benchmark test against n1: its figures and the window (perf_counter)."""
    cmd = ["redis-benchmark", "-h", f"{SUBNET}.2", "-p", str(RESP_PORT), "-t", test,
           "-n", str(a.requests), "-c", "50", "-d", "100", "-r", "100000", "--csv"]  # fmt: skip
    if a.pipeline > 1:
        cmd += ["-P", str(a.pipeline)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    t1 = time.perf_counter()
    for line in re.split(r"[\r\n]+", out):
        m = _RB_CSV.match(line.strip())
        if m:
            return (
                {"rps": float(m.group(2)), "p50_ms": float(m.group(5)),
                 "p99_ms": float(m.group(7)), "max_ms": float(m.group(8))},
                t0, t1,
            )  # fmt: skip
    raise RuntimeError(f"no result from redis-benchmark: {out!r}")


def ring_formed(size: int) -> bool:
    for k in range(size):
        done = subprocess.run(
            [sys.executable, "-m", "peer_ring", "status", "--json", "--node",
             f"{SUBNET}.{k + 2}:{PEER_PORT}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            members = json.loads(done.stdout).get("members", [])
        except ValueError:
            return False
        if len(members) != size or not all(
            m["state"] == "up" and m["partitions"] > 0 for m in members
        ):
            return False
    return True


def one_run(a: argparse.Namespace, run: int) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="resp-tail-"))
    record = tmp / "n1.events"
    ips = [f"{SUBNET}.{k + 2}" for k in range(a.nodes)]
    seeds = [f"{ips[0]}:{PEER_PORT}"]
    q = str(min(2, a.nodes))
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for i, ip in enumerate(ips):
            args = node_args(
                f"n{i + 1}", f"{ip}:{PEER_PORT}", seeds, replicas=a.nodes,
                resp=f"{ip}:{RESP_PORT}",
                extra_args=["--testing", "--read-quorum", q, "--write-quorum", q,
                            "--log-level", "WARNING"],
            )  # fmt: skip
            if i == 0:
                cmd = [sys.executable, "-c", WRAPPER, str(record), str(a.probe), str(a.stall),
                       a.pace, "node", *args]  # fmt: skip
            else:
                cmd = [sys.executable, "-m", "peer_ring", "node", *args]
            log = open(tmp / f"n{i + 1}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env))
        for i, p in enumerate(procs):
            wait_ready(p, f"n{i + 1}", 60.0)
        deadline = time.monotonic() + 60
        while not ring_formed(a.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the ring did not form")
            time.sleep(0.2)
        windows = []
        for test in ("set", "get"):
            figures, t0, t1 = rbench(test, a)
            windows.append((test, figures, t0, t1))
        time.sleep(0.2)  # the last records reach the file
    finally:
        stop_processes(procs, 30)
    gcs: list[tuple[int, float, float]] = []
    stalls: list[tuple[float, float]] = []
    for line in record.read_text().splitlines():
        f = line.split()
        if f[0] == "gc":
            gcs.append((int(f[1]), float(f[2]), float(f[3])))
        elif f[0] == "stall":
            stalls.append((float(f[1]), float(f[2])))
    rows = []
    for test, figures, t0, t1 in windows:
        row: dict[str, Any] = {"run": run, "test": test, **figures, "seconds": round(t1 - t0, 3)}
        mine = [g for g in gcs if t0 <= g[1] <= t1]
        for gen in (0, 1, 2):
            pauses = [g[2] * 1000 for g in mine if g[0] == gen]
            row[f"gc{gen}_n"] = len(pauses)
            row[f"gc{gen}_total_ms"] = round(sum(pauses), 2)
            row[f"gc{gen}_max_ms"] = round(max(pauses, default=0.0), 2)
        late = [s for s in stalls if t0 <= s[0] <= t1]
        row["stalls"] = len(late)
        row["stall_max_ms"] = round(max((s[1] * 1000 for s in late), default=0.0), 2)
        # a stall overlapping a collection: the collection began while the probe waited
        row["stalls_with_gc"] = sum(
            1 for s in late if any(s[0] - a.probe / 1000 <= g[1] <= s[0] + s[1] for g in mine)
        )
        row["stall_top_ms"] = sorted((round(s[1] * 1000, 1) for s in late), reverse=True)[:8]
        rows.append(row)
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1, help="cluster size (N = nodes)")
    ap.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P")
    ap.add_argument("--requests", type=int, default=100_000, help="redis-benchmark -n")
    ap.add_argument("--runs", type=int, default=3, help="fresh nodes, one after another")
    ap.add_argument("--probe", type=float, default=1.0, help="ms between loop probes")
    ap.add_argument("--stall", type=float, default=3.0, help="ms of lateness counted as a stall")
    ap.add_argument(
        "--pace",
        default="",
        help="MIN,MAX,DUTY: n1's GcPacer parameters for the run (default: the node's own)",
    )
    ap.add_argument("--output", default="resp_tail")
    a = ap.parse_args()
    if shutil.which("redis-benchmark") is None:
        sys.exit("redis-benchmark is not installed")
    rows: list[dict[str, Any]] = []
    for run in range(a.runs):
        rows.extend(one_run(a, run))
    cols = ["run", "test", "rps", "p50_ms", "p99_ms", "max_ms", "gc0_n", "gc0_total_ms",
            "gc0_max_ms", "gc1_n", "gc1_max_ms", "gc2_n", "gc2_max_ms", "stalls",
            "stall_max_ms", "stalls_with_gc", "stall_top_ms"]  # fmt: skip
    console.print(
        table(
            f"{a.nodes} node(s), redis-benchmark -c 50 -P {a.pipeline} -n {a.requests}:"
            " tail, collections and loop stalls at n1",
            cols,
            [[r[c] if c != "stall_top_ms" else " ".join(map(str, r[c])) for c in cols]
             for r in rows],
        )
    )  # fmt: skip
    write_results(a.output, {"nodes": a.nodes, "pipeline": a.pipeline, "pace": a.pace,
                             "requests": a.requests, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
