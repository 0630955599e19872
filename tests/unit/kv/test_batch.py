"""Batched quorum rounds (issue 18): ``AppContext.batch()`` and the KV store's
``KVBatch`` / ``put_many`` / ``get_many`` / ``delete_many``.

Rounds added to a batch keep their own quorum, answer and error; their
requests to other replicas leave at ``flush`` as one ``sb`` request per
replica, applied there in the order added.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peer_ring import AppContext, QuorumResult, Request, Service
from peer_ring.apps.kv.api import Limits
from peer_ring.apps.kv.store import KVConfig
from peer_ring.errors import InvalidRequest, QuorumNotReached, UnknownCommand
from peer_ring.node import Node
from peer_ring.replication.coordinator import BATCH_MAX_COMMANDS
from peer_ring.transport.memory import MemoryNetwork
from tests.conftest import wait_for
from tests.unit.kv.conftest import ClusterFactory, KVCluster, address, node_config


def _batch_requests(cluster: KVCluster, i: int) -> int:
    """Requests node ``i``'s batches sent (no pings or member exchanges)."""
    return cluster.nodes[i].coordinator.stats.batch_requests


async def test_put_many_sends_one_request_per_replica(kv3: KVCluster) -> None:
    a, b, c = kv3.stores
    items = [(b"pm-%d" % i, b"v%d" % i) for i in range(40)]
    sent = _batch_requests(kv3, 0)
    await a.put_many(items)
    # 40 keys, all on every node (N = 3 of 3): one batch each to n2 and n3,
    # not 40 rounds (counted by the batches, without pings or member exchanges)
    assert _batch_requests(kv3, 0) - sent == 2
    for store in (b, c):
        await wait_for(
            lambda s=store: all(s.local_state(k) is not None for k, _ in items),  # type: ignore[misc]
            message="every replica holds every key",
        )
    sent = _batch_requests(kv3, 1)
    got = await b.get_many([k for k, _ in items] + [b"pm-missing"])
    assert got == [v for _, v in items] + [None]
    assert 1 <= _batch_requests(kv3, 1) - sent <= 2  # at most one per other replica


async def test_a_large_batch_leaves_in_requests_of_bounded_size(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    items = [(b"lb-%d" % i, b"v") for i in range(3 * BATCH_MAX_COMMANDS + 5)]
    sent = _batch_requests(kv3, 0)
    await a.put_many(items)
    # four requests of at most BATCH_MAX_COMMANDS commands to each of two replicas
    assert _batch_requests(kv3, 0) - sent == 2 * 4
    assert await b.get_many([k for k, _ in items]) == [v for _, v in items]


async def test_delete_many_says_which_keys_existed(kv3: KVCluster) -> None:
    a, b, _ = kv3.stores
    await a.put_many([(b"d1", b"x"), (b"d2", b"y")])
    assert await b.delete_many([b"d1", b"nope", b"d2"]) == [True, False, True]
    assert await a.get_many([b"d1", b"d2"]) == [None, None]
    assert await a.delete_many([]) == []


async def test_a_batch_answers_each_key_on_its_own(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(3, KVConfig(limits=Limits(max_key_size=64)))
    a = cluster.stores[0]
    told: dict[bytes, tuple[Any, BaseException | None]] = {}

    def done(key: bytes) -> Any:
        return lambda value, exc: told.__setitem__(key, (value, exc))

    batch = a.batch()
    batch.put(b"ok-1", b"1", done(b"ok-1"))
    batch.put(b"k" * 65, b"2", done(b"big"))  # over the key limit: its own error
    batch.get(b"ok-0", done(b"ok-0"))
    batch.delete(b"ok-1", done(b"del"))  # applied after the put, in order
    batch.flush()
    await wait_for(lambda: len(told) == 4, message="every key answered")
    assert told[b"ok-1"] == (None, None)
    assert isinstance(told[b"big"][1], InvalidRequest)
    assert told[b"ok-0"] == (None, None)
    assert told[b"del"] == (True, None)
    assert await a.get(b"ok-1") is None


async def test_put_many_from_a_node_outside_the_preference_list(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(5)
    a = cluster.stores[0]
    items = [(b"fw-%d" % i, b"v%d" % i) for i in range(30)]
    assert any(a.app.node_id not in cluster.nodes[0].ring.owners(k) for k, _ in items)
    await a.put_many(items)
    assert await cluster.stores[3].get_many([k for k, _ in items]) == [v for _, v in items]


class Picky(Service):
    """Stores what it is sent, in arrival order; refuses the keys in ``refuse``."""

    def __init__(self) -> None:
        self.namespace = "picky"
        self.seen: list[bytes] = []
        self.refuse: set[bytes] = set()
        self.app: AppContext | None = None

    def attach(self, app: AppContext) -> None:
        self.app = app

    def handle(self, request: Request) -> Any:
        if request.command != "w":
            raise UnknownCommand(request.command)
        if request.key in self.refuse:
            raise InvalidRequest(f"refused {request.key!r}")
        self.seen.append(request.key)
        return request.payload


@pytest.fixture
async def picky() -> Any:
    net = MemoryNetwork()
    nodes = [Node(node_config(i), network=net) for i in (1, 2, 3)]
    services = [n.register(Picky()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.ring.node_ids) == 3 for n in nodes), message="ring")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield net, nodes, services
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_a_replica_failing_part_of_a_batch_fails_only_those_rounds(picky: Any) -> None:
    _, nodes, (s1, s2, s3) = picky
    keys = [b"p-%02d" % i for i in range(20)]
    s3.refuse = {keys[3], keys[11]}
    outcomes: dict[bytes, tuple[QuorumResult | None, BaseException | None]] = {}
    app = s1.app
    assert app is not None
    batch = app.batch()
    for i, key in enumerate(keys):
        batch.add(
            "w",
            key,
            i,
            quorum=3,
            listener=lambda r, e, k=key: outcomes.__setitem__(k, (r, e)),
        )
    assert not outcomes  # the local replica answered; the others wait for the flush
    batch.flush()
    await wait_for(lambda: len(outcomes) == len(keys), message="every round decided")
    for i, key in enumerate(keys):
        result, exc = outcomes[key]
        if key in s3.refuse:
            assert isinstance(exc, QuorumNotReached)
            assert exc.required == 3
            assert exc.acked in (1, 2)  # failed as soon as 3 acks were out of reach
            assert isinstance(exc.errors[nodes[2].id], InvalidRequest)
        else:
            assert exc is None
            assert result is not None
            assert sorted(nid for nid, _ in result.acks) == sorted(n.id for n in nodes)
            assert all(answer == i for _, answer in result.acks)
    # each replica applied the batch in the order the rounds were added
    assert s2.seen == keys
    assert s3.seen == [k for k in keys if k not in s3.refuse]


async def test_an_unreachable_replica_fails_only_the_rounds_that_need_it(picky: Any) -> None:
    net, _, (s1, _, _) = picky
    net.isolate(address(3))
    outcomes: dict[bytes, BaseException | None] = {}
    app = s1.app
    assert app is not None
    batch = app.batch()
    batch.add("w", b"two", 1, quorum=2, listener=lambda r, e: outcomes.__setitem__(b"two", e))
    batch.add("w", b"all", 2, quorum=3, listener=lambda r, e: outcomes.__setitem__(b"all", e))
    batch.add("w", b"two2", 3, quorum=2, listener=lambda r, e: outcomes.__setitem__(b"two2", e))
    batch.flush()
    await wait_for(lambda: len(outcomes) == 3, timeout=5, message="every round decided")
    assert outcomes[b"two"] is None
    assert outcomes[b"two2"] is None
    assert isinstance(outcomes[b"all"], QuorumNotReached)


async def test_an_empty_batch_flushes_to_nothing(picky: Any) -> None:
    _, _, (s1, _, _) = picky
    batch = s1.app.batch()
    batch.flush()
    batch.flush()


async def test_the_default_batch_of_an_app_context_starts_rounds_one_by_one() -> None:
    started: list[bytes] = []

    class Fake(AppContext):
        def start_quorum(self, command: str, key: bytes, payload: Any, **kw: Any) -> None:
            started.append(key)

    for name in AppContext.__abstractmethods__:
        if name != "start_quorum":
            setattr(Fake, name, None)
    Fake.__abstractmethods__ = frozenset()
    batch = Fake().batch()
    batch.add("w", b"x", None, quorum=1, listener=lambda r, e: None)
    assert started == [b"x"]
    batch.flush()
    assert started == [b"x"]


class Solo(Service):
    """Answers ``w`` with its payload, ``slow`` later (a coroutine), refuses ``bad``."""

    def __init__(self) -> None:
        self.namespace = "solo"
        self.seen: list[bytes] = []
        self.app: AppContext | None = None

    def attach(self, app: AppContext) -> None:
        self.app = app

    def handle(self, request: Request) -> Any:
        self.seen.append(request.key)
        if request.command == "w":
            return request.payload
        if request.command == "slow":
            return self._later(request.payload)
        raise InvalidRequest(f"refused {request.command}")

    async def _later(self, payload: Any) -> Any:
        await asyncio.sleep(0)
        return payload


async def test_a_one_node_round_is_decided_by_the_local_answer() -> None:
    """A one-node cluster: the round's only replica is this node (the solo
    path, no Round object): the same outcomes, quorum counts and callbacks as
    a round with remote replicas; the quorum of 2 is that of the whole
    cluster, 1."""
    node = Node(node_config(1), network=MemoryNetwork())
    service = node.register(Solo())
    await node.start()
    try:
        await node.wait_ready()
        app = service.app
        assert app is not None
        told: dict[bytes, tuple[QuorumResult | None, BaseException | None]] = {}
        completed: dict[bytes, QuorumResult] = {}
        batch = app.batch()
        for key, command in ((b"a", "w"), (b"b", "bad"), (b"c", "slow")):
            batch.add(
                command,
                key,
                key.decode(),
                quorum=2,
                listener=lambda r, e, k=key: told.__setitem__(k, (r, e)),
                on_complete=lambda r, k=key: completed.__setitem__(k, r),
            )
        # the local answers decided the first two before the flush
        assert set(told) == {b"a", b"b"}
        batch.flush()
        await wait_for(lambda: len(told) == 3 and len(completed) == 3, message="all decided")
        result, exc = told[b"a"]
        assert exc is None
        assert result is not None
        assert result.acks == [(node.id, "a")] == result.answers
        assert result.targets == (node.id,)
        assert completed[b"a"] is result
        result, exc = told[b"b"]
        assert result is None
        assert isinstance(exc, QuorumNotReached)
        assert (exc.required, exc.acked) == (1, 0)
        assert isinstance(exc.errors[node.id], InvalidRequest)
        assert isinstance(completed[b"b"].errors[node.id], InvalidRequest)
        result, exc = told[b"c"]
        assert exc is None
        assert result is not None
        assert result.acks == [(node.id, "c")]
        assert service.seen == [b"a", b"b", b"c"]  # each command ran once
        counts = node.metrics()
        assert (counts["quorum_rounds"], counts["quorum_failures"]) == (3, 1)
    finally:
        await node.stop()


async def test_counted_rounds_are_told_their_index_and_fail_on_their_own(picky: Any) -> None:
    """``add_counted``: rounds of commands this node applied itself, told
    ``(index, error)`` -- the outcomes of ``add(..., applied=True)``, in the
    same requests as plain rounds of the batch."""
    _, nodes, (s1, s2, s3) = picky
    keys = [b"c-%02d" % i for i in range(20)]
    s3.refuse = {keys[4], keys[13]}
    told: dict[int, BaseException | None] = {}
    plain: dict[bytes, BaseException | None] = {}
    app = s1.app
    assert app is not None
    requests = [n.transport.stats["requests_in"] for n in nodes]
    batch = app.batch()
    for i, key in enumerate(keys):
        batch.add_counted("w", key, i, 3, lambda index, exc: told.__setitem__(index, exc), i + 100)
        if i == 7:  # a plain round among them, in the same requests
            batch.add("w", b"plain", 7, quorum=2, listener=lambda r, e: plain.__setitem__(b"p", e))
    assert not told  # this node counts as one ack; the others wait for the flush
    batch.flush()
    await wait_for(lambda: len(told) == len(keys) and bool(plain), message="every round decided")
    assert set(told) == {i + 100 for i in range(len(keys))}
    for i, key in enumerate(keys):
        exc = told[i + 100]
        if key in s3.refuse:
            assert isinstance(exc, QuorumNotReached)
            assert exc.required == 3
            assert exc.acked in (1, 2)
            assert isinstance(exc.errors[nodes[2].id], InvalidRequest)
        else:
            assert exc is None
    assert plain == {b"p": None}
    assert s1.seen == [b"plain"]  # counted rounds were applied here by the caller
    assert s2.seen == [*keys[:8], b"plain", *keys[8:]]  # in the order added
    after = [n.transport.stats["requests_in"] for n in nodes]
    assert after[1] - requests[1] <= 3  # one batch (a ping may land meanwhile)
    counts = nodes[0].metrics()
    assert counts["quorum_failures"] >= 2


async def test_counted_rounds_need_only_the_replicas_of_their_quorum(picky: Any) -> None:
    net, _, (s1, _, _) = picky
    net.isolate(address(3))
    told: dict[int, BaseException | None] = {}
    app = s1.app
    assert app is not None
    batch = app.batch()
    listener = told.__setitem__
    batch.add_counted("w", b"two", 1, 2, listener, 0)
    batch.add_counted("w", b"all", 2, 3, listener, 1)
    batch.flush()
    # the batch is reusable: the next flush's indexes are its own
    batch.add_counted("w", b"two-again", 3, 2, listener, 2)
    batch.flush()
    await wait_for(lambda: len(told) == 3, timeout=5, message="every round decided")
    assert told[0] is None
    assert told[2] is None
    assert isinstance(told[1], QuorumNotReached)


async def test_the_default_add_counted_adds_an_applied_round() -> None:
    started: list[tuple[bytes, dict[str, Any]]] = []

    class Fake(AppContext):
        def start_quorum(self, command: str, key: bytes, payload: Any, **kw: Any) -> None:
            started.append((key, kw))

    for name in AppContext.__abstractmethods__:
        if name != "start_quorum":
            setattr(Fake, name, None)
    Fake.__abstractmethods__ = frozenset()
    told: list[tuple[int, BaseException | None]] = []
    batch = Fake().batch()
    batch.add_counted("w", b"x", None, 1, lambda i, e: told.append((i, e)), 5, partition=3)
    [(key, kw)] = started
    assert key == b"x"
    assert kw["applied"] is True
    assert kw["partition"] == 3
    kw["listener"](None, QuorumNotReached(1, 0))
    kw["listener"](QuorumResult(("n1",)), None)
    assert told[0][0] == 5
    assert isinstance(told[0][1], QuorumNotReached)
    assert told[1] == (5, None)


async def test_calls_held_in_a_batch_answer_each_on_its_own(picky: Any) -> None:
    """``QuorumBatch.call``: commands for one chosen replica leave with the
    batch, one request per replica; each is answered or failed on its own."""
    net, nodes, (s1, s2, s3) = picky
    app = s1.app
    assert app is not None
    s2.refuse = {b"c-1"}
    told: dict[bytes, tuple[Any, BaseException | None]] = {}
    before = nodes[1].transport.stats["requests_in"]
    batch = app.batch()
    for i in range(16):
        key = b"c-%d" % i
        batch.call(nodes[1].id, "w", key, i, lambda v, e, k=key: told.__setitem__(k, (v, e)))
    batch.call(nodes[0].id, "w", b"here", 9, lambda v, e: told.__setitem__(b"here", (v, e)))
    assert told == {b"here": (9, None)}  # this node's command runs at once
    batch.flush()
    await wait_for(lambda: len(told) == 17, message="every call answered")
    for i in range(16):
        if i != 1:
            assert told[b"c-%d" % i] == (i, None)
    assert told[b"c-1"][0] is None
    assert isinstance(told[b"c-1"][1], InvalidRequest)
    assert s2.seen == [b"c-%d" % i for i in range(16) if i != 1]
    # one batch, not 16 requests (the failure detector's pings and member
    # exchanges land meanwhile: a few, never as many as the calls)
    assert nodes[1].transport.stats["requests_in"] - before <= 1 + 5

    # a replica that cannot be reached fails only the calls held for it
    net.isolate(address(3))
    told.clear()
    batch.call(nodes[2].id, "w", b"gone", 1, lambda v, e: told.__setitem__(b"gone", (v, e)))
    batch.call(nodes[1].id, "w", b"there", 2, lambda v, e: told.__setitem__(b"there", (v, e)))
    batch.flush()
    await wait_for(lambda: len(told) == 2, timeout=5, message="both calls decided")
    assert told[b"there"] == (2, None)
    assert told[b"gone"][0] is None
    assert told[b"gone"][1] is not None
    assert not s3.seen


async def test_forwarded_writes_of_a_batch_leave_one_request_per_coordinator(
    make_cluster: ClusterFactory,
) -> None:
    """5 nodes, N=3: the writes a node cannot coordinate are held in the batch,
    one request per coordinating replica -- not one ``coord_put`` each -- and
    a coordinator that does not answer fails only the keys sent to it."""
    cluster = await make_cluster(5)
    a = cluster.stores[0]
    me = a.app.node_id
    ring = cluster.nodes[0].ring
    foreign = [k for k in (b"fw2-%d" % i for i in range(400)) if me not in ring.owners(k)][:60]
    first = {k: ring.owners(k)[0] for k in foreign}  # whom each is forwarded to
    assert len(set(first.values())) >= 2
    await a.put_many([(k, b"first") for k in foreign])  # start-up traffic settles meanwhile
    sent = _batch_requests(cluster, 0)
    replicated = sum(n.coordinator.stats.batch_requests for n in cluster.nodes[1:])
    await a.put_many([(k, b"v-" + k) for k in foreign])
    # one request per coordinator, not one per key
    assert _batch_requests(cluster, 0) - sent == len(set(first.values()))
    # and each coordinator replicates the writes of that request together: one
    # request per other replica (4 coordinators x 3 others), not two per key
    replicated = sum(n.coordinator.stats.batch_requests for n in cluster.nodes[1:]) - replicated
    assert replicated <= 12
    assert await cluster.stores[1].get_many(foreign) == [b"v-" + k for k in foreign]

    # the requests to one coordinator are lost: only its keys fail (their
    # outcome is unknown: not retried elsewhere), every other key is written
    lost = next(iter(set(first.values())))
    cluster.net.block(
        cluster.nodes[0].transport.address,
        cluster.node_of(cluster.store_of(lost)).transport.address,
    )
    told: dict[bytes, BaseException | None] = {}
    batch = a.batch()
    for k in foreign:
        batch.put(k, b"w-" + k, lambda _, e, k=k: told.__setitem__(k, e))
    batch.flush()
    await wait_for(lambda: len(told) == len(foreign), timeout=5, message="every key decided")
    for k in foreign:
        if first[k] == lost:
            assert told[k] is not None, k
        else:
            assert told[k] is None, (k, told[k])
    cluster.net.heal()
    mine = [k for k in foreign if first[k] != lost]
    assert await cluster.stores[1].get_many(mine) == [b"w-" + k for k in mine]


async def test_concurrent_forwarded_puts_share_one_request_per_coordinator(
    make_cluster: ClusterFactory,
) -> None:
    """5 nodes, N=3: plain ``put`` calls (no batch) that this node cannot
    coordinate, started in one loop pass, leave in that pass's one request
    per coordinating replica -- not one ``coord_put`` each -- and each is
    answered on its own."""
    cluster = await make_cluster(5)
    a = cluster.stores[0]
    me = a.app.node_id
    ring = cluster.nodes[0].ring
    foreign = [k for k in (b"fp-%d" % i for i in range(600)) if me not in ring.owners(k)][:200]
    assert len({ring.owners(k)[0] for k in foreign}) >= 2
    await a.put_many([(k, b"first") for k in foreign])  # start-up traffic settles meanwhile
    sent = _batch_requests(cluster, 0)
    await asyncio.gather(*(a.put(k, b"p-" + k) for k in foreign))
    # one request per coordinator (4 other nodes) per loop pass that started
    # puts, not 200
    assert _batch_requests(cluster, 0) - sent <= 4 * 2
    assert await cluster.stores[1].get_many(foreign) == [b"p-" + k for k in foreign]
    # delete is the same write path: it says whether a live value existed
    assert await asyncio.gather(*(a.delete(k) for k in foreign[:5])) == [True] * 5


async def test_a_forwarded_put_whose_first_coordinator_is_gone_is_sent_to_the_next(
    make_cluster: ClusterFactory,
) -> None:
    """The held ``coord_put`` to the first replica certainly did not arrive
    (its node is stopped: connection refused): the write is forwarded to the
    next replica, which coordinates it."""
    cluster = await make_cluster(5)
    key = b"forwarded-next"
    outsider = cluster.non_replica(key)
    first, second, _ = cluster.replicas(key)
    assert outsider.app.is_up(first.app.node_id)  # still believed up: tried first
    await cluster.node_of(first).stop()
    await outsider.put(key, b"v1")
    state = second.local_state(key)
    assert state is not None
    (actor, _, _), *_ = state
    assert actor == second.actor  # the second replica coordinated it
    assert await outsider.get(key) == b"v1"


async def test_counted_rounds_are_counted_and_timed_in_their_tally(picky: Any) -> None:
    """A sampled counted round is timed by the batch's tally (no Round of its
    own): every round here is sampled, each one a latency sample once decided."""
    _, nodes, (s1, _, _) = picky
    coordinator = nodes[0].coordinator
    coordinator.sample_mask = 0  # time every round
    samples = len(coordinator.latency.samples)
    rounds = nodes[0].metrics()["quorum_rounds"]
    told: dict[int, BaseException | None] = {}
    batch = s1.app.batch()
    for i in range(5):
        batch.add_counted("w", b"t-%d" % i, i, 3, told.__setitem__, i)
    batch.flush()
    await wait_for(lambda: len(told) == 5, message="every round decided")
    assert told == dict.fromkeys(range(5))
    assert nodes[0].metrics()["quorum_rounds"] - rounds == 5
    assert len(coordinator.latency.samples) - samples == 5
    assert all(ok for _, _, ok in list(coordinator.latency.samples)[-5:])


@pytest.fixture
async def picky4() -> Any:
    """Four nodes, N=3: the keys of one batch have different replica sets."""
    net = MemoryNetwork()
    nodes = [Node(node_config(i), network=net) for i in (1, 2, 3, 4)]
    services = [n.register(Picky()) for n in nodes]
    await asyncio.gather(*(n.start() for n in nodes))
    await wait_for(lambda: all(len(n.ring.node_ids) == 4 for n in nodes), message="ring")
    await asyncio.gather(*(n.wait_ready() for n in nodes))
    yield net, nodes, services
    await asyncio.gather(*(n.stop() for n in nodes))


async def test_replicas_of_different_keys_of_a_batch_each_get_only_theirs(picky4: Any) -> None:
    """Each command is held once for all its replicas; a replica's request
    carries exactly the commands of the keys it replicates, in the order added,
    and each round is told by its own replicas -- counted rounds, plain rounds
    and reads in one batch."""
    _, nodes, services = picky4
    first = nodes[0]
    keys = [b"k4-%02d" % i for i in range(40)]
    owners = {k: first.coordinator.targets(first.ring.partition_for(k)) for k in keys}
    assert len({frozenset(o) for o in owners.values()}) > 1  # different replica sets
    told: dict[int, BaseException | None] = {}
    plain: dict[bytes, BaseException | None] = {}
    batch = services[0].app.batch()
    for i, key in enumerate(keys):
        if i % 5 == 0:
            batch.add("w", key, i, quorum=3, listener=lambda r, e, k=key: plain.__setitem__(k, e))
        else:
            batch.add_counted("w", key, i, 3, told.__setitem__, i)
    batch.flush()
    await wait_for(lambda: len(told) + len(plain) == len(keys), message="every round decided")
    assert all(exc is None for exc in told.values())
    assert all(exc is None for exc in plain.values())
    for node, service in zip(nodes, services, strict=True):
        mine = [k for i, k in enumerate(keys) if node.id in owners[k]]
        if node is first:  # counted rounds were applied here by the caller
            mine = [k for i, k in enumerate(keys) if node.id in owners[k] and i % 5 == 0]
        assert service.seen == mine


async def test_keys_written_by_every_node_read_back_from_their_flat_states(
    make_cluster: ClusterFactory,
) -> None:
    """LWW keys that all three nodes coordinated are kept in the vector form
    on every replica; reads from every node -- single, batched, with their
    versions -- agree on the last write, and an expired last write reads as
    missing (the flat state's value and expiry read in place)."""
    from peer_ring.apps.kv import _state as st

    cluster = await make_cluster(3, KVConfig(conflicts="lww"))
    keys = [b"vk-%d" % i for i in range(24)]
    for round_ in range(3):
        for i, store in enumerate(cluster.stores):
            await store.put_many([(k, b"%d-%d" % (round_, i)) for k in keys])
    want = [b"2-2"] * len(keys)
    for store in cluster.stores:
        held = [store._parts[store.app.partition_for(k)][k] for k in keys]
        assert all(type(s[0]) is str and len(s) == 9 for s in held)  # three actors, flat
        assert all(st.unpack(s)[0][0] < st.unpack(s)[1][0] for s in held)
        assert await store.get_many(keys) == want
        assert [await store.get(k) for k in keys[:4]] == want[:4]
        entry = await store.get_entry(keys[0])
        assert entry is not None
        assert entry.value == b"2-2"
    # a last write that expires: read as missing once its time has passed
    await cluster.stores[1].put(keys[0], b"brief", ttl=5.0)
    assert await cluster.stores[0].get(keys[0]) == b"brief"
    await cluster.clock.advance(6.0)
    assert await cluster.stores[2].get_many(keys[:2]) == [None, b"2-2"]
    assert await cluster.stores[0].get(keys[0]) is None


async def test_a_forwarded_plain_put_replicates_with_repl_and_a_delete_still_says(
    make_cluster: ClusterFactory,
) -> None:
    """5 nodes, N=3: a put from a node outside the key's preference list
    tells its coordinator it does not ask whether a value existed, and the
    coordinator replicates it with ``repl`` (the state packed), not
    ``merge``; a forwarded delete still answers whether a value existed."""
    cluster = await make_cluster(5)
    a = cluster.stores[0]
    me = a.app.node_id
    ring = cluster.nodes[0].ring
    foreign = [k for k in (b"fr-%d" % i for i in range(200)) if me not in ring.owners(k)][:20]
    seen: list[str] = []
    for node in cluster.nodes[1:]:
        store = cluster.store_of(node.id)
        handle = store.handle

        def spy(request: Request, handle: Any = handle) -> Any:
            seen.append(request.command)
            return handle(request)

        store.handle = spy  # type: ignore[method-assign]
    await a.put_many([(k, b"v1") for k in foreign])
    await asyncio.gather(*(a.put(k, b"v2") for k in foreign[:5]))
    assert seen.count("coord_put") == len(foreign) + 5
    assert seen.count("merge") == 0  # replicated as plain writes are
    assert seen.count("repl") >= len(foreign) + 5  # at least one other replica each
    assert await cluster.stores[2].get_many(foreign[:5]) == [b"v2"] * 5
    assert await asyncio.gather(*(a.delete(k) for k in foreign[:3])) == [True] * 3
    assert await a.delete(foreign[0]) is False
