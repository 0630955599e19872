"""Resumable transfer streams, the bytes/s limit, and a joiner that waits for its transfers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from peer_ring.config import HandoffConfig
from peer_ring.errors import ConfigError, InvalidRequest, PeerUnavailable
from peer_ring.node import Node
from peer_ring.replication.transfer import STREAM_KIND, _Job
from peer_ring.transport.base import PeerInfo
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.handoff._cluster import fast_handoff, key, make_node, placement_ok, reg, write


def _assert_holds_acked(joiner: Node, acked: Iterable[int]) -> None:
    """Every acknowledged key the joiner owns is on it, with its value."""
    ring = joiner.ring
    for i in acked:
        k = key(i)
        p = ring.partition_for(k)
        if joiner.id in ring.preference_list(p):
            assert reg(joiner).holds(k, p) == (1, b"v%d" % i)


async def _two_nodes(handoff: HandoffConfig) -> tuple[MemoryNetwork, Node, Node]:
    net = MemoryNetwork()
    a, b = make_node(net, 1, handoff=handoff), make_node(net, 2, handoff=handoff)
    await asyncio.gather(a.start(), b.start())
    await wait_for(lambda: all(len(n.members) == 2 for n in (a, b)), message="2 members")
    return net, a, b


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    """Two started nodes with the fast handoff settings, stopped afterwards."""
    _, a, b = await _two_nodes(fast_handoff())
    yield a, b
    await asyncio.gather(a.stop(), b.stop())


async def test_broken_stream_resumes_after_the_chunks_the_receiver_imported() -> None:
    _, sender, receiver = await _two_nodes(fast_handoff(chunk_records=10))
    try:
        records = [(b"r-%03d" % i, [1, b"v%d" % i]) for i in range(200)]  # 20 chunks
        real = sender.transport.send_stream
        calls: list[int] = []

        async def breaks_after_three(chunks: Any) -> AsyncIterator[Any]:
            n = 0
            async for chunk in chunks:
                yield chunk
                n += 1
                if n == 3:
                    await wait_for(
                        lambda: receiver.metrics()["records_received"] >= 30,
                        message="3 chunks imported",
                    )
                    raise PeerUnavailable("link broken by the test")

        async def flaky(address: str, header: Any, chunks: Any, **kw: Any) -> Any:
            calls.append(header[5])  # the first chunk index this stream starts at
            if len(calls) == 1:
                chunks = breaks_after_three(chunks)
            return await real(address, header, chunks, **kw)

        sender.transport.send_stream = flaky  # type: ignore[method-assign]
        svc = reg(sender)
        ok = await sender.transfers._send(svc, 5, receiver.id, iter(records))
        assert ok
        assert calls == [0, 3]  # the retry resumed at chunk 3, not at 0
        assert sender.metrics()["records_not_resent"] == 30
        assert receiver.metrics()["records_received"] == 200  # nothing imported twice
        assert len(reg(receiver).data[5]) == 200
    finally:
        await asyncio.gather(sender.stop(), receiver.stop())


async def test_resume_point_of_an_unknown_transfer_is_zero() -> None:
    _, a, b = await _two_nodes(fast_handoff())
    try:
        # a receiver that restarted (or never saw the id) makes the sender start over
        assert await a.transport.request(b.address, ["xf_at", "no-such-transfer"]) == 0
    finally:
        await asyncio.gather(a.stop(), b.stop())


def test_bytes_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        HandoffConfig(max_bytes_per_second=0)
    assert HandoffConfig(max_bytes_per_second=1e6).max_bytes_per_second == 1e6


async def test_transfer_under_a_bytes_limit_still_moves_everything() -> None:
    handoff = fast_handoff(max_bytes_per_second=200_000.0, chunk_records=50)
    net, *nodes = await _two_nodes(handoff)
    joiner: Node | None = None
    try:
        acked = await write(nodes[0], range(600), expect=600)
        joiner = make_node(net, 3, handoff=handoff)
        await joiner.start()
        everyone = [*nodes, joiner]
        await wait_for(lambda: placement_ok(everyone, acked), timeout=20, message="placement")
        assert sum(n.metrics()["bytes_sent"] for n in nodes) > 0
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
        if joiner is not None:
            await joiner.stop()


async def test_joiner_waits_for_announced_transfers_instead_of_merkle_syncing() -> None:
    # anti-entropy in the background is off (fast_handoff), so every Merkle
    # exchange the joiner makes is a bootstrap sync
    net, *nodes = await _two_nodes(fast_handoff())
    joiner: Node | None = None
    try:
        acked = await write(nodes[0], range(1500), expect=1500)
        joiner = make_node(net, 3)
        await joiner.start()
        await asyncio.wait_for(joiner.bootstrap.done.wait(), 20)
        m = joiner.metrics()
        owned = len(joiner.ring.partitions_of(joiner.id))
        assert owned > 0
        assert m["bootstrap_partitions_synced"] == owned
        # every gained partition came by transfer; none was also Merkle-synced
        assert m["bootstrap_partitions_by_transfer"] == owned
        assert m["ae_exchanges"] == 0
        # and what arrived is complete: every acknowledged key the joiner owns is there
        _assert_holds_acked(joiner, acked)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
        if joiner is not None:
            await joiner.stop()


async def test_joiner_falls_back_to_merkle_sync_when_senders_give_up() -> None:
    # The joiner refuses every transfer stream: its peers retry, give up and
    # say so (xf_fail); the joiner then Merkle-syncs those partitions with
    # their live co-owners instead of waiting for transfers that never come.
    handoff = fast_handoff(max_attempts=2, retry_min=0.01, retry_max=0.02)
    net, *nodes = await _two_nodes(handoff)
    joiner: Node | None = None
    try:
        acked = await write(nodes[0], range(600), expect=600)
        joiner = make_node(net, 3, handoff=handoff)

        async def refuse(header: Any, peer: Any) -> Any:
            raise PeerUnavailable("this test's joiner refuses transfer streams")

        joiner._stream_handlers[STREAM_KIND] = refuse
        await joiner.start()
        await asyncio.wait_for(joiner.bootstrap.done.wait(), 20)
        m = joiner.metrics()
        owned = len(joiner.ring.partitions_of(joiner.id))
        assert owned > 0
        assert m["bootstrap_partitions_by_transfer"] == 0
        assert m["bootstrap_partitions_synced"] == owned  # all of them by Merkle sync
        assert m["ae_exchanges"] > 0
        assert joiner.transfers.inbound_failed  # the senders said they gave up
        _assert_holds_acked(joiner, acked)
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
        if joiner is not None:
            await joiner.stop()


async def test_only_transfers_in_the_senders_place_are_announced_and_counted(
    pair: tuple[Node, Node],
) -> None:
    # A joiner may take a transfer instead of a Merkle sync only when it
    # inherits the sender's copy (handoff, decommission). A re-replication
    # from one survivor, or a sweep of stray data, is neither announced nor
    # counted: those partitions are Merkle-synced with every co-owner.
    a, b = pair
    tm = a.transfers
    tm._queue = asyncio.Queue()  # jobs queued, no worker runs them
    tm._enqueue(_Job(1, (b.id,), False, "re-replicate"))
    tm._enqueue(_Job(2, (b.id,), True, "sweep"))
    tm._enqueue(_Job(3, (b.id,), True, "handoff"))
    tm._enqueue(_Job(4, (b.id,), False, "decommission"))
    assert tm.planned_for(b.id) == [3, 4]

    peer = PeerInfo(a.id, a.address)
    rb = b.transfers
    rb._on_done_message(["xf_done", 5, a.id, [b.id], "re-replicate"], peer)
    rb._on_done_message(["xf_done", 6, a.id, [b.id], "sweep"], peer)
    assert rb.inbound_done == {}
    # the sender is the channel's peer, whatever the payload claims
    rb._on_done_message(["xf_done", 7, "n-forged", [b.id], "handoff"], peer)
    assert rb.inbound_done == {7: {a.id}}
    # strangers are ignored; malformed messages are refused
    rb._on_done_message(["xf_done", 8, "x", [b.id], "handoff"], PeerInfo("ghost", "x:1"))
    rb._on_fail_message(["xf_fail", 8, "x"], PeerInfo("ghost", "x:1"))
    assert 8 not in rb.inbound_done
    assert not rb.inbound_failed
    with pytest.raises(InvalidRequest):
        rb._on_done_message(["xf_done", 9, a.id, [b.id]], peer)  # no reason: old peer
    with pytest.raises(InvalidRequest):
        rb._on_done_message(["xf_done", "9", a.id, [b.id], "handoff"], peer)


async def test_a_dropped_partition_forgets_its_resume_positions(pair: tuple[Node, Node]) -> None:
    # What a receiver imported of a partition it later dropped is gone: a
    # sender resuming an old transfer of it must start from the beginning.
    a, b = pair
    rb = b.transfers
    rb.record_progress("t1", 5, 3)
    rb.record_progress("t2", 6, 4)
    peer = PeerInfo(a.id, a.address)
    assert rb._on_at(["xf_at", "t1"], peer) == 3
    rb.dropped(5)
    assert rb._on_at(["xf_at", "t1"], peer) == 0
    assert rb._on_at(["xf_at", "t2"], peer) == 4


async def test_another_nodes_silent_handoff_stops_holding_off_anti_entropy(
    pair: tuple[Node, Node],
) -> None:
    # A holder that crashed mid-handoff never says xf_done: after a while
    # without a sign of life the partition is anti-entropy's again.
    a, b = pair
    tm = a.transfers
    now = a.clock.monotonic()
    tm.pending.holders[7] = {b.id}
    tm._holders_since[7] = now
    assert tm.moving(7)
    tm._holders_since[7] = now - 10 * 60
    assert not tm.moving(7)
    tm._receiving[8] += 1  # a stream towards us that went quiet
    tm._last_import[8] = now - 10 * 60
    assert not tm.moving(8)
    tm.touched(8)  # a chunk arrives
    assert tm.moving(8)
