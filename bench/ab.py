"""A/B: two builds of peer-ring measured alternately with ``bench/kv.py``.

Run from either tree, inside a private network namespace (both builds bind
the same loopback aliases, one after the other)::

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python bench/ab.py \\
        --base /path/to/old/tree --new . --rounds 3'

Each tree must have its own ``.venv`` and compiled build (``make compile``).
Every round runs ``bench/kv.py --embedded`` and ``bench/kv.py --resp`` once
per tree, the order flipped every round (A B, B A, ...), so that drift of a
shared machine's load hits both alike. Each run is the tree's own
``bench/kv.py`` with its own interpreter. The table gives, per case, the
median (and range) of each tree and the ratio of the medians:

* embedded: operations/s and CPU µs per operation (all node processes'
  user+system time over the window / operations: the least load-sensitive
  figure);
* RESP: requests/s as a fraction of the ``redis-server`` measured in the
  same run (noise that slows the whole machine cancels out).

Results: ``bench/results/ab.json`` in the tree this script runs from; each
run's own JSON stays in its tree's ``bench/results/ab-*.json``. Bounded:
``--rounds`` runs of each part per tree, each with ``bench/kv.py``'s own
bounds and a subprocess timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _util import console, table, write_results

EMBEDDED = ["--embedded", "--sizes", "3", "--mixes", "get,put", "--concurrency", "64"]
RESP = ["--resp"]


def run(tree: Path, part: str, args: list[str], output: str, timeout: float) -> dict[str, Any]:
    """One ``bench/kv.py`` run in ``tree``; its results document."""
    cmd = [str(tree / ".venv" / "bin" / "python"), "bench/kv.py", *args, "--output", output]
    console.print(f"[dim]{tree.name}: {part}: {' '.join(cmd[1:])}")
    # the tree's own sources first: a worktree that shares another tree's
    # virtualenv relies on PYTHONPATH, and an inherited one would run one tree twice
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    subprocess.run(cmd, cwd=tree, check=True, timeout=timeout, stdout=subprocess.DEVNULL, env=env)
    doc: dict[str, Any] = json.loads((tree / "bench" / "results" / f"{output}.json").read_text())
    return doc


def _num(x: float) -> str:
    """A figure as printed: whole numbers above 100 (rates), three digits below (ratios, µs)."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def figures(doc: dict[str, Any]) -> dict[str, float]:
    """The compared figures of one run, by case name."""
    out: dict[str, float] = {}
    for row in doc.get("embedded", []):
        batch = row.get("batch", 1)
        case = f"embedded {row['mix']} {row['nodes']} nodes c={row['concurrency']}"
        case += f" batch {batch}" if batch > 1 else ""
        out[f"{case}: ops/s"] = row["ops_s"]
        out[f"{case}: CPU µs/op"] = row["cpu_us_per_op"]
    for row in doc.get("resp", []):
        if row["target"] == "redis-server":
            continue
        for op in ("set", "get"):
            if op in row and "ratio_to_redis" in row[op]:
                case = f"RESP {op.upper()} {row['target']} -P {row['pipeline']}"
                out[f"{case}: x redis-server"] = row[op]["ratio_to_redis"]
                out[f"{case}: req/s"] = row[op]["rps"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, type=Path, help="tree of build A (the old one)")
    ap.add_argument("--new", required=True, type=Path, help="tree of build B")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each part per tree")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per case")
    ap.add_argument("--requests", type=int, default=50_000, help="redis-benchmark -n")
    ap.add_argument("--pipelines", default="1", help="redis-benchmark -P values (RESP part)")
    ap.add_argument("--parts", default="embedded,resp", help="of embedded, resp")
    ap.add_argument(
        "--batch", type=int, default=1, help="embedded: keys per get_many/put_many call"
    )
    ap.add_argument("--output", default="ab", help="results name")
    a = ap.parse_args()
    if not 1 <= a.rounds <= 10:
        ap.error("--rounds must be 1..10")
    trees = {"A": a.base.resolve(), "B": a.new.resolve()}
    for label, tree in trees.items():
        if not (tree / ".venv" / "bin" / "python").exists():
            ap.error(f"{label}: {tree} has no .venv (make venv && make compile there)")
    parts = {
        "embedded": [*EMBEDDED, "--seconds", str(a.seconds), "--batch", str(a.batch)],
        "resp": [*RESP, "--pipelines", a.pipelines, "--requests", str(a.requests)],
    }
    parts = {k: v for k, v in parts.items() if k in a.parts.split(",")}
    samples: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    builds: dict[str, set[str]] = {"A": set(), "B": set()}
    for r in range(a.rounds):
        order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
        for part, args in parts.items():
            for label in order:
                doc = run(trees[label], part, args, f"ab-{label}-{part}-{r}", 900.0)
                builds[label].add(str(doc.get("build")))
                for case, value in figures(doc).items():
                    samples[label].setdefault(case, []).append(value)
    rows = []
    result: dict[str, Any] = {"trees": {k: str(v) for k, v in trees.items()}, "cases": []}
    for case in samples["A"]:
        xa, xb = samples["A"][case], samples["B"].get(case, [])
        if not xb:
            continue
        ma, mb = statistics.median(xa), statistics.median(xb)
        rows.append(
            (case, f"{_num(ma)} ({_num(min(xa))}-{_num(max(xa))})",
             f"{_num(mb)} ({_num(min(xb))}-{_num(max(xb))})", f"{mb / ma:.3f}")
        )  # fmt: skip
        result["cases"].append({"case": case, "A": xa, "B": xb, "ratio_of_medians": mb / ma})
    result["builds"] = {k: sorted(v) for k, v in builds.items()}
    console.print(table(f"A/B over {a.rounds} rounds (B/A: above 1 is more)",
                        ["case", "A median (range)", "B median (range)", "B/A"], rows))  # fmt: skip
    console.print(f"builds: A {sorted(builds['A'])}, B {sorted(builds['B'])}")
    write_results(a.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
