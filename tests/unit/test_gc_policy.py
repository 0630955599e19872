"""The node process's collector policy (peer_ring.runner: tune_gc, GcPacer)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from peer_ring import runner
from peer_ring.errors import ConfigError
from peer_ring.runner import GcPacer


async def test_the_pacer_arms_young_collections_and_restores_the_thresholds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner, "GC_PACE_IDLE_SHARE", 0.0)  # this test is nearly idle
    before = gc.get_threshold()
    gc.set_threshold(1_000_000, before[1], before[2])  # the count alone would never collect
    pacer = GcPacer(min_interval=0.002, max_interval=0.002)
    try:
        pacer.start(asyncio.get_running_loop())
        for _ in range(200):
            junk = [[i] for i in range(50)]  # counted allocations: a collection can start
            del junk
            await asyncio.sleep(0.001)
            if pacer.young >= 3:
                break
        assert pacer.armed >= 3
        assert pacer.young >= 3
    finally:
        pacer.stop()
        # disarmed: the thresholds in force before, not the pacer's
        assert gc.get_threshold() == (1_000_000, before[1], before[2])
        assert pacer._on_gc not in gc.callbacks
        gc.set_threshold(*before)


def _collect(pacer: GcPacer, gen: int, gap: float, pause: float) -> None:
    """A collection of generation ``gen`` started ``gap`` s after the last
    one ended and paused ``pause`` s (the pacer's clock moved by hand)."""
    pacer._on_gc("start", {"generation": gen})
    pacer._gap = gap  # as measured from the end of the last collection
    pacer._started -= pause
    pacer._started_cpu -= pause  # the pause is CPU time too (nothing preempted it)
    pacer._on_gc("stop", {"generation": gen})


def test_the_pacer_spaces_collections_by_their_pause_until_it_knows_more() -> None:
    pacer = GcPacer(min_interval=0.005, max_interval=0.1, duty=0.025)
    _collect(pacer, 0, 0.0, 0.001)  # the first: 1 ms, nothing to compare with
    assert pacer.fixed is None
    assert 0.039 < pacer.base < 0.042  # the pause over duty
    _collect(pacer, 1, 0.0, 0.01)  # older generations do not count
    assert 0.039 < pacer.base < 0.042
    with pytest.raises(ConfigError):
        GcPacer(min_interval=0.5, max_interval=0.1)


def _converge(pacer: GcPacer, fixed: float, per_second: float) -> list[float]:
    """Young collections whose pause is ``fixed + per_second * interval``, each
    after the interval the pacer asked for; the intervals it asked for."""
    asked = []
    for _ in range(40):
        gap = pacer.interval
        asked.append(gap)
        _collect(pacer, 0, gap, fixed + per_second * gap)
    return asked


def test_written_states_shorten_the_interval_in_flight_objects_lengthen_it() -> None:
    # one node: pauses are the states written since the last collection (8 %
    # of the interval); spacing them by their pause (the old rule) made them
    # 8 ms every 100 ms. The fixed part is ~0: the shortest base interval.
    pacer = GcPacer(min_interval=0.005, max_interval=0.1, duty=0.01)
    asked = _converge(pacer, 0.0, 0.08)
    assert pacer.fixed is not None
    assert pacer.fixed < 0.0002
    assert pacer.base == 0.01
    assert sorted(set(asked[-4:])) == [0.005, 0.01]  # alternating T/2, T
    # three nodes: 1.5 ms of in-flight objects per collection: spaced by that
    pacer = GcPacer(min_interval=0.005, max_interval=0.2, duty=0.01)
    _converge(pacer, 0.0015, 0.02)
    assert pacer.fixed is not None
    assert abs(pacer.fixed - 0.0015) < 0.0001
    assert abs(pacer.base - 0.15) < 0.01  # a / duty
    pacer = GcPacer(min_interval=0.005, max_interval=0.1, duty=0.01)
    _converge(pacer, 0.0015, 0.02)
    assert pacer.base == 0.1  # within the longest interval


async def test_an_idle_process_is_not_collected() -> None:
    before = gc.get_threshold()
    gc.set_threshold(1_000_000, before[1], before[2])
    pacer = GcPacer(min_interval=0.002, max_interval=0.01)
    try:
        pacer.start(asyncio.get_running_loop())
        pacer._cpu_last = 1e9  # as if no CPU had been used since the last collection
        await asyncio.sleep(0.05)
        assert pacer.armed == 0
        assert gc.get_threshold()[0] == 1_000_000
    finally:
        pacer.stop()
        gc.set_threshold(*before)
