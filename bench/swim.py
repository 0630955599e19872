"""SWIM benchmark on the simulated network: detection time, false positives, bandwidth.

For each cluster size N (default 10, 50, 200), with the LAN preset and 5%
datagram loss (simulated; TCP exchanges stay reliable):

1. start N members joined through member 0 and run until converged;
2. steady state for ``--minutes`` simulated minutes: count false *deaths*
   (the target: zero) and false *suspicions* (refuted; harmless), and the
   bytes each member sends per second;
3. kill ``--kills`` members one after another and measure, for each, the time
   until the first member declares it dead and until every live member does.

Deterministic for a given ``--seed``. Usage::

    .venv/bin/python bench/swim.py [--sizes 10,50,200] [--minutes 10] [--loss 0.05]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

from peer_ring.membership.swim import SimCluster, SwimConfig, SwimState
from peer_ring.membership.swim.sim import sim_id
from peer_ring.membership.swim.state import MemberEventKind


def run_size(
    n: int, cfg: SwimConfig, minutes: float, loss: float, kills: int, seed: int
) -> dict[str, Any]:
    wall0 = time.perf_counter()
    cluster = SimCluster(cfg, seed=seed, loss=loss)
    cluster.start(n)
    if not cluster.run_until(cluster.converged, timeout=120, check_every=0.5):
        raise SystemExit(f"N={n}: did not converge")
    converge_s = cluster.now - 1000.0

    # Steady state: false positives and bandwidth.
    for node in cluster.nodes.values():
        node.events.clear()
    sent0 = sum(cluster.net.bytes_sent.values())
    t0 = cluster.now
    cluster.run_for(minutes * 60)
    elapsed = cluster.now - t0
    bytes_per_member_s = (sum(cluster.net.bytes_sent.values()) - sent0) / n / elapsed
    false_deaths = len(cluster.events(MemberEventKind.DEAD))
    false_suspicions = len(cluster.events(MemberEventKind.SUSPECT))

    # Detection: kill members one at a time.
    first: list[float] = []
    everywhere: list[float] = []
    for k in range(kills):
        victim = n - 1 - k
        cluster.kill(victim)
        start = cluster.now
        live = list(cluster.nodes)
        seen_first: list[float] = []

        def check(
            victim: int = victim, live: list[int] = live, seen: list[float] = seen_first
        ) -> bool:
            states = [cluster.state_of(o, victim) for o in live]
            if not seen and any(s in (SwimState.DEAD, None) for s in states):
                seen.append(cluster.now)
            return all(s in (SwimState.DEAD, None) for s in states)

        if not cluster.run_until(check, timeout=cfg.detection_bound(n) * 2, check_every=0.05):
            raise SystemExit(f"N={n}: member {victim} not detected")
        first.append(seen_first[0] - start)
        everywhere.append(cluster.now - start)
        cluster.run_for(2 * cfg.probe_interval)  # let the cluster settle between kills
    return {
        "n": n,
        "loss": loss,
        "simulated_minutes": minutes,
        "converge_s": round(converge_s, 2),
        "false_deaths": false_deaths,
        "false_suspicions": false_suspicions,
        "false_suspicions_per_member_hour": round(false_suspicions / n / (elapsed / 3600), 3),
        "bytes_per_member_s": round(bytes_per_member_s, 1),
        "detect_first_mean_s": round(statistics.mean(first), 2),
        "detect_all_mean_s": round(statistics.mean(everywhere), 2),
        "detect_all_max_s": round(max(everywhere), 2),
        "suspicion_min_s": round(cfg.suspicion_min_timeout(n), 2),
        "bound_s": round(cfg.detection_bound(n), 2),
        "cpu_s": round(time.perf_counter() - wall0, 1),
        "victims_undetected": 0,
        "ghost_dead": sum(
            1
            for _, ev in cluster.events(MemberEventKind.DEAD)
            if ev.id not in {sim_id(n - 1 - k) for k in range(kills)}
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="10,50,200")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--loss", type=float, default=0.05)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--preset", default="lan", choices=["local", "lan", "wan"])
    p.add_argument(
        "--no-lifeguard", action="store_true", help="awareness_max=0, no suspicion shrink"
    )
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    cfg = SwimConfig.preset(args.preset)
    if args.no_lifeguard:
        cfg = replace(cfg, awareness_max=0, suspicion_max_timeout_mult=1.0)
    rows = []
    cols = (
        "n",
        "false_deaths",
        "false_suspicions",
        "bytes_per_member_s",
        "detect_first_mean_s",
        "detect_all_mean_s",
        "detect_all_max_s",
        "bound_s",
        "cpu_s",
    )
    print(" | ".join(cols))
    for n in (int(x) for x in args.sizes.split(",")):
        row = run_size(n, cfg, args.minutes, args.loss, args.kills, args.seed)
        rows.append(row)
        print(" | ".join(str(row[c]) for c in cols), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
