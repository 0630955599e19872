"""Fault scenario (c) of issue 15 for pub/sub, with a checker.

Three publishers (one per node) publish numbered messages on three channels
while subscribers on three nodes (channels and a pattern) listen; n4, which
leads some of the channels, is killed with kill -9 and restarted meanwhile.
Checked per subscriber: every message at most once; per publisher and
channel, in publish order; and every message published before the kill,
exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from peer_ring.testing.cluster import LocalCluster
from peer_ring.testing.faults import wait_members_up
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RESP = 6379
CHANNELS = ["news.a", "news.b", "news.c"]
_OCTET = 110 + os.getpid() % 40


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(4, subnet=f"127.0.{_OCTET}", resp_port=RESP, partitions=64, artefacts=tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.close()


async def test_pubsub_delivers_at_most_once_in_order_across_a_kill(cluster: LocalCluster) -> None:
    await wait_members_up(cluster)
    hosts = [cluster[n].ip for n in ("n1", "n2", "n3")]
    received: dict[str, list[tuple[str, int, str]]] = {}
    listeners = []
    clients: list[aioredis.Redis] = []
    for k, host in enumerate(hosts):
        for kind in ("chan", "pat"):
            name = f"{kind}@{k}"
            client = aioredis.Redis(host=host, port=RESP)
            clients.append(client)
            ps = client.pubsub()
            if kind == "chan":
                await ps.subscribe(*CHANNELS)
            else:
                await ps.psubscribe("news.*")
            received[name] = []
            listeners.append((name, ps))
    for _, ps in listeners:  # every confirmation read: all subscriptions are registered
        for _ in range(len(CHANNELS) if ps.channels else 1):
            assert (await ps.get_message(timeout=10.0) or {}).get("type", "").endswith("subscribe")
    stop = asyncio.Event()

    async def listen(name: str, ps: Any) -> None:
        while not stop.is_set():
            msg = await ps.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                pub, seq = msg["data"].decode().split(":")
                received[name].append((pub, int(seq), msg["channel"].decode()))

    tasks = [asyncio.create_task(listen(n, ps)) for n, ps in listeners]
    sent: dict[str, list[tuple[int, str]]] = {f"p{k}": [] for k in range(3)}
    before_kill: dict[str, int] = {}
    killed = asyncio.Event()

    async def publisher(k: int) -> None:
        pub = f"p{k}"
        client = aioredis.Redis(host=hosts[k], port=RESP, socket_timeout=5)
        seq = 0
        try:
            while not stop.is_set() and seq < 20_000:
                ch = CHANNELS[seq % 3]
                with contextlib.suppress(RedisError, OSError):
                    await client.publish(ch, f"{pub}:{seq}")
                    sent[pub].append((seq, ch))
                    if not killed.is_set():
                        before_kill[pub] = seq
                seq += 1
        finally:
            await client.aclose()

    pubs = [asyncio.create_task(publisher(k)) for k in range(3)]
    try:
        await wait_for(lambda: all(len(v) > 100 for v in sent.values()), timeout=60, message="load")
        killed.set()
        cluster.kill("n4")
        await wait_for(
            lambda: all(len(v) > 300 for v in sent.values()), timeout=60, message="after kill"
        )
        await asyncio.to_thread(cluster.restart, "n4")
        await wait_members_up(cluster)
        restarted = {pub: len(v) for pub, v in sent.items()}  # published from here on
        await wait_for(
            lambda: all(len(v) > restarted[p] + 200 for p, v in sent.items()),
            timeout=60,
            message="after restart",
        )
    finally:
        stop.set()
        await asyncio.gather(*pubs, *tasks, return_exceptions=True)
        for _, ps in listeners:
            await ps.aclose()
        for c in clients:
            await c.aclose()
    for name, got in received.items():
        assert len(got) == len(set(got)), f"{name} got a message twice"
        for pub in sent:
            for ch in CHANNELS:
                seqs = [s for p, s, c in got if p == pub and c == ch]
                assert seqs == sorted(seqs), f"{name}: {pub} on {ch} out of order"
        for pub, n in restarted.items():  # the registry outlived the kill and restart
            later = {s for s, _ in sent[pub][n:]}
            assert any(p == pub and s in later for p, s, _ in got), f"{name}: none after restart"
        for pub, last in before_kill.items():  # no fault yet: exactly once
            want = {(s, c) for s, c in sent[pub] if s < last}
            have = {(s, c) for p, s, c in got if p == pub}
            assert want <= have, (
                f"{name} missed {len(want - have)} of {pub}'s messages before the kill"
            )
