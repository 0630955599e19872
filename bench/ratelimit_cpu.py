"""Rate limiter: CPU per decision in one process, and where it goes.

A 3-node cluster on the memory transport in this process, ``--tasks`` tasks
calling ``limiter.hit`` on one hot key of node 1 (fixed window, 1,000 per
second, so most answers are refusals, as in ``bench/ratelimit.py``), no
latency bookkeeping. Prints decisions per wall-second and per CPU-second of
the process, and each node's limiter counters; ``--profile`` adds the
cProfile top (interpreted functions only: compiled ones show as one entry).

    .venv/bin/python bench/ratelimit_cpu.py lease --decisions 500000
    .venv/bin/python bench/ratelimit_cpu.py exact --decisions 100000 --profile
    .venv/bin/python bench/ratelimit_cpu.py exact --remote --decisions 100000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from ratelimit import memory_limiters


async def run(mode: str, decisions: int, tasks: int, profile: bool, remote: bool) -> None:
    nodes, lims = await memory_limiters(mode, 1000)
    try:
        lim = lims[0]
        per = decisions // tasks
        # --remote: a hot key owned by another node, so that every decision
        # takes the asking path (request, memory transport, answer) as well
        key = next(
            f"hot{i}"
            for i in range(1000)
            if (lim.primary_of(f"default_hot{i}".encode()) != nodes[0].id) == remote
        )

        async def worker() -> None:
            for i in range(per):
                await lim.hit(key, limit=1000, period=1, algorithm="fixed_window")
                if i % 256 == 0:
                    await asyncio.sleep(0)  # a decision that never suspends must still yield

        await worker()  # warm-up: the key exists, slices are taken
        prof = cProfile.Profile() if profile else None
        t, c = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        if prof is not None:
            prof.disable()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        where = "remote owner" if remote else "local owner"
        n = per * tasks
        print(f"{mode} ({where}): {n / wall:,.0f} decisions/s, {n / cpu:,.0f} per CPU-s")
        for node, lm in zip(nodes, lims, strict=True):
            print(f"  {node.id}: { ({k: v for k, v in lm.stats.items() if v}) }")
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(40)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("lease", "exact"))
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--remote",
        action="store_true",
        help="the hot key's owner is another node: every decision crosses the (memory) transport",
    )
    args = ap.parse_args()
    asyncio.run(run(args.mode, args.decisions, args.tasks, args.profile, args.remote))


if __name__ == "__main__":
    main()
