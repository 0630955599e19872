"""Scenarios for hybrid logical clocks (peer_ring.hlc)."""

from __future__ import annotations

import logging
import time

import pytest

from peer_ring.clock import Clock, ManualClock, SystemClock
from peer_ring.errors import ConfigError, InvalidRequest, error_from_wire, error_to_wire
from peer_ring.hlc import (
    HLC,
    LOGICAL_BITS,
    MAX_LOGICAL,
    ClockSkewError,
    SkewPolicy,
    Timestamp,
    from_int,
    to_int,
    wall_seconds,
)


class StubClock:
    """A wall clock the test sets directly (also backwards)."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self.wall = wall
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - unused
        raise AssertionError("HLC must not sleep")


def test_stub_clock_is_a_clock() -> None:
    assert isinstance(StubClock(), Clock)


def test_now_follows_physical_time() -> None:
    clock = StubClock(1_700_000_000.5)
    hlc = HLC(clock)
    t1 = hlc.now()
    assert t1 == Timestamp(1_700_000_000_500, 0)
    t2 = hlc.now()
    assert t2 == Timestamp(1_700_000_000_500, 1)
    clock.wall += 0.010
    assert hlc.now() == Timestamp(1_700_000_000_510, 0)


def test_now_stays_monotonic_when_wall_clock_jumps_back() -> None:
    clock = StubClock(1_700_000_100.0)
    hlc = HLC(clock)
    t1 = hlc.now()
    clock.wall -= 50.0
    t2 = hlc.now()
    assert t2 > t1
    assert t2.wall_ms == t1.wall_ms
    assert hlc.last() == t2


def test_update_orders_receive_after_send() -> None:
    sender_clock = StubClock(1_700_000_010.0)  # 10 s ahead
    receiver_clock = StubClock(1_700_000_000.0)
    sender, receiver = HLC(sender_clock), HLC(receiver_clock)
    sent = sender.now()
    got = receiver.update(sent)
    assert got > sent
    assert got == Timestamp(sent.wall_ms, sent.logical + 1)
    # Receiver's own next event stays after the receive.
    assert receiver.now() > got


def test_update_with_older_remote_ticks_local() -> None:
    hlc = HLC(StubClock(1_700_000_000.0))
    local = hlc.now()
    got = hlc.update(Timestamp(local.wall_ms - 5_000, 7))
    assert got == Timestamp(local.wall_ms, local.logical + 1)


def test_update_equal_wall_takes_max_logical() -> None:
    hlc = HLC(StubClock(1_700_000_000.0))
    local = hlc.now()
    got = hlc.update(Timestamp(local.wall_ms, 40))
    assert got == Timestamp(local.wall_ms, 41)


def test_update_accepts_packed_int() -> None:
    hlc = HLC(StubClock(1_700_000_000.0))
    remote = Timestamp(1_700_000_000_000, 3)
    assert hlc.update(remote.to_int()) == Timestamp(1_700_000_000_000, 4)


def test_update_int_rejects_what_update_rejects() -> None:
    hlc = HLC(StubClock())
    for bad in (-1, 1 << 64):
        with pytest.raises(InvalidRequest):
            hlc.update_int(bad)
    assert hlc.last_int() == 0


def test_update_rejects_invalid_remote() -> None:
    hlc = HLC(StubClock())
    with pytest.raises(InvalidRequest):
        hlc.update(-1)
    with pytest.raises(InvalidRequest):
        hlc.update(1 << 64)
    with pytest.raises(InvalidRequest):
        hlc.update(Timestamp(1, MAX_LOGICAL + 1))


def test_far_future_remote_is_rejected_and_clock_unchanged() -> None:
    clock = StubClock(1_700_000_000.0)
    hlc = HLC(clock, max_offset=60.0)
    before = hlc.now()
    ahead = Timestamp(before.wall_ms + 61_000, 0)
    with pytest.raises(ClockSkewError) as info:
        hlc.update(ahead)
    assert "61.000s ahead" in str(info.value)
    assert hlc.last() == before
    assert (hlc.skewed, hlc.rejected) == (1, 1)
    # Within the bound it is accepted.
    ok = Timestamp(before.wall_ms + 59_000, 0)
    assert hlc.update(ok) > ok


def test_default_max_offset_tolerates_two_nodes_skewed_by_60s_each_way() -> None:
    fast, slow = HLC(StubClock(1_700_000_060.0)), HLC(StubClock(1_699_999_940.0))
    sent = fast.now()
    assert slow.update(sent) > sent


def test_accept_policy_merges_and_warns_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = StubClock(1_700_000_000.0)
    hlc = HLC(clock, max_offset=1.0, policy=SkewPolicy.ACCEPT, warn_interval=10.0)
    ahead = Timestamp(1_700_000_100_000, 0)
    with caplog.at_level(logging.WARNING, logger="peer_ring.hlc"):
        got = hlc.update(ahead)
        hlc.update(ahead)
        clock.mono += 11.0
        hlc.update(ahead)
    assert got > ahead
    assert (hlc.skewed, hlc.rejected) == (3, 0)
    assert len([r for r in caplog.records if "ahead of the local clock" in r.message]) == 2


def test_clock_skew_error_travels_over_the_wire() -> None:
    code, message = error_to_wire(ClockSkewError("too far"))
    assert code == "CLOCK_SKEW"
    assert isinstance(error_from_wire(code, message), ClockSkewError)


def test_logical_overflow_carries_into_next_millisecond() -> None:
    clock = StubClock(1_700_000_000.0)
    hlc = HLC(clock)
    wall_ms = hlc.now().wall_ms
    got = hlc.update(Timestamp(wall_ms, MAX_LOGICAL))
    assert got == Timestamp(wall_ms + 1, 0)
    prev = got
    for _ in range(MAX_LOGICAL + 2):  # exhaust the counter via now()
        t = hlc.now()
        assert t > prev
        prev = t
    assert prev.wall_ms == wall_ms + 2
    assert prev.logical <= 1


def test_packing() -> None:
    ts = Timestamp(1_700_000_000_123, 42)
    assert ts.to_int() == to_int(ts) == (1_700_000_000_123 << 16) | 42
    assert from_int(ts.to_int()) == ts
    assert wall_seconds(ts) == wall_seconds(ts.to_int()) == pytest.approx(1_700_000_000.123)
    assert ts.wall_seconds == pytest.approx(1_700_000_000.123)
    with pytest.raises(InvalidRequest):
        from_int(True)


def test_now_int_matches_now() -> None:
    clock = StubClock()
    a, b = HLC(clock), HLC(clock)
    for _ in range(5):
        assert a.now_int() == b.now().to_int()


def test_negative_wall_clock_is_clamped() -> None:
    hlc = HLC(StubClock(-5.0))
    first = hlc.now()
    assert first.wall_ms == 0
    assert hlc.now() > first


def test_works_with_manual_clock() -> None:
    clock = ManualClock()
    hlc = HLC(clock)
    assert hlc.now().wall_ms == int(clock.time() * 1000)


@pytest.mark.parametrize("offset", [0.0, -1.0])
def test_config_validation(offset: float) -> None:
    with pytest.raises(ConfigError):
        HLC(StubClock(), max_offset=offset)
    with pytest.raises(ConfigError):
        HLC(StubClock(), policy="ignore")
    assert HLC(StubClock(), policy="accept")._policy is SkewPolicy.ACCEPT


# -- the wall clock read: SystemClock directly, any other clock through time() --


class _CountingSystemClock(SystemClock):
    """A SystemClock subclass that overrides time(): it must be called."""

    __slots__ = ("calls", "wall")

    def __init__(self) -> None:
        super().__init__(0.0)
        self.calls = 0
        self.wall = 1_700_000_000.25

    def time(self) -> float:
        self.calls += 1
        return self.wall


@pytest.mark.parametrize("offset", [0.0, 3600.0, -120.5])
def test_system_clock_read_directly_matches_its_time(offset: float) -> None:
    clock = SystemClock(offset)
    hlc = HLC(clock)
    before = int(clock.time() * 1000.0)
    wall_ms = hlc.now().wall_ms
    after = int(clock.time() * 1000.0)
    # the timestamp follows time.time() + offset, as clock.time() would give
    assert before <= wall_ms <= after
    stamp = hlc.now_int()
    assert stamp > (wall_ms << LOGICAL_BITS)
    assert abs((stamp >> LOGICAL_BITS) / 1000.0 - (time.time() + offset)) < 1.0


def test_system_clock_offset_is_read_only() -> None:
    clock = SystemClock(2.5)
    assert clock.offset == 2.5
    with pytest.raises(AttributeError):
        clock.offset = 0.0  # type: ignore[misc]
    assert clock.offset == 2.5


def test_subclass_of_system_clock_is_read_through_time() -> None:
    clock = _CountingSystemClock()
    hlc = HLC(clock)
    assert hlc.now() == Timestamp(1_700_000_000_250, 0)
    assert clock.calls == 1
    clock.wall -= 100.0  # backwards: the HLC keeps l, bumps c
    assert hlc.now() == Timestamp(1_700_000_000_250, 1)
    assert clock.calls == 2


def test_manual_clock_drives_the_hlc() -> None:
    clock = ManualClock(start=0.0, wall_start=1_000.0)
    hlc = HLC(clock)
    assert hlc.now() == Timestamp(1_000_000, 0)
    clock._now += 2.0  # what advance() does, without an event loop
    assert hlc.now() == Timestamp(1_002_000, 0)


def test_packed_bounds_around_the_unboxed_range() -> None:
    # 2**61 .. 2**64-1 are valid packed stamps (compared against the 64-bit
    # bound the slow way in the compiled build); 2**64 and -1 are not
    for good in ((1 << 61) - 1, 1 << 61, 1 << 62, 1 << 63, (1 << 64) - 1):
        assert Timestamp.from_int(good).to_int() == good
        assert from_int(good) == Timestamp(good >> LOGICAL_BITS, good & MAX_LOGICAL)
    for bad in (-1, 1 << 64, (1 << 64) + 1, True):
        with pytest.raises(InvalidRequest):
            Timestamp.from_int(bad)
    hlc = HLC(StubClock(), policy=SkewPolicy.ACCEPT)
    for remote in ((1 << 62) + 5, (1 << 64) - 2):
        assert hlc.update_int(remote) > remote
    with pytest.raises(InvalidRequest):
        hlc.update_int(1 << 64)
