"""Property tests of the stream core (peer_ring.apps.streams._state).

* a random sequence of operations at a leader, checked against a plain list
  model (entries in ID order, XDEL, trimming, XRANGE/XREVRANGE, groups with
  pending entries and acks);
* replicas that receive the leader's deltas in any order, duplicated, or
  as full states, converge to the leader's state;
* merge is commutative, associative and idempotent on states that diverged
  (two leaders after a split brain).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring.apps.streams import _state as S
from peer_ring.apps.streams._state import MAX_ID, MIN_ID, Stream, StreamError, Trim

GROUP = b"g"
CONSUMERS = [b"c1", b"c2"]

op_strategy = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3)),  # ms step of the clock
    st.tuples(st.just("addexplicit"), st.integers(1, 40), st.integers(0, 3)),
    st.tuples(st.just("del"), st.integers(0, 30)),
    st.tuples(st.just("maxlen"), st.integers(0, 12)),
    st.tuples(st.just("minid"), st.integers(0, 40)),
    st.tuples(st.just("read"), st.sampled_from(CONSUMERS), st.integers(1, 4)),
    st.tuples(st.just("ack"), st.integers(0, 30)),
    st.tuples(st.just("claim"), st.sampled_from(CONSUMERS), st.integers(0, 30)),
    st.tuples(st.just("autoclaim"), st.sampled_from(CONSUMERS), st.integers(1, 5)),
    st.tuples(st.just("setid"), st.integers(0, 40)),
    st.tuples(st.just("recreate"), st.booleans()),
    st.tuples(st.just("delconsumer"), st.sampled_from(CONSUMERS)),
)


class Model:
    """The plain model: a list of (id, fields) and one group."""

    def __init__(self) -> None:
        self.entries: list[tuple[S.ID, list[bytes]]] = []
        self.last: S.ID = MIN_ID
        self.cursor: S.ID = MIN_ID
        self.pending: dict[S.ID, bytes] = {}


def run(ops: list[tuple[Any, ...]]) -> tuple[Stream, list[Stream]]:
    """Apply ``ops`` at a leader, checking each against the model; the leader
    and its deltas."""
    s = Stream()
    m = Model()
    deltas: list[Stream] = []
    now = 1000
    _, d = S.group_create(s, GROUP, MIN_ID, None)
    deltas.append(d)
    n = 0
    for op in ops:
        kind = op[0]
        if kind == "add":
            now += op[1]
            n += 1
            i, d = S.xadd(s, [b"n", b"%d" % n], b"*", now)
            assert i > m.last
            m.last = i
            m.entries.append((i, [b"n", b"%d" % n]))
        elif kind == "addexplicit":
            spec = b"%d-%d" % (op[1], op[2])
            want = (op[1], op[2])
            if want <= m.last:
                with pytest.raises(StreamError, match=r"top item|0-0"):
                    S.xadd(s, [b"x", spec], spec, now)
                continue
            i, d = S.xadd(s, [b"x", spec], spec, now)
            assert i == want > m.last
            m.last = i
            m.entries.append((i, [b"x", spec]))
        elif kind == "del":
            if not m.entries:
                continue
            i = m.entries[op[1] % len(m.entries)][0]
            k, d = S.xdel(s, [i, (0, 0)])
            assert k == 1
            m.entries = [e for e in m.entries if e[0] != i]
        elif kind == "maxlen":
            k, d = S.xtrim(s, Trim(maxlen=op[1]))
            drop = max(0, len(m.entries) - op[1])
            assert k == drop
            gone = {e[0] for e in m.entries[:drop]}
            m.entries = m.entries[drop:]
            m.pending = {i: c for i, c in m.pending.items() if i not in gone and i >= s.floor}
        elif kind == "minid":
            k, d = S.xtrim(s, Trim(minid=(op[1], 0)))
            assert k == sum(1 for e in m.entries if e[0] < (op[1], 0))
            m.entries = [e for e in m.entries if e[0] >= (op[1], 0)]
            m.pending = {i: c for i, c in m.pending.items() if i >= s.floor}
        elif kind == "read":
            g = S.get_group(s, GROUP)
            if g is None:
                continue
            got, d = S.read_new(s, GROUP, g, op[1], op[2], False, now)
            want = [e for e in m.entries if e[0] > m.cursor][: op[2]]
            assert got == want
            if got:
                m.cursor = got[-1][0]
            for i, _ in got:
                m.pending[i] = op[1]
        elif kind == "ack":
            g = S.get_group(s, GROUP)
            if g is None or not m.pending:
                continue
            i = sorted(m.pending)[op[1] % len(m.pending)]
            k, d = S.ack(s, GROUP, g, [i, i])
            assert k == 1
            del m.pending[i]
        elif kind == "claim":
            g = S.get_group(s, GROUP)
            if g is None or not m.pending:
                continue
            i = sorted(m.pending)[op[2] % len(m.pending)]
            got, d = S.claim(s, GROUP, g, op[1], 0, [i], now)
            if any(e[0] == i for e in m.entries):
                assert [x[0] for x in got] == [i]
                m.pending[i] = op[1]
            else:
                assert got == []
                del m.pending[i]
        elif kind == "autoclaim":
            g = S.get_group(s, GROUP)
            if g is None:
                continue
            (_nxt, got, deleted), d = S.autoclaim(s, GROUP, g, op[1], 0, MIN_ID, op[2], now)
            live = {e[0] for e in m.entries}
            for i in deleted:
                assert i not in live
                del m.pending[i]
            for i, _ in got:
                m.pending[i] = op[1]
            assert len(got) <= op[2]
        elif kind == "setid":
            g = S.get_group(s, GROUP)
            if g is None:
                continue
            d = S.group_setid(s, GROUP, g, (op[1], 0), None)
            m.cursor = (op[1], 0)
        elif kind == "recreate":
            if S.get_group(s, GROUP) is not None:
                _, d = S.group_destroy(s, GROUP)
                deltas.append(d)
            if op[1]:
                _, d = S.group_create(s, GROUP, m.last, None)
                m.cursor = m.last
            else:
                m.cursor = MIN_ID
                d = Stream(ver=s.ver)
                _, d = S.group_create(s, GROUP, MIN_ID, None)
            m.pending = {}
        elif kind == "delconsumer":
            g = S.get_group(s, GROUP)
            if g is None:
                continue
            k, d = S.del_consumer(s, GROUP, g, op[1])
            mine = [i for i, c in m.pending.items() if c == op[1]]
            assert k == len(mine) or (k == 0 and op[1] not in g.consumers)
            for i in mine:
                del m.pending[i]
        deltas.append(d)
        # the stream agrees with the model after every operation
        assert [(i, f) for i, f in s.range(MIN_ID, MAX_ID)] == m.entries
        assert s.revrange(MAX_ID, MIN_ID, 3) == list(reversed(m.entries))[:3]
        g = S.get_group(s, GROUP)
        assert g is not None
        assert g.last_id == m.cursor
        assert {i: c[1] for i, c in g.pending()} == m.pending
    return s, deltas


@settings(max_examples=150, deadline=None)
@given(st.lists(op_strategy, max_size=40))
def test_operations_agree_with_the_list_model(ops: list[tuple[Any, ...]]) -> None:
    run(ops)


@settings(max_examples=100, deadline=None)
@given(st.lists(op_strategy, max_size=30), st.randoms(use_true_random=False))
def test_replicas_converge_whatever_the_order_of_deltas(
    ops: list[tuple[Any, ...]], rnd: Any
) -> None:
    leader, deltas = run(ops)
    shuffled = deltas + rnd.sample(deltas, k=len(deltas) // 2)  # duplicates too
    rnd.shuffle(shuffled)
    replica = Stream()
    for d in shuffled:
        replica.merge(Stream.from_wire(d.to_wire()))  # through the wire form
    assert replica.fingerprint() == leader.fingerprint()
    assert replica.range(MIN_ID, MAX_ID) == leader.range(MIN_ID, MAX_ID)
    # a full state merges the same way (transfer, handoff, anti-entropy)
    other = Stream()
    other.merge(Stream.from_wire(leader.to_wire()))
    assert other.fingerprint() == leader.fingerprint()
    assert not other.merge(leader)  # nothing new: reported unchanged


def _diverged(
    common: list[tuple[Any, ...]], a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]
) -> list[Stream]:
    """Three states: a common history, then two leaders (split brain) and the base."""
    base, _ = run(common)
    sa = Stream.from_wire(base.to_wire())
    sb = Stream.from_wire(base.to_wire())
    for s, ops, t in ((sa, a, 5000), (sb, b, 7000)):
        for k, op in enumerate(ops):
            if op == "add":
                S.xadd(s, [b"v", b"%d" % k], b"*", t + k)
            elif op == "trim":
                S.xtrim(s, Trim(maxlen=2))
            elif op == "read":
                g = S.get_group(s, GROUP)
                if g is not None:
                    S.read_new(s, GROUP, g, b"c1", 2, False, t)
            elif op == "ack":
                g = S.get_group(s, GROUP)
                if g is not None:
                    S.ack(s, GROUP, g, [i for i, _ in g.pending()][:1])
            elif op == "destroy":
                S.group_destroy(s, GROUP)
    return [base, sa, sb]


side = st.lists(st.sampled_from(["add", "trim", "read", "ack", "destroy"]), max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(op_strategy, max_size=15), side, side)
def test_merge_is_commutative_associative_idempotent(
    common: list[tuple[Any, ...]], a: list[str], b: list[str]
) -> None:
    states = _diverged(common, a, b)  # type: ignore[arg-type]
    results = set()
    for order in itertools.permutations(range(3)):
        acc = Stream()
        for k in order:
            acc.merge(Stream.from_wire(states[k].to_wire()))
        results.add(acc.fingerprint())
        # idempotent: merging any input again changes nothing
        for st_ in states:
            assert not acc.merge(Stream.from_wire(st_.to_wire()))
    assert len(results) == 1
    # associative: (a+b)+c == a+(b+c)
    ab = Stream.from_wire(states[1].to_wire())
    ab.merge(states[2])
    ab.merge(states[0])
    bc = Stream.from_wire(states[2].to_wire())
    bc.merge(states[0])
    a_bc = Stream.from_wire(states[1].to_wire())
    a_bc.merge(bc)
    assert ab.fingerprint() == a_bc.fingerprint() == results.pop()


def test_ids_parse_and_generate_like_redis() -> None:
    s = Stream()
    assert S.xadd(s, [b"a", b"1"], b"5-3", 0)[0] == (5, 3)
    assert S.xadd(s, [b"a", b"1"], b"5-*", 0)[0] == (5, 4)
    assert S.xadd(s, [b"a", b"1"], b"*", 3)[0] == (5, 5)  # the clock went back
    assert S.xadd(s, [b"a", b"1"], b"*", 9)[0] == (9, 0)
    assert S.xadd(s, [b"a", b"1"], b"10", 0)[0] == (10, 0)
    for bad, text in ((b"10", S.TOP_ITEM), (b"9-*", S.TOP_ITEM), (b"x", S.INVALID_ID)):
        with pytest.raises(StreamError) as info:
            S.xadd(s, [b"a", b"1"], bad, 0)
        assert info.value.message == text
    t = Stream()
    with pytest.raises(StreamError) as info:
        S.xadd(t, [b"a"], b"0-0", 0)
    assert info.value.message == "ERR The ID specified in XADD must be greater than 0-0"
    assert S.xadd(t, [b"a", b"1"], b"0-*", 0)[0] == (0, 1)
    assert S.parse_id(b"18446744073709551615-18446744073709551615") == MAX_ID
    for bad in (b"", b"-1", b"1-", b"18446744073709551616", b"1-2-3", b" 1"):
        with pytest.raises(StreamError):
            S.parse_id(bad)


def test_idempotent_xadd_returns_the_first_id_for_a_retried_sequence() -> None:
    s = Stream()
    i, _ = S.xadd(s, [b"a", b"1"], b"*", 10, producer=(b"p", 1))
    j, d = S.xadd(s, [b"a", b"1"], b"*", 11, producer=(b"p", 1))
    assert i == j
    assert len(s) == 1
    assert not d.entries
    k, _ = S.xadd(s, [b"a", b"2"], b"*", 11, producer=(b"p", 2))
    assert k > i
    assert len(s) == 2
    # only the latest sequence is remembered: an older one is refused
    with pytest.raises(StreamError, match="below the last added"):
        S.xadd(s, [b"a", b"0"], b"*", 12, producer=(b"p", 1))
