"""Run every benchmark script in ``bench/`` one after the other (``make bench``).

Each script writes its own ``bench/results/NAME.json`` and prints its tables;
this runner adds nothing but the order, a per-script time limit and a summary.
A few entries run a script with arguments (the concurrency sweep behind
``bench/plot.py``'s pictures). Extra arguments are not forwarded: run a
script alone for its options. Exits non-zero when any script failed or timed
out. ``make bench`` then runs ``bench/plot.py``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Every bench script (with arguments, if any) and its time limit (seconds).
SCRIPTS: dict[str, float] = {
    "ring.py": 600,
    "transport.py": 900,
    "swim.py": 900,
    "kv.py": 1800,
    # the data of docs/img/kv-*.png (bench/plot.py)
    "kv.py --embedded --sizes 3 --mixes get,put --concurrency 8,16,32,64,128,256"
    " --seconds 2 --runs 5 --output kv-sweep": 900,
    "scale.py": 1200,
    "rebalance.py": 900,
    # the rebalance target's case: 1M keys at the default Q
    "rebalance.py --keys 1000000 --partitions 1024": 1200,
    # the rate limiter against the `limits` library (redis-server), and its accuracy
    "ratelimit.py": 600,
    # where a RESP command's time goes on the coordinating node (py-spy)
    "profile_resp.py": 600,
}


def main() -> int:
    from _util import console, table

    rows = []
    failed = 0
    for name, limit in SCRIPTS.items():
        console.rule(f"bench/{name}")
        script, *args = shlex.split(name)
        t0 = time.perf_counter()
        try:
            argv = [sys.executable, str(HERE / script), *args]
            code = subprocess.run(argv, timeout=limit).returncode
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:  # subprocess.run kills the child on timeout
            status = f"timed out after {limit:.0f}s"
        failed += status != "ok"
        rows.append((name, status, time.perf_counter() - t0))
    console.print(table("bench/run_all.py", ["script", "status", "seconds"], rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
