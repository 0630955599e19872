"""LocalLimiter: the single-node reference limiter over replicated key states."""

from __future__ import annotations

import msgpack
import pytest

from peer_ring.apps.ratelimit import Algorithm, LocalLimiter, RateLimitRequest, Status
from peer_ring.apps.ratelimit._merge import knowledge
from peer_ring.apps.ratelimit.local import MAX_BATCH
from peer_ring.errors import InvalidRequest

S = 1_000_000_000


def hit(n: int = 1, *, limit: int = 5, alg: Algorithm = Algorithm.FIXED_WINDOW) -> RateLimitRequest:
    return RateLimitRequest("api", "user:1", limit, 60 * S, hits=n, algorithm=alg)


class Wall:
    """Wall-clock seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1_700_000_040.0  # a multiple of 60 s: a window start

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Wall:
    return Wall()


def test_admits_up_to_the_limit_then_refuses_until_the_window_turns(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    answers = [rl.hit(hit()) for _ in range(6)]
    assert [a.status for a in answers] == [Status.UNDER_LIMIT] * 5 + [Status.OVER_LIMIT]
    assert answers[-1].retry_after_ns == 60 * S
    clock.now += 60
    assert rl.hit(hit()).allowed


def test_a_peek_writes_nothing(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    assert rl.hit(hit(0)).remaining == 5
    assert len(rl) == 0
    rl.hit(hit(2))
    before = rl.export("api_user:1")
    assert rl.hit(hit(0)).remaining == 3
    assert rl.export("api_user:1") == before


@pytest.mark.parametrize(
    "alg", [Algorithm.FIXED_WINDOW, Algorithm.SLIDING_WINDOW, Algorithm.TOKEN_BUCKET,
            Algorithm.LEAKY_BUCKET, Algorithm.GCRA],
)  # fmt: skip
def test_a_refusal_that_takes_nothing_writes_nothing(clock: Wall, alg: Algorithm) -> None:
    rl = LocalLimiter(clock.time)
    for _ in range(5):
        assert rl.hit(hit(alg=alg)).allowed
    full = rl.export("api_user:1")
    clock.now += 0.001  # later, still no room: the buckets refill too little
    refused = rl.hit(hit(alg=alg))
    assert refused.status is Status.OVER_LIMIT
    assert refused.retry_after_ns > 0
    assert rl.export("api_user:1") is full  # the same object: nothing to copy
    # and the state still reads as it did: the refusal answers the same again
    assert rl.hit(hit(alg=alg)) == refused


def test_a_refusal_that_drains_writes(clock: Wall) -> None:
    from peer_ring.apps.ratelimit import Behavior

    rl = LocalLimiter(clock.time)
    req = RateLimitRequest("api", "user:1", 5, 60 * S, hits=6, behavior=Behavior.DRAIN_OVER_LIMIT)
    assert rl.hit(hit(2)).allowed
    before = rl.export("api_user:1")
    assert not rl.hit(req).allowed
    assert rl.export("api_user:1") != before
    assert rl.hit(hit(0)).remaining == 0


def test_a_bad_request_changes_nothing_and_raises(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    with pytest.raises(InvalidRequest, match="limit must be in"):
        rl.hit(hit(limit=0))
    assert len(rl) == 0


def test_a_batch_answers_each_request_and_reports_bad_ones_inline(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    out = rl.hit_many([hit(3), hit(limit=-1), hit(3)])
    assert out[0].allowed
    assert "limit must be in" in out[1].error
    assert not out[1].allowed
    assert out[2].status is Status.OVER_LIMIT
    with pytest.raises(InvalidRequest, match="at most 1000"):
        rl.hit_many([hit()] * (MAX_BATCH + 1))


def test_handoff_through_msgpack_keeps_every_count(clock: Wall) -> None:
    old = LocalLimiter(clock.time, actor="node-a#1")
    old.hit(hit(4))
    new = LocalLimiter(clock.time, actor="node-b#1")
    wire = msgpack.packb(old.export("api_user:1"))
    new.absorb("api_user:1", msgpack.unpackb(wire))
    assert new.hit(hit(2)).status is Status.OVER_LIMIT
    assert new.hit(hit(1)).allowed


def test_diverged_owners_joined_count_both_sides_hits(clock: Wall) -> None:
    a = LocalLimiter(clock.time, actor="a#1")
    a.hit(hit(1))
    b = LocalLimiter(clock.time, actor="b#1")
    b.absorb("api_user:1", a.export("api_user:1"))
    a.hit(hit(2))  # a goes on after its last copy...
    b.hit(hit(2))  # ...while b, taking over from that copy, admits too
    a.absorb("api_user:1", b.export("api_user:1"))
    assert sum(knowledge(a.export("api_user:1") or ()).values()) == 5
    assert a.hit(hit(0)).remaining == 0
    a.absorb("api_user:1", b.export("api_user:1"))  # again: idempotent
    assert a.hit(hit(0)).remaining == 0


def test_absorb_refuses_a_malformed_state(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    with pytest.raises(InvalidRequest, match="invalid rate-limit state"):
        rl.absorb("k", [["a", [1, 1, [3, 0, 60, 0, 0, 0], []]]])  # zero limit inside
    with pytest.raises(InvalidRequest, match="invalid replicated rate-limit state"):
        rl.absorb("k", "nonsense")
    assert len(rl) == 0


def test_sweep_forgets_keys_back_to_full(clock: Wall) -> None:
    rl = LocalLimiter(clock.time)
    rl.hit(hit(1, alg=Algorithm.TOKEN_BUCKET))
    rl.hit(RateLimitRequest("api", "user:2", 5, 60 * S, hits=1, algorithm=Algorithm.GCRA))
    assert rl.sweep() == 0
    clock.now += 13  # one token of 5 per minute takes 12 s
    assert rl.sweep() == 2
    assert len(rl) == 0


def test_the_actor_must_be_named() -> None:
    with pytest.raises(InvalidRequest, match="actor"):
        LocalLimiter(actor="")
