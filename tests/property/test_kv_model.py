"""Model test: KVStore on a 3-node memory cluster answers like the single-copy LocalKV.

Random sequences of put / put-with-TTL / get / delete / clock advances run
through random nodes, and every answer is compared with
:class:`~peer_ring.apps.kv.local.LocalKV` driven by the same
:class:`~peer_ring.clock.ManualClock`. Writes use W=N and reads R=1: every
write has reached every replica before the next operation, so one replica's
answer must already equal the model's (the property under test is the
version/expiry/tombstone logic, not quorum timing). Blind writes through
different coordinators become siblings; the model requires that the newest
one wins every read, which the store guarantees by advancing its hybrid
logical clock past every stamp it holds before writing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer_ring.apps.kv.local import LocalKV
from peer_ring.apps.kv.store import KVConfig, KVStore
from peer_ring.clock import ManualClock
from peer_ring.node import Node
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.kv.conftest import node_config

KEYS = st.sampled_from([b"a", b"b", b"c"])
VALUES = st.binary(min_size=0, max_size=4)
NODE = st.integers(0, 2)

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), NODE, KEYS, VALUES),
        st.tuples(st.just("put_ttl"), NODE, KEYS, VALUES, st.integers(1, 3)),
        st.tuples(st.just("get"), NODE, KEYS),
        st.tuples(st.just("delete"), NODE, KEYS),
        st.tuples(st.just("advance"), st.integers(1, 2)),
    ),
    max_size=25,
)

_examples = itertools.count()


class Cluster:
    def __init__(self) -> None:
        self.net = MemoryNetwork()
        self.clock = ManualClock()
        self.nodes = [Node(node_config(i), network=self.net) for i in (1, 2, 3)]
        self.stores: list[KVStore] = []
        for node in self.nodes:
            store = KVStore(config=KVConfig(sweep_interval=1.0), clock=self.clock)
            node.register(store)
            self.stores.append(store)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    await asyncio.gather(*(n.start() for n in c.nodes))
    await wait_for(lambda: all(len(n.ring.node_ids) == 3 for n in c.nodes))
    await asyncio.gather(*(n.wait_ready() for n in c.nodes))
    yield c
    await asyncio.gather(*(n.stop() for n in c.nodes))


@settings(
    max_examples=20,
    deadline=None,
    # one cluster serves every example; each example uses its own key prefix
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
async def test_kvstore_matches_localkv(cluster: Cluster, ops: list[tuple[Any, ...]]) -> None:
    prefix = b"ex%d:" % next(_examples)
    model = LocalKV(clock=cluster.clock)
    stores = cluster.stores
    for op in ops:
        kind = op[0]
        if kind == "advance":
            await cluster.clock.advance(float(op[1]))
            continue
        store: KVStore = stores[op[1]]
        key = prefix + op[2]
        if kind == "put":
            await store.put(key, op[3], w=3)
            await model.put(key, op[3])
        elif kind == "put_ttl":
            await store.put(key, op[3], ttl=float(op[4]), w=3)
            await model.put(key, op[3], ttl=float(op[4]))
        elif kind == "get":
            assert await store.get(key, r=1) == await model.get(key), op
        else:
            assert await store.delete(key, w=3) == await model.delete(key), op
    for key in (prefix + k for k in (b"a", b"b", b"c")):
        for store in stores:
            assert await store.get(key, r=1) == await model.get(key)
    keys: set[bytes] = set()
    cursor = 0
    while True:
        cursor, batch = await stores[0].scan(cursor, 100, prefix + b"*")
        keys.update(batch)
        if cursor == 0:
            break
    _, expected = await model.scan(0, 100)
    assert keys == set(expected)
