"""Property tests: the KV replica's one-pass write path equals the DVVSet path.

A coordinating replica issues a write's new version with
:func:`peer_ring.apps.kv._state.issue` (update or lww_put, prune and the
store's compaction on the ``Entries`` tuples in one pass) and a replica joins
a replicated version with :func:`~peer_ring.apps.kv._state.join`. Both must
store exactly what the general path built on :mod:`peer_ring.versions` and
its ``DVVSet`` wrappers stores -- :func:`reference_issue` and
:func:`reference_join` below are that path, as ``KVReplica._issue`` and
``KVReplica._join`` ran it -- for every reachable state: siblings from
concurrent coordinators, contexts (a read's, a stale one, a forged one, the
empty one), blind deletes, expiries, tombstones, LWW collapses, bounded
siblings and pruned clocks. Errors (a counter or stamp past MAX_COUNTER)
must be the same too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring import versions as vv
from peer_ring.apps.kv import _state as kst
from peer_ring.apps.kv.replica import _decode_state
from peer_ring.errors import InvalidRequest
from peer_ring.hlc import HLC, LOGICAL_BITS

ACTORS = ["n0", "n1", "n2", "n3"]
T0 = 1_700_000_000.0
#: prune configurations: the default (never prunes here) and one that prunes
#: old empty entries as soon as a state has more than two
PRUNES = [vv.PruneConfig(), vv.PruneConfig(small=1, big=2, young=0.0, old=0.5)]


class SimClock:
    def __init__(self) -> None:
        self.wall = T0

    def monotonic(self) -> float:
        return self.wall

    def time(self) -> float:
        return self.wall


def reference_compact(entries: kst.Entries, lww: bool, max_siblings: int | None) -> kst.Entries:
    """``KVReplica._compact`` before the one-pass path."""
    if len(entries) == 1 and len(entries[0][2]) == 1:
        return entries
    if lww:
        return vv.lww(vv.DVVSet(entries), kst.stamp_of).entries
    return kst.compact(entries, max_siblings)


def reference_issue(
    current: kst.Entries,
    ctx: vv.Context | None,
    value: bytes | None,
    exp: float | None,
    stamp: int,
    actor: str,
    lww: bool,
    max_siblings: int | None,
    prune: vv.PruneConfig,
) -> kst.Entries:
    """``KVReplica._issue``'s version before the one-pass path."""
    item: kst.Item = (value, exp, stamp)
    if lww and ctx is None:
        new = vv.lww_put(vv.DVVSet(current), item, actor, stamp)
        return vv.prune(new, stamp, prune).entries
    new = vv.update(vv.DVVSet(current), ctx, item, actor, stamp=stamp)
    new = vv.prune(new, stamp, prune)
    return reference_compact(new.entries, lww, max_siblings)


def reference_join(
    a: kst.Entries, b: kst.Entries, lww: bool, max_siblings: int | None
) -> kst.Entries:
    """``KVReplica._join`` before the one-pass path."""
    sa, sb = vv.DVVSet(a), vv.DVVSet(b)
    if vv.supersedes(sb, sa):
        return reference_compact(b, lww, max_siblings)
    return reference_compact(vv.sync(sa, sb).entries, lww, max_siblings)


def outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except InvalidRequest as exc:
        return ("error", str(exc))


def as_wire(entries: kst.Entries) -> list[Any]:
    return [[a, n, [list(item) for item in vals]] for a, n, vals in entries]


# one step of the simulation: (kind, replica, other replica, flag, value kind)
STEP = st.tuples(
    st.integers(0, 4), st.integers(0, 3), st.integers(0, 3), st.booleans(), st.integers(0, 3)
)


class Sim:
    """Four replicas of one key written through the one-pass path itself."""

    def __init__(self, lww: bool, max_siblings: int | None, prune: vv.PruneConfig) -> None:
        self.clock = SimClock()
        self.hlcs = [HLC(self.clock) for _ in ACTORS]
        self.states: list[kst.Entries] = [kst.EMPTY for _ in ACTORS]
        self.lww, self.max_siblings, self.prune = lww, max_siblings, prune

    def item(self, kind: int) -> tuple[bytes | None, float | None]:
        if kind == 0:
            return None, None  # tombstone
        if kind == 1:
            return b"v", self.clock.wall + 1.0  # expiring
        return b"value", None

    def write(self, r: int, ctx: vv.Context | None, kind: int) -> None:
        value, exp = self.item(kind)
        current = self.states[r]
        if value is None and ctx is None:  # a blind delete, as the replica does
            ctx = kst.context(current)
            assert ctx == vv.context(vv.DVVSet(current))
        stamp = self.hlcs[r].after_int(kst.max_stamp(current))
        args = (current, ctx, value, exp, stamp, ACTORS[r], self.lww, self.max_siblings,
                self.prune)  # fmt: skip
        fast = outcome(kst.issue, *args)
        assert fast == outcome(reference_issue, *args)
        if fast[0] == "ok":
            self.states[r] = fast[1]

    def sync(self, src: int, dst: int) -> None:
        a, b = self.states[dst], self.states[src]
        if not a:  # a replica's first copy of the key: stored as it comes, settled
            self.states[dst] = kst.settle(b, self.lww, self.max_siblings)
            return
        fast = kst.join(a, b, self.lww, self.max_siblings)
        assert fast == reference_join(a, b, self.lww, self.max_siblings)
        assert kst.supersedes(b, a) == vv.supersedes(vv.DVVSet(b), vv.DVVSet(a))
        # as the replica receives it: decoded from the wire
        assert _decode_state(as_wire(b)) == b
        self.states[dst] = fast

    def run(self, steps: list[tuple[int, int, int, bool, int]]) -> None:
        for kind, r, r2, flag, value in steps:
            self.clock.wall += 0.25
            if kind == 0:  # a blind write (or delete)
                self.write(r, None if flag else (), value)
            elif kind == 1:  # a write with the context of a read of replica r2
                self.write(r, kst.context(self.states[r2]), value)
            elif kind == 2:  # a stale context: some entries of it, counters lowered
                ctx = kst.context(self.states[r2])
                self.write(r, tuple((a, max(1, n - 1)) for a, n in ctx[::2]), value)
            else:
                self.sync(r2, r)


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(STEP, max_size=40),
    lww=st.booleans(),
    max_siblings=st.sampled_from([None, 1, 2, 16]),
    prune=st.sampled_from(PRUNES),
)
def test_issue_and_join_equal_the_dvvset_path(
    steps: list[tuple[int, int, int, bool, int]],
    lww: bool,
    max_siblings: int | None,
    prune: vv.PruneConfig,
) -> None:
    sim = Sim(lww, max_siblings, prune)
    sim.run(steps)
    for state in sim.states:
        assert kst.unpack(kst.pack(state)) == state
        assert kst.settle(state, lww, max_siblings) == reference_compact(state, lww, max_siblings)
        assert kst.max_stamp(state) == max((i[2] for _, _, v in state for i in v), default=0)


CTX = st.lists(
    st.tuples(st.sampled_from([*ACTORS, "n9"]), st.integers(1, vv.MAX_COUNTER)), max_size=4
).map(lambda pairs: tuple(sorted(dict(pairs).items())))


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(STEP, max_size=20),
    ctx=st.one_of(st.none(), CTX),
    writer=st.integers(0, 3),
    lww=st.booleans(),
    value=st.sampled_from([None, b"x"]),
    jump=st.sampled_from([0, 1 << 40, (1 << 63) - 2, (1 << 63) - 1, 1 << 63]),
    max_siblings=st.sampled_from([None, 1, 16]),
)
def test_issue_with_forged_contexts_and_extreme_counters(
    steps: list[tuple[int, int, int, bool, int]],
    ctx: vv.Context | None,
    writer: int,
    lww: bool,
    value: bytes | None,
    jump: int,
    max_siblings: int | None,
) -> None:
    # a client's context may claim anything up to MAX_COUNTER; a stamp or a
    # counter at the range's end must fail the same way on both paths
    sim = Sim(lww, max_siblings, PRUNES[0])
    sim.run(steps)
    current = sim.states[writer]
    stamp = max(kst.max_stamp(current) + 1, jump)
    if ctx is not None and jump:  # push the writer's own counter to the edge
        ctx = tuple((a, jump if a == ACTORS[writer] and jump <= vv.MAX_COUNTER else n)
                    for a, n in ctx)  # fmt: skip
    args = (current, ctx, value, None, stamp, ACTORS[writer], lww, max_siblings, PRUNES[0])
    assert outcome(kst.issue, *args) == outcome(reference_issue, *args)
    if ctx:
        merged = outcome(kst.issue, *args)
        if merged[0] == "ok":  # and a write over that state, at the counter's edge
            state = merged[1]
            top = kst.max_stamp(state) + 1
            more = (state, None, b"y", None, top, ACTORS[writer], lww, max_siblings, PRUNES[0])
            assert outcome(kst.issue, *more) == outcome(reference_issue, *more)


def test_issue_shares_one_int_for_a_first_write() -> None:
    stamp = (int(T0 * 1000) << LOGICAL_BITS) | 7
    for lww in (False, True):
        state = kst.issue(kst.EMPTY, None, b"v", None, stamp, "n0", lww, 16, PRUNES[0])
        assert state == (("n0", stamp, ((b"v", None, stamp),)),)
        assert kst.pack(state) == ("n0", b"v", None, stamp)


ITEM = st.tuples(
    st.sampled_from([None, b"a", b"bc"]), st.sampled_from([None, T0 + 5.0]), st.integers(1, 50)
)


@settings(max_examples=400, deadline=None)
@given(
    actor=st.sampled_from(ACTORS[:2]),
    n=st.one_of(st.integers(1, 60), st.sampled_from([(1 << 63) - 2, (1 << 63) - 1])),
    items=st.lists(ITEM, max_size=4),
    writer=st.sampled_from(ACTORS[:2]),
    ctx=st.one_of(st.none(), st.just(()), CTX),
    value=st.sampled_from([None, b"x"]),
    lww=st.booleans(),
    max_siblings=st.sampled_from([None, 1, 2]),
)
def test_issue_over_one_entry_states(
    actor: str,
    n: int,
    items: list[tuple[bytes | None, float | None, int]],
    writer: str,
    ctx: vv.Context | None,
    value: bytes | None,
    lww: bool,
    max_siblings: int | None,
) -> None:
    # the fast paths' states, built directly (also those a simulation rarely
    # reaches: an entry with no value left, a counter at the range's end):
    # stamps of the actor's live values decrease with the dots, as its HLC issues them
    vals = tuple(sorted(items, key=lambda i: -i[2]))[: min(n, 4)]
    current: kst.Entries = ((actor, n, vals),)
    stamp = max(kst.max_stamp(current) + 1, 60)
    args = (current, ctx, value, None, stamp, writer, lww, max_siblings, PRUNES[0])
    assert outcome(kst.issue, *args) == outcome(reference_issue, *args)
    incoming = outcome(reference_issue, *args)
    if incoming[0] == "ok":
        b = incoming[1]
        for x, y in ((current, b), (b, current)):
            assert kst.join(x, y, lww, max_siblings) == reference_join(x, y, lww, max_siblings)


FLAT = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(ACTORS[:2]),
        st.sampled_from([None, b"a", b"bc"]),
        st.sampled_from([None, T0 + 5.0]),
        st.integers(1, 1 << 58),
        st.one_of(st.none(), st.integers(1, 1 << 58), st.sampled_from([1 << 61, (1 << 63) - 1])),
    ).map(lambda t: t[:4] if t[4] is None else t),
)


@settings(max_examples=600, deadline=None)
@given(
    stored=FLAT,
    writer=st.sampled_from(ACTORS[:2]),
    value=st.sampled_from([b"x", b"", b"yz"]),
    exp=st.sampled_from([None, T0 + 9.0]),
    bump=st.one_of(st.integers(1, 3), st.sampled_from([1 << 20, 1 << 63])),
    next_counter=st.booleans(),
)
def test_issue_flat_equals_issue_of_the_unpacked_state(
    stored: Any,
    writer: str,
    value: bytes,
    exp: float | None,
    bump: int,
    next_counter: bool,
) -> None:
    # what KVStore._solo_write stores directly for a plain LWW write over no
    # state or a flat one: the packed state issue() stores, for every state
    # flat_top accepts; every other state goes the general way
    top = kst.flat_top(stored, writer)
    if stored is None:
        assert top == 0
    elif stored[0] != writer or (stored[3] if len(stored) == 4 else stored[4]) >= 1 << 61:
        assert top == -1
        return
    else:
        assert top == stored[3] == kst.max_stamp(kst.unpack(stored))
    stamp = top + bump
    if next_counter and stored is not None:  # the stamp that equals the next counter
        n = stored[3] if len(stored) == 4 else stored[4]
        if n + 1 > top:
            stamp = n + 1
    current = kst.EMPTY if stored is None else kst.unpack(stored)
    for lww_args in ((True, None, PRUNES[0]), (True, 16, PRUNES[1])):
        lww, max_siblings, prune = lww_args
        args = (current, None, value, exp, stamp, writer, lww, max_siblings, prune)
        want = outcome(kst.issue, *args)
        got = outcome(kst.issue_flat, stored, value, exp, stamp, writer)
        if want[0] == "ok":
            want = ("ok", kst.pack(want[1]))
        assert got == want
        if got[0] == "ok":
            assert kst.unpack(got[1]) == outcome(reference_issue, *args)[1]


def test_issue_flat_of_a_new_key_with_stamp_zero() -> None:
    # the counter of a first dot is at least 1 (issue's rule), the state stays exact
    want = kst.pack(kst.issue(kst.EMPTY, None, b"v", None, 0, "n0", True, None, PRUNES[0]))
    assert kst.issue_flat(None, b"v", None, 0, "n0") == want == ("n0", b"v", None, 0, 1)


#: Flat stored states of every form: one value (the head actor's) and up to
#: three other actors' counters, small or near the compiled build's range.
_COUNTER = st.one_of(st.integers(1, 40), st.sampled_from([1 << 58, 1 << 61, (1 << 63) - 1]))
FLAT_ANY = st.tuples(
    st.sampled_from(ACTORS),
    st.sampled_from([b"v", None]),
    st.sampled_from([None, T0 + 5.0]),
    st.integers(1, 50),
    _COUNTER,
    st.dictionaries(st.sampled_from(ACTORS), _COUNTER, max_size=3),
).map(
    lambda t: kst.pack(
        tuple(
            sorted(
                [(t[0], t[4], ((t[1], t[2], t[3]),))]
                + [(a, c, ()) for a, c in t[5].items() if a != t[0]]
            )
        )
    )
)


@settings(max_examples=800, deadline=None)
@given(
    stored=FLAT_ANY,
    writer=st.sampled_from(ACTORS),
    value=st.sampled_from([b"x", b""]),
    exp=st.sampled_from([None, T0 + 9.0]),
    bump=st.one_of(st.integers(1, 45), st.sampled_from([1 << 20, 1 << 62, 1 << 63])),
    prune=st.sampled_from(PRUNES),
)
def test_issue_packed_equals_issue_of_the_unpacked_state(
    stored: Any, writer: str, value: bytes, exp: float | None, bump: int, prune: vv.PruneConfig
) -> None:
    # what KVReplica._issue stores and replicates directly for a plain LWW
    # put over a flat state (any of pack's forms, the vector form included):
    # the packed state issue() gives, or None and the general way
    assert type(stored[0]) is str
    current = kst.unpack(stored)
    stamp = stored[3] + bump  # the HLC moves past the state's one stamp
    assert stored[3] == kst.max_stamp(current)
    args = (current, None, value, exp, stamp, writer, True, None, prune)
    want = outcome(kst.issue, *args)
    got = outcome(kst.issue_packed, stored, value, exp, stamp, writer, prune.small)
    if got == ("ok", None):  # declined: the general path prunes, or a counter is large
        actors = {e[0]: e[1] for e in current}
        assert (
            len(actors | {writer: 0}) > prune.small
            or actors.get(writer, 0) >= 1 << 61
            or (stored[3] if len(stored) == 4 else stored[4]) >= 1 << 61
        )
        return
    if want[0] == "ok":
        want = ("ok", kst.pack(want[1]))
    assert got == want
    if got[0] == "ok":
        assert kst.unpack(got[1]) == outcome(reference_issue, *args)[1]


def test_issue_packed_writes_over_another_coordinators_vector_state() -> None:
    # the common LWW put of a key several coordinators wrote: the writer's
    # counter moves on (jumping to the stamp from a dot-only entry), the
    # previous value's actor keeps its counter, the form stays flat
    stored = ("n1", b"old", None, 90, 7, "n0", 3, "n2", 4)
    assert kst.issue_packed(stored, b"new", None, 100, "n2", 10) == (
        "n2", b"new", None, 100, 100, "n0", 3, "n1", 7,
    )  # fmt: skip
    assert kst.issue_packed(stored, b"new", None, 5, "n2", 10) == (
        "n2", b"new", None, 5, 5, "n0", 3, "n1", 7,
    )  # fmt: skip
    assert kst.issue_packed(stored, b"new", 9.0, 100, "n1", 10) == (
        "n1", b"new", 9.0, 100, 8, "n0", 3, "n2", 4,
    )  # fmt: skip
    assert kst.issue_packed(("n1", b"v", None, 4), b"w", None, 9, "n0", 10) == (
        "n0", b"w", None, 9, 9, "n1", 4,
    )  # fmt: skip
    assert kst.issue_packed(stored, b"new", None, 100, "n3", 3) is None  # 4 entries: pruned
