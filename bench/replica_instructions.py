"""Instructions per key at a NON-serving replica: replicated writes (``repl``)
and replica reads (``get``) arriving in batches (``sb``), two builds side by side.

``bench/resp_instructions.py --node 2`` cannot count a replica well: the
replica is off the client's critical path (W=2 of N=3 is met without it), so
its work spills across the dump windows, and its timer-driven background
work (~20 M instructions per second of valgrind's wall time) dwarfs a few
thousand keys. This script counts the replica's work alone, deterministically:

1. a 3-node in-memory cluster (N=3, R=W=2, ``conflicts`` LWW -- the RESP
   surface's store -- or ``siblings``), every node patient (``kv_cpu.py``);
2. preload the keyspace (``--writers``: written by n1 only, as RESP clients
   of n1 do, or by all three nodes: the embedded benchmark's states, one
   clock entry per coordinator); snapshot n2's store;
3. capture, as encoded request frames, every ``sb`` batch that n2 receives
   while n1 runs ``put_many`` (then ``get_many``) of ``--batch`` keys over
   the keyspace (the RESP ``-P 16`` shape: one batch per replica per flush);
4. under callgrind (``--instr-atstart=no``), restore n2's snapshot and feed
   the first LO, then (restored again) the first HI captured frames to a
   session of n2's transport (``_Session.frame``: frame decoding, the node's
   batch dispatch, the replica's handlers, the answer's encoding), with a
   callgrind dump around each feed.

The figure is ``(Ir(HI) - Ir(LO)) / (keys(HI) - keys(LO))``: the instructions
one more key costs the replica. No event-loop pass, no timer, no socket runs
inside the windows, so two runs of a tree agree to a few instructions.

    .venv/bin/python bench/replica_instructions.py --base /tmp/old-tree --new .

Each tree needs ``TREE/.venv/bin/python`` and its compiled build. Needs
``valgrind``. About a minute per tree and mix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_SUMMARY = re.compile(r"^summary: (\d+)", re.MULTILINE)


def _dump(name: str) -> None:
    subprocess.run(["callgrind_control", "-d", name, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip


async def _inner(a: argparse.Namespace) -> dict[str, Any]:
    """Runs in the measured interpreter (under valgrind when ``--window``)."""
    import msgpack

    from peer_ring import Node, NodeConfig, ReplicationConfig
    from peer_ring.apps.kv import KVConfig, KVStore
    from peer_ring.transport._core import FrameConn
    from peer_ring.transport.base import PeerInfo
    from peer_ring.transport.memory import MemoryNetwork

    sys.path.insert(0, str(HERE))
    from kv_cpu import PATIENT

    class Conn(FrameConn):
        def __init__(self) -> None:
            self.out = 0

        def write(self, frame: bytes) -> None:
            self.out += 1

        def buffered(self) -> int:
            return 0

        def close(self) -> None:
            pass

    net = MemoryNetwork()
    kv_config = KVConfig(conflicts=a.conflicts, sweep_interval=600.0)
    nodes = [
        Node(
            NodeConfig.local(
                f"n{i}", listen=f"10.7.0.{i}:7400", transport="memory",
                seeds=("10.7.0.1:7400",),
                replication=ReplicationConfig(partitions=256, replicas=3, read_quorum=2,
                                              write_quorum=2),
                **PATIENT,  # type: ignore[arg-type]
            ),
            network=net,
        )
        for i in range(1, 4)
    ]  # fmt: skip
    stores = [n.register(KVStore(config=kv_config)) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await asyncio.gather(*(n.wait_ready(600.0) for n in nodes))
    try:
        keys = [f"key:{i:012d}".encode() for i in range(a.keys)]
        value = b"x" * 100
        writers = stores if a.writers == "all" else stores[:1]
        for rnd in range(2):  # every key written twice: the states a running store holds
            for j in range(0, len(keys), a.batch):
                w = writers[(j // a.batch + rnd) % len(writers)]
                await w.put_many([(k, value) for k in keys[j : j + a.batch]])
        await asyncio.sleep(0.05)
        kv2 = stores[1]
        snap_parts = {p: dict(d) for p, d in kv2._parts.items()}
        snap_mortal = {p: set(s) for p, s in kv2._mortal.items()}
        snap_used = kv2.memory.used
        transport = nodes[1].transport
        original = transport._handler
        captured: dict[str, list[tuple[bytes, int]]] = {"put": [], "get": []}
        phase = ["put"]
        rid = [100]

        def record(message: Any, peer: Any) -> Any:
            if type(message) is list and message and message[0] == "sb":
                rid[0] += 1
                frame = msgpack.packb([0, rid[0], message], use_bin_type=True)
                captured[phase[0]].append((frame, len(message[4]) // 4))
            return original(message, peer)

        transport._handler = record
        n1 = stores[0]
        for j in range(0, len(keys), a.batch):
            await n1.put_many([(k, value) for k in keys[j : j + a.batch]])
        await asyncio.sleep(0.05)
        phase[0] = "get"
        for j in range(0, len(keys), a.batch):
            await n1.get_many(keys[j : j + a.batch])
        await asyncio.sleep(0.05)
        transport._handler = original

        def restore() -> None:
            kv2._parts = {p: dict(d) for p, d in snap_parts.items()}
            kv2._mortal = {p: set(s) for p, s in snap_mortal.items()}
            kv2.memory.used = snap_used

        session = transport._accept(Conn())
        session.peer = PeerInfo("n1", nodes[0].address, True, True)
        frames = captured[a.mix]
        out: dict[str, Any] = {"frames": len(frames)}
        if a.mix == "get":
            restore()
            # the put frames applied: every key's newest state, as n1 read it
            for data, _ in captured["put"]:
                session.frame(data)
        for label, count in (("lo", a.lo), ("hi", a.hi)):
            if a.mix == "put":
                restore()
            chosen = frames[:count]
            out[f"keys_{label}"] = sum(k for _, k in chosen)
            if a.window:
                _dump(f"before-{label}")
            for data, _ in chosen:
                session.frame(data)
            if a.window:
                _dump(label)
        return out
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))


def _measure(tree: Path, a: argparse.Namespace, mix: str, keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            "valgrind", "--tool=callgrind", "--instr-atstart=yes",
            f"--callgrind-out-file={tmp}/cg.out",
            str(tree / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--inner",
            "--window", "--mix", mix, "--lo", str(a.lo), "--hi", str(a.hi), "--keys",
            str(a.keys), "--batch", str(a.batch), "--conflicts", a.conflicts,
            "--writers", a.writers,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        if done.returncode != 0:
            sys.exit(f"{tree}: the run failed:\n{done.stderr[-3000:]}")
        info = json.loads(done.stdout.strip().splitlines()[-1])
        # dumps: 1 before-lo, 2 lo, 3 before-hi, 4 hi (5: the exit's rest)
        ir = {}
        for k, label in ((2, "lo"), (4, "hi")):
            path = Path(f"{tmp}/cg.out.{k}")
            ir[label] = int(_SUMMARY.search(path.read_text()).group(1))  # type: ignore[union-attr]
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, keep / f"{tree.name}-{mix}-{label}.cg")
        dk = info["keys_hi"] - info["keys_lo"]
        return {**info, "ir": ir, "ir_per_key": round((ir["hi"] - ir["lo"]) / dk)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="the old tree")
    ap.add_argument("--new", type=Path, default=Path("."), help="the new tree")
    ap.add_argument("--mixes", default="put,get")
    ap.add_argument("--mix", default="put", help=argparse.SUPPRESS)
    ap.add_argument("--keys", type=int, default=2048, help="keyspace, preloaded")
    ap.add_argument("--batch", type=int, default=16, help="keys per put_many/get_many of n1")
    ap.add_argument("--lo", type=int, default=16, help="captured frames fed in the short window")
    ap.add_argument("--hi", type=int, default=80, help="captured frames fed in the long window")
    ap.add_argument("--conflicts", default="lww", choices=["lww", "siblings"])
    ap.add_argument(
        "--writers",
        default="n1",
        choices=["n1", "all"],
        help="who wrote the preloaded keys: n1 (RESP clients of n1: one actor per key) or "
        "all three nodes (the embedded benchmark: a clock entry per coordinator)",
    )
    ap.add_argument("--keep", type=Path, help="save the windows' callgrind dumps here")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--window", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        print(json.dumps(asyncio.run(_inner(a))))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    trees = {"new": a.new.resolve()}
    if a.base is not None:
        trees = {"base": a.base.resolve(), **trees}
    rows = []
    for mix in a.mixes.split(","):
        for label, tree in trees.items():
            r = _measure(tree, a, mix, a.keep)
            rows.append({"tree": label, "mix": mix, **r})
            print(json.dumps(rows[-1]), flush=True)
    print(f"instructions per key at replica n2 (batches of {a.batch}, {a.conflicts}, "
          f"keys written by {a.writers}):")  # fmt: skip
    for r in rows:
        print(f"  {r['tree']:5} {r['mix']:4} {r['ir_per_key']:>8,}")


if __name__ == "__main__":
    main()
