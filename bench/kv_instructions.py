"""Instructions per embedded KV operation, two builds side by side: an A/B that noise cannot move.

CPU time per operation (``bench/kv_cpu.py``) still moves by 10-20 % on a
shared two-core machine (caches, frequency, other processes). Instructions
executed do not. This script runs ``bench/kv_cpu.py`` under valgrind's
callgrind for each tree and each mix at two operation counts, and reports
``(Ir(ops_hi) - Ir(ops_lo)) / (ops_hi - ops_lo)``: the instructions one more
operation costs, with start-up, warm-up and shutdown cancelled out. The
whole process is counted (event loop, three in-memory nodes, the clients),
so the figure covers coordinator, replicas and client together. The nodes
run with ``kv_cpu.py --patient``: failure detection and timeouts slowed so
that valgrind's pace causes no false failure (which would send writes down
the hinted path and make runs differ by tens of percent).

Each tree must have its own ``.venv`` (and ``make compile`` for the compiled
build); the same ``bench/kv_cpu.py`` (this tree's) runs with each tree's
interpreter, so it measures that tree's installed package::

    .venv/bin/python bench/kv_instructions.py --base /path/to/old/tree --new .

Bounded: four callgrind runs per tree and mix (about 20-60 s each).
Needs ``valgrind`` (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import console, table, write_results

HERE = Path(__file__).resolve().parent
_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(tree: Path, mix: str, ops: int, batch: int = 1, nodes: int = 3) -> int:
    """Instructions (callgrind ``Ir``) of one ``kv_cpu.py`` run in ``tree``'s
    interpreter, importing ``tree/src`` first (worktrees that share one
    virtualenv each measure their own source and build)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    last = ""
    for _attempt in range(3):  # under valgrind a run is ~50x slower: a request can time out
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.out",
                str(tree / ".venv" / "bin" / "python"),
                str(HERE / "kv_cpu.py"),
                "--mixes",
                mix,
                "--ops",
                str(ops),
                "--rounds",
                "1",
                "--patient",
                "--batch",
                str(batch),
                "--nodes",
                str(nodes),
            ]
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=900, check=False, env=env
            )
        found = _COLLECTED.search(done.stderr)
        if done.returncode == 0 and found is not None:
            return int(found.group(1))
        last = done.stderr[-2000:]
        console.print(f"[yellow]{tree.name} {mix} {ops}: run failed, retrying")
    sys.exit(f"kv_cpu.py failed under valgrind three times; the last output:\n{last}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the old tree")
    ap.add_argument("--new", type=Path, default=Path("."), help="the new tree")
    ap.add_argument("--lo", type=int, default=1000, help="operations of the short run")
    ap.add_argument("--hi", type=int, default=4000, help="operations of the long run")
    ap.add_argument("--mixes", default="put,get")
    ap.add_argument("--batch", type=int, default=1, help="keys per put_many/get_many (per key)")
    ap.add_argument("--nodes", type=int, default=3, help="in-memory nodes (1: a one-node cluster)")
    ap.add_argument("--output", default="kv_instructions")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if not 100 <= a.lo < a.hi <= 50_000:
        ap.error("need 100 <= --lo < --hi <= 50000")
    trees = {"base": a.base.resolve(), "new": a.new.resolve()}
    rows: list[dict[str, object]] = []
    for mix in a.mixes.split(","):
        per_op: dict[str, float] = {}
        for label, tree in trees.items():
            lo = instructions(tree, mix, a.lo, a.batch, a.nodes)
            hi = instructions(tree, mix, a.hi, a.batch, a.nodes)
            per_op[label] = (hi - lo) / (a.hi - a.lo)
            console.print(f"[dim]{label} {mix}: {per_op[label]:,.0f} instructions/op")
        rows.append(
            {
                "mix": mix,
                "base_instr_per_op": round(per_op["base"]),
                "new_instr_per_op": round(per_op["new"]),
                "new_over_base": round(per_op["new"] / per_op["base"], 3),
            }
        )
    console.print(
        table(
            f"instructions per embedded operation ({a.nodes} in-memory nodes, N=3 R=W=2"
            + (f", batches of {a.batch})" if a.batch > 1 else ")"),
            ["mix", "base", "new", "new/base"],
            [
                [
                    r["mix"],
                    f"{r['base_instr_per_op']:,}",
                    f"{r['new_instr_per_op']:,}",
                    r["new_over_base"],
                ]
                for r in rows
            ],
        )
    )
    write_results(
        a.output,
        {
            "trees": {k: str(v) for k, v in trees.items()},
            "batch": a.batch,
            "nodes": a.nodes,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
