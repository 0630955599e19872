"""The ``repl`` replica command: a plain write's fan-out, decoded in one pass.

``repl`` must store exactly what ``merge`` stores for every state (it only
skips the "a value existed" answer), and its one-pass decoder must accept and
refuse exactly what ``_state.decode_entries`` does.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from peer_ring import InvalidRequest
from peer_ring.apps.kv import _state as st
from peer_ring.apps.kv.replica import PACKED, REPLICATE, KVReplica, _decode_state
from peer_ring.service import Request
from peer_ring.versions import MAX_COUNTER

_items = hs.tuples(
    hs.one_of(hs.none(), hs.binary(max_size=4)),
    hs.one_of(hs.none(), hs.floats(0, 2e9, allow_nan=False), hs.integers(0, 5)),
    hs.integers(0, 50),
)
_entry = hs.tuples(
    hs.sampled_from(["a", "b", "c", "n1.x"]),
    hs.integers(1, 60),
    hs.lists(_items, max_size=4),
)


def _wire(obj: object) -> object:
    """What a peer's msgpack decoder hands over (tuples become lists)."""
    return msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)


def _outcome(fn: object, obj: object) -> object:
    try:
        return ("ok", fn(obj))  # type: ignore[operator]
    except InvalidRequest:
        return ("invalid",)


@settings(max_examples=300, deadline=None)
@given(hs.lists(_entry, max_size=4))
def test_the_one_pass_decoder_agrees_with_decode_entries(entries: list[object]) -> None:
    wire = _wire(entries)
    got = _outcome(_decode_state, wire)
    assert got == _outcome(st.decode_entries, wire)
    if got[0] == "ok":
        decoded = got[1]
        for actor, _, _ in decoded:  # type: ignore[attr-defined]
            assert actor is st.decode_entries([[actor, 1, []]])[0][0]  # interned alike


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        [["a", 1]],
        [["a", 0, []]],
        [["", 1, []]],
        [["a", 1, [[b"x", None]]]],
        [["a", 1, [["str", None, 1]]]],
        [["a", 1, [[b"x", "soon", 1]]]],
        [["a", 1, [[b"x", None, -1]]]],
        [["a", 1, [[b"x", None, MAX_COUNTER + 1]]]],
        [["a", MAX_COUNTER + 1, []]],
        [["a", -1, []]],
        [["a", 1, [[b"x", None, 1], [b"y", None, 2]]]],
        [["a", 1, []], ["a", 2, []]],
        [["b", 1, []], ["a", 2, []], ["b", 3, []]],
    ],
)
def test_the_one_pass_decoder_refuses_what_decode_entries_refuses(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        _decode_state(bad)


def test_the_largest_counter_and_stamp_are_accepted() -> None:
    wire = [["a", MAX_COUNTER, [[b"x", None, MAX_COUNTER]]], ["b", 1, [[None, 2.5, 0]]]]
    assert _decode_state(wire) == st.decode_entries(wire)


def test_unsorted_actors_are_sorted_as_decode_entries_does() -> None:
    wire = [["b", 2, [[b"y", None, 2]]], ["a", 1, [[b"x", None, 1]]]]
    assert _decode_state(wire) == st.decode_entries(wire)
    assert [e[0] for e in _decode_state(wire)] == ["a", "b"]


class _App:
    """Enough of an app context for ``handle``: a partition map and a clock."""

    class _Clock:
        def time(self) -> float:
            return 1_700_000_000.0

        def monotonic(self) -> float:
            return 0.0

    clock = _Clock()


def _replica() -> KVReplica:
    r = KVReplica()
    r._time = _App.clock  # type: ignore[assignment]
    return r


@settings(max_examples=200, deadline=None)
@given(hs.lists(hs.lists(_entry, max_size=3), min_size=1, max_size=4))
def test_repl_stores_what_merge_stores(states: list[list[object]]) -> None:
    """The same sequence of states, sent as ``merge`` to one replica and as
    ``repl`` to another, leaves the same stored state; ``repl`` answers nil."""
    by_merge, by_repl = _replica(), _replica()
    for state in states:
        wire = _wire(state)
        try:
            st.decode_entries(wire)
        except InvalidRequest:
            with pytest.raises(InvalidRequest):
                by_repl.handle(Request(REPLICATE, b"k", 3, wire, "n2"))
            continue
        by_merge.handle(Request("merge", b"k", 3, wire, "n2"))
        assert by_repl.handle(Request(REPLICATE, b"k", 3, wire, "n2")) is None
        assert by_repl._parts.get(3) == by_merge._parts.get(3)
        assert by_repl.memory.used == by_merge.memory.used


# -- the packed form on the wire and repl's fast path ------------------------------

_one_version = hs.tuples(
    hs.sampled_from(["a", "b", "n1.x"]),
    hs.integers(1, 40),
    hs.one_of(hs.none(), hs.binary(max_size=4)),
    hs.one_of(hs.none(), hs.floats(0, 2e9, allow_nan=False), hs.integers(0, 5)),
    hs.integers(0, 45),
)


def _entries_of(version: tuple[str, int, object, object, int]) -> list[object]:
    actor, n, value, exp, stamp = version
    return [[actor, n, [[value, exp, stamp]]]]


@settings(max_examples=300, deadline=None)
@given(_one_version)
def test_the_packed_form_of_one_version_decodes_as_its_entries(
    version: tuple[str, int, object, object, int],
) -> None:
    actor, n, value, exp, stamp = version
    nested = _wire(_entries_of(version))
    flat = [actor, value, exp, n] if stamp == n else [actor, value, exp, stamp, n]
    want = _outcome(st.decode_entries, nested)
    assert _outcome(_decode_state, _wire(flat)) == want
    assert _outcome(st.decode_entries, _wire(flat)) == want
    if want[0] == "ok":
        decoded = want[1]
        assert _decode_state(st.pack(decoded)) == decoded  # a packed tuple of this process
        assert list(st.pack(decoded)) == _wire(flat)  # and the form is pack's


@pytest.mark.parametrize(
    "bad",
    [
        ["a", b"x", None],  # too short: not a packed form (3 fields)
        ["", b"x", None, 1],
        ["a", "str", None, 1],
        ["a", b"x", "soon", 1],
        ["a", b"x", None, 0],
        ["a", b"x", None, -1, 2],
        ["a", b"x", None, MAX_COUNTER + 1],
        ["a", b"x", None, 1, MAX_COUNTER + 1],
        ["a" * 300, b"x", None, 1],
        ["a", b"x", None, 1, 2, 3],
        # the vector form (protocol 8)
        ["a", b"x", None, 1, 1, "b"],  # even: not a vector form
        ["a", b"x", None, 1, 1, "b", 2, "c"],
        ["a", b"x", None, 1, 1, "a", 2],  # the value's actor again
        ["a", b"x", None, 1, 1, "b", 2, "b", 3],  # repeated
        ["a", b"x", None, 1, 1, "b", 0],
        ["a", b"x", None, 1, 1, "b", MAX_COUNTER + 1],
        ["a", b"x", None, 1, 1, 7, 2],
        ["a", b"x", None, 1, 1, "b", "2"],
        ["a", b"x", None, 1, 1, "", 2],
        ["a", b"x", None, 1, 1, "b" * 300, 2],
        ["a", b"x", None, 1, 0, "b", 2],  # the value's counter: not a dot
        ["a", "str", None, 1, 1, "b", 2],
        ["a", b"x", "soon", 1, 1, "b", 2],
    ],
)
def test_a_malformed_packed_form_is_refused(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        st.decode_entries(bad)
    with pytest.raises(InvalidRequest):
        _decode_state(bad)
    replica = _replica()
    with pytest.raises(InvalidRequest):
        replica.handle(Request(REPLICATE, b"k", 3, bad, "n2"))
    assert replica._parts.get(3, {}) == {}


# -- the vector form: one value among several actors' entries (protocol 8) ------------

_vector = hs.tuples(
    _one_version,
    hs.dictionaries(
        hs.sampled_from(["a", "b", "c", "n1.x", "n2.y"]), hs.integers(1, 60), min_size=1
    ),
)


def _vector_forms(
    vector: tuple[tuple[str, int, object, object, int], dict[str, int]],
) -> tuple[list[object], list[object]]:
    """A state of one value and other actors' counters, as nested entries
    (sorted) and in the vector form."""
    (actor, n, value, exp, stamp), others = vector
    others = {a: c for a, c in others.items() if a != actor}
    nested: list[object] = [[a, c, []] for a, c in others.items()]
    nested.append([actor, n, [[value, exp, stamp]]])
    nested.sort(key=lambda e: e[0])  # type: ignore[index]
    flat: list[object] = [actor, value, exp, stamp, n]
    for a in sorted(others):
        flat += [a, others[a]]
    return nested, flat


@settings(max_examples=300, deadline=None)
@given(_vector)
def test_the_vector_form_decodes_as_its_entries(
    vector: tuple[tuple[str, int, object, object, int], dict[str, int]],
) -> None:
    nested, flat = _vector_forms(vector)
    want = _outcome(st.decode_entries, _wire(nested))
    assert _outcome(_decode_state, _wire(flat)) == want
    assert _outcome(st.decode_entries, _wire(flat)) == want
    if want[0] == "ok" and len(nested) > 1:
        decoded = want[1]
        packed = st.pack(decoded)
        assert type(packed[0]) is str  # the vector form
        assert len(packed) == len(flat)
        assert list(packed) == _wire(flat)  # pack's, field by field
        assert st.unpack(packed) == decoded
        assert _decode_state(packed) == decoded  # a packed tuple of this process


def test_repl_of_a_newer_vector_state_replaces_the_flat_one_in_place() -> None:
    """The LWW put of a key that several coordinators wrote: the fast path
    stores the wire's fields over what the new state supersedes, and leaves
    what it does not supersede to the general join."""
    r = _replica()
    first = ["n2.y", b"a", None, 70, 7, "n1.x", 3]
    assert r._replicate_vector(3, b"k", _wire(first))  # nothing stored: kept as is
    assert r._parts[3][b"k"] == ("n2.y", b"a", None, 70, 7, "n1.x", 3)
    # n1.x writes over it: its counter moves on, n2.y's value is superseded
    newer = ["n1.x", b"b", 9.5, 80, 4, "n2.y", 7, "n3.z", 1]
    assert r._replicate_vector(3, b"k", _wire(newer))
    assert r._parts[3][b"k"] == ("n1.x", b"b", 9.5, 80, 4, "n2.y", 7, "n3.z", 1)
    assert b"k" in r._mortal[3]  # it expires: a sweep candidate
    assert r._replicate_vector(3, b"k", _wire(newer))  # again: unchanged
    # the older state, and one that has not seen n3.z's dot: the general path
    assert not r._replicate_vector(3, b"k", _wire(first))
    assert not r._replicate_vector(3, b"k", _wire(["n2.y", b"c", None, 90, 8, "n1.x", 4]))
    r.handle(Request(REPLICATE, b"k", 3, _wire(first), "n2"))
    assert r._parts[3][b"k"] == ("n1.x", b"b", 9.5, 80, 4, "n2.y", 7, "n3.z", 1)


def test_a_state_of_more_entries_than_the_vector_form_packs_keeps_one_form() -> None:
    """Past ``VECTOR_MAX`` entries a state stays ``Entries`` on every path: the
    coordinator's issue (with a prune threshold above it), ``repl`` of a long
    vector from a peer, and ``merge`` of the same state nested."""
    from peer_ring import versions as vv

    actors = [f"n{i:02d}" for i in range(st.VECTOR_MAX + 1)]
    full = tuple((a, 3, ((b"v", None, 50),) if a == "n01" else ()) for a in actors[1:])
    stored = st.pack(full)
    assert type(stored[0]) is str  # VECTOR_MAX entries: still the vector form
    prune = vv.PruneConfig(small=st.VECTOR_MAX + 4, big=50)
    issued = st.issue(st.unpack(stored), None, b"x", None, 100, "n00", True, None, prune)
    assert len(issued) == st.VECTOR_MAX + 1
    assert st.pack(issued) is issued  # Entries
    assert st.issue_packed(stored, b"x", None, 100, "n00", prune.small) is None  # the general way
    long_wire = ["n00", b"x", None, 100, 100]
    for a, n, _ in issued[1:]:
        long_wire += [a, n]
    by_repl, by_merge = _replica(), _replica()
    by_repl.handle(Request(REPLICATE, b"k", 3, _wire(long_wire), "n2"))
    by_merge.handle(Request("merge", b"k", 3, _wire(issued), "n2"))
    assert by_repl._parts[3][b"k"] == by_merge._parts[3][b"k"] == issued
    assert by_repl.memory.used == by_merge.memory.used


def test_unsorted_vector_pairs_are_sorted_as_decode_entries_does() -> None:
    wire = ["b", b"x", None, 9, 2, "c", 2, "a", 3]
    assert _decode_state(wire) == st.decode_entries(wire)
    assert [e[0] for e in _decode_state(wire)] == ["a", "b", "c"]


_small_vector = hs.tuples(
    hs.tuples(
        hs.sampled_from(["a", "b", "c"]),
        hs.integers(1, 6),
        hs.one_of(hs.none(), hs.just(b"v")),
        hs.one_of(hs.none(), hs.just(5.0)),
        hs.integers(0, 7),
    ),
    hs.dictionaries(hs.sampled_from(["a", "b", "c"]), hs.integers(1, 6), min_size=1),
)


@settings(max_examples=500, deadline=None)
@given(_small_vector, hs.one_of(_small_vector, hs.tuples(_small_vector, hs.just(None))))
def test_the_in_place_supersedes_equals_the_entries_one(
    a: tuple[tuple[str, int, object, object, int], dict[str, int]], b: object
) -> None:
    """``repl``'s fast path takes a vector form over a stored flat state --
    any of pack's forms -- exactly when ``_state.supersedes`` of their
    ``Entries`` holds, read in place (small counters and few actors: equal
    counters, the case that decides, are frequent)."""
    nested_a, flat_a = _vector_forms(a)
    if len(nested_a) < 2:
        return
    if isinstance(b, tuple) and len(b) == 2 and b[1] is None:  # one version of one actor
        (actor, n, value, exp, stamp), _ = b[0]  # type: ignore[misc]
        nested_b: list[object] = [[actor, n, [[value, exp, stamp]]]]
    else:
        nested_b, _ = _vector_forms(b)  # type: ignore[arg-type]
    entries_a = st.decode_entries(_wire(nested_a))
    entries_b = st.decode_entries(_wire(nested_b))
    r = _replica()
    r._parts[3] = {b"k": st.pack(entries_b)}
    assert type(r._parts[3][b"k"][0]) is str  # a flat form
    taken = r._replicate_vector(3, b"k", _wire(flat_a))
    assert taken == st.supersedes(entries_a, entries_b)
    if taken:
        assert st.unpack(r._parts[3][b"k"]) == entries_a


@settings(max_examples=200, deadline=None)
@given(
    hs.lists(hs.tuples(hs.one_of(_vector, _small_vector), hs.booleans()), min_size=1, max_size=6),
    hs.booleans(),
)
def test_repl_of_vector_forms_stores_what_merge_of_their_entries_stores(
    writes: list[tuple[tuple[tuple[str, int, object, object, int], dict[str, int]], bool]],
    lru: bool,
) -> None:
    """The same states sent nested to one replica (merge) and in the vector
    form to another (repl), in either mode: the same stored states, memory,
    sweep candidates and LRU order; and a replica answers a peer's packed
    read with the stored form, which decodes to the same entries."""
    make = _lru_replica if lru else _replica
    by_merge, by_repl = make(), make()
    for vector, lww in writes:
        by_merge._lww = by_repl._lww = lww
        nested, flat = _vector_forms(vector)
        try:
            st.decode_entries(_wire(nested))
        except InvalidRequest:
            continue
        by_merge.handle(Request("merge", b"k", 3, _wire(nested), "n2"))
        assert by_repl.handle(Request(REPLICATE, b"k", 3, _wire(flat), "n2")) is None
        assert by_repl._parts.get(3) == by_merge._parts.get(3)
        assert by_repl._mortal == by_merge._mortal
        assert by_repl.memory.used == by_merge.memory.used
        assert list(by_repl.memory.lru or ()) == list(by_merge.memory.lru or ())
        by_merge.handle(Request("get", b"k", 3, PACKED, "n2"))  # a read touches the LRU
        answer = by_repl.handle(Request("get", b"k", 3, PACKED, "n2"))
        assert _decode_state(_wire(answer)) == st.unpack(by_merge._parts[3][b"k"])


def _lru_replica() -> KVReplica:
    from peer_ring.apps.kv.replica import KVConfig

    r = KVReplica(config=KVConfig(maxmemory=1 << 30, maxmemory_policy="allkeys-lru"))
    r._time = _App.clock  # type: ignore[assignment]
    return r


@settings(max_examples=300, deadline=None)
@given(
    hs.lists(hs.tuples(_one_version, hs.booleans(), hs.sampled_from([b"k", b"j"])), max_size=8),
    hs.booleans(),
)
def test_repl_of_one_version_states_stores_what_merge_stores(
    writes: list[tuple[tuple[str, int, object, object, int], bool, bytes]], lru: bool
) -> None:
    """States of one version -- repl's fast path when the key holds nothing or
    one version of the same actor -- in the nested and the packed form: the
    same states, memory, sweep candidates and LRU order as merge's general
    path, and the same errors."""
    make = _lru_replica if lru else _replica
    by_merge, by_repl = make(), make()
    for version, packed, key in writes:
        actor, n, value, exp, stamp = version
        nested = _wire(_entries_of(version))
        wire = (
            _wire([actor, value, exp, n] if stamp == n else [actor, value, exp, stamp, n])
            if packed
            else nested
        )
        try:
            st.decode_entries(nested)
        except InvalidRequest:
            with pytest.raises(InvalidRequest):
                by_repl.handle(Request(REPLICATE, key, 3, wire, "n2"))
            continue
        by_merge.handle(Request("merge", key, 3, nested, "n2"))
        assert by_repl.handle(Request(REPLICATE, key, 3, wire, "n2")) is None
        assert by_repl._parts.get(3) == by_merge._parts.get(3)
        assert by_repl._mortal == by_merge._mortal
        assert by_repl.memory.used == by_merge.memory.used
        assert by_repl.memory.lru == by_merge.memory.lru
        if lru:
            assert list(by_repl.memory.lru or ()) == list(by_merge.memory.lru or ())


def test_repl_of_a_newer_version_of_the_same_actor_replaces_it_in_place() -> None:
    r = _replica()
    r.handle(Request(REPLICATE, b"k", 3, _wire([["n1.x", 7, [[b"a", None, 7]]]]), "n2"))
    assert r._parts[3][b"k"] == ("n1.x", b"a", None, 7)
    r.handle(Request(REPLICATE, b"k", 3, ["n1.x", b"b", 9.5, 70, 8], "n2"))
    assert r._parts[3][b"k"] == ("n1.x", b"b", 9.5, 70, 8)
    assert b"k" in r._mortal[3]  # it expires: a sweep candidate
    # an older version of the same actor, and another actor's: joined (general path)
    r.handle(Request(REPLICATE, b"k", 3, ["n1.x", b"a", None, 7], "n2"))
    assert r._parts[3][b"k"] == ("n1.x", b"b", 9.5, 70, 8)
    r.handle(Request(REPLICATE, b"k", 3, ["n2.y", b"c", None, 5], "n2"))
    assert st.unpack(r._parts[3][b"k"]) == (
        ("n1.x", 8, ((b"b", 9.5, 70),)),
        ("n2.y", 5, ((b"c", None, 5),)),
    )


async def test_a_batch_with_one_malformed_key_fails_only_that_key() -> None:
    """The node's batch dispatch: a repl whose state is malformed -- nested or
    packed -- is answered with its error; the other commands of the batch are
    applied and answered."""
    from peer_ring import NodeConfig
    from peer_ring import wire as peer_wire
    from peer_ring.apps.kv import KVStore
    from peer_ring.node import Node
    from peer_ring.transport.base import PeerInfo
    from peer_ring.transport.memory import MemoryNetwork

    node = Node(NodeConfig(node_id="n1", transport="memory"), network=MemoryNetwork())
    kv = node.register(KVStore())
    items = [
        REPLICATE, b"a", 1, _wire([["n2.x", 3, [[b"va", None, 3]]]]),
        REPLICATE, b"b", 1, [["n2.x", 3, [[b"vb", "soon", 3]]]],
        REPLICATE, b"c", 2, ["n2.x", b"vc", None, 4],
        REPLICATE, b"d", 2, ["n2.x", b"vd", None, -4],
        "get", b"a", 1, None,
    ]  # fmt: skip
    frame = peer_wire.batch_frame("kv", "n2", node.ring.epoch, items)
    answer = node._dispatch(_wire(frame), PeerInfo("n2", "n2:1"))
    assert answer[0:2] == [peer_wire.BATCH_OK, None]
    assert answer[2] == peer_wire.BATCH_ERROR
    assert answer[3][0] == "INVALID"
    assert answer[4:6] == [peer_wire.BATCH_OK, None]
    assert answer[6] == peer_wire.BATCH_ERROR
    assert answer[7][0] == "INVALID"
    assert answer[8] == peer_wire.BATCH_OK
    assert _decode_state(_wire(answer[9])) == (("n2.x", 3, ((b"va", None, 3),)),)
    assert kv._parts[1] == {b"a": ("n2.x", b"va", None, 3)}
    assert kv._parts[2] == {b"c": ("n2.x", b"vc", None, 4)}
