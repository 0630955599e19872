"""A handler may answer with any awaitable, not only a native coroutine.

A mypyc-compiled ``async def`` returns an object of a generated class with
``__await__``: not a ``types.CoroutineType``. The framework must await such an
answer on every path that runs a handler (``peer_ring._awaitable``), else it
sends the object itself as the answer (or never runs it). ``Later`` below is
such an object, and the service's writes happen only when it is awaited, so a
path that forgets to await shows as a lost write as well as a wrong answer.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import types
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import pytest

from peer_ring import MemberState, wire
from peer_ring._awaitable import as_future, is_awaitable
from peer_ring.app import AppContext
from peer_ring.config import NodeConfig, ReplicationConfig
from peer_ring.node import Node
from peer_ring.service import Record, Request, Service
from peer_ring.transport.base import PeerInfo
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for

Q = 32


class Later:
    """Awaitable, not a coroutine: what compiled handlers return."""

    def __init__(self, fn: Callable[[], Any], log: list[Later]) -> None:
        self.fn = fn
        self.awaited = False
        log.append(self)

    def __await__(self) -> Generator[Any, None, Any]:
        yield from asyncio.sleep(0).__await__()  # really later: the caller must wait
        self.awaited = True
        return self.fn()


class Deferred(Service):
    """Registers whose every answer is a :class:`Later`: ``put [ts, v]`` (the
    write happens when awaited; answers ``v``), ``get`` -> ``[ts, v]`` or None,
    ``count`` (coverage) -> records held."""

    namespace = "later"

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, tuple[int, bytes]]] = defaultdict(dict)
        self.made: list[Later] = []
        self.app: AppContext | None = None

    def attach(self, app: AppContext) -> None:
        self.app = app

    def handle(self, request: Request) -> Any:
        part = self.data[request.partition]
        key = request.key
        if request.command == "put":
            ts, value = request.payload

            def put() -> bytes:
                if part.get(key, (-1, b""))[0] < ts:
                    part[key] = (ts, value)
                return bytes(value)

            return Later(put, self.made)
        if request.command == "get":
            return Later(lambda: None if key not in part else list(part[key]), self.made)
        if request.command == "count":
            return Later(lambda: sum(map(len, self.data.values())), self.made)
        raise ValueError(request.command)

    def export_partition(self, partition: int) -> Iterator[Record]:
        return iter([(k, list(v)) for k, v in self.data.get(partition, {}).items()])

    def import_records(self, partition: int, records: Sequence[Record]) -> int:
        part = self.data[partition]
        for k, v in records:
            if part.get(k, (-1, b""))[0] < v[0]:
                part[k] = (v[0], v[1])
        return len(records)

    def read_records(self, partition: int, keys: Iterable[bytes]) -> list[Record]:
        part = self.data.get(partition, {})
        return [(k, list(part[k])) for k in keys if k in part]

    def drop_partition(self, partition: int) -> int:
        return len(self.data.pop(partition, {}))

    def partition_size(self, partition: int) -> int:
        return len(self.data.get(partition, {}))


def svc(node: Node) -> Deferred:
    s = node.service("later")
    assert isinstance(s, Deferred)
    return s


def all_awaited(nodes: Sequence[Node]) -> bool:
    return all(later.awaited for n in nodes for later in svc(n).made)


def owned(node: Node, owners: Callable[[tuple[str, ...]], bool], skip: int = 0) -> bytes:
    """A key whose preference list satisfies ``owners`` (the ``skip``-th such)."""
    for i in itertools.count():
        k = f"k{i}".encode()
        if owners(node.ring.preference_list(node.ring.partition_for(k))):
            if not skip:
                return k
            skip -= 1
    raise AssertionError  # pragma: no cover


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    net = MemoryNetwork()
    out = []
    for i in (1, 2, 3):
        cfg = NodeConfig.local(
            f"n{i}",
            listen=f"10.0.7.{i}:7400",
            transport="memory",
            seeds=("10.0.7.1:7400",),
            replication=ReplicationConfig(partitions=Q, replicas=2, read_quorum=1, write_quorum=1),
        )
        node = Node(cfg, network=net)
        node.register(Deferred())
        out.append(node)
    await asyncio.gather(*(n.start() for n in out))
    await wait_for(lambda: len({n.ring.checksum for n in out}) == 1, message="one ring")
    await wait_for(lambda: all(len(n.members) == 3 for n in out), message="3 members")
    yield out
    await asyncio.gather(*(n.stop() for n in out))


def test_is_awaitable_knows_every_kind_of_answer() -> None:
    made: list[Later] = []
    later = Later(lambda: 1, made)
    assert not asyncio.iscoroutine(later)  # what made the old checks miss it
    assert is_awaitable(later)
    assert is_awaitable(Later(lambda: 2, made))

    async def native() -> int:
        return 1

    coro = native()
    assert is_awaitable(coro)
    coro.close()
    loop = asyncio.new_event_loop()
    try:
        assert is_awaitable(loop.create_future())

        @types.coroutine
        def generator_based() -> Generator[Any, None, int]:
            yield None
            return 1

        def plain_generator() -> Generator[int, None, None]:
            yield 1

        gb = generator_based()
        assert is_awaitable(gb)
        assert inspect.isawaitable(gb)
        assert not is_awaitable(plain_generator())
        fut = as_future(Later(lambda: 7, made), loop)
        assert loop.run_until_complete(fut) == 7
    finally:
        loop.close()
    for value in (None, True, 3, 1.5, "s", b"b", [1], (1,), {1: 2}, {1}, object(), Later):
        assert not is_awaitable(value), value


async def test_node_call_awaits_the_answer_locally_and_over_the_transport(
    nodes: list[Node],
) -> None:
    n1 = nodes[0]
    here = owned(n1, lambda owners: owners[0] == "n1")
    there = owned(n1, lambda owners: "n1" not in owners)
    assert await n1.call("later", here, "put", [1, b"a"]) == b"a"  # node.call, local owner
    assert await n1.call("later", there, "put", [1, b"b"]) == b"b"  # transport request
    assert await nodes[1].call("later", here, "get") == [1, b"a"]
    assert all_awaited(nodes)


async def test_app_context_awaits_call_replica_and_coverage_answers(nodes: list[Node]) -> None:
    app = svc(nodes[0]).app
    assert app is not None
    k = owned(nodes[0], lambda owners: owners[0] == "n1")
    assert await app.call_replica("n1", "put", k, [1, b"x"]) == b"x"  # local
    assert await app.call_replica("n2", "put", k, [1, b"y"]) == b"y"  # remote
    answers = await app.coverage("count", lambda parts: None)  # local _ask among them
    assert all(type(a) is int for a in answers)
    assert sum(answers) >= 1
    assert all_awaited(nodes)


async def test_quorum_rounds_await_the_local_replicas_answer(nodes: list[Node]) -> None:
    n1 = nodes[0]
    k = owned(n1, lambda owners: "n1" in owners)
    result = await n1.coordinator.run("later", k, "put", [1, b"q"], quorum=2)
    assert dict(result.acks)["n1"] == b"q"
    assert result.complete is not None
    assert sorted(v for _, v in await result.complete) == [b"q", b"q"]
    p = n1.ring.partition_for(k)
    assert svc(n1).data[p][k] == (1, b"q")
    assert all_awaited(nodes)


async def test_a_batch_and_a_fenced_command_await_each_answer(nodes: list[Node]) -> None:
    n2 = nodes[1]
    items: list[Any] = []
    mine = [owned(n2, lambda owners: "n2" in owners, skip) for skip in (0, 1)]
    for i, k in enumerate(mine):
        items += ["put", k, n2.ring.partition_for(k), [1, b"v%d" % i]]
    peer = PeerInfo(node_id="n1", address="10.0.7.1:7400")
    answer = n2._dispatch(wire.batch_frame("later", "n1", n2.ring.epoch, items), peer)
    assert is_awaitable(answer)
    assert await answer == [wire.BATCH_OK, b"v0", wire.BATCH_OK, b"v1"]
    # from a sender with another ring epoch: served after the view check
    stale = wire.parse_batch(wire.batch_frame("later", "n1", "other", items))
    assert await n2._batch_after_sync(None, stale) == [wire.BATCH_OK, b"v0", wire.BATCH_OK, b"v1"]
    k = owned(n2, lambda owners: "n2" in owners)
    p = n2.ring.partition_for(k)
    serve = partial(n2.handle_local, "later", "put", k, p, [2, b"f"], "n1")
    assert await n2._after_sync(None, "other", [p], serve) == b"f"
    assert all_awaited(nodes)


async def test_dual_writes_and_hints_await_the_local_answer(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    # n3 still hands off a partition it no longer owns: a write there is copied to it
    k = owned(n3, lambda owners: "n3" not in owners)
    p = n3.ring.partition_for(k)
    svc(n3).data[p][b"left-over"] = (0, b"old")
    n3.transfers.pending.holders[p] = {"n3"}
    await n3.coordinator.run("later", k, "put", [5, b"d"], quorum=2)
    await wait_for(lambda: svc(n3).data[p].get(k) == (5, b"d"), message="dual write applied")
    del n3.transfers.pending.holders[p]
    # n3 down: its writes become hints at the fallback, in and outside the quorum
    await n3.stop()
    live = (n1, n2)
    await wait_for(
        lambda: all(n.member_state("n3") is MemberState.DOWN for n in live), message="n3 down"
    )
    k = owned(n2, lambda owners: owners == ("n3", "n1"))
    result = await n2.coordinator.run("later", k, "put", [1, b"h"], quorum=2, sloppy=True)
    assert dict(result.acks)["n2"] == b"h"  # the hinted copy, applied here
    assert len(n2.hints) == 1
    k2 = owned(n2, lambda owners: owners == ("n3", "n1"), 1)
    await n2.coordinator.run("later", k2, "put", [1, b"s"], quorum=1, sloppy=False)
    await wait_for(lambda: len(n2.hints) == 2, message="a hint outside the quorum")
    await wait_for(lambda: all_awaited(nodes), message="every answer awaited")
