"""Batched rounds under a replica that fails part of a batch (issue 18).

A 3-node N=3 cluster, W=2, where the two replicas other than the one the
client talks to have a small ``--maxmemory`` under ``noeviction``: once a
replica is full it refuses every replicated write that carries a value
(``OutOfMemory``) while it keeps accepting the rest of the same batch until
then -- so batches arrive that one replica applies only in part. The client
sends redis-py pipelines of SETs (grouped by the server into batches, one
request per replica per group) and records every command in the fault
harness's history.

Checked: some pipelines got both acknowledgements and errors (the fault hit
inside batches); every acknowledged key is held by at least W replicas and
no refused key was acknowledged (a batch never acknowledges a key that was
not written on W replicas); and the harness's checkers find no lost
acknowledged write and no invented value.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from peer_ring.testing.checker import check_invented_values, check_lost_writes
from peer_ring.testing.faults import wait_members_up
from peer_ring.testing.workload import classify, final_reads, owners_of, replica_dumps
from tests.fault._harness import PARTITIONS, Scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

W = 2
PIPELINE = 32


async def _write_pipelines(sc: Scenario, rounds: int) -> tuple[list[str], int]:
    """Pipelines of SETs through n1, every command recorded; returns the keys
    and how many pipelines had both acknowledged and refused commands."""
    n1 = sc.cluster["n1"]
    r = aioredis.Redis(host=n1.ip, port=n1.resp_port or 0, socket_timeout=10)
    h = sc.history
    keys: list[str] = []
    mixed = 0
    try:
        for p in range(rounds):
            pipe = r.pipeline(transaction=False)
            ids = []
            for i in range(PIPELINE):
                key, value = f"b{p}-{i}", f"v{p}.{i}" + "x" * 200
                keys.append(key)
                ids.append(h.invoke("c1", "n1", "write", key, value))
                pipe.set(key, value)
            replies = await pipe.execute(raise_on_error=False)
            kinds = set()
            for oid, reply in zip(ids, replies, strict=True):
                if isinstance(reply, ResponseError):
                    # TRYAGAIN (quorum not reached: applied on some replicas,
                    # so the outcome is unknown) or a plain refusal
                    h.complete(oid, classify(reply), error=f"{type(reply).__name__}: {reply}"[:200])
                    kinds.add("fail")
                else:
                    assert reply is True
                    h.complete(oid, "ok")
                    kinds.add("ok")
            mixed += kinds == {"ok", "fail"}
    finally:
        await r.aclose()
    return keys, mixed


async def test_a_batch_never_acknowledges_a_key_not_written_on_w_replicas(
    scenario_factory: object, tmp_path: Path
) -> None:
    def small(size: str) -> list[str]:
        return ["--maxmemory", size, "--maxmemory-policy", "noeviction"]

    sc: Scenario = scenario_factory(  # type: ignore[operator]
        3,
        node_args=["--read-quorum", "2", "--write-quorum", str(W)],
        per_node_args={"n2": small("48kb"), "n3": small("64kb")},
    )
    await wait_members_up(sc.cluster, timeout=30.0)
    keys, mixed = await _write_pipelines(sc, rounds=30)
    ops = sc.history.operations()
    acked = {op.key: op.value for op in ops if op.ok}
    refused = {op.key for op in ops if not op.ok}
    assert acked, "nothing was acknowledged"
    assert refused, "no replica refused anything: the fault did not happen"
    assert mixed > 0, "no pipeline was acknowledged in part: the fault never hit inside a batch"
    for op in ops:
        if not op.ok:  # refused by both full replicas: W = 2 out of reach
            assert "TryAgain" in (op.error or "") or "OOM" in (op.error or ""), op.error

    # each acknowledged key is on at least W replicas (read right away, before
    # anti-entropy could have copied a key that was acknowledged too early)
    peers = {n: p.address for n, p in sc.cluster.nodes.items()}
    dumps = await replica_dumps(peers, keys, partitions=PARTITIONS, deadline=20.0)
    assert not dumps.unanswered, dumps.unanswered
    owners = owners_of(list(sc.cluster.nodes), keys, partitions=PARTITIONS, replicas=3)
    for key, value in acked.items():
        holders = [n for n in owners[key] if value in dumps.contents[n].get(key, [])]
        assert len(holders) >= W, f"{key} acknowledged but held by {holders} only"
    assert not refused & set(acked)

    final = await final_reads(sc.endpoints, keys, timeout=30.0)
    lost = check_lost_writes(sc.history.events, final.values, mode=sc.mode)
    assert lost.ok, lost
    invented = check_invented_values(sc.history.events, final.values)
    assert invented.ok, invented
