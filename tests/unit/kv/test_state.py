"""Pure per-key state helpers: resolution, visibility, compaction, reclaim, decoding."""

from __future__ import annotations

import pytest

from peer_ring import versions as vv
from peer_ring.apps.kv import _state as st
from peer_ring.errors import InvalidRequest
from peer_ring.hlc import LOGICAL_BITS

T0 = 1_700_000_000.0


def stamp(seconds: float, logical: int = 0) -> int:
    return (int(seconds * 1000) << LOGICAL_BITS) | logical


def blind_writes(*items: st.Item) -> st.Entries:
    """Each item written blind by its own actor: all concurrent siblings."""
    state: vv.DVVSet[st.Item] = vv.empty()
    for i, item in enumerate(items):
        state = vv.update(state, None, item, f"actor{i}", stamp=item[2])
    return state.entries


def test_resolution_is_last_writer_wins_over_tombstones_and_expiry() -> None:
    old = (b"old", None, stamp(T0))
    new = (b"new", None, stamp(T0 + 1))
    assert st.live_item(blind_writes(old, new), T0 + 2) == new
    tomb = (None, None, stamp(T0 + 2))
    assert st.live_item(blind_writes(old, tomb), T0 + 3) is None
    expiring = (b"ttl", T0 + 5, stamp(T0 + 3))
    entries = blind_writes(old, expiring)
    assert st.live_item(entries, T0 + 4) == expiring
    assert st.live_item(entries, T0 + 5) is None  # expiry hides the winner
    assert st.visible_items(entries, T0 + 5) == [old]
    assert st.live_item(st.EMPTY, T0) is None


def test_compact_drops_losing_tombstones_and_caps_siblings() -> None:
    tomb = (None, None, stamp(T0))
    values = [(b"v%d" % i, None, stamp(T0 + 1 + i)) for i in range(5)]
    entries = blind_writes(tomb, *values)
    compacted = st.compact(entries, None)
    assert sorted(v for v in vv.values(vv.DVVSet(compacted))) == sorted(values)
    assert vv.context(vv.DVVSet(compacted)) == vv.context(vv.DVVSet(entries))  # clock kept
    capped = st.compact(entries, 2)
    assert sorted(vv.values(vv.DVVSet(capped))) == sorted(values[-2:])
    # a winning tombstone stays; one sibling is left alone (same object)
    winning = blind_writes(values[0], (None, None, stamp(T0 + 9)))
    assert st.compact(winning, None) is winning
    single = blind_writes(values[0])
    assert st.compact(single, 1) is single


def test_compacted_replicas_converge_under_sync() -> None:
    a = blind_writes((b"a", None, stamp(T0 + 1)))
    b = vv.update(vv.empty(), None, (b"b", None, stamp(T0 + 2)), "zz", stamp=stamp(T0 + 2))
    joined = st.compact(vv.sync(vv.DVVSet(a), b).entries, 1)
    assert vv.values(vv.DVVSet(joined)) == [(b"b", None, stamp(T0 + 2))]
    # the stale side syncing the compacted state loses the dropped sibling
    again = st.compact(vv.sync(vv.DVVSet(a), vv.DVVSet(joined)).entries, 1)
    assert again == joined


def test_reclaimable_waits_for_expiry_and_tombstone_grace() -> None:
    tomb = blind_writes((None, None, stamp(T0)))
    assert not st.reclaimable(tomb, T0 + 5, grace=10)
    assert st.reclaimable(tomb, T0 + 11, grace=10)
    expiring = blind_writes((b"x", T0 + 3, stamp(T0)))
    assert not st.reclaimable(expiring, T0 + 2, grace=10)
    assert st.reclaimable(expiring, T0 + 3, grace=10)
    assert not st.reclaimable(blind_writes((b"x", None, stamp(T0))), T0 + 99, grace=0)


def test_decode_validates_wire_states() -> None:
    entries = blind_writes((b"x", 5.0, 7), (None, None, 9))
    wire = [[a, n, [list(i) for i in vals]] for a, n, vals in entries]
    assert st.decode_entries(wire) == entries
    assert st.decode_entries(None) == st.EMPTY
    assert st.digest(entries) == st.digest(st.decode_entries(wire))
    int_expiry = st.decode_entries([["a", 1, [[b"x", 5, 1]]]])
    assert int_expiry[0][2][0][1] == 5.0
    assert isinstance(int_expiry[0][2][0][1], float)
    for bad in (
        "nope",
        [["a", 1]],
        [["a", 0, []]],
        [["", 1, []]],
        [["a", 1, [[b"x", None]]]],
        [["a", 1, [["str", None, 1]]]],
        [["a", 1, [[b"x", "soon", 1]]]],
        [["a", 1, [[b"x", None, -1]]]],
        [["a", 1, [[b"x", None, 1], [b"y", None, 1]]]],
        [["a", 1, []], ["a", 2, []]],
    ):
        with pytest.raises(InvalidRequest):
            st.decode_entries(bad)


def test_pack_is_compact_for_one_value_and_inverse_of_unpack() -> None:
    one = vv.update(vv.empty(), None, (b"x", None, stamp(T0)), "a", stamp=stamp(T0)).entries
    packed = st.pack(one)
    assert len(packed) == 4
    assert st.unpack(packed) == one
    # the actor's second write: its counter is no longer the value's stamp
    again = vv.lww_put(vv.DVVSet(one), (b"z", 5.0, stamp(T0 + 2)), "a", stamp(T0 + 2)).entries
    flat = st.pack(again)
    assert len(flat) == 5
    assert type(flat[0]) is str
    assert st.unpack(flat) == again
    two = blind_writes((b"x", None, stamp(T0)), (b"y", 9.0, stamp(T0 + 1)))
    assert st.pack(two) is two  # siblings stay Entries
    assert st.unpack(st.pack(two)) == two
    # one value among several actors' entries (an LWW key that several
    # coordinators wrote): the vector form, the others' counters after the value
    lww = vv.lww(vv.DVVSet(two), st.stamp_of).entries
    assert [len(e[2]) for e in lww] == [0, 1]
    vector = st.pack(lww)
    assert vector == ("actor1", b"y", 9.0, stamp(T0 + 1), lww[1][1], "actor0", lww[0][1])
    assert st.unpack(vector) == lww
    many = (("a", 3, ()), ("b", 4, ()), ("c", 9, ((b"v", None, 77),)), ("d", 2, ()))
    assert st.pack(many) == ("c", b"v", None, 77, 9, "a", 3, "b", 4, "d", 2)
    assert st.unpack(st.pack(many)) == many
    dots_only = (("a", 3, ()), ("b", 4, ()))
    assert st.pack(dots_only) is dots_only
    wide = tuple((f"a{i:02}", 1, ((b"v", None, 5),) if i == 0 else ()) for i in range(17))
    assert st.pack(wide) is wide  # more than VECTOR_MAX entries: Entries
    assert st.unpack(st.pack(st.EMPTY)) == st.EMPTY


def test_live_value_is_the_live_items_value_of_every_stored_form() -> None:
    """``live_value`` reads a stored state in place: the value ``live_item``
    gives for the unpacked state, packed or not, one version or siblings."""
    value = (b"v", None, stamp(T0))
    ttl = (b"t", T0 + 5, stamp(T0))
    tomb = (None, None, stamp(T0))
    states: list[st.Entries] = [st.EMPTY]
    for item in (value, ttl, tomb):
        states.append(vv.update(vv.empty(), None, item, "a", stamp=item[2]).entries)  # packs
        states.append((("a", 1, (item,)),))  # one version, stamp != n: the 5-tuple form
    states.append(blind_writes(value, (b"newer", None, stamp(T0 + 1))))
    states.append(blind_writes(value, (None, None, stamp(T0 + 1))))
    states.append(blind_writes((b"newer", T0 + 5, stamp(T0 + 1)), value))
    for two in states[-3:]:  # collapsed to their LWW winner: the vector form
        states.append(vv.lww(vv.DVVSet(two), st.stamp_of).entries)
    packed = 0
    for entries in states:
        stored = st.pack(entries)
        packed += stored is not entries
        for now in (T0, T0 + 4.9, T0 + 5, T0 + 6):
            item = st.live_item(entries, now)
            assert st.live_value(stored, now) == (None if item is None else item[0])
    assert packed == 9  # every one-value state packs (4-, 5-tuple or the vector form)
