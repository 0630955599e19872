"""Profile the RESP hot path: node n1 of a 3-node N=3 cluster under redis-benchmark.

    .venv/bin/python bench/profile_resp.py                 # SET and GET, perf, 6 s each
    .venv/bin/python bench/profile_resp.py --tests get --nodes 1
    .venv/bin/python bench/profile_resp.py --sampler py-spy   # the pure-Python build

A sampling profile of n1 -- the node redis-benchmark talks to, which
coordinates every command -- is taken while ``redis-benchmark -c 50 -d 100``
runs against it; the sampler attaches by PID, so the node runs unmodified
and at full speed. Printed per test: every node's CPU per command
(user+system, and the system part, from ``/proc/PID/stat`` over the run),
redis-benchmark's, n1's system calls per command (``/proc/PID/io``), and
where n1's time goes:

* ``--sampler perf`` (default; Debian's ``linux-perf``): kernel and native
  stacks (``perf record -e cpu-clock --call-graph dwarf``), so the compiled
  build's functions (mypyc's ``CPyDef_module___Class___method``), uvloop,
  msgpack and the kernel are all seen. The table shows each function's
  *inclusive* share of samples (itself and what it calls) and the split by
  shared object (Python runtime, kernel, compiled peer-ring, ...).
* ``--sampler py-spy`` (the ``bench`` extra): Python frames only, each
  function's share of samples *in itself*, native code charged to the
  Python function that called it. Right for the pure-Python build; under
  the compiled build nearly everything lands on ``Runner.run``.

Raw samples are kept under ``bench/results/``.
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

from rich.markup import escape

from _util import RESULTS_DIR, console, table, write_results
from kv import cluster, wait_ring
from peer_ring._build import build

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


_PERF_FRAME = re.compile(r"^\s*[0-9a-f]+ (.+?)(?:\+0x[0-9a-f]+)? \((.*)\)$")


def perf_shares(
    data: Path, top: int
) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """Samples, the ``top`` functions by inclusive share, and the share of
    each shared object in the leaf frames, from a ``perf record -g`` file."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data)], capture_output=True, text=True, check=False
    ).stdout
    inclusive: collections.Counter[str] = collections.Counter()
    dsos: collections.Counter[str] = collections.Counter()
    total = 0
    for block in text.split("\n\n"):
        frames = [m.groups() for m in map(_PERF_FRAME.match, block.splitlines()[1:]) if m]
        if not frames:
            continue
        total += 1
        # the leaf's shared object (an inlined frame belongs to its caller's)
        dso = Path(next((d for _, d in frames if d != "inlined"), "?")).name
        dsos["compiled peer-ring" if "__mypyc" in dso else dso] += 1
        for name in {name for name, _ in frames}:
            # our compiled functions, uvloop's and msgpack's (Cython), and the
            # interpreter frames of what is still interpreted
            if name.startswith(("CPyDef_", "__pyx_f_")):
                inclusive[name] += 1
    share = max(1, total)
    return (
        total,
        [(name, n / share) for name, n in inclusive.most_common(top)],
        [(name, n / share) for name, n in dsos.most_common(8)],
    )


def start_sampler(sampler: str, pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    if sampler == "perf":
        if shutil.which("perf") is None:
            raise SystemExit("perf is not installed (Debian: linux-perf); or --sampler py-spy")
        cmd = ["perf", "record", "-e", "cpu-clock", "-F", "500", "--call-graph", "dwarf,16384",
               "-p", str(pid), "-o", str(out), "--", "sleep", str(seconds)]  # fmt: skip
    else:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
        cmd = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
               "--output", str(out), "--duration", str(int(seconds)), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(
    test: str,
    nodes: int,
    requests: int,
    seconds: float,
    top: int,
    sampler: str,
    pipeline: int = 1,
    preload: bool = False,
) -> dict[str, Any]:
    suffix = "data" if sampler == "perf" else "txt"
    out = RESULTS_DIR / f"profile-resp-{test}-{nodes}.{suffix}"
    RESULTS_DIR.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    with cluster(nodes, nodes, resp=True) as c:
        wait_ring(c)
        n1 = c["n1"]
        if preload:  # fill the keyspace first, unmeasured: a GET test then measures hits
            fill = ["redis-benchmark", "-h", n1.ip, "-p", "6390", "-t", "set", "-n", str(requests),
                    "-c", "50", "-d", "100", "-r", "100000", "-q", "-P", "16"]  # fmt: skip
            subprocess.run(fill, capture_output=True, text=True, timeout=300, check=True)
        pids = {name: node.pid for name, node in c.nodes.items() if node.pid is not None}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        calls_before = syscalls(pids["n1"])
        assert n1.pid is not None
        proc = start_sampler(sampler, n1.pid, out, seconds)
        cmd = ["redis-benchmark", "-h", n1.ip, "-p", "6390", "-t", test, "-n", str(requests),
               "-c", "50", "-d", "100", "-r", "100000", "-q"]  # fmt: skip
        if pipeline > 1:
            cmd += ["-P", str(pipeline)]
        t0 = time.perf_counter()
        rb0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        bench = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        rb1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the sampler is not reaped yet
        wall = time.perf_counter() - t0
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        calls_after = syscalls(pids["n1"])
        proc.wait(seconds + 30)
    line = bench.stdout.strip().splitlines()[-1]
    rps = float(line.split()[1])
    dsos: list[tuple[str, float]] = []
    if not out.exists():
        samples, hot = 0, []
    elif sampler == "perf":
        samples, hot, dsos = perf_shares(out, top)
    else:
        samples, hot = self_time(out, top)
    return {
        "test": test,
        "nodes": nodes,
        "command": " ".join(cmd),
        "rps": rps,
        "preloaded": preload,
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
        "sampler": sampler,
        "build": build(),
        "samples": samples,
        # perf: inclusive shares; py-spy: shares in the function itself
        "functions": hot,
        "shared_objects": dsos,
        "raw_samples": str(out),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tests", default="set,get", help="redis-benchmark tests, one run each")
    ap.add_argument("--nodes", type=int, default=3, help="cluster size (N = nodes)")
    ap.add_argument("--requests", type=int, default=150_000, help="redis-benchmark -n")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds of samples")
    ap.add_argument("--top", type=int, default=20, help="functions shown")
    ap.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P")
    ap.add_argument(
        "--preload",
        action="store_true",
        help="SET the keyspace before each test (unmeasured): without it every test starts on"
        " an empty cluster, and a GET test measures misses",
    )
    ap.add_argument(
        "--sampler",
        choices=["perf", "py-spy"],
        default="perf" if shutil.which("perf") else "py-spy",
        help="perf (default when installed): native and kernel stacks, for the compiled"
        " build; py-spy: Python frames",
    )
    args = ap.parse_args()
    rows = [
        profile(
            t,
            args.nodes,
            args.requests,
            args.seconds,
            args.top,
            args.sampler,
            args.pipeline,
            args.preload,
        )
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
        kind = "inclusive" if r["sampler"] == "perf" else "self"
        console.print(
            table(
                f"n1 {kind} time, {r['samples']} samples, {r['build']} build ({r['command']})",
                ["share", "function"],
                [(f"{100 * share:.1f} %", name) for name, share in r["functions"]],
            )
        )
        if r["shared_objects"]:
            console.print(
                "n1 samples by shared object: "
                + ", ".join(
                    f"{escape(name)} {100 * share:.0f} %" for name, share in r["shared_objects"]
                )
            )
    path = write_results("profile-resp", {"runs": rows})
    console.print(f"results: {path}")


if __name__ == "__main__":
    main()
