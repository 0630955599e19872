"""Property tests for hybrid logical clocks: monotonicity, causality, bounds, packing."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from peer_ring.hlc import (
    HLC,
    MAX_LOGICAL,
    MAX_WALL_MS,
    ClockSkewError,
    SkewPolicy,
    Timestamp,
    from_int,
    to_int,
)

BASE = 1_700_000_000.0
MAX_OFFSET = 60.0


class JumpClock:
    """Wall clock that the test moves arbitrarily, including backwards."""

    def __init__(self) -> None:
        self.wall = BASE
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - unused
        raise AssertionError("not used")


# (kind, node, wall jump in ms, remote offset in ms, remote logical)
op = st.tuples(
    st.sampled_from(["now", "send", "jump"]),
    st.integers(0, 2),
    st.integers(-120_000, 120_000),
    st.integers(-100_000, 100_000),
    st.integers(0, MAX_LOGICAL),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op, max_size=80), policy=st.sampled_from(list(SkewPolicy)))
def test_monotonic_causal_and_not_behind_physical_time(
    ops: list[tuple[str, int, int, int, int]], policy: SkewPolicy
) -> None:
    clocks = [JumpClock() for _ in range(3)]
    hlcs = [HLC(c, max_offset=MAX_OFFSET, policy=policy) for c in clocks]
    issued: list[list[Timestamp]] = [[], [], []]
    for kind, node, jump, offset, logical in ops:
        clock, hlc = clocks[node], hlcs[node]
        if kind == "jump":
            clock.wall += jump / 1000.0
            clock.mono += 1.0
            continue
        if kind == "now":
            ts = hlc.now()
        else:
            # A message from a peer: either a real send from another node, or
            # a forged timestamp around our physical time.
            peer = (node + 1) % 3
            if jump % 2:
                remote = hlcs[peer].now()
                issued[peer].append(remote)
            else:
                remote = Timestamp(max(0, int(clock.wall * 1000) + offset), logical)
            before = hlc.last()
            try:
                ts = hlc.update(remote)
            except ClockSkewError:
                assert policy is SkewPolicy.REJECT
                assert remote.wall_ms - int(clock.wall * 1000) > MAX_OFFSET * 1000
                assert hlc.last() == before
                continue
            assert ts > remote
        assert ts.wall_ms >= int(clock.wall * 1000)
        if issued[node]:
            assert ts > issued[node][-1]
        issued[node].append(ts)
        assert 0 <= ts.logical <= MAX_LOGICAL
    for seq in issued:
        assert all(a < b for a, b in itertools.pairwise(seq))


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=60),
)
def test_lead_over_physical_time_is_bounded_by_max_offset(ops: list[tuple[bool, int]]) -> None:
    # The local wall clock only moves forward here; accepted remote
    # timestamps drag `l` at most max_offset (+ carry) ahead of it.
    clock = JumpClock()
    hlc = HLC(clock, max_offset=MAX_OFFSET, policy=SkewPolicy.REJECT)
    for is_remote, step in ops:
        clock.wall += step / 10.0
        pt = int(clock.wall * 1000)
        if is_remote:
            try:
                ts = hlc.update(Timestamp(pt + step * 20_000, MAX_LOGICAL))
            except ClockSkewError:
                continue
        else:
            ts = hlc.now()
        assert ts.wall_ms - pt <= MAX_OFFSET * 1000 + 1


timestamps = st.builds(Timestamp, st.integers(0, MAX_WALL_MS), st.integers(0, MAX_LOGICAL))


@given(a=timestamps, b=timestamps)
def test_int_packing_round_trips_and_preserves_order(a: Timestamp, b: Timestamp) -> None:
    assert from_int(to_int(a)) == a
    assert 0 <= to_int(a) < 2**64
    assert (a < b) == (to_int(a) < to_int(b))
    assert (a == b) == (to_int(a) == to_int(b))


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(-120_000, 120_000), st.integers(0, MAX_LOGICAL)),
        max_size=60,
    )
)
def test_packed_hot_path_variants_match_the_timestamp_api(
    ops: list[tuple[bool, int, int]],
) -> None:
    # Two clocks on one wall clock see the same operations, one through the
    # Timestamp API and one through the packed variants the KV store uses.
    clock = JumpClock()
    a = HLC(clock, max_offset=MAX_OFFSET, policy=SkewPolicy.ACCEPT)
    b = HLC(clock, max_offset=MAX_OFFSET, policy=SkewPolicy.ACCEPT)
    for is_update, offset, logical in ops:
        if is_update:
            remote = Timestamp(max(0, a.last().wall_ms + offset), logical)
            assert b.update_int(to_int(remote)) == to_int(a.update(remote))
        else:
            clock.wall += offset / 10_000.0
            assert b.now_int() == to_int(a.now())
        assert b.last_int() == to_int(a.last()) == to_int(b.last())
