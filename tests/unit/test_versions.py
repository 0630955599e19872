"""Scenarios for dotted version vector sets (peer_ring.versions)."""

from __future__ import annotations

import msgpack
import pytest

from peer_ring import versions as dvv
from peer_ring.errors import ConfigError, InvalidRequest
from peer_ring.hlc import LOGICAL_BITS
from peer_ring.versions import DVVSet

TOMB = ("tomb",)


def ms_stamp(ms: int, logical: int = 0) -> int:
    return (ms << LOGICAL_BITS) | logical


def test_new_state_has_one_value_and_context() -> None:
    s = dvv.new(b"v", "a")
    assert dvv.values(s) == [b"v"]
    assert dvv.context(s) == (("a", 1),)
    assert dvv.siblings(s) == [("a", 1, b"v")]


def test_blind_writes_on_one_coordinator_are_siblings() -> None:
    s = dvv.update(dvv.empty(), None, "x", "a")
    s = dvv.update(s, None, "y", "a")
    assert sorted(dvv.values(s)) == ["x", "y"]


def test_interleaved_clients_on_one_coordinator_do_not_explode() -> None:
    # Two clients read the empty key, both write through coordinator "a".
    s = dvv.update(dvv.empty(), None, "c1-v1", "a")
    ctx1 = dvv.context(s)  # client 1 re-reads after its write: sees only c1-v1
    s = dvv.update(s, None, "c2-v1", "a")  # client 2 blind write: concurrent
    assert sorted(dvv.values(s)) == ["c1-v1", "c2-v1"]
    # Client 1 writes with what it saw: supersedes c1-v1 only, c2-v1 stays.
    s = dvv.update(s, ctx1, "c1-v2", "a")
    assert sorted(dvv.values(s)) == ["c1-v2", "c2-v1"]
    # A reader that sees both and writes resolves everything.
    s = dvv.update(s, dvv.context(s), "merged", "a")
    assert dvv.values(s) == ["merged"]


def test_write_with_context_from_another_replica_supersedes_what_it_saw() -> None:
    a = dvv.update(dvv.empty(), None, "from-a", "a")
    b = dvv.update(dvv.empty(), None, "from-b", "b")
    # Client reads b only, writes through a.
    a2 = dvv.update(a, dvv.context(b), "new", "a")
    assert sorted(dvv.values(a2)) == ["from-a", "new"]
    merged = dvv.sync(a2, b)
    assert sorted(dvv.values(merged)) == ["from-a", "new"]


def test_sync_drops_sibling_the_other_side_superseded() -> None:
    base = dvv.new("v1", "a")
    later = dvv.update(base, dvv.context(base), "v2", "b")
    assert dvv.values(dvv.sync(base, later)) == ["v2"]
    assert dvv.values(dvv.sync(later, base)) == ["v2"]


def test_descends_and_concurrent() -> None:
    x = (("a", 2), ("b", 1))
    y = (("a", 1),)
    z = (("b", 2),)
    assert dvv.descends(x, y)
    assert not dvv.descends(y, x)
    assert dvv.descends(x, x)
    assert dvv.descends(y, ())
    assert dvv.concurrent(x, z)
    assert not dvv.concurrent(x, y)
    assert dvv.merge_contexts(x, z) == (("a", 2), ("b", 2))


def test_equal_ignores_values_but_not_dots() -> None:
    s1 = dvv.new("v", "a")
    assert dvv.equal(s1, DVVSet((("a", 1, ("other",)),)))
    assert not dvv.equal(s1, dvv.update(s1, None, "w", "a"))
    assert not dvv.equal(s1, DVVSet((("a", 1, ()),)))


def test_stamp_sets_counter_floor_only_when_no_live_sibling_of_actor() -> None:
    s = dvv.update(dvv.empty(), None, "v1", "a", stamp=ms_stamp(1000))
    assert dvv.context(s) == (("a", ms_stamp(1000)),)
    # A concurrent sibling of the same actor keeps dots contiguous.
    s2 = dvv.update(s, None, "v2", "a", stamp=ms_stamp(2000))
    assert dvv.context(s2) == (("a", ms_stamp(1000) + 1),)
    # Superseding everything lets the counter jump to the stamp.
    s3 = dvv.update(s2, dvv.context(s2), "v3", "a", stamp=ms_stamp(3000))
    assert dvv.siblings(s3) == [("a", ms_stamp(3000), "v3")]


def test_tombstones() -> None:
    s: DVVSet[object] = dvv.new(b"v", "a")
    assert not dvv.only_tombstones(s, lambda v: v is TOMB)
    d = dvv.update(s, dvv.context(s), TOMB, "b")
    assert dvv.only_tombstones(d, lambda v: v is TOMB)
    # A concurrent write next to the delete keeps the key alive.
    c = dvv.sync(d, dvv.update(s, None, b"w", "a"))
    assert not dvv.only_tombstones(c, lambda v: v is TOMB)


def test_lww_collapses_to_highest_stamp_and_converges() -> None:
    a = dvv.update(dvv.empty(), None, ("a-val", 5), "a")
    b = dvv.update(dvv.empty(), None, ("b-val", 9), "b")
    c = dvv.update(dvv.empty(), None, ("c-val", 9), "c")  # ties with b: actor breaks it

    def stamp(v: tuple[str, int]) -> int:
        return v[1]

    merged = dvv.sync_all([a, b, c])
    win = dvv.lww(merged, stamp)
    assert dvv.values(win) == [("c-val", 9)]
    assert dvv.context(win) == dvv.context(merged)
    # A replica that collapsed only a and b converges with the full collapse.
    partial = dvv.lww(dvv.sync(a, b), stamp)
    assert dvv.values(partial) == [("b-val", 9)]
    assert dvv.sync(partial, win) == win
    assert dvv.values(dvv.lww(dvv.sync(partial, c), stamp)) == [("c-val", 9)]


def test_lww_keeps_newer_dots_when_stamps_do_not_follow_counters() -> None:
    s = dvv.update(dvv.empty(), None, ("old-but-high", 100), "a")
    s = dvv.update(s, None, ("new-but-low", 1), "a")
    out = dvv.lww(s, lambda v: v[1])
    assert sorted(dvv.values(out)) == [("new-but-low", 1), ("old-but-high", 100)]
    assert dvv.lww_winner(out, lambda v: v[1]) == ("a", 1, ("old-but-high", 100))


def test_lww_pick_empty_is_none() -> None:
    assert dvv.lww_pick([], lambda v: 0) is None
    assert dvv.lww_winner(dvv.empty(), lambda v: 0) is None


def test_wire_round_trip_and_msgpack() -> None:
    s = dvv.update(dvv.new(b"x", "n1"), None, b"y", "n2", stamp=ms_stamp(77))
    wire = dvv.to_wire(s)
    again = dvv.from_wire(msgpack.unpackb(msgpack.packb(wire), raw=False))
    assert again == s
    enc = dvv.to_wire(s, lambda v: v.decode())
    assert dvv.from_wire(enc, lambda v: v.encode()) == s


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "x",
        [["a", 1]],
        [["a", 0, []]],
        [["a", -1, []]],
        [["", 1, []]],
        [[5, 1, []]],
        [["a", 1.0, []]],
        [["a", True, []]],
        [["a", 1, "v"]],
        [["a", 1, ["v", "w"]]],
        [["a", 1, []], ["a", 2, []]],
        [["a" * 500, 1, []]],
        [["a", 1 << 64, []]],
    ],
)
def test_from_wire_rejects_malformed(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        dvv.from_wire(bad)


def test_from_wire_sorts_entries() -> None:
    s = dvv.from_wire([["b", 1, ["y"]], ["a", 2, ["x"]]])
    assert [e[0] for e in s.entries] == ["a", "b"]


def test_context_round_trip() -> None:
    ctx = (("n1", 3), ("n2", ms_stamp(1_700_000_000_000)))
    data = dvv.encode_context(ctx)
    assert isinstance(data, bytes)
    assert dvv.decode_context(data) == ctx
    assert dvv.decode_context(b"") == ()
    assert dvv.decode_context(dvv.encode_context(())) == ()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00",
        b"\x02\x90",
        b"\x01",
        b"\x01\xff",
        b"\x01\x92\xa1a",
        b"\x01" + msgpack.packb(["a"]),
        b"\x01" + msgpack.packb(["a", 0]),
        b"\x01" + msgpack.packb(["a", "1"]),
        b"\x01" + msgpack.packb([b"a", 1]),
        b"\x01" + msgpack.packb(["a", 1, "a", 2]),
        b"\x01" + msgpack.packb({"a": 1}),
        b"\x01" + msgpack.packb(["a", 1]) + b"\x00",
        b"\x01" + msgpack.packb([["a", 1]]),
        b"\x01" + b"\x91" * 5000,
        b"\x01" + b"\x00" * (dvv.MAX_CONTEXT_BYTES + 1),
    ],
)
def test_decode_context_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(InvalidRequest):
        dvv.decode_context(garbage)


def test_decode_context_rejects_too_many_entries_and_huge_counters() -> None:
    many = tuple((f"n{k:04d}", 1) for k in range(dvv.MAX_CONTEXT_ENTRIES + 1))
    with pytest.raises(InvalidRequest):
        dvv.decode_context(dvv.encode_context(many))
    assert dvv.decode_context(dvv.encode_context(many[:-1])) == many[:-1]
    with pytest.raises(InvalidRequest):
        dvv.decode_context(dvv.encode_context((("a", dvv.MAX_COUNTER + 1),)))


def test_forged_context_cannot_overflow_counters() -> None:
    s = dvv.new("v", "a")
    forged = (("a", dvv.MAX_COUNTER),)
    with pytest.raises(InvalidRequest):
        dvv.update(s, forged, "w", "a")
    with pytest.raises(InvalidRequest):
        dvv.update(s, None, "w", "a", stamp=dvv.MAX_COUNTER + 1)


def test_decode_context_rejects_non_bytes() -> None:
    with pytest.raises(InvalidRequest):
        dvv.decode_context("not bytes")  # type: ignore[arg-type]


def test_prune_keeps_entries_with_live_siblings_and_respects_young() -> None:
    cfg = dvv.PruneConfig(small=2, big=3, young=10.0, old=100.0)
    s = dvv.empty()
    for k in range(6):  # six coordinators, each superseding the last
        s = dvv.update(s, dvv.context(s), f"v{k}", f"n{k}", stamp=ms_stamp(1_000 * (k + 1)))
    assert len(s.entries) == 6
    # 'now' close to the newest writes: entries newer than 10 s stay.
    p = dvv.prune(s, ms_stamp(12_000), cfg)
    assert [e[0] for e in p.entries] == ["n2", "n3", "n4", "n5"]
    # Much later: down to `small`, the live sibling always kept.
    p = dvv.prune(s, ms_stamp(1_000_000), cfg)
    assert [e[0] for e in p.entries] == ["n4", "n5"]
    assert dvv.values(p) == ["v5"]


def test_prune_small_state_untouched() -> None:
    s = dvv.new("v", "a", stamp=5)
    assert dvv.prune(s, ms_stamp(10**9), dvv.PruneConfig()) is s


def test_prune_between_small_and_big_needs_old_age() -> None:
    cfg = dvv.PruneConfig(small=1, big=10, young=1.0, old=50.0)
    s = dvv.empty()
    for k in range(3):
        s = dvv.update(s, dvv.context(s), k, f"n{k}", stamp=ms_stamp(1_000 * (k + 1)))
    assert dvv.prune(s, ms_stamp(40_000), cfg) is s
    assert [e[0] for e in dvv.prune(s, ms_stamp(51_500), cfg).entries] == ["n1", "n2"]


def test_write_after_prune_is_not_lost_on_a_replica_that_kept_the_entry() -> None:
    cfg = dvv.PruneConfig(small=1, big=1, young=0.0, old=0.0)
    s = dvv.update(dvv.empty(), None, "a1", "a", stamp=ms_stamp(1_000))
    s = dvv.update(s, dvv.context(s), "b1", "b", stamp=ms_stamp(2_000))
    other = s  # a replica that never prunes
    pruned = dvv.prune(s, ms_stamp(3_000), cfg)
    assert [e[0] for e in pruned.entries] == ["b"]
    # "a" coordinates a blind write on its pruned state: new dot above the old.
    pruned = dvv.update(pruned, None, "a2", "a", stamp=ms_stamp(4_000))
    assert sorted(dvv.values(dvv.sync(pruned, other))) == ["a2", "b1"]
    assert sorted(dvv.values(dvv.sync(other, pruned))) == ["a2", "b1"]


@pytest.mark.parametrize(
    "kwargs",
    [{"small": 0}, {"small": 5, "big": 4}, {"young": -1.0}, {"young": 10.0, "old": 5.0}],
)
def test_prune_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        dvv.PruneConfig(**kwargs)  # type: ignore[arg-type]


def test_supersedes_needs_the_seen_live_dots_still_live_in_the_other() -> None:
    # a keeps dot (x, 5) live; b has seen (x, 5) and dropped it: the join
    # drops it too, so it is not a (counters alone would say it is)
    a = dvv.DVVSet((("x", 5, ("v5",)), ("y", 1, ())))
    b = dvv.DVVSet((("x", 5, ()), ("y", 1, ("w",))))
    assert not dvv.supersedes(a, b)
    assert dvv.sync(a, b) != a
    # b keeps it: then a supersedes b
    b_keeps = dvv.DVVSet((("x", 5, ("v5",)), ("y", 1, ())))
    assert dvv.supersedes(a, b_keeps)
    assert dvv.sync(a, b_keeps) == a
    # an actor a never heard of, or a counter a has not reached: no
    assert not dvv.supersedes(a, dvv.DVVSet((("z", 1, ("u",)),)))
    assert not dvv.supersedes(a, dvv.DVVSet((("x", 6, ()),)))
    assert dvv.supersedes(a, dvv.empty())


def test_counter_bounds_around_the_unboxed_range() -> None:
    # stamps and counters from 2**61 up to MAX_COUNTER are valid (checked
    # against the boxed MAX_COUNTER only there, in the compiled build)
    for stamp in (1 << 61, 1 << 62, dvv.MAX_COUNTER - 1):
        seen_only = DVVSet((("a", 1, ()),))
        for state in (dvv.empty(), seen_only, dvv.new("v", "b"), dvv.new("v", "z")):
            out = dvv.lww_put(state, "w", "a", stamp)
            assert dvv.values(out) == ["w"]
            assert dict(dvv.context(out))["a"] == stamp
        assert dvv.update(dvv.empty(), None, "w", "a", stamp=stamp).entries == (
            ("a", stamp, ("w",)),
        )
        wire = [["a", stamp, ["v"]]]
        assert dvv.from_wire(wire).entries == (("a", stamp, ("v",)),)
    with pytest.raises(InvalidRequest):
        dvv.lww_put(dvv.empty(), "w", "a", dvv.MAX_COUNTER + 1)
    with pytest.raises(InvalidRequest):
        dvv.from_wire([["a", dvv.MAX_COUNTER + 1, []]])
    assert dvv.from_wire([["a", dvv.MAX_COUNTER, []]]).entries == (("a", dvv.MAX_COUNTER, ()),)


def test_lww_put_exhausted_counter_raises_in_every_shape() -> None:
    top = dvv.MAX_COUNTER
    alone = DVVSet((("a", top, ("v",)),))
    with_others = DVVSet((("a", top, ()), ("b", 5, ("v",))))
    for state in (alone, with_others):
        with pytest.raises(InvalidRequest, match="exhausted"):
            dvv.lww_put(state, "w", "a", 7)
    # one below the top: the next dot is the top itself
    assert dvv.lww_put(DVVSet((("a", top - 1, ("v",)),)), "w", "a", 7).entries == (
        ("a", top, ("w",)),
    )


def test_lww_put_single_entry_shapes() -> None:
    # own entry with a live value: the dots stay contiguous (n + 1)
    assert dvv.lww_put(DVVSet((("a", 10, ("v",)),)), "w", "a", 50).entries == (("a", 11, ("w",)),)
    # own entry without live values: jump to the stamp (or n + 1 if larger)
    assert dvv.lww_put(DVVSet((("a", 10, ()),)), "w", "a", 50).entries == (("a", 50, ("w",)),)
    assert dvv.lww_put(DVVSet((("a", 10, ()),)), "w", "a", 5).entries == (("a", 11, ("w",)),)
    # another actor's entry: kept as seen, its value superseded
    assert dvv.lww_put(DVVSet((("b", 3, ("v",)),)), "w", "a", 50).entries == (
        ("a", 50, ("w",)),
        ("b", 3, ()),
    )
    assert dvv.lww_put(dvv.empty(), "w", "a", 0).entries == (("a", 1, ("w",)),)
