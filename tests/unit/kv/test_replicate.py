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
from peer_ring.apps.kv.replica import REPLICATE, KVReplica, _decode_state
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
