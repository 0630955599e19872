"""Edge cases of the rate-limit algorithms: bad input, extremes, clocks, flags."""

from __future__ import annotations

from dataclasses import replace

import pytest

from peer_ring.apps.ratelimit import (
    Algorithm,
    Behavior,
    RateLimitRequest,
    Status,
    check_limit,
    check_request,
    cl_throttle,
)
from peer_ring.apps.ratelimit._algorithms import State, decide, decode_state
from peer_ring.apps.ratelimit._types import INT64_MAX, NS_PER_MS, NS_PER_S
from peer_ring.errors import ConfigError, InvalidRequest

S = NS_PER_S
T0 = 1_700_000_000 * S


def req(alg: Algorithm = Algorithm.TOKEN_BUCKET, **kw: object) -> RateLimitRequest:
    base = RateLimitRequest("api", "user:1", 10, 10 * S, algorithm=alg, lease="L")
    return check_request(replace(base, **kw))  # type: ignore[arg-type]


# --- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"limit": 0}, "limit must be in"),
        ({"limit": -5}, "limit must be in"),
        ({"duration_ns": 0}, "duration must be in"),
        ({"duration_ns": -1}, "duration must be in"),
        ({"limit": INT64_MAX + 1}, "limit must be in"),
        ({"hits": INT64_MAX + 1}, "hits must be in"),
        ({"hits": True}, "hits must be an integer"),
        ({"limit": 1.5}, "limit must be an integer"),
        ({"burst": -1}, "burst must be in"),
        ({"algorithm": 99}, "unknown algorithm 99"),
        ({"algorithm": "TOKEN_BUCKET"}, "unknown algorithm"),
        ({"unique_key": ""}, "unique_key must not be empty"),
        ({"name": "x" * 2000}, "name is 2000 characters long"),
        ({"behavior": 64}, "unknown flag bits"),
        ({"behavior": int(Behavior.DURATION_IS_GREGORIAN)}, "DURATION_IS_GREGORIAN"),
    ],
)
def test_bad_requests_are_refused_with_a_message_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    base = RateLimitRequest("api", "user:1", limit=10, duration_ns=S)
    with pytest.raises(InvalidRequest, match=message):
        check_request(replace(base, **change))  # type: ignore[arg-type]


def test_burst_is_refused_for_algorithms_it_means_nothing_to() -> None:
    with pytest.raises(InvalidRequest, match="burst applies to TOKEN_BUCKET"):
        check_request(RateLimitRequest("a", "b", 10, S, algorithm=Algorithm.FIXED_WINDOW, burst=5))


def test_gcra_rate_finer_than_a_nanosecond_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="emission interval"):
        check_request(RateLimitRequest("a", "b", 1000, 999, algorithm=Algorithm.GCRA))


def test_concurrency_needs_a_lease_and_reserved_ids_are_refused() -> None:
    base = RateLimitRequest("a", "b", 3, S, algorithm=Algorithm.CONCURRENCY)
    with pytest.raises(InvalidRequest, match="needs a lease"):
        check_request(base)
    with pytest.raises(InvalidRequest, match="reserved"):
        check_request(replace(base, lease="\x00forced"))
    assert check_request(replace(base, hits=0)).hits == 0  # a peek needs none


def test_plain_ints_from_the_wire_are_normalized_to_the_enums() -> None:
    raw = RateLimitRequest("a", "b", 3, S, algorithm=2, behavior=40)  # type: ignore[arg-type]
    ok = check_request(raw)
    assert ok.algorithm is Algorithm.GCRA
    assert ok.behavior == Behavior.RESET_REMAINING | Behavior.DRAIN_OVER_LIMIT
    assert type(ok.behavior) is Behavior


def test_a_named_limit_from_a_config_file_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="limit must be in"):
        check_limit(Algorithm.FIXED_WINDOW, 0, S, error=ConfigError)
    assert check_limit(1, 5, S) is Algorithm.LEAKY_BUCKET


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [0, 10, S],  # too short
        [0, 10, S, 0, 5],  # token bucket needs 6
        [0, 0, S, 0, 5, 6],  # zero limit
        [7, 10, S, 0, 5, 6],  # unknown algorithm
        [0, 10, S, 0, "5", 6],
        [5, 2, S, 0, [["a", 1, 5], ["a", 1, 6]]],  # duplicate lease
        [5, 2, S, 0, [["a", 0, 5]]],  # a lease holding nothing
    ],
)
def test_decode_state_refuses_what_decide_could_not_use(bad: object) -> None:
    with pytest.raises(InvalidRequest, match="invalid rate-limit state"):
        decode_state(bad)


# --- extremes -------------------------------------------------------------------


@pytest.mark.parametrize("alg", list(Algorithm))
def test_huge_hits_are_refused_for_good_and_count_nothing(alg: Algorithm) -> None:
    state, _ = decide(None, req(alg, hits=1), T0)
    after, resp = decide(state, req(alg, hits=INT64_MAX), T0)
    assert resp.status is Status.OVER_LIMIT
    assert resp.retry_after_ns == -1
    assert resp.remaining == 9
    assert decide(after, req(alg, hits=0), T0)[1].remaining == 9


@pytest.mark.parametrize("alg", list(Algorithm))
def test_int64_limits_and_durations_do_not_overflow(alg: Algorithm) -> None:
    big = req(alg, limit=INT64_MAX, duration_ns=INT64_MAX, hits=INT64_MAX)
    state, resp = decide(None, big, T0)
    assert resp.allowed
    assert resp.remaining == 0
    assert state is not None


@pytest.mark.parametrize("alg", list(Algorithm))
def test_drain_over_limit_empties_what_remains(alg: Algorithm) -> None:
    state, _ = decide(None, req(alg, hits=4), T0)
    state, resp = decide(state, req(alg, hits=7, behavior=Behavior.DRAIN_OVER_LIMIT), T0)
    assert resp.status is Status.OVER_LIMIT
    if alg is Algorithm.CONCURRENCY:  # nothing to drain: holds are holds
        assert resp.remaining == 6
    else:
        assert resp.remaining == 0
        assert not decide(state, req(alg, hits=1), T0)[1].allowed


@pytest.mark.parametrize("alg", list(Algorithm))
def test_reset_remaining_starts_afresh_and_ignores_hits(alg: Algorithm) -> None:
    state, _ = decide(None, req(alg, hits=10), T0)
    state, resp = decide(state, req(alg, hits=3, behavior=Behavior.RESET_REMAINING), T0)
    assert resp.allowed
    assert resp.remaining == 10
    assert decide(state, req(alg, hits=10), T0)[1].allowed


# --- clocks ---------------------------------------------------------------------


def test_a_clock_step_back_does_not_refill_a_token_bucket() -> None:
    state, _ = decide(None, req(hits=10), T0 + 5 * S)
    state, resp = decide(state, req(hits=1), T0)  # 5 s earlier
    assert not resp.allowed
    assert decide(state, req(hits=1), T0 + 5 * S + S)[1].allowed  # +1 s after the last reading


def test_a_clock_step_back_does_not_reopen_an_earlier_fixed_window() -> None:
    state, _ = decide(None, req(Algorithm.FIXED_WINDOW, hits=10), T0 + 12 * S)
    _, resp = decide(state, req(Algorithm.FIXED_WINDOW, hits=1), T0 + 3 * S)
    assert not resp.allowed


def test_a_clock_step_back_only_makes_gcra_stricter() -> None:
    state, _ = decide(None, req(Algorithm.GCRA, hits=10), T0)
    _, later = decide(state, req(Algorithm.GCRA, hits=0), T0 + 3 * S)
    _, earlier = decide(state, req(Algorithm.GCRA, hits=0), T0 - 3 * S)
    assert later.remaining == 3
    assert earlier.remaining == 0


# --- algorithm specifics ----------------------------------------------------------


def test_token_bucket_refills_continuously_up_to_burst() -> None:
    r = req(hits=20, burst=20)  # 10 per 10 s = 1 per second, 20 at once
    state, resp = decide(None, r, T0)
    assert resp.allowed
    assert resp.remaining == 0
    assert resp.reset_time_ns == T0 + 20 * S
    _, peek = decide(state, req(hits=0, burst=20), T0 + 2500 * NS_PER_MS)
    assert peek.remaining == 2  # 2.5 tokens, rounded down


def test_leaky_bucket_admits_exactly_the_limit_not_twice_it() -> None:
    r = req(Algorithm.LEAKY_BUCKET, hits=1)
    state: State | None = None
    passed = 0
    for i in range(40):  # 40 requests within 0.4 s against 10 per 10 s
        state, resp = decide(state, r, T0 + i * 10 * NS_PER_MS)
        passed += resp.allowed
    assert passed == 10


def test_sliding_window_weighs_the_previous_window() -> None:
    r = req(Algorithm.SLIDING_WINDOW, hits=10)
    state, _ = decide(None, r, T0)  # T0 is a multiple of 10 s: window start
    # 7.5 s into the next window the previous one still weighs 25 %: 2.5 of 10
    _, resp = decide(state, req(Algorithm.SLIDING_WINDOW, hits=0), T0 + 17500 * NS_PER_MS)
    assert resp.remaining == 7
    _, resp = decide(state, req(Algorithm.SLIDING_WINDOW, hits=8), T0 + 17500 * NS_PER_MS)
    assert not resp.allowed
    assert resp.retry_after_ns == 500 * NS_PER_MS  # at 18 s the weight is 2: 8 fit


def test_a_crashed_holders_lease_frees_its_slot_after_the_timeout() -> None:
    cc = Algorithm.CONCURRENCY
    state, _ = decide(None, req(cc, limit=2, hits=1, lease="crashed"), T0)
    state, _ = decide(state, req(cc, limit=2, hits=1, lease="alive"), T0 + S)
    state, resp = decide(state, req(cc, limit=2, hits=1, lease="new"), T0 + 2 * S)
    assert not resp.allowed
    assert resp.retry_after_ns == 8 * S  # "crashed" expires at T0 + 10 s
    state, resp = decide(state, req(cc, limit=2, hits=1, lease="new"), T0 + 10 * S)
    assert resp.allowed
    state, resp = decide(state, req(cc, limit=2, hits=-1, lease="alive"), T0 + 10 * S)
    assert resp.remaining == 1


def test_a_release_of_an_unknown_lease_changes_nothing() -> None:
    cc = Algorithm.CONCURRENCY
    state, _ = decide(None, req(cc, limit=2, hits=2, lease="a"), T0)
    after, resp = decide(state, req(cc, limit=2, hits=-2, lease="b"), T0)
    assert resp.remaining == 0
    assert after == state


def test_changing_the_algorithm_carries_the_count_over() -> None:
    state, _ = decide(None, req(Algorithm.FIXED_WINDOW, hits=8), T0)
    _, resp = decide(state, req(Algorithm.TOKEN_BUCKET, hits=0), T0)
    assert resp.remaining == 2


# --- CL.THROTTLE ------------------------------------------------------------------

# redis-cell's own table for max_burst 4, 1 per second: (ms after start,
# quantity, limited, remaining, retry_after, reset_after).
REDIS_CELL_CASES = [
    (0, 6, 1, 5, -1, 0),
    (0, 1, 0, 4, -1, 1),
    (0, 1, 0, 3, -1, 2),
    (0, 1, 0, 2, -1, 3),
    (0, 1, 0, 1, -1, 4),
    (0, 1, 0, 0, -1, 5),
    (0, 1, 1, 0, 1, 5),
    (3000, 1, 0, 2, -1, 3),
    (3100, 1, 0, 1, -1, 4),  # reset_after 3.9 s rounds up
    (4000, 1, 0, 1, -1, 4),
    (8000, 1, 0, 4, -1, 1),
    (9500, 1, 0, 4, -1, 1),
    (9500, 0, 0, 4, -1, 1),
    (9500, 2, 0, 2, -1, 3),
    (9500, 5, 1, 2, 3, 3),
]


def test_cl_throttle_replies_as_redis_cell_does() -> None:
    state: State | None = None
    for ms, quantity, limited, remaining, retry, reset in REDIS_CELL_CASES:
        state, reply = cl_throttle(state, 4, 1, 1, quantity, T0 + ms * NS_PER_MS)
        assert reply == (limited, 5, remaining, retry, reset), (ms, quantity)


def test_cl_throttle_drops_a_sub_millisecond_remainder_like_redis_cell() -> None:
    # 3 per 1 s: T = 333,333,333 ns; one hit leaves reset_after 0.333 s -> 1
    _, reply = cl_throttle(None, 0, 3, 1, 1, T0)
    assert reply == (0, 1, 0, -1, 1)
    # 1 per 1000 s with one hit: reset_after exactly 1000 s
    _, reply = cl_throttle(None, 0, 1, 1000, 1, T0)
    assert reply[4] == 1000


def test_cl_throttle_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidRequest, match="max_burst"):
        cl_throttle(None, -1, 1, 1, 1, T0)
    with pytest.raises(InvalidRequest, match="period"):
        cl_throttle(None, 1, 1, 0, 1, T0)
    with pytest.raises(InvalidRequest, match="limit must be in"):
        cl_throttle(None, 1, 0, 1, 1, T0)
