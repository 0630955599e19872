"""Instructions per embedded KV operation, two builds side by side: an A/B that noise cannot move.

CPU time per operation (``bench/kv_cpu.py``) still moves by 10-20 % on a
shared two-core machine (caches, frequency, other processes). Instructions
executed do not. This script runs ``bench/kv_cpu.py`` under valgrind's
callgrind for each tree and each mix at two operation counts, and reports
``(Ir(ops_hi) - Ir(ops_lo)) / (ops_hi - ops_lo)``: the instructions one more
operation costs. ``Ir`` is counted over the measured operations alone
(``kv_cpu.py --callgrind-window`` dumps callgrind's counts before and after
them): start-up and the preload are not in it at all -- when they were,
their own run-to-run variation (timer-driven work grows with valgrind's
varying wall time) moved the per-put figure of one tree by up to 30 % --
and the difference of two counts cancels the dumps' own cost. The
whole process is counted (event loop, three in-memory nodes, the clients),
so the figure covers coordinator, replicas and client together. The nodes
run with ``kv_cpu.py --patient``: failure detection and timeouts slowed so
that valgrind's pace causes no false failure (which would send writes down
the hinted path and make runs differ by tens of percent), anti-entropy off.
``--repeat K`` runs K lo/hi pairs per tree, alternating which tree goes
first, and shows the median and every run.

Each tree must have its own ``.venv`` (and ``make compile`` for the compiled
build); the same ``bench/kv_cpu.py`` (this tree's) runs with each tree's
interpreter, so it measures that tree's installed package::

    .venv/bin/python bench/kv_instructions.py --base /path/to/old/tree --new .

Bounded: ``2 * --repeat`` callgrind runs per tree and mix (about 30-90 s each).
Needs ``valgrind`` (Debian package ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import console, table, write_results

HERE = Path(__file__).resolve().parent
#: the instructions of a callgrind dump (``OUT.2``: the measured operations alone)
_SUMMARY = re.compile(r"^summary: (\d+)", re.MULTILINE)


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a run in ``tree``: its own ``src`` first on the path.

    A worktree sharing another tree's virtualenv (whose editable install
    points elsewhere) relies on ``PYTHONPATH``; an inherited one would make
    both runs import the same tree."""
    return {**os.environ, "PYTHONPATH": str(tree / "src")}


def instructions(
    tree: Path,
    mix: str,
    ops: int,
    keep: Path | None = None,
    uvloop: bool = False,
    batch: int = 1,
    nodes: int = 3,
    conflicts: str = "lww",
) -> int:
    """Instructions (callgrind ``Ir``) of one ``kv_cpu.py`` run in ``tree``'s interpreter;
    with ``keep``, callgrind's profile is saved there (``callgrind_annotate``)."""
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
                "--callgrind-window",
                *(["--uvloop"] if uvloop else []),
                "--batch",
                str(batch),
                "--nodes",
                str(nodes),
                "--conflicts",
                conflicts,
            ]
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=900, check=False, env=tree_env(tree)
            )
            window = Path(f"{tmp}/cg.out.2")
            found = _SUMMARY.search(window.read_text()) if window.exists() else None
            if done.returncode == 0 and found is not None:
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    n = len(list(keep.glob(f"{tree.name}-{mix}-{ops}*.cg")))
                    shutil.copy(window, keep / f"{tree.name}-{mix}-{ops}-{n}.cg")
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
    ap.add_argument(
        "--conflicts",
        choices=("lww", "siblings"),
        default="lww",
        help="the stores' conflict mode (kv_cpu.py --conflicts); lww is what node processes run",
    )
    ap.add_argument("--output", default="kv_instructions")
    ap.add_argument("--keep", type=Path, help="save the windows' callgrind profiles here")
    ap.add_argument(
        "--repeat", type=int, default=1, help="lo/hi pairs per tree and mix (the median is shown)"
    )
    ap.add_argument("--uvloop", action="store_true", help="run kv_cpu.py on uvloop")
    a = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    if not 100 <= a.lo < a.hi <= 50_000:
        ap.error("need 100 <= --lo < --hi <= 50000")
    if not 1 <= a.repeat <= 9:
        ap.error("--repeat must be 1..9")
    trees = {"base": a.base.resolve(), "new": a.new.resolve()}
    rows: list[dict[str, object]] = []
    shown: list[list[object]] = []
    for mix in a.mixes.split(","):
        per_op: dict[str, list[float]] = {label: [] for label in trees}
        for r in range(a.repeat):
            # alternate which tree goes first, like bench/ab.py
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for label in order:
                tree = trees[label]
                lo = instructions(tree, mix, a.lo, a.keep, a.uvloop, a.batch, a.nodes, a.conflicts)
                hi = instructions(tree, mix, a.hi, a.keep, a.uvloop, a.batch, a.nodes, a.conflicts)
                per_op[label].append((hi - lo) / (a.hi - a.lo))
                got = per_op[label][-1]
                console.print(f"[dim]{label} {mix} #{r + 1}: {got:,.0f} instructions/op")
        base, new = statistics.median(per_op["base"]), statistics.median(per_op["new"])
        rows.append(
            {
                "mix": mix,
                "base_instr_per_op": round(base),
                "new_instr_per_op": round(new),
                "new_over_base": round(new / base, 3),
                "base_runs": [round(x) for x in per_op["base"]],
                "new_runs": [round(x) for x in per_op["new"]],
            }
        )
        shown.append(
            [
                mix,
                f"{base:,.0f} ({', '.join(f'{x:,.0f}' for x in per_op['base'])})",
                f"{new:,.0f} ({', '.join(f'{x:,.0f}' for x in per_op['new'])})",
                round(new / base, 3),
            ]
        )
    console.print(
        table(
            f"instructions per embedded operation ({a.nodes} in-memory nodes, N=3 R=W=2"
            + (f", batches of {a.batch}" if a.batch > 1 else "")
            + f"), median of {a.repeat}",
            ["mix", "base (runs)", "new (runs)", "new/base"],
            shown,
        )
    )
    write_results(
        a.output,
        {
            "trees": {k: str(v) for k, v in trees.items()},
            "batch": a.batch,
            "nodes": a.nodes,
            "conflicts": a.conflicts,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
