"""Instructions per RESP SET and GET on the serving node, two builds side by side.

Time per RESP command (``bench/kv.py --resp``, ``bench/ab.py``) moves by
10-20 % on a shared two-core machine; instructions do not. This script
starts a cluster of real node processes for each tree (that tree's
interpreter, ``PYTHONPATH=TREE/src``) with node ``n1`` -- the node
``redis-benchmark`` talks to, which parses, coordinates and answers every
command -- under valgrind's callgrind (``--instr-atstart=no``: start-up is
not counted), preloads the keyspace (unmeasured), then switches counting on
(``callgrind_control -i on``) and dumps callgrind's counts
(``callgrind_control -d``, which zeroes them) around each of these windows:

* ``idle``: nothing sent for ``--idle`` seconds -- the node's timer-driven
  background work per second of (valgrind's) wall time;
* ``set lo``, ``set hi``, ``get lo``, ``get hi``: ``redis-benchmark -t set|get
  -n LO|HI -c C -P P -d 100 -r KEYS`` (GET reads preloaded keys: hits; ``P``
  is ``--pipeline``, 1 by default).

The figure per command is ``(Ir(hi) - Ir(lo) - idle_rate * (wall(hi) -
wall(lo))) / (HI - LO)``: the difference of two runs removes redis-benchmark's
connection set-up and the dump's own cost, the idle rate the background work
that grows with the longer run's wall time (shown separately, it is a few
per cent at most). Only n1 is counted (its peers run at full speed; ``--node K``
counts nK instead -- but a replica off the client's critical path lags its
windows: ``bench/replica_instructions.py`` counts a replica exactly): with 3
nodes that is the coordinator's side of a quorum round plus its own replica.
All nodes run with slow failure detection and timeouts (``PATIENT``), so
valgrind's pace causes no false failure, and anti-entropy off.

Per function: with ``--keep DIR`` the hi and lo dumps are saved and
``callgrind_annotate`` of both is subtracted per function (self cost,
``--inclusive=no``, and inclusive), divided by ``HI - LO``, base against new:
``--functions K`` prints the K largest differences per test. Interpreted
Python shows as the interpreter's own functions (``_PyEval_EvalFrameDefault``
and friends), compiled modules (``peer_ring._build.HOT_MODULES``) by name
(mypyc's ``CPyDef_module___Class___method``).

    .venv/bin/python bench/resp_instructions.py --base /tmp/resp-base --new . \\
        --nodes 1,3 --keep bench/results/resp-cg

Each tree needs its own interpreter at ``TREE/.venv/bin/python`` (a symlink to
a shared virtualenv is fine: ``PYTHONPATH`` picks the tree) and its compiled
build (``make compile``, or ``PEER_RING_COMPILE=1 python setup.py build_ext
--inplace``) for the compiled figures. Needs ``valgrind`` and
``redis-benchmark``; run inside ``unshare -n`` (it binds 127.78.0.x).
Bounded: one cluster per tree and size, about 2-4 minutes each.
"""

from __future__ import annotations

import argparse
import collections
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

SUBNET = "127.78.0"
PEER_PORT = 7600
RESP_PORT = 6392
#: Slow failure detection and timeouts, anti-entropy off, background loops
#: rare (the same as ``bench/kv_cpu.py --patient``), as a ``--config`` file.
PATIENT_TOML = """\
[node]
member_sync_interval = 30.0
discovery_start_timeout = 600.0

[node.failure]
ping_interval = 30.0
ping_timeout = 60.0
failures_to_down = 3

[node.transport_config]
request_timeout = 120.0
connect_timeout = 60.0

[node.handoff]
ae_partitions_per_second = 0.0
hint_interval = 60.0
reap_interval = 60.0
sweep_interval = 600.0
"""
_SUMMARY = re.compile(r"^summary: (\d+)", re.MULTILINE)
#: ``callgrind_annotate`` lines: ``1,234 (12.3%)  file:function [object]``
_ANNOTATE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(?:\* )?(.*?)(?: \[(.*)\])?$")


def tree_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONUNBUFFERED": "1"}


def node_cmd(tree: Path, name: str, i: int, size: int, config: Path) -> list[str]:
    ips = [f"{SUBNET}.{k + 2}" for k in range(size)]
    q = str(min(2, size))
    return [
        str(tree / ".venv" / "bin" / "python"), "-m", "peer_ring", "node",
        "--config", str(config), "--id", name, "--listen", f"{ips[i]}:{PEER_PORT}",
        "--seeds", ",".join(f"{ip}:{PEER_PORT}" for ip in ips),
        "--replicas", str(size), "--partitions", "256",
        "--read-quorum", q, "--write-quorum", q,
        "--resp", f"{ips[i]}:{RESP_PORT}", "--log-level", "WARNING",
    ]  # fmt: skip


def ring_formed(tree: Path, size: int) -> bool:
    for k in range(size):
        done = subprocess.run(
            [str(tree / ".venv" / "bin" / "python"), "-m", "peer_ring", "status", "--json",
             "--node", f"{SUBNET}.{k + 2}:{PEER_PORT}"],
            capture_output=True, text=True, env=tree_env(tree), timeout=120, check=False,
        )  # fmt: skip
        try:
            view = json.loads(done.stdout)
        except ValueError:
            return False
        members = view.get("members", [])
        if len(members) != size or not all(
            m["state"] == "up" and m["partitions"] > 0 for m in members
        ):
            return False
    return True


def rbench(test: str, n: int, clients: int, keys: int, pipeline: int = 1) -> float:
    """One ``redis-benchmark`` run against n1; its wall seconds."""
    cmd = ["redis-benchmark", "-h", f"{SUBNET}.2", "-p", str(RESP_PORT), "-t", test,
           "-n", str(n), "-c", str(clients), "-d", "100", "-r", str(keys), "-q",
           "-P", str(pipeline)]  # fmt: skip
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True)
    return time.monotonic() - t0


def dump(pid: int, label: str) -> None:
    subprocess.run(["callgrind_control", "-d", label, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def measure(tree: Path, size: int, a: argparse.Namespace, label: str) -> dict[str, Any]:
    """One cluster of ``size`` nodes from ``tree``; ``n{--node}`` under callgrind
    (n1 by default: the serving node)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"resp-cg-{label}-{size}-"))
    config = tmp / "patient.toml"
    config.write_text(PATIENT_TOML)
    out = tmp / "cg.out"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(size):
            cmd = node_cmd(tree, f"n{i + 1}", i, size, config)
            if i == a.node - 1:
                cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       f"--callgrind-out-file={out}", *cmd]  # fmt: skip
            log = open(tmp / f"n{i + 1}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=tree_env(tree))
            )
        for i, p in enumerate(procs):
            wait_ready(p, f"n{i + 1}", 600.0)
        deadline = time.monotonic() + 600
        while not ring_formed(tree, size):
            if time.monotonic() > deadline:
                raise RuntimeError("the ring did not form")
            time.sleep(1.0)
        pid = procs[a.node - 1].pid
        # preload (unmeasured): every key of the keyspace present, so GETs hit
        rbench("set", a.keys * 20, 10, a.keys, pipeline=16)
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        rbench("set,get", 200, a.clients, a.keys)  # warm the counted paths
        dump(pid, "warm")
        walls: dict[str, float] = {}
        t0 = time.monotonic()
        time.sleep(a.idle)
        walls["idle"] = time.monotonic() - t0
        dump(pid, "idle")
        for test in ("set", "get"):
            for which, n in (("lo", a.lo), ("hi", a.hi)):
                walls[f"{test}-{which}"] = rbench(test, n, a.clients, a.keys, a.pipeline)
                dump(pid, f"{test}-{which}")
        names = ["warm", "idle", "set-lo", "set-hi", "get-lo", "get-hi"]
        files = {name: Path(f"{out}.{k + 1}") for k, name in enumerate(names)}
        ir = {name: int(_SUMMARY.search(files[name].read_text()).group(1)) for name in names}  # type: ignore[union-attr]
        idle_rate = ir["idle"] / walls["idle"]
        result: dict[str, Any] = {"tree": str(tree), "label": label, "nodes": size,
                                  "idle_ir_per_s": round(idle_rate)}  # fmt: skip
        for test in ("set", "get"):
            d_ir = ir[f"{test}-hi"] - ir[f"{test}-lo"]
            d_wall = walls[f"{test}-hi"] - walls[f"{test}-lo"]
            raw = d_ir / (a.hi - a.lo)
            bg = idle_rate * d_wall / (a.hi - a.lo)
            result[test] = {"ir_per_cmd": round(raw - bg), "raw": round(raw),
                            "background": round(bg), "wall_s": [walls[f"{test}-lo"],
                            walls[f"{test}-hi"]]}  # fmt: skip
            if a.keep is not None:
                a.keep.mkdir(parents=True, exist_ok=True)
                for which in ("lo", "hi"):
                    shutil.copy(files[f"{test}-{which}"],
                                a.keep / f"{label}-{size}-{test}-{which}.cg")  # fmt: skip
        return result
    finally:
        stop_processes(procs, 120)


#: Layers of the self cost per command, by the compiled function's module
#: (mypyc names a function ``CPyDef_<module>___<Class>___<method>``);
#: everything not compiled (the interpreter running interpreted modules,
#: the C runtime, extension modules) is "runtime / interpreted".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("RESP server", ("_parser___", "_reply___", "_server___", "_commands___", "resp___")),
    ("app API (app context, cluster, wire)", ("_appcontext___", "cluster___", "wire___")),
    ("KV store", ("store___", "replica___", "_state___", "_memory___", "local___", "kv___")),
    ("coordinator", ("coordinator___",)),
    ("node, transport", ("node___", "_core___", "tcp___", "memory___", "failure___")),
    ("versions, hlc, other compiled", ("versions___", "hlc___", "_awaitable___", "")),
)


def layer(fn: str) -> str:
    if not fn.startswith(("CPyDef_", "CPyPy_")):
        return "runtime / interpreted"
    name = fn.split("_", 1)[1]
    for title, prefixes in LAYERS:
        if any(name.startswith(p) for p in prefixes if p):
            return title
    return "versions, hlc, other compiled"


def annotate(path: Path, inclusive: bool) -> dict[str, int]:
    """Instructions per function of one dump (``callgrind_annotate``)."""
    text = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    counts: collections.Counter[str] = collections.Counter()
    started = False
    for line in text.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started:
            continue
        m = _ANNOTATE.match(line)
        if m:
            fn = m.group(2).split(":", 1)[-1] if ":" in m.group(2) else m.group(2)
            counts[fn] += int(m.group(1).replace(",", ""))
    return dict(counts)


def per_function(
    keep: Path, label: str, size: int, test: str, span: int, inclusive: bool
) -> dict[str, float]:
    hi = annotate(keep / f"{label}-{size}-{test}-hi.cg", inclusive)
    lo = annotate(keep / f"{label}-{size}-{test}-lo.cg", inclusive)
    return {fn: (hi.get(fn, 0) - lo.get(fn, 0)) / span for fn in set(hi) | set(lo)}


def compare(keep: Path, size: int, test: str, span: int, top_n: int) -> dict[str, Any]:
    """Base against new per layer (self cost) and per function (self and
    inclusive), per command; prints the tables."""
    found: dict[str, Any] = {}
    for inclusive in (False, True):
        b = per_function(keep, "base", size, test, span, inclusive)
        n = per_function(keep, "new", size, test, span, inclusive)
        d = {fn: (b.get(fn, 0.0), n.get(fn, 0.0)) for fn in set(b) | set(n)}
        kind = "inclusive" if inclusive else "self"
        if not inclusive:
            by_layer: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
            for fn, (x, y) in d.items():
                by_layer[layer(fn)][0] += x
                by_layer[layer(fn)][1] += y
            found[f"{size}-{test}-layers"] = {
                k: [round(x), round(y)] for k, (x, y) in by_layer.items()
            }
            console.print(
                table(
                    f"{test.upper()}, {size} node(s): self instructions per command by layer",
                    ["layer", "base", "new", "new-base"],
                    [(k, x, y, y - x) for k, (x, y) in sorted(by_layer.items())],
                )
            )
        top = sorted(d.items(), key=lambda kv: -abs(kv[1][1] - kv[1][0]))[:top_n]
        found[f"{size}-{test}-{kind}"] = [
            {"function": fn, "base": round(x), "new": round(y)} for fn, (x, y) in top
        ]
        console.print(
            table(
                f"{test.upper()}, {size} node(s): {kind} instructions per command,"
                " largest differences",
                ["function", "base", "new", "new-base"],
                [(fn, x, y, y - x) for fn, (x, y) in top],
            )
        )
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the old tree")
    ap.add_argument("--new", type=Path, default=Path("."), help="the new tree")
    ap.add_argument("--nodes", default="1,3", help="cluster sizes (N = nodes, R=W=min(2, N))")
    ap.add_argument("--lo", type=int, default=1000, help="commands of the short run")
    ap.add_argument("--hi", type=int, default=3000, help="commands of the long run")
    ap.add_argument("--clients", type=int, default=1, help="redis-benchmark -c")
    ap.add_argument("--keys", type=int, default=1000, help="keyspace (-r), preloaded")
    ap.add_argument("--pipeline", type=int, default=1, help="redis-benchmark -P, counted runs")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle window")
    ap.add_argument("--keep", type=Path, help="save the dumps here and diff them per function")
    ap.add_argument(
        "--node",
        type=int,
        default=1,
        help="the node under callgrind (1: n1, the serving node; 2: n2, a replica that"
        " only answers n1's replica commands -- the replica's cost per client command)",
    )
    ap.add_argument("--functions", type=int, default=25, help="functions shown per test")
    ap.add_argument("--only", choices=["base", "new"], help="measure one tree only")
    ap.add_argument(
        "--diff-only", action="store_true", help="only compare the dumps already in --keep"
    )
    ap.add_argument("--output", default="resp_instructions")
    a = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "redis-benchmark"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    if not 100 <= a.lo < a.hi <= 100_000:
        ap.error("need 100 <= --lo < --hi <= 100000")
    if not 1 <= a.node <= min(int(x) for x in a.nodes.split(",")):
        ap.error("--node must name a node of every cluster size in --nodes")
    trees = {"base": a.base.resolve(), "new": a.new.resolve()}
    if a.only:
        trees = {a.only: trees[a.only]}
    rows: list[dict[str, Any]] = []
    for size in (int(x) for x in a.nodes.split(",") if not a.diff_only):
        for label, tree in trees.items():
            console.print(
                f"[dim]{label} ({tree}), {size} node(s): starting, n{a.node} under callgrind"
            )
            r = measure(tree, size, a, label)
            console.print(f"[dim]{label} {size}: {r}")
            rows.append(r)
    shown = []
    for r in rows:
        shown.append([r["label"], r["nodes"], r["set"]["ir_per_cmd"], r["get"]["ir_per_cmd"],
                      r["set"]["background"], r["get"]["background"]])  # fmt: skip
    console.print(
        table(
            f"instructions per RESP command on n{a.node} (redis-benchmark -c {a.clients}"
            f" -P {a.pipeline}, -n {a.hi} minus -n {a.lo})",
            ["tree", "nodes", "SET", "GET", "SET bg (subtracted)", "GET bg (subtracted)"],
            shown,
        )
    )
    diffs: dict[str, Any] = {}
    if a.keep is not None and len(trees) == 2:
        for size in (int(x) for x in a.nodes.split(",")):
            for test in ("set", "get"):
                diffs.update(compare(a.keep, size, test, a.hi - a.lo, a.functions))
    write_results(
        a.output,
        {"trees": {k: str(v) for k, v in trees.items()}, "lo": a.lo, "hi": a.hi,
         "clients": a.clients, "pipeline": a.pipeline, "keys": a.keys, "rows": rows,
         "functions": diffs},
    )  # fmt: skip


if __name__ == "__main__":
    main()
