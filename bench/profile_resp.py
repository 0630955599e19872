"""Profile the RESP hot path: node n1 of a 3-node N=3 cluster under redis-benchmark.

    .venv/bin/python bench/profile_resp.py            # SET and GET, 8 s of samples each
    .venv/bin/python bench/profile_resp.py --tests get --nodes 1

A sampling profile (py-spy, from the ``bench`` extra; it attaches to the
node process by PID, so the node runs unmodified and at full speed, unlike
cProfile) is taken of n1 -- the node redis-benchmark talks to, which
coordinates every command -- while ``redis-benchmark -c 50 -d 100`` runs
against it. Printed per test: every node's CPU per command (user+system,
and the system part, from ``/proc/PID/stat`` over the run), n1's system
calls per command (``/proc/PID/io``), and the functions with the
most samples *in themselves* (native code such as the event loop, socket
system calls and msgpack is charged to the Python function that called it).
The raw collapsed stacks are kept under ``bench/results/`` for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _util import RESULTS_DIR, console, table, write_results
from kv import cluster, wait_ring

_FRAME = re.compile(r"^(.*?) \((.*?):\d+\)$")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def syscalls(pid: int) -> tuple[int, int]:
    """Read-like and write-like system calls of a process so far (``/proc/PID/io``)."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(io["syscr"]), int(io["syscw"])


def self_time(collapsed: Path, top: int) -> tuple[int, list[tuple[str, float]]]:
    """Samples and the ``top`` functions by share of samples in themselves."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.split(";")[-1]
        m = _FRAME.match(leaf)
        name = f"{m.group(1)} ({Path(m.group(2)).name})" if m else leaf
        counts[name] += int(n)
        total += int(n)
    return total, [(name, n / max(1, total)) for name, n in counts.most_common(top)]


def profile(
    test: str, nodes: int, requests: int, seconds: float, top: int, native: bool = False
) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    out = RESULTS_DIR / f"profile-resp-{test}-{nodes}{'-native' if native else ''}.txt"
    RESULTS_DIR.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    with cluster(nodes, nodes, resp=True) as c:
        wait_ring(c)
        n1 = c["n1"]
        pids = {name: node.pid for name, node in c.nodes.items() if node.pid is not None}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        calls_before = syscalls(pids["n1"])
        sampler = subprocess.Popen(
            [spy, "record", "--pid", str(n1.pid), "--rate", "100" if native else "250",
             "--format", "raw", "--output", str(out), "--duration", str(int(seconds)),
             # native stacks need the process stopped per sample (slower, fewer samples)
             *(["--native"] if native else ["--nonblocking"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        cmd = ["redis-benchmark", "-h", n1.ip, "-p", "6390", "-t", test, "-n", str(requests),
               "-c", "50", "-d", "100", "-r", "100000", "-q"]  # fmt: skip
        t0 = time.perf_counter()
        rb0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        bench = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        rb1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the sampler is not reaped yet
        wall = time.perf_counter() - t0
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        calls_after = syscalls(pids["n1"])
        sampler.wait(seconds + 30)
    line = bench.stdout.strip().splitlines()[-1]
    rps = float(line.split()[1])
    samples, hot = self_time(out, top) if out.exists() else (0, [])
    return {
        "test": test,
        "nodes": nodes,
        "command": " ".join(cmd),
        "rps": rps,
        "cpu_us_per_command": {n: 1e6 * (sum(after[n]) - sum(before[n])) / requests for n in pids},
        "system_us_per_command": {n: 1e6 * (after[n][1] - before[n][1]) / requests for n in pids},
        "cpu_share": {n: (sum(after[n]) - sum(before[n])) / wall for n in pids},
        "load_generator_us_per_command": 1e6
        * (rb1.ru_utime + rb1.ru_stime - rb0.ru_utime - rb0.ru_stime)
        / requests,
        "n1_syscalls_per_command": {
            "read": (calls_after[0] - calls_before[0]) / requests,
            "write": (calls_after[1] - calls_before[1]) / requests,
        },
        "samples": samples,
        "self": hot,
        "collapsed_stacks": str(out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tests", default="set,get", help="redis-benchmark tests, one run each")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (N = nodes)")
    ap.add_argument("--requests", type=int, default=150_000, help="redis-benchmark -n")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds of samples")
    ap.add_argument("--top", type=int, default=20, help="functions shown")
    ap.add_argument(
        "--native",
        action="store_true",
        help="sample native frames too (py-spy --native): the compiled build's C functions",
    )
    args = ap.parse_args()
    rows = [
        profile(t, args.nodes, args.requests, args.seconds, args.top, args.native)
        for t in args.tests.split(",")
        if t
    ]
    for r in rows:
        cpu = ", ".join(
            f"{n} {us:.1f} µs, {r['system_us_per_command'][n]:.1f} of it system"
            f" ({100 * r['cpu_share'][n]:.0f} % of a core)"
            for n, us in r["cpu_us_per_command"].items()
        )
        calls = r["n1_syscalls_per_command"]
        console.print(
            f"[bold]{r['test'].upper()}[/]: {r['rps']:,.0f}/s; CPU per command: {cpu};"
            f" redis-benchmark {r['load_generator_us_per_command']:.1f} µs"
        )
        console.print(
            f"n1 system calls per command: {calls['read']:.2f} read-like,"
            f" {calls['write']:.2f} write-like"
        )
        console.print(
            table(
                f"n1 self time, {r['samples']} samples ({r['command']})",
                ["share", "function"],
                [(f"{100 * share:.1f} %", name) for name, share in r["self"]],
            )
        )
    path = write_results("profile-resp", {"runs": rows})
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
