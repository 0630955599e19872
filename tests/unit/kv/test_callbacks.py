"""The callback forms of get/put (``start_get``/``start_put``) and of a quorum
round (``Coordinator.start`` with a listener): same outcomes as the awaitable
forms, told exactly once, errors included."""

from __future__ import annotations

import asyncio
from typing import Any

from peer_ring import QuorumResult
from peer_ring.errors import InvalidRequest, PeerRingError, QuorumNotReached
from peer_ring.replication.coordinator import Round
from tests.conftest import wait_for
from tests.unit.kv.conftest import ClusterFactory, KVCluster


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []
        self.event = asyncio.Event()

    def __call__(self, value: Any, exc: BaseException | None) -> None:
        self.calls.append((value, exc))
        self.event.set()

    async def once(
        self, cluster: KVCluster, rnd: Round | None = None
    ) -> tuple[Any, BaseException | None]:
        """The one call; checked once nothing is left to answer -- every target
        of ``rnd`` answered or failed, or without it no request of ``cluster``
        is pending -- so that a second, wrong call from a late answer or a
        deadline would have been made by then."""
        async with asyncio.timeout(5):
            while not self.calls:
                await self.event.wait()
        if rnd is not None:
            await wait_for(lambda: rnd.remaining == 0, message="every replica answered")
        else:
            await wait_for(lambda: quiet(cluster), message="every replica request settled")
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def quiet(cluster: KVCluster) -> bool:
    """No node of ``cluster`` waits for an answer, and no store for a background write."""
    return not any(
        getattr(n.transport, "_pending_by_rid", None) for n in cluster.nodes
    ) and not any(s._background for s in cluster.stores)


async def test_start_put_then_start_get_through_other_nodes(kv3: KVCluster) -> None:
    a, b, c = kv3.stores
    put = Told()
    a.start_put(b"cb-key", b"v1", put)
    assert await put.once(kv3) == (None, None)
    for store in (b, c):
        got = Told()
        store.start_get(b"cb-key", got)
        assert await got.once(kv3) == (b"v1", None)
    missing = Told()
    c.start_get(b"never-written", missing)
    assert await missing.once(kv3) == (None, None)


async def test_start_put_from_a_non_replica_goes_through_put(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(5)
    key = b"forwarded-cb"
    outsider = cluster.non_replica(key)
    put = Told()
    outsider.start_put(key, b"v", put)
    assert await put.once(cluster) == (None, None)
    assert outsider.local_state(key) is None  # a replica coordinated it
    assert await cluster.stores[0].get(key) == b"v"


async def test_bad_input_is_told_not_raised(kv3: KVCluster) -> None:
    store = kv3.stores[0]
    too_long = b"k" * (store.limits.max_key_size + 1)
    got, put = Told(), Told()
    store.start_get(too_long, got)
    store.start_put(b"k", b"v" * (store.limits.max_value_size + 1), put)
    assert isinstance((await got.once(kv3))[1], InvalidRequest)
    assert isinstance((await put.once(kv3))[1], InvalidRequest)


async def test_quorum_failures_reach_the_listener(kv3: KVCluster) -> None:
    node = kv3.nodes[0]
    told = Told()
    # more acks than replicas can ever give: the round fails, once
    rnd = node.coordinator.start("kv", b"q", "get", None, quorum=3, n=3, listener=told, timeout=0.5)
    value, exc = await told.once(kv3, rnd)
    assert value is not None
    assert exc is None
    kv3.net.partition({node.address}, {n.address for n in kv3.nodes[1:]})
    told2 = Told()
    rnd = node.coordinator.start("kv", b"q", "get", None, quorum=2, listener=told2, timeout=0.3)
    value, exc = await told2.once(kv3, rnd)
    assert value is None
    assert isinstance(exc, QuorumNotReached)
    assert exc.acked == 1


async def test_on_complete_gets_every_answer(kv3: KVCluster) -> None:
    node = kv3.nodes[0]
    seen: list[QuorumResult] = []
    result = await node.coordinator.run(
        "kv", b"all", "get", None, quorum=1, on_complete=seen.append
    )
    assert len(result.acks) >= 1
    await wait_for(lambda: len(seen) == 1, message="on_complete")
    assert sorted(nid for nid, _ in seen[0].answers) == sorted(n.id for n in kv3.nodes)
    assert result.complete is None  # on_complete replaces the future


async def test_a_raising_listener_does_not_break_the_round(kv3: KVCluster) -> None:
    node = kv3.nodes[0]

    def broken(result: QuorumResult | None, exc: BaseException | None) -> None:
        raise PeerRingError("listener bug")

    rnd = node.coordinator.start("kv", b"x", "get", None, quorum=1, listener=broken)
    await wait_for(lambda: rnd.remaining == 0, message="every replica answered")
    assert rnd.finished
