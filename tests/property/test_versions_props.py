"""Property tests for dotted version vector sets.

The core test is a simulation: clients read and write a key on three
replicas, replicas sync at random, and a reference model that tracks sets of
write ids says which writes must still be visible. The DVVSet states must
agree with the model exactly (no lost write, no false sibling), and the
semilattice laws of ``sync`` are checked on states reached this way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring import versions as dvv
from peer_ring.errors import InvalidRequest
from peer_ring.hlc import HLC
from peer_ring.versions import Context, DVVSet

ACTORS = ["n0", "n1", "n2"]


class SimClock:
    """Wall clock in seconds that the simulation moves explicitly."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.wall

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - unused
        raise AssertionError("not used")


@dataclass
class Client:
    ctx: Context = ()
    seen: frozenset[int] = frozenset()


@dataclass
class Sim:
    """Replicas of one key plus the reference model of what they must hold."""

    n: int
    stamped: bool = False
    prune_cfg: dvv.PruneConfig | None = None
    clock: SimClock = field(default_factory=SimClock)
    states: list[DVVSet[int]] = field(default_factory=list)
    known: list[set[int]] = field(default_factory=list)
    covers: dict[int, frozenset[int]] = field(default_factory=dict)
    hlcs: list[HLC] = field(default_factory=list)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.states = [dvv.empty() for _ in range(self.n)]
        self.known = [set() for _ in range(self.n)]
        self.hlcs = [HLC(self.clock) for _ in range(self.n)]

    def actor(self, r: int) -> str:
        return f"n{r}"

    def read(self, client: Client, r: int) -> None:
        client.ctx = dvv.context(self.states[r])
        client.seen = frozenset(self.known[r])

    def write(self, client: Client, r: int, with_ctx: bool) -> int:
        wid = self.next_id
        self.next_id += 1
        ctx = client.ctx if with_ctx else None
        stamp = self.hlcs[r].now_int() if self.stamped else 0
        self.states[r] = dvv.update(self.states[r], ctx, wid, self.actor(r), stamp=stamp)
        self.covers[wid] = client.seen if with_ctx else frozenset()
        self.known[r] |= self.covers[wid] | {wid}
        self._maybe_prune(r)
        return wid

    def sync(self, src: int, dst: int) -> None:
        self.states[dst] = dvv.sync(self.states[src], self.states[dst])
        self.known[dst] |= self.known[src]
        self._maybe_prune(dst)

    def _maybe_prune(self, r: int) -> None:
        if self.prune_cfg is not None:
            self.states[r] = dvv.prune(self.states[r], self.hlcs[r].now_int(), self.prune_cfg)

    def live(self, r: int) -> list[int]:
        k = self.known[r]
        superseded: set[int] = set()
        for w in k:
            superseded |= self.covers[w]
        return sorted(k - superseded)

    def run(self, ops: list[tuple[int, int, int, int, bool]], clients: list[Client]) -> None:
        for kind, c, r, r2, flag in ops:
            if kind == 0:
                self.read(clients[c], r)
            elif kind == 1:
                self.write(clients[c], r, flag)
            else:
                self.sync(r, r2)
            self.clock.wall += 0.5


def ops_strategy(n: int, n_clients: int = 3, max_size: int = 40) -> st.SearchStrategy[list]:  # type: ignore[type-arg]
    return st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, n_clients - 1),
            st.integers(0, n - 1),
            st.integers(0, n - 1),
            st.booleans(),
        ),
        max_size=max_size,
    )


@settings(max_examples=300, deadline=None)
@given(ops=ops_strategy(3), stamped=st.booleans())
def test_simulation_matches_model_exactly(ops: list, stamped: bool) -> None:  # type: ignore[type-arg]
    sim = Sim(3, stamped=stamped)
    clients = [Client() for _ in range(3)]
    sim.run(ops, clients)
    for r in range(3):
        assert sorted(dvv.values(sim.states[r])) == sim.live(r)
    # After a full exchange all replicas agree, and still match the model.
    for src in range(3):
        for dst in range(3):
            sim.sync(src, dst)
    for r in range(3):
        assert sim.states[r] == sim.states[0]
        assert sorted(dvv.values(sim.states[r])) == sim.live(r)


def reachable_states(ops: list, n: int = 3) -> list[DVVSet[int]]:  # type: ignore[type-arg]
    sim = Sim(n, stamped=True)
    sim.run(ops, [Client() for _ in range(3)])
    return sim.states


@settings(max_examples=300, deadline=None)
@given(ops=ops_strategy(3, max_size=50))
def test_sync_is_a_semilattice_join(ops: list) -> None:  # type: ignore[type-arg]
    a, b, c = reachable_states(ops)
    assert dvv.sync(a, b) == dvv.sync(b, a)
    assert dvv.sync(a, dvv.sync(b, c)) == dvv.sync(dvv.sync(a, b), c)
    assert dvv.sync(a, a) == a
    assert dvv.sync(a, dvv.empty()) == a
    ab = dvv.sync(a, b)
    assert dvv.descends(dvv.context(ab), dvv.context(a))
    assert dvv.equal(dvv.sync(ab, a), ab)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)), max_size=40)
)
def test_chain_of_writes_with_context_never_makes_siblings(
    steps: list[tuple[int, int, int]],
) -> None:
    sim = Sim(3, stamped=True)
    client = Client()
    for r, src, dst in steps:
        sim.write(client, r, with_ctx=True)
        assert dvv.sibling_count(sim.states[r]) == 1
        client.ctx = dvv.context(sim.states[r])  # the write's returned context
        client.seen = frozenset(sim.known[r])
        sim.sync(src, dst)
        assert dvv.sibling_count(sim.states[dst]) == 1 or sim.states[dst] == dvv.empty()
        sim.clock.wall += 0.001


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy(3), reader=st.integers(0, 2), writer=st.integers(0, 2))
def test_write_with_read_context_supersedes_exactly_what_was_read(
    ops: list,  # type: ignore[type-arg]
    reader: int,
    writer: int,
) -> None:
    sim = Sim(3, stamped=True)
    sim.run(ops, [Client() for _ in range(3)])
    read_values = set(dvv.values(sim.states[reader]))
    before = set(dvv.values(sim.states[writer]))
    client = Client()
    sim.read(client, reader)
    wid = sim.write(client, writer, with_ctx=True)
    after = set(dvv.values(sim.states[writer]))
    assert after == (before - read_values - set(sim.covers[wid])) | {wid}
    assert not (read_values & after)
    # The blind variant supersedes nothing.
    wid2 = sim.write(Client(), writer, with_ctx=False)
    assert set(dvv.values(sim.states[writer])) == after | {wid2}


contexts = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 4), max_size=4
).map(lambda d: tuple(sorted(d.items())))


@given(a=contexts, b=contexts, c=contexts)
def test_descends_is_a_partial_order(a: Context, b: Context, c: Context) -> None:
    assert dvv.descends(a, a)
    if dvv.descends(a, b) and dvv.descends(b, a):
        assert a == b
    if dvv.descends(a, b) and dvv.descends(b, c):
        assert dvv.descends(a, c)
    assert dvv.concurrent(a, b) == (not dvv.descends(a, b) and not dvv.descends(b, a))
    m = dvv.merge_contexts(a, b)
    assert dvv.descends(m, a)
    assert dvv.descends(m, b)


@given(ctx=contexts)
def test_context_encoding_round_trip(ctx: Context) -> None:
    assert dvv.decode_context(dvv.encode_context(ctx)) == ctx


@settings(max_examples=500)
@given(data=st.binary(max_size=64))
def test_decode_context_garbage_raises_only_invalid_request(data: bytes) -> None:
    try:
        ctx = dvv.decode_context(data)
    except InvalidRequest:
        return
    assert dvv.decode_context(dvv.encode_context(ctx)) == ctx


msgpack_ish = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(obj=msgpack_ish)
def test_decode_context_of_arbitrary_msgpack_never_crashes(obj: object) -> None:
    data = b"\x01" + msgpack.packb(obj)
    try:
        ctx = dvv.decode_context(data)
    except InvalidRequest:
        return
    assert all(isinstance(a, str) and n >= 1 for a, n in ctx)


@given(obj=msgpack_ish)
def test_from_wire_of_arbitrary_data_never_crashes(obj: object) -> None:
    try:
        state = dvv.from_wire(obj)
    except InvalidRequest:
        return
    assert dvv.from_wire(dvv.to_wire(state)) == state


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy(3))
def test_wire_round_trip(ops: list) -> None:  # type: ignore[type-arg]
    for s in reachable_states(ops):
        wire = msgpack.unpackb(msgpack.packb(dvv.to_wire(s)), raw=False)
        assert dvv.from_wire(wire) == s
        assert dvv.decode_context(dvv.encode_context(dvv.context(s))) == dvv.context(s)


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy(3), seed=st.randoms(use_true_random=False))
def test_lww_pick_is_order_independent(ops: list, seed: random.Random) -> None:  # type: ignore[type-arg]
    state = dvv.sync_all(reachable_states(ops))
    sibs = dvv.siblings(state)

    def stamp(v: int) -> int:
        return v % 3  # many ties: actor and counter must break them

    winner = dvv.lww_pick(sibs, stamp)
    shuffled = list(sibs)
    seed.shuffle(shuffled)
    assert dvv.lww_pick(shuffled, stamp) == winner
    if sibs:
        assert winner is not None
        assert all((stamp(winner[2]), winner[0], winner[1]) >= (stamp(v), a, n) for a, n, v in sibs)


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy(3, max_size=50))
def test_lww_replicas_converge_to_one_value(ops: list) -> None:  # type: ignore[type-arg]
    # An LWW namespace: values carry the coordinator's HLC stamp; every
    # replica collapses after each change.
    sim = Sim(3, stamped=True)
    stamps: dict[int, int] = {}
    clients = [Client() for _ in range(3)]

    def stamp_of(v: int) -> int:
        return stamps[v]

    for kind, c, r, r2, flag in ops:
        if kind == 0:
            sim.read(clients[c], r)
        elif kind == 1:
            wid = sim.write(clients[c], r, flag)
            stamps[wid] = sim.hlcs[r].last().to_int()
        else:
            sim.sync(r, r2)
        sim.states[r] = dvv.lww(sim.states[r], stamp_of)
        sim.states[r2] = dvv.lww(sim.states[r2], stamp_of)
        assert dvv.sibling_count(sim.states[r]) <= 1
        sim.clock.wall += 0.25
    for _ in range(2):
        for src in range(3):
            for dst in range(3):
                sim.sync(src, dst)
                sim.states[dst] = dvv.lww(sim.states[dst], stamp_of)
    assert sim.states[1] == sim.states[0] == sim.states[2]
    assert dvv.sibling_count(sim.states[0]) == (1 if stamps else 0)


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy(6, n_clients=4, max_size=60))
def test_pruning_bounds_size_and_never_loses_a_write(ops: list) -> None:  # type: ignore[type-arg]
    cfg = dvv.PruneConfig(small=2, big=3, young=0.0, old=2.0)
    sim = Sim(6, stamped=True, prune_cfg=cfg)
    clients = [Client() for _ in range(4)]
    for kind, c, r, r2, flag in ops:
        if kind == 0:
            sim.read(clients[c], r)
        elif kind == 1:
            sim.write(clients[c], r, flag)
        else:
            sim.sync(r, r2)
        for q in (r, r2):
            state = sim.states[q]
            with_values = sum(1 for e in state.entries if e[2])
            assert len(state.entries) <= max(cfg.big, with_values)
            # No acknowledged write lost: pruning may only add false siblings.
            assert set(sim.live(q)) <= set(dvv.values(state))
        sim.clock.wall += 0.5
    for src in range(6):
        for dst in range(6):
            sim.sync(src, dst)
    for q in range(6):
        assert set(sim.live(q)) <= set(dvv.values(sim.states[q]))


@settings(max_examples=100, deadline=None)
@given(ops=ops_strategy(3), tomb_every=st.integers(2, 4))
def test_only_tombstones_matches_model(ops: list, tomb_every: int) -> None:  # type: ignore[type-arg]
    sim = Sim(3, stamped=True)
    sim.run(ops, [Client() for _ in range(3)])

    def is_tomb(v: int) -> bool:
        return v % tomb_every == 0

    for r in range(3):
        expected = all(is_tomb(v) for v in sim.live(r))
        assert dvv.only_tombstones(sim.states[r], is_tomb) == expected


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.booleans()),
        max_size=40,
    ),
    writer=st.integers(0, 2),
)
def test_lww_put_equals_update_then_lww(ops: list[tuple[int, int, int, bool]], writer: int) -> None:
    # Replicas whose values are their own HLC stamps, written with and
    # without contexts and synced in any order; then a blind LWW write with
    # a newer stamp. The one-pass lww_put must give exactly what the general
    # path (update, then collapse to the LWW winner) gives.
    clock = SimClock()
    hlcs = [HLC(clock) for _ in range(3)]
    states: list[DVVSet[int]] = [dvv.empty() for _ in range(3)]
    for kind, r, r2, with_ctx in ops:
        clock.wall += 0.001
        if kind == 0:
            stamp = hlcs[r].now_int()
            ctx = dvv.context(states[r2]) if with_ctx else None
            states[r] = dvv.update(states[r], ctx, stamp, f"n{r}", stamp=stamp)
        elif kind == 1:
            states[r] = dvv.sync(states[r2], states[r])
        else:
            states[r] = dvv.lww(states[r], lambda v: v)
    for state in states:
        top = max(dvv.values(state), default=0)
        stamp = hlcs[writer].update_int(top) if top else hlcs[writer].now_int()
        expected = dvv.lww(dvv.update(state, None, stamp, f"n{writer}", stamp=stamp), lambda v: v)
        assert dvv.lww_put(state, stamp, f"n{writer}", stamp) == expected
        assert dvv.values(expected) == [stamp]


@settings(max_examples=300, deadline=None)
@given(ops=ops_strategy(3, max_size=50), writer=st.integers(0, 2))
def test_supersedes_means_sync_returns_the_superseding_state(
    ops: list,  # type: ignore[type-arg]
    writer: int,
) -> None:
    states = reachable_states(ops)
    # a write carrying a state's full context supersedes that state: the
    # replicated-put case the KV store's join skips the merge for
    for s in states:
        newer = dvv.update(s, dvv.context(s), 10_000, f"n{writer}", stamp=0)
        assert dvv.supersedes(newer, s)
        assert dvv.sync(s, newer) == newer == dvv.sync(newer, s)
    # whenever it says so, of any two reachable states, the join is the first
    for a in states:
        for b in states:
            if dvv.supersedes(a, b):
                assert dvv.sync(a, b) == a == dvv.sync(b, a)
