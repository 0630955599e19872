"""Fault scenarios of the replicated streams (issue 15), with checkers.

(a) Every acknowledged XADD is readable after kill -9 of its leader and of
    each other replica, one at a time (N=3, W=2, R=2); IDs acknowledged to
    one sequential producer only grow, across every change of leader; an
    idempotent producer (IDMP) retrying after TRYAGAIN adds no duplicate.
(b) A group with three consumers, each talking to a different node,
    delivers every acknowledged entry at least once across a kill -9 of
    the leader, its restart, a join and a decommission; it delivers no entry
    that was never added, and each consumer's first deliveries (``>``
    reads) come in ID order.

Real node processes (LocalCluster) on their own loopback /24; run inside
a private network namespace (see HELPERS.md / CONTRIBUTING.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import wait_members_up
from peer_ring.transport import request_once
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RESP = 6379
KEY = "orders"
_OCTET = 60 + os.getpid() % 50
TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


def sid(raw: bytes) -> tuple[int, int]:
    ms, seq = raw.split(b"-")
    return int(ms), int(seq)


@dataclass
class Producer:
    """One sequential producer: XADD ... IDMP p <seq>, retried until acknowledged."""

    nodes: list[str]
    acked: dict[int, bytes] = field(default_factory=dict)  # seq -> id
    attempted: set[int] = field(default_factory=set)
    failures: int = 0
    next_seq: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        k = 0
        client = aioredis.Redis(host=self.nodes[k], port=RESP, socket_timeout=3)
        try:
            while not stop.is_set():
                seq = self.next_seq
                self.attempted.add(seq)
                for _ in range(200):  # bounded retries of one sequence
                    try:
                        got = await client.execute_command(
                            "XADD", KEY, "IDMP", "p", seq, "*", "seq", seq
                        )
                    except (*TRANSIENT, ResponseError) as exc:
                        if isinstance(exc, ResponseError) and "TRYAGAIN" not in str(exc):
                            raise
                        self.failures += 1
                        await client.aclose()
                        k = (k + 1) % len(self.nodes)
                        client = aioredis.Redis(host=self.nodes[k], port=RESP, socket_timeout=3)
                        await asyncio.sleep(0.05)  # back off before the retry
                        continue
                    self.acked[seq] = got
                    break
                else:
                    raise AssertionError(f"sequence {seq} never acknowledged")
                self.next_seq += 1
        finally:
            await client.aclose()


def check_producer(p: Producer, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """Durability, no invention, no duplicates, growing IDs."""
    by_id = {i: f for i, f in entries}
    for seq, i in p.acked.items():
        assert i in by_id, f"acknowledged XADD {seq} -> {i!r} lost"
        assert by_id[i] == {b"seq": b"%d" % seq}, f"entry {i!r} changed"
    seqs = [int(f[b"seq"]) for _, f in entries]
    assert set(seqs) <= p.attempted, "an entry nobody added"
    assert len(seqs) == len(set(seqs)), "a retried sequence was added twice"
    ordered = [p.acked[s] for s in sorted(p.acked)]
    assert [sid(i) for i in ordered] == sorted(sid(i) for i in ordered), "IDs went backwards"
    assert len(set(ordered)) == len(ordered)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(4, subnet=f"127.0.{_OCTET}", resp_port=RESP, partitions=64, artefacts=tmp_path)
    try:
        yield c
    finally:
        c.close()


async def read_all(host: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    r = aioredis.Redis(host=host, port=RESP, socket_timeout=10)
    try:
        for _ in range(100):
            try:
                return [(i, f) for i, f in await r.xrange(KEY)]
            except (*TRANSIENT, ResponseError):
                await asyncio.sleep(0.1)  # back off: the ring is settling
        raise AssertionError("XRANGE never answered")
    finally:
        await r.aclose()


async def test_acknowledged_xadds_survive_kill_9_of_each_replica_in_turn(
    cluster: LocalCluster,
) -> None:
    cluster.start(["n1", "n2", "n3"])
    await wait_members_up(cluster)
    hosts = [cluster[n].ip for n in ("n1", "n2", "n3")]
    producer = Producer(hosts)
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    try:
        for name in ("n1", "n2", "n3"):  # the leader is one of them; each replica in turn
            before = len(producer.acked)
            await wait_for(
                lambda b=before: len(producer.acked) > b + 30, timeout=60, message="load"
            )
            cluster.kill(name)
            after_kill = len(producer.acked)
            await wait_for(
                lambda a=after_kill: len(producer.acked) > a + 30,
                timeout=60,
                message=f"writes acknowledged with {name} down",
            )
            await asyncio.to_thread(cluster.restart, name)
            await wait_members_up(cluster, ["n1", "n2", "n3"])
        stop.set()
        await asyncio.wait_for(task, 60)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert producer.acked
    for host in hosts:
        check_producer(producer, await read_all(host))


@dataclass
class Consumer:
    name: str
    nodes: list[str]
    first: list[bytes] = field(default_factory=list)  # '>' deliveries in order
    claimed: list[bytes] = field(default_factory=list)
    acked: set[bytes] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        k = 0
        client = aioredis.Redis(host=self.nodes[k], port=RESP, socket_timeout=5)
        rounds = 0
        try:
            while not stop.is_set():
                rounds += 1
                try:
                    got = await client.xreadgroup("g", self.name, {KEY: ">"}, count=20, block=200)
                    ids = [i for _, rows in got for i, _ in rows] if got else []
                    self.first.extend(ids)
                    if rounds % 5 == 0:
                        res = await client.xautoclaim(KEY, "g", self.name, 1000, "0-0", count=50)
                        claimed = [i for i, _ in res[1]]
                        self.claimed.extend(claimed)
                        ids += claimed
                    if ids:
                        await client.xack(KEY, "g", *ids)
                        self.acked.update(ids)
                except (*TRANSIENT, ResponseError) as exc:
                    if isinstance(exc, ResponseError) and "TRYAGAIN" not in str(exc):
                        raise
                    await client.aclose()
                    k = (k + 1) % len(self.nodes)
                    client = aioredis.Redis(host=self.nodes[k], port=RESP, socket_timeout=5)
                    await asyncio.sleep(0.05)  # back off before the retry
        finally:
            await client.aclose()


async def test_a_group_delivers_every_acknowledged_entry_across_kill_restart_join_and_decommission(
    cluster: LocalCluster,
) -> None:
    cluster.start(["n1", "n2", "n3"])
    await wait_members_up(cluster)
    hosts = [cluster[n].ip for n in ("n1", "n2", "n3")]
    setup = aioredis.Redis(host=hosts[0], port=RESP, socket_timeout=10)
    await setup.xgroup_create(KEY, "g", id="0", mkstream=True)
    await setup.aclose()
    producer = Producer(hosts)
    consumers = [Consumer(f"c{i}", hosts[i:] + hosts[:i]) for i in range(3)]
    stop_p, stop_c = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(producer.run(stop_p))]
    tasks += [asyncio.create_task(c.run(stop_c)) for c in consumers]

    def delivered() -> set[bytes]:
        return {i for c in consumers for i in c.first + c.claimed}

    async def progress(what: str, n: int = 30) -> None:
        start = len(producer.acked)
        await wait_for(lambda: len(producer.acked) > start + n, timeout=60, message=what)

    try:
        await progress("load")
        cluster.kill("n1")  # the seed, and the leader of about a third of the partitions
        await progress("writes with n1 killed")
        await asyncio.to_thread(cluster.restart, "n1")
        await wait_members_up(cluster, ["n1", "n2", "n3"])
        await progress("writes after the restart")
        await asyncio.to_thread(cluster.start, ["n4"])  # a join
        await wait_members_up(cluster, ["n1", "n2", "n3", "n4"])
        await progress("writes after the join")
        result = await request_once(cluster["n2"].address, ["leave"], timeout=60.0)
        assert result["node"] == "n2"
        await progress("writes after the decommission")
        stop_p.set()
        await asyncio.wait_for(tasks[0], 60)
        acked = set(producer.acked.values())
        await wait_for(
            lambda: acked <= delivered(), timeout=60, message="every acknowledged entry delivered"
        )
    finally:
        stop_p.set()
        stop_c.set()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await asyncio.wait_for(t, 30)
    entries = await read_all(cluster["n3"].ip)
    check_producer(producer, entries)
    existing = {i for i, _ in entries}
    assert delivered() <= existing, "a delivery of an entry that was never added"
    for c in consumers:
        assert [sid(i) for i in c.first] == sorted(sid(i) for i in c.first), (
            f"{c.name}'s first deliveries out of ID order"
        )
