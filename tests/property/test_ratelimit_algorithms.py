"""Property tests of the rate-limit algorithms and of the replicated-state join.

Each algorithm is run against a simple reference model written here from its
definition (exact fractions, or a log of admitted hits), and its bounds are
checked on that log. Times are small integers of nanoseconds so that
hypothesis explores many window and refill boundaries.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from fractions import Fraction

import msgpack
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from peer_ring.apps.ratelimit import _merge as rm
from peer_ring.apps.ratelimit._algorithms import (
    State,
    available,
    capacity_of,
    decide,
    decode_state,
    force,
    fresh,
)
from peer_ring.apps.ratelimit._types import (
    Algorithm,
    RateLimitRequest,
    RateLimitResponse,
    Status,
    check_request,
)

T0 = 1_000_000
BUCKETS = (Algorithm.TOKEN_BUCKET, Algorithm.LEAKY_BUCKET, Algorithm.GCRA)
ALL = tuple(Algorithm)


@st.composite
def configs(draw: st.DrawFn, algs: tuple[Algorithm, ...] = ALL) -> RateLimitRequest:
    alg = draw(st.sampled_from(algs))
    limit = draw(st.integers(1, 8))
    duration = draw(st.integers(limit, 400))  # GCRA needs duration // limit >= 1
    burst = draw(st.integers(0, 10)) if alg in BUCKETS else 0
    return RateLimitRequest("n", "k", limit, duration, algorithm=alg, burst=burst, lease="a")


def steps(max_hits: int = 10, refunds: bool = True) -> st.SearchStrategy[list[tuple[int, int]]]:
    low = -3 if refunds else 0
    return st.lists(st.tuples(st.integers(0, 300), st.integers(low, max_hits)), max_size=40)


def run(
    cfg: RateLimitRequest, ops: list[tuple[int, int]], leases: list[str] | None = None
) -> list[tuple[int, int, RateLimitResponse, State | None]]:
    """Apply ``ops`` (time step, hits); return (t, hits, response, state after)."""
    state: State | None = None
    t = T0
    out = []
    for i, (dt, h) in enumerate(ops):
        t += dt
        lease = leases[i % len(leases)] if leases else cfg.lease
        state, resp = decide(state, replace(cfg, hits=h, lease=lease), t)
        out.append((t, h, resp, state))
    return out


# --- reference models -------------------------------------------------------


def reference_bucket_decisions(cfg: RateLimitRequest, ops: list[tuple[int, int]]) -> list[bool]:
    cap = Fraction(cfg.capacity)
    rate = Fraction(cfg.limit, cfg.duration_ns)
    tokens, last, t, out = cap, T0, T0, []
    for dt, h in ops:
        t += dt
        tokens = min(cap, tokens + (t - last) * rate)
        last = t
        ok = True
        if h > 0:
            ok = h <= tokens
            if ok:
                tokens -= h
        elif h < 0:
            tokens = min(cap, tokens - h)
        out.append(ok)
    return out


def reference_gcra(cfg: RateLimitRequest, ops: list[tuple[int, int]]) -> list[tuple[bool, int]]:
    """GCRA from its definition (virtual scheduling), as redis-cell states it.

    Returns (passed, remaining) per step.
    """
    interval = cfg.duration_ns // cfg.limit
    tolerance = interval * cfg.capacity
    tat, t, out = T0, T0, []
    for dt, h in ops:
        t += dt
        base = max(tat, t)
        ok = True
        if h > 0:
            if base + h * interval - tolerance > t:
                ok = False
            else:
                base += h * interval
        elif h < 0:
            base = max(t, base + h * interval)
        tat = base
        left = (tolerance - (max(tat, t) - t)) // interval
        out.append((ok, max(0, left)))
    return out


def window_of(t: int, d: int) -> int:
    return t - t % d


# --- algorithms against their reference models ------------------------------


@settings(max_examples=300)
@given(configs((Algorithm.TOKEN_BUCKET, Algorithm.LEAKY_BUCKET)), steps())
def test_buckets_decide_as_the_exact_fraction_model(cfg: RateLimitRequest, ops) -> None:
    got = [resp.status is Status.UNDER_LIMIT for _, _, resp, _ in run(cfg, ops)]
    assert got == reference_bucket_decisions(cfg, ops)


@settings(max_examples=300)
@given(configs((Algorithm.GCRA,)), steps())
def test_gcra_matches_the_virtual_scheduling_reference(cfg: RateLimitRequest, ops) -> None:
    got = [(r.status is Status.UNDER_LIMIT, r.remaining) for _, _, r, _ in run(cfg, ops)]
    assert got == reference_gcra(cfg, ops)


@settings(max_examples=300)
@given(configs(BUCKETS), steps(refunds=False))
def test_buckets_never_admit_more_than_burst_plus_rate_in_any_interval(
    cfg: RateLimitRequest, ops
) -> None:
    admitted = [(t, h) for t, h, r, _ in run(cfg, ops) if h > 0 and r.allowed]
    if cfg.algorithm is Algorithm.GCRA:  # rate 1/T with T = D // L, a hair above L/D
        per = Fraction(1, cfg.duration_ns // cfg.limit)
    else:
        per = Fraction(cfg.limit, cfg.duration_ns)
    for i, j in itertools.combinations_with_replacement(range(len(admitted)), 2):
        t1, t2 = admitted[i][0], admitted[j][0]
        total = sum(h for t, h in admitted if t1 <= t <= t2)
        assert total <= cfg.capacity + (t2 - t1) * per


@settings(max_examples=300)
@given(configs((Algorithm.FIXED_WINDOW,)), steps(refunds=False))
def test_fixed_window_decides_from_the_log_and_never_exceeds_limit(
    cfg: RateLimitRequest, ops
) -> None:
    log: list[tuple[int, int]] = []
    for t, h, resp, _ in run(cfg, ops):
        w = window_of(t, cfg.duration_ns)
        count = sum(x for s, x in log if window_of(s, cfg.duration_ns) == w)
        assert resp.allowed == (h == 0 or count + h <= cfg.limit)
        if h > 0 and resp.allowed:
            log.append((t, h))
        assert resp.remaining == cfg.limit - count - (h if h > 0 and resp.allowed else 0)
    for w, group in itertools.groupby(log, key=lambda e: window_of(e[0], cfg.duration_ns)):
        assert sum(h for _, h in group) <= cfg.limit, w


@settings(max_examples=300)
@given(configs((Algorithm.SLIDING_WINDOW,)), steps(refunds=False))
def test_sliding_window_decides_by_the_weighted_two_window_estimate_of_the_log(
    cfg: RateLimitRequest, ops
) -> None:
    d, lim = cfg.duration_ns, cfg.limit
    log: list[tuple[int, int]] = []
    for t, h, resp, _ in run(cfg, ops):
        w = window_of(t, d)
        cur = sum(x for s, x in log if window_of(s, d) == w)
        prev = sum(x for s, x in log if window_of(s, d) == w - d)
        weighted = prev * (d - (t - w)) + cur * d  # the estimate x D, exact
        assert resp.allowed == (h == 0 or weighted + h * d <= lim * d)
        if h > 0 and resp.allowed:
            log.append((t, h))
            assert weighted + h * d <= lim * d
    for _, group in itertools.groupby(log, key=lambda e: window_of(e[0], d)):
        assert sum(h for _, h in group) <= lim


@settings(max_examples=300)
@given(
    configs((Algorithm.CONCURRENCY,)),
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(-3, 4), st.sampled_from("abcd")), max_size=40
    ),
)
def test_concurrency_matches_a_lease_table_and_never_holds_more_than_limit(
    cfg: RateLimitRequest, ops
) -> None:
    table: dict[str, tuple[int, int]] = {}  # lease -> (held, expires)
    state: State | None = None
    t = T0
    for dt, h, lease in ops:
        t += dt
        table = {k: v for k, v in table.items() if v[1] > t}
        held = sum(v[0] for v in table.values())
        state, resp = decide(state, replace(cfg, hits=h, lease=lease), t)
        if h > 0:
            assert resp.allowed == (held + h <= cfg.limit)
            if resp.allowed:
                old = table.get(lease, (0, 0))
                table[lease] = (old[0] + h, max(old[1], t + cfg.duration_ns))
        elif h < 0 and lease in table:
            left = table[lease][0] + h
            if left > 0:
                table[lease] = (left, table[lease][1])
            else:
                del table[lease]
        held = sum(v[0] for v in table.values())
        assert held <= cfg.limit
        assert resp.remaining == cfg.limit - held


# --- semantics shared by every algorithm ------------------------------------


@settings(max_examples=300)
@given(configs(), steps())
def test_refunds_never_push_remaining_above_the_limit(cfg: RateLimitRequest, ops) -> None:
    for _, _, resp, state in run(cfg, ops):
        assert 0 <= resp.remaining <= cfg.capacity
        assert state is None or available(state, T0 + 10**9) <= capacity_of(state)


@settings(max_examples=300)
@given(configs(), steps(), st.integers(0, 300))
def test_peek_never_changes_state_and_answers_what_a_hit_would_see(
    cfg: RateLimitRequest, ops, dt: int
) -> None:
    hist = run(cfg, ops)
    state = hist[-1][3] if hist else None
    t = (hist[-1][0] if hist else T0) + dt
    before = msgpack.packb(state)
    same, resp = decide(state, replace(cfg, hits=0), t)
    assert same is state
    assert msgpack.packb(state) == before
    # the remaining a peek reports is what one more hit would be measured against
    _, one = decide(state, replace(cfg, hits=1), t)
    if resp.remaining >= 1:
        assert one.allowed
        assert one.remaining == resp.remaining - 1


@settings(max_examples=300)
@given(configs(), steps(refunds=False), st.integers(0, 300), st.integers(1, 12))
def test_retry_after_is_exactly_when_the_same_request_would_pass(
    cfg: RateLimitRequest, ops, dt: int, h: int
) -> None:
    hist = run(cfg, ops, leases=["a", "b", "c"])
    state = hist[-1][3] if hist else None
    t = (hist[-1][0] if hist else T0) + dt
    req = replace(cfg, hits=h, lease="z")
    _, resp = decide(state, req, t)
    if resp.allowed:
        assert resp.retry_after_ns == 0
        return
    if h > cfg.capacity:
        assert resp.retry_after_ns == -1
        return
    wait = resp.retry_after_ns
    assert wait > 0
    assert decide(state, req, t + wait)[1].allowed
    assert not decide(state, req, t + wait - 1)[1].allowed


@settings(max_examples=200)
@given(configs(), steps(), st.integers(1, 300))
def test_a_clock_step_back_never_admits_more_than_staying_put(
    cfg: RateLimitRequest, ops, back: int
) -> None:
    hist = run(cfg, ops)
    assume(hist)
    t, state = hist[-1][0], hist[-1][3]
    req = replace(cfg, hits=1)
    _, at_t = decide(state, req, t)
    _, earlier = decide(state, req, t - back)
    assert earlier.remaining <= at_t.remaining
    assert not earlier.allowed or at_t.allowed


@settings(max_examples=200)
@given(configs(), steps())
def test_states_survive_msgpack_and_decode_to_the_same_state(cfg: RateLimitRequest, ops) -> None:
    for _, _, _, state in run(cfg, ops, leases=["a", "b"]):
        if state is None:  # only peeks so far: nothing was ever written
            continue
        assert decode_state(msgpack.unpackb(msgpack.packb(state))) == state


@settings(max_examples=200)
@given(configs(), configs(), steps(refunds=False), st.integers(0, 300))
def test_a_new_limit_for_a_key_never_forgets_hits(
    old: RateLimitRequest, new: RateLimitRequest, ops, dt: int
) -> None:
    hist = run(old, ops)
    assume(hist and hist[-1][3] is not None)
    state = hist[-1][3]
    assert state is not None
    t = hist[-1][0] + dt
    used = capacity_of(state) - available(state, t)
    _, resp = decide(state, replace(new, hits=0), t)
    assert resp.remaining <= max(0, new.capacity - used)


# --- the replicated state and its join -------------------------------------


@dataclass
class World:
    """Actors deciding from their own replicas, copies exchanged at random."""

    cfg: RateLimitRequest
    replicas: dict[str, rm.Replica] = field(default_factory=dict)
    log: list[tuple[int, int]] = field(default_factory=list)  # every admitted hit
    seen: list[rm.Replica] = field(default_factory=list)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("hit"), st.sampled_from("ABC"), st.integers(0, 200), st.integers(0, 4)),
        st.tuples(st.just("copy"), st.sampled_from("ABC"), st.sampled_from("ABC"), st.just(0)),
    ),
    max_size=30,
)


def play(cfg: RateLimitRequest, ops) -> tuple[World, int]:
    world = World(cfg)
    t = T0
    n = 0
    for kind, a, x, h in ops:
        if kind == "hit":
            t += x
            n += 1
            rep = world.replicas.get(a, ())
            state = rm.effective(rep, t)
            req = check_request(replace(cfg, hits=h, lease=f"{a}{n}"))
            new, resp = decide(state, req, t)
            if new is not state and new is not None:
                admitted = h if h > 0 and resp.allowed else 0
                world.replicas[a] = rm.record(rep, a, new, admitted)
                if admitted:
                    world.log.append((t, h))
        else:
            world.replicas[x] = rm.merge(world.replicas.get(x, ()), world.replicas.get(a, ()))
        world.seen.extend(world.replicas.values())
    return world, t


def reference_available(cfg: RateLimitRequest, log: list[tuple[int, int]], now: int) -> int:
    """Every admitted hit counted at the instant it passed."""
    if cfg.algorithm is Algorithm.CONCURRENCY:
        # each hold is its own lease, live until t + D (force would merge them
        # into one lease expiring with the latest: stricter than the truth)
        return cfg.limit - sum(h for t, h in log if t + cfg.duration_ns > now)
    state = fresh(cfg, T0)
    for t, h in log:
        state = force(state, h, t)
    return available(state, now)


_FW1 = RateLimitRequest("n", "k", limit=1, duration_ns=1, algorithm=Algorithm.FIXED_WINDOW)
_CC2 = RateLimitRequest(
    "n", "k", limit=2, duration_ns=8, algorithm=Algorithm.CONCURRENCY, lease="a"
)


@settings(max_examples=300, deadline=None)
@given(configs(), OPS, st.integers(0, 300))
# found by hypothesis: C's slot, having seen A, was dropped for B's, which had
# seen only C's own hits -- and A's hit was forgotten (fixed in _merge._dominated)
@example(
    _FW1,
    [("hit", "A", 0, 1), ("hit", "C", 0, 1), ("copy", "C", "B", 0), ("hit", "B", 0, 1),
     ("copy", "A", "C", 0), ("hit", "C", 0, 1)],
    0,
)  # fmt: skip
# found by hypothesis: two holds, the first expired at the read (reference fixed)
@example(_CC2, [("hit", "A", 0, 1), ("hit", "A", 1, 1)], 7)
def test_the_join_of_diverged_copies_never_undercounts_a_hit(
    cfg: RateLimitRequest, ops, dt: int
) -> None:
    world, t = play(cfg, ops)
    now = t + dt
    merged: rm.Replica = ()
    for rep in world.replicas.values():
        merged = rm.merge(merged, rep)
    assert sum(rm.knowledge(merged).values()) == sum(h for _, h in world.log)
    state = rm.effective(merged, now)
    if state is None:
        assert not world.log
        return
    assert available(state, now) <= reference_available(cfg, world.log, now)


@settings(max_examples=200, deadline=None)
@given(configs(), OPS, st.data())
def test_the_join_is_commutative_associative_idempotent_and_never_loses_counts(
    cfg: RateLimitRequest, ops, data: st.DataObject
) -> None:
    world, _ = play(cfg, ops)
    pool = [*world.seen, ()]
    a, b, c = (data.draw(st.sampled_from(pool)) for _ in range(3))
    assert rm.merge(a, b) == rm.merge(b, a)
    assert rm.merge(rm.merge(a, b), c) == rm.merge(a, rm.merge(b, c))
    assert rm.merge(a, a) == a
    joined = rm.knowledge(rm.merge(a, b))
    for side in (a, b):
        for actor, n in rm.knowledge(side).items():
            assert joined[actor] >= n
    assert rm.decode_replica(msgpack.unpackb(msgpack.packb(a))) == a


@settings(max_examples=200, deadline=None)
@given(configs(), OPS)
def test_a_write_after_a_full_join_leaves_one_slot(cfg: RateLimitRequest, ops) -> None:
    world, t = play(cfg, ops)
    merged: rm.Replica = ()
    for rep in world.replicas.values():
        merged = rm.merge(merged, rep)
    state = rm.effective(merged, t)
    assume(state is not None)
    assert state is not None
    new, _ = decide(state, check_request(replace(cfg, hits=1, lease="Z")), t)
    assert new is not None
    after = rm.record(merged, "Z", new, 1)
    assert [actor for actor, _ in after] == ["Z"]
