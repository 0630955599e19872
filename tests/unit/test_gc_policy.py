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
    monkeypatch.setattr(runner, "GC_PACE_IDLE_CPU", 0.0)  # this test is nearly idle
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


def test_the_pacer_spaces_collections_by_their_pause() -> None:
    pacer = GcPacer(min_interval=0.005, max_interval=0.1, duty=0.025)
    pacer._on_gc("start", {"generation": 0})
    pacer._started -= 0.001  # a 1 ms young collection: the next in 40 ms
    pacer._on_gc("stop", {"generation": 0})
    assert 0.039 < pacer.interval < 0.042
    pacer._on_gc("start", {"generation": 0})
    pacer._started -= 0.01  # 10 ms: no later than the longest interval
    pacer._on_gc("stop", {"generation": 0})
    assert pacer.interval == 0.1
    pacer._on_gc("start", {"generation": 0})  # ~0 ms: the shortest
    pacer._on_gc("stop", {"generation": 0})
    assert pacer.interval == 0.005
    pacer._on_gc("start", {"generation": 1})
    pacer._started -= 0.01  # older generations do not count
    pacer._on_gc("stop", {"generation": 1})
    assert pacer.interval == 0.005
    with pytest.raises(ConfigError):
        GcPacer(min_interval=0.5, max_interval=0.1)


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
